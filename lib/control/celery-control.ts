import { Injectable, Logger, OnApplicationShutdown } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { Broker } from '../broker/broker.interface';
import {
  checkDestination,
  decodeControlReply,
  encodeControlRequest,
  flattenReplies,
  LamportClock,
} from '../protocol/control-message';
import { InvalidControlRequestError } from '../errors/celery.errors';
import type {
  ActiveQueueInfo,
  ByNode,
  CommandReply,
  PingReply,
  QueryTaskReply,
  ScheduledTaskInfo,
  TaskRequestInfo,
  WorkerStatsReply,
} from './control-replies';
import { controlTransportFor, type ControlTransport, type RawControlReply } from './control-transport';

/** Which nodes a request is for and how long to wait for their replies (Python's `broadcast` keywords). */
export interface ControlTarget {
  /** Node names (`celery@host`) that should act; default every node. */
  destination?: string[] | null;
  /**
   * Milliseconds to wait for the next reply (Python's `timeout`, there in seconds; default 1000):
   * collecting stops when this long passes without a new reply, or when `limit` replies are in.
   */
  timeout?: number;
  /** Stop after this many replies; default the number of `destination` nodes, else none. */
  limit?: number;
}

export interface BroadcastOptions extends ControlTarget {
  /** The command's keyword arguments. */
  arguments?: Record<string, unknown>;
  /** Wait for and return the replies (default false: a cast, nothing comes back). */
  reply?: boolean;
  /** Called with each reply as it arrives (Python's `callback`). */
  callback?: (reply: Record<string, unknown>) => void;
}

export interface RevokeOptions extends ControlTarget {
  /** Also stop the task where it is running (Celery's `terminate`). */
  terminate?: boolean;
  /** Signal name for `terminate` on Python's prefork pool (default `SIGTERM`). */
  signal?: string | null;
  /** Wait for the workers' replies (default false). */
  reply?: boolean;
}

export interface AddConsumerOptions extends ControlTarget {
  exchange?: string | null;
  exchangeType?: string;
  routingKey?: string | null;
  /** More `kombu.Queue.from_dict` options, sent as they are. */
  options?: Record<string, unknown>;
  reply?: boolean;
}

/** Options of the commands that only act (rate_limit, time_limit, ...): cast unless `reply`. */
export interface CommandOptions extends ControlTarget {
  reply?: boolean;
}

const DEFAULT_TIMEOUT_MS = 1000;

/** What CeleryControl is built from besides the broker (tests pin them to replay captured requests). */
export interface CeleryControlDeps {
  transport?: (onReply: (reply: RawControlReply) => void) => ControlTransport;
  /** A new reply ticket (default a random UUID, as kombu's `uuid()`). */
  ticket?: () => string;
  /** Now in epoch seconds (default the wall clock, as Python's `time()`). */
  nowSeconds?: () => number;
  clock?: LamportClock;
}

interface Collector {
  replies: Record<string, unknown>[];
  onReply: (reply: Record<string, unknown>) => void;
}

/**
 * Celery's `app.control` from NestJS: broadcast remote-control commands to every worker listening
 * on the broker, Python or NestJS, and collect their replies. Injectable from `CeleryModule`.
 *
 * Requests go to the fanout exchange `celery.pidbox` exactly as kombu publishes them (JSON body
 * `{method, arguments, destination, pattern, matcher, ticket, reply_to}`, headers `clock` and
 * `expires`); replies come back on this process's own reply queue `<oid>.reply.celery.pidbox`
 * and are matched by ticket. Replies are by node name, as Python's `inspect()` flattens them.
 * With no reply before the timeout the result is empty (`{}`; Python's `inspect()` gives None,
 * its `ping()` `[]`). Needs an AMQP broker: with the in-memory broker every call rejects with a
 * CeleryConfigError.
 */
@Injectable()
export class CeleryControl implements OnApplicationShutdown {
  private readonly logger = new Logger('CeleryControl');
  /** kombu's Mailbox clock: forwarded for each request, adjusted by each reply. */
  readonly clock: LamportClock;
  private readonly transport: ControlTransport;
  private readonly collectors = new Map<string, Collector>();
  private readonly newTicket: () => string;
  private readonly nowSeconds: () => number;

  constructor(broker: Broker | null, deps: CeleryControlDeps = {}) {
    const onReply = (raw: RawControlReply) => this.onReply(raw);
    if (deps.transport) this.transport = deps.transport(onReply);
    else if (broker) this.transport = controlTransportFor(broker, onReply);
    else throw new InvalidControlRequestError('CeleryControl needs a broker or a transport');
    this.clock = deps.clock ?? new LamportClock();
    this.newTicket = deps.ticket ?? randomUUID;
    this.nowSeconds = deps.nowSeconds ?? (() => Date.now() / 1000);
  }

