import { errors, types } from 'cassandra-driver';
import { GroupResult, InvalidResultError, MemoryBroker, MemoryResultStore, ResultStore, TaskTimeoutError } from '../../../lib';
import type { ResolvedCassandraConfig } from '../../../lib/config/resolved-config';
import { normalizeCeleryOptions } from '../../../lib/config/normalize-options';
import { encodeResultMessage, extendedResultOf, ResultToStore, TaskMeta } from '../../../lib/protocol/result-row';
import { AsyncResult } from '../../../lib/results/async-result';
import { CassandraResultStore } from '../../../lib/results/cassandra.result-store';
import { DisabledResultStore } from '../../../lib/results/disabled.result-store';
import { ResultNotifier } from '../../../lib/results/result-notifier';
import { ResultWriter } from '../../../lib/results/result-writer';
import { classifyStoreError } from '../../../lib/results/store-errors';
import { quietLogger, retryState, startedState, successState } from '../../support/result-states';

/**
 * Every state a worker stores (STARTED, RETRY, SUCCESS, FAILURE, REVOKED), per-row expiry,
 * forget, children and resultExtended, on the memory store, the writer, the notifier and
 * AsyncResult. The Cassandra statements are checked against a fake client here and against the
 * real Cassandra in test/integration/result-states.spec.ts.
 */

const started = (taskId: string) => startedState(taskId);
const retry = retryState;
const success = successState;
const quietWriter = (store: ResultStore): ResultWriter => new ResultWriter(store, quietLogger(), () => false);

const flush = () => new Promise((resolve) => setImmediate(resolve));

describe('ResultWriter: non-final states', () => {
  it('never lets a STARTED replace a stored SUCCESS, even when the worker does not ask for the check (successCheck redelivered)', async () => {
    const store = new MemoryResultStore();
    await store.store(success('t1'));
    const outcome = await quietWriter(store).write(started('t1'), false);
    expect(outcome).toMatchObject({ kind: 'kept', meta: { status: 'SUCCESS', result: 'done' } });
    expect(await store.getTaskMeta('t1')).toMatchObject({ status: 'SUCCESS', result: 'done' });
  });

  it('never lets a RETRY replace a stored SUCCESS either', async () => {
    const store = new MemoryResultStore();
    await store.store(success('t1'));
    await expect(quietWriter(store).write(retry('t1'), false)).resolves.toMatchObject({ kind: 'kept' });
    expect((await store.getTaskMeta('t1')).status).toBe('SUCCESS');
  });

  it('STARTED, then RETRY, then SUCCESS: each later state replaces the one before', async () => {
    const store = new MemoryResultStore();
    const writer = quietWriter(store);
    await writer.write(started('t2'), false);
    expect(await store.getTaskMeta('t2')).toMatchObject({ status: 'STARTED', result: { pid: 4242, hostname: 'celery@worker-host' }, traceback: null, children: [] });
    await writer.write(retry('t2'), false);
    expect(await store.getTaskMeta('t2')).toMatchObject({ status: 'RETRY', result: { exc_type: 'RuntimeError' }, children: [[['t2', null], null]] });
    await writer.write(started('t2'), false);
    await expect(writer.write(success('t2', 3), false)).resolves.toEqual({ kind: 'stored' });
    expect(await store.getTaskMeta('t2')).toMatchObject({ status: 'SUCCESS', result: 3 });
  });

  it('a RETRY the store refuses for good is not recorded and not turned into a FAILURE (the task is retrying, not failed)', async () => {
    const store = new MemoryResultStore({ maxResultBytes: 4096 });
    const writer = quietWriter(store);
    await writer.write(started('t3'), false);
    const huge = { ...retry('t3'), traceback: 'x'.repeat(10_000) };
    const outcome = await writer.write(huge, false);
    expect(outcome).toMatchObject({ kind: 'unstorable', stored: null, reason: expect.stringMatching(/over worker\.maxResultBytes/) });
    expect((await store.getTaskMeta('t3')).status).toBe('STARTED');
  });

  it('the FAILURE stored in place of an unstorable SUCCESS keeps its expiry and extended fields', async () => {
    // a store that refuses SUCCESS rows for good (as Cassandra refuses an invalid value)
    const store = new (class extends MemoryResultStore {
      override async store(result: ResultToStore): Promise<void> {
        if (result.status === 'SUCCESS') throw new errors.ResponseError(types.responseErrorCodes.invalid, 'some column value is invalid');
        return super.store(result);
      }
    })({ resultExtended: true });
    const extended = { name: 'tasks.add', args: [1, 2], kwargs: {}, worker: 'celery@w', retries: 0, queue: 'celery' };
    const outcome = await quietWriter(store).write({ ...success('t4'), expiresSeconds: 60, extended }, false);
    expect(outcome).toMatchObject({ kind: 'unstorable', stored: { status: 'FAILURE', expiresSeconds: 60, extended } });
    expect(await store.getTaskMeta('t4')).toMatchObject({ status: 'FAILURE', extended });
  });

  it('the FAILURE in place of a row made too large by its args leaves args and kwargs out, so it is stored', async () => {
    const store = new MemoryResultStore({ maxResultBytes: 4096, resultExtended: true });
    const extended = { name: 'tasks.add', args: ['x'.repeat(10_000)], kwargs: { k: 1 }, worker: 'celery@w', retries: 0, queue: 'celery' };
    const outcome = await quietWriter(store).write({ ...success('t6'), extended }, false);
    expect(outcome).toMatchObject({ kind: 'unstorable', stored: { status: 'FAILURE' } });
    expect(await store.getTaskMeta('t6')).toMatchObject({ status: 'FAILURE', extended: { name: 'tasks.add', args: null, kwargs: null, worker: 'celery@w' } });
  });

  it('an invalid expiresSeconds is refused at once (InvalidResultError, never retried), and the FAILURE saying so is stored without it', async () => {
    const store = new MemoryResultStore();
    const outcome = await quietWriter(store).write({ ...success('t5'), expiresSeconds: 1.5 }, false);
    expect(outcome).toMatchObject({ kind: 'unstorable', reason: expect.stringContaining('task t5: expiresSeconds must be an integer from 0 (never expires) to 630720000, got 1.5') });
    expect(await store.getTaskMeta('t5')).toMatchObject({ status: 'FAILURE', result: { exc_type: 'RuntimeError' } });
    expect(classifyStoreError(new InvalidResultError('x'))).toMatchObject({ kind: 'permanent' });
  });
});

