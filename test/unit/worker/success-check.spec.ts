import { checksFirst } from '../../../lib/worker/celery.worker';
import type { ResultToStore } from '../../../lib/protocol/result-row';
import type { TaskState } from '../../../lib/protocol/states';
import { markMaybeDuplicate, MAYBE_DUPLICATE_HEADER } from '../../../lib/protocol/task-message';
import { outgoingOf } from '../../../lib/worker/held-eta';
import type { Delivery } from '../../../lib/broker/broker.interface';

const row = (status: TaskState): ResultToStore => ({ taskId: 't', status, result: null, traceback: null, children: [] });

describe('worker.successCheck: when the stored state is read before a write', () => {
  it.each([
    // mode, status, may be a second copy, reads
    ['auto', 'SUCCESS', false, false],
    ['auto', 'SUCCESS', true, true],
    ['auto', 'FAILURE', false, true],
    ['auto', 'REVOKED', false, true],
    ['auto', 'RETRY', false, true],
    ['always', 'SUCCESS', false, true],
    ['always', 'FAILURE', false, true],
    ['redelivered', 'SUCCESS', false, false],
    ['redelivered', 'FAILURE', false, false],
    ['redelivered', 'FAILURE', true, true],
  ] as const)('%s, a %s, second copy %s: read %s', (mode, status, dup, reads) => {
    expect(checksFirst(mode, row(status), dup)).toBe(reads);
  });
});

describe('the maybe-duplicate mark', () => {
  it('marks a task message (protocol v2: a task header) and leaves anything else as it is', () => {
    const task = { task: 'tasks.add', id: 'a' };
    expect(markMaybeDuplicate(task)).toEqual({ task: 'tasks.add', id: 'a', [MAYBE_DUPLICATE_HEADER]: true });
    expect(task).not.toHaveProperty(MAYBE_DUPLICATE_HEADER);
    const event = { hostname: 'x' };
    expect(markMaybeDuplicate(event)).toBe(event);
    const marked = markMaybeDuplicate(task);
    expect(markMaybeDuplicate(marked)).toBe(marked);
  });

  it('marks the copy of a held ETA message that the worker moves before the consumer timeout', () => {
    const delivery = { headers: { task: 'tasks.add', id: 'a', eta: '2030-01-01T00:00:00+00:00' }, body: Buffer.from('[]'), correlationId: 'a' } as unknown as Delivery;
    const copy = outgoingOf(delivery);
    expect(copy.headers).toMatchObject({ task: 'tasks.add', id: 'a', [MAYBE_DUPLICATE_HEADER]: true });
    expect(delivery.headers).not.toHaveProperty(MAYBE_DUPLICATE_HEADER);
  });
});
