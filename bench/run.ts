/**
 * `npm run bench [-- options]`: nestjs-celery against a hand-written amqplib + cassandra-driver
 * pipeline and against Python Celery, on the same RabbitMQ and Cassandra, doing the same work (the
 * walkthrough's tasks.sortWords, result stored in Celery's Cassandra table, message acknowledged
 * after the store). See bench/README.md.
 */
import * as amqplib from 'amqplib';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, hostname, loadavg, release, totalmem, type } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Client } from 'cassandra-driver';
import { runCelery } from './celery-system';
import { AMQP_URL, baseText, BenchOptions, cassandraClient, createTableCql, deleteQueues, killAllChildrenSync, round, SystemResult, taskText } from './common';
import { runNestjs } from './nestjs-system';
import { ensureMatplotlib, PYTHON, REPO_ROOT } from './python-env';
import { runRaw } from './raw-system';
import { FULL_JSON, README, readFull, renderTable, withTable } from './readme-table';
import { WireCheck, wireCheck } from './wire-check';

const ALL_SYSTEMS = ['nestjs', 'raw', 'celery'];
/** Run only when named in --systems: nestjs with its task in an isolated worker thread. */
const EXTRA_SYSTEMS = ['nestjs_thread'];
const KNOWN_SYSTEMS = [...ALL_SYSTEMS, ...EXTRA_SYSTEMS];
/** Payload guards: bytes a run may store without --n, and bytes of results read back at once. */
const MAX_STORED_BYTES = 2 * 1024 ** 3;
const MAX_READ_BYTES_IN_FLIGHT = 16 * 1024 ** 2;
const METRICS = ['publish_per_s', 'end_to_end_per_s', 'p50_ms', 'p99_ms', 'pss_mb'] as const;

const USAGE = `usage: npm run bench -- [options]
  --quick                 N = 2000 (Celery 500), Celery 20 round trips per pool, shorter load and prefetch-1 phases
  --n N                   tasks per throughput run (default 20000; Celery: min(N, 2000))
  --systems a,b           subset of ${KNOWN_SYSTEMS.join(',')} (default ${ALL_SYSTEMS.join(',')}; nestjs_thread:
                          nestjs with its task in an isolated worker thread, compared with nestjs)
  --concurrency C         nestjs and raw worker concurrency (default 64, the library's default)
  --prefetch P            nestjs and raw worker prefetch (default concurrency x 4)
  --workers W             nestjs and raw worker processes (default 1)
  --payload-bytes B       text argument of B bytes of random words (default: the walkthrough's sentence)
  --round-trips R         sequential send + get round trips (default 300)
  --get-concurrency G     nestjs: at most G AsyncResult.get() at once (default 1000; 0 = all at once,
                          which fails beyond 2048 with the driver's BusyConnectionError)
  --celery-n N            Celery's N (default min(N, 2000); 500 with --quick)
  --celery-round-trips R  Celery's round trips per pool (default min(R, 100); 20 with --quick)
  --load-fractions a,b    nestjs and raw: round trips timed under a background load at these fractions of
                          the system's measured end-to-end rate (default 0.5,0.9; "none" skips the phase)
  --load-round-trips R    round trips per load level (default 200; 40 with --quick)
  --prefetch1-n N         nestjs and raw at worker concurrency 1, prefetch 1: N tasks at once (default 1000;
                          200 with --quick; 0 skips the phase)
  --prefetch1-round-trips R  round trips at prefetch 1 (default 100; 30 with --quick)
  --no-chart              skip the PNG
  --save-full             keep the run as bench/results/full.json / full.png and write README's
                          Performance table from it (a full run at a committed state only)
  --out DIR               results folder (default bench/results)`;

