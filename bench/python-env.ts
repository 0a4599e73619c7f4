/**
 * Real Python Celery from PyPI in the project's `.interop-venv` (the same virtualenv and the same
 * requirements as test/interop/support/python-celery.ts, which bench/ cannot import), plus
 * matplotlib for the chart.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

/** The repository root: the nearest folder above this file with the project's package.json. */
export const REPO_ROOT = (() => {
  let dir = __dirname;
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'nestjs-celery') return dir;
    const up = dirname(dir);
    if (up === dir) return resolve(__dirname, '..', '..');
    dir = up;
  }
})();

export const VENV = join(REPO_ROOT, '.interop-venv');
export const PYTHON = join(VENV, 'bin', 'python');
export const CELERY = join(VENV, 'bin', 'celery');
export const BENCH_PYTHON_DIR = join(REPO_ROOT, 'bench', 'python');
/** Celery with its Cassandra driver, and the optional compressors kombu registers (as the interop suite installs them). */
const REQUIREMENTS = ['celery[cassandra]>=5.7,<6', 'brotli', 'backports.zstd'];

/** Creates the virtualenv and installs the newest Celery 5.x with its Cassandra driver when missing; returns Celery's version. */
export function ensurePythonCelery(log: (s: string) => void): string {
  const probe = () =>
    execFileSync(PYTHON, ['-c', 'import celery, cassandra, brotli; from backports import zstd; print(celery.__version__)'], { encoding: 'utf8' }).trim();
  if (existsSync(PYTHON)) {
    try {
      const version = probe();
      const minor = /^5\.(\d+)/.exec(version);
      if (minor && Number(minor[1]) >= 7) return version;
    } catch {
      // incomplete venv: install below
    }
  }
  log(`python: creating ${VENV} and installing ${REQUIREMENTS.join(' ')} from PyPI`);
  execFileSync('python3', ['-m', 'venv', VENV], { stdio: 'inherit' });
  execFileSync(PYTHON, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', ...REQUIREMENTS], { stdio: 'inherit' });
  return probe();
}

/** Installs gevent (Celery's `--pool gevent`) into the venv when it is missing. */
export function ensureGevent(log: (s: string) => void): void {
  try {
    execFileSync(PYTHON, ['-c', 'import gevent'], { stdio: 'ignore' });
  } catch {
    log('python: installing gevent into the venv (for Celery\'s gevent pool)');
    execFileSync(PYTHON, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', 'gevent'], { stdio: 'inherit' });
  }
}

/** Installs matplotlib into the venv when it is missing; false when that fails (no chart then). */
export function ensureMatplotlib(log: (s: string) => void): boolean {
  const probe = () => {
    execFileSync(PYTHON, ['-c', 'import matplotlib'], { stdio: 'ignore' });
  };
  try {
    probe();
    return true;
  } catch {
    // install below
  }
  try {
    log('python: installing matplotlib into the venv');
    execFileSync(PYTHON, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', 'matplotlib'], { stdio: 'inherit' });
    probe();
    return true;
  } catch (err) {
    log(`python: matplotlib is not available (${err instanceof Error ? err.message : String(err)}); no chart`);
    return false;
  }
}
