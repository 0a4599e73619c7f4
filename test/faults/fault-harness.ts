import { Test, TestingModule } from '@nestjs/testing';
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import type { Client } from 'cassandra-driver';
import { CeleryModule, Producer } from '../../lib';
import { PrivateCassandra, PrivateNodeOptions } from '../support/private-cassandra';
import { AMQP_URL, CASSANDRA_HOST, CassandraTarget, KEYSPACE, RawAmqp, SHARED_CASSANDRA, SUPERUSER, rawCassandra, realOptions, uniqueName } from '../support/real-services';

const ROOT = join(__dirname, '..', '..');
const SAMPLE = join(ROOT, 'dist-sample', 'sample', 'main.js');
export const CASSANDRA_PID_FILE = join(ROOT, 'tools', 'cassandra', '.run', 'cassandra.pid');
export const RABBITMQ_PID_FILE = '/var/lib/rabbitmq/mnesia/rabbit@localhost.pid';

/**
 * The Cassandra login the sample workers use. `useWorkerRole()` replaces the test node's
 * superuser (whose password, "cassandra", is also the name of everything around it) with a role
 * of its own and a random password, so the suite can assert that the password never reaches a log.
 */
let workerLogin: { username: string; password: string } = { ...SUPERUSER };

export function workerCassandraPassword(): string {
  return workerLogin.password;
}

/** Creates a login role for the workers, with a random password and every permission on the test keyspace. */
export async function useWorkerRole(): Promise<void> {
  const login = { username: uniqueName('fault_worker'), password: `Pw${randomBytes(12).toString('hex')}` };
  await createRole(SHARED_CASSANDRA, login);
  workerLogin = login;
}

/** The workers' login role (as `useWorkerRole` made it) on another node too, with every permission on its keyspace. */
async function createRole(target: CassandraTarget, login: { username: string; password: string }): Promise<void> {
  const cql = await rawCassandra(target);
  try {
    await cql.execute(`CREATE ROLE ${login.username} WITH PASSWORD = '${login.password}' AND LOGIN = true`);
    await cql.execute(`GRANT ALL PERMISSIONS ON KEYSPACE ${target.keyspace} TO ${login.username}`);
  } finally {
    await cql.shutdown();
  }
}

export async function dropWorkerRole(): Promise<void> {
  if (workerLogin.username === SUPERUSER.username) return;
  const cql = await rawCassandra();
  try {
    await cql.execute(`DROP ROLE IF EXISTS ${workerLogin.username}`);
  } finally {
    await cql.shutdown();
  }
  workerLogin = { ...SUPERUSER };
}

/** The sample worker (`npm run sample:worker`) as a separate process, with its log parsed line by line. */
export class WorkerProcess {
  /** Task id -> times the worker logged it as run (succeeded), any task. */
  readonly executions = new Map<string, number>();
  /** Every complete log line, stdout and stderr, in arrival order. */
  readonly lines: string[] = [];
  output = '';
  exitCode: number | null = null;
  exitSignal: NodeJS.Signals | null = null;
  /** The prefetch the worker logged when it started consuming. */
  prefetch = 0;
  /** Highest resident set size seen in /proc/<pid>/status, in kB (sampled every 100 ms). */
  peakRssKb = 0;
  /** Every RSS sample: [epoch ms, kB]. */
  readonly rssSamples: [number, number][] = [];
  /** Whether the suite signalled the worker; a worker that exits unasked has crashed. */
  signalled = false;
  private readonly exited: Promise<void>;
  private readonly rssTimer: NodeJS.Timeout;

  constructor(
    readonly child: ChildProcess,
    readonly startedAt = Date.now(),
  ) {
    // stdout and stderr each cut into lines on their own, so a line never mixes the two streams
    const reader = () => {
      let partial = '';
      return (chunk: Buffer) => {
        const text = partial + chunk.toString();
        this.output += chunk.toString();
        const parts = text.split('\n');
        partial = parts.pop() as string;
        for (const line of parts) this.onLine(line);
      };
    };
    child.stdout?.on('data', reader());
    child.stderr?.on('data', reader());
    this.rssTimer = setInterval(() => this.sampleRss(), 100);
    this.rssTimer.unref();
    this.exited = new Promise((resolve) =>
      child.on('exit', (code, signal) => {
        this.exitCode = code;
        this.exitSignal = signal;
        clearInterval(this.rssTimer);
        resolve();
      }),
    );
  }

