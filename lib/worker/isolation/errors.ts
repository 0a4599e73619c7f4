/**
 * What an isolated run can end with besides the task's own value or error. Each error names its
 * Python class with `excType` / `excModule` / `excMessage`, which `toExceptionInfo`
 * (lib/protocol/exceptions.ts) writes into the FAILURE row as they are. The time limits are the
 * worker's own classes, so an isolated task fails exactly as an in-process one.
 */
export { SoftTimeLimitExceeded, TimeLimitExceeded } from '../../errors/task-exceptions';

/**
 * The thread running the task died without the pool asking it to (it called `process.exit()`,
 * threw from a callback nobody awaited, or ran out of its `resourceLimits`): Celery's
 * `billiard.exceptions.WorkerLostError`.
 */
export class WorkerLostError extends Error {
  readonly excType = 'WorkerLostError';
  readonly excModule = 'billiard.exceptions';
  readonly excMessage: unknown[];

  constructor(detail: string) {
    super(`Worker exited prematurely: ${detail}`);
    this.name = 'WorkerLostError';
    this.excMessage = [this.message];
  }
}

/**
 * The pool was closed while the run was queued or running. Not a task failure: the worker is
 * shutting down, so the message should go back to the queue rather than to a FAILURE row.
 */
export class IsolatedPoolClosedError extends Error {
  constructor() {
    super('The isolated task pool was closed before the task finished');
    this.name = 'IsolatedPoolClosedError';
  }
}
