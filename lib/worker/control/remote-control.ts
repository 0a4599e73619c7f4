import type { Logger } from '@nestjs/common';
import type { Broker, ConsumerHandle, Delivery } from '../../broker/broker.interface';
import type { ResolvedCeleryConfig } from '../../config/resolved-config';
import type { TaskRegistry } from '../../discovery/task.registry';
import { TaskRevokedError } from '../../errors/task-exceptions';
import { redactUrl } from '../../broker/redact-url';
import { toAmqpFieldTable } from '../../protocol/amqp-field-table';
import {
  CONTROL_EXCHANGE,
  CONTROL_QUEUE_EXPIRES_MS,
  CONTROL_QUEUE_TTL_MS,
  InvalidControlMessageError,
  isAddressedTo,
  nok,
  ok,
  parseControlRequest,
  queryTaskReply,
  queueAsDict,
  registeredReply,
  replyBody,
  replyExpired,
  REPLY_EXCHANGE,
  requestInfo,
  revokeReply,
  rusageOf,
  scheduledEntry,
  stampedHeadersOf,
  stampedHeadersRepr,
  taskIdsOf,
  terminateReply,
  truthy,
  unknownCommandReply,
  type ControlRequest,
  type RegisteredTaskInfo,
} from '../../protocol/control';
import { parsePythonJson } from '../../protocol/python-json';
import { parseRate } from '../../protocol/rate';
import { celeryException } from '../../protocol/exceptions';
import type { MessageProperties } from '../../protocol/task-message';
import type { QueueDeclaration, TopologyStep } from '../../protocol/routing';
import type { ResultToStore } from '../../protocol/result-row';
import type { StoreOutcome } from '../../results/result-writer';
import { LimitedSet } from './limited-set';
import type { RequestTracker } from './request-tracker';

/**
 * Task events switched at run time (`enable_events` / `disable_events`, `heartbeat`): the events
 * side of the worker provides it; without it those commands answer as a Celery worker without an
 * event dispatcher does.
 */
export interface TaskEventsSwitch {
  enableTaskEvents(): unknown;
  disableTaskEvents(): unknown;
  /** Whether task events are on now (for Celery's "already enabled" replies). */
  readonly taskEventsEnabled?: boolean;
  /** Sends a worker-heartbeat now. */
  sendHeartbeatNow?(): unknown;
}

/** What remote control needs from the worker it belongs to. */
export interface ControlledWorker {
  readonly tracker: RequestTracker;
  /** Fires the AbortSignal of a running task (every delivery of it); false when not running here. */
  abortTask(taskId: string, reason: Error): boolean;
  setRateLimit(taskName: string, rate: string | number | null): void;
  /** Sets a task's time limits (seconds, null: none); false for an unknown task. */
  setTimeLimits(taskName: string, soft: number | null, hard: number | null): boolean;
  addConsumer(queue: string): Promise<void>;
  cancelConsumer(queue: string): Promise<void>;
  /** The queues consumed now, as declared. */
  consumedQueues(): QueueDeclaration[];
  /** Celery's `prefetch_count` now. */
  prefetchCount(): number;
  /** Stores a REVOKED result (a SUCCESS already stored is kept). */
  storeDurably(result: ResultToStore, checkFirst: boolean): Promise<StoreOutcome>;
  /** Stops the worker and the application (Celery's `shutdown` command). */
  shutdown(): void;
}

/** The `celery.pidbox` fanout exchange, this node's queue `<nodename>.celery.pidbox` (Celery 5.7's arguments) and its binding. */
export function pidboxTopology(nodename: string): { queue: string; steps: TopologyStep[] } {
  const queue = `${nodename}.celery.pidbox`;
  return {
    queue,
    steps: [
      { kind: 'exchange.declare', exchange: CONTROL_EXCHANGE, type: 'fanout', durable: false, autoDelete: false },
      {
        kind: 'queue.declare',
        queue,
        durable: false,
        // Celery 5.7's control_queue_exclusive: a second process with this node name is refused (405)
        exclusive: true,
        autoDelete: true,
        arguments: { 'x-message-ttl': CONTROL_QUEUE_TTL_MS, 'x-expires': CONTROL_QUEUE_EXPIRES_MS },
      },
      { kind: 'queue.bind', queue, exchange: CONTROL_EXCHANGE, routingKey: '' },
    ],
  };
}

