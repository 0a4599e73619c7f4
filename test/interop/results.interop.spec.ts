import { Injectable } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import type { Client } from 'cassandra-driver';
import { AsyncResult, CeleryModule, Producer, PythonCeleryConfig, ResultStore, Task, TaskTimeoutError } from '../../lib';
import { FixtureTasks } from '../support/fixture-tasks';
import { KEYSPACE, eventually, rawCassandra, uniqueName } from '../support/real-services';
import { ensurePythonCelery, PythonEnv, PythonWorker, pythonClient, stopInterop, walkthroughCeleryconfig } from './support/python-celery';

@Injectable()
class StartedTasks {
  /** Tracks its start (Celery's track_started) and takes a while, so a reader can see STARTED. */
  @Task('tasks.slowStarted', { trackStarted: true })
  async slowStarted(ms: number): Promise<number> {
    await new Promise((resolve) => setTimeout(resolve, ms));
    return ms;
  }
}

interface PyMeta {
  status: string;
  info: { json?: unknown; exc_class?: string; exc_args?: string[] };
  traceback: string | null;
  children: { id?: string; type?: string; parent?: string | null; members?: string[]; raw?: unknown }[] | null;
}

/**
 * Result states and options against real Python Celery 5.7 (issue 12 item 7), on one shared
 * result table that the NestJS worker has altered for `result_extended` before the Python worker
 * starts: every cell also shows Python reading and writing such a table. The Python worker runs
 * with `task_track_started = True` (test/interop/python/celeryconfig.py).
 */