export function parseArgs(argv: string[]): BenchOptions {
  const opts: BenchOptions = {
    quick: false,
    n: 20000,
    nExplicit: false,
    systems: [...ALL_SYSTEMS],
    prefetch: null,
    concurrency: 64,
    workers: 1,
    payloadBytes: null,
    roundTrips: 300,
    getConcurrency: 1000,
    celeryN: null,
    celeryRoundTrips: null,
    loadFractions: [0.5, 0.9],
    loadRoundTrips: 200,
    prefetchOneN: 1000,
    prefetchOneRoundTrips: 100,
    chart: true,
    saveFull: false,
    out: join(REPO_ROOT, 'bench', 'results'),
    notes: [],
  };
  const explicit = new Set<string>();
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value\n${USAGE}`);
      return v;
    };
    const int = (min: number) => {
      const v = Number(value());
      if (!Number.isInteger(v) || v < min) throw new Error(`${flag} must be an integer >= ${min}`);
      return v;
    };
    /** A count option that --quick would otherwise shorten. */
    const count = (key: 'loadRoundTrips' | 'prefetchOneN' | 'prefetchOneRoundTrips') => {
      opts[key] = int(0);
      explicit.add(key);
    };
    switch (flag) {
      case '--quick':
        opts.quick = true;
        break;
      case '--n':
        opts.n = int(1);
        opts.nExplicit = true;
        break;
      case '--systems':
        opts.systems = value().split(',').map((s) => s.trim()).filter(Boolean);
        for (const s of opts.systems) if (!KNOWN_SYSTEMS.includes(s)) throw new Error(`unknown system ${s} (${KNOWN_SYSTEMS.join(', ')})`);
        break;
      case '--concurrency':
        opts.concurrency = int(1);
        break;
      case '--prefetch':
        opts.prefetch = int(1);
        break;
      case '--workers':
        opts.workers = int(1);
        break;
      case '--payload-bytes':
        opts.payloadBytes = int(1);
        break;
      case '--round-trips':
        opts.roundTrips = int(0);
        break;
      case '--get-concurrency':
        opts.getConcurrency = int(0);
        break;
      case '--celery-n':
        opts.celeryN = int(1);
        break;
      case '--celery-round-trips':
        opts.celeryRoundTrips = int(0);
        break;
      case '--load-fractions': {
        const v = value();
        opts.loadFractions = v === 'none' ? [] : v.split(',').map(Number);
        for (const f of opts.loadFractions) if (!(f > 0 && f <= 2)) throw new Error(`--load-fractions: ${v} is not a list of fractions in (0, 2]`);
        break;
      }
      case '--load-round-trips':
        count('loadRoundTrips');
        break;
      case '--prefetch1-n':
        count('prefetchOneN');
        break;
      case '--prefetch1-round-trips':
        count('prefetchOneRoundTrips');
        break;
      case '--save-full':
        opts.saveFull = true;
        break;
      case '--no-chart':
        opts.chart = false;
        break;
      case '--out':
        opts.out = value();
        break;
      case '-h':
      case '--help':
        process.stdout.write(USAGE + '\n');
        process.exit(0);
        break;
      default:
        throw new Error(`unknown option ${flag}\n${USAGE}`);
    }
  }
  if (opts.quick && !opts.nExplicit) opts.n = 2000;
  if (opts.quick) {
    // the added phases, short: CI runs --quick
    if (!explicit.has('loadRoundTrips')) opts.loadRoundTrips = 40;
    if (!explicit.has('prefetchOneN')) opts.prefetchOneN = 200;
    if (!explicit.has('prefetchOneRoundTrips')) opts.prefetchOneRoundTrips = 30;
  }
  applyPayloadGuards(opts);
  return opts;
}

/** With --payload-bytes: lowers N (unless --n was given) and the nestjs get() concurrency, noting it in opts.notes. */
export function applyPayloadGuards(opts: BenchOptions): void {
  if (!opts.payloadBytes) return;
  // The test node has a 512 MiB heap: keep what a run stores (and reads back at once) within reach.
  const total = opts.n * opts.payloadBytes * 2; // argument in the queue, result in the table
  if (total > MAX_STORED_BYTES && !opts.nExplicit) {
    opts.n = Math.max(10, Math.floor(MAX_STORED_BYTES / (opts.payloadBytes * 2)));
    opts.notes.push(`N lowered to ${opts.n} for ${opts.payloadBytes} B payloads (at most ${MAX_STORED_BYTES / 1024 ** 2} MiB per run; --n overrides)`);
  }
  const reads = Math.max(8, Math.floor(MAX_READ_BYTES_IN_FLIGHT / opts.payloadBytes));
  if (opts.getConcurrency === 0 || opts.getConcurrency > reads) {
    opts.getConcurrency = reads;
    opts.notes.push(`nestjs get() concurrency lowered to ${reads} for ${opts.payloadBytes} B results (a 512 MiB Cassandra heap runs out of memory with ~100 MB of results read at once)`);
  }
}

export async function machineInfo(admin: Client): Promise<Record<string, unknown>> {
  const info: Record<string, unknown> = {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memGiB: round(totalmem() / 1024 ** 3, 1),
    node: process.version,
    os: `${type()} ${release()}`,
  };
  try {
    const conn = await amqplib.connect(AMQP_URL);
    const props = (conn as unknown as { connection: { serverProperties?: Record<string, unknown> } }).connection.serverProperties;
    if (props?.version) info.rabbitmq = String(props.version);
    await conn.close();
  } catch {
    // unknown
  }
  try {
    const rs = await admin.execute('SELECT release_version FROM system.local');
    info.cassandra = String(rs.first().release_version);
  } catch {
    // unknown
  }
  return info;
}

/** Where and at what code a system's figures were measured (stored with each system in the JSON). */
export interface MeasuredAt {
  commit: string;
  /** lib/, bench/ or package.json had uncommitted changes (then `run.git` has a hash of lib/'s). */
  dirty: boolean;
  date: string;
  machine: string;
}

export function measuredAt(machine: Record<string, unknown>): MeasuredAt {
  let commit = 'unknown';
  let dirty = true;
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8' }).trim();
    dirty = execFileSync('git', ['status', '--porcelain', '--', 'lib', 'bench', 'package.json'], { cwd: REPO_ROOT, encoding: 'utf8' }).trim() !== '';
  } catch {
    // not a git checkout: unknown, and counted as dirty
  }
  return { commit, dirty, date: new Date().toISOString(), machine: `${hostname()}: ${describeMachine(machine).replace(/^machine: /, '')}` };
}

export function gitInfo(): Record<string, unknown> {
  try {
    const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8' }).trim();
    const status = execFileSync('git', ['status', '--porcelain', '--', 'lib'], { cwd: REPO_ROOT, encoding: 'utf8' }).trim();
    if (!status) return { commit, libUncommittedChanges: false };
    // Which uncommitted state of lib/ was measured: a hash of the diff and of the untracked files.
    const hash = createHash('sha256').update(execFileSync('git', ['diff', 'HEAD', '--', 'lib'], { cwd: REPO_ROOT, encoding: 'utf8', maxBuffer: 64 << 20 }));
    for (const line of status.split('\n')) {
      if (line.startsWith('??')) {
        const path = line.slice(3);
        hash.update(path);
        try {
          hash.update(readFileSync(join(REPO_ROOT, path)));
        } catch {
          // a folder: its name is enough
        }
      }
    }
    return { commit, libUncommittedChanges: true, libChangedFiles: status.split('\n').length, libStateHash: hash.digest('hex').slice(0, 12) };
  } catch {
    return {};
  }
}

function ratios(systems: Record<string, SystemResult>): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const [one, other] of [['nestjs', 'raw'], ['nestjs', 'celery'], ['nestjs_thread', 'nestjs']]) {
    const a = systems[one];
    const b = systems[other];
    if (!a || !b) continue;
    const r: Record<string, number> = {};
    for (const m of METRICS) {
      const x = a[m];
      const y = b[m];
      if (typeof x === 'number' && typeof y === 'number' && y !== 0 && Number.isFinite(x) && Number.isFinite(y)) r[m] = round(x / y, 3);
    }
    out[`${one}/${other}`] = r;
  }
  return out;
}

function table(systems: Record<string, SystemResult>, rs: Record<string, Record<string, number>>): string {
  const header = ['system', 'N', 'publish/s', 'end-to-end/s', 'p50 ms', 'p99 ms', 'worker PSS MiB', '(stored/s)'];
  const rows: string[][] = [header];
  for (const [name, s] of Object.entries(systems)) {
    rows.push([name, String(s.n), String(s.publish_per_s), String(s.end_to_end_per_s), String(s.p50_ms), String(s.p99_ms), String(s.pss_mb), String(s.worker_per_s)]);
  }
  for (const [name, r] of Object.entries(rs)) {
    rows.push([name, '', ...METRICS.map((m) => (r[m] === undefined ? '' : `${r[m]}x`)), '']);
  }
  const widths = header.map((_, c) => Math.max(...rows.map((row) => row[c].length)));
  const line = (row: string[]) => row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ');
  const sep = widths.map((w) => '-'.repeat(w)).join('  ');
  return [line(rows[0]), sep, ...rows.slice(1, 1 + Object.keys(systems).length).map(line), ...(Object.keys(rs).length ? [sep] : []), ...rows.slice(1 + Object.keys(systems).length).map(line)].join('\n');
}

async function main(): Promise<number> {
  const started = performance.now();
  const opts = parseArgs(process.argv.slice(2));
  const log = (s: string) => process.stdout.write(`[bench] ${s}\n`);
  const admin = cassandraClient(undefined);
  await admin.connect();
  const systems: Record<string, SystemResult> = {};
  const errors: Record<string, string> = {};
  let machine: Record<string, unknown> = {};
  let wire: WireCheck | null = null;
  try {
    machine = await machineInfo(admin);
    log(describeMachine(machine));
    log(
      `N ${opts.n}${opts.quick ? ' (--quick)' : ''}, systems ${opts.systems.join(',')}, concurrency ${opts.concurrency}, ` +
        `prefetch ${opts.prefetch ?? `${opts.concurrency * 4} (default)`}, workers ${opts.workers}, payload ${opts.payloadBytes ?? 'walkthrough sentence'}`,
    );
    for (const note of opts.notes) log(note);
    if (opts.systems.includes('nestjs') && opts.systems.includes('raw')) {
      try {
        await admin.execute(createTableCql('bench_nestjs'));
        wire = await wireCheck(opts.payloadBytes, 'bench_nestjs');
        log(`wire check: raw and nestjs publish ${wire.same_bytes ? 'the same bytes' : 'DIFFERENT bytes'} (body ${wire.body_bytes} B, header table ${wire.header_table_bytes} B)`);
        if (!wire.same_bytes) errors.wire_check = `raw and nestjs messages differ: ${wire.differences.join('; ')}`;
      } catch (err) {
        errors.wire_check = err instanceof Error ? err.message : String(err);
        log(`wire check: FAILED: ${errors.wire_check}`);
      }
    }
    const runners: Record<string, (o: BenchOptions, a: Client, l: (s: string) => void) => Promise<SystemResult>> = {
      nestjs: runNestjs,
      raw: runRaw,
      celery: runCelery,
      nestjs_thread: (o, a, l) => runNestjs(o, a, l, { isolate: 'thread' }),
    };
    for (const name of KNOWN_SYSTEMS.filter((s) => opts.systems.includes(s))) {
      const t = performance.now();
      const load = loadavg().map((l) => round(l, 2));
      try {
        systems[name] = await runners[name](opts, admin, log);
        systems[name].wall_s = round((performance.now() - t) / 1000, 1);
        systems[name].loadavg_before = load;
        systems[name].measured_at = measuredAt(machine);
        log(`${name}: done in ${systems[name].wall_s} s`);
      } catch (err) {
        errors[name] = err instanceof Error ? err.message : String(err);
        log(`${name}: FAILED after ${round((performance.now() - t) / 1000, 1)} s: ${errors[name]}`);
      }
    }
  } finally {
    await admin.shutdown().catch(() => undefined);
    // Each system removes its queues; this sweep catches what a failure in the middle left behind.
    await deleteQueues('bench_nestjs', 'bench_nestjs_thread', 'bench_raw', 'bench_celery').catch((err: unknown) => log(`queue clean-up failed: ${String(err)}`));
  }

  const rs = ratios(systems);
  const wall = round((performance.now() - started) / 1000, 1);
  const result = {
    machine,
    systems,
    ratios: rs,
    ...(wire ? { wire_check: wire } : {}),
    run: {
      date: new Date().toISOString(),
      wall_s: wall,
      options: { ...opts, out: undefined, notes: undefined },
      notes: opts.notes,
      git: gitInfo(),
      payload_bytes: Buffer.byteLength(taskText(baseText(opts.payloadBytes), 0)),
      inputs: 'every task a distinct input: the base text and a word of its own (six base-36 digits), each result checked against its own expected value',
      ratio_meaning: 'a / b value (nestjs/raw, nestjs/celery, nestjs_thread/nestjs): above 1 is better for rates, worse for latencies and memory',
      ...(Object.keys(errors).length ? { errors } : {}),
    },
  };
  mkdirSync(opts.out, { recursive: true });
  const jsonPath = join(opts.out, 'latest.json');
  writeFileSync(jsonPath, JSON.stringify(result, null, 2) + '\n');

  process.stdout.write('\n' + table(systems, rs) + '\n\n');
  if (Object.keys(systems).length) {
    process.stdout.write('  (stored/s): tasks stored / (first publish -> last date_done), the workers\' own rate without collecting results\n');
  }
  for (const [name, s] of Object.entries(systems)) for (const note of s.notes) process.stdout.write(`  ${name}: ${note}\n`);
  for (const note of opts.notes) process.stdout.write(`  run: ${note}\n`);
  for (const [name, e] of Object.entries(errors)) process.stdout.write(`  ${name}: FAILED: ${e.split('\n')[0]}\n`);
  process.stdout.write(`\nwrote ${jsonPath}\n`);
  if (opts.chart && Object.keys(systems).length) drawChart('chart.py', jsonPath, join(opts.out, 'latest.png'), log);
  if (opts.saveFull) saveFull(jsonPath, join(opts.out, 'latest.png'), Object.keys(errors).length > 0 || opts.quick, log);
  process.stdout.write(`total wall time ${round((performance.now() - started) / 1000, 1)} s\n`);
  return Object.keys(errors).length ? 1 : 0;
}

/** Copies the run to bench/results/full.* and writes README's table from it; refused for a failed or --quick run. */
function saveFull(jsonPath: string, png: string, refuse: boolean, log: (s: string) => void): void {
  if (refuse) {
    log('--save-full: not saved (a failed or --quick run is not the reference run)');
    return;
  }
  copyFileSync(jsonPath, FULL_JSON);
  if (existsSync(png)) copyFileSync(png, FULL_JSON.replace(/\.json$/, '.png'));
  writeFileSync(README, withTable(readFileSync(README, 'utf8'), renderTable(readFull())));
  log(`--save-full: wrote ${FULL_JSON} and README's Performance table`);
}

