/**
 * How a chord completes, measured both ways on the real RabbitMQ and Cassandra: Celery's
 * `celery.chord_unlock` (polls the header results every second) against counter mode (the last
 * header task publishes the body; README, "How a chord completes"). One Nest application holds
 * the producer and the worker; N chords of M header tasks run one after the other in each mode.
 *
 * Per chord it reports the time from the last header result stored (the store's write resolved)
 * to the body starting, the time from sending the chord to the body starting, and the Cassandra
 * statements the worker issued to complete it: reads of header results in Celery's table, reads of
 * the chord row, lightweight transactions (a Paxos round: reads and writes) and writes of the chord
 * row (the pre-write SUCCESS checks every task makes are counted apart: they are the same both ways). No `get()` runs during
 * the measurement, so every statement counted is the worker's.
 *
 *   npm run bench:chords -- [chords] [headers] [header ms]      (defaults 10 chords, 20 headers, 0 ms)
 *
 * Writes bench/results/chord-completion-<headers>-<ms>.json.
 */
import 'reflect-metadata';
import { Injectable, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { INestApplicationContext } from '@nestjs/common';
import type { Client } from 'cassandra-driver';
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CeleryModule, Producer, ResultStore, Task, TaskContext } from '../lib';
import type { CeleryModuleOptions, ChordCompletion } from '../lib';
import { CassandraResultStore } from '../lib/results/cassandra.result-store';
import type { ResultToStore } from '../lib/protocol/result-row';
import { AMQP_URL, benchCassandraOptions, cassandraClient, deleteQueues, KEYSPACE, percentile, round, sleep } from './common';

const bodyStarted = new Map<string, (at: number) => void>();

@Injectable()
class ChordBenchTasks {
  @Task('bench.header')
  async header(x: number, ms: number): Promise<number> {
    if (ms > 0) await sleep(ms);
    return x;
  }

  @Task('bench.body')
  body(values: number[], @TaskContext() ctx: TaskContext): number {
    bodyStarted.get(ctx.id)?.(Date.now());
    return values.length;
  }
}

/** Cassandra statements of one chord, by kind. */
interface Counts {
  /** Reads of header results (chord_unlock's and the finisher's `IN` queries, single reads). */
  resultReads: number;
  /** The worker's check before storing a result (worker.successCheck), the same in both modes: not counted as chord completion. */
  statusChecks: number;
  chordRowReads: number;
  lwt: number;
  writes: number;
}

interface ChordSample extends Counts {
  /** Last header result stored → body started, ms. */
  lastStoredToBodyMs: number;
  /** Chord sent → body started, ms. */
  sentToBodyMs: number;
}

export interface ModeReport {
  completion: ChordCompletion;
  chords: number;
  headers: number;
  header_ms: number;
  last_stored_to_body_ms_p50: number;
  last_stored_to_body_ms_p90: number;
  last_stored_to_body_ms_max: number;
  sent_to_body_ms_p50: number;
  /** Per chord, mean. */
  result_table_reads: number;
  /** The pre-write SUCCESS checks of every task (header tasks, body), the same in both modes; not in cassandra_reads. */
  status_checks: number;
  chord_row_reads: number;
  lwt: number;
  /** Reads of any kind per chord: result reads + chord row reads + LWTs (each a Paxos read). */
  cassandra_reads: number;
  writes_besides_results: number;
}

function commit(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const changes = execFileSync('git', ['status', '--porcelain', '--', 'lib', 'bench'], { encoding: 'utf8' }).split('\n');
    const dirty = changes.some((line) => line.trim() !== '' && !line.includes('bench/results/'));
    return dirty ? `${head}+uncommitted changes` : head;
  } catch {
    return 'unknown';
  }
}

/** Counts every statement the client runs, by kind (the chord table's name tells its rows apart). */
function countStatements(client: Client, chordTable: string, counts: Counts): void {
  const execute = client.execute.bind(client) as (...args: unknown[]) => Promise<unknown>;
  (client as unknown as { execute: (...args: unknown[]) => Promise<unknown> }).execute = (...args: unknown[]) => {
    const cql = String(args[0]).trim();
    if (/^SELECT task_id, status FROM/i.test(cql)) counts.statusChecks++;
    else if (/^SELECT/i.test(cql)) {
      if (cql.includes(`.${chordTable} `)) counts.chordRowReads++;
      else counts.resultReads++;
    } else if (/\bIF\b/.test(cql)) counts.lwt++;
    else if (/^(UPDATE|INSERT)/i.test(cql) && cql.includes(`.${chordTable} `)) counts.writes++;
    return execute(...args);
  };
}