  /**
   * Python's `app.control.broadcast(command, arguments, destination, reply, timeout, limit,
   * callback)`: sends `method` to the nodes; with `reply`, resolves every reply message received
   * (`[{node: reply}, ...]`, not flattened), otherwise `[]` once it is published.
   */
  async broadcast<R = unknown>(method: string, options: BroadcastOptions = {}): Promise<ByNode<R>[]> {
    const destination = checkDestination(options.destination);
    const timeoutMs = options.timeout ?? DEFAULT_TIMEOUT_MS;
    if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs < 0) {
      throw new InvalidControlRequestError(`timeout must be a finite number of milliseconds >= 0, not ${String(timeoutMs)}`);
    }
    let limit = options.limit;
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) {
      throw new InvalidControlRequestError(`limit must be a positive integer, not ${String(limit)}`);
    }
    // kombu: with destinations and no limit, stop once every destination has answered
    if (limit === undefined && destination && destination.length > 0) limit = destination.length;
    const ticket = options.reply ? this.newTicket() : null;
    const request = encodeControlRequest({
      method,
      arguments: options.arguments,
      destination,
      reply: ticket ? { ticket, oid: this.transport.oid } : null,
      clock: this.clock.value + 1,
      nowSeconds: this.nowSeconds(),
      timeoutSeconds: timeoutMs / 1000,
    });
    this.clock.forward();
    if (!ticket) {
      await this.transport.publish(request);
      return [];
    }
    await this.transport.ready();
    return new Promise<ByNode<R>[]>((resolve, reject) => {
      const replies: Record<string, unknown>[] = [];
      let timer: NodeJS.Timeout | undefined;
      const finish = () => {
        clearTimeout(timer);
        this.collectors.delete(ticket);
        resolve(replies as ByNode<R>[]);
      };
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(finish, timeoutMs);
      };
      this.collectors.set(ticket, {
        replies,
        onReply: (reply) => {
          replies.push(reply);
          try {
            options.callback?.(reply);
          } catch (err) {
            this.logger.warn(`Control reply callback threw: ${err instanceof Error ? err.message : String(err)}`);
          }
          if (limit !== undefined && replies.length >= limit) finish();
          else arm();
        },
      });
      arm();
      this.transport.publish(request).catch((err: unknown) => {
        clearTimeout(timer);
        this.collectors.delete(ticket);
        reject(err);
      });
    });
  }

  private onReply(raw: RawControlReply): void {
    let decoded;
    try {
      decoded = decodeControlReply(raw);
    } catch (err) {
      this.logger.warn(`Dropped a control reply: ${err instanceof Error ? err.message : String(err)}`);
      return;
    }
    this.clock.adjust(decoded.clock);
    // kombu drops a reply whose `expires` has passed
    if (decoded.expires !== null && this.nowSeconds() > decoded.expires) return;
    const collector = decoded.ticket ? this.collectors.get(decoded.ticket) : undefined;
    collector?.onReply(decoded.replies);
  }

  /** Flattened by node name, as Python's `Inspect._prepare`; a node answering twice is logged (Celery warns). */
  private async request<R>(method: string, args: Record<string, unknown>, target: ControlTarget = {}): Promise<ByNode<R>> {
    const replies = await this.broadcast<R>(method, { ...target, arguments: args, reply: true });
    const { byNode, duplicates } = flattenReplies(replies);
    if (duplicates.length > 0) {
      this.logger.warn(`Received multiple replies from node name${duplicates.length > 1 ? 's' : ''}: ${duplicates.join(', ')}. Please make sure you give each node a unique nodename`);
    }
    return byNode;
  }

  /** Python's `app.control.ping()`: `{node: {ok: 'pong'}}` for every node that answered. */
  async ping(target: ControlTarget = {}): Promise<ByNode<PingReply>> {
    return this.request('ping', {}, target);
  }

  /** Python's `app.control.inspect(destination, timeout, limit)`: the read-only queries. */
  inspect(target: ControlTarget = {}): CeleryInspect {
    // bad options reject each query (as every other call does) rather than throw here
    return new CeleryInspect((method, args) => this.request(method, args, target));
  }

  /**
   * Python's `app.control.revoke(task_id, terminate, signal)`: workers flag the ids as revoked
   * (a later delivery is not run, stored REVOKED) and, with `terminate`, stop the task if it is
   * running. A cast unless `reply`: then `{node: {ok: 'tasks ... flagged as revoked'}}`.
   */
  async revoke(taskId: string | string[], options: RevokeOptions = {}): Promise<ByNode<CommandReply>> {
    checkTaskIds(taskId);
    return this.command('revoke', { task_id: taskId, terminate: options.terminate ?? false, signal: options.signal === undefined ? 'SIGTERM' : options.signal }, options);
  }

  /** Python's `app.control.terminate(task_id, signal)`: revoke with terminate. */
  async terminate(taskId: string | string[], options: Omit<RevokeOptions, 'terminate'> = {}): Promise<ByNode<CommandReply>> {
    return this.revoke(taskId, { ...options, terminate: true });
  }

  /**
   * Python's `app.control.revoke_by_stamped_headers(headers, terminate, signal)`: revoke the tasks
   * whose stamps match every header given (`{stamp: value or [values]}`).
   */
  async revokeByStampedHeaders(headers: Record<string, unknown>, options: RevokeOptions = {}): Promise<ByNode<CommandReply>> {
    if (typeof headers !== 'object' || headers === null || Array.isArray(headers) || Object.keys(headers).length === 0) {
      throw new InvalidControlRequestError('revokeByStampedHeaders needs an object of stamped headers to match, like {mystamp: "value"}');
    }
    return this.command('revoke_by_stamped_headers', { headers, terminate: options.terminate ?? false, signal: options.signal === undefined ? 'SIGTERM' : options.signal }, options);
  }

  /** Python's `app.control.rate_limit(task_name, rate_limit)`: `'10/s'`, `'100/m'`, `'2/h'` or tasks per second; 0 or null removes it. */
  async rateLimit(taskName: string, rateLimit: string | number | null, options: CommandOptions = {}): Promise<ByNode<CommandReply>> {
    checkTaskName(taskName, 'rateLimit');
    if (rateLimit !== null && typeof rateLimit !== 'string' && (typeof rateLimit !== 'number' || !Number.isFinite(rateLimit) || rateLimit < 0)) {
      throw new InvalidControlRequestError(`rateLimit of ${taskName} must be a rate like '10/m', a number of tasks per second, or null; got ${String(rateLimit)}`);
    }
    return this.command('rate_limit', { task_name: taskName, rate_limit: rateLimit }, options);
  }

  /** Python's `app.control.time_limit(task_name, soft, hard)`, in seconds (null: none). */
  async timeLimit(taskName: string, limits: { soft?: number | null; hard?: number | null }, options: CommandOptions = {}): Promise<ByNode<CommandReply>> {
    checkTaskName(taskName, 'timeLimit');
    for (const [k, v] of Object.entries(limits)) {
      if (v !== null && v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v < 0)) {
        throw new InvalidControlRequestError(`timeLimit ${k} of ${taskName} must be a number of seconds >= 0 or null; got ${String(v)}`);
      }
    }
    return this.command('time_limit', { task_name: taskName, hard: limits.hard ?? null, soft: limits.soft ?? null }, options);
  }

  /** Python's `app.control.add_consumer(queue, exchange, exchange_type, routing_key, options)`. */
  async addConsumer(queue: string, options: AddConsumerOptions = {}): Promise<ByNode<CommandReply>> {
    checkQueue(queue, 'addConsumer');
    return this.command(
      'add_consumer',
      { queue, exchange: options.exchange ?? null, exchange_type: options.exchangeType ?? 'direct', routing_key: options.routingKey ?? null, ...(options.options ?? {}) },
      options,
    );
  }

  /** Python's `app.control.cancel_consumer(queue)`. */
  async cancelConsumer(queue: string, options: CommandOptions = {}): Promise<ByNode<CommandReply>> {
    checkQueue(queue, 'cancelConsumer');
    return this.command('cancel_consumer', { queue }, options);
  }

  /** Python's `app.control.enable_events()`: workers start sending task events. */
  async enableEvents(options: CommandOptions = {}): Promise<ByNode<CommandReply>> {
    return this.command('enable_events', {}, options);
  }

  /** Python's `app.control.disable_events()`. */
  async disableEvents(options: CommandOptions = {}): Promise<ByNode<CommandReply>> {
    return this.command('disable_events', {}, options);
  }

  /** Python's `app.control.heartbeat()`: workers send a `worker-heartbeat` event now. */
  async heartbeat(options: CommandOptions = {}): Promise<ByNode<CommandReply>> {
    return this.command('heartbeat', {}, options);
  }

  /** Python's `app.control.shutdown()`: the workers (every one, unless `destination`) shut down warm. */
  async shutdown(options: CommandOptions = {}): Promise<ByNode<CommandReply>> {
    return this.command('shutdown', {}, options);
  }

  /** A command that acts: a cast (resolves `{}` once published) unless `reply`. */
  private async command(method: string, args: Record<string, unknown>, options: CommandOptions): Promise<ByNode<CommandReply>> {
    if (!options.reply) {
      await this.broadcast(method, { ...options, arguments: args, reply: false });
      return {};
    }
    return this.request<CommandReply>(method, args, options);
  }

  async onApplicationShutdown(): Promise<void> {
    for (const [ticket] of this.collectors) this.collectors.delete(ticket);
    await this.transport.close();
  }
}

