import { Test } from '@nestjs/testing';
import { join } from 'node:path';
import { CeleryConnectionError, CeleryModule, Producer } from '../../lib';
import { FixtureTasks } from '../support/fixture-tasks';
import { RawAmqp, rawCassandra, realOptions, uniqueName, KEYSPACE, removeQueueAndTable } from '../support/real-services';

/**
 * TLS end to end: amqps:// to RabbitMQ (port 5671) and client_encryption_options on Cassandra,
 * with the test CA that `services:up` makes (tools/tls/.certs). Verification is on by default.
 */
const CERTS = join(__dirname, '..', '..', 'tools', 'tls', '.certs');
const AMQPS_URL = process.env.TEST_AMQPS_URL ?? 'amqps://guest:guest@127.0.0.1:5671';

describe('TLS to RabbitMQ and Cassandra', () => {
  const queue = uniqueName('it_tls');
  const table = uniqueName('it_tls');
  const compile = (options: object) => Test.createTestingModule({ imports: [CeleryModule.forRoot(options)], providers: [FixtureTasks] }).compile();
  const base = realOptions(queue, table);

  afterAll(async () => {
    await removeQueueAndTable(queue, table);
  });

  it('runs the walkthrough over amqps:// and TLS to Cassandra, certificates verified against the test CA', async () => {
    const app = await compile({
      ...base,
      brokerUrl: AMQPS_URL,
      brokerTls: { ca: join(CERTS, 'ca.crt') },
      cassandra: { ...base.cassandra, tls: { ca: join(CERTS, 'ca.crt') } },
    });
    await app.init();
    try {
      const r = await app.get(Producer).task(FixtureTasks, 'sortWords').delay('storage yay my DB is powerful results Astra', false);
      await expect(r.get({ timeout: 20000 })).resolves.toBe('Astra DB is my powerful results storage yay');
    } finally {
      await app.close();
    }
  });

  it('accepts a celeryconfig broker_use_ssl with a client certificate', async () => {
    const app = await compile({
      broker_url: AMQPS_URL,
      broker_use_ssl: { ca_certs: join(CERTS, 'ca.crt'), certfile: join(CERTS, 'client.crt'), keyfile: join(CERTS, 'client.key'), cert_reqs: 'CERT_REQUIRED' },
      ...{ resultBackend: base.resultBackend, cassandra: base.cassandra, defaultQueue: queue, worker: { enabled: true } },
    });
    await app.init();
    try {
      const r = await app.get(Producer).sendTask('tasks.sortWords', { args: ['b a'] });
      await expect(r.get({ timeout: 20000 })).resolves.toBe('a b');
    } finally {
      await app.close();
    }
  });

  it('refuses a broker certificate it cannot verify (no CA given), naming the broker without the password', async () => {
    const error = await compile({ ...base, brokerUrl: AMQPS_URL, brokerConnectionRetryOnStartup: false }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CeleryConnectionError);
    expect((error as Error).message).toMatch(/amqps:\/\/guest:\*\*\*\*@127\.0\.0\.1:5671/);
    expect((error as Error).message).toMatch(/certificate/i);
  });

  it('refuses a Cassandra certificate it cannot verify (TLS on, no CA given)', async () => {
    const error = await compile({ ...base, cassandra: { ...base.cassandra, tls: {} } }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CeleryConnectionError);
    expect((error as Error).message).toMatch(/Cannot connect to Cassandra 127\.0\.0\.1 port 9042 \(TLS\)/);
  });

  it('names a missing CA file', async () => {
    const error = await compile({ ...base, brokerUrl: AMQPS_URL, brokerTls: { ca: '/no/such/ca.crt' } }).catch((e: unknown) => e);
    expect((error as Error).message).toContain('/no/such/ca.crt');
  });

  it('never shows a Cassandra password in its errors', async () => {
    const error = await compile({ ...base, cassandra: { ...base.cassandra, credentials: { username: 'cassandra', password: 'wrong-Secret-42' } } }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CeleryConnectionError);
    expect((error as Error).message).toMatch(/[Aa]uthentication|credentials|password/);
    expect((error as Error).message).not.toContain('wrong-Secret-42');
  });
});
