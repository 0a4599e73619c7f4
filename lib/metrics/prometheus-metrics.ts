import { Counter, Gauge, Histogram, register as globalRegister, Registry } from 'prom-client';
import type { Broker } from '../broker/broker.interface';
import type { CeleryMetricsSink, ResolvedMetricsConfig, WorkerGaugeSource } from './task-metrics';

/** OpenTelemetry's advised buckets for messaging durations (seconds). */
export const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

/** Task states counted in `celery_tasks_total{state}` (lower case, as Celery's task event names). */
const ENDED_STATE: Record<string, string> = { SUCCESS: 'succeeded', FAILURE: 'failed', REVOKED: 'revoked' };

/**
 * The module's Prometheus metrics (`metrics.enabled`), in the registry given (`metrics.registry`)
 * or prom-client's global `register`. Names (with the default prefix `celery_`) and labels are in
 * README, "Metrics". Only loaded when metrics are on (lib/metrics/load-metrics.ts).
 */
export class PrometheusCeleryMetrics implements CeleryMetricsSink {
  readonly registry: Registry;
  private readonly tasks: Counter<'task' | 'state'>;
  private readonly runtime: Histogram<'task' | 'state'>;
  private readonly queueWait: Histogram<'task'>;
  private readonly storeDuration: Histogram<'outcome'>;
  private readonly storeRetries: Counter;
  private readonly confirms: Counter<'messaging_destination_name' | 'outcome'>;
  private readonly publishDuration: Histogram<'messaging_destination_name'>;
  private worker: WorkerGaugeSource | null = null;
  private broker: Broker | null = null;

  constructor(config: Pick<ResolvedMetricsConfig, 'registry' | 'prefix'>) {
    const registry = (config.registry as Registry | null) ?? globalRegister;
    this.registry = registry;
    const p = config.prefix;
    const registers = [registry];
    // a module created again in the same process (tests, a re-created app) replaces its metrics
    const fresh = (name: string) => {
      if (registry.getSingleMetric(name)) registry.removeSingleMetric(name);
      return name;
    };
    const counter = <L extends string>(name: string, help: string, labelNames: L[] = []) => new Counter<L>({ name: fresh(`${p}${name}`), help, labelNames, registers });
    const histogram = <L extends string>(name: string, help: string, labelNames: L[]) =>
      new Histogram<L>({ name: fresh(`${p}${name}`), help, labelNames, buckets: DURATION_BUCKETS, registers });
    this.tasks = counter('tasks_total', 'Tasks by name and state: received, succeeded, failed, retried, rejected, revoked', ['task', 'state']);
    this.runtime = histogram('task_runtime_seconds', "Seconds a task's function ran (OpenTelemetry messaging.process.duration), by task name and final state", ['task', 'state']);
    this.queueWait = histogram('task_queue_wait_seconds', 'Seconds from a task being ready to run (received, or its ETA) to its start: slot and rate-limit waits', ['task']);
    this.storeDuration = histogram('store_duration_seconds', 'Seconds of each result store attempt, by outcome (stored, kept: a SUCCESS was already there, error)', ['outcome']);
    this.storeRetries = counter('store_retries_total', 'Result writes retried after a transient store error');
    this.confirms = counter('publish_confirms_total', 'Task messages published, by queue and outcome (confirmed by the broker, or failed)', ['messaging_destination_name', 'outcome']);
    this.publishDuration = histogram(
      'publish_duration_seconds',
      'Seconds from publish to the broker confirm (OpenTelemetry messaging.client.operation.duration, send), by queue',
      ['messaging_destination_name'],
    );
    const self = this;
    const gauge = (name: string, help: string, read: () => number | null) =>
      new Gauge({
        name: fresh(`${p}${name}`),
        help,
        registers,
        collect() {
          const value = read();
          if (value !== null) this.set(value);
        },
      });
    gauge('messages_in_flight', 'Task messages received and not yet settled (held, waiting, running, storing)', () => self.worker?.inFlight() ?? null);
    gauge('held_eta_messages', 'ETA tasks held in memory until their time', () => self.worker?.heldEta() ?? null);
    gauge('store_backlog', 'Results waiting for the store to come back (retried with back-off)', () => self.worker?.storeBacklog() ?? null);
    gauge('broker_connected', 'Whether the broker connection is up (1) or not (0)', () => {
      const broker = self.broker;
      return broker ? (broker.status().connected ? 1 : 0) : null;
    });
  }

  readonly published = (queue: string, seconds: number, confirmed: boolean): void => {
    this.confirms.inc({ messaging_destination_name: queue, outcome: confirmed ? 'confirmed' : 'failed' });
    if (confirmed) this.publishDuration.observe({ messaging_destination_name: queue }, seconds);
  };

  bindWorker(source: WorkerGaugeSource): void {
    this.worker = source;
  }

  bindBroker(broker: Broker): void {
    this.broker = broker;
    broker.publishObserver = this.published;
  }

  received(task: string): void {
    this.tasks.inc({ task, state: 'received' });
  }

  started(task: string, waitSeconds: number): void {
    this.queueWait.observe({ task }, waitSeconds);
  }

  ended(task: string, state: string, runtimeSeconds: number): void {
    const label = ENDED_STATE[state] ?? state.toLowerCase();
    this.tasks.inc({ task, state: label });
    this.runtime.observe({ task, state: label }, runtimeSeconds);
  }

  retried(task: string): void {
    this.tasks.inc({ task, state: 'retried' });
  }

  rejected(task: string): void {
    this.tasks.inc({ task, state: 'rejected' });
  }

  storeAttempted(seconds: number, outcome: 'stored' | 'kept' | 'error'): void {
    this.storeDuration.observe({ outcome }, seconds);
  }

  storeRetried(): void {
    this.storeRetries.inc();
  }
}
