import type { AmqpFieldValue } from './amqp-field-table';
import { fromAmqpFieldValue } from './amqp-field-table';
import { parsePythonJson, pythonJsonDumps } from './python-json';
import type { TopologyStep } from './routing';
import { InvalidControlReplyError, InvalidControlRequestError } from '../errors/celery.errors';
export { LamportClock } from './events';

/**
 * Celery's remote control (kombu's pidbox, wire spec §7.2) as messages, the requester's side:
 * the request `app.control.broadcast()` publishes, the replies it collects, and the reply queue it
 * declares. Pure: no I/O, no clock — the caller passes the time, the ticket and the Lamport clock
 * value. Checked byte for byte against requests captured from Celery 5.7 and 5.2.6
 * (test/fixtures/celery-control.py).
 */

/** Where requests go: kombu's `Mailbox.exchange` for the namespace `celery` (fanout, not durable). */
export const CONTROL_EXCHANGE = 'celery.pidbox';
/** Where workers publish replies: kombu's `Mailbox.reply_exchange` (direct, not durable); routing key = the requester's oid. */
export const CONTROL_REPLY_EXCHANGE = 'reply.celery.pidbox';
/** Celery's `control_queue_ttl` (300 s) and `control_queue_expires` (10 s), as the reply queue's arguments. */
export const CONTROL_QUEUE_TTL_MS = 300_000;
export const CONTROL_QUEUE_EXPIRES_MS = 10_000;

/** A command and how to send it, as `Mailbox._publish` takes it. */
export interface ControlRequestSpec {
  method: string;
  arguments?: Record<string, unknown>;
  /** Node names (`celery@host`) that should act on it; null or absent: every node. */
  destination?: readonly string[] | null;
  /** Asks for replies: the ticket they come back with, and the requester's oid (its reply routing key). */
  reply?: { ticket: string; oid: string } | null;
  /** The Lamport clock value for the `clock` header (the caller's clock after `forward()`). */
  clock: number;
  /** Now, in epoch seconds (Python's `time()`). */
  nowSeconds: number;
  /** Seconds the request stays valid (header `expires` = now + timeout); 0 or absent: `expires` 0, never expires. */
  timeoutSeconds?: number | null;
}

export interface EncodedControlRequest {
  exchange: string;
  routingKey: string;
  /** What kombu's Producer sets: JSON, persistent delivery mode (the exchange is passed by name), priority 0. */
  properties: { contentType: string; contentEncoding: string; deliveryMode: number; priority: number };
  /** Header values as JS values, in kombu's order (`clock`, `expires`). */
  headers: { clock: number; expires: number };
  /** The same headers typed as py-amqp writes them: `clock` an integer, `expires` a double (or the integer 0). */
  amqpHeaders: { [key: string]: AmqpFieldValue };
  body: Buffer;
}

/** Checks a destination as kombu's `_broadcast` does (a list, not a string), and each node name. */
export function checkDestination(destination: unknown): readonly string[] | null {
  if (destination === undefined || destination === null) return null;
  if (!Array.isArray(destination)) {
    throw new InvalidControlRequestError(`destination must be a list of node names (like ['celery@host']), not ${describe(destination)}`);
  }
  for (const node of destination) {
    if (typeof node !== 'string' || node.length === 0) {
      throw new InvalidControlRequestError(`destination must hold node names (non-empty strings); got ${describe(node)}`);
    }
  }
  return destination;
}

