import { MemoryBroker, MemoryResultStore } from '../../../lib';
import { encodeResultMessage } from '../../../lib/protocol/result-row';
import { AsyncResult } from '../../../lib/results/async-result';
import { ResultNotifier } from '../../../lib/results/result-notifier';

const MB = 1024 * 1024;

const push = (broker: MemoryBroker, queue: string, taskId: string, result: unknown) =>
  broker.publishReply(queue, { correlationId: taskId, body: encodeResultMessage({ taskId, status: 'SUCCESS', result, traceback: null, children: [] }) });

const flush = () => new Promise((resolve) => setImmediate(resolve));

describe('ResultNotifier', () => {
  it('keeps the push for a task a live AsyncResult waits for, however many other results arrive after it', async () => {
    const broker = new MemoryBroker();
    const notifier = await ResultNotifier.start(broker);
    const handle = {};
    notifier.expect('mine', handle);
    push(broker, notifier.queue, 'mine', 'kept');
    push(broker, notifier.queue, 'other', 'evicted');
    for (let i = 0; i < 10_001; i++) push(broker, notifier.queue, `later-${i}`, i);
    await flush();
    expect(notifier.latest('mine')).toMatchObject({ status: 'SUCCESS', result: 'kept' });
    // A push nobody in this process waits for is only kept among the latest few thousand.
    expect(notifier.latest('other')).toBeUndefined();
    expect(notifier.latest('later-10000')).toMatchObject({ result: 10_000 });
    expect(handle).toBeDefined();
  });

  it('keeps 1,000 pushed results of 1 MB each within its byte budget (32 MiB by default), dropping the oldest first', async () => {
    const broker = new MemoryBroker();
    const notifier = await ResultNotifier.start(broker);
    const value = 'x'.repeat(MB);
    for (let i = 0; i < 1000; i++) {
      push(broker, notifier.queue, `t${i}`, value);
      if (i % 50 === 0) await flush();
    }
    await flush();
    expect(notifier.bytes).toBeLessThanOrEqual(32 * MB);
    let kept = 0;
    for (let i = 0; i < 1000; i++) if (notifier.latest(`t${i}`)) kept++;
    expect(kept).toBeGreaterThan(25);
    expect(kept).toBeLessThanOrEqual(32);
    expect(notifier.latest('t999')).toMatchObject({ result: value });
    expect(notifier.latest('t0')).toBeUndefined();
  });

  it('drops pushes nobody waits for before those a live AsyncResult waits for; an expected push is dropped only when they alone exceed the budget', async () => {
    const broker = new MemoryBroker();
    const notifier = await ResultNotifier.start(broker, { maxBytes: 8 * MB });
    const handles: object[] = [];
    const value = 'x'.repeat(MB);
    for (let i = 0; i < 4; i++) {
      handles.push({});
      notifier.expect(`mine${i}`, handles[i]);
      push(broker, notifier.queue, `mine${i}`, value);
    }
    for (let i = 0; i < 20; i++) push(broker, notifier.queue, `other${i}`, value);
    await flush();
    expect(notifier.bytes).toBeLessThanOrEqual(8 * MB);
    for (let i = 0; i < 4; i++) expect(notifier.latest(`mine${i}`)).toMatchObject({ result: value });
    for (let i = 4; i < 12; i++) {
      handles.push({});
      notifier.expect(`mine${i}`, handles[i]);
      push(broker, notifier.queue, `mine${i}`, value);
    }
    await flush();
    expect(notifier.bytes).toBeLessThanOrEqual(8 * MB);
    expect(notifier.latest('mine0')).toBeUndefined();
    expect(notifier.latest('mine11')).toMatchObject({ result: value });
    expect(handles).toHaveLength(12);
  });

  it('an AsyncResult whose push was dropped reads its result from the store', async () => {
    const broker = new MemoryBroker();
    const store = new MemoryResultStore();
    const notifier = await ResultNotifier.start(broker, { maxBytes: 4 * MB });
    const result = new AsyncResult<string>('evicted', store, 10, notifier, Date.now() + 60_000);
    await store.store({ taskId: 'evicted', status: 'SUCCESS', result: 'from the store', traceback: null, children: [] });
    push(broker, notifier.queue, 'evicted', 'from the push');
    const later = Array.from({ length: 8 }, (_, i) => new AsyncResult(`later${i}`, store, 10, notifier, Date.now() + 60_000));
    for (const other of later) push(broker, notifier.queue, other.id, 'x'.repeat(MB));
    await flush();
    expect(notifier.latest('evicted')).toBeUndefined();
    expect(later).toHaveLength(8);
    await expect(result.get({ timeout: 2000 })).resolves.toBe('from the store');
  });

  it('does not keep a push larger than the whole budget, but still hands it to a waiting get()', async () => {
    const broker = new MemoryBroker();
    const notifier = await ResultNotifier.start(broker, { maxBytes: MB });
    const seen: unknown[] = [];
    notifier.subscribe('huge', (meta) => seen.push(meta.result));
    push(broker, notifier.queue, 'huge', 'x'.repeat(2 * MB));
    await flush();
    expect(seen).toHaveLength(1);
    expect(notifier.latest('huge')).toBeUndefined();
    expect(notifier.bytes).toBe(0);
  });

  it('forgets the bytes of an expected push once its last AsyncResult handle is released', async () => {
    const broker = new MemoryBroker();
    const notifier = await ResultNotifier.start(broker);
    notifier.expect('gone', {});
    push(broker, notifier.queue, 'gone', 'x'.repeat(MB));
    await flush();
    expect(notifier.bytes).toBeGreaterThan(MB);
    (notifier as unknown as { release(taskId: string): void }).release('gone');
    expect(notifier.bytes).toBe(0);
    expect(notifier.latest('gone')).toBeUndefined();
  });
});

