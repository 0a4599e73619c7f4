/**
 * Shared pieces of the benchmark: where the services are, the task (sortWords), its payload, the
 * Celery result table, statistics, child processes and their resident memory.
 */
import * as amqplib from 'amqplib';
import { auth, Client, types } from 'cassandra-driver';
import { ChildProcess, spawn, SpawnOptions } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const AMQP_URL = process.env.BENCH_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
export const CASSANDRA_HOST = process.env.BENCH_CASSANDRA_HOST ?? '127.0.0.1';
export const CASSANDRA_PORT = Number(process.env.BENCH_CASSANDRA_PORT ?? 9042);
export const CASSANDRA_DC = process.env.BENCH_CASSANDRA_DC ?? 'datacenter1';
export const KEYSPACE = process.env.CASSANDRA_KEYSPACE ?? 'celery_test';
export const CREDENTIALS = {
  username: process.env.CASSANDRA_USERNAME ?? 'cassandra',
  password: process.env.CASSANDRA_PASSWORD ?? 'cassandra',
};

import type { CeleryModuleOptions } from '../lib/interfaces/celery-options.interface';
import { sortWords, WALKTHROUGH_TEXT } from './sort-words';
export { sortWords, TASK_NAME, WALKTHROUGH_TEXT } from './sort-words';

/**
 * The text argument: the walkthrough's sentence, or `bytes` bytes of pseudo-random ASCII words
 * (same text for every task and every system; deterministic).
 */
export function payloadText(bytes: number | null): string {
  if (!bytes) return WALKTHROUGH_TEXT;
  let seed = 0x9e3779b9;
  const rand = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 0x100000000;
  };
  const letters = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
  const parts: string[] = [];
  let size = 0;
  while (size < bytes) {
    const len = 2 + Math.floor(rand() * 9);
    let word = '';
    for (let i = 0; i < len; i++) word += letters[Math.floor(rand() * letters.length)];
    parts.push(word);
    size += word.length + 1;
  }
  let text = parts.join(' ').slice(0, bytes);
  if (text.endsWith(' ')) text = text.slice(0, -1) + 'x';
  return text;
}

/**
 * The header naming the queue a worker pushes the result to: the one nestjs-celery's Producer
 * sends (`nestjs_celery_notify`), which the raw pipeline uses too, so that both systems publish
 * the same bytes; written out here, not imported from lib/, as everything on raw's path.
 */
export const RAW_NOTIFY_HEADER = 'nestjs_celery_notify';

/** Bytes the per-task word adds to the base text: a space and six base-36 digits. */
export const TASK_TAG_BYTES = 7;

/**
 * The base text of a run: the walkthrough's sentence, or (with --payload-bytes B) B - 7 bytes of
 * words, so that with the per-task word every task's argument is exactly B bytes.
 */
export function baseText(payloadBytes: number | null): string {
  return payloadBytes ? payloadText(Math.max(1, payloadBytes - TASK_TAG_BYTES)) : WALKTHROUGH_TEXT;
}

/**
 * Task `index`'s argument: the base text and a word of its own (the index in base 36, six digits),
 * so that every task has a distinct input and its own expected result: a result handed to the
 * wrong task, or one served from a cache, fails the check. bench/python/bench_client.py builds
 * the same texts (`text_of`), so every system gets the same inputs, of the same size.
 */
export function taskText(base: string, index: number): string {
  return `${base} ${index.toString(36).padStart(6, '0')}`;
}

/** One task's input and the result it must come back with. */
export interface TaskInput {
  text: string;
  expected: string;
}

/** Hands out distinct task inputs in order (see taskText) and checks each result against its own. */
export class TaskInputs {
  private issued = 0;
  private checked = 0;

  constructor(
    readonly base: string,
    private readonly label: string,
  ) {}

  next(): TaskInput {
    const text = taskText(this.base, this.issued++);
    return { text, expected: sortWords(text, false) };
  }

  /** Tasks handed out so far (each one sent once: the rows the result table must hold). */
  get count(): number {
    return this.issued;
  }

  /** Results checked so far (each against its own task's expected value). */
  get checkedCount(): number {
    return this.checked;
  }

  check(value: unknown, input: TaskInput): void {
    if (value !== input.expected) {
      throw new Error(`${this.label}: wrong result for input ${JSON.stringify(input.text.slice(-40))}: ${JSON.stringify(value).slice(0, 200)} (expected ${JSON.stringify(input.expected.slice(0, 200))})`);
    }
    this.checked++;
  }
}

