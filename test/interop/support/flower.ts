import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { AMQP_URL } from '../../support/real-services';
import { ensurePythonCelery, PYTHON_DIR, VENV } from './python-celery';

/** Flower from PyPI, in the interop virtualenv next to the newest Celery. */
const FLOWER = 'flower>=2.2,<3';

/** Installs Flower into `.interop-venv` once; returns its version. */
export function ensureFlower(): string {
  ensurePythonCelery();
  const python = join(VENV, 'bin', 'python');
  const probe = () => execFileSync(python, ['-c', 'import flower; print(flower.__version__)'], { encoding: 'utf8' }).trim();
  try {
    return probe();
  } catch {
    execFileSync(python, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', FLOWER], { stdio: 'inherit' });
    return probe();
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/**
 * A real `celery flower` process against the test broker, its HTTP API open without auth
 * (`FLOWER_UNAUTHENTICATED_API`, which Flower 2 requires for an API without login).
 */
export class FlowerProcess {
  private output = '';
  private constructor(
    private readonly child: ChildProcess,
    readonly url: string,
  ) {}

  static async start(options: { env?: NodeJS.ProcessEnv; inspectTimeoutMs?: number } = {}): Promise<FlowerProcess> {
    ensureFlower();
    const port = await freePort();
    const child = spawn(
      join(VENV, 'bin', 'celery'),
      ['-A', 'tasks', '--broker', AMQP_URL, 'flower', '--address=127.0.0.1', `--port=${port}`, `--inspect_timeout=${options.inspectTimeoutMs ?? 2000}`, '--persistent=False'],
      { cwd: PYTHON_DIR, env: { ...process.env, ...options.env, FLOWER_UNAUTHENTICATED_API: 'true', PYTHONDONTWRITEBYTECODE: '1' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const flower = new FlowerProcess(child, `http://127.0.0.1:${port}`);
    child.stdout?.on('data', (c: Buffer) => (flower.output += c.toString()));
    child.stderr?.on('data', (c: Buffer) => (flower.output += c.toString()));
    const deadline = Date.now() + 60000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`Flower exited with ${child.exitCode}:\n${flower.output}`);
      try {
        const res = await fetch(`${flower.url}/healthcheck`);
        if (res.ok) return flower;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`Flower not answering in 60 s:\n${flower.output}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  log(): string {
    return this.output;
  }

  async get<T = unknown>(path: string): Promise<T> {
    const res = await fetch(`${this.url}${path}`);
    if (!res.ok) throw new Error(`Flower GET ${path}: HTTP ${res.status} ${await res.text()}`);
    return (await res.json()) as T;
  }

  async post<T = unknown>(path: string, form: Record<string, string> = {}): Promise<T> {
    const res = await fetch(`${this.url}${path}`, { method: 'POST', body: new URLSearchParams(form) });
    if (!res.ok) throw new Error(`Flower POST ${path}: HTTP ${res.status} ${await res.text()}`);
    return (await res.json()) as T;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10000);
    await exited;
    clearTimeout(timer);
  }
}
