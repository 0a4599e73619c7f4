import { Inject, Injectable, Optional } from '@nestjs/common';
import { Broker, BrokerStatus } from '../broker/broker.interface';
import { CELERY_CONFIG } from '../celery.constants';
import type { ResolvedCeleryConfig } from '../config/resolved-config';
import { ResultStore } from '../results/result-store.interface';
import { CeleryWorker } from '../worker/celery.worker';

/** How a health check is made. */
export interface CeleryHealthOptions {
  /** How long the result store gets to answer its ping. Default 1000 ms. */
  storeTimeoutMs?: number;
}

/** One queue this worker should consume, and whether its consumer receives now. */
export interface QueueHealth {
  queue: string;
  consuming: boolean;
}

/** What {@link CeleryHealth.health} reports. `healthy` is false when any part below is down. */
export interface CeleryHealthReport {
  healthy: boolean;
  broker: { transport: BrokerStatus['transport']; url: string; connected: boolean };
  /** The worker's queues (none when `worker.enabled` is false or it has not started). */
  consumers: QueueHealth[];
  /** The result store: `reachable` is the answer to a cheap query within the time allowed; `error` says why not. */
  store: { backend: ResolvedCeleryConfig['resultBackend']; reachable: boolean; error?: string };
  /** Results waiting for the store to come back (retried with back-off). Reported; it does not make the worker unhealthy. */
  storeBacklog: number;
}

/**
 * The module's health, for apps with or without @nestjs/terminus: the broker connection, each
 * consumed queue's consumer, the result store's reachability (a cheap query with a short timeout)
 * and its retry backlog. Injectable wherever `CeleryModule` is imported; `CeleryHealthIndicator`
 * (`nestjs-celery/terminus`) wraps it for terminus.
 */
@Injectable()
export class CeleryHealth {
  constructor(
    @Inject(CELERY_CONFIG) private readonly config: ResolvedCeleryConfig,
    private readonly broker: Broker,
    private readonly store: ResultStore,
    @Optional() @Inject(CeleryWorker) private readonly worker: CeleryWorker | null = null,
  ) {}

  async health(options: CeleryHealthOptions = {}): Promise<CeleryHealthReport> {
    const status = this.broker.status();
    const consuming = new Map<string, boolean>();
    for (const c of status.consumers) consuming.set(c.queue, (consuming.get(c.queue) ?? false) || c.consuming);
    const consumers = (this.worker?.consumedQueues() ?? []).map((queue) => ({ queue, consuming: status.connected && (consuming.get(queue) ?? false) }));
    const store = await this.pingStore(options.storeTimeoutMs ?? 1000);
    return {
      healthy: status.connected && store.reachable && consumers.every((c) => c.consuming),
      broker: { transport: status.transport, url: this.broker.describe(), connected: status.connected },
      consumers,
      store,
      storeBacklog: this.worker?.storeBacklog ?? 0,
    };
  }

  /** True when the broker is connected, every queue is consumed and the result store answers. */
  async isHealthy(options: CeleryHealthOptions = {}): Promise<boolean> {
    return (await this.health(options)).healthy;
  }

  private async pingStore(timeoutMs: number): Promise<CeleryHealthReport['store']> {
    const backend = this.config.resultBackend;
    try {
      await this.store.ping(timeoutMs);
      return { backend, reachable: true };
    } catch (err) {
      return { backend, reachable: false, error: err instanceof Error ? err.message : String(err) };
    }
  }
}
