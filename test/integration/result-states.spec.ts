import { Injectable } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import type { Client } from 'cassandra-driver';
import { AsyncResult, Broker, CeleryModule, GroupResult, Producer, ResultStore, Task } from '../../lib';
import { encodeResultMessage } from '../../lib/protocol/result-row';
import { ResultNotifier } from '../../lib/results/result-notifier';
import { normalizeCeleryOptions } from '../../lib/config/normalize-options';
import type { ResolvedCassandraConfig } from '../../lib/config/resolved-config';
import { CassandraResultStore, createTableCql } from '../../lib/results/cassandra.result-store';
import { ResultWriter } from '../../lib/results/result-writer';
import { quietLogger, retryState, startedState, successState } from '../support/result-states';
import { CASSANDRA_HOST, CASSANDRA_PORT, KEYSPACE, RawAmqp, eventually, rawCassandra, realOptions, SUPERUSER, uniqueName } from '../support/real-services';

/**
 * Result states and options on the real Cassandra 5.0 (issue 12 item 7): the rows every state
 * appends, per-row TTL over cassandra.entryTtl, forget() deleting the partition, children read back
 * as handles, and the resultExtended columns added to Celery's table.
 */

function configFor(table: string, entryTtl?: number): ResolvedCassandraConfig {
  return normalizeCeleryOptions({
    resultBackend: 'cassandra://',
    cassandra: { contactPoints: [CASSANDRA_HOST], port: CASSANDRA_PORT, localDataCenter: 'datacenter1', keyspace: KEYSPACE, table, credentials: { ...SUPERUSER }, ...(entryTtl ? { entryTtl } : {}) },
  }).cassandra as ResolvedCassandraConfig;
}

const quiet = quietLogger;
const started = (taskId: string) => startedState(taskId, 'celery@it-host');
const retry = retryState;
const success = successState;