/** Celery's Cassandra result table (celery/backends/cassandra.py), one per system. */
export function createTableCql(table: string): string {
  return (
    `CREATE TABLE IF NOT EXISTS ${KEYSPACE}.${table} (task_id text, status text, result blob, date_done timestamp, ` +
    'traceback blob, children blob, PRIMARY KEY ((task_id), date_done)) WITH CLUSTERING ORDER BY (date_done DESC)'
  );
}

/** The `cassandra` options of a benchmark's CeleryModule: the bench node, with credentials, and `table`. */
export function benchCassandraOptions(table: string) {
  return { contactPoints: [CASSANDRA_HOST], port: CASSANDRA_PORT, localDataCenter: CASSANDRA_DC, keyspace: KEYSPACE, table, credentials: { ...CREDENTIALS } };
}

/** CeleryModule.forRoot options of the benchmark's nestjs processes: `queue`, results in `table`, and `worker`. */
export function benchCeleryOptions(queue: string, table: string, worker: CeleryModuleOptions['worker']): CeleryModuleOptions {
  return {
    brokerUrl: AMQP_URL,
    resultBackend: 'cassandra',
    defaultQueue: queue,
    cassandra: benchCassandraOptions(table),
    worker,
  };
}

export function cassandraClient(keyspace: string | undefined = KEYSPACE): Client {
  return new Client({
    contactPoints: [`${CASSANDRA_HOST}:${CASSANDRA_PORT}`],
    localDataCenter: CASSANDRA_DC,
    keyspace,
    authProvider: new auth.PlainTextAuthProvider(CREDENTIALS.username, CREDENTIALS.password),
    socketOptions: { connectTimeout: 5000, readTimeout: 30000 },
  });
}

/** Creates the system's result table when missing and empties it. */
export async function resetTable(admin: Client, table: string): Promise<void> {
  await admin.execute(createTableCql(table));
  await admin.execute(`TRUNCATE ${KEYSPACE}.${table}`, [], { consistency: types.consistencies.all });
}

export interface TableStats {
  rows: number;
  ids: number;
  duplicates: number;
  /** Rows whose date_done falls in the window, and the last such date_done (epoch ms). */
  inWindow: number;
  lastDoneMs: number;
}

/**
 * Rows of a result table and how many distinct task ids they hold (a task stored twice shows as a
 * duplicate); with a window (epoch ms), how many were stored in it and when the last one was.
 */
export async function tableStats(admin: Client, table: string, window?: { from: number; to: number }): Promise<TableStats> {
  const counts = new Map<string, number>();
  let rows = 0;
  let inWindow = 0;
  let lastDoneMs = 0;
  const stream = admin.stream(`SELECT task_id, date_done FROM ${KEYSPACE}.${table}`, [], { fetchSize: 5000, readTimeout: 60000 }) as unknown as AsyncIterable<types.Row>;
  for await (const row of stream) {
    rows++;
    const id = row.task_id as string;
    counts.set(id, (counts.get(id) ?? 0) + 1);
    const done = (row.date_done as Date).getTime();
    if (window && done >= window.from && done <= window.to) {
      inWindow++;
      if (done > lastDoneMs) lastDoneMs = done;
    }
  }
  let duplicates = 0;
  for (const n of counts.values()) if (n > 1) duplicates++;
  return { rows, ids: counts.size, duplicates, inWindow, lastDoneMs };
}

/**
 * The workers' own rate in the throughput phase: tasks stored between the first publish and the
 * last result read, over the time from the first publish to the last store (from date_done).
 */
export function workerRate(stats: TableStats, fromMs: number): number {
  if (!stats.inWindow || stats.lastDoneMs <= fromMs) return NaN;
  return round(stats.inWindow / ((stats.lastDoneMs - fromMs) / 1000), 0);
}

/** A note when the table does not hold exactly one row per task sent. */
export function rowsNote(table: string, stats: TableStats, expected: number): string[] {
  if (stats.rows === expected && stats.ids === expected) return [];
  return [`rows in ${table}: ${stats.rows} for ${stats.ids} task ids (${stats.duplicates} stored more than once), ${expected} tasks sent`];
}

/** Celery's topology for a queue: a direct exchange and a durable queue of the same name, bound by it. */
export async function declareCeleryQueue(ch: amqplib.Channel, queue: string): Promise<void> {
  await ch.assertExchange(queue, 'direct', { durable: true, autoDelete: false });
  await ch.assertQueue(queue, { durable: true, exclusive: false, autoDelete: false });
  await ch.bindQueue(queue, queue, queue);
}