const REPLY_EXCHANGE_STEP: TopologyStep[] = [{ kind: 'exchange.declare', exchange: REPLY_EXCHANGE, type: 'direct', durable: false, autoDelete: false }];

/** Commands of type `inspect` in Celery (read only): an expired request for one is dropped unanswered. */
const INSPECT_COMMANDS = new Set(['ping', 'active', 'reserved', 'scheduled', 'registered', 'stats', 'active_queues', 'revoked', 'conf', 'report', 'query_task', 'clock',
  'dump_active', 'dump_reserved', 'dump_schedule', 'dump_tasks', 'dump_revoked', 'dump_conf']);

type Handler = (args: Record<string, unknown>) => unknown;

/**
 * Answers Celery's remote control (kombu's pidbox) for one NestJS worker node: consumes its own
 * queue bound to the `celery.pidbox` fanout exchange, without acknowledgements, and replies to
 * the requester's queue through `reply.celery.pidbox` with its ticket — as celery/worker/pidbox.py
 * and control.py do. A message it cannot read is logged and dropped.
 */
export class RemoteControl {
  /** Revoked task ids (Celery's `worker_state.revoked`): a later delivery of one is not run. */
  readonly revoked = new LimitedSet();
  /** Revoked stamped headers (`revoke_by_stamped_headers`): name → stamps. */
  readonly revokedStamps = new Map<string, Set<string>>();
  private clock = 0;
  private handle: ConsumerHandle | null = null;
  private events: TaskEventsSwitch | null = null;
  private readonly startedAt = Date.now();
  private readonly handlers: Record<string, Handler>;

  constructor(
    private readonly nodename: string,
    private readonly broker: Broker,
    private readonly config: ResolvedCeleryConfig,
    private readonly registry: TaskRegistry,
    private readonly worker: ControlledWorker,
    private readonly logger: Logger,
  ) {
    const refuse = new Set(config.worker.remoteControlRefuse);
    const h: Record<string, Handler> = {
      ping: () => ok('pong'),
      clock: () => ({ clock: this.clock }),
      active: (a) => worker.tracker.list('active').map((r) => requestInfo(r, truthy(a.safe))),
      reserved: () => worker.tracker.list('reserved').map((r) => requestInfo(r)),
      scheduled: () => worker.tracker.list('scheduled').map((r) => scheduledEntry(r)),
      query_task: (a) => queryTaskReply(worker.tracker.find(taskIdsOf(a.ids))),
      registered: (a) => registeredReply(this.registeredInfo(), a.taskinfoitems, a.builtins),
      revoked: () => this.revoked.values(),
      stats: () => this.stats(),
      active_queues: () => worker.consumedQueues().map(queueAsDict),
      conf: (a) => this.conf(truthy(a.with_defaults)),
      report: () => ok(this.report()),
      revoke: (a) => this.revoke(taskIdsOf(a.task_id), truthy(a.terminate)),
      terminate: (a) => this.revoke(taskIdsOf(a.task_id), true),
      revoke_by_stamped_headers: (a) => this.revokeByStampedHeaders(a.headers, truthy(a.terminate)),
      rate_limit: (a) => this.rateLimit(a.task_name, a.rate_limit),
      time_limit: (a) => this.timeLimit(a.task_name, a.soft, a.hard),
      add_consumer: (a) => this.addConsumer(a.queue),
      cancel_consumer: (a) => this.cancelConsumer(a.queue),
      enable_events: () => this.switchEvents(true),
      disable_events: () => this.switchEvents(false),
      heartbeat: () => {
        this.events?.sendHeartbeatNow?.();
        return null;
      },
      hello: (a) => this.hello(a.from_node, a.revoked),
      shutdown: (a) => {
        this.logger.warn(typeof a.msg === 'string' ? a.msg : 'Got shutdown from remote');
        setImmediate(() => worker.shutdown());
        return undefined; // Celery's worker raises WorkerShutdown: no reply
      },
    };
    // Celery's aliases
    Object.assign(h, { dump_active: h.active, dump_reserved: h.reserved, dump_schedule: h.scheduled, dump_tasks: h.registered, dump_revoked: h.revoked, dump_conf: h.conf });
    for (const name of refuse) {
      h[name] = () => nok(`command ${name} refused by this worker's configuration (worker.remoteControl.refuse)`);
    }
    this.handlers = h;
  }

