import { Injectable } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import { Broker, CeleryModule, Producer, ResultStore, Task, TaskContext, TaskFailure } from '../../../lib';
import { fromAmqpFieldValue } from '../../../lib/protocol/amqp-field-table';
import type { ResultToStore } from '../../../lib/protocol/result-row';
import { encodeTaskMessage } from '../../../lib/protocol/task-message';

const REPLY_TO = '0b6c8a7e-3d1f-3c2a-9e4b-7f5d2c1a9e08';
let ran: string[] = [];
let errbacks: { arg: string; parentId: string | null; rootId: string | null; group: string | null }[] = [];
let failures: (TaskFailure | null)[] = [];

@Injectable()
class FlowTasks {
  @Task('w.add')
  add(x: number, y: number, @TaskContext() ctx: TaskContext): number {
    ran.push(ctx.id);
    return x + y;
  }

  @Task('w.fail')
  fail(value: unknown, @TaskContext() ctx: TaskContext): never {
    ran.push(ctx.id);
    throw new RangeError(`cannot take ${JSON.stringify(value)}`);
  }

  @Task('w.tsum')
  tsum(numbers: number[]): number {
    return numbers.reduce((a, b) => a + b, 0);
  }

  @Task('w.onError')
  onError(failedId: string, @TaskContext() ctx: TaskContext): string {
    errbacks.push({ arg: failedId, parentId: ctx.parentId, rootId: ctx.rootId, group: ctx.group });
    return failedId;
  }

  /** An errback that reads the failure it was called for from its context. */
  @Task('w.onErrorCtx')
  async onErrorCtx(_failedId: string, @TaskContext() ctx: TaskContext): Promise<string> {
    failures.push(await ctx.failure());
    return 'seen';
  }
}

/** A signature dict as Python's `Signature.__json__` writes it (wire spec §6.1). */
function sig(task: string, args: unknown[], taskId: string, options: Record<string, unknown> = {}) {
  return { task, args, kwargs: {}, options: { task_id: taskId, reply_to: REPLY_TO, ...options }, subtask_type: null, immutable: false };
}

