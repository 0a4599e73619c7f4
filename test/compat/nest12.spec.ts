import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RawAmqp, realOptions, rawCassandra, uniqueName, KEYSPACE, removeQueueAndTable } from '../support/real-services';

const ROOT = join(__dirname, '..', '..');

/**
 * NestJS 12 is ESM-only; the library is CommonJS and loads it through Node's require(esm)
 * (Node ≥ 20.19). This installs the packed library beside NestJS 12 in a scratch project and runs
 * the walkthrough there, on the embedded default and on the real RabbitMQ and Cassandra.
 */
describe('NestJS 12 (ESM) application using the packed library', () => {
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'nestjs-celery-nest12-'));
    const tarball = execFileSync('npm', ['pack', '--silent', '--pack-destination', dir], { cwd: ROOT, encoding: 'utf8' }).trim().split('\n').pop() as string;
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'nest12-app', private: true, type: 'module' }));
    copyFileSync(join(__dirname, 'nest12-app', 'app.mjs'), join(dir, 'app.mjs'));
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', '@nestjs/core@12', '@nestjs/common@12', 'reflect-metadata', 'rxjs', `./${tarball}`], { cwd: dir, stdio: 'inherit' });
  }, 300000);

  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const run = (options: object) =>
    JSON.parse(execFileSync('node', ['app.mjs', JSON.stringify(options)], { cwd: dir, encoding: 'utf8', timeout: 60000 }).trim().split('\n').pop() as string);

  it('runs the walkthrough on the embedded default', () => {
    const out = run({});
    expect(out.nest).toMatch(/^12\./);
    expect(out).toMatchObject({ broker: 'memory', tasks: ['celery.chord_unlock', 'tasks.sortWords'], results: ['Astra DB is my powerful results storage yay', 'ANOTHER DAY IN LAND OF THE WIZARDS'] });
  });

  it('runs the walkthrough on RabbitMQ and Cassandra', async () => {
    const queue = uniqueName('it_nest12');
    const table = uniqueName('it_tasks');
    try {
      const out = run(realOptions(queue, table));
      expect(out).toMatchObject({ broker: 'amqp', results: ['Astra DB is my powerful results storage yay', 'ANOTHER DAY IN LAND OF THE WIZARDS'] });
    } finally {
      await removeQueueAndTable(queue, table);
    }
  });
});