  /** Task events switched by enable_events / disable_events (the events side gives it). */
  useEvents(events: TaskEventsSwitch | null): void {
    this.events = events;
  }

  /** Lamport clock value (Celery's `app.clock`), kept from the control messages seen. */
  get clockValue(): number {
    return this.clock;
  }

  /**
   * Declares and consumes this node's pidbox queue. A failure does not stop the worker: it runs
   * without remote control and says why — most often another process already has this node name
   * (the queue is exclusive, RabbitMQ answers 405 RESOURCE_LOCKED), as kombu warns "A node named …
   * is already using this process mailbox".
   */
  async start(): Promise<void> {
    const { queue, steps } = pidboxTopology(this.nodename);
    try {
      this.handle = await this.broker.consume(queue, 1, (delivery) => void this.onMessage(delivery), { declare: steps, noAck: true });
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      const inUse = /RESOURCE_LOCKED|405/.test(why);
      this.logger.error(
        inUse
          ? `A node named ${this.nodename} is already using its remote-control queue ${queue}: this worker does not answer remote control. Give each worker a unique worker.hostname.`
          : `Remote control unavailable (could not consume ${queue}: ${why}); the worker runs without it`,
      );
      return;
    }
    this.logger.log(`Remote control: node ${this.nodename} answers on ${queue}`);
  }

  async stop(): Promise<void> {
    const handle = this.handle;
    this.handle = null;
    await handle?.cancel();
  }

  /** Whether a task id (or one of its stamps) was revoked here. */
  isRevoked(taskId: string, headers?: Record<string, unknown>): boolean {
    if (this.revoked.has(taskId)) return true;
    if (this.revokedStamps.size === 0 || !headers) return false;
    for (const [name, stamps] of this.revokedStamps) {
      const value = headers[name];
      const values = Array.isArray(value) ? value : [value];
      if (values.some((v) => typeof v === 'string' && stamps.has(v))) return true;
    }
    return false;
  }

  /** Handles one message; never throws (a bad message is logged and dropped). */
  async onMessage(delivery: Pick<Delivery, 'body' | 'headers' | 'contentType' | 'contentEncoding'>): Promise<void> {
    this.clock++; // Celery's Pidbox.on_message forwards the clock on every message
    let request: ControlRequest;
    try {
      request = parseControlRequest(decodeBody(delivery), delivery.headers);
      this.clock = Math.max(this.clock, request.clock) + 1;
      if (!isAddressedTo(request, this.nodename)) return;
    } catch (err) {
      this.logger.error(`Dropped a remote-control message: ${err instanceof Error ? err.message : String(err)}`);
      return;
    }
    if (INSPECT_COMMANDS.has(request.method) && replyExpired(request, Date.now() / 1000)) {
      this.logger.warn(`Dropped remote-control ${request.method}: it expired before it arrived (nobody collects the reply)`);
      return;
    }
    let reply: unknown;
    const handler = Object.prototype.hasOwnProperty.call(this.handlers, request.method) ? this.handlers[request.method] : undefined;
    if (!handler) {
      this.logger.error(`No such control command: ${request.method}`);
      reply = unknownCommandReply(request.method);
    } else {
      try {
        reply = await handler(request.arguments);
      } catch (err) {
        this.logger.error(`Remote-control command ${request.method} failed: ${err instanceof Error ? err.message : String(err)}`);
        reply = nok(pyErrorRepr(err));
      }
    }
    if (reply === undefined || !request.replyTo) return;
    await this.reply(request, reply);
  }