/**
 * Python's `Inspect`: queries answered by every node named (or every node), by node name. A node
 * that does not answer within the timeout is absent; none at all gives `{}`.
 */
export class CeleryInspect {
  constructor(private readonly request: <R>(method: string, args: Record<string, unknown>) => Promise<ByNode<R>>) {}

  ping(): Promise<ByNode<PingReply>> {
    return this.request('ping', {});
  }

  /** Tasks running now. `safe` asks for args/kwargs as repr strings (Python's `safe`; null: the worker's default). */
  active(safe: boolean | null = null): Promise<ByNode<TaskRequestInfo[]>> {
    return this.request('active', { safe });
  }

  /** Tasks received and waiting for a slot (prefetched). */
  reserved(): Promise<ByNode<TaskRequestInfo[]>> {
    return this.request('reserved', {});
  }

  /** ETA / countdown tasks held until their time. */
  scheduled(): Promise<ByNode<ScheduledTaskInfo[]>> {
    return this.request('scheduled', {});
  }

  /** Registered task names (each `name [attr=value ...]` with `taskinfoitems`). */
  registered(...taskinfoitems: string[]): Promise<ByNode<string[]>> {
    return this.request('registered', { taskinfoitems });
  }

  stats(): Promise<ByNode<WorkerStatsReply>> {
    return this.request('stats', {});
  }

