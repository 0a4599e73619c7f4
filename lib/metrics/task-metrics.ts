import type { Broker, PublishObserver } from '../broker/broker.interface';
import type { StoreObserver } from '../results/result-writer';

/** Injection token of the module's metrics (a {@link CeleryMetricsSink}), null while `metrics.enabled` is false. */
export const CELERY_METRICS = Symbol('CELERY_METRICS');
/** Injection token of the prom-client Registry the metrics are registered in (null while metrics are off): serve `/metrics` from it. */
export const CELERY_METRICS_REGISTRY = Symbol('CELERY_METRICS_REGISTRY');

/**
 * What a task request tells the metrics (lib/worker/task-request.ts calls these next to its task
 * events, behind a null check: nothing is measured while metrics are off). `task` is the task's name.
 */
export interface TaskMetricsHooks {
  received(task: string): void;
  /** The task starts running; `waitSeconds` since it was ready to run (received, or its ETA when later). */
  started(task: string, waitSeconds: number): void;
  /** It ended with `state` (SUCCESS, FAILURE or REVOKED) after running `runtimeSeconds`. */
  ended(task: string, state: string, runtimeSeconds: number): void;
  retried(task: string): void;
  /** Its message was rejected without requeue (unregistered, unstorable, invalid: `task` is '' when it could not be decoded). */
  rejected(task: string): void;
}

/** What the worker reports at scrape time (gauges read it then: nothing to keep up to date). */
export interface WorkerGaugeSource {
  /** Messages received and not yet settled (held, waiting, running, storing). */
  inFlight(): number;
  /** ETA tasks held in memory until their time. */
  heldEta(): number;
  /** Results waiting for the store to come back. */
  storeBacklog(): number;
}

/** The metrics behind {@link CELERY_METRICS}: the hooks of the task requests, the result writer and the broker. */
export interface CeleryMetricsSink extends TaskMetricsHooks, StoreObserver {
  /** The prom-client Registry (typed loosely so that this entry point never needs prom-client's types). */
  readonly registry: { metrics(): Promise<string>; readonly contentType: string };
  readonly published: PublishObserver;
  bindWorker(source: WorkerGaugeSource): void;
  bindBroker(broker: Broker): void;
}

/** `metrics` in the module options. */
export interface MetricsOptions {
  /** Default false: no metric is created and prom-client is never loaded. */
  enabled?: boolean;
  /** A prom-client `Registry` to register in (share your app's); default prom-client's global `register`. */
  registry?: object;
  /** Prefix of every metric name; default `celery_`. */
  prefix?: string;
}

/** `metrics`, resolved. */
export interface ResolvedMetricsConfig {
  enabled: boolean;
  registry: object | null;
  prefix: string;
}
