import { Inject, Injectable, Logger, Optional, Type } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { Broker } from '../broker/broker.interface';
import { CELERY_CONFIG } from '../celery.constants';
import type { ResolvedCeleryConfig } from '../config/resolved-config';
import { TaskMetadataAccessor, taskNameOf } from '../discovery/task-metadata.accessor';
import { TaskRegistry } from '../discovery/task.registry';
import { TaskNotRegisteredError } from '../errors/celery.errors';
import { encodeTaskMessage } from '../protocol/task-message';
import { routeTask, type Destination } from '../protocol/routing';
import { queueTableOf } from '../config/queue-table';
import { publishRouted } from './routed-publish';
import { AsyncResult } from '../results/async-result';
import { ResultStore } from '../results/result-store.interface';
import { NOTIFY_HEADER, ResultNotifier } from '../results/result-notifier';

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
  ) {}

  /**
   * Publishes a task by name and resolves once the broker has confirmed the message.
   * `T` is the expected result type.
   */
  async sendTask<T = unknown>(name: string, options: SendTaskOptions = {}): Promise<AsyncResult<T>> {
    const id = options.taskId ?? randomUUID();
    const destination = this.route(name, options);
    const priority = options.priority ?? destination.priority ?? this.config.defaultPriority ?? undefined;
    const message = encodeTaskMessage(
      {
        task: name,
        id,
        args: options.args ?? [],
        kwargs: options.kwargs ?? {},
        countdown: options.countdown,
        eta: options.eta,
        expires: options.expires,
        priority,
        ignoreResult: options.ignoreResult,
        timeLimit: options.timeLimit,
        softTimeLimit: options.softTimeLimit,
        retries: options.retries,
        compression: options.compression,
        replyTo: this.replyTo,
        headers: this.notifier ? { ...options.headers, [NOTIFY_HEADER]: this.notifier.queue } : options.headers,
      },
      { nowMicros: Date.now() * 1000, origin: this.origin, peer: this.config.peerCompat },
    );
    await publishRouted(this.broker, queueTableOf(this.config), destination, { headers: message.amqpHeaders, properties: message.properties, body: message.body }, this.logger);
    // A push is expected soon after the send; later get() calls read the store at once.
    return new AsyncResult<T>(id, this.results, this.config.resultPollIntervalMs, this.notifier, this.notifier ? Date.now() + PUSH_GRACE_MS : 0);
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

  /** A handle on any task id (for example one sent by a Python client). */
  asyncResult<T = unknown>(taskId: string): AsyncResult<T> {
    return new AsyncResult<T>(taskId, this.results, this.config.resultPollIntervalMs, this.notifier);
  }
}