async function runMode(app: INestApplicationContext, completion: ChordCompletion, chords: number, headers: number, headerMs: number, counts: Counts, storedAt: Map<string, number>): Promise<ChordSample[]> {
  const producer = app.get(Producer);
  const samples: ChordSample[] = [];
  for (let c = 0; c < chords; c++) {
    const ids = Array.from({ length: headers }, () => randomUUID());
    const bodyId = randomUUID();
    const started = new Promise<number>((resolve) => bodyStarted.set(bodyId, resolve));
    Object.assign(counts, { resultReads: 0, statusChecks: 0, chordRowReads: 0, lwt: 0, writes: 0 });
    const sentAt = Date.now();
    await producer.chord(
      ids.map((id, i) => producer.signatureByName('bench.header', [i, headerMs]).set({ taskId: id })),
      producer.signatureByName('bench.body'),
      { completion, taskId: bodyId },
    );
    const bodyAt = await started;
    await sleep(50); // the statements that finish the chord (marking the body sent) are counted too
    const lastStored = Math.max(...ids.map((id) => storedAt.get(id) ?? NaN));
    samples.push({ ...counts, lastStoredToBodyMs: bodyAt - lastStored, sentToBodyMs: bodyAt - sentAt });
    bodyStarted.delete(bodyId);
    // the next chord starts on a quiet queue (a chord_unlock round is over once its body started)
    await sleep(200);
  }
  return samples;
}

function report(completion: ChordCompletion, chords: number, headers: number, headerMs: number, samples: ChordSample[]): ModeReport {
  const mean = (f: (s: ChordSample) => number) => round(samples.reduce((a, s) => a + f(s), 0) / samples.length, 2);
  const lat = samples.map((s) => s.lastStoredToBodyMs);
  return {
    completion,
    chords,
    headers,
    header_ms: headerMs,
    last_stored_to_body_ms_p50: round(percentile(lat, 50)),
    last_stored_to_body_ms_p90: round(percentile(lat, 90)),
    last_stored_to_body_ms_max: round(Math.max(...lat)),
    sent_to_body_ms_p50: round(percentile(samples.map((s) => s.sentToBodyMs), 50)),
    result_table_reads: mean((s) => s.resultReads),
    status_checks: mean((s) => s.statusChecks),
    chord_row_reads: mean((s) => s.chordRowReads),
    lwt: mean((s) => s.lwt),
    cassandra_reads: mean((s) => s.resultReads + s.chordRowReads + s.lwt),
    writes_besides_results: mean((s) => s.writes),
  };
}

async function main(): Promise<void> {
  const [chords, headers, headerMs] = [Number(process.argv[2] ?? 10), Number(process.argv[3] ?? 20), Number(process.argv[4] ?? 0)];
  const suffix = randomBytes(4).toString('hex');
  const queue = `bench_chords_${suffix}`;
  const table = `bench_chords_${suffix}`;
  const chordTable = `bench_chord_rows_${suffix}`;

  const options: CeleryModuleOptions = {
    brokerUrl: AMQP_URL,
    resultBackend: 'cassandra',
    defaultQueue: queue,
    cassandra: benchCassandraOptions(table),
    // a slot to spare beyond the header tasks: chord_unlock polls on time instead of queueing behind them
    worker: { queues: [queue], concurrency: Math.min(headers + 2, 64) },
    chords: { table: chordTable },
  };
  @Module({ imports: [CeleryModule.forRoot(options)], providers: [ChordBenchTasks] })
  class BenchModule {}

  const app = await NestFactory.createApplicationContext(BenchModule, { logger: ['error'] });
  const admin = cassandraClient();
  const counts: Counts = { resultReads: 0, statusChecks: 0, chordRowReads: 0, lwt: 0, writes: 0 };
  const reports: ModeReport[] = [];
  try {
    const store = app.get(ResultStore) as CassandraResultStore;
    countStatements(store.session(), chordTable, counts);
    const storedAt = new Map<string, number>();
    const storeOne = store.store.bind(store);
    store.store = async (result: ResultToStore) => {
      await storeOne(result);
      storedAt.set(result.taskId, Date.now());
    };
    // a warm-up chord each way (prepared statements, the chord table)
    for (const mode of ['unlock', 'counter'] as const) await runMode(app, mode, 1, headers, 0, counts, storedAt);
    for (const mode of ['unlock', 'counter'] as const) {
      const samples = await runMode(app, mode, chords, headers, headerMs, counts, storedAt);
      reports.push(report(mode, chords, headers, headerMs, samples));
    }
  } finally {
    await app.close();
    await admin.connect();
    for (const t of [table, chordTable]) await admin.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${t}`);
    await admin.shutdown();
    await deleteQueues(queue);
  }
  const out = { commit: commit(), at: new Date().toISOString(), reports };
  const file = join(__dirname, '..', '..', 'bench', 'results', `chord-completion-${headers}-${headerMs}.json`);
  writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);
  console.log(JSON.stringify(out, null, 2));
  console.log(`written to ${file}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
