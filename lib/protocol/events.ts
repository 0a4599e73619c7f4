import { isExceptionInfo, type ExceptionInfo } from './exceptions';
import { saferepr } from './saferepr';

/**
 * Celery's monitoring events (celery/events/event.py, celery/events/dispatcher.py; wire spec
 * §7.1): bodies, routing keys and the Lamport clock. No I/O: lib/events publishes them.
 */

/** Celery's `event_exchange`: a durable topic exchange (fanout on Redis, which we do not speak). */
export const EVENT_EXCHANGE = 'celeryev';
/** Task events are batched in lists of at most this many (`EventDispatcher(buffer_limit=24)`). */
export const EVENT_BUFFER_LIMIT = 24;
/** Seconds between heartbeats (`Heart(interval=2.0)`), sent as `freq`. */
export const HEARTBEAT_FREQ = 2.0;
/** `task_events` of the worker: the `result` of `task-succeeded` is cut at this length (`resultrepr_maxsize`). */
export const RESULT_REPR_MAXSIZE = 1024;

export type WorkerEventType = 'worker-online' | 'worker-heartbeat' | 'worker-offline';
export type TaskEventType =
  | 'task-sent'
  | 'task-received'
  | 'task-started'
  | 'task-succeeded'
  | 'task-failed'
  | 'task-retried'
  | 'task-rejected'
  | 'task-revoked';

/** One event as it goes on the wire: a flat JSON object. */
export type CeleryEvent = Record<string, unknown> & { type: string; hostname: string; clock: number | null; timestamp: number };

/**
 * kombu's `LamportClock`: `forward()` before each event or control message sent, `adjust(v)`
 * (max(own, v) + 1) on each one received with a clock, so events of every node can be ordered.
 */
export class LamportClock {
  constructor(private current = 0) {}

  get value(): number {
    return this.current;
  }

  forward(): number {
    return ++this.current;
  }

  adjust(other: unknown): number {
    const seen = typeof other === 'number' && Number.isFinite(other) ? Math.trunc(other) : 0;
    this.current = Math.max(this.current, seen) + 1;
    return this.current;
  }
}

/** The routing key of an event: its type with `-` → `.` (`task-succeeded` → `task.succeeded`). */
export function eventRoutingKey(type: string): string {
  return type.replace(/-/g, '.');
}

/** `group_from`: the part of the type before the first `-` (`task`, `worker`). */
export function eventGroup(type: string): string {
  const dash = type.indexOf('-');
  return dash < 0 ? type : type.slice(0, dash);
}

/** Routing key of a batch of one group's events: `task.multi`. */
export function batchRoutingKey(group: string): string {
  return `${group}.multi`;
}

/**
 * Celery 5.7's `utcoffset()`: hours *west* of UTC, DST included, as true division (−1 for CET,
 * −5.5 for India; Celery ≤ 5.6 floor-divided). JavaScript's `getTimezoneOffset()` is minutes west.
 */
export function utcoffsetHours(now: Date = new Date()): number {
  return now.getTimezoneOffset() / 60 || 0;
}

/** `load_average()`: each of the three rounded *up* to two decimals. */
export function loadavgOf(raw: readonly number[]): [number, number, number] {
  const up = (l: number | undefined) => Math.ceil((l ?? 0) * 1e2) / 1e2;
  return [up(raw[0]), up(raw[1]), up(raw[2])];
}

/** Python's `platform.system()` for Node's `process.platform`. */
export function platformSystem(platform: string): string {
  switch (platform) {
    case 'linux':
      return 'Linux';
    case 'darwin':
      return 'Darwin';
    case 'win32':
      return 'Windows';
    case 'freebsd':
      return 'FreeBSD';
    case 'openbsd':
      return 'OpenBSD';
    case 'sunos':
      return 'SunOS';
    case 'aix':
      return 'AIX';
    default:
      return platform;
  }
}

/** `SOFTWARE_INFO` of a worker: who sends (`py-celery` for Python), its version and OS. */
export interface SoftwareInfo {
  sw_ident: string;
  sw_ver: string;
  sw_sys: string;
}

/** Who sends an event and when: the fields every event carries besides its own. */
export interface EventOrigin {
  hostname: string;
  pid: number;
  /** null for a `blind` event (no clock). */
  clock: number | null;
  /** Seconds since the epoch (Python's `time.time()`). */
  timestamp: number;
  utcoffset: number;
}

/** `Event(type, hostname=, utcoffset=, pid=, clock=, **fields)`, with its `timestamp` and `type` last, as Python builds it. */
export function buildEvent(type: string, fields: Record<string, unknown>, origin: EventOrigin): CeleryEvent {
  return {
    hostname: origin.hostname,
    utcoffset: origin.utcoffset,
    pid: origin.pid,
    clock: origin.clock,
    ...fields,
    timestamp: origin.timestamp,
    type,
  } as CeleryEvent;
}

/** Fields of `worker-online` / `worker-heartbeat` / `worker-offline` (`Heart._send`). */
export function workerEventFields(state: { freq: number; active: number; processed: number; loadavg: readonly number[] }, software: SoftwareInfo): Record<string, unknown> {
  return {
    freq: state.freq,
    active: state.active,
    processed: state.processed,
    loadavg: loadavgOf(state.loadavg),
    sw_ident: software.sw_ident,
    sw_ver: software.sw_ver,
    sw_sys: software.sw_sys,
  };
}