  private onLine(line: string): void {
    this.lines.push(line);
    const run = /Task tasks\.\w+\[([0-9a-f-]{36})\] succeeded/.exec(line);
    if (run) this.executions.set(run[1], (this.executions.get(run[1]) ?? 0) + 1);
    const consuming = /Worker consuming .*\(prefetch (\d+),/.exec(line);
    if (consuming) this.prefetch = Number(consuming[1]);
  }

  private sampleRss(): void {
    try {
      const status = readFileSync(`/proc/${this.child.pid}/status`, 'utf8');
      const kb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
      if (kb > this.peakRssKb) this.peakRssKb = kb;
      if (kb > 0) this.rssSamples.push([Date.now(), kb]);
    } catch {
      // the process is gone
    }
  }

  static async start(queue: string, table: string, cassandra: CassandraTarget = SHARED_CASSANDRA): Promise<WorkerProcess> {
    const child = spawn('node', [SAMPLE, 'worker'], {
      cwd: ROOT,
      detached: true, // its own process group, so a signal can go to the whole group
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        NO_COLOR: '1',
        CELERY_BROKER_URL: AMQP_URL,
        CELERY_QUEUE: queue,
        CASSANDRA_CONTACT_POINTS: CASSANDRA_HOST,
        CASSANDRA_PORT: String(cassandra.port),
        CASSANDRA_LOCAL_DC: 'datacenter1',
        CASSANDRA_KEYSPACE: cassandra.keyspace,
        CASSANDRA_TABLE: table,
        CASSANDRA_USERNAME: workerLogin.username,
        CASSANDRA_PASSWORD: workerLogin.password,
      },
    });
    const worker = new WorkerProcess(child);
    const deadline = Date.now() + 60000;
    while (!worker.prefetch) {
      if (worker.exitCode !== null || worker.exitSignal !== null) throw new Error(`worker exited at startup:\n${worker.output}`);
      if (Date.now() > deadline) throw new Error(`worker not ready in 60 s:\n${worker.output}`);
      await sleep(50);
    }
    return worker;
  }

  /** Highest RSS sampled between `from` and `to` (epoch ms), in MB. */
  peakRssMbBetween(from: number, to: number): number {
    const kb = Math.max(0, ...this.rssSamples.filter(([at]) => at >= from && at <= to).map(([, kb]) => kb));
    return Math.round(kb / 1024);
  }

  get alive(): boolean {
    return this.exitCode === null && this.exitSignal === null;
  }

  /** Whether the worker died without being asked to (a signal from the suite), or exited non-zero. */
  get crashed(): boolean {
    if (this.alive) return false;
    return !this.signalled || (this.exitCode !== null && this.exitCode !== 0);
  }

  signal(signal: NodeJS.Signals, group = false): void {
    this.signalled = true;
    process.kill(group ? -(this.child.pid as number) : (this.child.pid as number), signal);
  }