  private async reply(request: ControlRequest, reply: unknown): Promise<void> {
    const replyTo = request.replyTo as NonNullable<ControlRequest['replyTo']>;
    try {
      await this.broker.declareTopology(replyTo.exchange === REPLY_EXCHANGE ? REPLY_EXCHANGE_STEP : [{ ...REPLY_EXCHANGE_STEP[0], exchange: replyTo.exchange } as TopologyStep], `pidbox reply exchange ${replyTo.exchange}`);
      this.clock++;
      const properties = { contentType: 'application/json', contentEncoding: 'utf-8', deliveryMode: 1 } as MessageProperties; // no correlation id: kombu sends none
      await this.broker.publish('', {
        headers: toAmqpFieldTable({ ticket: request.ticket, clock: this.clock }),
        properties,
        body: Buffer.from(JSON.stringify(replyBody(this.nodename, reply)), 'utf8'),
      }, { exchange: replyTo.exchange, routingKey: replyTo.routingKey });
    } catch (err) {
      this.logger.warn(`Could not send the reply to remote-control ${request.method}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private registeredInfo(): RegisteredTaskInfo[] {
    return this.registry.all().map((t) => {
      const rate = this.rateOf(t.name, t.options?.rateLimit);
      return {
        name: t.name,
        attributes: {
          rate_limit: rate,
          queue: t.queue,
          time_limit: t.options?.timeLimit ?? null,
          soft_time_limit: t.options?.softTimeLimit ?? null,
          ignore_result: t.ignoreResult ? 'True' : 'False',
        },
      };
    });
  }

  private readonly rates = new Map<string, string | number | null>();

  private rateOf(name: string, option: unknown): string | number | null {
    if (this.rates.has(name)) return this.rates.get(name) ?? null;
    return typeof option === 'string' || typeof option === 'number' ? option : null;
  }

  /**
   * Celery's mingle `hello` (a Python worker starting with mingle asks every node): the revoked ids
   * it sends are added here, and ours go back as Celery's `LimitedSet._data`
   * (`{id: [timestamp, id]}`, the timestamp in seconds of our monotonic clock, always a float)
   * with our clock. Our own hello is not answered (null), as Celery's.
   */
  private hello(fromNode: unknown, revoked: unknown): unknown {
    if (fromNode === this.nodename) return null;
    if (revoked && typeof revoked === 'object' && !Array.isArray(revoked)) {
      for (const id of Object.keys(revoked)) this.revoked.add(id);
    }
    this.revoked.purge();
    const data: Record<string, [number, string]> = {};
    for (const [id, ms] of this.revoked.entries()) data[id] = [Number.isInteger(ms / 1000) ? ms / 1000 + 1e-6 : ms / 1000, id];
    this.clock++;
    return { revoked: data, clock: this.clock };
  }

  private async revoke(ids: string[], terminate: boolean): Promise<unknown> {
    for (const id of ids) this.revoked.add(id);
    // Celery 5.6.2+: every worker that gets the broadcast stores REVOKED at once (a SUCCESS stays)
    await Promise.all(ids.map((id) => this.storeRevoked(id)));
    if (terminate) {
      const terminated = ids.filter((id) => this.worker.abortTask(id, new TaskRevokedError('terminated')));
      for (const id of terminated) this.logger.log(`Terminating ${id} (revoked)`);
      return terminateReply(terminated);
    }
    if (ids.length > 0) this.logger.log(`Tasks flagged as revoked: ${ids.join(', ')}`);
    return revokeReply(ids, this.config.peerCompat === '5.2' ? '5.2' : '5.3');
  }

  private async storeRevoked(taskId: string): Promise<void> {
    try {
      await this.worker.storeDurably({ taskId, status: 'REVOKED', result: celeryException('TaskRevokedError', 'revoked'), traceback: null, children: null }, true);
    } catch (err) {
      this.logger.warn(`Failed to mark task ${taskId} as revoked in backend: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private revokeByStampedHeaders(value: unknown, terminate: boolean): unknown {
    const headers = stampedHeadersOf(value);
    for (const [name, stamps] of Object.entries(headers)) {
      const set = this.revokedStamps.get(name) ?? new Set<string>();
      for (const s of stamps) set.add(String(s));
      this.revokedStamps.set(name, set);
    }
    const repr = stampedHeadersRepr(Array.isArray(value) ? headers : (value as Record<string, unknown>));
    if (!terminate) return ok(`headers ${repr} flagged as revoked, but not terminated`);
    const hit: Record<string, Set<string>> = {};
    for (const r of this.worker.tracker.list('active')) {
      const h = this.worker.tracker.headersOf(r.id) ?? {};
      for (const [name, stamps] of Object.entries(headers)) {
        const actual = Array.isArray(h[name]) ? (h[name] as unknown[]) : [h[name]];
        const matched = actual.filter((v) => stamps.includes(v));
        if (matched.length > 0 && this.worker.abortTask(r.id, new TaskRevokedError('terminated'))) {
          hit[name] ??= new Set();
          for (const m of matched) hit[name].add(String(m));
        }
      }
    }
    if (Object.keys(hit).length === 0) return ok(`headers ${repr} were not terminated`);
    return ok(`headers ${stampedHeadersRepr(Object.fromEntries(Object.entries(hit).map(([k, v]) => [k, [...v]])))} revoked`);
  }

  private rateLimit(taskName: unknown, rate: unknown): unknown {
    if (typeof taskName !== 'string' || !this.registry.has(taskName)) {
      this.logger.error(`Rate limit attempt for unknown task ${String(taskName)}`);
      return nok('unknown task');
    }
    if (rate !== null && rate !== undefined && rate !== '' && rate !== 0) {
      if (typeof rate !== 'string' && typeof rate !== 'number') return nok(`Invalid rate limit string: ${JSON.stringify(rate)}`);
      try {
        parseRate(rate, taskName);
      } catch (err) {
        return nok(`Invalid rate limit string: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    const value = rate === undefined || rate === '' || rate === 0 ? null : (rate as string | number | null);
    this.worker.setRateLimit(taskName, value);
    this.rates.set(taskName, value);
    if (value === null) return ok('rate limit disabled successfully');
    return ok('new rate limit set successfully');
  }

  private timeLimit(taskName: unknown, soft: unknown, hard: unknown): unknown {
    const seconds = (v: unknown): number | null => (typeof v === 'number' && v > 0 ? v : typeof v === 'string' && Number(v) > 0 ? Number(v) : null);
    if (typeof taskName !== 'string' || !this.worker.setTimeLimits(taskName, seconds(soft), seconds(hard))) {
      this.logger.error(`Change time limit attempt for unknown task ${String(taskName)}`);
      return nok('unknown task');
    }
    this.logger.log(`New time limits for tasks of type ${taskName}: soft=${String(soft ?? null)} hard=${String(hard ?? null)}`);
    return ok('time limits set successfully');
  }

  private addConsumer(queue: unknown): unknown {
    if (typeof queue !== 'string' || queue === '') return nok(`queue must be a queue name, got ${JSON.stringify(queue)}`);
    // Celery answers at once and adds the consumer soon after (call_soon)
    this.worker.addConsumer(queue).catch((err: unknown) => this.logger.error(`add_consumer ${queue} failed: ${err instanceof Error ? err.message : String(err)}`));
    return ok(`add consumer ${queue}`);
  }

  private cancelConsumer(queue: unknown): unknown {
    if (typeof queue !== 'string' || queue === '') return nok(`queue must be a queue name, got ${JSON.stringify(queue)}`);
    this.worker.cancelConsumer(queue).catch((err: unknown) => this.logger.error(`cancel_consumer ${queue} failed: ${err instanceof Error ? err.message : String(err)}`));
    return ok(`no longer consuming from ${queue}`);
  }

  private switchEvents(on: boolean): unknown {
    const events = this.events;
    if (!events) return nok('event dispatcher unavailable');
    const was = events.taskEventsEnabled;
    if (on) {
      if (was === true) return ok('task events already enabled');
      events.enableTaskEvents();
      return ok('task events enabled');
    }
    if (was === false) return ok('task events already disabled');
    events.disableTaskEvents();
    return ok('task events disabled');
  }

  /** inspect stats: Celery's keys (worker info, pool, consumer, rusage), filled for this process. */
  private stats(): Record<string, unknown> {
    const w = this.config.worker;
    return {
      broker: brokerInfo(this.config.brokerUrl),
      clock: String(this.clock),
      pid: process.pid,
      pool: {
        implementation: 'nestjs-celery:event-loop',
        'max-concurrency': w.concurrency,
        processes: [process.pid],
        'isolated-threads': w.isolatedThreads,
      },
      prefetch_count: this.worker.prefetchCount(),
      rusage: rusageOf(process.resourceUsage()),
      total: { ...this.worker.tracker.totals },
      uptime: Math.round((Date.now() - this.startedAt) / 1000),
    };
  }

  /** inspect conf: Celery's setting names this worker has, as Python lists them (the broker password masked). */
  private conf(withDefaults: boolean): Record<string, unknown> {
    const c = this.config;
    const out: Record<string, unknown> = {
      accept_content: c.accept,
      broker_url: redactUrl(c.brokerUrl),
      result_backend: c.resultBackend,
      task_default_queue: c.defaultQueue,
      worker_concurrency: c.worker.concurrency,
      worker_enable_remote_control: c.worker.enableRemoteControl,
    };
    if (withDefaults) {
      Object.assign(out, {
        task_time_limit: c.tasks.timeLimit,
        task_soft_time_limit: c.tasks.softTimeLimit,
        task_track_started: c.tasks.trackStarted,
        task_ignore_result: c.tasks.ignoreResult,
        result_extended: c.resultExtended,
      });
    }
    return out;
  }

  private report(): string {
    return [
      '',
      `software -> nestjs-celery node:${process.versions.node}`,
      `platform -> system:${process.platform} arch:${process.arch}`,
      `settings -> transport:amqp results:${this.config.resultBackend}`,
      '',
      `broker_url: ${JSON.stringify(redactUrl(this.config.brokerUrl)).replace(/"/g, "'")}`,
      `task_default_queue: '${this.config.defaultQueue}'`,
      '',
    ].join('\n');
  }
}

function decodeBody(delivery: Pick<Delivery, 'body' | 'contentType' | 'contentEncoding'>): unknown {
  if (delivery.contentType && delivery.contentType !== 'application/json') {
    throw new InvalidControlMessageError(`content type ${delivery.contentType} is not accepted (json only, as Celery's pidbox)`);
  }
  try {
    return parsePythonJson(delivery.body.toString('utf8'));
  } catch (err) {
    throw new InvalidControlMessageError(`the body is not JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** kombu's `{'error': repr(exc)}` for a handler that raised: `TypeError('...')`. */
function pyErrorRepr(err: unknown): string {
  const name = err instanceof Error ? err.name : 'Error';
  const message = err instanceof Error ? err.message : String(err);
  return `${name}('${message.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}')`;
}

/** Celery's `stats()['broker']` (kombu's `Connection.info()`), from the broker URL. */
function brokerInfo(url: string): Record<string, unknown> {
  let u: URL | null = null;
  try {
    u = new URL(url.replace(/^pyamqp:/i, 'amqp:'));
  } catch {
    // not a URL (memory://): what little is known
  }
  const ssl = u?.protocol === 'amqps:';
  return {
    alternates: [],
    connect_timeout: 4,
    failover_strategy: 'round-robin',
    heartbeat: null,
    hostname: u?.hostname || null,
    insist: false,
    login_method: 'PLAIN',
    port: u ? Number(u.port || (ssl ? 5671 : 5672)) : null,
    ssl,
    transport: u ? u.protocol.replace(/:$/, '') : url,
    transport_options: {},
    uri_prefix: null,
    userid: u ? decodeURIComponent(u.username) || 'guest' : null,
    virtual_host: u ? decodeURIComponent(u.pathname.replace(/^\//, '')) || '/' : null,
  };
}