describe('MemoryResultStore: expiry, forget, extended', () => {
  afterEach(() => jest.useRealTimers());

  it('a row stored with expiresSeconds reads as PENDING once that many seconds have passed', async () => {
    jest.useFakeTimers({ now: new Date('2026-01-01T00:00:00Z') });
    const store = new MemoryResultStore();
    await store.store({ ...success('e1'), expiresSeconds: 60 });
    await store.store(success('e2'));
    jest.setSystemTime(new Date('2026-01-01T00:00:59Z'));
    expect((await store.getTaskMeta('e1')).status).toBe('SUCCESS');
    jest.setSystemTime(new Date('2026-01-01T00:01:00Z'));
    expect((await store.getTaskMeta('e1')).status).toBe('PENDING');
    expect(store.allRows().map((r) => r.taskId)).toEqual(['e2']);
    jest.setSystemTime(new Date('2030-01-01T00:00:00Z'));
    expect((await store.getTaskMeta('e2')).status).toBe('SUCCESS');
  });

  it('expiresSeconds 0 never expires', async () => {
    jest.useFakeTimers({ now: new Date('2026-01-01T00:00:00Z') });
    const store = new MemoryResultStore();
    await store.store({ ...success('e3'), expiresSeconds: 0 });
    jest.setSystemTime(new Date('2036-01-01T00:00:00Z'));
    expect((await store.getTaskMeta('e3')).status).toBe('SUCCESS');
  });

  it('forget() deletes the row: PENDING again, and its bytes are released', async () => {
    const store = new MemoryResultStore();
    await store.store(success('f1'));
    await store.forget('f1');
    expect(await store.getTaskMeta('f1')).toMatchObject({ status: 'PENDING', result: null });
    expect(store.bytes).toBe(0);
    await expect(store.forget('never-stored')).resolves.toBeUndefined();
  });

  it('keeps the extended fields only with resultExtended on', async () => {
    const extended = { name: 'tasks.add', args: [1, 2], kwargs: { z: 3 }, worker: 'celery@w', retries: 1, queue: 'celery', parentId: 'p1', groupId: null };
    const on = new MemoryResultStore({ resultExtended: true });
    const off = new MemoryResultStore();
    await on.store({ ...success('x1'), extended });
    await off.store({ ...success('x1'), extended });
    expect((await on.getTaskMeta('x1')).extended).toEqual(extended);
    expect((await off.getTaskMeta('x1')).extended).toBeUndefined();
  });
});

