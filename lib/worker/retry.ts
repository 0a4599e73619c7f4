import type { ErrorMatcher, TaskOptions } from '../decorators/task.decorator';
import { X_DEATH_HEADERS } from '../protocol/routing';
import { MaxRetriesExceededError, Retry, RetryOptions } from '../errors/task-exceptions';
import { saferepr, tupleRepr } from '../protocol/saferepr';

export { tupleRepr };
import { encodeTaskMessage, EncodedTaskMessage, PeerCompat, DecodedTask } from '../protocol/task-message';

/**
 * Retries as Celery's `Task.retry` and `autoretry_for` do them (wire spec §5.1, §5.2), pure: which
 * errors retry, the countdown, when retries run out, and the message that carries the retry.
 */

/** Celery's defaults: `max_retries` 3, `default_retry_delay` 180 s, `retry_backoff_max` 600 s, `retry_jitter` true. */
export const RETRY_DEFAULTS = { maxRetries: 3, defaultRetryDelay: 180, retryBackoffMax: 600, retryJitter: true } as const;

/**
 * Headers a retry never carries over: RabbitMQ's dead-letter records (a message that passed through
 * the delayed-delivery queues has them; carried over, RabbitMQ < 4.0.1 sees a dead-letter cycle on the
 * next pass and drops the message — Celery 5.6.3+ strips the same seven), and `compression` (the
 * retried body is encoded afresh).
 */
export const HEADERS_NOT_RETRIED: ReadonlySet<string> = new Set([...X_DEATH_HEADERS, 'compression']);

/** The retries a task may make: the call's own `maxRetries`, else the task's, else 3; null = no limit. */
export function maxRetriesOf(call: RetryOptions, task: TaskOptions | undefined): number | null {
  if (call.maxRetries !== undefined) return call.maxRetries;
  if (task?.maxRetries !== undefined) return task.maxRetries;
  return RETRY_DEFAULTS.maxRetries;
}

/**
 * What `ctx.retry(options)` throws: `Retry` while retries are left; once they are used up, the
 * call's `exc` (or `MaxRetriesExceededError` without one), as Celery's `Task.retry` raises them.
 */
export function retryOrGiveUp(task: Pick<DecodedTask, 'task' | 'id' | 'retries' | 'args' | 'kwargs'>, call: RetryOptions, options: TaskOptions | undefined): Retry | unknown {
  const max = maxRetriesOf(call, options);
  if (max !== null && task.retries >= max) {
    if (call.exc !== undefined) return call.exc;
    return new MaxRetriesExceededError(`Can't retry ${task.task}[${task.id}] args:${tupleRepr(call.args ?? task.args)} kwargs:${saferepr(call.kwargs ?? task.kwargs)}`);
  }
  const countdown = call.eta === undefined && call.countdown === undefined ? (options?.defaultRetryDelay ?? RETRY_DEFAULTS.defaultRetryDelay) : call.countdown;
  return new Retry({ ...call, countdown });
}

/** True when `err` matches one of the matchers: an error class (`instanceof`) or an error name (the class or any base class). */
export function matchesAny(err: unknown, matchers: readonly ErrorMatcher[] | undefined): boolean {
  if (!matchers || matchers.length === 0) return false;
  return matchers.some((m) => {
    if (typeof m === 'function') return err instanceof m;
    for (let proto = err !== null && typeof err === 'object' ? Object.getPrototypeOf(err) : null; proto; proto = Object.getPrototypeOf(proto)) {
      if ((proto.constructor as { name?: string } | undefined)?.name === m) return true;
    }
    return err instanceof Error && err.name === m;
  });
}

/**
 * Celery's `autoretry_for`: the retry options an error thrown by the task asks for, or null when
 * it does not retry by itself (`dontAutoretryFor` wins over `autoretryFor`).
 */
export function autoretryFor(err: unknown, retries: number, options: TaskOptions | undefined, random: () => number = Math.random): RetryOptions | null {
  if (!options || !matchesAny(err, options.autoretryFor) || matchesAny(err, options.dontAutoretryFor)) return null;
  const call: RetryOptions = { exc: err };
  if (options.retryKwargs?.maxRetries !== undefined) call.maxRetries = options.retryKwargs.maxRetries;
  if (options.retryBackoff) {
    const factor = Math.trunc(Math.max(1, Number(options.retryBackoff)));
    call.countdown = exponentialBackoff(factor, retries, options.retryBackoffMax ?? RETRY_DEFAULTS.retryBackoffMax, options.retryJitter ?? RETRY_DEFAULTS.retryJitter, random);
  } else if (options.retryKwargs?.countdown !== undefined) {
    call.countdown = options.retryKwargs.countdown;
  }
  return call;
}