describe('result states and options on Cassandra', () => {
  const table = uniqueName('it_states');
  let cql: Client;
  let store: CassandraResultStore;
  let writer: ResultWriter;

  beforeAll(async () => {
    cql = await rawCassandra();
    store = new CassandraResultStore(configFor(table, 86400));
    await store.connect({ forWrites: true });
    writer = new ResultWriter(store, quiet(), () => false);
  });

  afterAll(async () => {
    await store?.close();
    await cql?.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${table}`);
    await cql?.shutdown();
  });

  const rowsOf = async (taskId: string) =>
    (await cql.execute(`SELECT status, TTL(status) AS ttl FROM ${KEYSPACE}.${table} WHERE task_id = ?`, [taskId], { prepare: true })).rows.map((r) => ({
      status: r.status as string,
      ttl: r.ttl as number | null,
    }));

  it('STARTED, RETRY, SUCCESS each append a row; the reader sees the newest; a late STARTED does not hide the SUCCESS', async () => {
    const id = uniqueName('t');
    await writer.write(started(id), false);
    expect(await store.getTaskMeta(id)).toMatchObject({ status: 'STARTED', result: { pid: 4242, hostname: 'celery@it-host' }, traceback: null, children: [] });
    await writer.write(retry(id), false);
    expect(await store.getTaskMeta(id)).toMatchObject({ status: 'RETRY', result: { exc_type: 'RuntimeError' }, children: [[[id, null], null]] });
    await writer.write(success(id, 5), false);
    await expect(writer.write(started(id), false)).resolves.toMatchObject({ kind: 'kept' });
    expect(await store.getTaskMeta(id)).toMatchObject({ status: 'SUCCESS', result: 5 });
    expect((await rowsOf(id)).map((r) => r.status)).toEqual(['SUCCESS', 'RETRY', 'STARTED']);
  });

  it("a row's expiresSeconds is its TTL, over cassandra.entryTtl; 0 never expires; the row is gone after it", async () => {
    const short = uniqueName('t');
    const never = uniqueName('t');
    const plain = uniqueName('t');
    await store.store({ ...success(short), expiresSeconds: 2 });
    await store.store({ ...success(never), expiresSeconds: 0 });
    await store.store(success(plain));
    const [s] = await rowsOf(short);
    expect(s.ttl).toBeGreaterThan(0);
    expect(s.ttl).toBeLessThanOrEqual(2);
    expect((await rowsOf(never))[0].ttl).toBeNull();
    expect((await rowsOf(plain))[0].ttl).toBeGreaterThan(86000);
    await new Promise((resolve) => setTimeout(resolve, 2200));
    expect((await store.getTaskMeta(short)).status).toBe('PENDING');
    expect((await store.getTaskMeta(never)).status).toBe('SUCCESS');
  });

  it('forget() deletes every row of the task (PENDING again) and no other task', async () => {
    const id = uniqueName('t');
    const other = uniqueName('t');
    await store.store(started(id));
    await store.store(success(id));
    await store.store(success(other));
    await store.forget(id);
    expect(await rowsOf(id)).toEqual([]);
    expect(await store.getTaskMeta(id)).toMatchObject({ status: 'PENDING', result: null });
    expect((await store.getTaskMeta(other)).status).toBe('SUCCESS');
    // a state stored after forget() is a new row, as with Celery
    await store.store(success(id, 'again'));
    expect(await store.getTaskMeta(id)).toMatchObject({ status: 'SUCCESS', result: 'again' });
  });

  it('children of a real row come back as handles on the child rows', async () => {
    const parent = uniqueName('t');
    const child = uniqueName('t');
    await store.store({ ...success(parent), children: [[[child, null], null], [['grp', null], [[[child, null], null]]]] });
    await store.store(success(child, 'child value'));
    const [single, group] = (await new AsyncResult(parent, store, 10).children()) as [AsyncResult, GroupResult];
    expect(single.id).toBe(child);
    await expect(single.get({ timeout: 5000 })).resolves.toBe('child value');
    expect(group).toBeInstanceOf(GroupResult);
    await expect(group.get({ timeout: 5000 })).resolves.toEqual(['child value']);
  });
});

describe('resultExtended on Cassandra', () => {
  const table = uniqueName('it_ext');
  let cql: Client;
  const stores: CassandraResultStore[] = [];
  const open = async (resultExtended: boolean, forWrites: boolean) => {
    const s = new CassandraResultStore(configFor(table), undefined, undefined, { resultExtended });
    stores.push(s);
    await s.connect({ forWrites });
    return s;
  };
  const columns = async () =>
    (await cql.execute('SELECT column_name, type FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?', [KEYSPACE, table])).rows
      .map((r) => `${r.column_name} ${r.type}`)
      .sort();

  beforeAll(async () => {
    cql = await rawCassandra();
  });

  afterAll(async () => {
    for (const s of stores) await s.close();
    await cql?.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${table}`);
    await cql?.shutdown();
  });

  it("a worker adds the extended columns to Celery's table; rows carry name, args, kwargs, worker, retries, queue; readers without the option still read them", async () => {
    const plainWriter = await open(false, true); // Celery's table, as Python creates it
    const reader = await open(true, false); // a reader that starts before any worker has the option
    await plainWriter.store(success('before'));
    const writer = await open(true, true);
    expect(await columns()).toEqual(
      ['args blob', 'children blob', 'date_done timestamp', 'group_id text', 'kwargs blob', 'name text', 'parent_id text', 'queue text', 'result blob', 'retries int', 'status text', 'task_id text', 'traceback blob', 'worker text'],
    );
    const extended = { name: 'tasks.add', args: [1, 2], kwargs: { z: 3 }, worker: 'celery@it-host', retries: 1, queue: 'celery', parentId: 'p-1', groupId: null };
    await writer.store({ ...success('ext', 3), extended });
    expect((await writer.getTaskMeta('ext')).extended).toEqual(extended);
    // the reader finds the new columns on its next look (every 5 s while they are missing)
    (reader as unknown as { extendedCheckedAt: number }).extendedCheckedAt = 0;
    expect(await reader.getTaskMeta('ext')).toMatchObject({ status: 'SUCCESS', result: 3, extended });
    // rows written without them (Python, a worker without the option) read with no extended fields
    expect((await writer.getTaskMeta('before')).extended).toBeUndefined();
    expect((await plainWriter.getTaskMeta('ext')).extended).toBeUndefined();
    expect((await plainWriter.getTaskMeta('ext')).result).toBe(3);
    // a second worker with the option finds the columns there and adds nothing
    await open(true, true);
    expect(await columns()).toHaveLength(14);
  });
});