  async waitExit(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
    try {
      return await Promise.race([this.exited.then(() => true), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  async stop(): Promise<void> {
    if (!this.alive) return;
    this.signal('SIGTERM');
    if (!(await this.waitExit(40000))) this.signal('SIGKILL');
    await this.waitExit(5000);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export interface ScenarioReport {
  scenario: string;
  /** What else the scenario measured, for the README's table (e.g. how soon the worker stored again). */
  detail?: string;
  sent: number;
  /** Tasks whose rows in Cassandra are SUCCESS rows with exactly the task's expected value, read with a raw client. */
  completed: number;
  /** Tasks with no SUCCESS row when the scenario's deadline passed. */
  lost: number;
  /** Tasks with a FAILURE or REVOKED row (any row, not only the newest) or a SUCCESS row with another value. */
  wronglyFailed: number;
  /** Tasks the workers logged as run more than once. */
  executedTwice: number;
  /** The most `executedTwice` may be, and why (what was in flight at the fault). */
  executedTwiceBound: number;
  executedTwiceBoundWhy: string;
  crashes: number;
  /** Tasks run when the fault struck (fewer than sent: the fault hit mid-run). */
  completedAtFault: number | null;
  /** Messages RabbitMQ handed back marked redelivered after the fault, when the scenario counted them. */
  redelivered?: number;
  /** Highest RSS of any worker process of the scenario, in MB. */
  peakRssMb: number;
  /** Highest count of unacknowledged messages sampled during the fault, when the scenario sampled it. */
  peakUnacked?: number;
  seconds: number;
  /** `git rev-parse --short HEAD` when it ran, `+changes` when lib/, sample/ or test/faults had uncommitted changes. */
  commit: string;
  measuredAt: string;
}

export interface SentTask {
  id: string;
  /** The task's name (`tasks.sortWords`, `tasks.sleep`). */
  task: string;
  /** Its own result (every task gets distinct input): what its SUCCESS row must hold. */
  expected: unknown;
  /** Just before the send (the producer computes the ETA after this). */
  sentAt: number;
  /** When the producer's send resolved (the broker confirmed the message). */
  resolvedAt: number;
  /** The earliest its ETA can be (sentAt + countdown), or null. */
  etaAt: number | null;
}

export interface SendOptions {
  /** Seconds from the send before the task may run (the producer's `countdown`). */
  countdown?: number;
  /** Send `tasks.sleep` tasks of about this many seconds (each a distinct fraction more) instead of `tasks.sortWords`. */
  sleepSeconds?: number;
}

/** A three-step chain `add(n, 1) → add(10) → add(100)`: its steps in order, each with its own id and value. */
export interface SentChain {
  steps: SentTask[];
}

/** One row of the result table, as a raw cassandra-driver client reads it. */
export interface StoredRow {
  status: string;
  /** The `result` blob as text (JSON). */
  result: string;
  dateDone: Date | null;
}

type Outcome = 'ok' | 'wrong' | 'lost';

/** One fault scenario: a producer app, workers, N walkthrough tasks, and the tally. */
export class Scenario {
  readonly queue = uniqueName('fault_q');
  readonly table = uniqueName('fault');
  readonly workers: WorkerProcess[] = [];
  private app!: TestingModule;
  producer!: Producer;
  readonly results: SentTask[] = [];
  /** The chains `sendChains` sent; their last steps are in `results` too (a chain completes with its last step). */
  readonly chains: SentChain[] = [];
  /** Every row of the result table after the run: task id -> the statuses and results of its rows. */
  readonly rows = new Map<string, StoredRow[]>();
  private readonly started = Date.now();
  private cql: Client | null = null;
  completedAtFault: number | null = null;
  peakUnacked: number | undefined;
  redelivered: number | undefined;
  detail: string | undefined;
  /** Computes `detail` in `finish()`, once the workers have stopped and the rows are read (for what only the whole run shows). */
  detailAtFinish: (() => string) | undefined;
  /** Default: nothing was in flight at the fault, so no task may run twice. */
  duplicateBound = { max: 0, why: 'nothing in flight' };
  /** Where the producer and the workers store results and the rows are read: the shared node unless `usePrivateNode`. */
  cassandra: CassandraTarget = SHARED_CASSANDRA;
  /** The scenario's own node, stopped by `close()`. */
  node: PrivateCassandra | null = null;

  constructor(readonly name: string) {}

  /**
   * Runs the scenario on a Cassandra node of its own (scripts/services.sh node-up, never the shared
   * node): call before `open()`. The workers log in with the same role as on the shared node.
   */
  async usePrivateNode(options: PrivateNodeOptions): Promise<PrivateCassandra> {
    this.node = await PrivateCassandra.start(options);
    this.cassandra = { port: options.port, keyspace: options.keyspace };
    await createRole(this.cassandra, workerLogin);
    return this.node;
  }

  /**
   * Notes how far the run had got when the fault struck: the tasks the workers have logged as run,
   * counted from their output as it streams in (no query, so nothing stands between the count and
   * the fault).
   */
  markFault(): number {
    this.completedAtFault = this.executedCount();
    return this.completedAtFault;
  }

  /** Distinct tasks the workers have logged as run so far. */
  executedCount(): number {
    const ids = new Set<string>();
    for (const w of this.workers) for (const id of w.executions.keys()) ids.add(id);
    return ids.size;
  }

  /** Task id -> runs logged, over every worker of the scenario. */
  executions(): Map<string, number> {
    const executions = new Map<string, number>();
    for (const w of this.workers) for (const [id, n] of w.executions) executions.set(id, (executions.get(id) ?? 0) + n);
    return executions;
  }

  /** Ids of the tasks logged as run more than once. */
  executedTwiceIds(): string[] {
    return [...this.executions()].filter(([, n]) => n > 1).map(([id]) => id);
  }

  async open(): Promise<void> {
    const options = realOptions(this.queue, this.table, { worker: { enabled: false }, resultPollIntervalMs: 200, publishTimeoutMs: 60000 });
    options.cassandra = { ...options.cassandra, ...this.cassandra };
    this.app = await Test.createTestingModule({ imports: [CeleryModule.forRoot(options)] }).compile();
    await this.app.init();
    this.producer = this.app.get(Producer);
  }

  async startWorker(): Promise<WorkerProcess> {
    const worker = await WorkerProcess.start(this.queue, this.table, this.cassandra);
    this.workers.push(worker);
    return worker;
  }

  /**
   * Sends `count` tasks, each with its own input and so its own expected value: sortWords with its
   * own text, or sleep with its own number of seconds. Resolves once every send has resolved.
   */
  async send(count: number, options: SendOptions = {}): Promise<SentTask[]> {
    const sends: Promise<SentTask>[] = [];
    for (let i = 0; i < count; i++) {
      const n = this.results.length + sends.length;
      let task: string;
      let args: unknown[];
      let expected: unknown;
      if (options.sleepSeconds !== undefined) {
        task = 'tasks.sleep';
        expected = Math.round((options.sleepSeconds + (n + 1) / 100000) * 100000) / 100000;
        args = [expected];
      } else {
        task = 'tasks.sortWords';
        const text = `w${n} storage yay my DB is powerful results Astra`;
        expected = text.split(' ').sort((a, b) => (a.toLowerCase() < b.toLowerCase() ? -1 : a.toLowerCase() > b.toLowerCase() ? 1 : 0)).join(' ');
        args = [text, false];
      }
      const sentAt = Date.now();
      sends.push(
        this.producer.sendTask(task, { args, countdown: options.countdown }).then((result) => {
          const sent: SentTask = { id: result.id, task, expected, sentAt, resolvedAt: Date.now(), etaAt: options.countdown ? sentAt + options.countdown * 1000 : null };
          this.results.push(sent);
          return sent;
        }),
      );
    }
    return Promise.all(sends);
  }

  /**
   * Sends `count` chains (Celery's `chain(add.s(n, 1), add.s(10), add.s(100))`, through the
   * producer's chain API), each with its own n, so its steps' values are n + 1, n + 11 and n + 111.
   * The worker publishes steps 2 and 3 itself as each step before succeeds. Every step's id is
   * recorded (the chain's AsyncResult and its parents), so runs are counted per (chain, step); the
   * last step goes into `results`: a chain is completed when its last step's row is.
   */
  async sendChains(count: number): Promise<SentChain[]> {
    const sends: Promise<SentChain>[] = [];
    for (let i = 0; i < count; i++) {
      const n = this.chains.length + sends.length;
      const add = (args: number[]) => this.producer.signatureByName<number>('tasks.add', args);
      const sentAt = Date.now();
      sends.push(
        this.producer.chain(add([n, 1]), add([10]), add([100])).then((last) => {
          const resolvedAt = Date.now();
          const ids: string[] = [];
          for (let r: { id: string; parent: unknown } | null = last; r; r = r.parent as typeof r) ids.unshift(r.id);
          if (ids.length !== 3) throw new Error(`chain ${n}: ${ids.length} step ids, expected 3`);
          const chain: SentChain = { steps: ids.map((id, step) => ({ id, task: 'tasks.add', expected: n + [1, 11, 111][step], sentAt, resolvedAt, etaAt: null })) };
          this.chains.push(chain);
          this.results.push(chain.steps[2]);
          return chain;
        }),
      );
    }
    return Promise.all(sends);
  }

  /** Where a task id sits among the chains sent: its chain's index and its step (0-based), or null. */
  chainStepOf(id: string): { chain: number; step: number } | null {
    for (const [chain, c] of this.chains.entries()) {
      const step = c.steps.findIndex((s) => s.id === id);
      if (step >= 0) return { chain, step };
    }
    return null;
  }

  /**
   * Waits until the workers have run at least `atLeast` tasks. It watches their logs, which stream
   * in as the tasks run, every 5 ms: a query per look (a new Cassandra session and a COUNT) took
   * seconds on a loaded 2-core machine, long enough for the whole run to finish before the fault.
   */
  async waitUntilRun(atLeast: number, ms = 60000): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.executedCount() < atLeast) {
      if (Date.now() > deadline) throw new Error(`${this.name}: fewer than ${atLeast} tasks run after ${ms} ms`);
      await sleep(5);
    }
  }

  /**
   * Reads every row of the result table (all rows of every task, not only the newest) with a raw
   * cassandra-driver client: the source of truth, not the library's reads or its pushed replies.
   */
  async readAllRows(): Promise<void> {
    const rows = new Map<string, StoredRow[]>();
    try {
      this.cql ??= await rawCassandra(this.cassandra);
      let pageState: string | undefined;
      do {
        const rs = await this.cql.execute(`SELECT task_id, status, result, date_done FROM ${this.cassandra.keyspace}.${this.table}`, [], { prepare: true, fetchSize: 5000, pageState });
        for (const row of rs.rows) {
          const id = row.task_id as string;
          const list = rows.get(id) ?? [];
          list.push({ status: row.status as string, result: row.result ? (row.result as Buffer).toString('utf8') : '', dateDone: (row.date_done as Date | null) ?? null });
          rows.set(id, list);
        }
        pageState = rs.pageState ?? undefined;
      } while (pageState);
    } catch (err) {
      // a client that saw Cassandra go away is replaced on the next read
      await this.cql?.shutdown().catch(() => undefined);
      this.cql = null;
      throw err;
    }
    this.rows.clear();
    for (const [id, list] of rows) this.rows.set(id, list);
  }

  /** A task's outcome from its rows: ok only for SUCCESS rows holding exactly its value and no FAILURE or REVOKED row. */
  outcomeOf(task: SentTask): Outcome {
    const rows = this.rows.get(task.id) ?? [];
    if (rows.some((r) => r.status === 'FAILURE' || r.status === 'REVOKED')) return 'wrong';
    const successes = rows.filter((r) => r.status === 'SUCCESS');
    if (successes.length === 0) return 'lost';
    return successes.every((r) => sameValue(r.result, task.expected)) ? 'ok' : 'wrong';
  }

  /**
   * Polls the table (raw client, every second) until each of `tasks` has its outcome or `timeoutMs`
   * pass; resolves with the epoch ms at which the last of them had its SUCCESS row (from the rows'
   * date_done), or null if some have none.
   */
  async waitForRows(tasks: SentTask[], timeoutMs: number): Promise<number | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        await this.readAllRows();
      } catch (err) {
        process.stderr.write(`[faults] ${this.name}: reading the result table failed (${(err as Error).message}); retrying\n`);
      }
      if (tasks.every((t) => this.outcomeOf(t) !== 'lost')) break;
      if (Date.now() > deadline) return null;
      await sleep(1000);
    }
    return Math.max(0, ...tasks.map((t) => Math.max(0, ...(this.rows.get(t.id) ?? []).filter((r) => r.status === 'SUCCESS').map((r) => r.dateDone?.getTime() ?? 0))));
  }

  /**
   * Waits (up to `timeoutMs`) for every task's row, lets the workers finish what they hold
   * (SIGTERM: in-flight tasks finish and are stored, so a late duplicate or a late FAILURE row
   * is seen), reads every row once more and tallies the report.
   */
  async finish(timeoutMs: number): Promise<ScenarioReport> {
    await this.waitForRows(this.results, timeoutMs);
    const crashes = this.workers.filter((w) => w.crashed || /Unexpected worker error|FATAL|Unhandled/i.test(w.output)).length;
    const aliveAtDeadline = this.workers.map((w) => w.alive);
    await Promise.allSettled(this.workers.map((w) => w.stop()));
    for (let i = 0; ; i++) {
      try {
        await this.readAllRows();
        break;
      } catch (err) {
        if (i >= 30) throw err;
        await sleep(1000);
      }
    }
    const outcome = new Map<string, Outcome>();
    for (const task of this.results) {
      const o = this.outcomeOf(task);
      outcome.set(task.id, o);
      if (o === 'wrong') {
        process.stderr.write(`[faults] wrong rows for ${task.id} (expected SUCCESS ${JSON.stringify(task.expected)}): ${JSON.stringify(this.rows.get(task.id))}\n`);
        for (const w of this.workers) for (const line of w.lines) if (line.includes(task.id)) process.stderr.write(`[faults]   worker log: ${line}\n`);
      }
    }
    const lostIds = [...outcome].filter(([, o]) => o === 'lost').map(([id]) => id);
    if (lostIds.length > 0) {
      // what the lost tasks have in common: a row of another status, or none; run by a worker or not; and what the workers said last
      const withRow = lostIds.filter((id) => (this.rows.get(id) ?? []).length > 0).length;
      const executed = lostIds.filter((id) => this.workers.some((w) => w.executions.has(id))).length;
      process.stderr.write(
        `[faults] ${this.name}: ${lostIds.length} lost after ${timeoutMs} ms: ${withRow} have a row in the table, ${executed} were run by a worker; first lost ${lostIds[0]}\n`,
      );
      for (const [i, w] of this.workers.entries()) {
        process.stderr.write(`[faults]   worker ${i} (alive at the deadline: ${aliveAtDeadline[i]}) last lines:\n${w.lines.slice(-40).map((l) => `[faults]     ${l}`).join('\n')}\n`);
      }
    }
    // replies the store refused as not fitting their request (retried): how often the driver hands one back
    for (const w of this.workers) {
      const misfits = misfitReplies(w);
      if (misfits.length > 0) {
        const kinds = ['without rows', 'with rows', 'with the row of'].map((k) => `${misfits.filter((l) => l.includes(k)).length} ${k}`).join(', ');
        process.stderr.write(`[faults] ${this.name}: ${misfits.length} store replies refused as not fitting (${kinds}), first: ${misfits[0]}\n`);
      }
    }
    if (this.detailAtFinish) this.detail = this.detailAtFinish();
    const count = (kind: Outcome) => [...outcome.values()].filter((o) => o === kind).length;
    const report: ScenarioReport = {
      scenario: this.name,
      ...(this.detail !== undefined ? { detail: this.detail } : {}),
      sent: this.results.length,
      completed: count('ok'),
      lost: count('lost'),
      wronglyFailed: count('wrong'),
      executedTwice: this.executedTwiceIds().length,
      executedTwiceBound: this.duplicateBound.max,
      executedTwiceBoundWhy: this.duplicateBound.why,
      crashes,
      completedAtFault: this.completedAtFault,
      ...(this.redelivered !== undefined ? { redelivered: this.redelivered } : {}),
      peakRssMb: Math.round(Math.max(0, ...this.workers.map((w) => w.peakRssKb)) / 1024),
      ...(this.peakUnacked !== undefined ? { peakUnacked: this.peakUnacked } : {}),
      seconds: Math.round((Date.now() - this.started) / 100) / 10,
      ...measuredAt(),
    };
    recordReport(report);
    return report;
  }

  async close(): Promise<void> {
    try {
      await Promise.allSettled(this.workers.map((w) => w.stop()));
      await this.app?.close();
      await this.cql?.shutdown().catch(() => undefined);
      this.cql = null;
      const amqp = await RawAmqp.open();
      await amqp.deleteQueues(this.queue).catch(() => undefined);
      await amqp.close();
      if (this.node) return; // the scenario's own node goes with its data
      const cql = await rawCassandra();
      await cql.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${this.table}`);
      await cql.shutdown();
    } finally {
      const node = this.node;
      this.node = null;
      await node?.stop();
    }
  }
}

/**
 * The worker's log lines for store replies it refused as not fitting their request (a write
 * answered with rows, a read without rows or with another task's row): each one a reply the
 * driver handed to the wrong request, retried.
 */
export function misfitReplies(worker: WorkerProcess): string[] {
  return worker.lines.filter((l) => /answered (a|the) .* (without rows|with rows|with the row of)/.test(l));
}

/** Whether a row's `result` blob (JSON text) holds exactly `expected`. */
function sameValue(blob: string, expected: unknown): boolean {
  try {
    return isDeepStrictEqual(JSON.parse(blob), expected);
  } catch {
    return false;
  }
}

/**
 * The task ids (header `id`) of the messages RabbitMQ put back on `queue` marked redelivered,
 * in queue order, once the queue has no consumer left (a killed worker's channel is gone, its unacknowledged messages requeued at their
 * old places, at the head): `basic.get` from the head until a message not marked redelivered.
 * Closing the channel returns every message taken to its place (the one not marked redelivered
 * is marked so from then on).
 */
export async function redeliveredIds(queue: string): Promise<string[]> {
  const amqp = await RawAmqp.open();
  try {
    const deadline = Date.now() + 10000;
    while ((await amqp.channel.checkQueue(queue)).consumerCount > 0) {
      if (Date.now() > deadline) throw new Error(`queue ${queue} still has a consumer 10 s after its worker died`);
      await sleep(20);
    }
    const ids: string[] = [];
    for (;;) {
      const msg = await amqp.channel.get(queue, { noAck: false });
      if (msg === false || !msg.fields.redelivered) return ids;
      ids.push(String(msg.properties.headers?.id));
    }
  } finally {
    await amqp.close();
  }
}

/** The results of the last run of each scenario (committed; README's fault table is written from it after each scenario). */
export const RESULTS_FILE = join(__dirname, 'results.json');

export interface ResultsFile {
  about: string;
  scenarios: ScenarioReport[];
}

function measuredAt(): { commit: string; measuredAt: string } {
  let commit = 'unknown';
  try {
    commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim();
    const changes = execFileSync('git', ['status', '--porcelain', '--', 'lib', 'sample', 'test/faults', 'test/support', 'scripts'], { cwd: ROOT, encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.trim() && !l.endsWith('test/faults/results.json'));
    if (changes.length > 0) commit += '+changes';
  } catch {
    // not a git checkout
  }
  return { commit, measuredAt: new Date().toISOString().slice(0, 10) };
}

function recordReport(report: ScenarioReport): void {
  let file: ResultsFile = { about: '', scenarios: [] };
  try {
    file = JSON.parse(readFileSync(RESULTS_FILE, 'utf8')) as ResultsFile;
  } catch {
    // no results yet
  }
  // a scenario keeps its place in the file; a new one goes at the end
  const at = file.scenarios.findIndex((r) => r.scenario === report.scenario);
  if (at >= 0) file.scenarios[at] = report;
  else file.scenarios.push(report);
  file.about = 'The fault suite (test/faults) writes each scenario\'s last run here; README "Reliability" is generated from it by `npm run faults:table`.';
  writeFileSync(RESULTS_FILE, JSON.stringify(file, null, 1) + '\n');
  // README's table follows the results file at once (a unit test compares the two)
  (require('../../scripts/faults-table.js') as { writeReadme(): void }).writeReadme();
  process.stdout.write(
    `[faults] ${report.scenario}: sent ${report.sent}, completed ${report.completed}, lost ${report.lost}, ` +
      `wrongly failed ${report.wronglyFailed}, executed twice ${report.executedTwice} (bound ${report.executedTwiceBound}), crashes ${report.crashes}, ` +
      `completed at the fault ${report.completedAtFault ?? '-'}, ` +
      (report.redelivered !== undefined ? `redelivered ${report.redelivered}, ` : '') +
      `peak RSS ${report.peakRssMb} MB, ` +
      (report.peakUnacked !== undefined ? `peak unacked ${report.peakUnacked}, ` : '') +
      (report.detail ? `${report.detail}, ` : '') +
      `${report.seconds} s\n`,
  );
}

/**
 * Runs a command without blocking the event loop, so sends and timers go on while it runs.
 * `untilExit`: resolve when the command exits, not when its output closes, for a command that
 * leaves a service running in the background (which may hold that output open).
 */
function run(file: string, args: string[], env: NodeJS.ProcessEnv, untilExit = false): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const done = (code: number | null, signal: NodeJS.Signals | null) => {
      if (code === 0) resolve(output);
      else reject(new Error(`${file} ${args.join(' ')} exited with ${code ?? signal}:\n${output}`));
    };
    child.on('error', reject);
    if (!untilExit) {
      child.on('close', done);
      return;
    }
    child.on('exit', (code, signal) =>
      setTimeout(() => {
        child.stdout.destroy();
        child.stderr.destroy();
        done(code, signal);
      }, 200),
    );
  });
}

export function rabbitmqctl(...args: string[]): Promise<string> {
  return run('rabbitmqctl', args, { ...process.env, RABBITMQ_NODENAME: process.env.RABBITMQ_NODENAME ?? 'rabbit@localhost', PATH: `${process.env.PATH}:/usr/sbin:/sbin` });
}

/** `bash scripts/services.sh <args>` with extra environment. */
export function services(env: Record<string, string>, ...args: string[]): Promise<string> {
  return run('bash', [join(ROOT, 'scripts', 'services.sh'), ...args], { ...process.env, ...env }, true);
}

export function cassandraPid(): number {
  return Number(readFileSync(CASSANDRA_PID_FILE, 'utf8').trim());
}

/** Whether the running Cassandra (the shared node, or the node of `pid`) fsyncs (started without `-Dcassandra.skip_sync=true`). */
export function cassandraSyncs(pid = cassandraPid()): boolean {
  return !readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('-Dcassandra.skip_sync=true');
}

/** SIGTERM to Cassandra (it drains and flushes), and waits up to 30 s for the process to be gone. */
export async function stopCassandra(pid = cassandraPid()): Promise<void> {
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 300; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await sleep(100);
  }
  throw new Error(`Cassandra (pid ${pid}) still runs 30 s after SIGTERM`);
}

/** Starts Cassandra again on the data of its last run, with fsync (the fault suite's setting). */
export function startCassandraOnItsData(): Promise<string> {
  return services({ CASSANDRA_KEEP_DATA: '1', CASSANDRA_SKIP_SYNC: '0' }, 'up');
}

/**
 * The fault suite runs Cassandra as production does, with its commit log synced: a node started
 * with `-Dcassandra.skip_sync=true` (CASSANDRA_SKIP_SYNC=1) is restarted on its data without it.
 */
export async function ensureCassandraSyncs(): Promise<void> {
  if (cassandraSyncs()) return;
  process.stderr.write('[faults] Cassandra runs with skip_sync: restarting it on its data with fsync\n');
  try {
    await stopCassandra();
  } finally {
    await startCassandraOnItsData();
  }
}

/** Unacknowledged messages of `queue` as RabbitMQ counts them (`rabbitmqctl list_queues`, no management plugin). */
export async function unacknowledged(queue: string): Promise<number> {
  const out = await rabbitmqctl('list_queues', '--quiet', '--no-table-headers', 'name', 'messages_unacknowledged');
  for (const line of out.split('\n')) {
    const [name, count] = line.trim().split(/\s+/);
    if (name === queue) return Number(count);
  }
  throw new Error(`queue ${queue} not in rabbitmqctl list_queues:\n${out}`);
}

/** Samples `sample()` back to back until stopped; resolves with every value seen. */
export function sampleUntilStopped(sample: () => Promise<number>): { stop: () => Promise<number[]> } {
  const values: number[] = [];
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      values.push(await sample());
      await sleep(100);
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await loop;
      return values;
    },
  };
}

/**
 * Watches whether the broker's AMQP port accepts connections, every 25 ms. `lastRefusedAt` is when
 * the last attempt that was refused began: the broker was down then, so no message can have been
 * confirmed before it.
 */
export function watchBrokerPort(port = 5672): { lastRefusedAt: () => number | null; stop: () => Promise<void> } {
  let lastRefusedAt: number | null = null;
  let stopped = false;
  const attempt = () =>
    new Promise<boolean>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port });
      socket.setTimeout(1000);
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('timeout', () => {
        socket.destroy();
        resolve(true); // not refused: something is there, only slow
      });
      socket.once('error', () => {
        socket.destroy();
        resolve(false);
      });
    });
  const loop = (async () => {
    while (!stopped) {
      const began = Date.now();
      if (!(await attempt())) lastRefusedAt = began;
      await sleep(25);
    }
  })();
  return {
    lastRefusedAt: () => lastRefusedAt,
    stop: async () => {
      stopped = true;
      await loop;
    },
  };
}
