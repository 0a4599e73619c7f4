import { Test, TestingModule } from '@nestjs/testing';
import { ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { AsyncResult, CeleryModule, Producer } from '../../lib';
import { AMQP_URL, CASSANDRA_HOST, CASSANDRA_PORT, KEYSPACE, RawAmqp, SUPERUSER, rawCassandra, realOptions, uniqueName } from '../support/real-services';

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
  const cql = await rawCassandra();
  try {
    await cql.execute(`CREATE ROLE ${login.username} WITH PASSWORD = '${login.password}' AND LOGIN = true`);
    await cql.execute(`GRANT ALL PERMISSIONS ON KEYSPACE ${KEYSPACE} TO ${login.username}`);
  } finally {
    await cql.shutdown();
  }
  workerLogin = login;
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
  /** Task id -> times the worker logged it as run (succeeded). */
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
    const run = /tasks\.sortWords\[([0-9a-f-]{36})\] succeeded/.exec(line);
    if (run) this.executions.set(run[1], (this.executions.get(run[1]) ?? 0) + 1);
    const consuming = /Worker consuming .*\(prefetch (\d+),/.exec(line);
    if (consuming) this.prefetch = Number(consuming[1]);
  }

  private sampleRss(): void {
    try {
      const status = readFileSync(`/proc/${this.child.pid}/status`, 'utf8');
      const kb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0);
      if (kb > this.peakRssKb) this.peakRssKb = kb;
    } catch {
      // the process is gone
    }
  }

  static async start(queue: string, table: string): Promise<WorkerProcess> {
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
        CASSANDRA_PORT: String(CASSANDRA_PORT),
        CASSANDRA_LOCAL_DC: 'datacenter1',
        CASSANDRA_KEYSPACE: KEYSPACE,
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
  sent: number;
  completed: number;
  lost: number;
  /** Valid tasks with a FAILURE or REVOKED row (any row, not only the newest) or a wrong result. */
  wronglyFailed: number;
  executedTwice: number;
  crashes: number;
  /** Tasks run when the fault struck (fewer than sent: the fault hit mid-run). */
  completedAtFault: number | null;
  /** Highest RSS of any worker process of the scenario, in MB. */
  peakRssMb: number;
  /** Highest count of unacknowledged messages sampled during the fault, when the scenario sampled it. */
  peakUnacked?: number;
  seconds: number;
}

export interface SentTask {
  id: string;
  result: AsyncResult<string>;
  expected: string;
  /** When the producer's send resolved (the broker confirmed the message). */
  resolvedAt: number;
}

/** One fault scenario: a producer app, workers, N walkthrough tasks, and the tally. */
export class Scenario {
  readonly queue = uniqueName('fault_q');
  readonly table = uniqueName('fault');
  readonly workers: WorkerProcess[] = [];
  private app!: TestingModule;
  producer!: Producer;
  readonly results: SentTask[] = [];
  /** Every row of the result table after the run: task id -> the statuses and results of its rows. */
  readonly rows = new Map<string, { status: string; result: string }[]>();
  private readonly started = Date.now();
  completedAtFault: number | null = null;
  peakUnacked: number | undefined;

  constructor(readonly name: string) {}

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

  async open(): Promise<void> {
    this.app = await Test.createTestingModule({
      imports: [CeleryModule.forRoot(realOptions(this.queue, this.table, { worker: { enabled: false }, resultPollIntervalMs: 200, publishTimeoutMs: 60000 }))],
    }).compile();
    await this.app.init();
    this.producer = this.app.get(Producer);
  }

  async startWorker(): Promise<WorkerProcess> {
    const worker = await WorkerProcess.start(this.queue, this.table);
    this.workers.push(worker);
    return worker;
  }

