import { Test, TestingModule } from '@nestjs/testing';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, writeFileSync } from 'node:fs';
import { get as httpsGet } from 'node:https';
import { join } from 'node:path';
import { checkServerIdentity, connect as tlsConnect } from 'node:tls';
import { promisify } from 'node:util';
import { CassandraResultStore, CeleryConnectionError, CeleryModule, CeleryModuleOptions, Producer, ResultStore } from '../../lib';
import { ensurePythonCelery, pythonClient, PythonEnv, PythonWorker } from '../interop/support/python-celery';
import { AstraEmulator } from '../support/astra-emulator';
import { FixtureTasks } from '../support/fixture-tasks';
import { KEYSPACE, RawAmqp, rawCassandra, uniqueName } from '../support/real-services';
import { BrokerUser, CapturingLogger, expectNoSecrets, textOf } from './secrets';

const run = promisify(execFile);

/** A CQL v4 OPTIONS request (stream 1): a Cassandra node answers it with SUPPORTED (opcode 0x06). */
const OPTIONS_FRAME = Buffer.from([0x04, 0x00, 0x00, 0x01, 0x05, 0x00, 0x00, 0x00, 0x00]);

interface Probe {
  /** the TLS handshake completed on the client side */
  secure: boolean;
  /** every byte the server sent back */
  data: Buffer;
  error: Error | null;
  /** the server kept the connection open until the probe gave up */
  timedOut: boolean;
}

/**
 * Opens TLS to the emulator's SNI proxy as the driver does (identity checked against the proxy's
 * address, not the server name), sends a CQL OPTIONS frame, and reports what came back.
 */
function probeProxy(astra: AstraEmulator, opts: { servername: string; clientCert: boolean }): Promise<Probe> {
  const { ca, cert, key } = astra.clientTls();
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const result: Probe = { secure: false, data: Buffer.alloc(0), error: null, timedOut: false };
    const socket = tlsConnect({
      host: '127.0.0.1',
      port: astra.proxyPort,
      ca,
      ...(opts.clientCert ? { cert, key } : {}),
      servername: opts.servername,
      checkServerIdentity: (_name, peer) => checkServerIdentity('127.0.0.1', peer),
    });
    const timer = setTimeout(() => {
      result.timedOut = true;
      socket.destroy();
    }, 5000);
    socket.on('secureConnect', () => {
      result.secure = true;
      socket.write(OPTIONS_FRAME);
    });
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      if (opts.servername === astra.hostId) socket.end(); // the control case: one answer is enough
    });
    socket.on('error', (err) => (result.error = err));
    socket.on('close', () => {
      clearTimeout(timer);
      result.data = Buffer.concat(chunks);
      resolve(result);
    });
  });
}

/** `GET /metadata` on the emulator's metadata service, with or without the bundle's client certificate. */
function getMetadata(astra: AstraEmulator, clientCert: boolean): Promise<{ status: number; body: string }> {
  const { ca, cert, key } = astra.clientTls();
  return new Promise((resolve, reject) => {
    const req = httpsGet({ host: '127.0.0.1', port: astra.metadataPort, path: '/metadata', ca, ...(clientCert ? { cert, key } : {}), agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('metadata request timed out')));
    req.on('error', reject);
  });
}

/**
 * Astra DB through its real connection path (bundle → mTLS metadata → SNI proxy), emulated in
 * front of the real Cassandra node, for NestJS and for Python Celery. Both sides log in as
 * Astra does: user `token`, password `AstraCS:...`.
 */
