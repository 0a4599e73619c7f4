import { spawn } from 'node:child_process';
import { join } from 'node:path';

/** The built sample (`npm run build:sample`). */
export const SAMPLE_MAIN = join(__dirname, '..', '..', 'dist-sample', 'sample', 'main.js');

/** Runs `node dist-sample/sample/main.js <mode>` (built by `npm test` before Jest) and collects its output. */
export function runSample(mode: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SAMPLE_MAIN, mode], { env: { PATH: process.env.PATH, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60000);
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