describe('AsyncResult: every state', () => {
  it('get() waits through STARTED and RETRY (state and info report them) and resolves on SUCCESS', async () => {
    const store = new MemoryResultStore();
    const r = new AsyncResult<number>('s1', store, 10);
    await store.store(started('s1'));
    const got = r.get({ timeout: 5000 });
    let settled = false;
    void got.then(() => (settled = true), () => (settled = true));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(settled).toBe(false);
    expect(await r.state()).toBe('STARTED');
    expect((await r.info()).result).toEqual({ pid: 4242, hostname: 'celery@worker-host' });
    expect(await r.ready()).toBe(false);
    await store.store(retry('s1'));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(settled).toBe(false);
    expect(await r.state()).toBe('RETRY');
    expect((await r.info()).result).toEqual({ exc_type: 'RuntimeError', exc_message: ['DB busy'], exc_module: 'builtins' });
    await store.store(success('s1', 7));
    await expect(got).resolves.toBe(7);
  });

  it('a pushed STARTED neither resolves get() nor makes it read the store; the pushed SUCCESS resolves it', async () => {
    const broker = new MemoryBroker();
    const notifier = await ResultNotifier.start(broker);
    const store = new MemoryResultStore();
    const reads = jest.spyOn(store, 'getTaskMeta');
    const r = new AsyncResult<string>('p1', store, 10, notifier, Date.now() + 60_000);
    const got = r.get({ timeout: 5000, interval: 1000 });
    let settled = false;
    void got.then(() => (settled = true), () => (settled = true));
    broker.publishReply(notifier.queue, { correlationId: 'p1', body: encodeResultMessage(started('p1')) });
    await flush();
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(settled).toBe(false);
    expect(reads).not.toHaveBeenCalled();
    broker.publishReply(notifier.queue, { correlationId: 'p1', body: encodeResultMessage(success('p1', 'pushed')) });
    await expect(got).resolves.toBe('pushed');
    expect(reads).not.toHaveBeenCalled();
  });

  it('a late STARTED push never replaces a kept SUCCESS push', async () => {
    const broker = new MemoryBroker();
    const notifier = await ResultNotifier.start(broker);
    broker.publishReply(notifier.queue, { correlationId: 'p2', body: encodeResultMessage(success('p2', 'first')) });
    broker.publishReply(notifier.queue, { correlationId: 'p2', body: encodeResultMessage(started('p2')) });
    await flush();
    expect(notifier.latest('p2')).toMatchObject({ status: 'SUCCESS', result: 'first' });
  });

  it('forget() deletes the stored row and the kept push: PENDING again, and get() waits', async () => {
    const broker = new MemoryBroker();
    const notifier = await ResultNotifier.start(broker);
    const store = new MemoryResultStore();
    const r = new AsyncResult<string>('g1', store, 10, notifier, Date.now() + 60_000);
    await store.store(success('g1', 'kept'));
    broker.publishReply(notifier.queue, { correlationId: 'g1', body: encodeResultMessage(success('g1', 'kept')) });
    await flush();
    await expect(r.get({ timeout: 1000 })).resolves.toBe('kept');
    await r.forget();
    expect(await r.state()).toBe('PENDING');
    expect(notifier.latest('g1')).toBeUndefined();
    await expect(r.get({ timeout: 100 })).rejects.toThrow(TaskTimeoutError);
  });

  it('children() reads the children column into handles; a group into a GroupResult; null when there is no row', async () => {
    const store = new MemoryResultStore();
    const r = new AsyncResult('c1', store, 10);
    expect(await r.children()).toBeNull();
    await store.store({ ...success('c1'), children: [[['next', null], null], [['g', null], [[['m1', null], null], [['m2', [['m1', null], null]], null]]]] });
    await store.store(success('next', 'n'));
    await store.store(success('m1', 1));
    await store.store(success('m2', 2));
    const children = (await r.children()) as [AsyncResult, GroupResult];
    expect(children[0]).toBeInstanceOf(AsyncResult);
    expect(children[0].id).toBe('next');
    expect(children[0].parent).toBeNull();
    await expect(children[0].get({ timeout: 1000 })).resolves.toBe('n');
    expect(children[1]).toBeInstanceOf(GroupResult);
    expect(children[1].results.map((m) => m.id)).toEqual(['m1', 'm2']);
    expect((children[1].results[1] as AsyncResult).parent?.id).toBe('m1');
    await expect(children[1].get({ timeout: 1000 })).resolves.toEqual([1, 2]);
  });

  it('children() is [] for a task that sent none, null for a row that says null (REVOKED without a request)', async () => {
    const store = new MemoryResultStore();
    await store.store(success('c2'));
    await store.store({ taskId: 'c3', status: 'REVOKED', result: { exc_type: 'TaskRevokedError', exc_message: ['revoked'], exc_module: 'celery.exceptions' }, traceback: null, children: null });
    expect(await new AsyncResult('c2', store).children()).toEqual([]);
    expect(await new AsyncResult('c3', store).children()).toBeNull();
  });

  it('forget() forgets the known parent first, as Celery does', async () => {
    const store = new MemoryResultStore();
    await store.store({ ...success('c4'), children: [[['c5', [['c4', null], null]], null]] });
    await store.store(success('c5'));
    const [child] = (await new AsyncResult('c4', store).children()) as AsyncResult[];
    expect(child.parent?.id).toBe('c4');
    await child.forget();
    expect((await store.getTaskMeta('c5')).status).toBe('PENDING');
    expect((await store.getTaskMeta('c4')).status).toBe('PENDING');
  });

  it('extended() returns the stored fields, null without them', async () => {
    const store = new MemoryResultStore({ resultExtended: true });
    const extended = { name: 'tasks.add', args: [1, 2], kwargs: {}, worker: 'celery@w', retries: 0, queue: 'celery', parentId: null, groupId: null };
    await store.store({ ...success('x2'), extended });
    await store.store(success('x3'));
    expect(await new AsyncResult('x2', store).extended()).toEqual(extended);
    expect(await new AsyncResult('x3', store).extended()).toBeNull();
    expect(await new AsyncResult('none', store).extended()).toBeNull();
  });
});

