import { Injectable, Logger, OnApplicationShutdown } from '@nestjs/common';
import { AmqpBroker } from './broker/amqp.broker';
import { readTlsFiles } from './config/tls-files';
import { Broker } from './broker/broker.interface';
import { MemoryBroker } from './broker/memory.broker';
import type { ResolvedCeleryConfig } from './config/resolved-config';
import { perConsumerQos, queueTableOf } from './config/queue-table';
import { CassandraResultStore } from './results/cassandra.result-store';
import { DisabledResultStore } from './results/disabled.result-store';
import { MemoryResultStore } from './results/memory.result-store';
import { ResultStore } from './results/result-store.interface';
import { ResultNotifier } from './results/result-notifier';

/**
 * The broker and result-store connections of one module, opened together at startup (so an
 * unreachable broker or database fails the application with an error naming it) and closed last,
 * after the worker has drained.
 */
@Injectable()
export class CeleryConnections implements OnApplicationShutdown {
  private readonly logger = new Logger('CeleryModule');

  constructor(
    readonly broker: Broker,
    readonly store: ResultStore,
    /** Result pushes to this process (AMQP with a result store); null otherwise. */
    readonly notifier: ResultNotifier | null = null,
  ) {}

  static async open(config: ResolvedCeleryConfig): Promise<CeleryConnections> {
    const table = queueTableOf(config);
    const queues = (name: string) => table.get(name);
    const broker: Broker =
      config.brokerKind === 'memory'
        ? new MemoryBroker({ queueArguments: config.queueArguments ?? undefined, queues })
        : new AmqpBroker({
            url: config.brokerUrl,
            retryOnStartup: config.brokerConnectionRetryOnStartup,
            publishTimeoutMs: config.publishTimeoutMs,
            tls: config.brokerTls ? readTlsFiles(config.brokerTls, 'broker') : null,
            queueArguments: config.queueArguments ?? undefined,
            queues,
            perConsumerQos: perConsumerQos(config),
          });
    const store: ResultStore =
      config.resultBackend === 'cassandra' && config.cassandra
        ? new CassandraResultStore(config.cassandra, { envelopes: config.peerCompat !== '5.2' }, config.worker.maxResultBytes, { resultExtended: config.resultExtended })
        : config.resultBackend === 'memory'
          ? new MemoryResultStore({ maxResultBytes: config.worker.maxResultBytes, resultExtended: config.resultExtended })
          : new DisabledResultStore();
    await broker.connect();
    try {
      await store.connect({ forWrites: config.worker.enabled });
      // The memory store already wakes waiters itself; over AMQP results are pushed to a reply queue.
      const notifier = config.brokerKind === 'amqp' && store.enabled ? await ResultNotifier.start(broker) : null;
      return new CeleryConnections(broker, store, notifier);
    } catch (err) {
      await Promise.allSettled([broker.close(), store.close()]);
      throw err;
    }
  }

  async onApplicationShutdown(): Promise<void> {
    await Promise.allSettled([this.broker.close(), this.store.close()]);
    this.logger.log('Broker and result store connections closed');
  }
}
