import * as amqplib from 'amqplib';
import { auth, Client, ClientOptions, types } from 'cassandra-driver';
import { randomBytes } from 'node:crypto';
import type { CeleryModuleOptions, PythonCeleryConfig } from '../../lib';

/**
 * Where the real RabbitMQ and Cassandra of `npm run services:up` listen. Integration tests talk
 * to these over real connections only; nothing here falls back to the in-memory parts.
 */
export const AMQP_URL = process.env.TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
export const CASSANDRA_HOST = process.env.TEST_CASSANDRA_HOST ?? '127.0.0.1';
export const CASSANDRA_PORT = Number(process.env.TEST_CASSANDRA_PORT ?? 9042);
export const KEYSPACE = process.env.CASSANDRA_KEYSPACE ?? 'celery_test';
/** The test node runs PasswordAuthenticator; this is its default superuser. */
export const SUPERUSER = { username: process.env.CASSANDRA_USERNAME ?? 'cassandra', password: process.env.CASSANDRA_PASSWORD ?? 'cassandra' };

/** A name unique to this run, safe as a queue and as a CQL table name. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

/** The test services as a Python celeryconfig writes them (broker, Cassandra result backend and login), for `table`. */
export function pythonServiceKeys(table: string): PythonCeleryConfig {
  return {
    broker_url: AMQP_URL,
    result_backend: 'cassandra://',
    cassandra_servers: [CASSANDRA_HOST],
    cassandra_port: CASSANDRA_PORT,
    cassandra_keyspace: KEYSPACE,
    cassandra_table: table,
    cassandra_auth_provider: 'PlainTextAuthProvider',
    cassandra_auth_kwargs: { ...SUPERUSER },
  };
}

export function realOptions(queue: string, table: string, extra: Partial<CeleryModuleOptions> = {}): CeleryModuleOptions {
  return {
    brokerUrl: AMQP_URL,
    resultBackend: 'cassandra',
    defaultQueue: queue,
    cassandra: { contactPoints: [CASSANDRA_HOST], port: CASSANDRA_PORT, localDataCenter: 'datacenter1', keyspace: KEYSPACE, table, credentials: { ...SUPERUSER } },
    resultPollIntervalMs: 20,
    ...extra,
    // no mingle unless a test asks (it adds ~1 s to every worker start: the hello waits 1 s for replies)
    worker: { mingle: false, ...extra.worker },
  };
}

/** Where a raw client connects: the shared node by default, or a test's private node (test/support/private-cassandra.ts). */
export interface CassandraTarget {
  port: number;
  keyspace: string;
}

export const SHARED_CASSANDRA: CassandraTarget = { port: CASSANDRA_PORT, keyspace: KEYSPACE };

/** A raw cassandra-driver client (superuser), to look at rows the way Python's backend would. */
export async function rawCassandra(target: CassandraTarget = SHARED_CASSANDRA, extra: Partial<ClientOptions> = {}): Promise<Client> {
  const client = new Client({
    ...extra,
    contactPoints: [`${CASSANDRA_HOST}:${target.port}`],
    localDataCenter: 'datacenter1',
    protocolOptions: { maxVersion: types.protocolVersion.v4 }, // as the library: one connect per connection, no downgrade
    keyspace: target.keyspace,
    authProvider: new auth.PlainTextAuthProvider(SUPERUSER.username, SUPERUSER.password),
  });
  try {
    await client.connect();
  } catch (err) {
    // A client whose connect failed keeps its pools' reconnection timers: shut it down, or it
    // reconnects later on its own and holds the process open.
    await client.shutdown().catch(() => undefined);
    throw err;
  }
  return client;
}

/** Direct AMQP access for tests: queue depth, raw publishes, clean-up. */
export class RawAmqp {
  private constructor(
    private readonly connection: amqplib.ChannelModel,
    readonly channel: amqplib.Channel,
  ) {}

  static async open(): Promise<RawAmqp> {
    const connection = await amqplib.connect(AMQP_URL);
    const channel = await connection.createChannel();
    return new RawAmqp(connection, channel);
  }

  async depth(queue: string): Promise<number> {
    return (await this.channel.checkQueue(queue)).messageCount;
  }

  async deleteQueues(...queues: string[]): Promise<void> {
    for (const q of queues) {
      await this.channel.deleteQueue(q);
      await this.channel.deleteExchange(q);
    }
  }

  async close(): Promise<void> {
    await this.connection.close();
  }
}

/** Clean-up after a test: deletes the queue(s) (and their exchanges) and drops the result table. */
export async function removeQueueAndTable(queue: string | readonly string[], table: string): Promise<void> {
  const amqp = await RawAmqp.open();
  try {
    await amqp.deleteQueues(...(typeof queue === 'string' ? [queue] : queue));
  } finally {
    await amqp.close();
  }
  const cql = await rawCassandra();
  try {
    await cql.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${table}`);
  } finally {
    await cql.shutdown();
  }
}

/** Polls `check` until it returns true or `ms` pass. */
export async function eventually(check: () => Promise<boolean>, ms = 10000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}