describe('CassandraResultStore statements', () => {
  const configOf = (entryTtl?: number) =>
    normalizeCeleryOptions({
      resultBackend: 'cassandra://',
      cassandra: { contactPoints: ['127.0.0.1'], localDataCenter: 'dc1', keyspace: 'ks', table: 'results', ...(entryTtl ? { entryTtl } : {}) },
    }).cassandra as ResolvedCassandraConfig;

  function storeWith(config: ResolvedCassandraConfig, extendedColumns = false) {
    const store = new CassandraResultStore(config, undefined, undefined, { resultExtended: extendedColumns });
    const calls: { cql: string; params: unknown[] }[] = [];
    const fake = {
      execute: async (cql: string, params: unknown[]) => {
        calls.push({ cql, params });
        return cql.startsWith('SELECT') ? { rows: [] } : {};
      },
    };
    Object.assign(store as unknown as Record<string, unknown>, { client: fake, extendedColumns });
    return { store, calls };
  }

  it("binds the row's expiresSeconds as its TTL, over cassandra.entryTtl; entryTtl otherwise; no TTL clause without either", async () => {
    const withTtl = storeWith(configOf(86400));
    await withTtl.store.store({ ...success('t'), expiresSeconds: 30 });
    await withTtl.store.store(success('t'));
    await withTtl.store.store({ ...success('t'), expiresSeconds: 0 });
    expect(withTtl.calls.map((c) => [c.cql.endsWith(' USING TTL ?'), c.params[6]])).toEqual([
      [true, 30],
      [true, 86400],
      [true, 0],
    ]);
    const none = storeWith(configOf());
    await none.store.store(success('t'));
    expect(none.calls[0].cql).toBe('INSERT INTO ks.results (task_id, status, result, date_done, traceback, children) VALUES (?, ?, ?, ?, ?, ?)');
    expect(none.calls[0].params).toHaveLength(6);
  });

  it('forget() is DELETE FROM <table> WHERE task_id=? (Celery 5.7 _forget)', async () => {
    const { store, calls } = storeWith(configOf());
    await store.forget('t-del');
    expect(calls).toEqual([{ cql: 'DELETE FROM ks.results WHERE task_id=?', params: ['t-del'] }]);
  });

  it('with resultExtended writes and reads the extended columns; args and kwargs as JSON text', async () => {
    const { store, calls } = storeWith(configOf(), true);
    await store.store({ ...success('t'), extended: { name: 'tasks.add', args: [1, 2], kwargs: { a: 'b' }, worker: 'celery@w', retries: 2, queue: 'celery' } });
    expect(calls[0].cql).toBe(
      'INSERT INTO ks.results (task_id, status, result, date_done, traceback, children, name, args, kwargs, worker, retries, queue, parent_id, group_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
    );
    expect(calls[0].params.slice(6).map((p) => (Buffer.isBuffer(p) ? p.toString() : p))).toEqual(['tasks.add', '[1, 2]', '{"a": "b"}', 'celery@w', 2, 'celery', null, null]);
    await store.getTaskMeta('t');
    expect(calls[1].cql).toBe('SELECT task_id, status, result, date_done, traceback, children, name, args, kwargs, worker, retries, queue, parent_id, group_id FROM ks.results WHERE task_id=? LIMIT 1');
  });

  it('reads a row without extended values (written by Python) with no extended fields', async () => {
    const { store } = storeWith(configOf(), true);
    const fake = (store as unknown as { client: { execute: unknown } }).client;
    fake.execute = async () => ({
      rows: [{ task_id: 't', status: 'SUCCESS', result: Buffer.from('1'), date_done: new Date(), traceback: Buffer.from('null'), children: Buffer.from('[]'), name: null, args: null, kwargs: null, worker: null, retries: null, queue: null, parent_id: null, group_id: null }],
    });
    const meta: TaskMeta = await store.getTaskMeta('t');
    expect(meta.extended).toBeUndefined();
  });

  it('refuses an expiresSeconds Cassandra would refuse, before any write', async () => {
    const { store, calls } = storeWith(configOf());
    await expect(store.store({ ...success('t'), expiresSeconds: 630_720_001 })).rejects.toThrow(InvalidResultError);
    await expect(store.store({ ...success('t'), expiresSeconds: -1 })).rejects.toThrow('task t: expiresSeconds must be an integer from 0 (never expires) to 630720000, got -1');
    expect(calls).toEqual([]);
  });

  it('a STARTED row is written like Celery\'s track_started row (wire spec §8.6)', async () => {
    const { store, calls } = storeWith(configOf());
    await store.store(started('t'));
    const [id, status, result, , traceback, children] = calls[0].params as [string, string, Buffer, Date, Buffer, Buffer];
    expect([id, status, result.toString(), traceback.toString(), children.toString()]).toEqual(['t', 'STARTED', '{"pid": 4242, "hostname": "celery@worker-host"}', 'null', '[]']);
  });
});

