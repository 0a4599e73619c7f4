import { QueueTable } from '../protocol/routing';
import type { ResolvedCeleryConfig } from './resolved-config';

const tables = new WeakMap<ResolvedCeleryConfig, QueueTable>();

/**
 * The queue table of a module's configuration (Celery's `app.amqp.queues`), one per configuration
 * object: the broker, the producer and the worker see the same queues, including those created as
 * missing along the way.
 */
export function queueTableOf(config: ResolvedCeleryConfig): QueueTable {
  let table = tables.get(config);
  if (!table) {
    table = new QueueTable(config.routing);
    tables.set(config, table);
  }
  return table;
}

/** Per-consumer QoS, as Celery 5.7 sets it: a quorum queue is configured and `worker_detect_quorum_queues` is on. */
export function perConsumerQos(config: ResolvedCeleryConfig): boolean {
  return config.worker.detectQuorumQueues && queueTableOf(config).quorum;
}
