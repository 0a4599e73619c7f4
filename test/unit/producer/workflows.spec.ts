import { Test, TestingModule } from '@nestjs/testing';
import { Broker, CeleryModule, Delivery, GroupResult, MemoryBroker, Producer, ResultStore, Signature } from '../../../lib';
import { decodeTaskMessage } from '../../../lib/protocol/task-message';
import { TasksService } from '../../../sample/tasks.service';

/**
 * The producer's workflow API on the embedded broker and result store: what it publishes (read
 * from a queue no worker consumes) and what its handles report. Running a workflow needs the
 * worker side (continuing chains, chord_unlock): see test/interop/workflows.interop.spec.ts.
 */
describe('Producer workflows (memory://)', () => {
  const QUEUE = 'wf_only_read_here';
  let moduleRef: TestingModule;
  let producer: Producer;
  let broker: MemoryBroker;

  beforeEach(async () => {
    moduleRef = await Test.createTestingModule({ imports: [CeleryModule.forRoot({})], providers: [TasksService] }).compile();
    await moduleRef.init();
    producer = moduleRef.get(Producer);
    broker = moduleRef.get(Broker) as MemoryBroker;
  });

  afterEach(async () => {
    await moduleRef.close();
  });

  async function drain(queue = QUEUE) {
    const got: Delivery[] = [];
    const handle = await broker.consume(queue, 100, (d) => {
      got.push(d);
      d.ack();
    });
    await new Promise((r) => setImmediate(r));
    await handle.cancel();
    return got.map((d) => ({ routingKey: d.routingKey, priority: d.priority, task: decodeTaskMessage(d) }));
  }

  it('typed signatures: the compiler checks partial args against the method; by name for any task', () => {
    const s = producer.signature(TasksService, 'add', [2], { queue: QUEUE });
    expect(s.toDict()).toEqual({ task: 'tasks.add', args: [2], kwargs: {}, options: { queue: QUEUE }, subtask_type: null, immutable: false });
    // compile-time checks only (tsc runs on the tests)
    const neverCalled = () => {
      // @ts-expect-error a string is not a number
      producer.signature(TasksService, 'add', ['2']);
      // @ts-expect-error add has two parameters
      producer.signature(TasksService, 'add', [1, 2, 3]);
      // @ts-expect-error no such method
      producer.signature(TasksService, 'nope');
    };
    expect(typeof neverCalled).toBe('function');
    expect(() => producer.signature(TasksService, 'nope' as never)).toThrow('TasksService.nope');
    const byName = producer.signatureByName('tasks.tsum', [], { kwargs: { k: 1 }, countdown: 2 }).si();
    expect(byName.toDict()).toMatchObject({ task: 'tasks.tsum', kwargs: { k: 1 }, options: { countdown: 2 }, immutable: true });
  });

  it('chain: one message for the first step with the rest reversed in embed.chain; the handle is the last step, parents in order', async () => {
    const errback = producer.signatureByName('tasks.onError', [], { queue: QUEUE });
    const result = await producer.chain(
      producer.signature(TasksService, 'add', [2, 2], { queue: QUEUE }).linkError(errback),
      producer.signature(TasksService, 'add', [4], { queue: QUEUE }),
      producer.signatureByName<number>('tasks.tsum', [], { queue: QUEUE }).si(),
    );
    const [m, ...more] = await drain();
    expect(more).toHaveLength(0);
    expect(m.task).toMatchObject({ task: 'tasks.add', args: [2, 2], rootId: m.task.id, parentId: null });
    expect(m.task.headers.argsrepr).toBe('(2, 2)');
    const chain = m.task.embed.chain as { task: string; options: { task_id: string } }[];
    expect(chain.map((s) => s.task)).toEqual(['tasks.tsum', 'tasks.add']);
    expect(result.id).toBe(chain[0].options.task_id);
    expect(result.parent?.id).toBe(chain[1].options.task_id);
    expect(result.parent?.parent?.id).toBe(m.task.id);
    expect((m.task.embed.errbacks as { task: string }[])[0].task).toBe('tasks.onError');
    const typed: number = await Promise.resolve(0 as Awaited<ReturnType<typeof result.get>>);
    expect(typed).toBe(0);
  });

  it('group: each member with the group id and its index; GroupResult in order with ready / completedCount / get', async () => {
    const group = await producer.group([producer.signature(TasksService, 'add', [1, 1], { queue: QUEUE }), producer.signature(TasksService, 'add', [2, 2], { queue: QUEUE }), producer.signatureByName('tasks.x', [], { queue: QUEUE })], { groupId: 'my-group' });
    expect(group).toBeInstanceOf(GroupResult);
    const sent = await drain();
    expect(sent.map((s) => [s.task.group, s.task.groupIndex, s.task.id])).toEqual(group.results.map((r, i) => ['my-group', i, r.id]));
    const store = moduleRef.get(ResultStore);
    expect(await group.ready()).toBe(false);
    await store.store({ taskId: group.results[1].id, status: 'SUCCESS', result: 4, children: [] });
    await store.store({ taskId: group.results[0].id, status: 'SUCCESS', result: 2, children: [] });
    expect(await group.completedCount()).toBe(2);
    expect(await group.ready()).toBe(false);
    await store.store({ taskId: group.results[2].id, status: 'FAILURE', result: { exc_type: 'ValueError', exc_message: ['no'], exc_module: 'builtins' }, children: [] });
    expect(await group.ready()).toBe(true);
    expect(await group.failed()).toBe(true);
    expect(await group.get({ propagate: false, timeout: 1000 })).toEqual([2, 4, { exc_type: 'ValueError', exc_message: ['no'], exc_module: 'builtins' }]);
    await expect(group.get({ timeout: 1000 })).rejects.toMatchObject({ excType: 'ValueError' });
  });

  it('group get() waits for members in order and keeps that order whatever order they finish in', async () => {
    const group = await producer.group(producer.signatureByName('a', [], { queue: QUEUE }), producer.signatureByName('b', [], { queue: QUEUE }));
    const store = moduleRef.get(ResultStore);
    const values = group.get({ timeout: 5000, interval: 10 });
    await store.store({ taskId: group.results[1].id, status: 'SUCCESS', result: 'b', children: [] });
    await new Promise((r) => setTimeout(r, 30));
    await store.store({ taskId: group.results[0].id, status: 'SUCCESS', result: 'a', children: [] });
    await expect(values).resolves.toEqual(['a', 'b']);
    await expect((await producer.group(producer.signatureByName('c', [], { queue: QUEUE }))).get({ timeout: 50 })).rejects.toThrow(/50/);
  });

  it("chord: chord_unlock first on the body's queue (countdown 1 s, no priority, ignore_result), then the header with embed.chord", async () => {
    const body = producer.signatureByName<number>('tasks.tsum', [], { queue: QUEUE });
    const result = await producer.chord([producer.signature(TasksService, 'add', [1, 2], { queue: QUEUE }), producer.signature(TasksService, 'add', [3, 4], { queue: QUEUE })], body);
    const [unlock, ...header] = await drain();
    expect(unlock.routingKey).toBe(QUEUE);
    expect(unlock.priority).toBeUndefined();
    expect(unlock.task).toMatchObject({ task: 'celery.chord_unlock', ignoreResult: true });
    expect(unlock.task.eta).toBeGreaterThan(Date.now() * 1000);
    const [groupId, bodyDict] = unlock.task.args as [string, { options: Record<string, unknown> }];
    expect(bodyDict.options).toMatchObject({ task_id: result.id, queue: QUEUE, group_id: groupId });
    expect(unlock.task.kwargs).toEqual({ interval: null, max_retries: null, result: header.map((h) => [[h.task.id, null], null]) });
    expect(header.map((h) => [h.task.group, h.task.groupIndex, h.task.embed.chord])).toEqual([[groupId, 0, bodyDict], [groupId, 1, bodyDict]]);
    // the caller's signature is unchanged (it can be sent again, with new ids)
    expect(body.options).toEqual({ queue: QUEUE });
  });

  it('a group followed by a task in a chain is sent as a chord', async () => {
    const group = new Signature('celery.group', [], { tasks: [producer.signatureByName('a', [], { queue: QUEUE }), producer.signatureByName('b', [], { queue: QUEUE })] }, {}, 'group');
    const result = await producer.chain(group, producer.signatureByName('tasks.tsum', [], { queue: QUEUE }));
    const sent = await drain();
    expect(sent.map((s) => s.task.task)).toEqual(['celery.chord_unlock', 'a', 'b']);
    expect((sent[0].task.args[1] as { options: { task_id: string } }).options.task_id).toBe(result.id);
  });
});
