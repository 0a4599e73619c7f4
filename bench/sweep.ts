/**
 * `npm run bench:sweep [-- options]`: how nestjs-celery and the raw amqplib + cassandra-driver
 * pipeline scale, in one run, with the system runners of `npm run bench` (runNestjs, runRaw):
 *
 *   prefetch  end-to-end rate and worker RSS against prefetch 1 … 512 (concurrency min(prefetch, 64));
 *             the RSS against tasks in flight is the same curve (in flight = prefetch)
 *   payload   end-to-end rate against the size of the text argument, 100 B … 1 MB
 *   workers   one worker process against two, default settings
 *
 * Writes bench/results/sweep.json and sweep.png (bench/sweep_chart.py) and prints a table. Not
 * part of CI. See bench/README.md.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Client } from 'cassandra-driver';
import { BenchOptions, cassandraClient, deleteQueues, round, SystemResult, WALKTHROUGH_TEXT } from './common';
import { runNestjs } from './nestjs-system';
import { runRaw } from './raw-system';
import { applyPayloadGuards, describeMachine, drawChart, gitInfo, machineInfo, parseArgs, runEntryPoint } from './run';

const SYSTEMS = ['nestjs', 'raw'] as const;
type SystemName = (typeof SYSTEMS)[number];
const RUNNERS: Record<SystemName, (o: BenchOptions, a: Client, l: (s: string) => void) => Promise<SystemResult>> = { nestjs: runNestjs, raw: runRaw };
const CURVES = ['prefetch', 'payload', 'workers'] as const;
type Curve = (typeof CURVES)[number];

/** The library's default concurrency (prefetch defaults to 4 x concurrency = 256). */
const DEFAULT_CONCURRENCY = 64;
const SWEEP_N = 10000;
const SWEEP_ROUND_TRIPS = 20;
const PAYLOAD_BUDGET_MB = 50;
/** Fewest tasks a payload point runs, whatever the budget. */
const PAYLOAD_MIN_N = 50;
/**
 * Payload bytes a worker may be writing at once: concurrency = min(64, this / B), prefetch 4 x that.
 * The test node (512 MiB heap, G1 with 1 MiB regions: a 1 MB value is a humongous object) ran out of
 * heap and exited with 1 MB payloads at concurrency 64, and again at 8 after the other points of
 * a sweep; a 1 MB point alone on a freshly started node passed at 8.
 */
const PAYLOAD_WRITE_BYTES = 8 * 1024 ** 2;
const SENTENCE_BYTES = Buffer.byteLength(WALKTHROUGH_TEXT);

const USAGE = `usage: npm run bench:sweep -- [options]
  --curves a,b             subset of ${CURVES.join(',')} (default: all)
  --systems a,b            subset of ${SYSTEMS.join(',')} (default: both)
  --prefetches P,P,...     prefetch points (default 1,8,32,128,256,512; concurrency min(P, ${DEFAULT_CONCURRENCY}))
  --payloads B,B,...       payload points in bytes (default 100,1000,10000,100000; 1000000 needs a
                           Cassandra heap above 512 MiB: it ran the test node out of memory)
  --payload-budget-mb M    payload points: N = min(N, max(${PAYLOAD_MIN_N}, M MB / B)) (default ${PAYLOAD_BUDGET_MB});
                           concurrency min(64, ${PAYLOAD_WRITE_BYTES >>> 20} MiB / B), prefetch 4 x that
  --n N                    tasks per point (default ${SWEEP_N}; --quick: 2000)
  --round-trips R          sequential round trips per point (default ${SWEEP_ROUND_TRIPS}; 0 = none)
  --get-concurrency G, --quick, --no-chart, --out DIR   as for npm run bench`;

interface SweepOptions {
  base: BenchOptions;
  curves: Curve[];
  systems: SystemName[];
  prefetches: number[];
  payloads: number[];
  payloadBudgetMb: number;
}

function intList(flag: string, v: string | undefined): number[] {
  if (v === undefined) throw new Error(`${flag} needs a value\n${USAGE}`);
  const list = v.split(',').map((s) => Number(s.trim()));
  if (!list.length || list.some((x) => !Number.isInteger(x) || x < 1)) throw new Error(`${flag} takes integers >= 1, comma-separated`);
  return list;
}