describe('workflows in the worker (memory transports)', () => {
  let moduleRef: TestingModule;
  let broker: Broker;
  let store: ResultStore;
  let stored: ResultToStore[];
  let events: string[];
  let published: Record<string, unknown>[];
  let failPublishOf: string | null;

  beforeEach(async () => {
    ran = [];
    errbacks = [];
    failures = [];
    failPublishOf = null;
    moduleRef = await Test.createTestingModule({ imports: [CeleryModule.forRoot({ resultPollIntervalMs: 5 })], providers: [FlowTasks] }).compile();
    await moduleRef.init();
    broker = moduleRef.get(Broker);
    store = moduleRef.get(ResultStore);
    stored = [];
    events = [];
    published = [];
    const original = store.store.bind(store);
    jest.spyOn(store, 'store').mockImplementation(async (r: ResultToStore) => {
      stored.push(r);
      events.push(`store ${r.taskId} ${r.status}`);
      return original(r);
    });
    const publish = broker.publish.bind(broker);
    jest.spyOn(broker, 'publish').mockImplementation(async (queue, message, route) => {
      const headers = fromAmqpFieldValue(message.headers) as Record<string, unknown>;
      if (failPublishOf === headers.id) {
        failPublishOf = null;
        throw new Error('broker refused the publish');
      }
      published.push({ ...headers, body: JSON.parse(message.body.toString()) });
      events.push(`publish ${String(headers.id)}`);
      return publish(queue, message, route);
    });
  });

  afterEach(async () => {
    await moduleRef.close();
  });

  /** Publishes step 1 of a chain as Python's `chain(...).apply_async()` does: embed.chain = the rest, reversed. */
  async function sendChain(first: { task: string; args: unknown[]; id: string; errbacks?: unknown[] }, rest: ReturnType<typeof sig>[]): Promise<void> {
    const message = encodeTaskMessage(
      { task: first.task, id: first.id, args: first.args, replyTo: REPLY_TO, embed: { chain: [...rest].reverse(), errbacks: first.errbacks ?? null } },
      { nowMicros: Date.now() * 1000, origin: 'gen1@python' },
    );
    await broker.publish('celery', { headers: message.amqpHeaders, properties: message.properties, body: message.body });
  }

  const rowsOf = (id: string) => stored.filter((r) => r.taskId === id);

  it('continues a chain: each step published with its frozen id, the result prepended, parent and root; rows list the next step as child', async () => {
    await sendChain({ task: 'w.add', args: [1, 2], id: 'c-1' }, [sig('w.add', [10], 'c-2'), sig('w.add', [100], 'c-3')]);
    await expect(moduleRef.get(Producer).asyncResult('c-3').get({ timeout: 3000 })).resolves.toBe(113);
    expect(ran).toEqual(['c-1', 'c-2', 'c-3']);
    expect(rowsOf('c-1')).toEqual([expect.objectContaining({ status: 'SUCCESS', result: 3, children: [[['c-2', null], null]] })]);
    expect(rowsOf('c-2')).toEqual([expect.objectContaining({ status: 'SUCCESS', result: 13, children: [[['c-3', null], null]] })]);
    expect(rowsOf('c-3')).toEqual([expect.objectContaining({ status: 'SUCCESS', result: 113, children: [] })]);
    const step2 = published.find((p) => p.id === 'c-2') as Record<string, unknown>;
    expect(step2).toMatchObject({ task: 'w.add', root_id: 'c-1', parent_id: 'c-1', argsrepr: '(3, 10)' });
    expect(step2.body).toEqual([[3, 10], {}, { callbacks: null, errbacks: null, chain: [sig('w.add', [100], 'c-3')], chord: null }]);
    expect(published.find((p) => p.id === 'c-3')).toMatchObject({ root_id: 'c-1', parent_id: 'c-2' });
    // the next step is confirmed before the SUCCESS row is written
    expect(events.indexOf('publish c-2')).toBeLessThan(events.indexOf('store c-1 SUCCESS'));
    expect(events.indexOf('publish c-3')).toBeLessThan(events.indexOf('store c-2 SUCCESS'));
  });

  it('a next step that cannot be published sends the message back: the step runs again, the chain completes', async () => {
    failPublishOf = 'r-2';
    await sendChain({ task: 'w.add', args: [1, 1], id: 'r-1' }, [sig('w.add', [1], 'r-2')]);
    await expect(moduleRef.get(Producer).asyncResult('r-2').get({ timeout: 3000 })).resolves.toBe(3);
    expect(ran).toEqual(['r-1', 'r-1', 'r-2']);
    expect(rowsOf('r-1').map((r) => r.status)).toEqual(['SUCCESS']);
  });

  it('a failing middle step: FAILURE on it and on every remaining step, errbacks called once with its id, later steps never run', async () => {
    const onError = { task: 'w.onError', args: [], kwargs: {}, options: { task_id: 'f-err' }, subtask_type: null, immutable: false };
    await sendChain({ task: 'w.add', args: [1, 2], id: 'f-1' }, [sig('w.fail', [], 'f-2', { link_error: [onError] }), sig('w.add', [5], 'f-3'), sig('w.add', [6], 'f-4')]);
    const err = await moduleRef.get(Producer).asyncResult('f-4').get({ timeout: 3000 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ excType: 'ValueError', excMessage: ['cannot take 3'] });
    await expect(moduleRef.get(Producer).asyncResult('f-err').get({ timeout: 3000 })).resolves.toBe('f-2');
    expect(ran).toEqual(['f-1', 'f-2']);
    const failures = stored.filter((r) => r.status === 'FAILURE');
    expect(failures.map((r) => r.taskId)).toEqual(['f-2', 'f-4', 'f-3']); // the failing task, then the chain in its list order
    for (const f of failures) {
      expect(f.result).toEqual(failures[0].result);
      expect(f.traceback).toBe(failures[0].traceback);
      expect(f.children).toEqual([]);
    }
    expect(errbacks).toEqual([{ arg: 'f-2', parentId: 'f-2', rootId: 'f-1', group: expect.any(String) }]);
    expect(events.indexOf('publish f-err')).toBeGreaterThan(events.indexOf('store f-3 FAILURE'));
  });

  describe('the errback context (ctx.failure())', () => {
    const onErrorCtx = (id: string) => ({ task: 'w.onErrorCtx', args: [], kwargs: {}, options: { task_id: id }, subtask_type: null, immutable: false });

    it("an errback sent by our worker reads the failed task's request (id, name, args, kwargs) and exception from its context", async () => {
      await sendChain({ task: 'w.add', args: [1, 2], id: 'x-1' }, [sig('w.fail', [], 'x-2', { link_error: [onErrorCtx('x-err')] }), sig('w.add', [5], 'x-3')]);
      await expect(moduleRef.get(Producer).asyncResult('x-err').get({ timeout: 3000 })).resolves.toBe('seen');
      expect(failures).toEqual([
        {
          request: { id: 'x-2', name: 'w.fail', args: [3], kwargs: {} },
          exception: { type: 'ValueError', module: 'builtins', message: ['cannot take 3'] },
          traceback: expect.stringContaining('RangeError: cannot take 3'),
        },
      ]);
      // the header that carries the request travels as one string; the FAILURE row is still what the exception is read from
      expect(typeof published.find((p) => p.id === 'x-err')?.nestjs_celery_failed_request).toBe('string');
    });

    it('an errback sent by Python (no header, a row without the extended columns): the id and the exception from the row, the request fields null', async () => {
      await store.store({ taskId: 'py-failed', status: 'FAILURE', result: { exc_type: 'KeyError', exc_message: ["'k'"], exc_module: 'builtins' }, traceback: 'Traceback (most recent call last):\nKeyError: \'k\'\n', children: [] });
      // Celery's _call_task_errbacks: args (failed id,), parent_id = the failed id
      const message = encodeTaskMessage({ task: 'w.onErrorCtx', id: 'py-err', args: ['py-failed'], parentId: 'py-failed', rootId: 'py-root' }, { nowMicros: Date.now() * 1000, origin: 'gen1@python' });
      await broker.publish('celery', { headers: message.amqpHeaders, properties: message.properties, body: message.body });
      await expect(moduleRef.get(Producer).asyncResult('py-err').get({ timeout: 3000 })).resolves.toBe('seen');
      expect(failures).toEqual([
        {
          request: { id: 'py-failed', name: null, args: null, kwargs: null },
          exception: { type: 'KeyError', module: 'builtins', message: ["'k'"] },
          traceback: "Traceback (most recent call last):\nKeyError: 'k'\n",
        },
      ]);
    });

    it('a task that is no errback (its parent succeeded, or it has none) reads null', async () => {
      await sendChain({ task: 'w.add', args: [1, 2], id: 'n-1' }, [sig('w.onErrorCtx', [], 'n-2')]);
      await expect(moduleRef.get(Producer).asyncResult('n-2').get({ timeout: 3000 })).resolves.toBe('seen');
      const message = encodeTaskMessage({ task: 'w.onErrorCtx', id: 'n-3', args: ['x'] }, { nowMicros: Date.now() * 1000, origin: 'gen1@python' });
      await broker.publish('celery', { headers: message.amqpHeaders, properties: message.properties, body: message.body });
      await expect(moduleRef.get(Producer).asyncResult('n-3').get({ timeout: 3000 })).resolves.toBe('seen');
      expect(failures).toEqual([null, null]);
    });
  });

  it('link callbacks: one alone, several as a group (the row lists the GroupResult), with the result prepended', async () => {
    const message = encodeTaskMessage(
      { task: 'w.add', id: 'l-1', args: [2, 3], embed: { callbacks: [sig('w.add', [1], 'l-a'), sig('w.add', [2], 'l-b')] } },
      { nowMicros: Date.now() * 1000, origin: 'gen1@python' },
    );
    await broker.publish('celery', { headers: message.amqpHeaders, properties: message.properties, body: message.body });
    const producer = moduleRef.get(Producer);
    await expect(producer.asyncResult('l-a').get({ timeout: 3000 })).resolves.toBe(6);
    await expect(producer.asyncResult('l-b').get({ timeout: 3000 })).resolves.toBe(7);
    const row = rowsOf('l-1')[0];
    const groupId = published.find((p) => p.id === 'l-a')?.group as string;
    expect(published.find((p) => p.id === 'l-b')).toMatchObject({ group: groupId, group_index: 1, parent_id: 'l-1', root_id: 'l-1' });
    expect(row.children).toEqual([[[groupId, null], [[['l-a', null], null], [['l-b', null], null]]]]);
  });

  it('a chain step it cannot apply makes the task a FAILURE that names it, on the remaining steps too', async () => {
    await sendChain({ task: 'w.add', args: [1, 2], id: 'b-1' }, [{ task: 'w.add', args: 'oops', kwargs: {}, options: { task_id: 'b-2' }, subtask_type: null, immutable: false } as never]);
    const err = await moduleRef.get(Producer).asyncResult('b-2').get({ timeout: 3000 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ excType: 'InvalidSignatureError', excMessage: ['chain step 0 (w.add): "args" is not a list ("oops")'] });
    expect(rowsOf('b-1').map((r) => r.status)).toEqual(['FAILURE']);
  });

  describe('celery.chord_unlock', () => {
    /** Publishes a message as a Python client would (ours encodes the same bytes; golden tests say so). */
    async function send(task: string, id: string, args: unknown[], kwargs: Record<string, unknown> = {}, extra: { ignoreResult?: boolean; embed?: Record<string, unknown> } = {}) {
      const m = encodeTaskMessage({ task, id, args, kwargs, ignoreResult: extra.ignoreResult, embed: extra.embed }, { nowMicros: Date.now() * 1000, origin: 'gen1@python' });
      await broker.publish('celery', { headers: m.amqpHeaders, properties: m.properties, body: m.body });
    }
    const header = (ids: string[]) => ids.map((id) => [[id, null], null]);

    it('retries every interval until every header result is ready (one read of all of them each time), then sends the body with the values in header order', async () => {
      const metas = jest.spyOn(store, 'getTaskMetas');
      const body = sig('w.tsum', [], 'ch-body', { group_id: 'ch-g' });
      await send('celery.chord_unlock', 'ch-unlock', ['ch-g', body], { interval: 0.05, max_retries: null, result: header(['ch-1', 'ch-2', 'ch-3']), _chord_unlock_exchange_type: 'direct' }, { ignoreResult: true });
      await new Promise((r) => setTimeout(r, 200));
      const chord = { chord: body };
      await send('w.add', 'ch-3', [5, 6], {}, { embed: chord });
      await send('w.add', 'ch-1', [1, 2], {}, { embed: chord });
      await send('w.add', 'ch-2', [3, 4], {}, { embed: chord });
      await expect(moduleRef.get(Producer).asyncResult('ch-body').get({ timeout: 3000 })).resolves.toBe(21);
      expect(metas.mock.calls.length).toBeGreaterThanOrEqual(2);
      for (const call of metas.mock.calls) expect(call[0]).toEqual(['ch-1', 'ch-2', 'ch-3']);
      const bodyMessage = published.find((p) => p.id === 'ch-body') as Record<string, unknown>;
      expect(bodyMessage).toMatchObject({ task: 'w.tsum', parent_id: 'ch-unlock', root_id: 'ch-unlock', group: 'ch-g' });
      expect((bodyMessage.body as unknown[])[0]).toEqual([[3, 7, 11]]);
      const retries = published.filter((p) => p.id === 'ch-unlock' && (p.retries as number) > 0);
      expect(retries.length).toBeGreaterThanOrEqual(1);
      expect(stored.filter((r) => r.taskId === 'ch-unlock')).toEqual([]); // ignore_result: no RETRY rows
    });

    it('a body that cannot be sent is sent at the next look, never dropped', async () => {
      failPublishOf = 'cp-body';
      const body = sig('w.tsum', [], 'cp-body');
      await send('w.add', 'cp-1', [1, 2]);
      await moduleRef.get(Producer).asyncResult('cp-1').get({ timeout: 3000 });
      await send('celery.chord_unlock', 'cp-unlock', ['cp-g', body], { interval: 0.05, result: header(['cp-1']) }, { ignoreResult: true });
      await expect(moduleRef.get(Producer).asyncResult('cp-body').get({ timeout: 3000 })).resolves.toBe(3);
      expect(failPublishOf).toBeNull(); // the first send was refused
    });

    it('a failed header task: ChordError on the body id (and its chain), the body never runs, its errbacks get its id', async () => {
      const onError = { task: 'w.onError', args: [], kwargs: {}, options: { task_id: 'cf-err' }, subtask_type: null, immutable: false };
      const body = sig('w.tsum', [], 'cf-body', { link_error: [onError], chain: [sig('w.add', [1], 'cf-after')] });
      await send('w.add', 'cf-1', [1, 2], {}, { embed: { chord: body } });
      await send('w.fail', 'cf-2', [1], {}, { embed: { chord: body } });
      await send('celery.chord_unlock', 'cf-unlock', ['cf-g', body], { interval: 0.05, max_retries: null, result: header(['cf-1', 'cf-2']) }, { ignoreResult: true });
      const err = await moduleRef.get(Producer).asyncResult('cf-body').get({ timeout: 3000 }).catch((e: unknown) => e);
      expect(err).toMatchObject({ excType: 'ChordError', excModule: 'celery.exceptions', excMessage: ["ValueError('cannot take 1')"] });
      await expect(moduleRef.get(Producer).asyncResult('cf-after').get({ timeout: 3000 }).catch((e: unknown) => e)).resolves.toMatchObject({ excType: 'ChordError' });
      await expect(moduleRef.get(Producer).asyncResult('cf-err').get({ timeout: 3000 })).resolves.toBe('cf-body');
      expect(published.find((p) => p.task === 'w.tsum')).toBeUndefined();
    });

    it('a call it cannot read fails naming what is wrong', async () => {
      await send('celery.chord_unlock', 'cb-unlock', ['cb-g', { task: 'w.tsum', options: { task_id: 'cb-body' } }], { result: 'nope' });
      const err = await moduleRef.get(Producer).asyncResult('cb-unlock').get({ timeout: 3000 }).catch((e: unknown) => e);
      expect(err).toMatchObject({ excType: 'InvalidSignatureError', excMessage: ['celery.chord_unlock cb-g: result is not a list of header result tuples ("nope")'] });
    });
  });
});
