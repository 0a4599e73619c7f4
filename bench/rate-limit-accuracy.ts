/**
 * Accuracy and cost of the shared rate limit (`rateLimit: { global }`) under N worker processes:
 * N real OS processes (bench/rate-limit-worker.ts), each with a steady backlog of one task name,
 * each running the library's RateLimiter against the real Cassandra, all started at the same
 * instant. Reports the tasks/s admitted against the limit, the most admitted in any 1 s window
 * against the stated bound, and what one admission costs in compare-and-sets and milliseconds.
 *
 * `npm run bench:rate-limit -- [rate] [seconds] [processes] [backlog]` (defaults 100/s, 10 s, 3, 64);
 * the integration test test/integration/rate-limit-accuracy.spec.ts runs the same measurement.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRateLimitTableCql } from '../lib/worker/cassandra-rate-store';
import { parseRate } from '../lib/protocol/rate';
import { captureOutput, cassandraClient, KEYSPACE, percentile, round, spawnChild, stopChild } from './common';
import type { RateWorkerArgs, RateWorkerResult } from './rate-limit-worker';

export interface AccuracyOptions {
  rate: string;
  seconds: number;
  processes: number;
  /** Tasks waiting in each process at any time. */
  backlog: number;
  reserveAheadMs?: number;
  maxLateMs?: number;
}

export interface AccuracyReport {
  commit: string;
  limit_per_s: number;
  processes: number;
  seconds: number;
  admitted: number;
  admitted_per_process: number[];
  /** Admissions per second, from the first to the last: (n - 1) / (last - first). */
  achieved_per_s: number;
  /** The most admissions in any 1 s window, and the bound the design states for it. */
  max_in_1s: number;
  bound_1s: number;
  /** Smallest gap between two consecutive admissions of all processes, ms. */
  min_gap_ms: number;
  /** Compare-and-sets per admission (all processes), and of those, the ones that lost a race. */
  cas_per_admission: number;
  conflicts_per_admission: number;
  cas_errors: number;
  cas_ms_p50: number;
  cas_ms_p99: number;
  cas_ms_mean: number;
  /** From acquire() to admission, ms: the wait for a start, and without a backlog the cost of a claim. */
  wait_ms_p50: number;
  wait_ms_p99: number;
}

/** The most instants in any half-open window of `ms`. */
export function maxInWindow(times: number[], ms: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let best = 0;
  for (let i = 0, j = 0; i < sorted.length; i++) {
    while (sorted[i] - sorted[j] >= ms) j++;
    best = Math.max(best, i - j + 1);
  }
  return best;
}

/** The design's bound on admissions in any window: rate × (window + maxLate) + 1. */
export function windowBound(perSecond: number, windowMs: number, maxLateMs: number): number {
  return Math.floor((perSecond * (windowMs + maxLateMs)) / 1000) + 1;
}

/** The repository: bench/ when run as TypeScript, dist-bench/bench/ when built. */
const ROOT = __filename.endsWith('.ts') ? join(__dirname, '..') : join(__dirname, '..', '..');

function workerCommand(): string[] {
  const ts = __filename.endsWith('.ts');
  const script = join(__dirname, ts ? 'rate-limit-worker.ts' : 'rate-limit-worker.js');
  return ts ? ['-r', join(ROOT, 'test', 'support', 'transpile-hook.js'), script] : [script];
}

function commit(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'lib'], { cwd: ROOT, encoding: 'utf8' }).trim();
    return dirty ? `${head}+uncommitted lib changes` : head;
  } catch {
    return 'unknown';
  }
}

