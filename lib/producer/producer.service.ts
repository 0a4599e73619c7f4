import { Inject, Injectable, Logger, Optional, Type } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { Broker } from '../broker/broker.interface';
import { CELERY_CONFIG } from '../celery.constants';
import type { ResolvedCeleryConfig } from '../config/resolved-config';
import { TaskMetadataAccessor, taskNameOf } from '../discovery/task-metadata.accessor';
import { TaskRegistry } from '../discovery/task.registry';
import { TaskNotRegisteredError } from '../errors/celery.errors';
import { encodeTaskMessage, type TaskMessageSpec } from '../protocol/task-message';
import { routeTask, type Destination } from '../protocol/routing';
import { queueTableOf } from '../config/queue-table';
import { publishRouted } from './routed-publish';
import { AsyncResult, GroupResult } from '../results/async-result';
import { planChain, planChord, planGroup, Signature, type CanvasMessage, type ChordCompletion, type FreezeContext, type GroupSignature, type SignatureOptions } from '../protocol/canvas';
import { ResultStore } from '../results/result-store.interface';
import { CeleryControl } from '../control/celery-control';
import { NOTIFY_HEADER, ResultNotifier } from '../results/result-notifier';
import { CeleryClock } from '../events/event-clock';
import { EventDispatcher } from '../events/event-dispatcher';
import { taskMessageInfo, taskSentFields } from '../protocol/events';
import { tracePublish } from '../tracing/task-tracing';

/** Options of one task call, as Celery's `apply_async`. */
export interface SendTaskOptions {
  /** Positional arguments. */
  args?: unknown[];
  /** Keyword arguments (bound by parameter name on a NestJS worker, by keyword on a Python one). */
  kwargs?: Record<string, unknown>;
  /** Run no earlier than this many seconds from now. */
  countdown?: number;
  /** Run no earlier than this time. */
  eta?: Date;
  /** Seconds from now, or a time, after which the task is not run (REVOKED `expired`). */
  expires?: number | Date;
  /**
   * Queue to send to (a `taskQueues` name, or any name: then its own direct exchange, as Celery).
   * Default: the task's `@Task({ queue })`, else the first matching `taskRoutes`, else `defaultQueue`.
   */
  queue?: string;
  /** Exchange to publish to (Celery's `exchange`); with `routingKey`, instead of the queue's. */
  exchange?: string;
  /** Routing key (Celery's `routing_key`); used with a non-direct exchange or an explicit `exchange`. */
  routingKey?: string;
  /** Task id; default a random UUID. */
  taskId?: string;
  /** AMQP message priority (0–255; the queue needs `x-max-priority` for it to matter). Default: the route's, else `defaultPriority`. */
  priority?: number;
  /** Ask the worker to store no result. */
  ignoreResult?: boolean;
  /** Hard and soft time limits in seconds (Celery's `time_limit` / `soft_time_limit`). */
  timeLimit?: number;
  softTimeLimit?: number;
  /** Extra message headers; they reach the task's request. */
  headers?: Record<string, unknown>;
  /** The retry count the message carries (Celery's `retries`); default 0. */
  retries?: number;
  /** Compress the body: `zlib` (what kombu calls gzip) or `brotli`. */
  compression?: 'zlib' | 'gzip' | 'brotli';
}

/** How long after sending a task get() waits for the worker's push before reading the store. */
const PUSH_GRACE_MS = 2000;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyMethod = (...args: any[]) => any;
type MethodKeys<C> = { [K in keyof C]: C[K] extends AnyMethod ? K : never }[keyof C] & string;

/**
 * A typed reference to a `@Task()` method: `delay(...)` takes exactly the method's parameters and
 * the result resolves to its return type. Get one with `producer.task(TasksService, 'sortWords')`.
 */
export class TaskSignature<F extends AnyMethod> {
  constructor(
    readonly name: string,
    private readonly producer: Producer,
    private readonly defaults: Pick<SendTaskOptions, 'queue' | 'ignoreResult'>,
  ) {}

  /** Sends the task with positional arguments, like Celery's `delay()`. */
  delay(...args: Parameters<F>): Promise<AsyncResult<Awaited<ReturnType<F>>>> {
    return this.applyAsync(args);
  }