export function encodeControlRequest(spec: ControlRequestSpec): EncodedControlRequest {
  if (typeof spec.method !== 'string' || spec.method.length === 0) {
    throw new InvalidControlRequestError(`control command must be a non-empty string, not ${describe(spec.method)}`);
  }
  const args = spec.arguments ?? {};
  if (typeof args !== 'object' || args === null || Array.isArray(args)) {
    throw new InvalidControlRequestError(`arguments of control command '${spec.method}' must be an object of keyword arguments, not ${describe(args)}`);
  }
  const destination = checkDestination(spec.destination);
  const timeout = spec.timeoutSeconds ?? 0;
  if (typeof timeout !== 'number' || !Number.isFinite(timeout) || timeout < 0) {
    throw new InvalidControlRequestError(`timeout of control command '${spec.method}' must be a finite number of seconds >= 0, not ${describe(timeout)}`);
  }
  if (!Number.isSafeInteger(spec.clock) || spec.clock < 0) throw new InvalidControlRequestError(`clock must be a non-negative integer, not ${describe(spec.clock)}`);
  const message: Record<string, unknown> = { method: spec.method, arguments: args, destination, pattern: null, matcher: null };
  if (spec.reply) {
    message.ticket = spec.reply.ticket;
    message.reply_to = { exchange: CONTROL_REPLY_EXCHANGE, routing_key: spec.reply.oid };
  }
  let body: string;
  try {
    body = pythonJsonDumps(message);
  } catch (err) {
    throw new InvalidControlRequestError(`arguments of control command '${spec.method}' cannot be sent as JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  // kombu: 'expires': time() + timeout if timeout else 0 — a float, or the integer 0
  const expires = timeout ? spec.nowSeconds + timeout : 0;
  return {
    exchange: CONTROL_EXCHANGE,
    routingKey: '',
    properties: { contentType: 'application/json', contentEncoding: 'utf-8', deliveryMode: 2, priority: 0 },
    headers: { clock: spec.clock, expires },
    amqpHeaders: {
      clock: { '!': spec.clock > 2147483647 ? 'long' : 'int', value: spec.clock },
      expires: expires === 0 ? { '!': 'int', value: 0 } : { '!': 'double', value: expires },
    },
    body: Buffer.from(body, 'utf8'),
  };
}

/** The name of the requester's reply queue: `<oid>.reply.celery.pidbox`. */
export function replyQueueName(oid: string): string {
  return `${oid}.${CONTROL_REPLY_EXCHANGE}`;
}

/**
 * What a requester declares before its first request, as kombu 5.7's `Mailbox._publish` /
 * `get_reply_queue` do: the control exchange, the reply exchange, and its reply queue (not durable,
 * exclusive, auto-delete, `x-expires` 10 s, `x-message-ttl` 300 s) bound with routing key = oid.
 */
export function controlRequesterTopology(oid: string): TopologyStep[] {
  const queue = replyQueueName(oid);
  return [
    { kind: 'exchange.declare', exchange: CONTROL_EXCHANGE, type: 'fanout', durable: false, autoDelete: false },
    { kind: 'exchange.declare', exchange: CONTROL_REPLY_EXCHANGE, type: 'direct', durable: false, autoDelete: false },
    {
      kind: 'queue.declare',
      queue,
      durable: false,
      exclusive: true,
      autoDelete: true,
      arguments: { 'x-expires': CONTROL_QUEUE_EXPIRES_MS, 'x-message-ttl': CONTROL_QUEUE_TTL_MS },
    },
    { kind: 'queue.bind', queue, exchange: CONTROL_REPLY_EXCHANGE, routingKey: oid },
  ];
}

/** One reply message: `{node name: that node's answer}`, with the ticket and clock it came with. */
export interface DecodedControlReply {
  ticket: string | null;
  clock: number;
  /** Epoch seconds after which it is void (kombu drops it); null when absent or 0. */
  expires: number | null;
  replies: Record<string, unknown>;
}

/** Reads a reply as kombu's `_collect` does; throws InvalidControlReplyError for what no Celery worker sends. */
export function decodeControlReply(msg: { headers?: Record<string, unknown> | null; contentType?: string; body: Buffer }): DecodedControlReply {
  const headers = msg.headers ?? {};
  const header = (name: string) => {
    const v = headers[name];
    return v === undefined ? undefined : fromAmqpFieldValue(v as AmqpFieldValue);
  };
  if (msg.contentType !== undefined && msg.contentType !== 'application/json') {
    throw new InvalidControlReplyError(`control reply has content type ${msg.contentType}; only application/json is accepted`);
  }
  let body: unknown;
  try {
    body = parsePythonJson(msg.body.toString('utf8'));
  } catch (err) {
    throw new InvalidControlReplyError(`control reply body is not JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new InvalidControlReplyError(`control reply body must be an object {node name: reply}, not ${describe(body)}`);
  }
  const ticket = header('ticket');
  const clock = Number(header('clock') ?? 0);
  const expires = Number(header('expires') ?? 0);
  return {
    ticket: typeof ticket === 'string' ? ticket : null,
    clock: Number.isFinite(clock) ? clock : 0,
    expires: Number.isFinite(expires) && expires > 0 ? expires : null,
    replies: body as Record<string, unknown>,
  };
}

/**
 * Celery's `flatten_reply`: the replies of a broadcast, one `{node: reply}` per message, as one
 * object by node name. A node that answered twice keeps its last answer and is named in `duplicates`
 * (Celery warns: two workers share a node name).
 */
export function flattenReplies<R>(replies: readonly Record<string, R>[]): { byNode: Record<string, R>; duplicates: string[] } {
  const byNode: Record<string, R> = {};
  const duplicates = new Set<string>();
  for (const item of replies) {
    for (const [node, reply] of Object.entries(item)) {
      if (Object.prototype.hasOwnProperty.call(byNode, node)) duplicates.add(node);
      byNode[node] = reply;
    }
  }
  return { byNode, duplicates: [...duplicates].sort() };
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return `the string ${JSON.stringify(value)}`;
  return `${typeof value} ${typeof value === 'object' ? '' : String(value)}`.trim();
}
