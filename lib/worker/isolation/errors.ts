/**
 * What an isolated run can end with besides the task's own value or error. Each error names its
 * Python class with `excType` / `excModule` / `excMessage`, which `toExceptionInfo`
 * (lib/protocol/exceptions.ts) writes into the FAILURE row as they are.
 */

/**
 * The hard time limit passed and the thread running the task was terminated: Celery's
 * `billiard.exceptions.TimeLimitExceeded(<hard limit in seconds>)`.
 */
export class TimeLimitExceeded extends Error {
  readonly excType = 'TimeLimitExceeded';
  readonly excModule = 'billiard.exceptions';
  readonly excMessage: unknown[];

  constructor(readonly seconds: number) {
    super(`TimeLimitExceeded(${seconds},)`);
    this.name = 'TimeLimitExceeded';
    this.excMessage = [seconds];
  }
}

/**
 * The soft time limit passed: the task's AbortSignal fired with this as its reason. Thrown by
 * `signal.throwIfAborted()`; uncaught (or as the `cause` of an AbortError that escapes the task)
 * the run ends with it. Celery raises `SoftTimeLimitExceeded()` (no arguments) in the task.
 */
export class SoftTimeLimitExceeded extends Error {
  readonly excType = 'SoftTimeLimitExceeded';
  readonly excModule = 'celery.exceptions';
  readonly excMessage: unknown[] = [];

  constructor() {
    super('SoftTimeLimitExceeded()');
    this.name = 'SoftTimeLimitExceeded';
  }
}

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