/** The sweep's own flags; everything else goes to run.ts's parser (N, round trips, get() concurrency, output). */
function parseSweepArgs(argv: string[]): SweepOptions {
  const rest: string[] = ['--round-trips', String(SWEEP_ROUND_TRIPS)]; // a later --round-trips wins
  const out: Omit<SweepOptions, 'base'> = {
    curves: [...CURVES],
    systems: [...SYSTEMS],
    prefetches: [1, 8, 32, 128, 256, 512],
    // 1 MB is opt-in: it ran the 512 MiB Cassandra test node out of heap twice (PAYLOAD_WRITE_BYTES).
    payloads: [100, 1000, 10000, 100000],
    payloadBudgetMb: PAYLOAD_BUDGET_MB,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    switch (flag) {
      case '-h':
      case '--help':
        process.stdout.write(USAGE + '\n');
        process.exit(0);
        break;
      case '--curves':
        out.curves = (argv[++i] ?? '').split(',').filter(Boolean) as Curve[];
        for (const c of out.curves) if (!CURVES.includes(c)) throw new Error(`unknown curve ${c} (${CURVES.join(', ')})`);
        break;
      case '--systems':
        out.systems = (argv[++i] ?? '').split(',').filter(Boolean) as SystemName[];
        for (const s of out.systems) if (!SYSTEMS.includes(s)) throw new Error(`the sweep runs ${SYSTEMS.join(' and ')} only, not ${s}`);
        break;
      case '--prefetches':
        out.prefetches = intList(flag, argv[++i]);
        break;
      case '--payloads':
        out.payloads = intList(flag, argv[++i]);
        break;
      case '--payload-budget-mb':
        out.payloadBudgetMb = intList(flag, argv[++i])[0];
        break;
      case '--concurrency':
      case '--prefetch':
      case '--workers':
      case '--payload-bytes':
      case '--celery-n':
      case '--celery-round-trips':
        throw new Error(`${flag} is set by each sweep point (or not used by the sweep)\n${USAGE}`);
      default:
        rest.push(flag);
    }
  }
  const base = parseArgs(rest);
  if (!base.quick && !base.nExplicit) base.n = SWEEP_N;
  base.systems = [...out.systems];
  return { base, ...out };
}

interface Point {
  curve: Curve;
  /** The swept value: prefetch, payload bytes or worker processes. */
  x: number;
  system: SystemName;
  opts: BenchOptions;
}

function points(s: SweepOptions): Point[] {
  const list: Point[] = [];
  const point = (curve: Curve, x: number, change: Partial<BenchOptions>) => {
    for (const system of s.systems) {
      // the sweep measures throughput only: no load or prefetch-1 phases
      const opts: BenchOptions = { ...s.base, prefetch: null, concurrency: DEFAULT_CONCURRENCY, workers: 1, payloadBytes: null, loadFractions: [], prefetchOneN: 0, ...change, notes: [] };
      if (opts.payloadBytes) {
        applyPayloadGuards(opts); // run.ts's guards: N for 2 GiB at most, nestjs get() concurrency for 16 MiB read at once
        const budget = Math.max(PAYLOAD_MIN_N, Math.floor((s.payloadBudgetMb * 1e6) / opts.payloadBytes));
        if (opts.n > budget) {
          opts.n = budget;
          opts.notes.push(`N lowered to ${budget} for ${opts.payloadBytes} B payloads (sweep budget ${s.payloadBudgetMb} MB per point, at least ${PAYLOAD_MIN_N} tasks)`);
        }
        const concurrency = Math.max(1, Math.floor(PAYLOAD_WRITE_BYTES / opts.payloadBytes));
        if (concurrency < opts.concurrency) {
          opts.concurrency = concurrency;
          opts.prefetch = concurrency * 4;
          opts.getConcurrency = Math.min(opts.getConcurrency, concurrency);
          opts.notes.push(
            `concurrency ${concurrency}, prefetch ${concurrency * 4}, nestjs get() concurrency ${opts.getConcurrency} for ${opts.payloadBytes} B payloads ` +
              `(at most ${PAYLOAD_WRITE_BYTES >>> 20} MiB written at once: 1 MB values ran the 512 MiB Cassandra test node out of heap)`,
          );
        }
      }
      list.push({ curve, x, system, opts });
    }
  };
  if (s.curves.includes('prefetch')) for (const p of s.prefetches) point('prefetch', p, { prefetch: p, concurrency: Math.min(p, DEFAULT_CONCURRENCY) });
  if (s.curves.includes('payload')) for (const b of s.payloads) point('payload', b, { payloadBytes: b });
  if (s.curves.includes('workers')) for (const w of [1, 2]) point('workers', w, { workers: w });
  return list;
}

