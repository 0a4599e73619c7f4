import { Test, TestingModule } from '@nestjs/testing';
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AsyncResult, CeleryModule, Producer } from '../../lib';
import { AMQP_URL, CASSANDRA_HOST, CASSANDRA_PORT, KEYSPACE, RawAmqp, SUPERUSER, rawCassandra, realOptions, uniqueName } from '../support/real-services';

const ROOT = join(__dirname, '..', '..');
const SAMPLE = join(ROOT, 'dist-sample', 'sample', 'main.js');
export const CASSANDRA_PID_FILE = join(ROOT, 'tools', 'cassandra', '.run', 'cassandra.pid');

/** The sample worker (`npm run sample:worker`) as a separate process, with its log parsed. */
export class WorkerProcess {
  readonly executions = new Map<string, number>();
  output = '';
  exitCode: number | null = null;
  exitSignal: NodeJS.Signals | null = null;
  private readonly exited: Promise<void>;

  constructor(
    readonly child: ChildProcess,
    readonly startedAt = Date.now(),
  ) {
    const onData = (chunk: Buffer) => {
      const text = chunk.toString();
      this.output += text;
      for (const m of text.matchAll(/tasks\.sortWords\[([0-9a-f-]{36})\] succeeded/g)) {
        this.executions.set(m[1], (this.executions.get(m[1]) ?? 0) + 1);
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    this.exited = new Promise((resolve) =>
      child.on('exit', (code, signal) => {
        this.exitCode = code;
        this.exitSignal = signal;
        resolve();
      }),
    );
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
        CASSANDRA_USERNAME: SUPERUSER.username,
        CASSANDRA_PASSWORD: SUPERUSER.password,
      },
    });
    const worker = new WorkerProcess(child);
    const deadline = Date.now() + 60000;
    while (!worker.output.includes('Worker consuming')) {
      if (worker.exitCode !== null || worker.exitSignal !== null) throw new Error(`worker exited at startup:\n${worker.output}`);
      if (Date.now() > deadline) throw new Error(`worker not ready in 60 s:\n${worker.output}`);
      await sleep(50);
    }
    return worker;
  }

  signal(signal: NodeJS.Signals, group = false): void {
    process.kill(group ? -(this.child.pid as number) : (this.child.pid as number), signal);
  }

  async waitExit(ms: number): Promise<boolean> {
    return Promise.race([this.exited.then(() => true), sleep(ms).then(() => false)]);
  }

  async stop(): Promise<void> {
    if (this.exitCode !== null || this.exitSignal !== null) return;
    this.signal('SIGTERM');
    if (!(await this.waitExit(40000))) this.signal('SIGKILL');
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
  wronglyFailed: number;
  executedTwice: number;
  crashes: number;
  /** Results stored when the fault struck (fewer than sent: the fault hit mid-run). */
  completedAtFault: number | null;
  seconds: number;
}

/** One fault scenario: a producer app, workers, N walkthrough tasks, and the tally. */
export class Scenario {
  readonly queue = uniqueName('fault_q');
  readonly table = uniqueName('fault');
  readonly workers: WorkerProcess[] = [];
  private app!: TestingModule;
  producer!: Producer;
  readonly results: { result: AsyncResult<string>; expected: string }[] = [];
  private readonly started = Date.now();
  completedAtFault: number | null = null;

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

  constructor(readonly name: string) {}

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

  /** Sends `count` sortWords tasks, each with its own text, and remembers the expected results. */
  async send(count: number): Promise<void> {
    const sends: Promise<void>[] = [];
    for (let i = 0; i < count; i++) {
      const n = this.results.length + sends.length;
      const text = `w${n} storage yay my DB is powerful results Astra`;
      const expected = text.split(' ').sort((a, b) => (a.toLowerCase() < b.toLowerCase() ? -1 : a.toLowerCase() > b.toLowerCase() ? 1 : 0)).join(' ');
      sends.push(
        this.producer.sendTask<string>('tasks.sortWords', { args: [text, false] }).then((result) => {
          this.results.push({ result, expected });
        }),
      );
    }
    await Promise.all(sends);
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

  /** Waits for every result and tallies the report. */
  async finish(timeoutMs: number): Promise<ScenarioReport> {
    let completed = 0;
    let wronglyFailed = 0;
    let lost = 0;
    const deadline = Date.now() + timeoutMs;
    for (const { result, expected } of this.results) {
      try {
        const value = await result.get({ timeout: Math.max(1000, deadline - Date.now()) });
        if (value === expected) completed++;
        else wronglyFailed++;
      } catch (err) {
        if ((err as Error).name === 'TaskTimeoutError') lost++;
        else wronglyFailed++;
      }
    }
    const executions = new Map<string, number>();
    for (const w of this.workers) for (const [id, n] of w.executions) executions.set(id, (executions.get(id) ?? 0) + n);
    const report: ScenarioReport = {
      scenario: this.name,
      sent: this.results.length,
      completed,
      lost,
      wronglyFailed,
      executedTwice: [...executions.values()].filter((n) => n > 1).length,
      crashes: this.workers.filter((w) => /Unexpected worker error|FATAL|Unhandled/i.test(w.output)).length,
      completedAtFault: this.completedAtFault,
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
      `completed at the fault ${report.completedAtFault ?? '-'}, ${report.seconds} s\n`,
  );
}

export function rabbitmqctl(...args: string[]): void {
  execFileSync('rabbitmqctl', args, { stdio: 'pipe', env: { ...process.env, RABBITMQ_NODENAME: process.env.RABBITMQ_NODENAME ?? 'rabbit@localhost', PATH: `${process.env.PATH}:/usr/sbin:/sbin` } });
}

/** `bash scripts/services.sh <args>` with extra environment. */
export function services(env: Record<string, string>, ...args: string[]): void {
  execFileSync('bash', [join(ROOT, 'scripts', 'services.sh'), ...args], { stdio: 'pipe', env: { ...process.env, ...env } });
}

export function cassandraPid(): number {
  return Number(readFileSync(CASSANDRA_PID_FILE, 'utf8').trim());
}
