/**
 * Celery's remote control (kombu's pidbox, celery/worker/control.py), the worker's side, as pure
 * functions: reading a request off the `celery.pidbox` fanout exchange, deciding whether it is
 * for this node, and the replies Python's `app.control.inspect()` / `celery inspect` read.
 * Golden-tested against replies of a real Celery 5.7 and 5.2.6 worker
 * (test/fixtures/celery-control-replies-*.json, captured by test/fixtures/celery_control_replies.py).
 */
import { saferepr } from './saferepr';
import { globToRegExp, type QueueDeclaration } from './routing';
import type { TaskRequestInfo } from '../control/control-replies';

/** kombu's `Mailbox('celery', type='fanout')`: where requests are broadcast. */
export const CONTROL_EXCHANGE = 'celery.pidbox';
/** Where replies go (direct, routing key = the requester's oid). */
export const REPLY_EXCHANGE = 'reply.celery.pidbox';
/** Celery's `control_queue_ttl` (300 s) and `control_queue_expires` (10 s), as queue arguments in ms. */
export const CONTROL_QUEUE_TTL_MS = 300_000;
export const CONTROL_QUEUE_EXPIRES_MS = 10_000;

/** A request the worker read off its pidbox queue. */
export interface ControlRequest {
  method: string;
  arguments: Record<string, unknown>;
  /** Node names it is for; null: every node (unless a pattern says otherwise). */
  destination: string[] | null;
  pattern: string | null;
  matcher: string | null;
  /** A call (reply wanted) has both; a cast (Python's revoke) has neither. */
  ticket: string | null;
  replyTo: { exchange: string; routingKey: string } | null;
  /** The requester's Lamport clock (header `clock`), 0 when absent. */
  clock: number;
  /** Unix seconds after which nobody collects the reply (header `expires`); 0: none. */
  expires: number;
}

