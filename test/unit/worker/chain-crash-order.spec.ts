import { Logger } from '@nestjs/common';
import type { Delivery } from '../../../lib/broker/broker.interface';
import { TaskRegistry } from '../../../lib/discovery/task.registry';
import { encodeTaskMessage, EncodedTaskMessage } from '../../../lib/protocol/task-message';
import { MemoryResultStore } from '../../../lib/results/memory.result-store';
import { MAYBE_DUPLICATE_HEADER, TaskRequest, RequestContext, StoreOutcome } from '../../../lib/worker/task-request';
import type { ResultToStore } from '../../../lib/protocol/result-row';

/**
 * The order a chain step's worker keeps — run, publish the next step (confirmed), store the
 * SUCCESS, acknowledge — and what a crash between any two of those does. A fake broker (a FIFO
 * queue with RabbitMQ's requeue-at-the-head for a dead worker's unacknowledged message) and a
 * durable store (a memory store that outlives the worker) record every event; a "crash" is the
 * process dying right after an event: nothing it would do next happens, and its unacknowledged
 * message comes back marked redelivered. The worker restarts and the queue drains.
 */

/** A step of a chain of adds: `chain(add(1, 2), add(10), add(100))` → 3, 13, 113. */
const STEPS = [
  { id: 'c-1', args: [1, 2], value: 3 },
  { id: 'c-2', args: [10], value: 13 },
  { id: 'c-3', args: [100], value: 113 },
];

function sig(task: string, args: unknown[], taskId: string) {
  return { task, args, kwargs: {}, options: { task_id: taskId }, subtask_type: null, immutable: false };
}

interface Queued {
  message: EncodedTaskMessage;
  redelivered: boolean;
}

/** What outlives a worker: the broker's queue and the result store. */
class World {
  readonly queue: Queued[] = [];
  readonly store = new MemoryResultStore();
  /** Every event, in order: `run c-1`, `publish c-2 confirmed`, `store c-1 SUCCESS`, `ack c-1`. */
  readonly events: string[] = [];
  /** Task id -> times its function ran. */
  readonly runs = new Map<string, number>();
  /** Every message published, in order. */
  readonly published: EncodedTaskMessage[] = [];

  publish(message: EncodedTaskMessage): void {
    this.published.push(message);
    this.queue.push({ message, redelivered: false });
  }
}

class Crash extends Error {}

/**
 * One worker process handling one message at a time. `crashAfter(event)` true: the process dies
 * right after that event (the call that made it never returns; the message it held is requeued
 * at the head of the queue, redelivered). Resolves 'crashed' or 'drained'.
 */
