import { Logger } from '@nestjs/common';
import type { ResultToStore } from '../../lib/protocol/result-row';

/** States as a worker stores them (wire spec §3.1, §8.5 b, §8.6), for the result-state tests. */
export const startedState = (taskId: string, hostname = 'celery@worker-host'): ResultToStore => ({
  taskId,
  status: 'STARTED',
  result: { pid: 4242, hostname },
  traceback: null,
  children: [],
});

/** A RETRY as `self.retry(countdown=10, exc=RuntimeError('DB busy'))` stores it: its children list the task itself. */
export const retryState = (taskId: string): ResultToStore => ({
  taskId,
  status: 'RETRY',
  result: { exc_type: 'RuntimeError', exc_message: ['DB busy'], exc_module: 'builtins' },
  traceback: "Traceback (most recent call last):\ncelery.exceptions.Retry: Retry in 10s: RuntimeError('DB busy')\n",
  children: [[[taskId, null], null]],
});

export const successState = (taskId: string, result: unknown = 'done'): ResultToStore => ({ taskId, status: 'SUCCESS', result, traceback: null, children: [] });

/** A logger that says nothing (the writer's warnings are expected in these tests). */
export function quietLogger(): Logger {
  const logger = new Logger('test');
  for (const level of ['log', 'warn', 'error'] as const) jest.spyOn(logger, level).mockImplementation(() => undefined);
  return logger;
}
