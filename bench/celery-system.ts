/**
 * System c: Python Celery 5.x from the .interop-venv. A `celery worker` (prefork pool, concurrency 2,
 * acks late) on the walkthrough's config, run once per prefetch multiplier (4 and 64; the better
 * end-to-end rate is kept), and a Python client (bench/python/bench_client.py) using send_task and get().
 */
import * as amqplib from 'amqplib';
import type { ChildProcess } from 'node:child_process';
import type { Client } from 'cassandra-driver';
import {
  AMQP_URL,
  BenchOptions,
  captureOutput,
  CASSANDRA_HOST,
  CASSANDRA_PORT,
  consumerCount,
  CREDENTIALS,
  declareCeleryQueue,
  deleteQueues,
  KEYSPACE,
  payloadText,
  percentile,
  resetTable,
  rowsNote,
  round,
  RssSampler,
  sleep,
  spawnChild,
  stopChild,
  SystemResult,
  tableStats,
  TableStats,
  workerRate,
} from './common';
import { BENCH_PYTHON_DIR, CELERY, ensurePythonCelery, PYTHON } from './python-env';

const QUEUE = 'bench_celery';
const TABLE = 'bench_celery';
const CONCURRENCY = 2;
const MULTIPLIERS = [4, 64];
const WARMUP = 20;

interface ClientAnswer {
  n: number;
  publish_s: number;
  end_to_end_s: number;
  latencies_ms: number[];
  warmup: number;
  celery: string;
  kombu: string;
  /** Epoch seconds of the first send and of the last get(). */
  start_wall: number;
  end_wall: number;
}

function pythonEnv(multiplier: number): NodeJS.ProcessEnv {
  return {
    ...process.env,
    CELERY_BROKER_URL: AMQP_URL,
    CASSANDRA_HOST,
    CASSANDRA_PORT: String(CASSANDRA_PORT),
    CASSANDRA_KEYSPACE: KEYSPACE,
    CASSANDRA_TABLE: TABLE,
    CASSANDRA_USERNAME: CREDENTIALS.username,
    CASSANDRA_PASSWORD: CREDENTIALS.password,
    BENCH_QUEUE: QUEUE,
    BENCH_CONCURRENCY: String(CONCURRENCY),
    BENCH_PREFETCH_MULTIPLIER: String(multiplier),
    PYTHONDONTWRITEBYTECODE: '1',
    PYTHONUNBUFFERED: '1',
  };
}

async function startWorker(multiplier: number, admin: amqplib.ChannelModel): Promise<{ child: ChildProcess; output: () => string }> {
  const child = spawnChild(
    CELERY,
    ['-A', 'bench_tasks', 'worker', '-Q', QUEUE, '--pool', 'prefork', '-c', String(CONCURRENCY), '--prefetch-multiplier', String(multiplier),
      '-n', `bench-celery-${process.pid}@%h`, '--without-gossip', '--without-mingle', '--without-heartbeat', '-l', 'WARNING'],
    { cwd: BENCH_PYTHON_DIR, env: pythonEnv(multiplier), stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const output = captureOutput(child);
  const deadline = Date.now() + 60000;
  while ((await consumerCount(admin, QUEUE)) < 1) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`celery worker exited (${child.exitCode ?? child.signalCode}) while starting:\n${output()}`);
    if (Date.now() > deadline) throw new Error(`celery worker not consuming ${QUEUE} after 60 s:\n${output()}`);
    await sleep(200);
  }
  return { child, output };
}

function runClient(multiplier: number, command: Record<string, unknown>): Promise<ClientAnswer> {
  // Started like the workers (tracked), so that a failure or a signal ends it too.
  const child = spawnChild(PYTHON, ['bench_client.py', JSON.stringify(command)], {
    cwd: BENCH_PYTHON_DIR,
    env: pythonEnv(multiplier),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
    if (stderr.length > 20000) stderr = stderr.slice(-20000);
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => void stopChild(child, 2000), 600000);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) return reject(new Error(`celery client exited (${code ?? signal}):\n${stderr.slice(-4000)}`));
      try {
        resolve(JSON.parse(stdout.trim().split('\n').pop() as string) as ClientAnswer);
      } catch {
        reject(new Error(`celery client printed no JSON:\n${stdout.slice(-2000)}\n${stderr.slice(-2000)}`));
      }
    });
  });
}

interface CeleryRun {
  multiplier: number;
  answer: ClientAnswer;
  rssMb: number;
  rows: TableStats;
}

