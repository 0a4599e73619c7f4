import { Injectable, Module } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import type { Client } from 'cassandra-driver';
import { AmqpBroker, Broker, CassandraResultStore, CeleryModule, Producer, ResultStore, TaskFailedError } from '../../lib';
import { FixtureTasks } from '../support/fixture-tasks';
import { eventually, RawAmqp, rawCassandra, realOptions, uniqueName, AMQP_URL, CASSANDRA_HOST, CASSANDRA_PORT, KEYSPACE, SUPERUSER, removeQueueAndTable, pythonServiceKeys } from '../support/real-services';

/**
 * The sortWords walkthrough end to end on the real services:
 * Producer → RabbitMQ → worker → Cassandra (Celery's table) → AsyncResult.get().
 */
describe('walkthrough on RabbitMQ and Cassandra', () => {
  const queue = uniqueName('it_walk');
  const table = uniqueName('it_tasks');
  let app: TestingModule;
  let producer: Producer;
  let cql: Client;
  let amqp: RawAmqp;

  beforeAll(async () => {
    cql = await rawCassandra();
    amqp = await RawAmqp.open();
    app = await Test.createTestingModule({ imports: [CeleryModule.forRoot(realOptions(queue, table))], providers: [FixtureTasks] }).compile();
    await app.init();
    producer = app.get(Producer);
  });

  afterAll(async () => {
    await app?.close();
    await amqp?.deleteQueues(queue);
    await amqp?.close();
    await cql?.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${table}`);
    await cql?.shutdown();
  });

  it('runs on the real broker and store, never the in-memory ones', () => {
    expect(app.get(Broker)).toBeInstanceOf(AmqpBroker);
    expect(app.get(ResultStore)).toBeInstanceOf(CassandraResultStore);
  });

  it('created the result table as Celery does', async () => {
    const rs = await cql.execute(
      'SELECT column_name, type, kind, clustering_order FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?',
      [KEYSPACE, table],
    );
    const columns = Object.fromEntries(rs.rows.map((r) => [r.column_name, `${r.type}/${r.kind}/${r.clustering_order}`]));
    expect(columns).toEqual({
      task_id: 'text/partition_key/none',
      date_done: 'timestamp/clustering/desc',
      status: 'text/regular/none',
      result: 'blob/regular/none',
      traceback: 'blob/regular/none',
      children: 'blob/regular/none',
    });
  });

  it('sorts both walkthrough strings, the second with a keyword argument', async () => {
    const sortWords = producer.task(FixtureTasks, 'sortWords');
    const first = await sortWords.delay('storage yay my DB is powerful results Astra', false);
    const second = await sortWords.applyAsync(['In the land of another wizards day'], { kwargs: { capitalize: true } });
    await expect(first.get({ timeout: 20000 })).resolves.toBe('Astra DB is my powerful results storage yay');
    await expect(second.get({ timeout: 20000 })).resolves.toBe('ANOTHER DAY IN LAND OF THE WIZARDS');
    expect(await first.ready()).toBe(true);
    expect(await second.state()).toBe('SUCCESS');
    await eventually(async () => (await amqp.depth(queue)) === 0);
  });

  it("writes rows in Celery's format: JSON-text result, traceback null, children []", async () => {
    const result = await producer.sendTask('tasks.sortWords', { args: ['storage yay my DB is powerful results Astra', false] });
    await result.get({ timeout: 20000 });
    const rs = await cql.execute(`SELECT * FROM ${KEYSPACE}.${table} WHERE task_id = ?`, [result.id], { prepare: true });
    expect(rs.rows).toHaveLength(1);
    const row = rs.rows[0];
    expect(row.status).toBe('SUCCESS');
    expect(row.result.toString('utf8')).toBe('"Astra DB is my powerful results storage yay"');
    expect(row.traceback.toString('utf8')).toBe('null');
    expect(row.children.toString('utf8')).toBe('[]');
    expect(row.date_done).toBeInstanceOf(Date);
    expect(Math.abs(row.date_done.getTime() - Date.now())).toBeLessThan(60000);
  });

  it('stores FAILURE for a task that throws; get() rejects with its type and message', async () => {
    const result = await producer.sendTask('tasks.failWords', { args: ['x y'] });
    const error = (await result.get({ timeout: 20000 }).catch((e: unknown) => e)) as TaskFailedError;
    expect(error).toBeInstanceOf(TaskFailedError);
    expect(error).toMatchObject({ state: 'FAILURE', excType: 'ValueError', excModule: 'builtins', excMessage: ["cannot sort: 'x y'"] });
    expect(error.traceback).toContain("RangeError: cannot sort: 'x y'");
    const row = (await cql.execute(`SELECT * FROM ${KEYSPACE}.${table} WHERE task_id = ?`, [result.id], { prepare: true })).first();
    expect(row.status).toBe('FAILURE');
    expect(row.result.toString('utf8')).toBe('{"exc_type": "ValueError", "exc_message": ["cannot sort: \'x y\'"], "exc_module": "builtins"}');
    expect(JSON.parse(row.traceback.toString('utf8'))).toContain('RangeError');
    expect(row.children.toString('utf8')).toBe('[]');
  });

  it('keeps the first SUCCESS in Cassandra when the same task id comes again and fails, or is unregistered', async () => {
    const first = await producer.sendTask('tasks.sortWords', { args: ['b a'], taskId: `${table}-dup` });
    await expect(first.get({ timeout: 20000 })).resolves.toBe('a b');
    await producer.sendTask('tasks.failWords', { args: ['x'], taskId: first.id });
    await producer.sendTask('tasks.noSuchTask', { taskId: first.id });
    await eventually(async () => (await amqp.depth(queue)) === 0);
    await (await producer.sendTask('tasks.echo', { args: ['flush'] })).get({ timeout: 20000 });
    const rs = await cql.execute(`SELECT status, result FROM ${KEYSPACE}.${table} WHERE task_id = ?`, [first.id], { prepare: true });
    expect(rs.rows.map((r) => [r.status, r.result.toString('utf8')])).toEqual([['SUCCESS', '"a b"']]);
  });

  it('rejects an unknown task without requeue, stores NotRegistered, and keeps serving', async () => {
    const unknown = await producer.sendTask('tasks.noSuchTask', { args: [1] });
    await expect(unknown.get({ timeout: 20000 })).rejects.toMatchObject({ excType: 'NotRegistered', excModule: 'celery.exceptions', excMessage: ['tasks.noSuchTask'] });
    const row = (await cql.execute(`SELECT * FROM ${KEYSPACE}.${table} WHERE task_id = ?`, [unknown.id], { prepare: true })).first();
    expect(row.result.toString('utf8')).toBe('{"exc_type": "NotRegistered", "exc_message": ["tasks.noSuchTask"], "exc_module": "celery.exceptions"}');
    await eventually(async () => (await amqp.depth(queue)) === 0);
    const ok = await producer.sendTask('tasks.echo', { args: ['still serving'] });
    await expect(ok.get({ timeout: 20000 })).resolves.toBe('still serving');
  });

  it('rejects a malformed message without requeue and keeps serving', async () => {
    amqp.channel.sendToQueue(queue, Buffer.from('{"not": "a task"'), { contentType: 'application/json', headers: { task: 'tasks.echo', id: 'malformed-1' } });
    amqp.channel.sendToQueue(queue, Buffer.from('x'), { contentType: 'application/x-python-serialize', headers: { task: 'tasks.echo', id: 'pickled-1' } });
    const ok = await producer.sendTask('tasks.echo', { args: ['after malformed'] });
    await expect(ok.get({ timeout: 20000 })).resolves.toBe('after malformed');
    await eventually(async () => (await amqp.depth(queue)) === 0);
    expect(await producer.asyncResult('malformed-1').state()).toBe('PENDING');
  });

  it('carries kwargs, unicode and nested values through RabbitMQ and Cassandra', async () => {
    const value = { text: 'Grüße, 世界 🌍', list: [1, 2.5, null, true], nested: { deep: ['a'] } };
    const result = await producer.sendTask('tasks.echo', { kwargs: { value } });
    await expect(result.get({ timeout: 20000 })).resolves.toEqual(value);
  });

  it('pushes the stored result to the waiting get(): no store read, no polling', async () => {
    const slowPolling = await Test.createTestingModule({
      imports: [CeleryModule.forRoot(realOptions(queue, table, { worker: { enabled: false }, resultPollIntervalMs: 120000 }))],
    }).compile();
    await slowPolling.init();
    try {
      const store = slowPolling.get(ResultStore);
      const reads = jest.spyOn(store, 'getTaskMeta');
      const result = await slowPolling.get(Producer).sendTask('tasks.sleep', { args: [300, 'pushed'] });
      await expect(result.get({ timeout: 20000 })).resolves.toBe('pushed');

      expect(reads).not.toHaveBeenCalled();
      // the row is there all the same: Cassandra stays the durable record
      expect((await store.getTaskMeta(result.id)).status).toBe('SUCCESS');
    } finally {
      await slowPolling.close();
    }
  });

  it('holds a countdown task until its time', async () => {
    const sentAt = Date.now();
    const result = await producer.sendTask('tasks.echo', { args: ['later'], countdown: 1 });
    expect(await result.state()).toBe('PENDING');
    await expect(result.get({ timeout: 20000 })).resolves.toBe('later');
    const row = (await cql.execute(`SELECT date_done FROM ${KEYSPACE}.${table} WHERE task_id = ?`, [result.id], { prepare: true })).first();
    expect(row.date_done.getTime()).toBeGreaterThanOrEqual(sentAt + 990);
  });
});

describe('producer and worker in separate applications', () => {
  const queue = uniqueName('it_split');
  const table = uniqueName('it_tasks');
  let worker: TestingModule;
  let client: TestingModule;
  let amqp: RawAmqp;

  beforeAll(async () => {
    amqp = await RawAmqp.open();
    worker = await Test.createTestingModule({ imports: [CeleryModule.forRoot(realOptions(queue, table))], providers: [FixtureTasks] }).compile();
    await worker.init();
    client = await Test.createTestingModule({ imports: [CeleryModule.forRoot(realOptions(queue, table, { worker: { enabled: false } }))] }).compile();
    await client.init();
  });

  afterAll(async () => {
    await client?.close();
    await worker?.close();
    await amqp?.deleteQueues(queue);
    await amqp?.close();
    const cql = await rawCassandra();
    await cql.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${table}`);
    await cql.shutdown();
  });

  it('a client-only app sends by name and reads the result the worker app stored', async () => {
    const result = await client.get(Producer).sendTask<string>('tasks.sortWords', { args: ['In the land of another wizards day'], kwargs: { capitalize: true } });
    await expect(result.get({ timeout: 20000 })).resolves.toBe('ANOTHER DAY IN LAND OF THE WIZARDS');
  });

  it('the client-only app has no consumer on the queue', async () => {
    const info = await amqp.channel.checkQueue(queue);
    expect(info.consumerCount).toBe(1);
  });
});

