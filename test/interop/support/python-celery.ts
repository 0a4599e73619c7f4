import { ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { TestingModule } from '@nestjs/testing';
import type { PythonCeleryConfig } from '../../../lib';
import { pythonJsonDumps } from '../../../lib/protocol/python-json';
import { AMQP_URL, CASSANDRA_HOST, CASSANDRA_PORT, KEYSPACE, pythonServiceKeys, removeQueueAndTable } from '../../support/real-services';

const run = promisify(execFile);

/** Real Python Celery from PyPI, in a virtualenv the tests create (`.interop-venv`, kept between runs). */
export const VENV = join(__dirname, '..', '..', '..', '.interop-venv');
export const PYTHON_DIR = join(__dirname, '..', 'python');
const PYTHON = join(VENV, 'bin', 'python');
/** Celery with its Cassandra driver, and the optional compressors kombu registers when they import. */
const REQUIREMENTS = ['celery[cassandra]>=5.7,<6', 'brotli', 'backports.zstd'];

/** OpenTelemetry's Python SDK and Celery instrumentation (the cross-language trace test, test/interop/python/traced.py). */
const REQUIREMENTS_OTEL = ['opentelemetry-sdk', 'opentelemetry-instrumentation-celery'];

/** Installs the OpenTelemetry SDK and Celery instrumentation into `venv` (default `.interop-venv`) once; returns their versions. */
export function ensurePythonOtel(venv: string = VENV): string {
  const python = join(venv, 'bin', 'python');
  const probe = () =>
    execFileSync(
      python,
      ['-c', 'import opentelemetry.sdk.version as s; from opentelemetry.instrumentation.celery.version import __version__ as c; print(s.__version__, c)'],
      { encoding: 'utf8' },
    ).trim();
  try {
    return probe();
  } catch {
    execFileSync(python, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', ...REQUIREMENTS_OTEL], { stdio: 'inherit' });
    return probe();
  }
}

/** Celery 5.2.6 as Debian bookworm ships it (kombu 5.2.4, py-amqp 5.1.1), in its own virtualenv (`.interop-venv-52`, kept between runs). */
export const VENV_52 = join(__dirname, '..', '..', '..', '.interop-venv-52');
/**
 * `celery[cassandra]==5.2.6` pins cassandra-driver < 3.21, an sdist whose setup.py (ez_setup) downloads
 * setuptools 0.9.6 from pypi.python.org when it builds in pip's isolated environment — which fails
 * without that host. Built without isolation it uses the venv's own setuptools and wheel instead.
 */
const REQUIREMENTS_52 = ['celery[cassandra]==5.2.6', 'kombu==5.2.4', 'amqp==5.1.1'];

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

/** Creates `.interop-venv-52` with Celery 5.2.6 (bookworm's version) once; returns its version. */
export function ensurePythonCelery52(): string {
  const python = join(VENV_52, 'bin', 'python');
  const probe = () => execFileSync(python, ['-c', 'import celery, cassandra, kombu; print(celery.__version__, kombu.__version__)'], { encoding: 'utf8' }).trim();
  if (existsSync(python)) {
    try {
      const version = probe();
      if (version === '5.2.6 5.2.4') return version;
    } catch {
      // incomplete venv: install below
    }
  }
  const pip = ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check'];
  execFileSync('python3', ['-m', 'venv', VENV_52], { stdio: 'inherit' });
  execFileSync(python, [...pip, 'setuptools<70', 'wheel'], { stdio: 'inherit' });
  execFileSync(python, [...pip, '--no-build-isolation', ...REQUIREMENTS_52], { stdio: 'inherit', env: { ...process.env, CASS_DRIVER_NO_CYTHON: '1' } });
  return probe();
}

/** The walkthrough's celeryconfig (test/interop/python/celeryconfig.py), as the NestJS side passes it to CeleryModule.forRoot(). */
export function interopCeleryconfig(table: string, defaultQueue: string): PythonCeleryConfig {
  return {
    ...pythonServiceKeys(table),
    cassandra_entry_ttl: 86400,
    task_serializer: 'json',
    result_serializer: 'json',
    accept_content: ['json'],
    enable_utc: true,
    broker_connection_retry_on_startup: true,
    task_default_queue: defaultQueue,
  };
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
  /** The virtualenv to run (default `.interop-venv`, the newest Celery). */
  venv?: string;
  /** More environment variables for the Python processes. */
  extraEnv?: Record<string, string>;
}

/** How to run a `celery worker`: the threads pool by default (time limits need prefork). */
export interface WorkerOptions {
  pool?: 'threads' | 'prefork' | 'solo';
  concurrency?: number;
  /** The Celery app module (`-A`); default `tasks`. */
  app?: string;
  /** Run Celery's mingle at start (`hello` to every node: revoked ids and clocks synced); default off. */
  mingle?: boolean;
}

export function envFor(env: PythonEnv): NodeJS.ProcessEnv {
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
    ...env.extraEnv,
  };
}

/** Runs one command of test/interop/python/client.py and returns its JSON answer. */
export async function pythonClient<T = Record<string, unknown>>(env: PythonEnv, command: Record<string, unknown>): Promise<T> {
  // Python-style JSON, so numbers keep the int / float reading our encoder gives them.
  const { stdout } = await run(join(env.venv ?? VENV, 'bin', 'python'), ['client.py', pythonJsonDumps(command)], { cwd: PYTHON_DIR, env: envFor(env), timeout: 90000 });
  const last = stdout.trim().split('\n').pop() as string;
  return JSON.parse(last) as T;
}

/**
 * Runs Python's `celery -A tasks <args>` (`inspect`, `control`, ...) of the env's virtualenv;
 * resolves its stdout and exit code (a command no node answered exits non-zero).
 */
export async function celeryCli(env: PythonEnv, args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(join(env.venv ?? VENV, 'bin', 'celery'), ['-A', 'tasks', ...args], { cwd: PYTHON_DIR, env: envFor(env), timeout: 90000 });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; code?: number };
    return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: typeof e.code === 'number' ? e.code : 1 };
  }
}

