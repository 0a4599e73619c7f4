/**
 * System a: nestjs-celery. Worker(s) in child processes (bench/nestjs-worker.ts); the Producer in
 * this process, in a Nest application context with the worker disabled.
 */
import 'reflect-metadata';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { INestApplicationContext } from '@nestjs/common';
import type { ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { Client } from 'cassandra-driver';
import { AsyncResult, CeleryModule, Producer } from '../lib';
import {
  AMQP_URL,
  BenchOptions,
  CASSANDRA_DC,
  CASSANDRA_HOST,
  CASSANDRA_PORT,
  CREDENTIALS,
  deleteQueues,
  KEYSPACE,
  mapLimit,
  payloadText,
  percentile,
  resetTable,
  rowsNote,
  round,
  sortWords,
  startNodeWorkers,
  stopChild,
  SystemResult,
  tableStats,
  TASK_NAME,
  workerRate,
} from './common';
import { MemorySampler } from './memory-sampler';

const WARMUP = 50;

/**
 * `isolate: 'thread'` (system `nestjs_thread`): the same worker, its task run in an isolated worker
 * thread, on its own queue and table (`bench_nestjs_thread`).
 */
export async function runNestjs(opts: BenchOptions, admin: Client, log: (s: string) => void, variant: { isolate?: 'thread' } = {}): Promise<SystemResult> {
  const QUEUE = variant.isolate ? 'bench_nestjs_thread' : 'bench_nestjs';
  const TABLE = QUEUE;
  const label = variant.isolate ? 'nestjs_thread' : 'nestjs';
  const text = payloadText(opts.payloadBytes);
  const expected = sortWords(text, false);
  let sampler: MemorySampler | null = null;
  const workerArgs = ['--queue', QUEUE, '--table', TABLE, '--concurrency', String(opts.concurrency)];
  if (opts.prefetch) workerArgs.push('--prefetch', String(opts.prefetch));
  if (variant.isolate) workerArgs.push('--isolate', variant.isolate);
  let workers: ChildProcess[] = [];
  let app: INestApplicationContext | null = null;
  try {
    await deleteQueues(QUEUE);
    await resetTable(admin, TABLE);
    const started = await startNodeWorkers('nestjs-worker.js', opts.workers, workerArgs, label);
    workers = started.workers;
    sampler = await MemorySampler.start(100);
    sampler.watch(workers.map((w) => w.pid as number));
    log(`${label}: ${workers.length} worker process(es) ready (concurrency ${opts.concurrency}, prefetch ${String(started.info.prefetch)}${variant.isolate ? ', task in a worker thread' : ''})`);

    @Module({
      imports: [
        CeleryModule.forRoot({
          brokerUrl: AMQP_URL,
          resultBackend: 'cassandra',
          defaultQueue: QUEUE,
          cassandra: {
            contactPoints: [CASSANDRA_HOST],
            port: CASSANDRA_PORT,
            localDataCenter: CASSANDRA_DC,
            keyspace: KEYSPACE,
            table: TABLE,
            credentials: { ...CREDENTIALS },
          },
          worker: { enabled: false },
        }),
      ],
    })
    class ClientModule {}
    app = await NestFactory.createApplicationContext(ClientModule, { logger: ['warn', 'error'] });
    const producer = app.get(Producer);
    const send = () => producer.sendTask<string>(TASK_NAME, { args: [text, false], queue: QUEUE });
    const check = (value: string) => {
      if (value !== expected) throw new Error(`${label}: wrong result ${JSON.stringify(value).slice(0, 200)}`);
    };

    // Warm-up: connections, prepared statements, JIT.
    const warm = await Promise.all(Array.from({ length: WARMUP }, send));
    for (const r of warm) check(await r.get({ timeout: 60000 }));

    // Throughput: publish N (every publish confirmed), then every result read with get().
    const n = opts.n;
    const t0 = performance.now();
    const wall0 = Date.now();
    const results: AsyncResult<string>[] = await Promise.all(Array.from({ length: n }, send));
    const t1 = performance.now();
    log(`${label}: ${n} published in ${round((t1 - t0) / 1000, 2)} s; collecting results`);
    const timeout = Math.max(120000, n * 20);
    const values = await mapLimit(results, opts.getConcurrency, (r) => r.get({ timeout }));
    const t2 = performance.now();
    const wall2 = Date.now();
    values.forEach(check);

    // Latency: sequential round trips.
    const latencies: number[] = [];
    for (let i = 0; i < opts.roundTrips; i++) {
      const s = performance.now();
      const r = await send();
      check(await r.get({ timeout: 30000 }));
      latencies.push(performance.now() - s);
    }
    const rows = await tableStats(admin, TABLE, { from: wall0, to: wall2 });
    const mem = await sampler.stop();
    const notes = [
      ...(variant.isolate ? [`task run in an isolated worker thread (IsolatedPool, ${availableParallelism()} threads per worker process)`] : []),
      `${opts.workers} worker process(es), concurrency ${opts.concurrency}, prefetch ${String(started.info.prefetch)}`,
      `results read with AsyncResult.get(), ${opts.getConcurrency > 0 && opts.getConcurrency < n ? `at most ${opts.getConcurrency}` : 'all'} at once`,
    ];
    notes.push(...rowsNote(TABLE, rows, WARMUP + n + opts.roundTrips));
    return {
      publish_per_s: round(n / ((t1 - t0) / 1000), 0),
      end_to_end_per_s: round(n / ((t2 - t0) / 1000), 0),
      p50_ms: round(percentile(latencies, 50), 2),
      p99_ms: round(percentile(latencies, 99), 2),
      pss_mb: mem.pssMb,
      uss_mb: mem.ussMb,
      rss_mb: mem.rssMb,
      worker_per_s: workerRate(rows, wall0),
      n,
      round_trips: latencies.length,
      rows: rows.rows,
      memory_samples: { count: mem.samples, interval_ms: mem.intervalMs, span_s: mem.spanS, max_gap_ms: mem.maxGapMs },
      notes,
    };
  } finally {
    await sampler?.stop();
    if (app) await app.close().catch((err: unknown) => log(`${label}: closing the producer app failed: ${String(err)}`));
    await Promise.all(workers.map((w) => stopChild(w)));
    await deleteQueues(QUEUE).catch((err: unknown) => log(`${label}: queue clean-up failed: ${String(err)}`));
  }
}