/**
 * Deletes queues and the exchanges of the same name; missing ones are fine. Own connection (a 404
 * closes a channel); retried for up to 30 s while the broker refuses connections (a restart).
 */
export async function deleteQueues(...names: string[]): Promise<void> {
  let conn: amqplib.ChannelModel | null = null;
  for (let attempt = 0; !conn; attempt++) {
    try {
      conn = await amqplib.connect(AMQP_URL);
    } catch (err) {
      if (attempt >= 30) throw err;
      await sleep(1000);
    }
  }
  try {
    for (const name of names) {
      for (const op of ['queue', 'exchange'] as const) {
        const ch = await conn.createChannel();
        ch.on('error', () => undefined);
        try {
          if (op === 'queue') await ch.deleteQueue(name);
          else await ch.deleteExchange(name);
          await ch.close();
        } catch {
          // already gone
        }
      }
    }
  } finally {
    await conn.close().catch(() => undefined);
  }
}

/** How many consumers a queue has (0 when it does not exist). */
export async function consumerCount(conn: amqplib.ChannelModel, queue: string): Promise<number> {
  const ch = await conn.createChannel();
  ch.on('error', () => undefined);
  try {
    const q = await ch.checkQueue(queue);
    await ch.close();
    return q.consumerCount;
  } catch {
    return 0;
  }
}

// ------------------------------------------------------------------------------------------ statistics

/** Nearest-rank percentile of samples (ms). */
export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** `[N] [rounds] [concurrency]` from the command line of an alternating-rounds bench, with defaults. */
export function roundsArgs(defaults: { n: number; rounds: number; concurrency: number }): { n: number; rounds: number; concurrency: number } {
  const [n, rounds, concurrency] = [2, 3, 4].map((i) => (process.argv[i] === undefined ? undefined : Number(process.argv[i])));
  return { n: n ?? defaults.n, rounds: rounds ?? defaults.rounds, concurrency: concurrency ?? defaults.concurrency };
}

/**
 * Runs `run` once per mode per round, alternating which mode goes first so that drift in the
 * machine's load hits both, and returns each mode's results in order.
 */
export async function alternatingRounds<M extends string, R>(modes: readonly [M, M], rounds: number, run: (mode: M, round: number) => Promise<R>): Promise<Record<M, R[]>> {
  const out = Object.fromEntries(modes.map((m) => [m, [] as R[]])) as Record<M, R[]>;
  for (let r = 0; r < rounds; r++) {
    for (const mode of r % 2 === 0 ? modes : ([modes[1], modes[0]] as const)) out[mode].push(await run(mode, r + 1));
  }
  return out;
}

export function round(value: number, digits = 1): number {
  if (!Number.isFinite(value)) return value;
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Runs `fn` over items with at most `limit` at once (limit <= 0: all at once). */
export async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  if (limit <= 0 || limit >= items.length) return Promise.all(items.map(fn));
  const out = new Array<R>(items.length);
  let next = 0;
  const lane = async () => {
    for (;;) {
      const i = next++;
      if (i >= items.length) return;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: limit }, lane));
  return out;
}

// ------------------------------------------------------------------------------------ process trees

function ppidOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // pid (comm) state ppid ...; comm may hold spaces and parentheses
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(rest[1]);
  } catch {
    return null;
  }
}

/** The pids of `roots` and all their descendants. */
export function processTree(roots: number[]): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    const ppid = ppidOf(pid);
    if (ppid === null) continue;
    const list = children.get(ppid);
    if (list) list.push(pid);
    else children.set(ppid, [pid]);
  }
  const out: number[] = [];
  const stack = [...roots];
  const seen = new Set<number>();
  while (stack.length) {
    const pid = stack.pop() as number;
    if (seen.has(pid)) continue;
    seen.add(pid);
    out.push(pid);
    for (const c of children.get(pid) ?? []) stack.push(c);
  }
  return out;
}

// ------------------------------------------------------------------------------------ child processes

/** Every child the benchmark started, so that a failure or a signal still ends them. */
const children = new Set<ChildProcess>();

