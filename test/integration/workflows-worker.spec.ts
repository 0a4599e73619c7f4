import { Injectable } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import type { Client } from 'cassandra-driver';
import { randomUUID } from 'node:crypto';
import { Broker, CeleryModule, Producer, ResultStore, Task, TaskContext, TaskFailure } from '../../lib';
import { encodeTaskMessage, TaskEmbed } from '../../lib/protocol/task-message';
import { TasksService } from '../../sample/tasks.service';
import { eventually, KEYSPACE, rawCassandra, realOptions, removeQueueAndTable, uniqueName } from '../support/real-services';

const errbackCalls: { failedId: string; parentId: string | null }[] = [];

@Injectable()
class Errbacks {
  @Task('it.onError')
  onError(failedId: string, @TaskContext() ctx: TaskContext): string {
    errbackCalls.push({ failedId, parentId: ctx.parentId });
    return `handled ${failedId}`;
  }

  @Task('it.readFailure')
  readFailure(_failedId: string, @TaskContext() ctx: TaskContext): Promise<TaskFailure | null> {
    return ctx.failure();
  }
}

interface Row {
  status: string;
  result: unknown;
  children: unknown;
}

/** A signature dict as Python sends it (wire spec §6.1). */
const sig = (task: string, args: unknown[], taskId: string, options: Record<string, unknown> = {}) => ({
  task,
  args,
  kwargs: {},
  options: { task_id: taskId, reply_to: 'py-oid', ...options },
  subtask_type: null,
  immutable: false,
});

/**
 * The worker side of workflows on RabbitMQ and Cassandra: chains published as Python's
 * `chain(...).apply_async()` does (embed.chain, frozen ids), failure propagation with errbacks,
 * and `celery.chord_unlock` completing a chord from the result table.
 */
