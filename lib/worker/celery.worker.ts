import { BeforeApplicationShutdown, Inject, Injectable, Logger, OnApplicationBootstrap } from '@nestjs/common';
import { Broker, ConsumerHandle, Delivery } from '../broker/broker.interface';
import { CELERY_CONFIG } from '../celery.constants';
import type { ResolvedCeleryConfig } from '../config/resolved-config';
import { TaskRegistry } from '../discovery/task.registry';
import { encodeResultMessage, ResultToStore } from '../protocol/result-row';
import { ResultStore } from '../results/result-store.interface';
import { ResultWriter } from '../results/result-writer';
import { RequestContext, StoreOutcome, TaskRequest } from './task-request';

/** The longest delay setTimeout honours. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Consumes the configured queues (one consumer per queue, dispatching by the `task` header),
 * with manual acknowledgements and a bounded prefetch. Starts after every `@Task()` is
 * registered; on shutdown stops consuming, lets in-flight tasks finish and store, then returns.
 */
@Injectable()
export class CeleryWorker implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger('CeleryWorker');
  private readonly consumers: ConsumerHandle[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private readonly holds = new Set<{ timer: NodeJS.Timeout; resolve: (run: boolean) => void }>();
  private readonly waitingForSlot: (() => void)[] = [];
  private running = 0;
  private held = 0;
  private stopping = false;
  private readonly ctx: RequestContext;

  constructor(
    @Inject(CELERY_CONFIG) private readonly config: ResolvedCeleryConfig,
    private readonly broker: Broker,
    private readonly store: ResultStore,
    private readonly registry: TaskRegistry,
  ) {
    this.ctx = {
      registry,
      store,
      logger: this.logger,
      accept: config.accept,
      maxMessageBytes: config.worker.maxMessageBytes,
      holdUntil: (eta) => this.holdUntil(eta),
      withSlot: (fn) => this.withSlot(fn),
      storeDurably: (result, redelivered) => this.storeDurably(result, redelivered || config.worker.successCheck === 'always'),
      notify: (queue, result) =>
        this.broker.publishReply(queue, { correlationId: result.taskId, body: encodeResultMessage(result, { envelopes: config.peerCompat !== '5.2' }) }),
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
      this.consumers.push(await this.broker.consume(queue, prefetch, (delivery) => this.onDelivery(delivery)));
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
    await Promise.all(this.consumers.splice(0).map((c) => c.cancel()));
    for (const hold of this.holds) {
      clearTimeout(hold.timer);
      hold.resolve(false);
    }
    this.holds.clear();
    if (this.inFlight.size === 0) return;
    this.logger.log(`Waiting for ${this.inFlight.size} task(s) in flight`);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), this.config.worker.shutdownTimeoutMs)));
    const outcome = await Promise.race([Promise.allSettled([...this.inFlight]).then(() => 'done' as const), timeout]);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      this.logger.warn(`${this.inFlight.size} task(s) still running after ${this.config.worker.shutdownTimeoutMs} ms; their messages return to the queue unacknowledged`);
    }
  }

  private onDelivery(delivery: Delivery): void {
    if (this.stopping) {
      delivery.reject(true);
      return;
    }
    const done = new TaskRequest(delivery, this.ctx)
      .handle()
      .catch((err: unknown) => {
        this.logger.error(`Unexpected worker error: ${err instanceof Error ? err.stack : String(err)}`);
      })
      .finally(() => this.inFlight.delete(done));
    this.inFlight.add(done);
  }

  /** ETA tasks wait unacknowledged; each one held raises the prefetch by one so others keep flowing (as Celery). */
  private holdUntil(etaMicros: number): Promise<boolean> {
    if (this.stopping) return Promise.resolve(false);
    this.adjustHeld(+1);
    return new Promise<boolean>((resolve) => {
      // setTimeout fires at once for delays over 2^31 - 1 ms (24.8 days): wait in steps up to the ETA.
      const arm = (): NodeJS.Timeout => {
        const left = etaMicros / 1000 - Date.now();
        return setTimeout(() => (left > MAX_TIMER_MS ? (entry.timer = arm()) : finish(true)), Math.min(Math.max(0, left), MAX_TIMER_MS));
      };
      const entry: { timer: NodeJS.Timeout; resolve: (run: boolean) => void } = {
        timer: undefined as unknown as NodeJS.Timeout,
        resolve: (run: boolean) => finish(run),
      };
      const finish = (run: boolean) => {
        if (!this.holds.delete(entry)) return;
        this.adjustHeld(-1);
        resolve(run);
      };
      this.holds.add(entry);
      entry.timer = arm();
    });
  }

  private adjustHeld(delta: number): void {
    this.held += delta;
    const prefetch = this.config.worker.prefetch + this.held;
    for (const consumer of this.consumers) void consumer.setPrefetch(prefetch);
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

  private writer?: ResultWriter;

  /**
   * Stores a result (see ResultWriter): transient errors are retried with back-off for as long as
   * the worker runs; a result the store refuses for good gets a FAILURE saying why in its place.
   * A stopping worker gives up, and then the message goes back to the queue — never to a FAILURE row.
   */
  private storeDurably(result: ResultToStore, checkFirst: boolean): Promise<StoreOutcome> {
    this.writer ??= new ResultWriter(this.store, this.logger, () => this.stopping);
    return this.writer.write(result, checkFirst);
  }
}
