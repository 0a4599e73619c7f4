/** Base class of every error this library throws, so callers can catch them as one family. */
export class CeleryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** A configuration key is unknown, missing or has a bad value. The message names the key. */
export class CeleryConfigError extends CeleryError {
  /**
   * @param key the option, in camelCase (`cassandra.port`)
   * @param writtenAs the celeryconfig key the user wrote for it (`cassandra_port`), when that is how it came
   */
  constructor(
    readonly key: string,
    readonly detail: string,
    readonly writtenAs?: string,
  ) {
    super(`Invalid nestjs-celery configuration: ${writtenAs ? `${writtenAs} (${key})` : key}: ${detail}`);
  }
}

/** A message on the queue is not a task this worker can read; it is rejected without requeue. */
export class InvalidTaskMessageError extends CeleryError {
  constructor(
    readonly reason: string,
    readonly taskId: string | null = null,
  ) {
    super(`Invalid task message${taskId ? ` ${taskId}` : ''}: ${reason}`);
  }
}

/** Two `@Task()` methods claim the same name, or a task name is otherwise unusable. */
export class TaskRegistrationError extends CeleryError {}

/**
 * A task's rate limit is not one Celery's `celery.utils.time.rate` reads (`'10/s'`, `'100/m'`,
 * `'2/h'`, a number of tasks per second, or 0 / null for none). Thrown at bootstrap, and by
 * `RateLimiter.setRate` at run time.
 */
export class InvalidRateLimitError extends CeleryError {
  constructor(
    readonly value: unknown,
    readonly reason: string,
    /** The task the limit was given for, when known. */
    readonly taskName: string | null = null,
  ) {
    super(
      `Invalid rate limit ${describeValue(value)}${taskName ? ` for task "${taskName}"` : ''}: ${reason} ` +
        `(use '10/s', '100/m', '2/h', a number of tasks per second, or 0 / null for no limit)`,
    );
  }
}

function describeValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined) return String(value);
  try {
    return JSON.stringify(value) ?? typeof value;
  } catch {
    return typeof value;
  }
}

/** `Producer.task(...)` or a worker was asked for a task name nobody registered. */
export class TaskNotRegisteredError extends CeleryError {
  constructor(readonly taskName: string) {
    super(`Task not registered: ${taskName}`);
  }
}

/**
 * A task ended FAILURE (or REVOKED): carries Celery's exception fields as stored in the result
 * backend, whichever language raised it.
 */
export class TaskFailedError extends CeleryError {
  constructor(
    readonly taskId: string,
    readonly state: string,
    readonly excType: string,
    readonly excMessage: unknown[],
    readonly excModule: string | null,
    readonly traceback: string | null,
  ) {
    super(`Task ${taskId} ${state}: ${excType}(${excMessage.map((m) => String(m)).join(', ')})`);
  }
}

/** `AsyncResult.get()` did not see a ready state within its timeout. */
export class TaskTimeoutError extends CeleryError {
  constructor(
    readonly taskId: string,
    readonly timeoutMs: number,
  ) {
    super(`Task ${taskId} not ready after ${timeoutMs} ms`);
  }
}

/** The broker or the result store cannot be reached or refused an operation. */
export class CeleryConnectionError extends CeleryError {}

/**
 * The broker refused an operation for a reason that trying again cannot fix: for example a queue
 * declared with arguments other than those it exists with (406 PRECONDITION_FAILED). The message
 * carries the broker's own reason.
 */
export class CeleryBrokerRefusedError extends CeleryError {}

/**
 * A task's result is too large to store: its encoded row exceeds `worker.maxResultBytes`, or the
 * database refused it as too large. Never retried; the worker stores a FAILURE saying so instead.
 */
export class ResultTooLargeError extends CeleryError {
  constructor(
    readonly taskId: string,
    readonly bytes: number,
    readonly limit: number,
  ) {
    super(`The result row of task ${taskId} is ${bytes} bytes, over worker.maxResultBytes (${limit} bytes)`);
  }
}

/**
 * A result to store that the store cannot take as given (e.g. an `expiresSeconds` that is not a
 * TTL Cassandra accepts). Never retried: the same value is refused again.
 */
export class InvalidResultError extends CeleryError {}

/** A remote-control request (CeleryControl) that cannot be sent as given; the message names what is wrong. */
export class InvalidControlRequestError extends CeleryError {}

/** A remote-control reply that is not what a Celery worker sends (logged and skipped by CeleryControl). */
export class InvalidControlReplyError extends CeleryError {}
