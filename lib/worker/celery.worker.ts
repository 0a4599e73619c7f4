import { BeforeApplicationShutdown, Inject, Injectable, Logger, OnApplicationBootstrap, Optional } from '@nestjs/common';
import { Broker, ConsumerHandle, Delivery } from '../broker/broker.interface';
import { CELERY_CONFIG } from '../celery.constants';
import type { ResolvedCeleryConfig } from '../config/resolved-config';
import { TaskRegistry } from '../discovery/task.registry';
import { encodeResultMessage, ResultToStore } from '../protocol/result-row';
import { ResultStore } from '../results/result-store.interface';
import { ResultWriter } from '../results/result-writer';
import { hostname } from 'node:os';
import { WorkerShutdown } from '../errors/task-exceptions';
import { HoldEnd, RequestContext, StoreOutcome, TaskRequest } from './task-request';
import { IsolatedPool } from './isolation/isolated-pool';
import { createRateLimiter, RateLimiter } from './rate-limit';
import { perConsumerQos, queueTableOf } from '../config/queue-table';
import { delayedDeliveryBindings, delayedDeliveryTopology, retryDestination, routeTask } from '../protocol/routing';
import type { PublishStep } from '../protocol/canvas-apply';
import { encodeTaskMessage } from '../protocol/task-message';
import { CHORD_UNLOCK_TASK, ChordUnlockDeps, chordUnlockTask } from './chord-unlock';
import { ChordCounter, createChordStore } from './chord-counter';
import { publishRouted } from '../producer/routed-publish';
import { hasEtaHeader, MOVE_AT_FRACTION, MOVE_RETRY_FRACTION, outgoingOf } from './held-eta';
import { WorkerEvents } from '../events/worker-events';
import { tracePublish } from '../tracing/task-tracing';
import { CELERY_METRICS, type CeleryMetricsSink } from '../metrics/task-metrics';
import { RequestTracker } from './control/request-tracker';
import { RemoteControl, type TaskEventsSwitch } from './control/remote-control';
import { LimitedSet, type RevokedSet } from './control/limited-set';
import { CassandraRevokedStore, FileRevokedStore, PersistentRevokedSet } from './revoked-persistence';
import { mingle } from './mingle';
import { CeleryControl } from '../control/celery-control';
import { CassandraResultStore } from '../results/cassandra.result-store';

/** How long tasks aborted at the shutdown timeout get to end (and send their message back) before the worker returns. */
const SHUTDOWN_ABORT_GRACE_MS = 1000;

/** The longest delay setTimeout honours. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** One queue's consumer, and how many of its held ETA tasks have raised its prefetch. */
interface ConsumerState {
  queue: string;
  handle: ConsumerHandle | null;
  raised: number;
  ctx: RequestContext;
}

interface Hold {
  timer: NodeJS.Timeout;
  end: (how: HoldEnd) => void;
}

/** A delivery with an ETA, as its request sees it: `moved` aborts its `lost` once a copy is published and the original acknowledged. */
interface Movable {
  delivery: Delivery;
  queue: string;
  moved: AbortController;
  receivedAt: number;
  /** Its hold has ended (the ETA came, the worker stops, its channel went): it is no longer ours to move. */
  released: boolean;
}

/**
 * Consumes the configured queues (one consumer per queue, dispatching by the `task` header),
 * with manual acknowledgements and a bounded prefetch. Starts after every `@Task()` is
 * registered; on shutdown stops consuming, lets in-flight tasks finish and store, then returns.
 */
