import { Test, TestingModule } from '@nestjs/testing';
import { execFile } from 'node:child_process';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CassandraResultStore, CeleryConnectionError, CeleryModule, CeleryModuleOptions, Producer, ResultStore } from '../../lib';
import { ensurePythonCelery, pythonClient, PythonEnv, PythonWorker } from '../interop/support/python-celery';
import { AstraEmulator } from '../support/astra-emulator';
import { FixtureTasks } from '../support/fixture-tasks';
import { AMQP_URL, KEYSPACE, RawAmqp, rawCassandra, uniqueName } from '../support/real-services';

const run = promisify(execFile);

/**
 * Astra DB through its real connection path (bundle → mTLS metadata → SNI proxy), emulated in
 * front of the real Cassandra node, for NestJS and for Python Celery. Both sides log in as
 * Astra does: user `token`, password `AstraCS:...`.
 */
describe('Astra DB through the secure-connect bundle', () => {
  let astra: AstraEmulator;
  const queue = uniqueName('astra_js');
  const table = uniqueName('astra');

  const astraOptions = (extra: Partial<CeleryModuleOptions['cassandra']> = {}, worker = true): CeleryModuleOptions => ({
    brokerUrl: AMQP_URL,
    resultBackend: 'cassandra',
    defaultQueue: queue,
    worker: { enabled: worker },
    resultPollIntervalMs: 50,
    cassandra: { secureConnectBundle: astra.bundlePath, token: astra.token, keyspace: KEYSPACE, table, ...extra },
  });

  const compile = (options: object) => Test.createTestingModule({ imports: [CeleryModule.forRoot(options)], providers: [FixtureTasks] }).compile();

  beforeAll(async () => {
    astra = await AstraEmulator.start();
  }, 60000);

  afterAll(async () => {
    const amqp = await RawAmqp.open();
    await amqp.deleteQueues(queue);
    await amqp.close();
    const cql = await rawCassandra();
    await cql.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${table}`);
    await cql.shutdown();
    await astra?.stop();
  });

  describe('NestJS', () => {
    let app: TestingModule;

    beforeAll(async () => {
      app = await compile(astraOptions());
      await app.init();
    });

    afterAll(async () => {
      await app?.close();
    });

    it('runs the sortWords walkthrough with every result stored and read through the bundle', async () => {
      expect(app.get(ResultStore)).toBeInstanceOf(CassandraResultStore);
      const sortWords = app.get(Producer).task(FixtureTasks, 'sortWords');
      const first = await sortWords.delay('storage yay my DB is powerful results Astra', false);
      const second = await sortWords.applyAsync(['In the land of another wizards day'], { kwargs: { capitalize: true } });
      await expect(first.get({ timeout: 30000 })).resolves.toBe('Astra DB is my powerful results storage yay');
      await expect(second.get({ timeout: 30000 })).resolves.toBe('ANOTHER DAY IN LAND OF THE WIZARDS');
      const cql = await rawCassandra();
      try {
        const row = (await cql.execute(`SELECT status, result FROM ${KEYSPACE}.${table} WHERE task_id = ?`, [first.id], { prepare: true })).first();
        expect(row.status).toBe('SUCCESS');
        expect(row.result.toString()).toBe('"Astra DB is my powerful results storage yay"');
      } finally {
        await cql.shutdown();
      }
    });

    it('accepts the celeryconfig form: cassandra_secure_bundle_path + PlainTextAuthProvider', async () => {
      const client = await compile({
        broker_url: AMQP_URL,
        result_backend: 'cassandra://',
        cassandra_secure_bundle_path: astra.bundlePath,
        cassandra_auth_provider: 'PlainTextAuthProvider',
        cassandra_auth_kwargs: { username: 'token', password: astra.token },
        cassandra_keyspace: KEYSPACE,
        cassandra_table: table,
        task_default_queue: queue,
        worker: { enabled: false },
      });
      await client.init();
      try {
        const r = await client.get(Producer).sendTask('tasks.sortWords', { args: ['b a'] });
        await expect(r.get({ timeout: 30000 })).resolves.toBe('a b');
      } finally {
        await client.close();
      }
    });
  });

  describe('Python Celery with cassandra_secure_bundle_path', () => {
    let env: PythonEnv;
    let worker: PythonWorker;
    let app: TestingModule;

    beforeAll(async () => {
      ensurePythonCelery();
      env = { pyQueue: uniqueName('astra_py'), table, secureBundle: astra.bundlePath, credentials: { username: 'token', password: astra.token } };
      app = await compile(astraOptions());
      await app.init();
      worker = await PythonWorker.start(env);
    }, 240000);

    afterAll(async () => {
      await worker?.stop();
      await app?.close();
      const amqp = await RawAmqp.open();
      await amqp.deleteQueues(env.pyQueue);
      await amqp.close();
    });

    it('Python reads a result our worker stored through the bundle', async () => {
      const out = await pythonClient(env, { op: 'call', task: 'tasks.sortWords', queue, args: ['In the land of another wizards day'], kwargs: { capitalize: true } });
      expect(out).toMatchObject({ status: 'SUCCESS', result: { json: 'ANOTHER DAY IN LAND OF THE WIZARDS' } });
    });

    it('our ResultStore reads a result the Python worker stored through the bundle', async () => {
      const r = await app.get(Producer).sendTask('tasks.sortWords', { args: ['storage yay my DB is powerful results Astra', false], queue: env.pyQueue });
      await expect(r.get({ timeout: 30000 })).resolves.toBe('Astra DB is my powerful results storage yay');
      expect(await app.get(ResultStore).getTaskMeta(r.id)).toMatchObject({ status: 'SUCCESS', traceback: null, children: [] });
    });
  });

  describe('failures', () => {
    it('a wrong token fails startup with an authentication error and consumes nothing', async () => {
      const amqp = await RawAmqp.open();
      try {
        await amqp.channel.assertQueue(queue, { durable: true });
        amqp.channel.sendToQueue(queue, Buffer.from('[[], {}, {}]'), { contentType: 'application/json', headers: { task: 'tasks.echo', id: 'astra-waiting' } });
        await new Promise((r) => setTimeout(r, 200));
        const before = await amqp.depth(queue);
        const error = await compile({ ...astraOptions({ token: 'AstraCS:wrong:token' }) }).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(CeleryConnectionError);
        expect((error as Error).message).toMatch(/Astra DB bundle .*secure-connect-celery\.zip/);
        expect((error as Error).message).toMatch(/[Aa]uthentication|credentials|password/);
        expect((error as Error).message).not.toContain('AstraCS:wrong:token');
        expect(await amqp.depth(queue)).toBe(before);
        await amqp.channel.purgeQueue(queue);
      } finally {
        await amqp.close();
      }
    });

    it('a missing bundle fails with an error naming the path', async () => {
      const missing = join(astra.dir, 'no-such-bundle.zip');
      const error = await compile(astraOptions({ secureConnectBundle: missing })).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(CeleryConnectionError);
      expect((error as Error).message).toContain(missing);
    });

    it('a corrupt bundle fails with an error naming the path', async () => {
      const corrupt = join(astra.dir, 'corrupt.zip');
      writeFileSync(corrupt, 'this is not a zip file');
      const error = await compile(astraOptions({ secureConnectBundle: corrupt })).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(CeleryConnectionError);
      expect((error as Error).message).toContain(corrupt);
    });

    it('a missing keyspace says to create it in the Astra console', async () => {
      const missing = uniqueName('astra_no_ks');
      const error = await compile(astraOptions({ keyspace: missing })).catch((e: unknown) => e);
      expect((error as Error).message).toContain(`Cassandra keyspace "${missing}" does not exist`);
      expect((error as Error).message).toContain('Astra console');
    });

    it('the metadata service down fails startup clearly and acknowledges nothing', async () => {
      const copy = join(astra.dir, 'copy.zip');
      copyFileSync(astra.bundlePath, copy);
      await astra.stopMetadataService();
      try {
        const error = await compile(astraOptions({ secureConnectBundle: copy })).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(CeleryConnectionError);
        expect((error as Error).message).toContain(copy);
        expect((error as Error).message).toMatch(/metadata|ECONNREFUSED/i);
      } finally {
        await astra.startMetadataService();
      }
    });

    it('a role without CREATE permission gets an error naming the table and the permission', async () => {
      const cql = await rawCassandra();
      const role = uniqueName('astra_reader');
      try {
        await cql.execute(`CREATE ROLE ${role} WITH LOGIN = true AND PASSWORD = 'reader-pass'`);
        await cql.execute(`GRANT SELECT ON KEYSPACE ${KEYSPACE} TO ${role}`);
        await cql.execute(`GRANT MODIFY ON KEYSPACE ${KEYSPACE} TO ${role}`);
        const newTable = uniqueName('astra_nocreate');
        const error = await compile(astraOptions({ token: undefined, credentials: { username: role, password: 'reader-pass' }, table: newTable })).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(CeleryConnectionError);
        expect((error as Error).message).toContain(`${KEYSPACE}.${newTable}`);
        expect((error as Error).message).toContain('CREATE permission');
      } finally {
        await cql.execute(`DROP ROLE IF EXISTS ${role}`);
        await cql.shutdown();
      }
    });
  });

  it('npm run sample with ASTRA_DB_SECURE_BUNDLE_PATH and ASTRA_DB_APPLICATION_TOKEN stores both results in Astra', async () => {
    const root = join(__dirname, '..', '..');
    const { stdout } = await run('node', [join(root, 'dist-sample', 'sample', 'main.js'), 'all'], {
      cwd: root,
      timeout: 60000,
      env: { ...process.env, ASTRA_DB_SECURE_BUNDLE_PATH: astra.bundlePath, ASTRA_DB_APPLICATION_TOKEN: astra.token, CASSANDRA_KEYSPACE: KEYSPACE, CASSANDRA_TABLE: table },
    });
    expect(stdout).toContain('Astra DB is my powerful results storage yay');
    expect(stdout).toContain('ANOTHER DAY IN LAND OF THE WIZARDS');
    expect(stdout).toMatch(/\| SUCCESS \| "ANOTHER DAY IN LAND OF THE WIZARDS" \|/);
  });
});
