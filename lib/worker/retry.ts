import type { ErrorMatcher, TaskOptions } from '../decorators/task.decorator';
import { MaxRetriesExceededError, Retry, RetryOptions } from '../errors/task-exceptions';
import { saferepr } from '../protocol/saferepr';
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
export const HEADERS_NOT_RETRIED: ReadonlySet<string> = new Set([
  'x-death',
  'x-first-death-exchange',
  'x-first-death-queue',
  'x-first-death-reason',
  'x-last-death-exchange',
  'x-last-death-queue',
  'x-last-death-reason',
  'compression',
]);

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
    return new MaxRetriesExceededError(`Can't retry ${task.task}[${task.id}] args:${saferepr(call.args ?? task.args)} kwargs:${saferepr(call.kwargs ?? task.kwargs)}`);
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

/** Where a retry goes: the queue named in the call, else back where the message came from (wire spec §5.1). */
export interface RetryTarget {
  queue: string;
  route?: { exchange: string; routingKey: string };
}

export function retryTarget(call: RetryOptions, delivery: { exchange: string; routingKey: string }, consumedQueue: string): RetryTarget {
  if (call.queue) return { queue: call.queue };
  // Celery: through the default exchange to queue = routing key when it came that way, else the whole delivery_info again.
  if (delivery.exchange === '') return { queue: delivery.routingKey || consumedQueue };
  return { queue: consumedQueue, route: { exchange: delivery.exchange, routingKey: delivery.routingKey } };
}

/** Celery's own application headers: rebuilt by the encoder, never copied as custom headers. */
const CELERY_HEADERS = new Set([
  'lang', 'task', 'id', 'shadow', 'eta', 'expires', 'group', 'group_index', 'retries', 'timelimit', 'root_id', 'parent_id',
  'argsrepr', 'kwargsrepr', 'origin', 'ignore_result', 'replaced_task_nesting', 'stamped_headers', 'stamps',
]);

/**
 * The retry message (Celery's `signature_from_request` + `apply_async` inside the worker): the same
 * task id, root id, group, shadow, time limits, embedded callbacks/chain/chord, reply-to, origin,
 * custom headers and the original `expires`; `retries` + 1, a new eta, and `parent_id` = the task's own id.
 */
export function encodeRetryMessage(task: DecodedTask, call: RetryOptions, ctx: { nowMicros: number; origin: string; peer: PeerCompat }): EncodedTaskMessage {
  const custom: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(task.headers)) {
    if (!CELERY_HEADERS.has(key) && !HEADERS_NOT_RETRIED.has(key)) custom[key] = value;
  }
  const expires = task.headers.expires;
  return encodeTaskMessage(
    {
      task: task.task,
      id: task.id,
      args: call.args ?? task.args,
      kwargs: call.kwargs ?? task.kwargs,
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
      parentId: task.id,
      ignoreResult: task.ignoreResult ?? false,
      replyTo: task.replyTo ?? undefined,
      headers: custom,
      embed: task.embed,
    },
    { nowMicros: ctx.nowMicros, origin: task.origin ?? ctx.origin, peer: ctx.peer },
  );
}
