import { BeforeApplicationShutdown, Inject, Injectable, Logger, OnApplicationBootstrap } from '@nestjs/common';
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

/** How long tasks aborted at the shutdown timeout get to end (and send their message back) before the worker returns. */
const SHUTDOWN_ABORT_GRACE_MS = 1000;

/** The longest delay setTimeout honours. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** One queue's consumer, and how many of its held ETA tasks have raised its prefetch. */
interface ConsumerState {
  handle: ConsumerHandle | null;
  raised: number;
  ctx: RequestContext;
}

interface Hold {
  timer: NodeJS.Timeout;
  end: (how: HoldEnd) => void;
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
  private readonly waitingForSlot: (() => void)[] = [];
  /** The last request of each task id in this process: a later delivery of the same id waits for it. */
  private readonly byTaskId = new Map<string, Promise<void>>();
  private running = 0;
  private stopping = false;
  /** Tasks running now, by id: how to abort each (revoke, shutdown). */
  private readonly aborts = new Map<string, Set<(reason: Error) => void>>();
  private readonly ctx: Omit<RequestContext, 'holdUntil' | 'queue'>;
  private readonly writer: ResultWriter;

  constructor(
    @Inject(CELERY_CONFIG) private readonly config: ResolvedCeleryConfig,
    private readonly broker: Broker,
    private readonly store: ResultStore,
    private readonly registry: TaskRegistry,
  ) {
    this.writer = new ResultWriter(store, this.logger, () => this.stopping);
    this.ctx = {
      registry,
      store,
      logger: this.logger,
      accept: config.accept,
      maxMessageBytes: config.worker.maxMessageBytes,
      withSlot: (fn) => this.withSlot(fn),
      oneAtATime: (taskId, fn) => this.oneAtATime(taskId, fn),
      storeDurably: (result, redelivered) => this.storeDurably(result, redelivered || config.worker.successCheck === 'always'),
      notify: (queue, result) =>
        this.broker.publishReply(queue, { correlationId: result.taskId, body: encodeResultMessage(result, { envelopes: config.peerCompat !== '5.2' }) }),
      hostname: config.worker.hostname,
      taskDefaults: config.tasks,
      origin: `gen${process.pid}@${hostname()}`,
      peerCompat: config.peerCompat,
      publishRetry: (target, message) =>
        this.broker.publish(target.queue, { headers: message.amqpHeaders, properties: message.properties, body: message.body }, target.route),
      track: (taskId, abort) => this.track(taskId, abort),
      resultExtended: config.resultExtended,
      contextStorage: () => config.worker.taskContextStorage ?? registry.contextAccessorUsed,
    };
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
    if (this.registry.names().length === 0) this.logger.warn('No @Task() methods found: every message will be rejected as unregistered');
    for (const queue of queues) {
      const consumer: ConsumerState = { handle: null, raised: 0, ctx: { ...this.ctx, queue, holdUntil: (eta, lost) => this.holdUntil(eta, lost, consumer) } };
      this.consumers.push(consumer);
      // messages can arrive before consume() resolves: those held by then are applied right after
      consumer.handle = await this.broker.consume(queue, prefetch, (delivery) => this.onDelivery(delivery, consumer.ctx));
      if (consumer.raised > 0) this.applyPrefetch(consumer);
    }
    this.logger.log(
      `Worker consuming ${queues.join(', ')} on ${this.broker.describe()} (prefetch ${prefetch}, concurrency ${concurrency}); ` +
        `tasks: ${this.registry.names().join(', ') || 'none'}`,
    );
  }

  /** Stops consuming and waits (up to `worker.shutdownTimeoutMs`) for in-flight tasks to finish and be stored. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    await Promise.all(this.consumers.splice(0).map((c) => c.handle?.cancel()));
    for (const hold of this.holds) hold.end('stop');
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

  private onDelivery(delivery: Delivery, ctx: RequestContext): void {
    if (this.stopping) {
      delivery.reject(true);
      return;
    }
    const done = new TaskRequest(delivery, ctx)
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
      const hold: Hold = {
        timer: undefined as unknown as NodeJS.Timeout,
        end: (how) => {
          if (!this.holds.delete(hold)) return;
          clearTimeout(hold.timer);
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

  /** Ids of the tasks running in this worker now. */
  runningTaskIds(): string[] {
    return [...this.aborts.keys()];
  }

  private track(taskId: string, abort: (reason: Error) => void): () => void {
    let set = this.aborts.get(taskId);
    if (!set) this.aborts.set(taskId, (set = new Set()));
    set.add(abort);
    return () => {
      set.delete(abort);
      if (set.size === 0 && this.aborts.get(taskId) === set) this.aborts.delete(taskId);
    };
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