/** Starts a child in its own process group (so its whole tree can be signalled), remembered for clean-up. */
export function spawnChild(command: string, args: string[], options: SpawnOptions): ChildProcess {
  const child = spawn(command, args, { ...options, detached: true });
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

function signalTree(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  const tree = processTree([child.pid]);
  try {
    process.kill(-child.pid, signal); // the process group
  } catch {
    // already gone
  }
  for (const pid of tree) {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/** SIGTERM, then SIGKILL to the whole tree after `graceMs`; resolves once the child has exited. */
export async function stopChild(child: ChildProcess, graceMs = 15000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    signalTree(child, 'SIGKILL'); // leftovers of a dead parent (prefork children)
    return;
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const tree = child.pid !== undefined ? processTree([child.pid]) : [];
  try {
    child.kill('SIGTERM');
  } catch {
    // gone
  }
  const timer = setTimeout(() => signalTree(child, 'SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
  for (const pid of tree) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** Synchronous last resort (process 'exit'): kill every child tree still alive. */
export function killAllChildrenSync(): void {
  for (const child of children) signalTree(child, 'SIGKILL');
}

/**
 * Starts `count` Node worker processes (a script beside this file) at once and waits for each
 * one's `{ type: 'ready' }` IPC message; resolves the first one's message. On failure the ones
 * already started are stopped.
 */
export async function startNodeWorkers(
  script: string,
  count: number,
  args: string[],
  label: string,
): Promise<{ workers: ChildProcess[]; info: Record<string, unknown> }> {
  const workers: ChildProcess[] = [];
  const ready: Promise<Record<string, unknown>>[] = [];
  for (let i = 0; i < count; i++) {
    // BENCH_WORKER_NODE_ARGS passes node flags to the workers, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".
    const nodeArgs = process.env.BENCH_WORKER_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
    const child = spawnChild(process.execPath, [...nodeArgs, join(__dirname, script), ...args], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    workers.push(child);
    const output = captureOutput(child);
    ready.push(
      new Promise<Record<string, unknown>>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${label} worker not ready in 60 s:\n${output()}`)), 60000);
        child.once('message', (m: Record<string, unknown>) => {
          clearTimeout(timer);
          // Log what a running worker says later (warnings, errors).
          child.stderr?.on('data', (chunk: Buffer) => process.stderr.write(`[${label} worker ${child.pid}] ${chunk}`));
          resolve(m);
        });
        child.once('exit', (code, signal) => {
          clearTimeout(timer);
          reject(new Error(`${label} worker exited (${code ?? signal}) while starting:\n${output()}`));
        });
      }),
    );
  }
  try {
    const infos = await Promise.all(ready);
    return { workers, info: infos[0] };
  } catch (err) {
    await Promise.all(workers.map((w) => stopChild(w, 5000)));
    throw err;
  }
}

/** Output of a child kept for error messages (the last 20 kB). */
export function captureOutput(child: ChildProcess): () => string {
  let out = '';
  const onData = (chunk: Buffer) => {
    out += chunk.toString();
    if (out.length > 20000) out = out.slice(-20000);
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  return () => out;
}

// ------------------------------------------------------------------------------------------ results

/** What every system reports. Rates in tasks/s, latencies in ms, memory in MiB. */
export interface SystemResult {
  publish_per_s: number;
  end_to_end_per_s: number;
  p50_ms: number;
  p99_ms: number;
  /** Peak of the worker tree's summed PSS (shared pages divided among the processes mapping them), MiB: the memory figure. */
  pss_mb: number;
  /** Peak summed USS (private pages), MiB. */
  uss_mb?: number;
  /** Peak summed RSS (shared pages counted in every process), MiB: for comparison with older runs only. */
  rss_mb: number;
  /** Diagnostic: N / (first publish → last result stored), from the rows' date_done. */
  worker_per_s: number;
  n: number;
  round_trips: number;
  notes: string[];
  [key: string]: unknown;
}

/** Options of one benchmark run (command line). */
export interface BenchOptions {
  quick: boolean;
  n: number;
  nExplicit: boolean;
  systems: string[];
  prefetch: number | null;
  concurrency: number;
  workers: number;
  payloadBytes: number | null;
  roundTrips: number;
  getConcurrency: number;
  celeryN: number | null;
  celeryRoundTrips: number | null;
  /** Background load levels for the latency-under-load phase, as fractions of the measured end-to-end rate ([] skips it). */
  loadFractions: number[];
  /** Sequential round trips timed at each load level. */
  loadRoundTrips: number;
  /** Tasks of the prefetch-1 phase (worker concurrency 1, prefetch 1; 0 skips it), and its round trips. */
  prefetchOneN: number;
  prefetchOneRoundTrips: number;
  chart: boolean;
  /** Keep this run as bench/results/full.{json,png} and write README's table from it. */
  saveFull: boolean;
  out: string;
  /** What the run changed on its own (printed and stored). */
  notes: string[];
}
