import { toExceptionInfo } from '../protocol/exceptions';
import { saferepr } from '../protocol/saferepr';

/**
 * Celery's own task exceptions, as JavaScript errors that name their Python class (`excType` /
 * `excModule`, read by `toExceptionInfo`): stored in the result table they are the same exception
 * dicts a Python worker writes, and Python's `AsyncResult.get()` raises the same classes.
 */

/** Base of the exceptions below: an Error that carries its Python class and arguments. */
export abstract class CeleryTaskException extends Error {
  abstract readonly excType: string;
  abstract readonly excModule: string;
  /** Python's `exc.args`, stored as `exc_message`. */
  readonly excMessage: unknown[];

  protected constructor(message: string, args: unknown[] = [message]) {
    super(message);
    this.excMessage = args;
  }
}

/** What a retry asks for (Celery's `Task.retry` keyword arguments). */
export interface RetryOptions {
  /** Seconds to wait before the retry runs. Default: the task's `defaultRetryDelay` (180). */
  countdown?: number;
  /** When the retry runs (instead of `countdown`). */
  eta?: Date;
  /** The error that made the task retry: stored in the RETRY row, and the FAILURE once retries run out. */
  exc?: unknown;
  /** Overrides the task's `maxRetries` for this call; `null` retries for ever. */
  maxRetries?: number | null;
  /** Send the retry to this queue (through the default exchange) instead of where the message came from. */
  queue?: string;
  /** Replace the positional / keyword arguments of the retried call. */
  args?: unknown[];
  kwargs?: Record<string, unknown>;
}

/**
 * Thrown by `TaskContext.retry()`: the worker has to publish the retry. Like Celery's
 * `celery.exceptions.Retry`, let it propagate out of the task (a task that catches it and returns
 * normally is a SUCCESS, and no retry is sent).
 */
export class Retry extends CeleryTaskException {
  readonly excType = 'Retry';
  readonly excModule = 'celery.exceptions';

  constructor(readonly options: RetryOptions, message = describeRetry(options)) {
    super(message);
    this.name = 'Retry';
  }
}

/**
 * The text of Celery's `Retry`: `Retry in 0.1s: Exception('flaky')` — when (`in <countdown>s`, or
 * `at <eta>` as Python prints a datetime) and the exception as Python's repr of the class it is
 * stored as. A Python reader sees it as the last line of the RETRY row's traceback.
 */
function describeRetry(options: RetryOptions): string {
  const when = options.eta
    ? `at ${options.eta.toISOString().replace('T', ' ').replace('Z', '000+00:00')}`
    : options.countdown !== undefined ? `in ${options.countdown}s` : 'later';
  if (options.exc === undefined || options.exc === null) return `Retry ${when}`;
  const info = toExceptionInfo(options.exc);
  return `Retry ${when}: ${info.exc_type}(${info.exc_message.map((arg) => saferepr(arg)).join(', ')})`;
}

/** A task asked to retry once more than its `maxRetries` allows, without an `exc` to fail with. */
export class MaxRetriesExceededError extends CeleryTaskException {
  readonly excType = 'MaxRetriesExceededError';
  readonly excModule = 'celery.exceptions';

  constructor(message: string) {
    super(message);
    this.name = 'MaxRetriesExceededError';
  }
}

/** A time limit passed; its Python class is in `billiard.exceptions` (which `celery.exceptions` re-exports). */
abstract class LimitExceeded extends CeleryTaskException {
  readonly excModule = 'billiard.exceptions';

  protected constructor(name: string, readonly seconds: number | null, args: unknown[]) {
    super(`${name}(${seconds ?? ''})`, args);
    this.name = name;
  }
}

/**
 * The soft time limit passed: the task's `AbortSignal` fires with this as its reason, so awaits that
 * honour the signal reject with it. Uncaught, the task is a FAILURE `SoftTimeLimitExceeded`, the class
 * Celery's pool raises — without arguments (billiard raises `SoftTimeLimitExceeded()`), so the stored
 * `exc_message` is `[]` as a Python worker stores it.
 */
export class SoftTimeLimitExceeded extends LimitExceeded {
  readonly excType = 'SoftTimeLimitExceeded';

  constructor(seconds: number | null = null) {
    super('SoftTimeLimitExceeded', seconds, []);
  }
}

/** The hard time limit passed: the task's FAILURE, as Celery's pool stores it (`TimeLimitExceeded(<hard>)`, no traceback). */
export class TimeLimitExceeded extends LimitExceeded {
  readonly excType = 'TimeLimitExceeded';

  constructor(seconds: number) {
    super('TimeLimitExceeded', seconds, [seconds]);
  }
}

/**
 * The worker is shutting down: the task's `AbortSignal` fires with this reason when the worker
 * stops. A task that ends by throwing it is not stored: its message goes back to the queue and runs
 * again elsewhere (Celery's cold shutdown with `acks_late`).
 */
export class WorkerShutdown extends CeleryTaskException {
  readonly excType = 'WorkerShutdown';
  readonly excModule = 'celery.exceptions';

  constructor() {
    super('worker shutting down');
    this.name = 'WorkerShutdown';
  }
}

/** The task was revoked while it ran (`TaskRevokedError('revoked')` / `'terminated'`). */
export class TaskRevokedError extends CeleryTaskException {
  readonly excType = 'TaskRevokedError';
  readonly excModule = 'celery.exceptions';

  constructor(reason: 'revoked' | 'terminated' | 'expired' = 'revoked') {
    super(reason);
    this.name = 'TaskRevokedError';
  }
}
