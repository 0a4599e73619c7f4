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
    this.tasks = new Counter({
      name: fresh(`${p}tasks_total`),
      help: 'Tasks by name and state: received, succeeded, failed, retried, rejected, revoked',
      labelNames: ['task', 'state'],
      registers,
    });
    this.runtime = new Histogram({
      name: fresh(`${p}task_runtime_seconds`),
      help: "Seconds a task's function ran (OpenTelemetry messaging.process.duration), by task name and final state",
      labelNames: ['task', 'state'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.queueWait = new Histogram({
      name: fresh(`${p}task_queue_wait_seconds`),
      help: 'Seconds from a task being ready to run (received, or its ETA) to its start: slot and rate-limit waits',
      labelNames: ['task'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.storeDuration = new Histogram({
      name: fresh(`${p}store_duration_seconds`),
      help: 'Seconds of each result store attempt, by outcome (stored, kept: a SUCCESS was already there, error)',
      labelNames: ['outcome'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.storeRetries = new Counter({ name: fresh(`${p}store_retries_total`), help: 'Result writes retried after a transient store error', registers });
    this.confirms = new Counter({
      name: fresh(`${p}publish_confirms_total`),
      help: 'Task messages published, by queue and outcome (confirmed by the broker, or failed)',
      labelNames: ['messaging_destination_name', 'outcome'],
      registers,
    });
    this.publishDuration = new Histogram({
      name: fresh(`${p}publish_duration_seconds`),
      help: 'Seconds from publish to the broker confirm (OpenTelemetry messaging.client.operation.duration, send), by queue',
      labelNames: ['messaging_destination_name'],
      buckets: DURATION_BUCKETS,
      registers,
    });
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
