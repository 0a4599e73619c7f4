/**
 * Worker memory, measured so that a skeptic accepts it: a separate sampler process (not the busy
 * benchmark process, whose event loop delays its own timers) reads `/proc/<pid>/smaps_rollup` of
 * every process of the watched trees at a steady interval and keeps the peak of
 *
 * - PSS (proportional set size): each shared page divided among the processes that map it, so a
 *   forked pool (Celery's prefork) counts its shared pages once in total, not once per child;
 * - USS (unique set size: private clean + private dirty), what the tree would give back if it ended;
 * - RSS summed over the tree (shared pages counted in every process: kept for comparison only).
 *
 * Run as `node memory-sampler.js child <intervalMs>`; driven over IPC by `MemorySampler`.
 */
import { ChildProcess, fork } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { processTree, round } from './common';

export interface MemoryPeak {
  /** Peak of the tree's summed PSS, MiB. */
  pssMb: number;
  /** Peak of the tree's summed USS, MiB. */
  ussMb: number;
  /** Peak of the tree's summed RSS, MiB (shared pages counted once per process). */
  rssMb: number;
  samples: number;
  intervalMs: number;
  /** Seconds from the first to the last sample. */
  spanS: number;
  /** Largest gap between two samples, ms (a steady sampler keeps it near the interval). */
  maxGapMs: number;
}

interface Rollup {
  pss: number;
  uss: number;
  rss: number;
}

/** One process's PSS / USS / RSS in kB from smaps_rollup (zeros when it is gone). */
export function rollupKb(pid: number): Rollup {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  } catch {
    return { pss: 0, uss: 0, rss: 0 };
  }
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
  return { pss: field('Pss'), uss: field('Private_Clean') + field('Private_Dirty'), rss: field('Rss') };
}

/** The watched trees' summed rollup. */
export function treeRollupKb(roots: number[]): Rollup {
  const total = { pss: 0, uss: 0, rss: 0 };
  for (const pid of processTree(roots)) {
    const r = rollupKb(pid);
    total.pss += r.pss;
    total.uss += r.uss;
    total.rss += r.rss;
  }
  return total;
}

/** The parent side: starts the sampler process, tells it which trees to watch, collects the peak. */
export class MemorySampler {
  private constructor(
    private readonly child: ChildProcess,
    private readonly intervalMs: number,
  ) {}

  static async start(intervalMs = 100): Promise<MemorySampler> {
    const child = fork(__filename, ['child', String(intervalMs)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    await new Promise<void>((resolve, reject) => {
      child.once('message', () => resolve());
      child.once('exit', (code) => reject(new Error(`memory sampler exited (${String(code)}) while starting`)));
    });
    return new MemorySampler(child, intervalMs);
  }

  /** (Re)sets the roots whose trees are summed (several workers, or a worker started later). */
  watch(pids: number[]): void {
    this.child.send({ watch: pids });
  }

  /** The peaks since the first watch; ends the sampler process. Idempotent. */
  async stop(): Promise<MemoryPeak> {
    const empty: MemoryPeak = { pssMb: NaN, ussMb: NaN, rssMb: NaN, samples: 0, intervalMs: this.intervalMs, spanS: 0, maxGapMs: 0 };
    if (!this.child.connected) return empty;
    const peak = new Promise<MemoryPeak>((resolve) => {
      this.child.once('message', (m: MemoryPeak) => resolve(m));
      this.child.once('exit', () => resolve(empty));
    });
    this.child.send({ stop: true });
    return peak;
  }
}

/** The sampler process: samples every `intervalMs` until told to stop, then reports the peaks. */
function runChild(intervalMs: number): void {
  let roots: number[] = [];
  const peak = { pss: 0, uss: 0, rss: 0 };
  let samples = 0;
  let first = 0;
  let last = 0;
  let maxGap = 0;
  const sample = () => {
    if (roots.length === 0) return;
    const now = performance.now();
    const r = treeRollupKb(roots);
    if (samples === 0) first = now;
    else maxGap = Math.max(maxGap, now - last);
    last = now;
    samples++;
    peak.pss = Math.max(peak.pss, r.pss);
    peak.uss = Math.max(peak.uss, r.uss);
    peak.rss = Math.max(peak.rss, r.rss);
  };
  const timer = setInterval(sample, intervalMs);
  process.on('message', (m: { watch?: number[]; stop?: boolean }) => {
    if (m.watch) {
      roots = m.watch;
      sample();
    }
    if (m.stop) {
      sample();
      clearInterval(timer);
      const mb = (kb: number) => (samples ? round(kb / 1024, 1) : NaN);
      const result: MemoryPeak = { pssMb: mb(peak.pss), ussMb: mb(peak.uss), rssMb: mb(peak.rss), samples, intervalMs, spanS: round((last - first) / 1000, 1), maxGapMs: round(maxGap, 0) };
      process.send?.(result, () => process.exit(0));
    }
  });
  process.on('disconnect', () => process.exit(0));
  process.send?.({ ready: true });
}

if (require.main === module && process.argv[2] === 'child') runChild(Number(process.argv[3] ?? 100));