export async function runCelery(opts: BenchOptions, admin: Client, log: (s: string) => void): Promise<SystemResult> {
  const version = ensurePythonCelery(log);
  const text = payloadText(opts.payloadBytes);
  const n = opts.celeryN ?? (opts.quick ? Math.min(opts.n, 500) : Math.min(opts.n, 2000));
  const roundTrips = opts.celeryRoundTrips ?? (opts.quick ? Math.min(opts.roundTrips, 60) : opts.roundTrips);
  const runs: CeleryRun[] = [];
  const amqp = await amqplib.connect(AMQP_URL);
  try {
    for (const [i, multiplier] of MULTIPLIERS.entries()) {
      const sampler = new RssSampler(100);
      let worker: { child: ChildProcess; output: () => string } | null = null;
      try {
        await deleteQueues(QUEUE);
        await resetTable(admin, TABLE);
        const ch = await amqp.createChannel();
        await declareCeleryQueue(ch, QUEUE);
        await ch.close();
        worker = await startWorker(multiplier, amqp);
        sampler.watch([worker.child.pid as number]);
        log(`celery ${version}: worker ready (prefork, concurrency ${CONCURRENCY}, prefetch multiplier ${multiplier}); client sends ${n}`);
        const answer = await runClient(multiplier, { n, round_trips: i === 0 ? roundTrips : 0, warmup: WARMUP, text, queue: QUEUE });
        const rows = await tableStats(admin, TABLE, { from: answer.start_wall * 1000, to: answer.end_wall * 1000 });
        const mem = sampler.stop();
        runs.push({ multiplier, answer, rssMb: mem.peakMb, rows });
        log(
          `celery: multiplier ${multiplier}: publish ${round(n / answer.publish_s, 0)}/s, end-to-end ${round(n / answer.end_to_end_s, 0)}/s, ` +
            `peak RSS ${mem.peakMb} MiB`,
        );
      } finally {
        sampler.stop();
        if (worker) await stopChild(worker.child);
        await deleteQueues(QUEUE).catch((err: unknown) => log(`celery: queue clean-up failed: ${String(err)}`));
      }
    }
  } finally {
    await amqp.close().catch(() => undefined);
  }
  const best = runs.reduce((a, b) => (b.answer.n / b.answer.end_to_end_s > a.answer.n / a.answer.end_to_end_s ? b : a));
  const latencies = runs[0].answer.latencies_ms;
  const notes = [
    `Celery ${best.answer.celery} (kombu ${best.answer.kombu}), prefork pool, concurrency ${CONCURRENCY}, task_acks_late; kept prefetch multiplier ${best.multiplier} ` +
      `(${runs.map((r) => `x${r.multiplier}: ${round(r.answer.n / r.answer.end_to_end_s, 0)}/s e2e, ${round(r.answer.n / r.answer.publish_s, 0)}/s publish, ${r.rssMb} MiB`).join('; ')})`,
    `N = ${n} for Celery (get() polls Cassandra every 0.5 s)${n !== opts.n ? `, not ${opts.n}` : ''}; ${latencies.length} round trips, with prefetch multiplier ${runs[0].multiplier}`,
    'publish: send_task() returns without publisher confirms (kombu default)',
  ];
  for (const r of runs) {
    for (const note of rowsNote(TABLE, r.rows, WARMUP + n + r.answer.latencies_ms.length)) notes.push(`prefetch multiplier ${r.multiplier} run: ${note}`);
  }
  return {
    publish_per_s: round(best.answer.n / best.answer.publish_s, 0),
    end_to_end_per_s: round(best.answer.n / best.answer.end_to_end_s, 0),
    p50_ms: round(percentile(latencies, 50), 2),
    p99_ms: round(percentile(latencies, 99), 2),
    rss_mb: best.rssMb,
    worker_per_s: workerRate(best.rows, best.answer.start_wall * 1000),
    n,
    round_trips: latencies.length,
    prefetch_multiplier: best.multiplier,
    runs: runs.map((r) => ({
      prefetch_multiplier: r.multiplier,
      publish_per_s: round(r.answer.n / r.answer.publish_s, 0),
      end_to_end_per_s: round(r.answer.n / r.answer.end_to_end_s, 0),
      rss_mb: r.rssMb,
      worker_per_s: workerRate(r.rows, r.answer.start_wall * 1000),
      rows: r.rows.rows,
      duplicate_task_ids: r.rows.duplicates,
    })),
    celery: best.answer.celery,
    notes,
  };
}
