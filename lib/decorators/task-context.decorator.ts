import { TASK_CONTEXT_PARAM } from '../celery.constants';
import type { RetryOptions } from '../errors/task-exceptions';

/** Celery's `delivery_info`: where the message came from. */
export interface DeliveryInfo {
  exchange: string;
  routingKey: string;
  redelivered: boolean;
  priority: number;
}

/**
 * The request of the task that is running (Celery's `self.request`, plus `retry()` and an
 * AbortSignal). Get it with the `@TaskContext()` parameter decorator, or anywhere in the task's
 * async call tree with the injectable `CeleryTaskContext` or `currentTask()`.
 */
export interface TaskContext {
  readonly id: string;
  readonly name: string;
  readonly args: readonly unknown[];
  readonly kwargs: Readonly<Record<string, unknown>>;
  /** How many times this task has been retried so far (0 on the first run). */
  readonly retries: number;
  readonly rootId: string;
  readonly parentId: string | null;
  /** Id of the group the task belongs to, and its place in it. */
  readonly group: string | null;
  readonly groupIndex: number | null;
  readonly eta: Date | null;
  readonly expires: Date | null;
  readonly deliveryInfo: DeliveryInfo;
  /** Every application header of the message (Celery's and custom ones). */
  readonly headers: Readonly<Record<string, unknown>>;
  /** The worker's node name (`worker.hostname`). */
  readonly hostname: string;
  /** Who sent it (`gen<pid>@<host>`), when the sender said. */
  readonly origin: string | null;
  /** The limits in force, in seconds: `[hard, soft]` (null when none). */
  readonly timeLimit: readonly [number | null, number | null];
  /**
   * Fires on the soft time limit (reason `SoftTimeLimitExceeded`), the hard time limit
   * (`TimeLimitExceeded`), a revoke (`TaskRevokedError`) and when a stopping worker's
   * `shutdownTimeoutMs` runs out (`WorkerShutdown`: a task that ends with it goes back to the queue).
   * Pass it to whatever the task awaits (fetch, timers, drivers): the await then rejects with that reason.
   */
  readonly signal: AbortSignal;
  /**
   * Retries the task (Celery's `self.retry()`): throws `Retry`, which must propagate out of the task.
   * Once `maxRetries` is used up it throws `exc` instead (or `MaxRetriesExceededError` without one),
   * and the task fails with it.
   */
  retry(options?: RetryOptions): never;
  /**
   * For an errback (a `link_error` task, which Celery calls with the failed task's id as its
   * argument and as `parent_id`): the failed task's request and exception, read from its newest
   * row (the FAILURE row is the source of truth). Null when this task's parent did not fail — it
   * was not called as an errback. One result-store read per call; read it only in errbacks.
   */
  failure(): Promise<TaskFailure | null>;
}

/** What an errback reads of the task that failed (`ctx.failure()`). */
export interface TaskFailure {
  /**
   * The failed task's request. `name`, `args` and `kwargs` come from its row's `resultExtended`
   * columns, or from the header a NestJS worker adds to the errbacks it sends; they are null when
   * a Python worker sent the errback and the row has no extended columns (Celery's never do).
   */
  request: { id: string; name: string | null; args: unknown[] | null; kwargs: Record<string, unknown> | null };
  /** The exception as stored: Python class name and module, and its arguments (`exc_message`). */
  exception: { type: string; module: string; message: unknown[] };
  traceback: string | null;
}

/**
 * Injects the running task's {@link TaskContext} into a `@Task()` method's parameter. The parameter
 * takes no part in argument binding: callers (Python or NestJS) send the other arguments only.
 *
 * @example
 * ```ts
 * @Task('tasks.flaky')
 * flaky(failures: number, @TaskContext() ctx: TaskContext) {
 *   if (ctx.retries < failures) ctx.retry({ countdown: 0.1, exc: new Error('flaky') });
 *   return `ok after ${ctx.retries} retries`;
 * }
 * ```
 */
export function TaskContext(): ParameterDecorator {
  return (target, propertyKey, index) => {
    if (propertyKey === undefined) throw new TypeError('@TaskContext() goes on a parameter of a @Task() method, not of a constructor');
    Reflect.defineMetadata(TASK_CONTEXT_PARAM, index, target, propertyKey);
  };
}