/** A control message this worker cannot read: logged and dropped, never answered. */
export class InvalidControlMessageError extends Error {
  constructor(reason: string) {
    super(`Invalid remote-control message: ${reason}`);
    this.name = 'InvalidControlMessageError';
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function optString(body: Record<string, unknown>, key: string): string | null {
  const value = body[key];
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string') throw new InvalidControlMessageError(`"${key}" must be a string or null, got ${JSON.stringify(value)}`);
  return value;
}

/**
 * Reads a request body (already JSON-decoded) and its AMQP headers, as kombu's `Node.handle_message`
 * and `dispatch` read them. Throws InvalidControlMessageError naming what is wrong.
 */
export function parseControlRequest(body: unknown, headers: Record<string, unknown> | undefined): ControlRequest {
  if (!isObject(body)) throw new InvalidControlMessageError(`the body must be a JSON object, got ${Array.isArray(body) ? 'an array' : typeof body}`);
  const method = body.method;
  if (typeof method !== 'string' || method === '') throw new InvalidControlMessageError(`"method" must be a non-empty string, got ${JSON.stringify(method)}`);
  const args = body.arguments ?? {};
  if (!isObject(args)) throw new InvalidControlMessageError(`"arguments" of ${method} must be an object, got ${JSON.stringify(args)}`);
  let destination: string[] | null = null;
  if (body.destination !== undefined && body.destination !== null) {
    if (!Array.isArray(body.destination) || !body.destination.every((d) => typeof d === 'string')) {
      throw new InvalidControlMessageError(`"destination" must be a list of node names or null, got ${JSON.stringify(body.destination)}`);
    }
    destination = body.destination as string[];
  }
  const ticket = optString(body, 'ticket');
  let replyTo: ControlRequest['replyTo'] = null;
  if (body.reply_to !== undefined && body.reply_to !== null) {
    const r = body.reply_to;
    if (!isObject(r) || typeof r.exchange !== 'string' || typeof r.routing_key !== 'string') {
      throw new InvalidControlMessageError(`"reply_to" must be {exchange, routing_key} strings, got ${JSON.stringify(r)}`);
    }
    replyTo = { exchange: r.exchange, routingKey: r.routing_key };
  }
  return {
    method,
    arguments: args,
    destination,
    pattern: optString(body, 'pattern'),
    matcher: optString(body, 'matcher'),
    ticket,
    replyTo,
    clock: numberHeader(headers?.clock),
    expires: numberHeader(headers?.expires),
  };
}

function numberHeader(value: unknown): number {
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  if (typeof value === 'bigint') return Number(value);
  return 0;
}

/**
 * kombu's `Node.handle_message`: a non-empty `destination` names the nodes; else a `pattern` with a
 * `matcher` (`glob`: Python's fnmatch, `pcre`: `re.match`, anchored at the start only); else every
 * node. Another matcher throws, as kombu's `MatcherNotInstalled`.
 */
export function isAddressedTo(request: Pick<ControlRequest, 'destination' | 'pattern' | 'matcher'>, nodename: string): boolean {
  if (request.destination && request.destination.length > 0) return request.destination.includes(nodename);
  if (request.pattern && request.matcher) {
    if (request.matcher === 'glob') return globToRegExp(request.pattern).test(nodename);
    if (request.matcher === 'pcre') {
      let re: RegExp;
      try {
        re = new RegExp(`^(?:${request.pattern})`);
      } catch (err) {
        throw new InvalidControlMessageError(`pattern ${JSON.stringify(request.pattern)} is not a regular expression: ${(err as Error).message}`);
      }
      return re.test(nodename);
    }
    throw new InvalidControlMessageError(`no matcher installed for ${JSON.stringify(request.matcher)} (glob and pcre are)`);
  }
  return true;
}

/**
 * Whether the requester has stopped collecting replies (header `expires`, Unix seconds; kombu's
 * requester drops replies after it too). A cast carries one as well, but its effect matters, not a reply.
 */
export function replyExpired(request: Pick<ControlRequest, 'expires' | 'replyTo'>, nowSeconds: number): boolean {
  return request.replyTo !== null && request.expires > 0 && nowSeconds > request.expires;
}

/** celery/worker/control.py `ok()` / `nok()`. */
export const ok = (value: unknown): { ok: unknown } => ({ ok: value });
export const nok = (value: unknown): { error: unknown } => ({ error: value });

/** kombu's `Node.dispatch` for an unknown method: the KeyError's repr, `{'error': "KeyError('x')"}`. */
export function unknownCommandReply(method: string): { error: string } {
  return nok(`KeyError(${saferepr(method)})`) as { error: string };
}

/** kombu's reply body: `{nodename: reply}`. */
export function replyBody(nodename: string, reply: unknown): Record<string, unknown> {
  return { [nodename]: reply };
}

/** celery/worker/request.py `Request.info()`: what inspect active / reserved / scheduled / query_task list for a task (the type CeleryControl's replies use too). */
export type RequestInfo = TaskRequestInfo;

/** What the worker knows of a request, to build its {@link RequestInfo}. */
export interface RequestSnapshot {
  id: string;
  name: string;
  args: readonly unknown[];
  kwargs: Record<string, unknown>;
  argsrepr: string | null;
  kwargsrepr: string | null;
  hostname: string;
  /** Unix seconds when it started running; null before. */
  timeStart: number | null;
  acknowledged: boolean;
  exchange: string;
  routingKey: string;
  priority: number | null;
  redelivered: boolean;
  /** The pid of the process running it (set once it runs). */
  workerPid: number | null;
  /** Unix ms of the ETA of a held (scheduled) request. */
  etaMs: number | null;
}

/** `Request.info(safe)`: `safe` gives args / kwargs as their repr strings (argsrepr / kwargsrepr). */
export function requestInfo(r: RequestSnapshot, safe = false): RequestInfo {
  return {
    id: r.id,
    name: r.name,
    args: safe ? (r.argsrepr ?? saferepr(r.args)) : r.args,
    kwargs: safe ? (r.kwargsrepr ?? saferepr(r.kwargs)) : r.kwargs,
    type: r.name,
    hostname: r.hostname,
    time_start: r.timeStart,
    acknowledged: r.acknowledged,
    delivery_info: { exchange: r.exchange, routing_key: r.routingKey, priority: r.priority ?? 0, redelivered: r.redelivered },
    worker_pid: r.workerPid,
  };
}

/** Celery's timer priority of an ETA entry (`scheduled`): the timer's default, 6 in the captured replies. */
export const SCHEDULED_PRIORITY = 6;

/** inspect scheduled: `{eta, priority, request}` per held ETA task; `eta` as Python's `datetime.isoformat()` in UTC. */
export function scheduledEntry(r: RequestSnapshot, safe = false): { eta: string | null; priority: number; request: RequestInfo } {
  return { eta: r.etaMs === null ? null : isoformatUtc(r.etaMs), priority: SCHEDULED_PRIORITY, request: requestInfo(r, safe) };
}

/** Python's `datetime.isoformat()` of an aware UTC datetime: microseconds (when not 0) and `+00:00`. */
export function isoformatUtc(ms: number): string {
  const iso = new Date(ms).toISOString(); // 2026-12-02T11:40:17.179Z
  const [whole, frac] = iso.slice(0, -1).split('.');
  return `${whole}${frac && Number(frac) !== 0 ? `.${frac}000` : ''}+00:00`;
}

/** query_task: `{id: [state, info]}` with state `active`, `reserved` or `ready`; unknown ids are left out. */
export function queryTaskReply(found: readonly { state: 'active' | 'reserved' | 'ready'; request: RequestSnapshot }[]): Record<string, [string, RequestInfo]> {
  const out: Record<string, [string, RequestInfo]> = {};
  for (const { state, request } of found) out[request.id] = [state, requestInfo(request)];
  return out;
}

/** A task's attributes `inspect registered` can show (`taskinfoitems`). */
export interface RegisteredTaskInfo {
  name: string;
  /** Attribute name → value; null / undefined are not shown, as Celery leaves out None. */
  attributes: Record<string, string | number | null | undefined>;
}

/** Celery's default `taskinfoitems`. */
export const DEFAULT_TASK_INFO_ITEMS: readonly string[] = ['exchange', 'routing_key', 'rate_limit'];

/**
 * inspect registered: sorted names, `name [k=v k=v]` with the asked attributes that are set;
 * `celery.*` builtins only with `builtins`.
 */
export function registeredReply(tasks: readonly RegisteredTaskInfo[], taskinfoitems?: unknown, builtins?: unknown): string[] {
  const items = Array.isArray(taskinfoitems) && taskinfoitems.length > 0 ? taskinfoitems.map(String) : DEFAULT_TASK_INFO_ITEMS;
  return tasks
    .filter((t) => builtins === true || !t.name.startsWith('celery.'))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((t) => {
      const fields = items.filter((k) => t.attributes[k] !== undefined && t.attributes[k] !== null).map((k) => `${k}=${String(t.attributes[k])}`);
      return fields.length > 0 ? `${t.name} [${fields.join(' ')}]` : t.name;
    });
}

/** kombu's `Queue.as_dict(recurse=True)`, the shape inspect active_queues lists (every key kombu 5.7 gives). */
export function queueAsDict(q: QueueDeclaration): Record<string, unknown> {
  const args = Object.keys(q.arguments).length > 0 ? { ...q.arguments } : null;
  const num = (key: string): unknown => (q.arguments[key] === undefined ? null : q.arguments[key]);
  return {
    alias: null,
    auto_delete: q.autoDelete,
    binding_arguments: null,
    bindings: [],
    consumer_arguments: null,
    durable: q.durable,
    exchange: {
      arguments: null,
      auto_delete: q.exchange.autoDelete,
      delivery_mode: null,
      durable: q.exchange.durable,
      name: q.exchange.name,
      no_declare: false,
      passive: false,
      type: q.exchange.type,
    },
    exclusive: false,
    expires: typeof q.arguments['x-expires'] === 'number' ? (q.arguments['x-expires'] as number) / 1000 : null,
    max_length: num('x-max-length'),
    max_length_bytes: num('x-max-length-bytes'),
    max_priority: num('x-max-priority'),
    message_ttl: typeof q.arguments['x-message-ttl'] === 'number' ? (q.arguments['x-message-ttl'] as number) / 1000 : null,
    name: q.name,
    no_ack: false,
    no_declare: null,
    queue_arguments: args,
    routing_key: q.routingKey,
  };
}

/** Python's repr of a set of strings, in insertion order (`{'a', 'b'}`; `set()` when empty). */
export function pySetRepr(items: Iterable<string>): string {
  const parts = [...items].map((s) => saferepr(s));
  return parts.length === 0 ? 'set()' : `{${parts.join(', ')}}`;
}

/**
 * control revoke without terminate: `tasks {'id'} flagged as revoked` (the set's repr, Celery 5.3+),
 * or `tasks id1, id2 flagged as revoked` as Celery 5.2 words it (`peer` '5.2').
 */
export function revokeReply(ids: Iterable<string>, peer: '5.2' | '5.3' = '5.3'): { ok: string } {
  return ok(`tasks ${peer === '5.2' ? [...ids].join(', ') : pySetRepr(ids)} flagged as revoked`) as { ok: string };
}

/** control revoke with terminate: the ids running here that were told to stop, or `tasks unknown`. */
export function terminateReply(terminated: readonly string[]): { ok: string } {
  return ok(terminated.length === 0 ? 'terminate: tasks unknown' : `terminate: ${terminated.join(', ')}`) as { ok: string };
}

/**
 * control revoke / terminate's `task_id`: one id or a list of them (Celery's `maybe_list`). Throws
 * on anything else (the error reply names it).
 */
export function taskIdsOf(value: unknown): string[] {
  if (value === undefined || value === null) return [];
  const list = Array.isArray(value) ? value : [value];
  for (const id of list) if (typeof id !== 'string') throw new TypeError(`task_id must be a task id or a list of them, got ${JSON.stringify(value)}`);
  return [...new Set(list as string[])];
}

/**
 * revoke_by_stamped_headers's `headers`: `{name: stamp | [stamps]}`, or a list of `name=value`
 * strings (as Celery splits them). Values become lists.
 */
export function stampedHeadersOf(value: unknown): Record<string, unknown[]> {
  const out: Record<string, unknown[]> = {};
  if (Array.isArray(value)) {
    for (const h of value) {
      if (typeof h !== 'string' || !h.includes('=')) throw new TypeError(`headers must be {name: stamps} or a list of "name=value", got ${JSON.stringify(value)}`);
      const [k, v] = h.split('=');
      out[k] = [v];
    }
    return out;
  }
  if (!isObject(value)) throw new TypeError(`headers must be {name: stamps} or a list of "name=value", got ${JSON.stringify(value)}`);
  for (const [k, v] of Object.entries(value)) out[k] = Array.isArray(v) ? [...v] : [v];
  return out;
}

/** A Python dict repr of stamped headers (`{'mystamp': ['s1']}`) for revoke_by_stamped_headers's reply. */
export function stampedHeadersRepr(headers: Record<string, unknown>): string {
  return saferepr(headers, 100000, 10);
}

/** Python's `strtobool` for arguments that come as text from the command line (`with_defaults`, `safe`). */
export function truthy(value: unknown): boolean {
  if (typeof value === 'string') return ['y', 'yes', 't', 'true', 'on', '1'].includes(value.toLowerCase());
  return value === true || value === 1;
}

/** getrusage fields as Celery's `stats()['rusage']` (`resource.getrusage(RUSAGE_SELF)`), from Node's `process.resourceUsage()`. */
export function rusageOf(u: NodeJS.ResourceUsage): Record<string, number> {
  return {
    idrss: u.unsharedDataSize,
    inblock: u.fsRead,
    isrss: u.unsharedStackSize,
    ixrss: u.sharedMemorySize,
    majflt: u.majorPageFault,
    maxrss: u.maxRSS,
    minflt: u.minorPageFault,
    msgrcv: u.ipcReceived,
    msgsnd: u.ipcSent,
    nivcsw: u.involuntaryContextSwitches,
    nsignals: u.signalsCount,
    nswap: u.swappedOut,
    nvcsw: u.voluntaryContextSwitches,
    oublock: u.fsWrite,
    stime: u.systemCPUTime / 1e6,
    utime: u.userCPUTime / 1e6,
  };
}