describe('AsyncResult.get() and routes whose workers push', () => {
  /** A store that never notifies and counts its reads; a task's row appears when `stored` says. */
  function countingStore(stored: Map<string, unknown>) {
    const store = new MemoryResultStore();
    let reads = 0;
    const getTaskMeta = store.getTaskMeta.bind(store);
    Object.assign(store, {
      subscribe: undefined,
      getTaskMeta: async (id: string) => {
        reads++;
        return stored.has(id) ? { taskId: id, status: 'SUCCESS', result: stored.get(id), traceback: null, children: [], dateDone: new Date() } : getTaskMeta(id);
      },
    });
    return { store, reads: () => reads };
  }

  it('does not read the store for a just-sent task of a route whose workers pushed lately: 50 waits of 600 ms cost no read', async () => {
    const broker = new MemoryBroker();
    const notifier = await ResultNotifier.start(broker);
    const { store, reads } = countingStore(new Map());
    // one task on route q1 whose result was pushed: q1's workers push
    const first = new AsyncResult('first', store, 100, notifier, Date.now() + 2000, null, null, 'q1');
    push(broker, notifier.queue, 'first', 1);
    await expect(first.get({ timeout: 1000 })).resolves.toBe(1);
    const waits = Array.from({ length: 50 }, (_, i) => new AsyncResult(`t${i}`, store, 100, notifier, Date.now() + 2000, null, null, 'q1'));
    const gets = waits.map((r) => r.get({ timeout: 5000 }));
    await new Promise((r) => setTimeout(r, 600));
    waits.forEach((r, i) => push(broker, notifier.queue, r.id, i));
    await expect(Promise.all(gets)).resolves.toEqual(waits.map((_, i) => i));
    expect(reads()).toBe(0);
  });

  it('polls as before (every 100 ms, backing off) on a route that has not pushed: a Python worker\'s result is read within the interval', async () => {
    const broker = new MemoryBroker();
    const notifier = await ResultNotifier.start(broker);
    const stored = new Map<string, unknown>();
    const { store, reads } = countingStore(stored);
    const pythonTask = new AsyncResult('py', store, 100, notifier, Date.now() + 2000, null, null, 'py_queue');
    const t0 = Date.now();
    setTimeout(() => stored.set('py', 'from python'), 250);
    await expect(pythonTask.get({ timeout: 5000 })).resolves.toBe('from python');
    expect(Date.now() - t0).toBeLessThan(700);
    expect(reads()).toBeGreaterThanOrEqual(2);
  });

  it('still reads the store as a safety net on a pushing route (a lost push, a Python worker on the same queue): within 2 s', async () => {
    const broker = new MemoryBroker();
    const notifier = await ResultNotifier.start(broker);
    const stored = new Map<string, unknown>();
    const { store } = countingStore(stored);
    const first = new AsyncResult('first', store, 100, notifier, Date.now() + 2000, null, null, 'q2');
    push(broker, notifier.queue, 'first', 1);
    await first.get({ timeout: 1000 });
    const lost = new AsyncResult('lost-push', store, 100, notifier, Date.now() + 2000, null, null, 'q2');
    stored.set('lost-push', 'read');
    const t0 = Date.now();
    await expect(lost.get({ timeout: 5000 })).resolves.toBe('read');
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1900);
    expect(Date.now() - t0).toBeLessThan(2600);
  });
});