interface PointResult {
  curve: Curve;
  x: number;
  system: SystemName;
  settings: {
    n: number;
    concurrency: number;
    prefetch: number;
    workers: number;
    payload_bytes: number | null;
    round_trips: number;
    get_concurrency: number;
  };
  /** Messages a worker process may hold unacknowledged (its prefetch); x workers for the total. */
  in_flight_per_worker: number;
  publish_per_s?: number;
  end_to_end_per_s?: number;
  worker_per_s?: number;
  /** Payload MB/s end to end (argument in, the same size of result out). */
  end_to_end_mb_per_s?: number;
  p50_ms?: number;
  p99_ms?: number;
  pss_mb?: number;
  rss_mb?: number;
  memory_samples?: unknown;
  rows?: unknown;
  wall_s: number;
  loadavg_before: number[];
  notes: string[];
  error?: string;
}

function table(results: PointResult[]): string {
  const header = ['curve', 'x', 'system', 'N', 'conc', 'prefetch', 'workers', 'payload B', 'end-to-end/s', 'publish/s', '(stored/s)', 'PSS MiB', 'p50 ms', 'wall s'];
  const cell = (v: unknown) => (v === undefined || v === null || (typeof v === 'number' && !Number.isFinite(v)) ? '-' : String(v));
  const rows = results.map((r) => [
    r.curve,
    String(r.x),
    r.system,
    String(r.settings.n),
    String(r.settings.concurrency),
    String(r.settings.prefetch),
    String(r.settings.workers),
    cell(r.settings.payload_bytes ?? SENTENCE_BYTES),
    r.error ? 'FAILED' : cell(r.end_to_end_per_s),
    cell(r.publish_per_s),
    cell(r.worker_per_s),
    cell(r.pss_mb),
    cell(r.p50_ms),
    cell(r.wall_s),
  ]);
  const all = [header, ...rows];
  const widths = header.map((_, c) => Math.max(...all.map((row) => row[c].length)));
  const line = (row: string[]) => row.map((v, c) => (c === 0 || c === 2 ? v.padEnd(widths[c]) : v.padStart(widths[c]))).join('  ');
  const out = [line(header), widths.map((w) => '-'.repeat(w)).join('  ')];
  rows.forEach((row, i) => {
    if (i > 0 && results[i].curve !== results[i - 1].curve) out.push('');
    out.push(line(row));
  });
  return out.join('\n');
}