async function runWorker(world: World, crashAfter: (event: string, index: number) => boolean = () => false): Promise<'crashed' | 'drained'> {
  let crashed = false;
  let dead!: () => void;
  const death = new Promise<void>((resolve) => (dead = resolve));
  /** Records an event; true when the process dies right after it. */
  const record = (text: string): boolean => {
    world.events.push(text);
    if (crashAfter(text, world.events.length - 1)) {
      crashed = true;
      dead();
    }
    return crashed;
  };
  /** Records an event; after the crash event, the caller never continues. */
  const event = (text: string): Promise<void> => (crashed || record(text) ? new Promise(() => undefined) : Promise.resolve());
  /** The task id of the message being handled. */
  let current = '';
  const registry = new TaskRegistry();
  registry.register({
    name: 'tasks.add',
    target: 'Tasks.add',
    queue: null,
    ignoreResult: false,
    params: { names: ['x', 'y'], restIndex: null },
    handler: (x: unknown, y: unknown) => {
      world.runs.set(current, (world.runs.get(current) ?? 0) + 1);
      if (record(`run ${current}`)) throw new Crash('the process died');
      return (x as number) + (y as number);
    },
  });
  const logger = { log: () => undefined, warn: () => undefined, error: () => undefined } as unknown as Logger;
  const ctx: RequestContext = {
    registry,
    store: world.store,
    logger,
    accept: ['application/json'],
    maxMessageBytes: 1 << 20,
    holdUntil: async () => 'run',
    withSlot: (fn) => fn(),
    oneAtATime: (_id, fn) => fn(),
    storeDurably: async (result: ResultToStore, checkFirst: boolean): Promise<StoreOutcome> => {
      if (crashed) return new Promise(() => undefined);
      const kept = checkFirst ? await world.store.storeUnlessSucceeded(result) : (await world.store.store(result), null);
      await event(kept ? `kept ${result.taskId} SUCCESS` : `store ${result.taskId} ${result.status}`);
      return kept ? { kind: 'kept', meta: kept } : { kind: 'stored' };
    },
    notify: () => undefined,
    hostname: 'test@host',
    taskDefaults: { timeLimit: null, softTimeLimit: null, ignoreResult: false, storeErrorsEvenIfIgnored: false, trackStarted: false },
    publishRetry: async () => {
      throw new Error('no retries here');
    },
    publishCanvas: async (steps) => {
      for (const { spec } of steps) {
        if (crashed) return new Promise(() => undefined);
        world.publish(encodeTaskMessage(spec, { nowMicros: Date.now() * 1000, origin: 'gen1@test' }));
        await event(`publish ${spec.id} confirmed`);
      }
    },
    origin: 'gen1@test',
    peerCompat: '5.3',
    resultExtended: false,
    rateLimit: async () => true,
    isolatedPool: () => {
      throw new Error('no isolated tasks here');
    },
    contextStorage: () => false,
    track: () => () => undefined,
  };
  while (!crashed) {
    const next = world.queue.shift();
    if (!next) return 'drained';
    const id = (current = String(next.message.headers.id));
    let settled = false;
    const delivery: Delivery = {
      headers: next.message.headers,
      contentType: next.message.properties.contentType,
      contentEncoding: next.message.properties.contentEncoding,
      correlationId: next.message.properties.correlationId,
      body: next.message.body,
      redelivered: next.redelivered,
      exchange: '',
      routingKey: 'celery',
      lost: new AbortController().signal,
      ack: () => {
        if (crashed || settled) return;
        settled = true;
        void event(`ack ${id}`);
      },
      reject: (requeue: boolean) => {
        if (crashed || settled) return;
        settled = true;
        void event(`reject ${id}${requeue ? ' requeue' : ''}`);
        if (requeue) world.queue.unshift({ message: next.message, redelivered: true });
      },
    };
    await Promise.race([new TaskRequest(delivery, ctx).handle(), death]);
    // the process died holding this message unacknowledged: RabbitMQ requeues it at the head, redelivered
    if (crashed && !settled) world.queue.unshift({ message: next.message, redelivered: true });
  }
  return 'crashed';
}

/** Publishes step 1 as Python's `chain(...).apply_async()` does: embed.chain = the rest, reversed. */
function sendChain(world: World): void {
  const [first, ...rest] = STEPS;
  world.publish(
    encodeTaskMessage(
      { task: 'tasks.add', id: first.id, args: first.args, embed: { chain: rest.map((s) => sig('tasks.add', s.args, s.id)).reverse() } },
      { nowMicros: Date.now() * 1000, origin: 'gen1@python' },
    ),
  );
}

async function valueOf(world: World, id: string): Promise<unknown> {
  const meta = await world.store.getTaskMeta(id);
  return meta.status === 'SUCCESS' ? meta.result : meta.status;
}