  /** Sends `count` sortWords tasks, each with its own text; resolves with them once every send has resolved. */
  async send(count: number): Promise<SentTask[]> {
    const sends: Promise<SentTask>[] = [];
    for (let i = 0; i < count; i++) {
      const n = this.results.length + sends.length;
      const text = `w${n} storage yay my DB is powerful results Astra`;
      const expected = text.split(' ').sort((a, b) => (a.toLowerCase() < b.toLowerCase() ? -1 : a.toLowerCase() > b.toLowerCase() ? 1 : 0)).join(' ');
      sends.push(
        this.producer.sendTask<string>('tasks.sortWords', { args: [text, false] }).then((result) => {
          const sent = { id: result.id, result, expected, resolvedAt: Date.now() };
          this.results.push(sent);
          return sent;
        }),
      );
    }
    return Promise.all(sends);
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

  /** Reads every row of the result table (all rows of every task, not only the newest). */
  async readAllRows(): Promise<void> {
    this.rows.clear();
    const cql = await rawCassandra();
    try {
      let pageState: string | undefined;
      do {
        const rs = await cql.execute(`SELECT task_id, status, result FROM ${KEYSPACE}.${this.table}`, [], { prepare: true, fetchSize: 5000, pageState });
        for (const row of rs.rows) {
          const id = row.task_id as string;
          const list = this.rows.get(id) ?? [];
          list.push({ status: row.status as string, result: row.result ? (row.result as Buffer).toString('utf8') : '' });
          this.rows.set(id, list);
        }
        pageState = rs.pageState ?? undefined;
      } while (pageState);
    } finally {
      await cql.shutdown();
    }
  }

  /** Waits for every result, reads every row, and tallies the report. */
  async finish(timeoutMs: number): Promise<ScenarioReport> {
    const outcome = new Map<string, 'ok' | 'wrong' | 'lost'>();
    const deadline = Date.now() + timeoutMs;
    for (const { id, result, expected } of this.results) {
      if (Date.now() >= deadline) {
        // past the deadline every remaining task counts as lost at once (not one second each),
        // so the scenario ends with its report instead of at Jest's timeout
        outcome.set(id, 'lost');
        continue;
      }
      try {
        const value = await result.get({ timeout: Math.max(1000, deadline - Date.now()) });
        outcome.set(id, value === expected ? 'ok' : 'wrong');
        if (value !== expected) process.stderr.write(`[faults] wrong value of ${id}: ${JSON.stringify(value)} expected ${expected}\n`);
      } catch (err) {
        outcome.set(id, (err as Error).name === 'TaskTimeoutError' ? 'lost' : 'wrong');
        process.stderr.write(`[faults] get() rejected for ${id}: ${(err as Error).name} ${(err as Error).message} ${JSON.stringify(err)}\n`);
      }
    }
    // A valid task is wrongly failed if ANY of its rows is FAILURE or REVOKED, even under a later SUCCESS.
    await this.readAllRows();
    for (const { id } of this.results) {
      if ((this.rows.get(id) ?? []).some((r) => r.status === 'FAILURE' || r.status === 'REVOKED')) {
        outcome.set(id, 'wrong');
        process.stderr.write(`[faults] FAILURE or REVOKED row for ${id}: ${JSON.stringify(this.rows.get(id))}\n`);
        for (const w of this.workers) for (const line of w.output.split('\n')) if (line.includes(id)) process.stderr.write(`[faults]   worker log: ${line}\n`);
      }
    }
    const lostIds = [...outcome].filter(([, o]) => o === 'lost').map(([id]) => id);
    if (lostIds.length > 0) {
      // what the lost tasks have in common: stored but not seen by get(), or never stored; and what the workers said last
      const stored = lostIds.filter((id) => (this.rows.get(id) ?? []).length > 0).length;
      const executed = lostIds.filter((id) => this.workers.some((w) => w.executions.has(id))).length;
      process.stderr.write(
        `[faults] ${this.name}: ${lostIds.length} lost after ${timeoutMs} ms: ${stored} have a row in the table, ${executed} were run by a worker; first lost ${lostIds[0]}\n`,
      );
      for (const [i, w] of this.workers.entries()) {
        process.stderr.write(`[faults]   worker ${i} (alive ${w.alive}) last lines:\n${w.lines.slice(-40).map((l) => `[faults]     ${l}`).join('\n')}\n`);
      }
    }
    // replies the store refused as not fitting their request (retried): how often the driver hands one back
    for (const w of this.workers) {
      const misfits = w.lines.filter((l) => /answered (a|the) .* (without rows|with rows|with the row of)/.test(l));
      if (misfits.length > 0) {
        const kinds = ['without rows', 'with rows', 'with the row of'].map((k) => `${misfits.filter((l) => l.includes(k)).length} ${k}`).join(', ');
        process.stderr.write(`[faults] ${this.name}: ${misfits.length} store replies refused as not fitting (${kinds}), first: ${misfits[0]}\n`);
      }
    }
    const count = (kind: string) => [...outcome.values()].filter((o) => o === kind).length;
    const executions = new Map<string, number>();
    for (const w of this.workers) for (const [id, n] of w.executions) executions.set(id, (executions.get(id) ?? 0) + n);
    const report: ScenarioReport = {
      scenario: this.name,
      sent: this.results.length,
      completed: count('ok'),
      lost: count('lost'),
      wronglyFailed: count('wrong'),
      executedTwice: [...executions.values()].filter((n) => n > 1).length,
      crashes: this.workers.filter((w) => w.crashed || /Unexpected worker error|FATAL|Unhandled/i.test(w.output)).length,
      completedAtFault: this.completedAtFault,
      peakRssMb: Math.round(Math.max(0, ...this.workers.map((w) => w.peakRssKb)) / 1024),
      ...(this.peakUnacked !== undefined ? { peakUnacked: this.peakUnacked } : {}),
      seconds: Math.round((Date.now() - this.started) / 100) / 10,
    };
    recordReport(report);
    return report;
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.workers.map((w) => w.stop()));
    await this.app?.close();
    const amqp = await RawAmqp.open();
    await amqp.deleteQueues(this.queue).catch(() => undefined);
    await amqp.close();
    const cql = await rawCassandra();
    await cql.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${this.table}`);
    await cql.shutdown();
  }
}

const REPORT_FILE = join(__dirname, 'results', 'latest.json');

function recordReport(report: ScenarioReport): void {
  mkdirSync(join(__dirname, 'results'), { recursive: true });
  let all: ScenarioReport[] = [];
  try {
    all = JSON.parse(readFileSync(REPORT_FILE, 'utf8')) as ScenarioReport[];
  } catch {
    // first scenario of the run
  }
  all = all.filter((r) => r.scenario !== report.scenario).concat(report);
  writeFileSync(REPORT_FILE, JSON.stringify(all, null, 1) + '\n');
  process.stdout.write(
    `[faults] ${report.scenario}: sent ${report.sent}, completed ${report.completed}, lost ${report.lost}, ` +
      `wrongly failed ${report.wronglyFailed}, executed twice ${report.executedTwice}, crashes ${report.crashes}, ` +
      `completed at the fault ${report.completedAtFault ?? '-'}, peak RSS ${report.peakRssMb} MB, ` +
      (report.peakUnacked !== undefined ? `peak unacked ${report.peakUnacked}, ` : '') +
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