/** A real `celery worker` process (threads pool unless told otherwise) on the Python queue. */
export class PythonWorker {
  private output = '';
  private constructor(private readonly child: ChildProcess) {}

  static async start(env: PythonEnv, options: WorkerOptions = {}): Promise<PythonWorker> {
    const child = spawn(
      join(env.venv ?? VENV, 'bin', 'celery'),
      ['-A', options.app ?? 'tasks', 'worker', '-Q', (env.workerQueues ?? [env.pyQueue]).join(','), '--pool', options.pool ?? 'threads', '-c', String(options.concurrency ?? 4), '-n', `py-interop-${env.pyQueue}@localhost`,
        '--without-gossip', ...(options.mingle ? [] : ['--without-mingle']), '--without-heartbeat', '-l', 'INFO'],
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

  /** The worker's main process id (its `origin` is `gen<pid>@<host>`). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Everything the worker logged so far. */
  log(): string {
    return this.output;
  }

  /**
   * Warm shutdown (SIGTERM) by default. SIGKILL ends it at once (a Celery 5.7 worker here takes ~9 s
   * to end a warm shutdown even when idle); RabbitMQ then requeues what it held unacknowledged.
   */
  async stop(signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill(signal);
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
  return interopCeleryconfig(env.table, defaultQueue);
}

/** Ends an interop suite: the Python worker, the NestJS app, the queues, and the shared table. */
export async function stopInterop(worker: PythonWorker | undefined, app: TestingModule | undefined, env: PythonEnv, queues: string[]): Promise<void> {
  await worker?.stop();
  await app?.close();
  await removeQueueAndTable(queues, env.table);
}
