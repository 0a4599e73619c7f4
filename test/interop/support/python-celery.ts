import { ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { TestingModule } from '@nestjs/testing';
import type { PythonCeleryConfig } from '../../../lib';
import { pythonJsonDumps } from '../../../lib/protocol/python-json';
import { AMQP_URL, CASSANDRA_HOST, CASSANDRA_PORT, KEYSPACE, RawAmqp, rawCassandra, SUPERUSER } from '../../support/real-services';

const run = promisify(execFile);

/** Real Python Celery from PyPI, in a virtualenv the tests create (`.interop-venv`, kept between runs). */
export const VENV = join(__dirname, '..', '..', '..', '.interop-venv');
export const PYTHON_DIR = join(__dirname, '..', 'python');
const PYTHON = join(VENV, 'bin', 'python');
/** Celery with its Cassandra driver, and the optional compressors kombu registers when they import. */
const REQUIREMENTS = ['celery[cassandra]>=5.7,<6', 'brotli', 'backports.zstd'];

/** Creates the virtualenv and installs the newest Celery 5.x with its Cassandra driver, once. */
export function ensurePythonCelery(): string {
  const probe = () =>
    execFileSync(PYTHON, ['-c', 'import celery, cassandra, brotli; from backports import zstd; print(celery.__version__)'], { encoding: 'utf8' }).trim();
  if (existsSync(PYTHON)) {
    try {
      const version = probe();
      if (/^5\.(\d+)/.test(version) && Number(/^5\.(\d+)/.exec(version)?.[1]) >= 7) return version;
    } catch {
      // incomplete venv: install below
    }
  }
  execFileSync('python3', ['-m', 'venv', VENV], { stdio: 'inherit' });
  execFileSync(PYTHON, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', ...REQUIREMENTS], { stdio: 'inherit' });
  return probe();
}

export interface PythonEnv {
  /** Queue the Python worker consumes. */
  pyQueue: string;
  table: string;
  /** Astra DB: the secure-connect bundle (instead of cassandra_servers) and the login. */
  secureBundle?: string;
  credentials?: { username: string; password: string };
  /** Queues the worker consumes (`-Q`); default `[pyQueue]`. */
  workerQueues?: string[];
  /** More celeryconfig settings (task_queues, task_routes, ...), passed as CELERY_EXTRA_CONFIG JSON. */
  extraConfig?: Record<string, unknown>;
}

function envFor(env: PythonEnv): NodeJS.ProcessEnv {
  return {
    ...process.env,
    CELERY_BROKER_URL: AMQP_URL,
    CASSANDRA_HOST,
    CASSANDRA_PORT: String(CASSANDRA_PORT),
    CASSANDRA_KEYSPACE: KEYSPACE,
    CASSANDRA_TABLE: env.table,
    PY_QUEUE: env.pyQueue,
    PYTHONDONTWRITEBYTECODE: '1',
    ...(env.secureBundle ? { CASSANDRA_SECURE_BUNDLE: env.secureBundle } : {}),
    ...(env.credentials ? { CASSANDRA_USERNAME: env.credentials.username, CASSANDRA_PASSWORD: env.credentials.password } : {}),
    ...(env.extraConfig ? { CELERY_EXTRA_CONFIG: JSON.stringify(env.extraConfig) } : {}),
  };
}

/** Runs one command of test/interop/python/client.py and returns its JSON answer. */
export async function pythonClient<T = Record<string, unknown>>(env: PythonEnv, command: Record<string, unknown>): Promise<T> {
  // Python-style JSON, so numbers keep the int / float reading our encoder gives them.
  const { stdout } = await run(PYTHON, ['client.py', pythonJsonDumps(command)], { cwd: PYTHON_DIR, env: envFor(env), timeout: 90000 });
  const last = stdout.trim().split('\n').pop() as string;
  return JSON.parse(last) as T;
}

/** A real `celery worker` process (threads pool) on the Python queue. */
export class PythonWorker {
  private output = '';
  private constructor(private readonly child: ChildProcess) {}

  static async start(env: PythonEnv): Promise<PythonWorker> {
    const child = spawn(
      join(VENV, 'bin', 'celery'),
      ['-A', 'tasks', 'worker', '-Q', (env.workerQueues ?? [env.pyQueue]).join(','), '--pool', 'threads', '-c', '4', '-n', `py-interop-${env.pyQueue}@localhost`,
        '--without-gossip', '--without-mingle', '--without-heartbeat', '-l', 'INFO'],
      { cwd: PYTHON_DIR, env: envFor(env), stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const worker = new PythonWorker(child);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`Python worker not ready in 60 s:\n${worker.output}`)), 60000);
      const onData = (chunk: Buffer) => {
        worker.output += chunk.toString();
        if (/celery@|ready\./.test(worker.output) && worker.output.includes('ready.')) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout?.on('data', onData);
      child.stderr?.on('data', onData);
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`Python worker exited with ${code}:\n${worker.output}`));
      });
    });
    return worker;
  }

  /** Everything the worker logged so far. */
  log(): string {
    return this.output;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 15000);
    await exited;
    clearTimeout(timer);
  }
}

/**
 * The walkthrough's celeryconfig as the Python side has it (test/interop/python/celeryconfig.py),
 * for the NestJS app: the same broker and result table, `defaultQueue` for NestJS tasks.
 */
export function walkthroughCeleryconfig(env: PythonEnv, defaultQueue: string): PythonCeleryConfig {
  return {
    broker_url: AMQP_URL,
    result_backend: 'cassandra://',
    cassandra_servers: [CASSANDRA_HOST],
    cassandra_port: CASSANDRA_PORT,
    cassandra_keyspace: KEYSPACE,
    cassandra_table: env.table,
    cassandra_entry_ttl: 86400,
    cassandra_auth_provider: 'PlainTextAuthProvider',
    cassandra_auth_kwargs: { ...SUPERUSER },
    task_serializer: 'json',
    result_serializer: 'json',
    accept_content: ['json'],
    enable_utc: true,
    broker_connection_retry_on_startup: true,
    task_default_queue: defaultQueue,
  };
}

/** Ends an interop suite: the Python worker, the NestJS app, the queues, and the shared table. */
export async function stopInterop(worker: PythonWorker | undefined, app: TestingModule | undefined, env: PythonEnv, queues: string[]): Promise<void> {
  await worker?.stop();
  await app?.close();
  const amqp = await RawAmqp.open();
  await amqp.deleteQueues(...queues);
  await amqp.close();
  const cql = await rawCassandra();
  await cql.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${env.table}`);
  await cql.shutdown();
}