describe('extendedResultOf', () => {
  it("takes Celery's result_extended fields from the request: name, args, kwargs, the worker's hostname, retries, the delivery's routing key, parent and group", () => {
    const task = { task: 'tasks.add', args: [2, 3], kwargs: { z: 1 }, retries: 2, parentId: 'p-1', group: 'g-1' };
    expect(extendedResultOf(task, 'celery@w1', 'celery')).toEqual({ name: 'tasks.add', args: [2, 3], kwargs: { z: 1 }, worker: 'celery@w1', retries: 2, queue: 'celery', parentId: 'p-1', groupId: 'g-1' });
  });
});

describe('DisabledResultStore.forget', () => {
  it('says there is no result backend to forget from', async () => {
    await expect(new DisabledResultStore().forget('t')).rejects.toThrow(/no result backend is configured, so there are no results to forget/);
  });
});

describe('resultExtended option', () => {
  it('is off by default, on with resultExtended or result_extended, and must be a boolean', () => {
    expect(normalizeCeleryOptions({}).resultExtended).toBe(false);
    expect(normalizeCeleryOptions({ resultExtended: true }).resultExtended).toBe(true);
    expect(normalizeCeleryOptions({ result_extended: true }).resultExtended).toBe(true);
    expect(() => normalizeCeleryOptions({ result_extended: 'yes' } as never)).toThrow(/result_extended.*must be true or false/);
  });
});