describe('resultExtended without ALTER permission', () => {
  it('a worker whose role may not add the columns fails to start with an error naming the columns and the permission; a reader with that role reads without them', async () => {
    const table = uniqueName('it_ext_ro');
    const role = uniqueName('it_noalter');
    const su = await rawCassandra();
    const stores: CassandraResultStore[] = [];
    try {
      await su.execute(createTableCql(KEYSPACE, table));
      await su.execute(`CREATE ROLE ${role} WITH PASSWORD = 'noalter-pw' AND LOGIN = true`);
      await su.execute(`GRANT SELECT ON KEYSPACE ${KEYSPACE} TO ${role}`);
      await su.execute(`GRANT MODIFY ON KEYSPACE ${KEYSPACE} TO ${role}`);
      const config = { ...configFor(table), credentials: { username: role, password: 'noalter-pw' } };
      const worker = new CassandraResultStore(config, undefined, undefined, { resultExtended: true });
      stores.push(worker);
      await expect(worker.connect({ forWrites: true })).rejects.toThrow(
        new RegExp(`resultExtended is on but result table ${KEYSPACE}\\.${table} lacks its columns \\(name text, args blob, kwargs blob, worker text, retries int, queue text, parent_id text, group_id text\\) and this role may not add them \\(needs ALTER permission on ${KEYSPACE}\\.${table}\\)`),
      );
      const reader = new CassandraResultStore(config, undefined, undefined, { resultExtended: true });
      stores.push(reader);
      await reader.connect({ forWrites: false });
      await su.execute(`INSERT INTO ${KEYSPACE}.${table} (task_id, status, result, date_done, traceback, children) VALUES ('r1', 'SUCCESS', textAsBlob('1'), toTimestamp(now()), textAsBlob('null'), textAsBlob('[]'))`);
      const meta = await reader.getTaskMeta('r1');
      expect(meta).toMatchObject({ status: 'SUCCESS', result: 1 });
      expect(meta.extended).toBeUndefined();
    } finally {
      for (const s of stores) await s.close();
      await su.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${table}`);
      await su.execute(`DROP ROLE IF EXISTS ${role}`);
      await su.shutdown();
    }
  });
});

@Injectable()
class TrackedTasks {
  @Task('tasks.tracked', { trackStarted: true })
  async tracked(ms: number): Promise<string> {
    await new Promise((resolve) => setTimeout(resolve, ms));
    return `slept ${ms}`;
  }
}

describe('through the module: resultExtended option and AsyncResult.forget()', () => {
  const queue = uniqueName('it_states_q');
  const table = uniqueName('it_states_m');
  let app: TestingModule;
  let cql: Client;

  beforeAll(async () => {
    cql = await rawCassandra();
    app = await Test.createTestingModule({ imports: [CeleryModule.forRoot(realOptions(queue, table, { result_extended: true } as never))], providers: [TrackedTasks] }).compile();
    await app.init();
  });

  afterAll(async () => {
    await app?.close();
    const amqp = await RawAmqp.open();
    await amqp.deleteQueues(queue);
    await amqp.close();
    await cql?.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${table}`);
    await cql?.shutdown();
  });

  it('result_extended makes the worker add the columns at start; Producer.asyncResult(id).forget() deletes the rows', async () => {
    const rs = await cql.execute('SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?', [KEYSPACE, table]);
    expect(rs.rows.map((r) => r.column_name)).toEqual(expect.arrayContaining(['name', 'args', 'kwargs', 'worker', 'retries', 'queue', 'parent_id', 'group_id']));
    const store = app.get(ResultStore);
    await store.store({ ...success('m1'), extended: { name: 'tasks.x', args: [], kwargs: {}, worker: 'w', retries: 0, queue } });
    const handle = app.get(Producer).asyncResult('m1');
    expect(await handle.extended()).toMatchObject({ name: 'tasks.x', queue });
    await handle.forget();
    expect(await handle.state()).toBe('PENDING');
    expect((await cql.execute(`SELECT task_id FROM ${KEYSPACE}.${table} WHERE task_id = 'm1'`)).rows).toHaveLength(0);
  });

  it('a trackStarted task: state() is STARTED while it runs, get() waits through it and resolves the value; the rows are STARTED then SUCCESS', async () => {
    const r = await app.get(Producer).sendTask('tasks.tracked', { args: [1500] });
    await eventually(async () => (await r.state()) === 'STARTED', 5000);
    expect((await r.info()).result).toEqual({ pid: process.pid, hostname: expect.stringMatching(/@/) });
    await expect(r.get({ timeout: 20000 })).resolves.toBe('slept 1500');
    expect((await cql.execute(`SELECT status FROM ${KEYSPACE}.${table} WHERE task_id = ?`, [r.id], { prepare: true })).rows.map((row) => row.status)).toEqual(['SUCCESS', 'STARTED']);
  });

  it("a STARTED pushed over RabbitMQ to the producer's reply queue does not settle get(); the SUCCESS push does (no row is ever stored)", async () => {
    const nobody = uniqueName('it_states_idle');
    try {
      const r = await app.get(Producer).sendTask('tasks.tracked', { queue: nobody, args: [1] });
      const notifier = app.get(ResultNotifier);
      const broker = app.get(Broker);
      let settled = false;
      const got = r.get({ timeout: 20000 }).finally(() => (settled = true));
      await broker.publishReply(notifier.queue, { correlationId: r.id, body: encodeResultMessage(started(r.id)) });
      await eventually(async () => notifier.latest(r.id)?.status === 'STARTED', 5000);
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(settled).toBe(false);
      await broker.publishReply(notifier.queue, { correlationId: r.id, body: encodeResultMessage(success(r.id, 'pushed')) });
      await expect(got).resolves.toBe('pushed');
      expect((await r.state())).toBe('PENDING');
    } finally {
      const amqp = await RawAmqp.open();
      await amqp.deleteQueues(nobody);
      await amqp.close();
    }
  });
});