async function main(): Promise<number> {
  const started = performance.now();
  const sweep = parseSweepArgs(process.argv.slice(2));
  const list = points(sweep);
  const log = (s: string) => process.stdout.write(`[sweep] ${s}\n`);
  const admin = cassandraClient(undefined);
  await admin.connect();
  const results: PointResult[] = [];
  let machine: Record<string, unknown> = {};
  try {
    machine = await machineInfo(admin);
    log(describeMachine(machine));
    log(`${list.length} points (${sweep.curves.join(', ')} x ${sweep.systems.join(', ')}), N ${sweep.base.n}, ${sweep.base.roundTrips} round trips each`);
    if (sweep.curves.includes('payload') && sweep.payloads.some((b) => b >= 512 * 1024)) {
      log('warning: payloads from 512 KiB on are humongous objects for a 512 MiB G1 Cassandra heap; 1 MB points have run the test node out of memory');
    }
    for (const [i, p] of list.entries()) {
      const o = p.opts;
      const prefetch = o.prefetch ?? o.concurrency * 4;
      log(`[${i + 1}/${list.length}] ${p.curve}=${p.x} ${p.system}: N ${o.n}, concurrency ${o.concurrency}, prefetch ${prefetch}, workers ${o.workers}, payload ${o.payloadBytes ?? 'sentence'}`);
      for (const note of o.notes) log(`  ${note}`);
      const load = loadavg().map((l) => round(l, 2));
      const t = performance.now();
      const r: PointResult = {
        curve: p.curve,
        x: p.x,
        system: p.system,
        settings: { n: o.n, concurrency: o.concurrency, prefetch, workers: o.workers, payload_bytes: o.payloadBytes, round_trips: o.roundTrips, get_concurrency: o.getConcurrency },
        in_flight_per_worker: prefetch,
        wall_s: 0,
        loadavg_before: load,
        notes: [...o.notes],
      };
      try {
        const s = await RUNNERS[p.system](o, admin, (m) => log(`  ${m}`));
        const bytes = o.payloadBytes ?? SENTENCE_BYTES;
        Object.assign(r, {
          publish_per_s: s.publish_per_s,
          end_to_end_per_s: s.end_to_end_per_s,
          worker_per_s: s.worker_per_s,
          end_to_end_mb_per_s: round((s.end_to_end_per_s * bytes) / 1e6, 2),
          p50_ms: s.p50_ms,
          p99_ms: s.p99_ms,
          pss_mb: s.pss_mb,
          rss_mb: s.rss_mb,
          memory_samples: s.memory_samples,
          rows: s.rows,
        });
        r.notes.push(...s.notes);
      } catch (err) {
        r.error = err instanceof Error ? err.message : String(err);
        log(`  FAILED: ${r.error.split('\n')[0]}`);
      }
      r.wall_s = round((performance.now() - t) / 1000, 1);
      if (!r.error) log(`  ${r.end_to_end_per_s} tasks/s end to end, PSS ${r.pss_mb} MiB, ${r.wall_s} s`);
      results.push(r);
    }
  } finally {
    await admin.shutdown().catch(() => undefined);
    await deleteQueues('bench_nestjs', 'bench_raw').catch((err: unknown) => log(`queue clean-up failed: ${String(err)}`));
  }

  const wall = round((performance.now() - started) / 1000, 1);
  const out = {
    machine,
    points: results,
    run: {
      date: new Date().toISOString(),
      wall_s: wall,
      command: `node dist-bench/bench/sweep.js ${process.argv.slice(2).join(' ')}`.trim(),
      options: {
        curves: sweep.curves,
        systems: sweep.systems,
        prefetches: sweep.prefetches,
        payloads: sweep.payloads,
        payload_budget_mb: sweep.payloadBudgetMb,
        n: sweep.base.n,
        round_trips: sweep.base.roundTrips,
        get_concurrency: sweep.base.getConcurrency,
        default_concurrency: DEFAULT_CONCURRENCY,
      },
      git: gitInfo(),
      meaning: {
        prefetch: 'x = worker prefetch, concurrency = min(prefetch, 64); tasks in flight per worker = prefetch',
        payload: 'x = bytes of the text argument (the result has the same size); default concurrency 64, prefetch 256',
        workers: 'x = worker processes, default settings each (concurrency 64, prefetch 256); RSS summed over them',
      },
    },
  };
  mkdirSync(sweep.base.out, { recursive: true });
  const jsonPath = join(sweep.base.out, 'sweep.json');
  writeFileSync(jsonPath, JSON.stringify(out, null, 2) + '\n');

  process.stdout.write('\n' + table(results) + '\n\n');
  process.stdout.write(`  x: prefetch (curve prefetch), payload bytes (payload), worker processes (workers); payload B ${SENTENCE_BYTES} = the walkthrough sentence\n`);
  process.stdout.write('  RSS: peak summed VmRSS of the worker process(es); (stored/s): the workers\' own rate from date_done\n');
  for (const r of results) if (r.error) process.stdout.write(`  ${r.curve}=${r.x} ${r.system}: FAILED: ${r.error.split('\n')[0]}\n`);
  process.stdout.write(`\nwrote ${jsonPath}\n`);
  if (sweep.base.chart && results.some((r) => !r.error)) drawChart('sweep_chart.py', jsonPath, join(sweep.base.out, 'sweep.png'), log);
  process.stdout.write(`total wall time ${round((performance.now() - started) / 1000, 1)} s\n`);
  return results.some((r) => r.error) ? 1 : 0;
}

runEntryPoint('sweep', main);
