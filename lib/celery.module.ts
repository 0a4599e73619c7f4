import { Module } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { Broker } from './broker/broker.interface';
import { CeleryConnections } from './celery.connections';
import { CELERY_CONFIG } from './celery.constants';
import { CELERY_MODULE_OPTIONS, CeleryConfigurableModule } from './celery.module-definition';
import { normalizeCeleryOptions } from './config/normalize-options';
import type { ResolvedCeleryConfig } from './config/resolved-config';
import { TaskMetadataAccessor } from './discovery/task-metadata.accessor';
import { TaskExplorer } from './discovery/task.explorer';
import { TaskEnhancers } from './enhancers/task-enhancers';
import { TaskRegistry } from './discovery/task.registry';
import type { CeleryOptionsInput } from './interfaces/celery-options.interface';
import { Producer } from './producer/producer.service';
import { CeleryControl } from './control/celery-control';
import { ResultStore } from './results/result-store.interface';
import { ResultNotifier } from './results/result-notifier';
import { CeleryWorker } from './worker/celery.worker';
import { CeleryTaskContext } from './worker/task-context';
import { PeriodicScheduler } from './scheduler/periodic.scheduler';
import { CeleryClock } from './events/event-clock';
import { WorkerEvents } from './events/worker-events';
import { CeleryHealth } from './health/celery-health';
import { CELERY_METRICS, CELERY_METRICS_REGISTRY, type CeleryMetricsSink } from './metrics/task-metrics';
import { loadMetrics } from './metrics/load-metrics';

/**
 * `CeleryModule.forRoot(options)` / `CeleryModule.forRootAsync({ imports, inject, useFactory })`.
 * Provides `Producer`, `CeleryControl`, `ResultStore`, `TaskRegistry` and `Broker`; discovers `@Task()` methods and,
 * unless `worker.enabled` is false, consumes their queues. Global by default (`isGlobal: false` to scope it).
 */
@Module({
  imports: [DiscoveryModule],
  providers: [
    {
      provide: CELERY_CONFIG,
      useFactory: (options: CeleryOptionsInput) => normalizeCeleryOptions(options),
      inject: [CELERY_MODULE_OPTIONS],
    },
    {
      provide: CeleryConnections,
      useFactory: (config: ResolvedCeleryConfig) => CeleryConnections.open(config),
      inject: [CELERY_CONFIG],
    },
    { provide: Broker, useFactory: (c: CeleryConnections) => c.broker, inject: [CeleryConnections] },
    { provide: ResultStore, useFactory: (c: CeleryConnections) => c.store, inject: [CeleryConnections] },
    { provide: ResultNotifier, useFactory: (c: CeleryConnections) => c.notifier, inject: [CeleryConnections] },
    TaskMetadataAccessor,
    TaskRegistry,
    TaskExplorer,
    { provide: CeleryControl, useFactory: (broker: Broker, clock: CeleryClock) => new CeleryControl(broker, { clock }), inject: [Broker, CeleryClock] },
    TaskEnhancers,
    Producer,
    CeleryWorker,
    CeleryTaskContext,
    PeriodicScheduler,
    CeleryClock,
    WorkerEvents,
    // metrics (issue 15 item 3): null while `metrics.enabled` is false (prom-client is then never loaded)
    { provide: CELERY_METRICS, useFactory: (config: ResolvedCeleryConfig, c: CeleryConnections) => loadMetrics(config.metrics, c.broker), inject: [CELERY_CONFIG, CeleryConnections] },
    { provide: CELERY_METRICS_REGISTRY, useFactory: (m: CeleryMetricsSink | null) => m?.registry ?? null, inject: [CELERY_METRICS] },
    CeleryHealth,
  ],
  exports: [
    Producer,
    CeleryControl,
    ResultStore,
    TaskRegistry,
    Broker,
    CELERY_CONFIG,
    CeleryWorker,
    CeleryTaskContext,
    PeriodicScheduler,
    CeleryClock,
    WorkerEvents,
    CELERY_METRICS,
    CELERY_METRICS_REGISTRY,
    CeleryHealth,
  ],
})
export class CeleryModule extends CeleryConfigurableModule {}