describe('configuration against the real services', () => {
  it('forRootAsync with an injected config runs the walkthrough', async () => {
    const queue = uniqueName('it_async');
    const table = uniqueName('it_tasks');
    @Injectable()
    class Settings {
      readonly options = realOptions(queue, table);
    }
    @Module({ providers: [Settings], exports: [Settings] })
    class SettingsModule {}
    const app = await Test.createTestingModule({
      imports: [CeleryModule.forRootAsync({ imports: [SettingsModule], inject: [Settings], useFactory: async (s: Settings) => s.options })],
      providers: [FixtureTasks],
    }).compile();
    await app.init();
    try {
      const result = await app.get(Producer).task(FixtureTasks, 'sortWords').delay('storage yay my DB is powerful results Astra', false);
      await expect(result.get({ timeout: 20000 })).resolves.toBe('Astra DB is my powerful results storage yay');
    } finally {
      await app.close();
      await removeQueueAndTable(queue, table);
    }
  });

  it("accepts Python's celeryconfig keys for the real broker and Cassandra", async () => {
    const queue = uniqueName('it_py');
    const table = uniqueName('it_tasks');
    const app = await Test.createTestingModule({
      imports: [
        CeleryModule.forRoot({
          ...pythonServiceKeys(table),
          cassandra_read_consistency: 'ONE',
          cassandra_write_consistency: 'ONE',
          cassandra_entry_ttl: 3600,
          task_default_queue: queue,
          task_serializer: 'json',
          result_serializer: 'json',
          accept_content: ['json'],
          enable_utc: true,
        }),
      ],
      providers: [FixtureTasks],
    }).compile();
    await app.init();
    const cql = await rawCassandra();
    try {
      const result = await app.get(Producer).sendTask('tasks.sortWords', { args: ['b c a'] });
      await expect(result.get({ timeout: 20000 })).resolves.toBe('a b c');
      const ttl = (await cql.execute(`SELECT TTL(status) AS ttl FROM ${KEYSPACE}.${table} WHERE task_id = ?`, [result.id], { prepare: true })).first();
      expect(ttl.ttl).toBeGreaterThan(3500);
      expect(ttl.ttl).toBeLessThanOrEqual(3600);
    } finally {
      await app.close();
      const amqp = await RawAmqp.open();
      await amqp.deleteQueues(queue);
      await amqp.close();
      await cql.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${table}`);
      await cql.shutdown();
    }
  });
});