  activeQueues(): Promise<ByNode<ActiveQueueInfo[]>> {
    return this.request('active_queues', {});
  }

  /** Revoked task ids the worker remembers. */
  revoked(): Promise<ByNode<string[]>> {
    return this.request('revoked', {});
  }

  /** The worker's configuration (Python's `conf(with_defaults)`), keys as Celery's setting names. */
  conf(withDefaults = false): Promise<ByNode<Record<string, unknown>>> {
    return this.request('conf', { with_defaults: withDefaults });
  }

  /** Celery's `bugreport()` text: `{ok: text}`. */
  report(): Promise<ByNode<CommandReply>> {
    return this.request('report', {});
  }

  /**
   * Celery's mingle `hello`: asks each node for its revoked ids (and Lamport clock) and gives it
   * ours, as a starting worker does (lib/worker/mingle.ts).
   */
  async hello(fromNode: string, revoked: string[] | null = null): Promise<ByNode<{ revoked?: unknown; clock?: number }>> {
    if (typeof fromNode !== 'string' || fromNode.length === 0) throw new InvalidControlRequestError('hello needs this node\'s name (from_node)');
    return this.request('hello', { from_node: fromNode, revoked });
  }

  /** What each worker knows of these task ids: `{id: [state, request info]}`. */
  async queryTask(...ids: (string | string[])[]): Promise<ByNode<QueryTaskReply>> {
    const flat = ids.flat();
    checkTaskIds(flat);
    return this.request('query_task', { ids: flat });
  }
}

function checkTaskIds(ids: string | string[]): void {
  const list = Array.isArray(ids) ? ids : [ids];
  if (list.length === 0) throw new InvalidControlRequestError('no task id given');
  for (const id of list) {
    if (typeof id !== 'string' || id.length === 0) throw new InvalidControlRequestError(`a task id must be a non-empty string, not ${JSON.stringify(id)}`);
  }
}

function checkTaskName(name: string, what: string): void {
  if (typeof name !== 'string' || name.length === 0) throw new InvalidControlRequestError(`${what} needs a task name (a non-empty string), not ${JSON.stringify(name)}`);
}

function checkQueue(queue: string, what: string): void {
  if (typeof queue !== 'string' || queue.length === 0) throw new InvalidControlRequestError(`${what} needs a queue name (a non-empty string), not ${JSON.stringify(queue)}`);
}