describe('a chain step: publish the next step, then store, then acknowledge; a crash between them', () => {
  it('keeps the order: next step confirmed, then the SUCCESS stored, then the ack', async () => {
    const world = new World();
    sendChain(world);
    expect(await runWorker(world)).toBe('drained');
    expect(world.events).toEqual([
      'run c-1',
      'publish c-2 confirmed',
      'store c-1 SUCCESS',
      'ack c-1',
      'run c-2',
      'publish c-3 confirmed',
      'store c-2 SUCCESS',
      'ack c-2',
      'run c-3',
      'store c-3 SUCCESS',
      'ack c-3',
    ]);
    for (const s of STEPS) expect(await valueOf(world, s.id)).toBe(s.value);
    // a first run's messages are Celery's own: no header of ours
    for (const m of world.published) expect(m.headers).not.toHaveProperty(MAYBE_DUPLICATE_HEADER);
  });

  // every point a crash can land at: right after each event of an undisturbed run
  const undisturbed = ['run c-1', 'publish c-2 confirmed', 'store c-1 SUCCESS', 'ack c-1', 'run c-2', 'publish c-3 confirmed', 'store c-2 SUCCESS', 'ack c-2', 'run c-3', 'store c-3 SUCCESS', 'ack c-3'];
  it.each(undisturbed.map((e, i) => [e, i]))('a crash right after "%s": the restarted worker completes the chain; only the step in flight runs twice', async (_event, at) => {
    const world = new World();
    sendChain(world);
    const first = await runWorker(world, (_e, index) => index === at);
    expect(first).toBe('crashed');
    // what was in flight at the crash: the message the dead worker held unacknowledged
    const inFlight = world.queue[0]?.redelivered ? String(world.queue[0].message.headers.id) : null;
    expect(await runWorker(world)).toBe('drained');
    // never a broken chain: every step is stored with its value, the last one included
    for (const s of STEPS) expect(await valueOf(world, s.id)).toBe(s.value);
    // a step runs twice only if it was the one in flight (never a later step published twice)
    const twice = [...world.runs].filter(([, n]) => n > 1).map(([id]) => id);
    expect(twice).toEqual(inFlight !== null && twice.length > 0 ? [inFlight] : []);
    for (const [, n] of world.runs) expect(n).toBeLessThanOrEqual(2);
    expect(world.queue).toEqual([]);
  });

  it('a redelivered step whose SUCCESS is stored is acknowledged without running and without publishing again', async () => {
    const world = new World();
    sendChain(world);
    // dies right after storing c-1's SUCCESS, before the ack: c-2 is already confirmed
    expect(await runWorker(world, (e) => e === 'store c-1 SUCCESS')).toBe('crashed');
    expect(world.queue.map((q) => [q.message.headers.id, q.redelivered])).toEqual([
      ['c-1', true],
      ['c-2', false],
    ]);
    expect(await runWorker(world)).toBe('drained');
    expect(world.runs.get('c-1')).toBe(1);
    expect(world.events.filter((e) => e === 'publish c-2 confirmed')).toHaveLength(1);
    expect(await valueOf(world, 'c-3')).toBe(113);
  });

  it('the next step published twice (a crash after its confirm, before the SUCCESS): the second copy finds the first copy\'s SUCCESS and is acknowledged without running or publishing', async () => {
    const world = new World();
    sendChain(world);
    expect(await runWorker(world, (e) => e === 'publish c-2 confirmed')).toBe('crashed');
    expect(await runWorker(world)).toBe('drained');
    const restart = world.events.slice(world.events.indexOf('publish c-2 confirmed') + 1);
    expect(restart).toEqual([
      'run c-1', // redelivered, no SUCCESS stored: runs again and publishes c-2 again
      'publish c-2 confirmed',
      'store c-1 SUCCESS',
      'ack c-1',
      'run c-2', // the first copy
      'publish c-3 confirmed',
      'store c-2 SUCCESS',
      'ack c-2',
      'ack c-2', // the second copy: its SUCCESS is stored, not run, c-3 not published again
      'run c-3',
      'store c-3 SUCCESS',
      'ack c-3',
    ]);
    // the second copy of c-2 is the one marked: it may have been published before
    const copies = world.published.filter((m) => m.headers.id === 'c-2');
    expect(copies.map((m) => m.headers[MAYBE_DUPLICATE_HEADER])).toEqual([undefined, true]);
    expect(world.published.filter((m) => m.headers.id === 'c-3')).toHaveLength(1);
    expect(await valueOf(world, 'c-3')).toBe(113);
  });
});