describe('workflows in the worker on RabbitMQ and Cassandra', () => {
  const queue = uniqueName('it_flow');
  const table = uniqueName('it_flow');
  let app: TestingModule;
  let cql: Client;
  let broker: Broker;

  async function rows(taskId: string): Promise<Row[]> {
    const rs = await cql.execute(`SELECT status, result, children FROM ${KEYSPACE}.${table} WHERE task_id = ?`, [taskId], { prepare: true });
    return rs.rows.reverse().map((r) => ({ status: r.status as string, result: JSON.parse(String(r.result)), children: JSON.parse(String(r.children)) }));
  }

  async function send(task: string, id: string, args: unknown[], kwargs: Record<string, unknown> = {}, embed: Partial<TaskEmbed> = {}, extra: { countdown?: number; ignoreResult?: boolean } = {}) {
    const m = encodeTaskMessage({ task, id, args, kwargs, embed, ...extra, replyTo: 'py-oid' }, { nowMicros: Date.now() * 1000, origin: 'gen1@python-client' });
    await broker.publish(queue, { headers: m.amqpHeaders, properties: m.properties, body: m.body });
  }

  beforeAll(async () => {
    cql = await rawCassandra();
    app = await Test.createTestingModule({
      imports: [CeleryModule.forRoot(realOptions(queue, table, { worker: { concurrency: 4, hostname: 'it@workflows' } }))],
      providers: [TasksService, Errbacks],
    }).compile();
    await app.init();
    broker = app.get(Broker);
  }, 60000);

  afterAll(async () => {
    await app?.close();
    await cql?.shutdown();
    await removeQueueAndTable(queue, table);
  }, 60000);

  it('a three-step chain: every step SUCCESS, each row lists the next step as its child, the last step holds the final value', async () => {
    const [a, b, c] = [randomUUID(), randomUUID(), randomUUID()];
    await send('tasks.add', a, [1, 2], {}, { chain: [sig('tasks.add', [100], c), sig('tasks.add', [10], b)] });
    await expect(app.get(Producer).asyncResult(c).get({ timeout: 15000 })).resolves.toBe(113);
    expect(await rows(a)).toEqual([{ status: 'SUCCESS', result: 3, children: [[[b, null], null]] }]);
    expect(await rows(b)).toEqual([{ status: 'SUCCESS', result: 13, children: [[[c, null], null]] }]);
    expect(await rows(c)).toEqual([{ status: 'SUCCESS', result: 113, children: [] }]);
  }, 30000);

  it('a failing middle step: FAILURE rows on it and on the remaining steps\' frozen ids, the errback called once with its id', async () => {
    const [a, b, c, d, e] = [randomUUID(), randomUUID(), randomUUID(), randomUUID(), randomUUID()];
    const onError = { task: 'it.onError', args: [], kwargs: {}, options: { task_id: e }, subtask_type: null, immutable: false };
    await send('tasks.add', a, [1, 2], {}, { chain: [sig('tasks.add', [2], d), sig('tasks.add', [1], c), sig('tasks.fail', [], b, { link_error: [onError] })] });
    await expect(app.get(Producer).asyncResult(e).get({ timeout: 15000 })).resolves.toBe(`handled ${b}`);
    const failure = (await rows(b))[0];
    expect(failure).toMatchObject({ status: 'FAILURE', result: { exc_type: 'ValueError', exc_message: ['3'] }, children: [] });
    expect(await rows(c)).toEqual([failure]);
    expect(await rows(d)).toEqual([failure]);
    expect(await rows(a)).toEqual([{ status: 'SUCCESS', result: 3, children: [[[b, null], null]] }]);
    await new Promise((r) => setTimeout(r, 500));
    expect(errbackCalls.filter((x) => x.failedId === b)).toEqual([{ failedId: b, parentId: b }]);
  }, 30000);

  it("an errback our worker sends reads the failed task's request and exception from its context (FAILURE row in Cassandra, request from the header)", async () => {
    const [a, b, c, e] = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
    const onError = { task: 'it.readFailure', args: [], kwargs: {}, options: { task_id: e }, subtask_type: null, immutable: false };
    await send('tasks.add', a, [1, 2], {}, { chain: [sig('tasks.add', [1], c), sig('tasks.fail', [], b, { link_error: [onError] })] });
    await expect(app.get(Producer).asyncResult(e).get({ timeout: 15000 })).resolves.toEqual({
      request: { id: b, name: 'tasks.fail', args: [3], kwargs: {} },
      exception: { type: 'ValueError', module: 'builtins', message: ['3'] },
      traceback: expect.stringContaining('RangeError: 3'),
    });
    // a step that did not fail reads null: its parent's row is a SUCCESS
    const [f, g] = [randomUUID(), randomUUID()];
    await send('tasks.add', f, [1, 2], {}, { chain: [sig('it.readFailure', [], g)] });
    await expect(app.get(Producer).asyncResult(g).get({ timeout: 15000 })).resolves.toBeNull();
  }, 30000);

  it('celery.chord_unlock as Python publishes it: retries until the header is stored, then the body gets the values in header order', async () => {
    const group = randomUUID();
    const headers: string[] = [randomUUID(), randomUUID(), randomUUID()];
    const body = sig('tasks.tsum', [], randomUUID(), { group_id: group });
    const store = app.get(ResultStore);
    const many = jest.spyOn(store, 'getTaskMetas');
    const one = jest.spyOn(store, 'getTaskMeta');
    // Python sends chord_unlock first (countdown 1 s), then the header tasks with embed.chord = body;
    // here the last header task comes 1.5 s late, so chord_unlock has to look again
    await send('celery.chord_unlock', randomUUID(), [group, body], { interval: 0.2, max_retries: null, result: headers.map((h) => [[h, null], null]) }, {}, { countdown: 1, ignoreResult: true });
    await Promise.all(headers.slice(0, 2).map((h, i) => send('tasks.add', h, [i, 10 * i], {}, { chord: body })));
    await new Promise((r) => setTimeout(r, 1500));
    await send('tasks.add', headers[2], [2, 20], {}, { chord: body });
    await expect(app.get(Producer).asyncResult(body.options.task_id).get({ timeout: 15000 })).resolves.toBe(0 + 11 + 22);
    expect(await rows(body.options.task_id)).toEqual([{ status: 'SUCCESS', result: 33, children: [] }]);
    // every look read the whole header in one query (Cassandra: one IN query), never task by task
    expect(many.mock.calls.length).toBeGreaterThanOrEqual(2);
    for (const call of many.mock.calls) expect(call[0]).toEqual(headers);
    expect(one.mock.calls.filter(([id]) => headers.includes(id))).toEqual([]);
    many.mockRestore();
    one.mockRestore();
  }, 30000);

  it('a chord with a failed header task: ChordError on the body id, the body never runs', async () => {
    const group = randomUUID();
    const [ok, bad] = [randomUUID(), randomUUID()];
    const body = sig('tasks.tsum', [], randomUUID(), { group_id: group });
    await send('tasks.add', ok, [1, 1], {}, { chord: body });
    await send('tasks.fail', bad, ['no'], {}, { chord: body });
    await send('celery.chord_unlock', randomUUID(), [group, body], { interval: 0.2, max_retries: null, result: [ok, bad].map((h) => [[h, null], null]) }, {}, { ignoreResult: true });
    await eventually(async () => (await rows(body.options.task_id)).length > 0, 15000);
    expect(await rows(body.options.task_id)).toEqual([
      { status: 'FAILURE', result: { exc_type: 'ChordError', exc_message: ["ValueError('no')"], exc_module: 'celery.exceptions' }, children: [] },
    ]);
  }, 30000);
});

