import type { TaskMeta } from '../../../lib/protocol/result-row';
import type { PublishStep } from '../../../lib/protocol/canvas-apply';
import type { DecodedTask } from '../../../lib/protocol/task-message';
import { ChordCounter, ChordCounterStore, MemoryChordStore } from '../../../lib/worker/chord-counter';

const body = { task: 't.body', args: [], kwargs: {}, options: { task_id: 'body-1', reply_to: 'x' }, subtask_type: null, immutable: false };

function header(index: number, size = 3, extra: Partial<DecodedTask> = {}): DecodedTask {
  return {
    id: `h-${index}`,
    task: 't.h',
    group: 'g-1',
    groupIndex: index,
    rootId: `h-${index}`,
    headers: { nestjs_chord_size: size },
    embed: { callbacks: null, errbacks: null, chain: null, chord: body },
    ...extra,
  } as unknown as DecodedTask;
}

function harness(store: ChordCounterStore = new MemoryChordStore()) {
  const results = new Map<string, TaskMeta>();
  const published: PublishStep[] = [];
  let failPublish = false;
  const reads: string[][] = [];
  const counter = new ChordCounter(store, {
    getTaskMetas: async (ids) => {
      reads.push([...ids]);
      return ids.map((id) => results.get(id) ?? ({ taskId: id, status: 'PENDING', result: null } as TaskMeta));
    },
    publishCanvas: async (steps) => {
      if (failPublish) throw new Error('broker down');
      published.push(...steps);
    },
    storeDurably: async (r) => {
      results.set(r.taskId, { taskId: r.taskId, status: r.status, result: r.result } as TaskMeta);
      return { kind: 'stored' };
    },
    logger: { log: () => undefined, warn: () => undefined, error: () => undefined },
  });
  const succeed = (i: number, value: unknown) => results.set(`h-${i}`, { taskId: `h-${i}`, status: 'SUCCESS', result: value } as TaskMeta);
  return { counter, results, published, reads, succeed, setFailPublish: (v: boolean) => (failPublish = v) };
}

describe('ChordCounter (counter-mode chords, fakes)', () => {
  it('only the header task that completes the set sends the body, with the values in header order, after one read of the results', async () => {
    const h = harness();
    [10, 20, 30].forEach((v, i) => h.succeed(i, v));
    await h.counter.partDone(header(2));
    await h.counter.partDone(header(0));
    expect(h.published).toEqual([]);
    expect(h.reads).toEqual([]);
    await h.counter.partDone(header(1));
    expect(h.published).toHaveLength(1);
    expect(h.published[0].spec).toMatchObject({ task: 't.body', id: 'body-1', args: [[10, 20, 30]], parentId: 'h-1' });
    expect(h.reads).toEqual([['h-0', 'h-1', 'h-2']]);
    expect(h.published[0].spec.headers).toBeUndefined();
  });

  it('two header tasks that both see the set complete (concurrent finishers, a duplicate delivery): one body', async () => {
    const h = harness();
    [1, 2, 3].forEach((v, i) => h.succeed(i, v));
    await Promise.all([h.counter.partDone(header(0)), h.counter.partDone(header(1)), h.counter.partDone(header(2))]);
    await h.counter.partDone(header(1)); // a duplicate delivery of a header task
    await h.counter.partDone(header(2));
    expect(h.published).toHaveLength(1);
  });

  it('the finisher died after its claim, before the body went out: its redelivered copy sends it; once sent, never again', async () => {
    const h = harness();
    [1, 2, 3].forEach((v, i) => h.succeed(i, v));
    await h.counter.partDone(header(0));
    await h.counter.partDone(header(1));
    h.setFailPublish(true);
    await expect(h.counter.partDone(header(2))).rejects.toThrow('broker down');
    h.setFailPublish(false);
    await h.counter.partDone(header(0)); // another header task does not take the claim over
    expect(h.published).toEqual([]);
    await h.counter.partDone(header(2)); // the redelivered finisher
    expect(h.published).toHaveLength(1);
    // it may have sent the body before it died: this copy is marked, so a worker that finds the body's SUCCESS does not run it again
    expect(h.published[0].spec.headers).toEqual({ nestjs_celery_maybe_duplicate: true });
    await h.counter.partDone(header(2));
    expect(h.published).toHaveLength(1);
  });

  it('a header result that was never stored (ignored result) fails the chord naming it, rather than waiting for ever', async () => {
    const h = harness();
    h.succeed(0, 1);
    h.succeed(2, 3);
    for (const i of [0, 1, 2]) await h.counter.partDone(header(i));
    expect(h.published).toEqual([]);
    expect(h.results.get('body-1')).toMatchObject({ status: 'FAILURE', result: { exc_type: 'ChordError', exc_message: [expect.stringContaining("RuntimeError('no result stored for header task h-1")] } });
  });

  it('a task without the counter header is not a chord part; a malformed one is logged and left', async () => {
    const h = harness();
    await h.counter.partDone(header(0, 3, { headers: {} }));
    await h.counter.partDone(header(5, 3));
    expect(h.published).toEqual([]);
    expect(h.reads).toEqual([]);
  });
});
