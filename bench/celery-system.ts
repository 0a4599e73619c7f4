/**
 * System c: Python Celery 5.x from the .interop-venv. A `celery worker` (acks late) on the
 * walkthrough's config in each of its pools — prefork (concurrency 2, the cores), threads (8) and
 * gevent (64) — each run with prefetch multiplier 4 and 64 (only 4 with --quick); every
 * configuration is reported and the best end-to-end rate is the `celery` figure. A Python client
 * (bench/python/bench_client.py) uses send_task and get().
 */
import * as amqplib from 'amqplib';
import type { ChildProcess } from 'node:child_process';
import type { Client } from 'cassandra-driver';
import {
  AMQP_URL,
  baseText,
  BenchOptions,
  captureOutput,
  CASSANDRA_HOST,
  CASSANDRA_PORT,
  consumerCount,
  CREDENTIALS,
  declareCeleryQueue,
  deleteQueues,
  KEYSPACE,
  percentile,
  resetTable,
  rowsNote,
  round,
  sleep,
  spawnChild,
  stopChild,
  SystemResult,
  tableStats,
  TableStats,
  workerRate,
} from './common';
import { MemoryPeak, MemorySampler } from './memory-sampler';
import { BENCH_PYTHON_DIR, CELERY, ensureGevent, ensurePythonCelery, PYTHON } from './python-env';

const QUEUE = 'bench_celery';
const TABLE = 'bench_celery';
/** Celery's pools with the concurrency each is meant to run at on this 2-core machine. */
export const POOLS = [
  { pool: 'prefork', concurrency: 2 },
  { pool: 'threads', concurrency: 8 },
  { pool: 'gevent', concurrency: 64 },
] as const;
type Pool = (typeof POOLS)[number];
const MULTIPLIERS = [4, 64];
const WARMUP = 20;

interface ClientAnswer {
  n: number;
  publish_s: number;
  end_to_end_s: number;
  latencies_ms: number[];
  warmup: number;
  /** Results the client checked, each against its own task's distinct input. */
  checked: number;
  celery: string;
  kombu: string;
  /** Epoch seconds of the first send and of the last get(). */
  start_wall: number;
  end_wall: number;
}

function pythonEnv(multiplier: number, concurrency = 2): NodeJS.ProcessEnv {
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
    BENCH_CONCURRENCY: String(concurrency),
    BENCH_PREFETCH_MULTIPLIER: String(multiplier),
    PYTHONDONTWRITEBYTECODE: '1',
    PYTHONUNBUFFERED: '1',
  };
}