/**
 * The errback context with `resultExtended`: an errback sent as a Python worker sends it (no header
 * of ours, only the failed task's id as argument and parent_id) reads the failed request's name,
 * args and kwargs from the FAILURE row's extended columns.
 */
describe('the errback context on a resultExtended table', () => {
  const queue = uniqueName('it_ebx');
  const table = uniqueName('it_ebx');
  let app: TestingModule;

  beforeAll(async () => {
    app = await Test.createTestingModule({ imports: [CeleryModule.forRoot(realOptions(queue, table, { resultExtended: true }))], providers: [TasksService, Errbacks] }).compile();
    await app.init();
  }, 60000);

  afterAll(async () => {
    await app?.close();
    await removeQueueAndTable(queue, table);
  }, 60000);

  it('reads the request from the row, the exception and traceback too', async () => {
    const broker = app.get(Broker);
    const publish = async (task: string, id: string, args: unknown[], kwargs: Record<string, unknown>, parentId?: string) => {
      const m = encodeTaskMessage({ task, id, args, kwargs, ...(parentId ? { parentId, rootId: parentId } : {}) }, { nowMicros: Date.now() * 1000, origin: 'gen1@python-worker' });
      await broker.publish(queue, { headers: m.amqpHeaders, properties: m.properties, body: m.body });
    };
    const [failed, errback] = [randomUUID(), randomUUID()];
    await publish('tasks.fail', failed, [], { message: 'no disk' });
    await expect(app.get(Producer).asyncResult(failed).get({ timeout: 15000 })).rejects.toMatchObject({ excType: 'ValueError' });
    await publish('it.readFailure', errback, [failed], {}, failed); // Celery's _call_task_errbacks: (task_id,), parent_id=task_id
    await expect(app.get(Producer).asyncResult(errback).get({ timeout: 15000 })).resolves.toEqual({
      request: { id: failed, name: 'tasks.fail', args: [], kwargs: { message: 'no disk' } },
      exception: { type: 'ValueError', module: 'builtins', message: ['no disk'] },
      traceback: expect.stringContaining('RangeError: no disk'),
    });
  }, 30000);
});