  /** Sends the task with positional arguments and options (kwargs, countdown, eta, expires, ...). */
  applyAsync(args: Parameters<F> | Partial<Parameters<F>> | [], options: Omit<SendTaskOptions, 'args'> = {}): Promise<AsyncResult<Awaited<ReturnType<F>>>> {
    return this.producer.sendTask<Awaited<ReturnType<F>>>(this.name, { ...this.defaults, ...options, args: args as unknown[] });
  }
}

/** The result type of a signature (unknown for one made by name). */
export type SignatureResult<S> = S extends Signature<infer R> ? R : unknown;
/** The last element of a tuple of signatures. */
type LastOf<T extends readonly unknown[]> = T extends readonly [...unknown[], infer L] ? L : T[number];
/** What `chain()` resolves: the last step's AsyncResult, or the GroupResult of a last group. */
export type ChainResult<S extends Signature[]> = LastOf<S> extends GroupSignature ? GroupResult : AsyncResult<SignatureResult<LastOf<S>>>;

/**
 * Sends Celery tasks (protocol v2, JSON) to RabbitMQ and returns `AsyncResult` handles. Works for
 * tasks of any language: by name (`sendTask('tasks.sortWords', ...)`) or, for `@Task()` methods,
 * through a typed reference (`task(TasksService, 'sortWords').delay(...)`).
 */
@Injectable()
export class Producer {
  private readonly origin = `gen${process.pid}@${hostname()}`;
  private readonly logger = new Logger('CeleryProducer');
  private readonly replyTo = randomUUID();

  constructor(
    @Inject(CELERY_CONFIG) private readonly config: ResolvedCeleryConfig,
    private readonly broker: Broker,
    private readonly results: ResultStore,
    private readonly registry: TaskRegistry,
    private readonly accessor: TaskMetadataAccessor,
    @Optional() @Inject(ResultNotifier) private readonly notifier: ResultNotifier | null = null,
    @Optional() @Inject(CeleryClock) clock: CeleryClock | null = null,
    /** Sends `AsyncResult.revoke()`. */
    @Optional() @Inject(CeleryControl) private readonly control: CeleryControl | null = null,
  ) {
    // Celery's `task_send_sent_event`: `task-sent` from the sender, named by its origin (`gen<pid>@<host>`)
    this.sentEvents = config.events.taskSendSentEvent ? new EventDispatcher({ broker, hostname: this.origin, clock: clock ?? new CeleryClock(), logger: this.logger }) : null;
  }

  private readonly sentEvents: EventDispatcher | null;

  /**
   * Publishes a task by name and resolves once the broker has confirmed the message.
   * `T` is the expected result type.
   */
  async sendTask<T = unknown>(name: string, options: SendTaskOptions = {}): Promise<AsyncResult<T>> {
    const id = options.taskId ?? randomUUID();
    const destination = this.route(name, options);
    await this.publishMessage(
      {
        task: name,
        id,
        args: options.args ?? [],
        kwargs: options.kwargs ?? {},
        countdown: options.countdown,
        eta: options.eta,
        expires: options.expires,
        priority: options.priority,
        ignoreResult: options.ignoreResult,
        timeLimit: options.timeLimit,
        softTimeLimit: options.softTimeLimit,
        retries: options.retries,
        compression: options.compression,
        headers: options.headers,
      },
      destination,
    );
    // A push is expected soon after the send; later get() calls read the store at once.
    return this.handle<T>(id, true, null, routeKeyOf(destination));
  }

  /**
   * Encodes and publishes one task message where `destination` says: the priority defaults to the
   * route's, then `defaultPriority` (an explicit null sends none, as chord_unlock); our reply_to and
   * the push header are added.
   */
  private publishMessage(spec: TaskMessageSpec, destination: Destination): Promise<void> {
    // a PRODUCER span when an OpenTelemetry SDK is registered; its `traceparent` goes in the headers
    return tracePublish(spec, destination, (trace) => this.publishEncoded(trace ? { ...spec, headers: { ...spec.headers, ...trace } } : spec, destination));
  }