/** What `task-received` and `task-sent` say about a task message (its headers, as Celery reads them). */
export interface TaskMessageInfo {
  id: string;
  name: string;
  /** The message's `argsrepr` / `kwargsrepr`. */
  argsrepr: string;
  kwargsrepr: string;
  rootId: string | null;
  parentId: string | null;
  retries: number;
  /** ISO 8601 (the message's `eta` / `expires` header), or null. */
  eta: string | null;
  expires: string | null;
}

/** `task-received` (celery/worker/strategy.py). */
export function taskReceivedFields(t: TaskMessageInfo): Record<string, unknown> {
  return {
    uuid: t.id,
    name: t.name,
    args: t.argsrepr,
    kwargs: t.kwargsrepr,
    root_id: t.rootId,
    parent_id: t.parentId,
    retries: t.retries,
    eta: t.eta,
    expires: t.expires,
  };
}

/** `task-sent` (celery/app/amqp.py `send_task_message`): the message, and where it was published. */
export function taskSentFields(t: TaskMessageInfo, route: { queue: string | null; exchange: string; routingKey: string }): Record<string, unknown> {
  return {
    uuid: t.id,
    root_id: t.rootId,
    parent_id: t.parentId,
    name: t.name,
    args: t.argsrepr,
    kwargs: t.kwargsrepr,
    retries: t.retries,
    eta: t.eta,
    expires: t.expires,
    queue: route.queue,
    exchange: route.exchange,
    routing_key: route.routingKey,
  };
}

/** `task-started`: only the id (the worker's pid is in every event). */
export function taskStartedFields(id: string): Record<string, unknown> {
  return { uuid: id };
}

/** `task-succeeded`: the result as Python's `saferepr` shows it, and the run time in seconds. */
export function taskSucceededFields(id: string, result: unknown, runtimeSeconds: number): Record<string, unknown> {
  return { uuid: id, result: saferepr(result, RESULT_REPR_MAXSIZE), runtime: runtimeSeconds };
}

/** `task-failed`: the exception as Python's `repr()` (`ValueError('boom')`) and the traceback text. */
export function taskFailedFields(id: string, exception: ExceptionInfo, traceback: string | null): Record<string, unknown> {
  return { uuid: id, exception: exceptionRepr(exception), traceback };
}

/** `task-retried`: the exception the retry was for (`repr`, `None` without one) and the Retry's traceback. */
export function taskRetriedFields(id: string, exception: ExceptionInfo | null, traceback: string | null): Record<string, unknown> {
  return { uuid: id, exception: exception ? exceptionRepr(exception) : 'None', traceback: traceback ?? '' };
}

/** `task-rejected`: whether the message went back to the queue. */
export function taskRejectedFields(id: string, requeue: boolean): Record<string, unknown> {
  return { uuid: id, requeue };
}

/** `task-revoked`: revoked by a remote `revoke`, terminated while running (with the signal's name), or expired. */
export function taskRevokedFields(id: string, how: { terminated: boolean; signum: string | number | null; expired: boolean }): Record<string, unknown> {
  return { uuid: id, terminated: how.terminated, signum: how.signum, expired: how.expired };
}

/**
 * Python's `repr()` of an exception rebuilt from Celery's exception dict: `ValueError('boom')`,
 * `KeyError('a', 2)`, `Exception()`. The arguments are written as saferepr writes them (strings
 * always in single quotes).
 */
export function exceptionRepr(info: ExceptionInfo): string {
  const args = Array.isArray(info.exc_message) ? info.exc_message : [info.exc_message];
  return `${info.exc_type}(${args.map((a) => saferepr(a, RESULT_REPR_MAXSIZE)).join(', ')})`;
}

/** Reads the `argsrepr` / `kwargsrepr` / `eta` / `expires` headers a task message carries (empty / null when absent). */
export function taskMessageInfo(task: {
  id: string;
  task: string;
  rootId: string | null;
  parentId: string | null;
  retries: number;
  headers: Record<string, unknown>;
  args: unknown;
  kwargs: unknown;
}): TaskMessageInfo {
  const h = task.headers;
  const text = (v: unknown): string | null => (typeof v === 'string' ? v : null);
  return {
    id: task.id,
    name: task.task,
    argsrepr: text(h.argsrepr) ?? saferepr(task.args),
    kwargsrepr: text(h.kwargsrepr) ?? saferepr(task.kwargs),
    rootId: task.rootId,
    parentId: task.parentId,
    retries: task.retries,
    eta: text(h.eta),
    expires: text(h.expires),
  };
}

/**
 * The event for how a task ended, from the result stored for it: `task-succeeded` (with its run
 * time), `task-failed`, or `task-revoked` (expired when its TaskRevokedError says `expired`).
 * Null for any other state.
 */
export function taskEndedEvent(
  id: string,
  ended: { status: string; result: unknown; traceback?: string | null },
  runtimeSeconds: number,
): { type: TaskEventType; fields: Record<string, unknown> } | null {
  switch (ended.status) {
    case 'SUCCESS':
      return { type: 'task-succeeded', fields: taskSucceededFields(id, ended.result, runtimeSeconds) };
    case 'FAILURE': {
      const info = isExceptionInfo(ended.result) ? ended.result : { exc_type: 'Exception', exc_message: [String(ended.result)], exc_module: 'builtins' };
      return { type: 'task-failed', fields: taskFailedFields(id, info, ended.traceback ?? null) };
    }
    case 'REVOKED': {
      const reason = isExceptionInfo(ended.result) && Array.isArray(ended.result.exc_message) ? ended.result.exc_message[0] : null;
      return { type: 'task-revoked', fields: taskRevokedFields(id, { terminated: reason === 'terminated', signum: null, expired: reason === 'expired' }) };
    }
    default:
      return null;
  }
}