async function startWorker(pool: Pool, multiplier: number, admin: amqplib.ChannelModel): Promise<{ child: ChildProcess; output: () => string }> {
  const child = spawnChild(
    CELERY,
    ['-A', 'bench_tasks', 'worker', '-Q', QUEUE, '--pool', pool.pool, '-c', String(pool.concurrency), '--prefetch-multiplier', String(multiplier),
      '-n', `bench-celery-${process.pid}@%h`, '--without-gossip', '--without-mingle', '--without-heartbeat', '-l', 'WARNING'],
    { cwd: BENCH_PYTHON_DIR, env: pythonEnv(multiplier, pool.concurrency), stdio: ['ignore', 'pipe', 'pipe'] },
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
  pool: Pool;
  multiplier: number;
  answer: ClientAnswer;
  mem: MemoryPeak;
  rows: TableStats;
}

export async function runCelery(opts: BenchOptions, admin: Client, log: (s: string) => void): Promise<SystemResult> {
  const version = ensurePythonCelery(log);
  ensureGevent(log);
  const base = baseText(opts.payloadBytes);
  const n = opts.celeryN ?? (opts.quick ? Math.min(opts.n, 500) : Math.min(opts.n, 2000));
  // get() polls every 0.5 s: round trips cost ~0.5 s each, so each pool gets fewer
  const roundTrips = opts.celeryRoundTrips ?? (opts.quick ? Math.min(opts.roundTrips, 20) : Math.min(opts.roundTrips, 100));
  const multipliers = opts.quick ? MULTIPLIERS.slice(0, 1) : MULTIPLIERS;
  const runs: CeleryRun[] = [];
  const failures: string[] = [];
  const amqp = await amqplib.connect(AMQP_URL);
  try {
    for (const [pool, multiplier, i] of POOLS.flatMap((p) => multipliers.map((m, j) => [p, m, j] as const))) {
      let sampler: MemorySampler | null = null;
      let worker: { child: ChildProcess; output: () => string } | null = null;
      try {
        await deleteQueues(QUEUE);
        await resetTable(admin, TABLE);
        const ch = await amqp.createChannel();
        await declareCeleryQueue(ch, QUEUE);
        await ch.close();
        worker = await startWorker(pool, multiplier, amqp);
        sampler = await MemorySampler.start(100);
        sampler.watch([worker.child.pid as number]);
        log(`celery ${version}: worker ready (${pool.pool}, concurrency ${pool.concurrency}, prefetch multiplier ${multiplier}); client sends ${n}`);
        const answer = await runClient(multiplier, { n, round_trips: i === 0 ? roundTrips : 0, warmup: WARMUP, base, queue: QUEUE });
        const rows = await tableStats(admin, TABLE, { from: answer.start_wall * 1000, to: answer.end_wall * 1000 });
        const mem = await sampler.stop();
        runs.push({ pool, multiplier, answer, mem, rows });
        log(
          `celery: ${pool.pool} x${multiplier}: publish ${round(n / answer.publish_s, 0)}/s, end-to-end ${round(n / answer.end_to_end_s, 0)}/s, ` +
            `peak PSS ${mem.pssMb} MiB (summed RSS ${mem.rssMb} MiB)`,
        );
      } catch (err) {
        // one configuration failing (e.g. a pool that stalls on this backend) is reported, not fatal
        const first = (err instanceof Error ? err.message : String(err)).split('\n').filter(Boolean);
        failures.push(`${pool.pool} (concurrency ${pool.concurrency}) x${multiplier}: FAILED: ${first.slice(0, 1).concat(first.slice(-1)).join(' … ')}`);
        log(`celery: ${failures[failures.length - 1]}`);
      } finally {
        await sampler?.stop();
        if (worker) await stopChild(worker.child);
        await deleteQueues(QUEUE).catch((err: unknown) => log(`celery: queue clean-up failed: ${String(err)}`));
      }
    }
  } finally {
    await amqp.close().catch(() => undefined);
  }
  if (runs.length === 0) throw new Error(`every Celery configuration failed: ${failures.join('; ')}`);
  const rate = (r: CeleryRun) => r.answer.n / r.answer.end_to_end_s;
  const best = runs.reduce((a, b) => (rate(b) > rate(a) ? b : a));
  // round trips ran on each pool's first (multiplier 4) run: the best pool's are the figure
  const latenciesOf = (pool: Pool) => runs.find((r) => r.pool === pool && r.answer.latencies_ms.length > 0)?.answer.latencies_ms ?? [];
  const latencies = latenciesOf(best.pool);
  const label = (r: CeleryRun) => `${r.pool.pool} (concurrency ${r.pool.concurrency}) x${r.multiplier}`;
  const notes = [
    `Celery ${best.answer.celery} (kombu ${best.answer.kombu}), task_acks_late; best of ${runs.length} configurations: ${label(best)}`,
    ...runs.map((r) => `${label(r)}: ${round(rate(r), 0)}/s e2e, ${round(r.answer.n / r.answer.publish_s, 0)}/s publish, PSS ${r.mem.pssMb} MiB (USS ${r.mem.ussMb}, summed RSS ${r.mem.rssMb})`),
    ...failures,
    `N = ${n} for Celery (get() polls Cassandra every 0.5 s)${n !== opts.n ? `, not ${opts.n}` : ''}; ${latencies.length} round trips per pool, with prefetch multiplier ${MULTIPLIERS[0]}`,
    'publish: send_task() returns without publisher confirms (kombu default)',
    `${runs.reduce((sum, r) => sum + r.answer.checked, 0)} results checked by the client over all configurations, each against its own task's distinct input`,
  ];
  for (const r of runs) {
    for (const note of rowsNote(TABLE, r.rows, WARMUP + n + r.answer.latencies_ms.length)) notes.push(`${label(r)} run: ${note}`);
  }
  return {
    publish_per_s: round(best.answer.n / best.answer.publish_s, 0),
    end_to_end_per_s: round(rate(best), 0),
    p50_ms: round(percentile(latencies, 50), 2),
    p99_ms: round(percentile(latencies, 99), 2),
    pss_mb: best.mem.pssMb,
    uss_mb: best.mem.ussMb,
    rss_mb: best.mem.rssMb,
    memory_samples: { count: best.mem.samples, interval_ms: best.mem.intervalMs, span_s: best.mem.spanS, max_gap_ms: best.mem.maxGapMs },
    worker_per_s: workerRate(best.rows, best.answer.start_wall * 1000),
    n,
    round_trips: latencies.length,
    pool: best.pool.pool,
    concurrency: best.pool.concurrency,
    prefetch_multiplier: best.multiplier,
    runs: runs.map((r) => ({
      pool: r.pool.pool,
      concurrency: r.pool.concurrency,
      prefetch_multiplier: r.multiplier,
      publish_per_s: round(r.answer.n / r.answer.publish_s, 0),
      end_to_end_per_s: round(rate(r), 0),
      ...(r.answer.latencies_ms.length ? { p50_ms: round(percentile(r.answer.latencies_ms, 50), 2), p99_ms: round(percentile(r.answer.latencies_ms, 99), 2) } : {}),
      pss_mb: r.mem.pssMb,
      uss_mb: r.mem.ussMb,
      rss_mb: r.mem.rssMb,
      worker_per_s: workerRate(r.rows, r.answer.start_wall * 1000),
      rows: r.rows.rows,
      duplicate_task_ids: r.rows.duplicates,
    })),
    celery: best.answer.celery,
    results_checked: best.answer.checked,
    notes,
  };
}
