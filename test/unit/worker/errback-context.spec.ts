import { FAILED_REQUEST_HEADER, FAILED_REQUEST_HEADER_MAX, failedTaskIdOf, taskFailureOf, withFailedRequest } from '../../../lib/worker/errback-context';
import type { TaskMeta } from '../../../lib/protocol/result-row';
import type { PublishStep } from '../../../lib/protocol/canvas-apply';

const failure = (extra: Partial<TaskMeta> = {}): TaskMeta => ({
  taskId: 't-1',
  status: 'FAILURE',
  result: { exc_type: 'ValueError', exc_message: ['bad'], exc_module: 'builtins' },
  traceback: 'tb',
  children: [],
  dateDone: new Date(0),
  ...extra,
});
const header = (value: Record<string, unknown>) => ({ [FAILED_REQUEST_HEADER]: JSON.stringify(value) });

describe('errback context', () => {
  it('the failed id is the parent_id Celery sends, else the first argument', () => {
    expect(failedTaskIdOf({ parentId: 'p', args: ['a'] })).toBe('p');
    expect(failedTaskIdOf({ parentId: null, args: ['a'] })).toBe('a');
    expect(failedTaskIdOf({ parentId: null, args: [1] })).toBeNull();
  });

  it("the request from the row's extended columns first, then from our header (only when it names the same task)", () => {
    const extended = { name: 'tasks.x', args: [1], kwargs: { k: 2 }, worker: 'w', retries: 0, queue: 'q' };
    expect(taskFailureOf(failure({ extended }), header({ id: 't-1', name: 'other', args: [9], kwargs: {} }))).toEqual({
      request: { id: 't-1', name: 'tasks.x', args: [1], kwargs: { k: 2 } },
      exception: { type: 'ValueError', module: 'builtins', message: ['bad'] },
      traceback: 'tb',
    });
    expect(taskFailureOf(failure(), header({ id: 't-1', name: 'tasks.y', args: [9], kwargs: {} }))?.request).toEqual({ id: 't-1', name: 'tasks.y', args: [9], kwargs: {} });
    expect(taskFailureOf(failure(), header({ id: 't-2', name: 'tasks.y', args: [9], kwargs: {} }))?.request).toEqual({ id: 't-1', name: null, args: null, kwargs: null });
    expect(taskFailureOf(failure(), { [FAILED_REQUEST_HEADER]: '{not json' })?.request.name).toBeNull();
  });

  it('null unless the row is a FAILURE', () => {
    for (const status of ['SUCCESS', 'PENDING', 'RETRY', 'STARTED', 'REVOKED'] as const) expect(taskFailureOf(failure({ status }), {})).toBeNull();
  });

  it('the header goes on every errback as one JSON string, beside their own headers', () => {
    const step = (id: string, headers?: Record<string, unknown>): PublishStep => ({ spec: { task: 'eb', id, args: ['t-1'], ...(headers ? { headers } : {}) }, route: {} });
    const out = withFailedRequest([step('e-1'), step('e-2', { mine: 1 })], { id: 't-1', task: 'tasks.x', args: [1, 'a'], kwargs: { k: null } });
    expect(out.map((s) => s.spec.headers)).toEqual([
      { [FAILED_REQUEST_HEADER]: '{"id": "t-1", "name": "tasks.x", "args": [1, "a"], "kwargs": {"k": null}}' },
      { mine: 1, [FAILED_REQUEST_HEADER]: '{"id": "t-1", "name": "tasks.x", "args": [1, "a"], "kwargs": {"k": null}}' },
    ]);
    expect(withFailedRequest([], { id: 't-1', task: 'x', args: [], kwargs: {} })).toEqual([]);
  });

  it('large arguments stay out of the header (AMQP sends headers in one frame): the id and the name only', () => {
    const step: PublishStep = { spec: { task: 'eb', id: 'e-1', args: ['t-1'] }, route: {} };
    const [out] = withFailedRequest([step], { id: 't-1', task: 'tasks.x', args: ['x'.repeat(FAILED_REQUEST_HEADER_MAX)], kwargs: {} });
    expect(out.spec.headers).toEqual({ [FAILED_REQUEST_HEADER]: '{"id": "t-1", "name": "tasks.x"}' });
    expect(taskFailureOf(failure(), out.spec.headers as Record<string, unknown>)?.request).toEqual({ id: 't-1', name: 'tasks.x', args: null, kwargs: null });
  });
});
