import { Logger } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { CeleryModule, CeleryModuleOptions, Producer, TaskFailedError } from '../../lib';
import { eventually, KEYSPACE, RawAmqp, rawCassandra, realOptions, uniqueName } from '../support/real-services';
import { createTableCql } from '../../lib/results/cassandra.result-store';
import { ResultTasks } from '../support/result-tasks';

const MiB = 1024 * 1024;
/** A result that was stored after all, shown by its length rather than its megabytes. */
const stored = (value: unknown) => `stored a ${String(value).length}-character result`;

/**
 * Results the real Cassandra refuses for good: too large for one write (16 MiB frame), too large for
 * worker.maxResultBytes, or written by a role without MODIFY permission. Each ends with the message
 * rejected (here dead-lettered), a FAILURE row where one can be stored, and a worker that runs the next task.
 */
describe('results that can never be stored (real RabbitMQ and Cassandra)', () => {
  let queue: string;
  let table: string;
  let amqp: RawAmqp;
  let errorLogs: string[];

  beforeEach(async () => {
    queue = uniqueName('it_unstorable');
    table = uniqueName('it_unstorable');
    amqp = await RawAmqp.open();
    await amqp.channel.assertExchange(`${queue}.dlx`, 'fanout', { durable: true });
    await amqp.channel.assertQueue(`${queue}.dlq`, { durable: true });
    await amqp.channel.bindQueue(`${queue}.dlq`, `${queue}.dlx`, '');
    errorLogs = [];
    const original = Logger.prototype.error;
    jest.spyOn(Logger.prototype, 'error').mockImplementation(function (this: Logger, ...args: unknown[]) {
      errorLogs.push(String(args[0]));
      return (original as (...a: unknown[]) => void).apply(this, args);
    });
  });

  afterEach(async () => {
    jest.restoreAllMocks();
    await amqp.deleteQueues(queue);
    await amqp.channel.deleteQueue(`${queue}.dlq`);
    await amqp.channel.deleteExchange(`${queue}.dlx`);
    await amqp.close();
    const cql = await rawCassandra();
    await cql.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${table}`);
    await cql.shutdown();
  });

  async function startWorker(extra: Partial<CeleryModuleOptions> = {}, worker: Record<string, unknown> = {}) {
    const base = realOptions(queue, table, { queueArguments: { 'x-dead-letter-exchange': `${queue}.dlx` }, ...extra });
    const app = await Test.createTestingModule({
      imports: [CeleryModule.forRoot({ ...base, worker: { shutdownTimeoutMs: 5000, ...worker } })],
      providers: [ResultTasks],
    }).compile();
    await app.init();
    return app;
  }

  async function rowsOf(taskId: string): Promise<{ status: string; result: string }[]> {
    const cql = await rawCassandra();
    try {
      const rs = await cql.execute(`SELECT status, result FROM ${KEYSPACE}.${table} WHERE task_id = ?`, [taskId], { prepare: true });
      return rs.rows.map((r) => ({ status: r.status as string, result: (r.result as Buffer).toString('utf8') }));
    } finally {
      await cql.shutdown();
    }
  }

  async function deadLettered(): Promise<string[]> {
    await eventually(async () => (await amqp.depth(`${queue}.dlq`)) > 0, 20000);
    const ids: string[] = [];
    for (;;) {
      const m = await amqp.channel.get(`${queue}.dlq`, { noAck: true });
      if (!m) return ids;
      ids.push(String(m.properties.headers?.id));
    }
  }

  it('a result larger than one Cassandra write (16 MiB frame) gets a FAILURE (ValueError with the server reason), is dead-lettered, and the next task runs', async () => {
    // the library's own limit is raised above Cassandra's, so the write reaches the server
    const app = await startWorker({}, { maxResultBytes: 64 * MiB });
    try {
      const producer = app.get(Producer);
      const big = await producer.sendTask('tasks.bigResult', { args: [17 * MiB] });
      const error = (await big.get({ timeout: 30000 }).then(stored, (e: unknown) => e)) as TaskFailedError;
      expect(error).toBeInstanceOf(TaskFailedError);
      expect(error).toMatchObject({ excType: 'ValueError', excModule: 'builtins' });
      expect(String(error.excMessage[0])).toMatch(new RegExp(`^The SUCCESS result of task ${big.id} was not stored: Request is too big: length \\d+ exceeds maximum allowed length 16777216\\.$`));
      expect(await deadLettered()).toEqual([big.id]);
      const rows = await rowsOf(big.id);
      expect(rows.map((r) => r.status)).toEqual(['FAILURE']);
      expect(JSON.parse(rows[0].result)).toMatchObject({ exc_type: 'ValueError', exc_module: 'builtins' });
      const next = await producer.sendTask('tasks.small', { args: ['next'] });
      await expect(next.get({ timeout: 20000 })).resolves.toBe('next');
      expect(await amqp.depth(queue)).toBe(0);
    } finally {
      await app.close();
    }
  });

  it('a result over worker.maxResultBytes (default 8 MiB) is never written: a FAILURE names the size and the limit, the message is dead-lettered', async () => {
    const app = await startWorker();
    try {
      const producer = app.get(Producer);
      const big = await producer.sendTask('tasks.bigResult', { args: [9 * MiB] });
      const error = (await big.get({ timeout: 30000 }).then(stored, (e: unknown) => e)) as TaskFailedError;
      expect(error).toMatchObject({ excType: 'ValueError', excModule: 'builtins' });
      expect(String(error.excMessage[0])).toBe(
        `The SUCCESS result of task ${big.id} was not stored: The result row of task ${big.id} is ${9 * MiB + 2 + 4 + 2 + Buffer.byteLength(big.id) + 7} bytes, over worker.maxResultBytes (${8 * MiB} bytes)`,
      );
      expect(await deadLettered()).toEqual([big.id]);
      expect((await rowsOf(big.id)).map((r) => r.status)).toEqual(['FAILURE']);
      const next = await producer.sendTask('tasks.small', { args: ['next'] });
      await expect(next.get({ timeout: 20000 })).resolves.toBe('next');
    } finally {
      await app.close();
    }
  });

  it('a role without MODIFY permission: the message is dead-lettered with an error naming the task, its id and the reason; no loop, and the worker runs the next task once granted', async () => {
    const role = uniqueName('it_readonly');
    const su = await rawCassandra();
    await su.execute(createTableCql(KEYSPACE, table));
    await su.execute(`CREATE ROLE ${role} WITH PASSWORD = 'readonly-pw' AND LOGIN = true`);
    await su.execute(`GRANT SELECT ON KEYSPACE ${KEYSPACE} TO ${role}`);
    const base = realOptions(queue, table);
    const app = await startWorker({ cassandra: { ...base.cassandra!, credentials: { username: role, password: 'readonly-pw' } } });
    try {
      const producer = app.get(Producer);
      const denied = await producer.sendTask('tasks.small', { args: ['not allowed'] });
      expect(await deadLettered()).toEqual([denied.id]);
      const logged = errorLogs.find((l) => l.includes(`tasks.small[${denied.id}]`));
      expect(logged).toMatch(/cannot be stored: .*has no MODIFY permission.*unauthorized \(0x2100\).*no FAILURE could be stored either; message rejected without requeue/);
      expect(await rowsOf(denied.id)).toEqual([]);
      await su.execute(`GRANT MODIFY ON KEYSPACE ${KEYSPACE} TO ${role}`);
      const next = await producer.sendTask('tasks.small', { args: ['allowed now'] });
      await expect(next.get({ timeout: 20000 })).resolves.toBe('allowed now');
      expect(await amqp.depth(queue)).toBe(0);
    } finally {
      await app.close();
      await su.execute(`DROP ROLE IF EXISTS ${role}`);
      await su.shutdown();
    }
  });
});