@Injectable()
export class CeleryWorker implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger('CeleryWorker');
  private readonly consumers: ConsumerState[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private readonly holds = new Set<Hold>();
  /** ETA deliveries that can be moved before RabbitMQ's consumer_timeout, by the `lost` signal their request holds. */
  private readonly movable = new WeakMap<AbortSignal, Movable>();
  private readonly waitingForSlot: (() => void)[] = [];
  /** The last request of each task id in this process: a later delivery of the same id waits for it. */
  private readonly byTaskId = new Map<string, Promise<void>>();
  private running = 0;
  /** Tasks started since the worker started (the heartbeat's `processed`). */
  private processed = 0;
  private stopping = false;
  /** Tasks running now, by id: how to abort each (revoke, shutdown). */
  private readonly aborts = new Map<string, Set<(reason: Error) => void>>();
  /** Threads of isolated tasks (`isolate: 'thread'`), started by the first one. */
  private pool: IsolatedPool | null = null;
  private readonly ctx: Omit<RequestContext, 'holdUntil'>;
  private readonly writer: ResultWriter;
  /** Celery's rate limits (`rateLimit`): per task name, per worker, or shared by every worker. */
  readonly rateLimiter: RateLimiter;
  /** The requests held here (inspect active / reserved / scheduled, stats totals). */
  readonly tracker: RequestTracker;
  /** Answers Celery's remote control (`worker.enableRemoteControl`); null when switched off. */
  readonly remoteControl: RemoteControl | null;
  /** Revoked task ids (Celery's `worker_state.revoked`): a later delivery of one is not run. Persisted with `worker.stateDb`. */
  readonly revoked: RevokedSet;
  private readonly persistentRevoked: PersistentRevokedSet | null;
  /** Counter-mode chords: the header tasks complete them (README, "How a chord completes"). */
  private readonly chordCounter: ChordCounter;

  constructor(
    @Inject(CELERY_CONFIG) private readonly config: ResolvedCeleryConfig,
    private readonly broker: Broker,
    private readonly store: ResultStore,
    private readonly registry: TaskRegistry,
    @Optional() @Inject(WorkerEvents) private readonly events: WorkerEvents | null = null,
    @Optional() @Inject(CELERY_METRICS) metrics: CeleryMetricsSink | null = null,
  ) {
    this.writer = new ResultWriter(store, this.logger, () => this.stopping, metrics);
    metrics?.bindWorker({ inFlight: () => this.inFlight.size, heldEta: () => this.holds.size, storeBacklog: () => this.writer.backlog });
    this.rateLimiter = createRateLimiter(config, store, this.logger);
    this.tracker = new RequestTracker(config.worker.hostname);
    this.persistentRevoked = this.createPersistentRevoked(store);
    this.revoked = this.persistentRevoked ?? new LimitedSet();
    this.remoteControl = config.worker.enableRemoteControl ? this.createRemoteControl(this.events) : null;
    this.ctx = {
      registry,
      store,
      logger: this.logger,
      accept: config.accept,
      maxMessageBytes: config.worker.maxMessageBytes,
      withSlot: (fn) => this.withSlot(fn),
      oneAtATime: (taskId, fn) => this.oneAtATime(taskId, fn),
      storeDurably: (result, mayBeDuplicate) => this.storeDurably(result, checksFirst(config.worker.successCheck, result, mayBeDuplicate)),
      notify: (queue, result) =>
        this.broker.publishReply(queue, { correlationId: result.taskId, body: encodeResultMessage(result, { envelopes: config.peerCompat !== '5.2' }) }),
      hostname: config.worker.hostname,
      taskDefaults: config.tasks,
      origin: `gen${process.pid}@${hostname()}`,
      peerCompat: config.peerCompat,
      publishRetry: (taskName, call, delivery, message) => {
        const countdownSeconds = call.eta ? (call.eta.getTime() - Date.now()) / 1000 : (call.countdown ?? null);
        const destination = retryDestination(
          queueTableOf(config),
          taskName,
          { exchange: delivery.exchange, routingKey: delivery.routingKey, priority: delivery.priority },
          { countdownSeconds, queue: call.queue, args: call.args, kwargs: call.kwargs },
        );
        return publishRouted(this.broker, queueTableOf(config), destination, { headers: message.amqpHeaders, properties: message.properties, body: message.body }, this.logger);
      },
      publishCanvas: (steps) => this.publishCanvas(steps),
      track: (taskId, abort) => this.track(taskId, abort),
      resultExtended: config.resultExtended,
      rateLimit: (taskName, signal) => this.rateLimiter.acquire(taskName, signal),
      isolatedPool: () => (this.pool ??= new IsolatedPool({ size: config.worker.isolatedThreads ?? undefined })),
      contextStorage: () => config.worker.taskContextStorage ?? registry.contextAccessorUsed,
      events,
      metrics,
      phase: (phase, task, delivery) => this.tracker.phase(phase, task, delivery),
      isRevoked: (task) => this.remoteControl?.isRevoked(task.id, task.headers) ?? this.revoked.has(task.id),
      chordPart: (task) => this.chordCounter.partDone(task),
    };
    this.chordCounter = new ChordCounter(createChordStore(config, store), this.chordDeps());
  }

  /** What completing a chord needs (chord_unlock and counter-mode header tasks). */
  private chordDeps(): ChordUnlockDeps {
    return {
      getTaskMetas: (ids) => this.store.getTaskMetas(ids),
      publishCanvas: (steps) => this.publishCanvas(steps),
      storeDurably: (result, checkFirst) => this.storeDurably(result, checkFirst),
      logger: this.logger,
    };
  }

  /** `worker.stateDb`: the revoked set written through to a file or a Cassandra table (Celery's --statedb). */
  private createPersistentRevoked(store: ResultStore): PersistentRevokedSet | null {
    const db = this.config.worker.stateDb;
    if (!db) return null;
    if ('file' in db) return new PersistentRevokedSet(new LimitedSet(), new FileRevokedStore(db.file));
    if (!(store instanceof CassandraResultStore) || !this.config.cassandra) throw new Error("worker.stateDb.table needs the Cassandra result store (resultBackend 'cassandra')");
    return new PersistentRevokedSet(new LimitedSet(), new CassandraRevokedStore(() => store.session(), this.config.cassandra.keyspace, db.table));
  }

  /**
   * Celery's Mingle bootstep: `hello` to every node, merging the revoked ids they answer with and
   * moving our clock past theirs. Waits `worker.mingleTimeoutMs` after the last reply (a worker
   * alone waits that long); a failure is logged and the worker starts without its neighbours.
   */
  private async mingle(): Promise<void> {
    const control = new CeleryControl(this.broker);
    try {
      const { clock } = await mingle(control, this.config.worker.hostname, this.revoked, { timeout: this.config.worker.mingleTimeoutMs });
      if (clock !== null) this.remoteControl?.adjustClock(clock);
    } finally {
      await control.onApplicationShutdown().catch(() => undefined);
    }
  }

  private createRemoteControl(events: TaskEventsSwitch | null): RemoteControl {
    const control = new RemoteControl(
      this.config.worker.hostname,
      this.broker,
      this.config,
      this.registry,
      {
        tracker: this.tracker,
        revoked: this.revoked,
        abortTask: (id, reason) => this.abortTask(id, reason),
        setRateLimit: (name, rate) => this.rateLimiter.setRate(name, rate),
        setTimeLimits: (name, soft, hard) => {
          const entry = this.registry.get(name);
          if (!entry) return false;
          entry.options = { ...(entry.options ?? {}), softTimeLimit: soft ?? undefined, timeLimit: hard ?? undefined };
          return true;
        },
        addConsumer: (queue) => this.addConsumer(queue),
        cancelConsumer: (queue) => this.cancelConsumer(queue),
        consumedQueues: () => this.consumers.map((c) => queueTableOf(this.config).get(c.queue)),
        prefetchCount: () => this.consumers.reduce((n, c) => n + this.config.worker.prefetch + c.raised, 0),
        storeDurably: (result, checkFirst) => this.storeDurably(result, checkFirst),
        shutdown: () => void this.stop().finally(() => this.exitAfterRemoteShutdown()),
      },
      this.logger,
    );
    control.useEvents(events);
    return control;
  }

  /**
   * After `shutdown` from remote control has stopped the worker: SIGTERM to this process, so an
   * application with `enableShutdownHooks()` closes gracefully (one without it ends at once; its
   * tasks are already done). Replaceable for tests.
   */
  exitAfterRemoteShutdown: () => void = () => process.kill(process.pid, 'SIGTERM');

  /**
   * Publishes workflow messages (next chain step, callbacks, errbacks, a chord's body) one after
   * the other, each routed as Celery's `send_task` from inside a worker routes it: the signature's
   * queue / exchange / routing key, else the task's own queue, else `taskRoutes` and the default queue.
   */
  private async publishCanvas(steps: readonly PublishStep[]): Promise<void> {
    const table = queueTableOf(this.config);
    for (const { spec, route: { name, ...route } } of steps) {
      const countdown = spec.countdown ?? (typeof spec.eta === 'string' ? (Date.parse(spec.eta) - Date.now()) / 1000 : null);
      const destination = routeTask(table, name ?? spec.task, {
        explicit: route,
        task: { queue: this.registry.get(name ?? spec.task)?.queue ?? undefined },
        args: spec.args,
        kwargs: spec.kwargs,
        delaySeconds: countdown,
      });
      const priority = spec.priority ?? destination.priority ?? this.config.defaultPriority ?? undefined;
      await tracePublish(spec, destination, (trace) => {
        const message = encodeTaskMessage({ ...spec, priority, ...(trace ? { headers: { ...spec.headers, ...trace } } : {}) }, { nowMicros: Date.now() * 1000, origin: this.ctx.origin, peer: this.config.peerCompat });
        return publishRouted(this.broker, table, destination, { headers: message.amqpHeaders, properties: message.properties, body: message.body }, this.logger);
      });
    }
  }

  /** This worker's node name (`worker.hostname` expanded): what `celery inspect ping` and Flower list. */
  get nodeName(): string {
    return this.config.worker.hostname;
  }

  async onApplicationBootstrap(): Promise<void> {
    if (this.config.worker.enabled) await this.start();
  }

  async beforeApplicationShutdown(): Promise<void> {
    await this.stop();
  }

  /** Starts consuming; called at bootstrap when `worker.enabled` (default). */
  async start(): Promise<void> {
    const { queues, prefetch, concurrency } = this.config.worker;
    if (this.registry.names().length === 0) this.logger.warn('No @Task() methods found: every message but celery.chord_unlock will be rejected as unregistered');
    // Celery's builtin, registered like its builtins (a task of the same name in the app wins)
    if (!this.registry.has(CHORD_UNLOCK_TASK)) {
      this.registry.register(
        chordUnlockTask(this.chordDeps()),
      );
    }
    for (const task of this.registry.all()) this.rateLimiter.configure(task.name, task.options?.rateLimit);
    await this.rateLimiter.start(); // creates the shared-limit table when a task has { global }; a bad rate fails the bootstrap
    await this.declareDelayedDelivery();
    if (perConsumerQos(this.config)) {
      this.logger.log('A quorum queue is configured: prefetch is per consumer and static (held ETA tasks occupy prefetch slots), as Celery sets it');
    }
    // revoked ids kept across restarts (worker.stateDb), then remote control (a revoke broadcast right
    // after the start is not missed), then mingle: all before the first task is consumed
    await this.persistentRevoked?.restore();
    await this.remoteControl?.start();
    if (this.config.worker.mingle) await this.mingle();
    for (const queue of queues) await this.addConsumer(queue);
    this.events?.start({ active: () => this.aborts.size, processed: () => this.processed });
    this.logger.log(
      `Worker consuming ${queues.join(', ')} on ${this.broker.describe()} (prefetch ${prefetch}, concurrency ${concurrency}, node ${this.config.worker.hostname}); ` +
        `tasks: ${this.registry.names().join(', ') || 'none'}`,
    );
  }

  /** Starts consuming a queue (at start, and remote control's `add_consumer`); a queue consumed already is left alone. */
  async addConsumer(queue: string): Promise<void> {
    if (this.stopping || this.consumers.some((c) => c.queue === queue)) return;
    const consumer: ConsumerState = { queue, handle: null, raised: 0, ctx: { ...this.ctx, holdUntil: (eta, lost) => this.holdUntil(eta, lost, consumer) } };
    this.consumers.push(consumer);
    try {
      // messages can arrive before consume() resolves: those held by then are applied right after
      consumer.handle = await this.broker.consume(queue, this.config.worker.prefetch, (delivery) => this.onDelivery(delivery, consumer));
    } catch (err) {
      this.consumers.splice(this.consumers.indexOf(consumer), 1);
      throw err;
    }
    if (consumer.raised > 0) this.applyPrefetch(consumer);
  }

  /** Stops consuming a queue (remote control's `cancel_consumer`); its tasks in flight finish. */
  async cancelConsumer(queue: string): Promise<void> {
    const i = this.consumers.findIndex((c) => c.queue === queue);
    if (i < 0) return;
    const [consumer] = this.consumers.splice(i, 1);
    await consumer.handle?.cancel();
    this.logger.log(`No longer consuming from ${queue}`);
  }

  /** Stops consuming and waits (up to `worker.shutdownTimeoutMs`) for in-flight tasks to finish and be stored. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    await this.remoteControl?.stop().catch(() => undefined);
    try {
      await this.drain();
    } finally {
      // revokes in flight to worker.stateDb are written before the connections close
      await this.persistentRevoked?.close().catch((err: unknown) => this.logger.error(`Could not close worker.stateDb: ${err instanceof Error ? err.message : String(err)}`));
      // isolated tasks still running after the drain are stopped with their threads (their messages go back)
      await this.pool?.close();
      if (this.events) {
        this.events.stop(); // worker-offline
        await this.broker.flushEvents(1000);
      }
    }
  }

  private async drain(): Promise<void> {
    await Promise.all(this.consumers.splice(0).map((c) => c.handle?.cancel()));
    for (const hold of this.holds) hold.end('stop');
    this.rateLimiter.close(); // tasks waiting for their rate end: their messages go back
    if (this.inFlight.size === 0) return;
    this.logger.log(`Waiting for ${this.inFlight.size} task(s) in flight`);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), this.config.worker.shutdownTimeoutMs)));
    let outcome = await Promise.race([Promise.allSettled([...this.inFlight]).then(() => 'done' as const), timeout]);
    clearTimeout(timer);
    if (outcome === 'timeout' && this.aborts.size > 0) {
      // Celery's cold shutdown: running tasks see their AbortSignal fire (reason WorkerShutdown); one that
      // ends with it is not stored and its message goes back to the queue. They get a moment to do so.
      this.logger.warn(`Shutdown timeout: aborting ${this.aborts.size} running task(s)`);
      for (const id of [...this.aborts.keys()]) this.abortTask(id, new WorkerShutdown());
      const grace = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), SHUTDOWN_ABORT_GRACE_MS)));
      outcome = await Promise.race([Promise.allSettled([...this.inFlight]).then(() => 'done' as const), grace]);
      clearTimeout(timer);
    }
    if (outcome === 'timeout') {
      this.logger.warn(`${this.inFlight.size} task(s) still running after ${this.config.worker.shutdownTimeoutMs} ms; their messages return to the queue unacknowledged`);
    }
  }

  /**
   * Celery's `DelayedDelivery` bootstep: when a quorum queue is configured, the native
   * delayed-delivery topology and the bindings of every known queue behind a non-direct exchange.
   * A failure is logged and the worker goes on, as Celery's does.
   */
  private async declareDelayedDelivery(): Promise<void> {
    const table = queueTableOf(this.config);
    if (!table.quorum) return;
    try {
      await this.broker.declareTopology(delayedDeliveryTopology(table.settings.delayedDeliveryQueueType), 'native delayed delivery');
      const direct = table.all().filter((q) => q.exchange.type === 'direct');
      if (direct.length > 0) {
        this.logger.warn(
          `Queues behind a direct exchange (${direct.map((q) => q.name).join(', ')}) cannot use native delayed delivery: their ETA tasks are held in worker memory`,
        );
      }
      for (const q of table.all()) {
        if (q.exchange.type !== 'direct') await this.broker.assertQueue(q.name);
      }
      await this.broker.declareTopology(delayedDeliveryBindings(table.all()));
    } catch (err) {
      this.logger.error(`Could not declare the native delayed-delivery topology: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private onDelivery(delivery: Delivery, consumer: ConsumerState): void {
    if (this.stopping) {
      delivery.reject(true);
      return;
    }
    const done = new TaskRequest(this.movableView(delivery, consumer.queue), consumer.ctx)
      .handle()
      .catch((err: unknown) => {
        this.logger.error(`Unexpected worker error: ${err instanceof Error ? err.stack : String(err)}`);
      })
      .finally(() => this.inFlight.delete(done));
    this.inFlight.add(done);
  }

  /**
   * ETA tasks wait unacknowledged; each one held raises its consumer's prefetch by one (up to
   * `worker.etaTaskLimit` held tasks) so the tasks behind it keep flowing, as Celery does. Ends
   * 'run' at the ETA, 'stop' when the worker stops (the message goes back), 'lost' when the
   * message's channel closed (the broker has requeued it: the hold is dropped, as Celery drops
   * the ETA requests of a lost channel).
   */
  private holdUntil(etaMicros: number, lost: AbortSignal, consumer: ConsumerState): Promise<HoldEnd> {
    if (this.stopping) return Promise.resolve('stop');
    if (lost.aborted) return Promise.resolve('lost');
    const raises = consumer.raised < this.config.worker.etaTaskLimit;
    if (raises) {
      consumer.raised++;
      this.applyPrefetch(consumer);
    }
    return new Promise<HoldEnd>((resolve) => {
      // setTimeout fires at once for delays over 2^31 - 1 ms (24.8 days): wait in steps up to the ETA.
      const arm = (): NodeJS.Timeout => {
        const left = etaMicros / 1000 - Date.now();
        return setTimeout(() => (left > MAX_TIMER_MS ? (hold.timer = arm()) : hold.end('run')), Math.min(Math.max(0, left), MAX_TIMER_MS));
      };
      const onLost = () => hold.end('lost');
      const move = this.scheduleMove(lost, etaMicros / 1000);
      const hold: Hold = {
        timer: undefined as unknown as NodeJS.Timeout,
        end: (how) => {
          if (!this.holds.delete(hold)) return;
          clearTimeout(hold.timer);
          move?.release();
          lost.removeEventListener('abort', onLost);
          if (raises) {
            consumer.raised--;
            this.applyPrefetch(consumer);
          }
          resolve(how);
        },
      };
      this.holds.add(hold);
      lost.addEventListener('abort', onLost, { once: true });
      hold.timer = arm();
    });
  }

  /**
   * Fires the AbortSignal of the task `taskId` running in this worker (every delivery of it) with
   * `reason`. Returns false when it is not running here. Revoke (`terminate`) calls this.
   */
  abortTask(taskId: string, reason: Error): boolean {
    const aborts = this.aborts.get(taskId);
    if (!aborts) return false;
    for (const abort of [...aborts]) abort(reason);
    return true;
  }

  /** The queues this worker consumes (empty before it starts and once it stops), for health checks. */
  consumedQueues(): string[] {
    return this.consumers.map((c) => c.queue);
  }

  /** Results whose first write failed and that are retried now: the store's backlog, for health checks. */
  get storeBacklog(): number {
    return this.writer.backlog;
  }

  /** Ids of the tasks running in this worker now. */
  runningTaskIds(): string[] {
    return [...this.aborts.keys()];
  }

  private track(taskId: string, abort: (reason: Error) => void): () => void {
    this.processed++;
    let set = this.aborts.get(taskId);
    if (!set) this.aborts.set(taskId, (set = new Set()));
    set.add(abort);
    return () => {
      set.delete(abort);
      if (set.size === 0 && this.aborts.get(taskId) === set) this.aborts.delete(taskId);
    };
  }

  /**
   * An ETA delivery as its request sees it: the same message, with a `lost` signal of its own that
   * also fires once the held message has been moved (see {@link moveHeld}).
   */
  private movableView(delivery: Delivery, queue: string): Delivery {
    if (this.config.worker.consumerTimeoutMs <= 0 || !hasEtaHeader(delivery)) return delivery;
    const moved = new AbortController();
    const view: Delivery = { ...delivery, lost: AbortSignal.any([delivery.lost, moved.signal]) };
    this.movable.set(view.lost, { delivery, queue, moved, receivedAt: Date.now(), released: false });
    return view;
  }

  /**
   * RabbitMQ closes a channel whose consumer holds a message unacknowledged longer than its
   * consumer_timeout (30 min by default), and every message held on it goes back. So a held ETA
   * message is moved before that: a copy is published to the same queue (through the default
   * exchange) and, once the broker has confirmed it, the original is acknowledged and its hold
   * ends as if its channel were lost. A crash in between leaves two copies of the message
   * (the same task id; the worker's stored-SUCCESS check runs it once) — never none. A move that
   * fails is tried again later; if the timeout comes first, RabbitMQ requeues the message.
   */
  private scheduleMove(lost: AbortSignal, etaMs: number): { timer: NodeJS.Timeout; release: () => void } | null {
    const m = this.movable.get(lost);
    const timeoutMs = this.config.worker.consumerTimeoutMs;
    if (!m || timeoutMs <= 0) return null;
    const moveAt = m.receivedAt + timeoutMs * MOVE_AT_FRACTION;
    // Not when the ETA comes soon after: a copy published as the original runs would be a duplicate for nothing.
    if (etaMs <= moveAt + timeoutMs * MOVE_RETRY_FRACTION) return null;
    m.released = false;
    const timer = setTimeout(() => void this.moveHeld(m, lost, etaMs), Math.max(0, moveAt - Date.now()));
    return { timer, release: () => ((m.released = true), clearTimeout(timer)) };
  }

  private async moveHeld(m: Movable, lost: AbortSignal, etaMs: number): Promise<void> {
    if (lost.aborted || m.released || this.stopping) return;
    try {
      await this.broker.publish(m.queue, outgoingOf(m.delivery));
    } catch (err) {
      const retryMs = this.config.worker.consumerTimeoutMs * MOVE_RETRY_FRACTION;
      this.logger.warn(`Could not move held ETA task ${m.delivery.correlationId ?? ''} before the consumer timeout: ${err instanceof Error ? err.message : String(err)}; trying again in ${retryMs} ms`);
      if (!lost.aborted && !m.released && etaMs > Date.now() + retryMs) setTimeout(() => void this.moveHeld(m, lost, etaMs), retryMs);
      return;
    }
    // Its hold ended meanwhile (ETA reached, worker stopping, channel lost): the copy is an extra one, run once by the SUCCESS check.
    if (lost.aborted || m.released) return;
    m.released = true;
    m.delivery.ack();
    m.moved.abort();
    this.logger.debug?.(`Held ETA task ${m.delivery.correlationId ?? ''} moved to the back of ${m.queue} before the consumer timeout`);
  }

  private applyPrefetch(consumer: ConsumerState): void {
    void consumer.handle?.setPrefetch(this.config.worker.prefetch + consumer.raised);
  }

  /**
   * Runs `fn` after every earlier request of the same task id in this process has ended. A
   * delivery whose channel closed may still be running when RabbitMQ hands the message over
   * again: the new delivery then waits, finds the stored SUCCESS and does not run it twice (and
   * two copies can never race each other's read-before-write here).
   */
  private oneAtATime(taskId: string, fn: () => Promise<void>): Promise<void> {
    const before = this.byTaskId.get(taskId);
    if (before) this.logger.warn(`Task ${taskId} is still being handled from an earlier delivery; this delivery waits for it`);
    const mine = before ? before.then(fn) : fn();
    const tail = mine.catch(() => undefined);
    this.byTaskId.set(taskId, tail);
    void tail.then(() => {
      if (this.byTaskId.get(taskId) === tail) this.byTaskId.delete(taskId);
    });
    return mine;
  }

  private async withSlot<T>(fn: () => Promise<T>): Promise<T> {
    if (this.running >= this.config.worker.concurrency) {
      await new Promise<void>((resolve) => this.waitingForSlot.push(resolve));
    }
    this.running++;
    try {
      return await fn();
    } finally {
      this.running--;
      this.waitingForSlot.shift()?.();
    }
  }

  /**
   * Stores a result (see ResultWriter): transient errors are retried with back-off for as long as
   * the worker runs; a result the store refuses for good gets a FAILURE saying why in its place.
   * A stopping worker gives up, and then the message goes back to the queue — never to a FAILURE row.
   */
  private storeDurably(result: ResultToStore, checkFirst: boolean): Promise<StoreOutcome> {
    return this.writer.write(result, checkFirst);
  }
}

/**
 * Whether a task's result is written only after reading its stored state (so that a stored SUCCESS
 * is kept): `auto` reads for anything but a SUCCESS, and for every write of a message that may be a
 * second copy (redelivered, or marked so); `always` reads every time; `redelivered` only for the
 * copies. Non-final states are read first in every mode (the writer sees to that).
 */
export function checksFirst(mode: 'auto' | 'always' | 'redelivered', result: ResultToStore, mayBeDuplicate: boolean): boolean {
  if (mayBeDuplicate || mode === 'always') return true;
  return mode === 'auto' && result.status !== 'SUCCESS';
}
