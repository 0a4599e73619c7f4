/**
 * The measuring phases that nestjs and raw share, over a `BenchClient` (how a system publishes one
 * task and gets its result): warm-up, throughput, sequential round trips, round trips under a
 * paced background load, and the prefetch-1 figures. Every task has a distinct input and every
 * result is checked against its own expected value (TaskInputs).
 */
import { CpuMeter, CpuSeconds, describeCpu } from './cpu-meter';
import { performance } from 'node:perf_hooks';
import { BenchOptions, mapLimit, percentile, round, sleep, SystemResult, TableStats, TaskInput, TaskInputs, workerRate } from './common';
import type { MemoryPeak } from './memory-sampler';

/** One published task: `confirmed` once the broker has it, `result(timeoutMs)` its value. */
export interface SentTask {
  confirmed: Promise<unknown>;
  result(timeoutMs: number): Promise<unknown>;
}

/** A system's producer side on its own connection. */
export interface BenchClient {
  send(text: string): SentTask;
  close(): Promise<void>;
}

export const WARMUP = 50;

export interface LoadLevel {
  /** Fraction of the measured end-to-end rate the background publisher aims at. */
  fraction: number;
  target_per_s: number;
  /** What the background publisher achieved while the round trips were timed, and the results it got back. */
  load_published_per_s: number;
  load_completed_per_s: number;
  /** Background tasks published but not yet completed when the round trips ended. */
  backlog_at_end: number;
  p50_ms: number;
  p99_ms: number;
  round_trips: number;
}

export interface MainPhases {
  publish_per_s: number;
  end_to_end_per_s: number;
  p50_ms: number;
  p99_ms: number;
  round_trips: number;
  under_load: LoadLevel[];
  /** Epoch ms of the first publish and of the last result read in the throughput phase. */
  wall0: number;
  wall2: number;
  /** CPU seconds per 10,000 tasks of the throughput phase, by party (when the worker pids were given). */
  cpu_s_per_10k?: CpuSeconds;
}

/** Publishes one task, waits for its result and checks it; resolves the round trip in ms. */
async function roundTrip(client: BenchClient, inputs: TaskInputs): Promise<number> {
  const input = inputs.next();
  const s = performance.now();
  const sent = client.send(input.text);
  await sent.confirmed;
  inputs.check(await sent.result(30000), input);
  return performance.now() - s;
}

async function roundTrips(client: BenchClient, inputs: TaskInputs, count: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push(await roundTrip(client, inputs));
  return out;
}

/** `n` tasks published at once, then every result collected (at most `resultConcurrency` waited on at once). */
async function burst(client: BenchClient, inputs: TaskInputs, n: number, resultConcurrency: number): Promise<{ publishS: number; endToEndS: number }> {
  const t0 = performance.now();
  const batch = Array.from({ length: n }, () => {
    const input = inputs.next();
    return { input, sent: client.send(input.text) };
  });
  await Promise.all(batch.map((b) => b.sent.confirmed));
  const t1 = performance.now();
  const timeout = Math.max(120000, n * 20);
  await mapLimit(batch, resultConcurrency, async (b) => inputs.check(await b.sent.result(timeout), b.input));
  return { publishS: (t1 - t0) / 1000, endToEndS: (performance.now() - t0) / 1000 };
}

/**
 * Sequential round trips on `client` while `load` (a second connection) publishes at `targetPerS`
 * in 5 ms ticks, every background result collected and checked too. The load runs `settleMs`
 * before the first timed round trip.
 */
async function underLoad(
  client: BenchClient,
  load: BenchClient,
  inputs: TaskInputs,
  targetPerS: number,
  count: number,
  settleMs: number,
): Promise<Omit<LoadLevel, 'fraction'>> {
  const pending: Promise<void>[] = [];
  let published = 0;
  let completed = 0;
  let failure: unknown = null;
  let stop = false;
  const start = performance.now();
  const pacer = (async () => {
    while (!stop) {
      const due = Math.floor(((performance.now() - start) / 1000) * targetPerS);
      while (published < due) {
        const input: TaskInput = inputs.next();
        const sent = load.send(input.text);
        published++;
        pending.push(
          sent.confirmed
            .then(() => sent.result(120000))
            .then((value) => {
              inputs.check(value, input);
              completed++;
            })
            .catch((err: unknown) => {
              failure ??= err;
            }),
        );
      }
      await sleep(5);
    }
  })();
  let latencies: number[] = [];
  let window = { from: 0, to: 0, published: 0, completed: 0 };
  try {
    await sleep(settleMs);
    const at0 = { t: performance.now(), published, completed };
    latencies = await roundTrips(client, inputs, count);
    window = { from: at0.t, to: performance.now(), published: published - at0.published, completed: completed - at0.completed };
  } finally {
    stop = true;
    await pacer;
  }
  const backlog = published - completed;
  await Promise.all(pending);
  if (failure) throw failure;
  const seconds = (window.to - window.from) / 1000;
  return {
    target_per_s: round(targetPerS, 0),
    load_published_per_s: round(window.published / seconds, 0),
    load_completed_per_s: round(window.completed / seconds, 0),
    backlog_at_end: backlog,
    p50_ms: round(percentile(latencies, 50), 2),
    p99_ms: round(percentile(latencies, 99), 2),
    round_trips: latencies.length,
  };
}