  private async publishEncoded(spec: TaskMessageSpec, destination: Destination): Promise<void> {
    const priority = spec.priority === null ? null : (spec.priority ?? destination.priority ?? this.config.defaultPriority ?? undefined);
    const message = encodeTaskMessage(
      {
        ...spec,
        priority,
        replyTo: spec.replyTo ?? this.replyTo,
        headers: this.notifier ? { ...spec.headers, [NOTIFY_HEADER]: this.notifier.queue } : spec.headers,
      },
      { nowMicros: Date.now() * 1000, origin: this.origin, peer: this.config.peerCompat },
    );
    await publishRouted(this.broker, queueTableOf(this.config), destination, { headers: message.amqpHeaders, properties: message.properties, body: message.body }, this.logger);
    if (this.sentEvents) {
      const h = message.headers;
      const info = taskMessageInfo({ id: spec.id, task: spec.task, rootId: h.root_id as string, parentId: h.parent_id as string | null, retries: h.retries as number, headers: h, args: spec.args, kwargs: spec.kwargs });
      this.sentEvents.send('task-sent', taskSentFields(info, { queue: destination.queue?.name ?? null, exchange: destination.exchange, routingKey: destination.routingKey }));
    }
  }

  /** A handle on a task id; `sentNow`: this process has just sent it, so a push is expected. */
  private handle<T>(id: string, sentNow: boolean, parent: AsyncResult | null = null, route?: string): AsyncResult<T> {
    const pushUntil = sentNow && this.notifier ? Date.now() + PUSH_GRACE_MS : 0;
    return new AsyncResult<T>(id, this.results, this.config.resultPollIntervalMs, this.notifier, pushUntil, parent, this.control, route);
  }

  /** Where the task goes: Celery's router (lib/protocol/routing.ts) over `taskQueues` / `taskRoutes`. */
  private route(name: string, options: SendTaskOptions): Destination {
    const countdown = options.countdown ?? (options.eta ? (options.eta.getTime() - Date.now()) / 1000 : null);
    return routeTask(queueTableOf(this.config), name, {
      explicit: { queue: options.queue, exchange: options.exchange, routingKey: options.routingKey, priority: options.priority },
      task: { queue: this.registry.get(name)?.queue ?? undefined, priority: this.config.defaultPriority ?? undefined },
      args: options.args,
      kwargs: options.kwargs,
      delaySeconds: countdown,
    });
  }

  /** A typed reference to a `@Task()` method of `type`; argument types are checked at compile time. */
  task<C, K extends MethodKeys<C>>(type: Type<C>, method: K): TaskSignature<Extract<C[K], AnyMethod>> {
    const metadata = this.accessor.getTaskMetadataOf(type, method);
    if (!metadata) throw new TaskNotRegisteredError(`${type.name}.${method} (the method has no @Task() decorator)`);
    const name = taskNameOf(type.name, metadata);
    return new TaskSignature(name, this, { queue: metadata.queue, ignoreResult: metadata.ignoreResult });
  }

  /**
   * A typed signature of a `@Task()` method (Celery's `add.s(2)`): the compiler checks the partial
   * arguments against the method's parameters, and chain / chord results take its return type.
   * The task's `@Task({ queue })` goes into the signature's options, so a Python worker that
   * publishes it (as the next chain step, a callback, a chord body) sends it to that queue too.
   */
  signature<C, K extends MethodKeys<C>>(
    type: Type<C>,
    method: K,
    args: Partial<Parameters<Extract<C[K], AnyMethod>>> | [] = [],
    options: SignatureOptions = {},
  ): Signature<Awaited<ReturnType<Extract<C[K], AnyMethod>>>> {
    const metadata = this.accessor.getTaskMetadataOf(type, method);
    if (!metadata) throw new TaskNotRegisteredError(`${type.name}.${method} (the method has no @Task() decorator)`);
    return this.signatureByName(taskNameOf(type.name, metadata), args as unknown[], { ...(metadata.queue ? { queue: metadata.queue } : {}), ...options });
  }

  /** A signature of any task by name (any language); `T` is its expected result type. */
  signatureByName<T = unknown>(name: string, args: unknown[] = [], options: SignatureOptions & { kwargs?: Record<string, unknown> } = {}): Signature<T> {
    const { kwargs, ...rest } = options;
    return new Signature<T>(name, [...args], { ...kwargs }).set(rest);
  }