export async function measureSharedRateLimit(options: AccuracyOptions): Promise<AccuracyReport> {
  const table = `rate_limits_${randomBytes(4).toString('hex')}`;
  const reserveAheadMs = options.reserveAheadMs ?? 500;
  const maxLateMs = options.maxLateMs ?? 25;
  const args: RateWorkerArgs = { table, taskName: 'tasks.limited', rate: options.rate, backlog: options.backlog, reserveAheadMs, maxLateMs };
  const admin = cassandraClient();
  await admin.connect();
  await admin.execute(createRateLimitTableCql(KEYSPACE, table));
  const children = Array.from({ length: options.processes }, () =>
    spawnChild(process.execPath, [...workerCommand(), JSON.stringify(args)], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] }),
  );
  try {
    const outputs = children.map(captureOutput);
    const next = (i: number, type: string): Promise<Record<string, unknown>> =>
      new Promise((resolve, reject) => {
        const child = children[i];
        const timer = setTimeout(() => reject(new Error(`rate-limit worker ${i}: no ${type} in time:\n${outputs[i]()}`)), 60_000 + options.seconds * 1000);
        const onMessage = (m: Record<string, unknown>): void => {
          if (m.type !== type) return;
          clearTimeout(timer);
          child.off('message', onMessage);
          resolve(m);
        };
        child.on('message', onMessage);
        child.once('exit', (code) => {
          clearTimeout(timer);
          reject(new Error(`rate-limit worker ${i} exited (${code}):\n${outputs[i]()}`));
        });
      });
    await Promise.all(children.map((_c, i) => next(i, 'ready')));
    const startAt = Date.now() + 500;
    const untilAt = startAt + options.seconds * 1000;
    const results = children.map((_c, i) => next(i, 'result'));
    for (const child of children) child.send({ type: 'go', startAt, untilAt });
    const reports = (await Promise.all(results)) as unknown as RateWorkerResult[];
    return summarize(options, reports, startAt, maxLateMs);
  } finally {
    await Promise.all(children.map((c) => stopChild(c, 5000)));
    await admin.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${table}`).catch(() => undefined);
    await admin.shutdown();
  }
}

function summarize(options: AccuracyOptions, reports: RateWorkerResult[], startAt: number, maxLateMs: number): AccuracyReport {
  const perSecond = parseRate(options.rate);
  const all = reports.flatMap((r) => r.admitted).sort((a, b) => a - b);
  const casMs = reports.flatMap((r) => r.casMs);
  const waits = reports.flatMap((r) => r.waitMs);
  const cas = casMs.length;
  let minGap = Infinity;
  for (let i = 1; i < all.length; i++) minGap = Math.min(minGap, all[i] - all[i - 1]);
  const first = all[0] ?? startAt;
  return {
    commit: commit(),
    limit_per_s: perSecond,
    processes: options.processes,
    seconds: options.seconds,
    admitted: all.length,
    admitted_per_process: reports.map((r) => r.admitted.length),
    achieved_per_s: round((all.length - 1) / ((all[all.length - 1] - first) / 1000), 2),
    max_in_1s: maxInWindow(all, 1000),
    bound_1s: windowBound(perSecond, 1000, maxLateMs),
    min_gap_ms: minGap,
    cas_per_admission: round(cas / Math.max(1, all.length), 3),
    conflicts_per_admission: round(reports.reduce((n, r) => n + r.casConflicts, 0) / Math.max(1, all.length), 3),
    cas_errors: reports.reduce((n, r) => n + r.casErrors, 0),
    cas_ms_p50: round(percentile(casMs, 50), 2),
    cas_ms_p99: round(percentile(casMs, 99), 2),
    cas_ms_mean: round(casMs.reduce((a, b) => a + b, 0) / Math.max(1, cas), 2),
    wait_ms_p50: round(percentile(waits, 50), 2),
    wait_ms_p99: round(percentile(waits, 99), 2),
  };
}

if (require.main === module) {
  const [rate, seconds, processes, backlog] = process.argv.slice(2);
  measureSharedRateLimit({ rate: rate ?? '100/s', seconds: Number(seconds ?? 10), processes: Number(processes ?? 3), backlog: Number(backlog ?? 64) })
    .then((report) => {
      const out = JSON.stringify(report, null, 2);
      process.stdout.write(`${out}\n`);
      writeFileSync(join(ROOT, 'bench', 'results', `rate-limit-${report.limit_per_s}.json`), `${out}\n`);
    })
    .catch((err: unknown) => {
      process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
      process.exit(1);
    });
}