describe('interop: result states and options', () => {
  const env: PythonEnv = { pyQueue: uniqueName('py_rs'), table: uniqueName('interop_rs') };
  const jsQueue = uniqueName('js_rs');
  let worker: PythonWorker;
  let app: TestingModule;
  let producer: Producer;
  let store: ResultStore;
  let cql: Client;

  const celeryconfig: PythonCeleryConfig = { ...walkthroughCeleryconfig(env, jsQueue), result_extended: true };

  beforeAll(async () => {
    ensurePythonCelery();
    cql = await rawCassandra();
    app = await Test.createTestingModule({ imports: [CeleryModule.forRoot({ ...celeryconfig, resultPollIntervalMs: 50 })], providers: [FixtureTasks, StartedTasks] }).compile();
    await app.init(); // creates the table and adds the resultExtended columns
    producer = app.get(Producer);
    store = app.get(ResultStore);
    worker = await PythonWorker.start(env);
  }, 240000);

  afterAll(async () => {
    await cql?.shutdown();
    await stopInterop(worker, app, env, [env.pyQueue, jsQueue]);
  });

  const py = <T = PyMeta>(command: Record<string, unknown>) => pythonClient<T>(env, command);
  const rowCount = async (taskId: string) => (await cql.execute(`SELECT task_id FROM ${KEYSPACE}.${env.table} WHERE task_id = ?`, [taskId], { prepare: true })).rowLength;

  it('the shared table has the resultExtended columns', async () => {
    const rs = await cql.execute('SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?', [KEYSPACE, env.table]);
    expect(rs.rows.map((r) => r.column_name)).toEqual(expect.arrayContaining(['name', 'args', 'kwargs', 'worker', 'retries', 'queue']));
  });

  describe('forget()', () => {
    it("NestJS forget() deletes the rows a Python worker wrote (STARTED and SUCCESS): Python's AsyncResult sees PENDING", async () => {
      const r = await producer.sendTask('tasks.echo', { queue: env.pyQueue, args: ['to forget'] });
      await expect(r.get({ timeout: 30000 })).resolves.toBe('to forget');
      expect(await rowCount(r.id)).toBe(2); // track_started: STARTED, then SUCCESS
      await r.forget();
      expect(await rowCount(r.id)).toBe(0);
      await expect(py({ op: 'meta', id: r.id })).resolves.toMatchObject({ status: 'PENDING', info: { json: null }, children: null });
    });

    it("Python's AsyncResult.forget() deletes the row a NestJS worker wrote: NestJS sees PENDING", async () => {
      const { id } = await py<{ id: string }>({ op: 'send', task: 'tasks.sortWords', queue: jsQueue, args: ['b a', false] });
      const r = producer.asyncResult<string>(id);
      await expect(r.get({ timeout: 30000 })).resolves.toBe('a b');
      await py({ op: 'forget', id });
      expect(await r.state()).toBe('PENDING');
      expect(await rowCount(id)).toBe(0);
    });
  });

  describe('STARTED and RETRY', () => {
    it("NestJS reads Python's track_started row ({pid, hostname}) as STARTED and get() waits through it", async () => {
      const r = await producer.sendTask('tasks.sleep', { queue: env.pyQueue, args: [2] });
      await eventually(async () => (await r.state()) === 'STARTED', 15000);
      const info = await r.info();
      expect(info.result).toEqual({ pid: expect.any(Number), hostname: `py-interop-${env.pyQueue}@localhost` });
      expect(await r.ready()).toBe(false);
      await expect(r.get({ timeout: 30000 })).resolves.toBe(2);
    });

    it("Python sees a NestJS worker's trackStarted task as STARTED ({pid, hostname}) while it runs, then get() returns its value", async () => {
      const { id } = await py<{ id: string }>({ op: 'send', task: 'tasks.slowStarted', queue: jsQueue, args: [4000] });
      const seen = await py({ op: 'meta', id });
      expect(seen).toMatchObject({ status: 'STARTED', info: { json: { pid: process.pid, hostname: expect.stringMatching(/^.+@.+$/) } }, traceback: null, children: [] });
      await expect(py({ op: 'get', id })).resolves.toMatchObject({ status: 'SUCCESS', result: { json: 4000 } });
    });

    it('Python reads the STARTED row NestJS stores as STARTED with its {pid, hostname}, and waits through it', async () => {
      const id = uniqueName('started');
      await store.store({ taskId: id, status: 'STARTED', result: { pid: process.pid, hostname: 'celery@nest-host' }, traceback: null, children: [] });
      await expect(py({ op: 'meta', id })).resolves.toMatchObject({ status: 'STARTED', info: { json: { pid: process.pid, hostname: 'celery@nest-host' } }, traceback: null, children: [] });
      await expect(py({ op: 'get', id, timeout: 1 })).resolves.toMatchObject({ status: 'STARTED', exc_class: 'celery.exceptions.TimeoutError' });
      await store.store({ taskId: id, status: 'SUCCESS', result: 'finished', traceback: null, children: [] });
      await expect(py({ op: 'get', id })).resolves.toMatchObject({ status: 'SUCCESS', result: { json: 'finished' } });
    });

    it("NestJS reads a Python self.retry() RETRY row: the exception dict, not ready, and the row's children list the task itself", async () => {
      const r = await producer.sendTask('tasks.retryOnce', { queue: env.pyQueue });
      await eventually(async () => (await r.state()) === 'RETRY', 15000);
      const info = await r.info();
      expect(info.result).toEqual({ exc_type: 'RuntimeError', exc_message: ['DB busy'], exc_module: 'builtins' });
      expect(info.traceback).toMatch(/Retry in 60s/);
      expect((await r.children())?.map((c) => c.id)).toEqual([r.id]);
      await expect(r.get({ timeout: 300 })).rejects.toThrow(TaskTimeoutError);
    });

    it('Python reads the RETRY row NestJS stores as RETRY with the exception rebuilt', async () => {
      const id = uniqueName('retry');
      await store.store({
        taskId: id,
        status: 'RETRY',
        result: { exc_type: 'RuntimeError', exc_message: ['DB busy'], exc_module: 'builtins' },
        traceback: 'Traceback (most recent call last):\nRetry in 10s\n',
        children: [[[id, null], null]],
      });
      await expect(py({ op: 'meta', id })).resolves.toMatchObject({
        status: 'RETRY',
        info: { exc_class: 'builtins.RuntimeError', exc_args: ["'DB busy'"] },
        traceback: 'Traceback (most recent call last):\nRetry in 10s\n',
        children: [{ raw: [[id, null], null] }],
      });
    });
  });

  describe('children', () => {
    it("NestJS reads the children of a Python chain's first step as a handle on the second step", async () => {
      const { ids } = await py<{ ids: string[] }>({ op: 'chain', task: 'tasks.sortWords', queue: env.pyQueue, args: [['b a', false], [true]] });
      const first = producer.asyncResult<string>(ids[0]);
      await expect(first.get({ timeout: 30000 })).resolves.toBe('a b');
      const children = (await first.children()) as AsyncResult<string>[];
      expect(children.map((c) => c.id)).toEqual([ids[1]]);
      await expect(children[0].get({ timeout: 30000 })).resolves.toBe('A B');
    });

    it('Python reads the children NestJS stores as AsyncResult and GroupResult handles', async () => {
      const id = uniqueName('parent');
      await store.store({ taskId: id, status: 'SUCCESS', result: 1, traceback: null, children: [[['c1', null], null], [['g1', null], [[['m1', null], null], [['m2', null], null]]]] });
      await expect(py({ op: 'meta', id })).resolves.toMatchObject({
        status: 'SUCCESS',
        children: [
          { id: 'c1', type: 'AsyncResult', parent: null, members: [] },
          { id: 'g1', type: 'GroupResult', parent: null, members: ['m1', 'm2'] },
        ],
      });
    });
  });

  describe('resultExtended and expiry', () => {
    const extended = { name: 'tasks.sortWords', args: ['b a', false], kwargs: {}, worker: 'celery@nest-host', retries: 0, queue: 'celery', parentId: null, groupId: null };

    it('Python get() reads SUCCESS and FAILURE rows that carry the extended columns; NestJS reads them back', async () => {
      const ok = uniqueName('ext');
      const bad = uniqueName('ext');
      await store.store({ taskId: ok, status: 'SUCCESS', result: 'a b', traceback: null, children: [], extended });
      await store.store({ taskId: bad, status: 'FAILURE', result: { exc_type: 'ValueError', exc_message: ['nope'], exc_module: 'builtins' }, traceback: 'Traceback\n', children: [], extended });
      await expect(py({ op: 'get', id: ok })).resolves.toMatchObject({ status: 'SUCCESS', result: { json: 'a b' } });
      await expect(py({ op: 'get', id: bad })).resolves.toMatchObject({ status: 'FAILURE', exc_class: 'builtins.ValueError', exc_args: ["'nope'"] });
      expect(await producer.asyncResult(ok).extended()).toEqual(extended);
    });

    it('a Python worker writes into the altered table; NestJS reads its rows with no extended fields', async () => {
      const r = await producer.sendTask('tasks.sortWords', { queue: env.pyQueue, args: ['d c', false] });
      await expect(r.get({ timeout: 30000 })).resolves.toBe('c d');
      expect(await r.extended()).toBeNull();
    });

    it('a row stored with expiresSeconds is gone for Python once it has expired', async () => {
      const id = uniqueName('ttl');
      const stored = Date.now();
      await store.store({ taskId: id, status: 'SUCCESS', result: 'short-lived', traceback: null, children: [], expiresSeconds: 4 });
      await expect(py({ op: 'get', id })).resolves.toMatchObject({ status: 'SUCCESS', result: { json: 'short-lived' } });
      expect(Date.now() - stored).toBeLessThan(4000); // Python read it before it expired
      await new Promise((resolve) => setTimeout(resolve, stored + 4200 - Date.now()));
      await expect(py({ op: 'meta', id })).resolves.toMatchObject({ status: 'PENDING' });
    });
  });
});
