import { SetMetadata } from '@nestjs/common';
import { TASK_METADATA } from '../celery.constants';
import { TaskRegistrationError } from '../errors/celery.errors';

/** Options of `@Task()`. */
export interface TaskOptions {
  /** Task name; default `<ClassName>.<methodName>`. Same as the first argument of `@Task(name)`. */
  name?: string;
  /** Queue the `Producer` sends this task to by default. Default: the module's `defaultQueue`. */
  queue?: string;
  /** Store no result (Celery's `ignore_result`). Default false. */
  ignoreResult?: boolean;
  /**
   * Parameter names, for keyword arguments (`kwargs`) sent by Python callers. Default: read from
   * the method's own parameter list; give them when a build step renames parameters.
   */
  params?: string[];

  // --- retries (Celery's Task attributes of the same names) ---
  /** Retries allowed before the task fails (`max_retries`). Default 3; `null` retries for ever. */
  maxRetries?: number | null;
  /** Seconds a retry waits when it names no countdown or eta (`default_retry_delay`). Default 180. */
  defaultRetryDelay?: number;
  /** Errors that retry the task by themselves (`autoretry_for`): classes (matched with `instanceof`) or error names. */
  autoretryFor?: ErrorMatcher[];
  /** Errors that never retry by themselves, even when `autoretryFor` matches (`dont_autoretry_for`). */
  dontAutoretryFor?: ErrorMatcher[];
  /** Options of automatic retries (`retry_kwargs`): countdown, maxRetries. */
  retryKwargs?: { countdown?: number; maxRetries?: number | null };
  /** Exponential back-off for automatic retries (`retry_backoff`): `true` (factor 1) or the factor in seconds. Default false. */
  retryBackoff?: boolean | number;
  /** Longest back-off in seconds (`retry_backoff_max`). Default 600. */
  retryBackoffMax?: number;
  /** Pick the back-off at random between 0 and the computed value (`retry_jitter`). Default true. */
  retryJitter?: boolean;

  // --- time limits (`time_limit` / `soft_time_limit`); a call's `timelimit` header wins ---
  /** Seconds after which the task is a FAILURE `TimeLimitExceeded` and its slot is freed. Default: the module's `taskTimeLimit` (none). */
  timeLimit?: number;
  /** Seconds after which the task's AbortSignal fires with `SoftTimeLimitExceeded`. Default: the module's `taskSoftTimeLimit` (none). */
  softTimeLimit?: number;

  // --- isolation: a hard time limit that really stops the work ---
  /**
   * `'thread'`: run the task in a pool of worker threads, where its hard time limit terminates the
   * thread. Needs `module` (`__filename`, or `import.meta.url` in ESM): the compiled file that exports
   * the class under its own name; the thread constructs it without arguments (no DI in the thread)
   * and reads the request with `isolatedTaskContext()`.
   */
  isolate?: 'thread';
  /** The compiled module of an isolated task's class: `__filename` / `import.meta.url`. */
  module?: string;

  // --- rate limit (`rate_limit`) ---
  /** `'10/s'`, `'100/m'`, `'2/h'` or tasks per second, per worker; `{ global }` for a limit shared by every worker. */
  rateLimit?: RateLimitOption;

  // --- results ---
  /** Store a STARTED row before the task runs (`track_started`). Default: the module's `taskTrackStarted` (false). */
  trackStarted?: boolean;
  /** With `ignoreResult`, still store FAILURE and RETRY rows (`store_errors_even_if_ignored`). Default: the module's setting (false). */
  storeErrorsEvenIfIgnored?: boolean;
  /** Seconds the task's result rows live (a row TTL, 0 = never), instead of `cassandra.entryTtl`. */
  resultExpires?: number;
}

/** An error class, or an error's `name`. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type ErrorMatcher = (abstract new (...args: any[]) => Error) | string;

/** A per-worker rate (Celery's form), or a limit shared by every worker of the task. */
export type RateLimitOption = string | number | { global: string | number; local?: string | number };

export interface TaskMetadata extends TaskOptions {
  methodName: string;
}

/**
 * Marks a provider method as a Celery task. The worker runs it on the DI-managed instance when a
 * message with this task name arrives; positional `args` map onto the parameters in order and
 * `kwargs` by parameter name. Without a name the task is called `<ClassName>.<methodName>`.
 *
 * @example
 * ```ts
 * @Injectable()
 * export class TasksService {
 *   @Task('tasks.sortWords')
 *   sortWords(text: string, capitalize = false): string { ... }
 * }
 * ```
 */
export function Task(nameOrOptions?: string | TaskOptions, options: TaskOptions = {}): MethodDecorator {
  const merged: TaskOptions = typeof nameOrOptions === 'string' ? { ...options, name: nameOrOptions } : { ...nameOrOptions, ...options };
  return (target, propertyKey, descriptor) => {
    const metadata: TaskMetadata = { ...merged, methodName: String(propertyKey) };
    return SetMetadata(TASK_METADATA, metadata)(target, propertyKey, descriptor);
  };
}

/** Checks the options a `@Task()` gives, at bootstrap, naming the task and the option. */
export function validateTaskOptions(target: string, options: TaskOptions): void {
  const fail = (key: string, detail: string) => {
    throw new TaskRegistrationError(`${target}: @Task() option ${key} ${detail}`);
  };
  const seconds = (key: keyof TaskOptions, min: number) => {
    const v = options[key];
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v < min)) fail(key, `must be a number >= ${min}, got ${JSON.stringify(v)}`);
  };
  if (options.maxRetries !== undefined && options.maxRetries !== null && (!Number.isInteger(options.maxRetries) || options.maxRetries < 0)) {
    fail('maxRetries', `must be an integer >= 0 or null (retry for ever), got ${JSON.stringify(options.maxRetries)}`);
  }
  seconds('defaultRetryDelay', 0);
  seconds('retryBackoffMax', 0);
  const expires = options.resultExpires;
  if (expires !== undefined && (!Number.isInteger(expires) || expires < 0 || expires > 630720000)) {
    fail('resultExpires', `must be a whole number of seconds from 0 (never) to 630720000 (Cassandra's longest TTL), got ${JSON.stringify(expires)}`);
  }
  for (const key of ['timeLimit', 'softTimeLimit'] as const) {
    const v = options[key];
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)) fail(key, `must be a number of seconds > 0, got ${JSON.stringify(v)}`);
  }
  if (options.retryBackoff !== undefined && typeof options.retryBackoff !== 'boolean' && (typeof options.retryBackoff !== 'number' || options.retryBackoff < 0)) {
    fail('retryBackoff', `must be true, false or a factor in seconds, got ${JSON.stringify(options.retryBackoff)}`);
  }
  if (options.isolate !== undefined && options.isolate !== 'thread') fail('isolate', `must be 'thread', got ${JSON.stringify(options.isolate)}`);
  if (options.isolate && !options.module) fail('module', "is required with isolate: 'thread': give module: __filename (CommonJS) or import.meta.url (ESM)");
  for (const key of ['autoretryFor', 'dontAutoretryFor'] as const) {
    const list = options[key];
    if (list === undefined) continue;
    if (!Array.isArray(list) || list.some((m) => typeof m !== 'string' && typeof m !== 'function')) fail(key, 'must be a list of error classes or error names');
  }
}