/**
 * Celery's `get_exponential_backoff_interval`: `min(maximum, factor · 2^retries)`, then with full
 * jitter a whole number of seconds picked at random from 0 to that (Python's `randrange(n + 1)`).
 */
export function exponentialBackoff(factor: number, retries: number, maximum: number, fullJitter: boolean, random: () => number = Math.random): number {
  let countdown = Math.min(maximum, factor * 2 ** retries);
  if (fullJitter) countdown = Math.floor(random() * (Math.floor(countdown) + 1));
  return Math.max(0, countdown);
}

/** Celery's own application headers: rebuilt by the encoder, never copied as custom headers. */
const CELERY_HEADERS = new Set([
  'lang', 'task', 'id', 'shadow', 'eta', 'expires', 'group', 'group_index', 'retries', 'timelimit', 'root_id', 'parent_id',
  'argsrepr', 'kwargsrepr', 'origin', 'ignore_result', 'replaced_task_nesting', 'stamped_headers', 'stamps',
]);

/**
 * The retry message (Celery's `signature_from_request` + `apply_async` inside the worker): the same
 * task id, root id, group, shadow, time limits, embedded callbacks/chain/chord, reply-to, origin,
 * priority, custom headers, stamps, `replaced_task_nesting` and the original `expires`; `retries` + 1
 * and a new eta. `parent_id` stays the original's when it had one (Celery's `send_task` fills it
 * with the running task's id only when empty), else it is the task's own id. `argsrepr` is the
 * args as a tuple, since Celery's retry goes through a signature.
 */
export function encodeRetryMessage(task: DecodedTask, call: RetryOptions, ctx: { nowMicros: number; origin: string; peer: PeerCompat }): EncodedTaskMessage {
  const custom: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(task.headers)) {
    if (!CELERY_HEADERS.has(key) && !HEADERS_NOT_RETRIED.has(key)) custom[key] = value;
  }
  const expires = task.headers.expires;
  const args = call.args ?? task.args;
  const { stampedHeaders, stamps } = stampsOf(task.headers);
  const nesting = task.headers.replaced_task_nesting;
  return encodeTaskMessage(
    {
      task: task.task,
      id: task.id,
      args,
      kwargs: call.kwargs ?? task.kwargs,
      argsrepr: tupleRepr(args),
      countdown: call.eta ? undefined : call.countdown,
      eta: call.eta ?? null,
      expires: typeof expires === 'string' ? expires : task.expires === null ? null : new Date(task.expires / 1000),
      priority: task.priority,
      shadow: task.shadow,
      group: task.group,
      groupIndex: task.groupIndex,
      retries: task.retries + 1,
      timeLimit: task.timeLimit[0],
      softTimeLimit: task.timeLimit[1],
      rootId: task.rootId,
      parentId: task.parentId || task.id,
      stampedHeaders,
      stamps,
      replacedTaskNesting: typeof nesting === 'number' && Number.isInteger(nesting) ? nesting : 0,
      ignoreResult: task.ignoreResult ?? false,
      replyTo: task.replyTo ?? undefined,
      headers: custom,
      embed: task.embed,
    },
    { nowMicros: ctx.nowMicros, origin: task.origin ?? ctx.origin, peer: ctx.peer },
  );
}

/**
 * The stamps a retry carries (Celery's `Context.as_execution_options`): the `stamped_headers` list
 * and, of the `stamps`, those it names; none unless both headers are there.
 */
function stampsOf(headers: Readonly<Record<string, unknown>>): { stampedHeaders: string[] | null; stamps: Record<string, unknown> } {
  const names = headers.stamped_headers;
  const stamps = headers.stamps;
  if (!Array.isArray(names) || stamps === null || typeof stamps !== 'object' || Array.isArray(stamps)) return { stampedHeaders: null, stamps: {} };
  const kept: Record<string, unknown> = {};
  for (const name of names) {
    if (typeof name === 'string' && Object.prototype.hasOwnProperty.call(stamps, name)) kept[name] = (stamps as Record<string, unknown>)[name];
  }
  return { stampedHeaders: names.filter((n): n is string => typeof n === 'string'), stamps: kept };
}
