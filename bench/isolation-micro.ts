/**
 * What running a task in an isolated worker thread (lib/worker/isolation) costs per task, without
 * a broker or a database: the benchmark's sortWords called in-process (awaited, as the worker
 * calls a task) against IsolatedPool.run() (argument and result cloned across, one task per
 * thread at a time), in alternating rounds. Per mode:
 *
 * - sequential: one call at a time, ms per call (the latency a task gains);
 * - concurrent: N calls with at most C in flight, calls/s (the walkthrough's sentence);
 * - heavy: the same with a 20 kB text (~2 ms of CPU per call): where threads add cores;
 *
 * and once: the first call on a new pool (a thread started, the task module and its imports
 * loaded: what a hard limit's replacement thread costs), and the RSS the pool's threads add.
 *
 *   npm run build:bench && node dist-bench/bench/isolation-micro.js [N] [rounds] [concurrency]
 */
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { IsolatedPool } from '../lib/worker/isolation';
import { alternatingRounds, mapLimit, payloadText, percentile, round, roundsArgs, sortWords, WALKTHROUGH_TEXT } from './common';
import { IsolatedTasksService } from './isolated-tasks';

type Mode = 'in-process' | 'thread';
const SPEC = { module: join(__dirname, 'isolated-tasks.js'), exportName: 'IsolatedTasksService', method: 'sortWords' };
const HEAVY_TEXT = payloadText(20000);

interface RoundResult {
  sequentialMs: number;
  concurrentPerS: number;
  heavyPerS: number;
}

async function oneRound(call: (text: string) => Promise<unknown>, n: number, concurrency: number): Promise<RoundResult> {
  const sequential = Math.min(n, 2000);
  let t = performance.now();
  for (let i = 0; i < sequential; i++) await call(WALKTHROUGH_TEXT);
  const sequentialMs = (performance.now() - t) / sequential;
  const texts = Array.from({ length: n }, () => WALKTHROUGH_TEXT);
  t = performance.now();
  await mapLimit(texts, concurrency, call);
  const concurrentPerS = n / ((performance.now() - t) / 1000);
  const heavy = Array.from({ length: Math.max(100, Math.floor(n / 10)) }, () => HEAVY_TEXT);
  t = performance.now();
  await mapLimit(heavy, concurrency, call);
  const heavyPerS = heavy.length / ((performance.now() - t) / 1000);
  return { sequentialMs, concurrentPerS, heavyPerS };
}

async function main(): Promise<void> {
  const { n, rounds, concurrency } = roundsArgs({ n: 20000, rounds: 3, concurrency: 64 });
  const pool = new IsolatedPool();
  const local = new IsolatedTasksService();
  const rssBefore = process.memoryUsage().rss;
  let t = performance.now();
  await pool.run(SPEC, [WALKTHROUGH_TEXT, false]);
  const coldStartMs = performance.now() - t;
  // every thread started and its module loaded
  await Promise.all(Array.from({ length: pool.size * 4 }, () => pool.run(SPEC, [WALKTHROUGH_TEXT, false])));
  const threadsRssMb = (process.memoryUsage().rss - rssBefore) / 2 ** 20;
  console.log(`first call on a new pool ${round(coldStartMs, 1)} ms; ${pool.stats().threads} threads add ${round(threadsRssMb, 1)} MiB RSS`);
  const calls: Record<Mode, (text: string) => Promise<unknown>> = {
    'in-process': async (text) => local.sortWords(text, false),
    thread: (text) => pool.run(SPEC, [text, false]),
  };
  let results: Record<Mode, RoundResult[]>;
  try {
    // warm-up: threads started, module loaded, JIT
    const expected = sortWords(WALKTHROUGH_TEXT, false);
    for (const mode of ['in-process', 'thread'] as const) {
      const values = await mapLimit(Array.from({ length: 2000 }, () => WALKTHROUGH_TEXT), concurrency, calls[mode]);
      if (values.some((v) => v !== expected)) throw new Error(`${mode}: wrong result`);
    }
    results = await alternatingRounds(['in-process', 'thread'] as const, rounds, async (mode, r) => {
      const result = await oneRound(calls[mode], n, concurrency);
      console.log(
        `round ${r} ${mode}: sequential ${round(result.sequentialMs, 4)} ms/call, concurrent ${round(result.concurrentPerS)} calls/s, ` +
          `heavy (20 kB) ${round(result.heavyPerS)} calls/s`,
      );
      return result;
    });
  } finally {
    await pool.close();
  }
  const median = (mode: Mode, key: keyof RoundResult) => percentile(results[mode].map((x) => x[key]), 50);
  const summary = (mode: Mode) => ({
    sequentialMs: round(median(mode, 'sequentialMs'), 4),
    concurrentPerS: round(median(mode, 'concurrentPerS')),
    heavyPerS: round(median(mode, 'heavyPerS')),
  });
  console.log(
    JSON.stringify({
      n,
      rounds,
      concurrency,
      threads: pool.size,
      cpus: availableParallelism(),
      coldStartMs: round(coldStartMs, 1),
      threadsRssMb: round(threadsRssMb, 1),
      inProcess: summary('in-process'),
      thread: summary('thread'),
      overheadMsPerCall: round(median('thread', 'sequentialMs') - median('in-process', 'sequentialMs'), 4),
      concurrentRatio: round(median('thread', 'concurrentPerS') / median('in-process', 'concurrentPerS'), 3),
      heavyRatio: round(median('thread', 'heavyPerS') / median('in-process', 'heavyPerS'), 3),
    }),
  );
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