/** One line naming the machine and the services' versions, for the run's log. */
export function describeMachine(machine: Record<string, unknown>): string {
  return (
    `machine: ${String(machine.cpus)} x ${String(machine.cpuModel)}, ${String(machine.memGiB)} GiB, node ${String(machine.node)}, ` +
    `RabbitMQ ${String(machine.rabbitmq ?? '?')}, Cassandra ${String(machine.cassandra ?? '?')}`
  );
}

/** Draws `png` from the results in `jsonPath` with bench/`script` (matplotlib in the venv); a failure is only logged. */
export function drawChart(script: string, jsonPath: string, png: string, log: (s: string) => void): void {
  if (!ensureMatplotlib(log)) return;
  try {
    execFileSync(PYTHON, [join(REPO_ROOT, 'bench', script), jsonPath, png], { stdio: 'inherit' });
    process.stdout.write(`wrote ${png}\n`);
  } catch (err) {
    log(`chart failed: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** Ends the worker processes and removes the benchmark's queues on exit, Ctrl-C or SIGTERM. */
export function installCleanup(): void {
  process.on('exit', killAllChildrenSync);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      process.stderr.write(`[bench] ${signal}: stopping the workers\n`);
      killAllChildrenSync();
      const timer = setTimeout(() => process.exit(130), 5000);
      deleteQueues('bench_nestjs', 'bench_nestjs_thread', 'bench_raw', 'bench_celery')
        .catch(() => undefined)
        .finally(() => {
          clearTimeout(timer);
          process.exit(130);
        });
    });
  }
}

/** Runs `main` as a process's entry point: cleanup on signals, its exit code, a failure logged under `tag`. */
export function runEntryPoint(tag: string, main: () => Promise<number>): void {
  installCleanup();
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`[${tag}] failed: ${err instanceof Error ? err.stack : String(err)}\n`);
      process.exit(1);
    },
  );
}

// Run only as the entry point (bench/sweep.ts imports the helpers above).
if (require.main === module) runEntryPoint('bench', main);