  /**
   * Sends a chain (Celery's `chain(a, b, c).apply_async()`): one message, for the first step, whose
   * `embed.chain` carries the others; the worker of each step sends the next with its result
   * prepended (unless immutable). Resolves the last step's `AsyncResult` (its `parent` is the step
   * before, as in Celery). A group followed by a task is sent as a chord, as Celery does; a chain
   * whose last step is a group (`groupSignature([...])`) resolves that group's `GroupResult`.
   */
  async chain<S extends Signature[]>(...steps: S): Promise<ChainResult<S>> {
    const plan = planChain(steps, this.freezeContext());
    await this.publishAll(plan.messages);
    let parent: AsyncResult | null = null;
    const stepIds = plan.groupMembers ? plan.ids.slice(0, -1) : plan.ids;
    for (const id of stepIds) parent = this.handle(id, false, parent);
    if (plan.groupMembers) return new GroupResult(plan.id, plan.groupMembers.map((id) => this.handle(id, false)), parent) as ChainResult<S>;
    return parent as ChainResult<S>;
  }

  /**
   * Sends a group (Celery's `group(...).apply_async()`): every member as its own task with the
   * group's id and its index. Resolves a `GroupResult` (members in order). `groupId` is Celery's
   * `task_id` option of the group.
   */
  async group(...members: Signature[]): Promise<GroupResult>;
  async group(members: Signature[], options: { groupId?: string }): Promise<GroupResult>;
  async group(...input: unknown[]): Promise<GroupResult> {
    const [members, options] = Array.isArray(input[0]) ? [input[0] as Signature[], (input[1] ?? {}) as { groupId?: string }] : [input as Signature[], {}];
    const plan = planGroup(members, this.freezeContext(), options);
    await this.publishAll(plan.messages);
    return new GroupResult(plan.groupId, plan.ids.map((id) => this.handle(id, true)));
  }

  /**
   * Sends a chord (Celery's `chord(header)(body)`) the way Celery does with the Cassandra backend:
   * `celery.chord_unlock` first (it polls the header results every second, then sends the body
   * with their values in header order), then the header tasks. A worker that runs chord_unlock
   * must consume the body's queue. Resolves the body's `AsyncResult`; `producer.groupResult(...)`
   * is not needed for the header: the chord's messages name it (`group_id`).
   *
   * `completion: 'counter'` (default: the module's `chords.completion`, else `unlock`) sends no
   * chord_unlock: the header tasks carry the `nestjs_chord_size` header and the NestJS worker that
   * stores the last header result publishes the body (README, "How a chord completes"). Only for
   * header tasks that run on NestJS workers: a Python worker ignores the header and the body never runs.
   */
  async chord<B extends Signature>(header: Signature[], body: B, options: { taskId?: string; interval?: number; completion?: ChordCompletion } = {}): Promise<AsyncResult<SignatureResult<B>>> {
    const completion = options.completion ?? this.config.chords.completion;
    if (completion !== 'unlock' && completion !== 'counter') throw new TypeError(`chord: completion must be 'unlock' or 'counter', got ${JSON.stringify(completion)}`);
    if (completion === 'counter' && !this.results.enabled) {
      throw new TypeError("chord: completion 'counter' keeps the chord's state beside the results: it needs a result backend (cassandra or memory), and resultBackend is none");
    }
    const plan = planChord(header, body, this.freezeContext(), { taskId: options.taskId, interval: options.interval ?? null, completion });
    await this.publishAll(plan.messages);
    return this.handle<SignatureResult<B>>(plan.id, false);
  }

  private freezeContext(): FreezeContext {
    return { newId: randomUUID, replyTo: this.replyTo, peer: this.config.peerCompat };
  }

  /** Publishes a workflow's messages in order, each routed as Celery routes it. */
  private async publishAll(messages: CanvasMessage[]): Promise<void> {
    for (const { spec, route } of messages) {
      const eta = typeof spec.eta === 'string' ? new Date(Date.parse(spec.eta)) : undefined;
      const destination = this.route(route.name, {
        queue: route.queue,
        exchange: route.exchange,
        routingKey: route.routingKey,
        priority: spec.priority ?? undefined,
        args: spec.args,
        kwargs: spec.kwargs,
        countdown: spec.countdown,
        eta,
      });
      await this.publishMessage(spec, destination);
    }
  }

  /** A handle on any task id (for example one sent by a Python client). */
  asyncResult<T = unknown>(taskId: string): AsyncResult<T> {
    return new AsyncResult<T>(taskId, this.results, this.config.resultPollIntervalMs, this.notifier, 0, null, this.control);
  }
}

/** What get() learns push habits by: the queue a task went to, or its exchange and routing key. */
function routeKeyOf(destination: Destination): string {
  return destination.queue?.name ?? `${destination.exchange}\u0000${destination.routingKey}`;
}