/**
 * Warm-up, throughput (N at once, results collected), R sequential round trips, then the round
 * trips again under a background load at each of `opts.loadFractions` of the measured end-to-end
 * rate (`openLoadClient`: a second producer on its own connection, closed afterwards).
 */
export async function mainPhases(
  label: string,
  opts: BenchOptions,
  client: BenchClient,
  openLoadClient: () => Promise<BenchClient>,
  inputs: TaskInputs,
  resultConcurrency: number,
  log: (s: string) => void,
  workerRoots?: number[],
): Promise<MainPhases> {
  // Warm-up: connections, prepared statements, JIT.
  await burst(client, inputs, WARMUP, resultConcurrency);

  const meter = workerRoots ? new CpuMeter(workerRoots) : null;
  meter?.start();
  const wall0 = Date.now();
  const { publishS, endToEndS } = await burst(client, inputs, opts.n, resultConcurrency);
  const wall2 = Date.now();
  const cpu = meter?.stop(opts.n);
  log(`${label}: ${opts.n} published in ${round(publishS, 2)} s, all results in ${round(endToEndS, 2)} s${cpu ? `; ${describeCpu(cpu)}` : ''}`);
  const endToEnd = opts.n / endToEndS;

  const latencies = await roundTrips(client, inputs, opts.roundTrips);

  const levels: LoadLevel[] = [];
  if (opts.loadFractions.length && opts.loadRoundTrips > 0) {
    const load = await openLoadClient();
    try {
      for (const fraction of opts.loadFractions) {
        const level = await underLoad(client, load, inputs, endToEnd * fraction, opts.loadRoundTrips, opts.quick ? 300 : 1000);
        levels.push({ fraction, ...level });
        log(
          `${label}: under load at ${fraction * 100} % (${level.target_per_s}/s, achieved ${level.load_published_per_s}/s published, ` +
            `${level.load_completed_per_s}/s completed): p50 ${level.p50_ms} ms, p99 ${level.p99_ms} ms`,
        );
      }
    } finally {
      await load.close();
    }
  }
  return {
    publish_per_s: round(opts.n / publishS, 0),
    end_to_end_per_s: round(endToEnd, 0),
    p50_ms: round(percentile(latencies, 50), 2),
    p99_ms: round(percentile(latencies, 99), 2),
    round_trips: latencies.length,
    under_load: levels,
    wall0,
    wall2,
    ...(cpu ? { cpu_s_per_10k: cpu } : {}),
  };
}

export interface PrefetchOne {
  concurrency: 1;
  prefetch: 1;
  n: number;
  end_to_end_per_s: number;
  p50_ms: number;
  p99_ms: number;
  round_trips: number;
}

/**
 * With the worker at concurrency 1 and prefetch 1 (the caller restarts it so): a short warm-up,
 * `opts.prefetchOneN` tasks at once (each one waits for the ack of the one before: per-task
 * overhead shows most here) and `opts.prefetchOneRoundTrips` round trips.
 */
export async function prefetchOnePhase(
  label: string,
  opts: BenchOptions,
  client: BenchClient,
  inputs: TaskInputs,
  resultConcurrency: number,
  log: (s: string) => void,
): Promise<PrefetchOne> {
  await burst(client, inputs, 20, resultConcurrency);
  const { endToEndS } = await burst(client, inputs, opts.prefetchOneN, resultConcurrency);
  const latencies = await roundTrips(client, inputs, opts.prefetchOneRoundTrips);
  const out: PrefetchOne = {
    concurrency: 1,
    prefetch: 1,
    n: opts.prefetchOneN,
    end_to_end_per_s: round(opts.prefetchOneN / endToEndS, 0),
    p50_ms: round(percentile(latencies, 50), 2),
    p99_ms: round(percentile(latencies, 99), 2),
    round_trips: latencies.length,
  };
  log(`${label}: prefetch 1 / concurrency 1: ${out.end_to_end_per_s}/s end to end, round trip p50 ${out.p50_ms} ms, p99 ${out.p99_ms} ms`);
  return out;
}

/** The figures nestjs and raw report alike, from their phases, the memory peak and the table's rows. */
export function systemFigures(
  main: MainPhases,
  mem: MemoryPeak,
  rows: TableStats,
  opts: BenchOptions,
  prefetchOne: PrefetchOne | undefined,
  inputs: TaskInputs,
  notes: string[],
): SystemResult {
  return {
    publish_per_s: main.publish_per_s,
    end_to_end_per_s: main.end_to_end_per_s,
    p50_ms: main.p50_ms,
    p99_ms: main.p99_ms,
    pss_mb: mem.pssMb,
    uss_mb: mem.ussMb,
    rss_mb: mem.rssMb,
    worker_per_s: workerRate(rows, main.wall0),
    n: opts.n,
    round_trips: main.round_trips,
    rows: rows.rows,
    memory_samples: { count: mem.samples, interval_ms: mem.intervalMs, span_s: mem.spanS, max_gap_ms: mem.maxGapMs },
    ...(main.cpu_s_per_10k ? { cpu_s_per_10k: main.cpu_s_per_10k } : {}),
    ...(main.under_load.length ? { under_load: main.under_load } : {}),
    ...(prefetchOne ? { prefetch1: prefetchOne } : {}),
    results_checked: inputs.checkedCount,
    notes,
  };
}