describe('Astra DB through the secure-connect bundle', () => {
  let astra: AstraEmulator;
  const queue = uniqueName('astra_js');
  const table = uniqueName('astra');
  const sampleQueue = uniqueName('astra_sample');
  /** Every line the library logs in this suite, from every app it starts. */
  const logs = new CapturingLogger();
  /** The broker login of this suite's apps: a user of its own with a random password. */
  const broker = new BrokerUser();
  const wrongToken = `AstraCS:${randomBytes(12).toString('hex')}:${randomBytes(32).toString('hex')}`;
  const readerPassword = `readerPw-${randomBytes(16).toString('hex')}`;
  const secrets = (): Record<string, string> => ({
    'the AstraCS token': astra.token,
    "the token's secret part": astra.token.split(':').pop() as string,
    'the wrong AstraCS token': wrongToken,
    "the wrong token's secret part": wrongToken.split(':').pop() as string,
    'the Cassandra password of the reader role': readerPassword,
    'the broker password': broker.password,
  });
  /** A failed startup's error, checked for secrets in its message, stack and causes. */
  const startupError = async (options: object): Promise<Error> => {
    const error = await compile(options).then(
      () => new Error('startup succeeded'),
      (e: unknown) => e as Error,
    );
    expectNoSecrets('the startup error', textOf(error), secrets());
    return error;
  };

  const astraOptions = (extra: Partial<CeleryModuleOptions['cassandra']> = {}, worker = true): CeleryModuleOptions => ({
    brokerUrl: broker.url,
    resultBackend: 'cassandra',
    defaultQueue: queue,
    worker: { enabled: worker },
    resultPollIntervalMs: 50,
    cassandra: { secureConnectBundle: astra.bundlePath, token: astra.token, keyspace: KEYSPACE, table, ...extra },
  });

  const compile = (options: object) =>
    Test.createTestingModule({ imports: [CeleryModule.forRoot(options)], providers: [FixtureTasks] })
      .setLogger(logs)
      .compile();

  beforeAll(async () => {
    broker.create();
    astra = await AstraEmulator.start();
  }, 60000);

  afterAll(async () => {
    const amqp = await RawAmqp.open();
    await amqp.deleteQueues(queue, sampleQueue);
    await amqp.close();
    broker.remove();
    const cql = await rawCassandra();
    await cql.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${table}`);
    await cql.shutdown();
    await astra?.stop();
  });

  describe('the emulator refuses what Astra refuses', () => {
    it('the SNI proxy routes the node\'s host id to the node (the control case)', async () => {
      const probe = await probeProxy(astra, { servername: astra.hostId, clientCert: true });
      expect(probe.secure).toBe(true);
      expect(probe.data.length).toBeGreaterThanOrEqual(9);
      expect(probe.data[0]).toBe(0x84); // a v4 response
      expect(probe.data[4]).toBe(0x06); // SUPPORTED
    });

    it('the SNI proxy refuses an unknown server name: closed, no data, nothing routed', async () => {
      const routed = astra.routed.length;
      const probe = await probeProxy(astra, { servername: 'not-a-host-id', clientCert: true });
      expect(probe.secure).toBe(true); // the certificate was good; the name is what is refused
      expect(probe.timedOut).toBe(false);
      expect(probe.data.length).toBe(0);
      expect(astra.refused).toContain('not-a-host-id');
      expect(astra.routed.length).toBe(routed);
    });

    it('the SNI proxy refuses a TLS client without the client certificate', async () => {
      const routed = astra.routed.length;
      const probe = await probeProxy(astra, { servername: astra.hostId, clientCert: false });
      expect(probe.timedOut).toBe(false);
      expect(probe.data.length).toBe(0);
      expect(probe.error?.message).toMatch(/certificate|ECONNRESET|socket hang up/i);
      expect(astra.routed.length).toBe(routed);
    });

    it('the metadata service answers with the client certificate and refuses a client without it', async () => {
      const ok = await getMetadata(astra, true);
      expect(ok.status).toBe(200);
      expect(JSON.parse(ok.body)).toMatchObject({ contact_info: { type: 'sni_proxy', contact_points: [astra.hostId], sni_proxy_address: `127.0.0.1:${astra.proxyPort}` } });
      await expect(getMetadata(astra, false)).rejects.toThrow(/certificate|ECONNRESET|socket hang up/i);
    });
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
      const expected: Array<[string, string]> = [
        [first.id, 'Astra DB is my powerful results storage yay'],
        [second.id, 'ANOTHER DAY IN LAND OF THE WIZARDS'],
      ];

      // get() may have resolved from the worker's AMQP push: read each result back from the store,
      // whose only way to Cassandra is the bundle.
      const store = app.get(ResultStore);
      for (const [id, value] of expected) {
        expect(await store.getTaskMeta(id)).toMatchObject({ taskId: id, status: 'SUCCESS', result: value });
      }

      // A client app of its own (no worker, and no push for these ids) reads them through a
      // connection of its own to the proxy.
      const routed = astra.routed.length;
      const client = await compile(astraOptions({}, false));
      await client.init();
      try {
        expect(astra.routed.length).toBeGreaterThan(routed);
        for (const [id, value] of expected) {
          await expect(client.get(Producer).asyncResult(id).get({ timeout: 10000 })).resolves.toBe(value);
          expect(await client.get(ResultStore).getTaskMeta(id)).toMatchObject({ status: 'SUCCESS', result: value });
        }
      } finally {
        await client.close();
      }

      // Every row of both tasks, not only the newest: each one SUCCESS with the value.
      const cql = await rawCassandra();
      try {
        for (const [id, value] of expected) {
          const rows = (await cql.execute(`SELECT status, result FROM ${KEYSPACE}.${table} WHERE task_id = ?`, [id], { prepare: true })).rows;
          expect(rows.length).toBeGreaterThan(0);
          expect(rows.map((r) => ({ status: r.status as string, result: (r.result as Buffer).toString('utf8') }))).toEqual(
            rows.map(() => ({ status: 'SUCCESS', result: JSON.stringify(value) })),
          );
        }
      } finally {
        await cql.shutdown();
      }

      // The library's log of all this names the broker with its password masked (the worker's start line), and no credential.
      expect(logs.text()).toContain(` on amqp://${broker.username}:****@`);
      expect(logs.text()).toMatch(/Task tasks\.sortWords\[[0-9a-f-]+\] succeeded/);
      expectNoSecrets('the library log', logs.text(), secrets());
    });

    it('accepts the celeryconfig form: cassandra_secure_bundle_path + PlainTextAuthProvider', async () => {
      const client = await compile({
        broker_url: broker.url,
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
        const logged = logs.lines.length;
        const error = await startupError(astraOptions({ token: wrongToken }));
        expect(error).toBeInstanceOf(CeleryConnectionError);
        expect(error.message).toMatch(/Astra DB bundle .*secure-connect-celery\.zip/);
        expect(error.message).toMatch(/[Aa]uthentication|credentials|password/);
        expectNoSecrets('the log of the failed startup', logs.lines.slice(logged).join('\n'), secrets());
        expect(await amqp.depth(queue)).toBe(before);
        await amqp.channel.purgeQueue(queue);
      } finally {
        await amqp.close();
      }
    });

    it('a missing bundle fails with an error naming the path', async () => {
      const missing = join(astra.dir, 'no-such-bundle.zip');
      const error = await startupError(astraOptions({ secureConnectBundle: missing }));
      expect(error).toBeInstanceOf(CeleryConnectionError);
      expect(error.message).toContain(missing);
    });

    it('a corrupt bundle fails with an error naming the path', async () => {
      const corrupt = join(astra.dir, 'corrupt.zip');
      writeFileSync(corrupt, 'this is not a zip file');
      const error = await startupError(astraOptions({ secureConnectBundle: corrupt }));
      expect(error).toBeInstanceOf(CeleryConnectionError);
      expect(error.message).toContain(corrupt);
    });

    it('a missing keyspace says to create it in the Astra console', async () => {
      const missing = uniqueName('astra_no_ks');
      const error = await startupError(astraOptions({ keyspace: missing }));
      expect(error.message).toContain(`Cassandra keyspace "${missing}" does not exist`);
      expect(error.message).toContain('Astra console');
    });

    it('the metadata service down fails startup clearly and acknowledges nothing', async () => {
      const copy = join(astra.dir, 'copy.zip');
      copyFileSync(astra.bundlePath, copy);
      const amqp = await RawAmqp.open();
      try {
        // A task waits on the worker's queue before the failing startup.
        await amqp.channel.assertQueue(queue, { durable: true });
        await amqp.channel.purgeQueue(queue);
        amqp.channel.sendToQueue(queue, Buffer.from('[["b a"], {}, {}]'), {
          contentType: 'application/json',
          contentEncoding: 'utf-8',
          persistent: true,
          headers: { lang: 'py', task: 'tasks.sortWords', id: 'astra-metadata-down', root_id: 'astra-metadata-down', parent_id: null, group: null },
        });
        await new Promise((r) => setTimeout(r, 200));
        const before = await amqp.channel.checkQueue(queue);
        expect(before.messageCount).toBe(1);
        await astra.stopMetadataService();
        let error: Error;
        try {
          error = await startupError(astraOptions({ secureConnectBundle: copy }));
        } finally {
          await astra.startMetadataService();
        }
        expect(error).toBeInstanceOf(CeleryConnectionError);
        expect(error.message).toContain(copy);
        expect(error.message).toMatch(/metadata|ECONNREFUSED/i);
        // Still there: nothing consumed it, nothing acknowledged it.
        const after = await amqp.channel.checkQueue(queue);
        expect(after).toMatchObject({ messageCount: before.messageCount, consumerCount: 0 });
        const waiting = await amqp.channel.get(queue, { noAck: true });
        expect(waiting && waiting.properties.headers?.id).toBe('astra-metadata-down');
      } finally {
        await amqp.channel.purgeQueue(queue).catch(() => undefined);
        await amqp.close();
      }
    });

    it('a role without CREATE permission gets an error naming the table and the permission', async () => {
      const cql = await rawCassandra();
      const role = uniqueName('astra_reader');
      try {
        await cql.execute(`CREATE ROLE ${role} WITH LOGIN = true AND PASSWORD = '${readerPassword}'`);
        await cql.execute(`GRANT SELECT ON KEYSPACE ${KEYSPACE} TO ${role}`);
        await cql.execute(`GRANT MODIFY ON KEYSPACE ${KEYSPACE} TO ${role}`);
        const newTable = uniqueName('astra_nocreate');
        const logged = logs.lines.length;
        const error = await startupError(astraOptions({ token: undefined, credentials: { username: role, password: readerPassword }, table: newTable }));
        expect(error).toBeInstanceOf(CeleryConnectionError);
        expect(error.message).toContain(`${KEYSPACE}.${newTable}`);
        expect(error.message).toContain('CREATE permission');
        expectNoSecrets('the log of the failed startup', logs.lines.slice(logged).join('\n'), secrets());
      } finally {
        await cql.execute(`DROP ROLE IF EXISTS ${role}`);
        await cql.shutdown();
      }
    });
  });

  it.each([
    ['its in-memory broker', false],
    ['RabbitMQ', true],
  ])('npm run sample with ASTRA_DB_SECURE_BUNDLE_PATH and ASTRA_DB_APPLICATION_TOKEN, on %s, stores both results in Astra and logs no credential', async (_broker, rabbit) => {
    const root = join(__dirname, '..', '..');
    const { stdout, stderr } = await run('node', [join(root, 'dist-sample', 'sample', 'main.js'), 'all'], {
      cwd: root,
      timeout: 60000,
      env: {
        ...process.env,
        ASTRA_DB_SECURE_BUNDLE_PATH: astra.bundlePath,
        ASTRA_DB_APPLICATION_TOKEN: astra.token,
        CASSANDRA_KEYSPACE: KEYSPACE,
        CASSANDRA_TABLE: table,
        ...(rabbit ? { CELERY_BROKER_URL: broker.url, CELERY_QUEUE: sampleQueue } : {}),
      },
    });
    expect(stdout).toContain('Astra DB is my powerful results storage yay');
    expect(stdout).toContain('ANOTHER DAY IN LAND OF THE WIZARDS');
    expect(stdout).toMatch(/\| SUCCESS \| "ANOTHER DAY IN LAND OF THE WIZARDS" \|/);
    if (rabbit) expect(stdout).toContain(` on amqp://${broker.username}:****@`);
    expectNoSecrets("the sample's stdout", stdout, secrets());
    expectNoSecrets("the sample's stderr", stderr, secrets());
  });

  it('no line the library logged in this suite holds a credential', () => {
    expect(logs.lines.length).toBeGreaterThan(0);
    expectNoSecrets('the library log', logs.text(), secrets());
  });
});
