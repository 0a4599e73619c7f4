// `nestjs-celery/metrics`: the Prometheus metrics class (loads prom-client, an optional peer).
export { PrometheusCeleryMetrics, DURATION_BUCKETS } from './prometheus-metrics';
export { CELERY_METRICS, CELERY_METRICS_REGISTRY } from './task-metrics';
export type { MetricsOptions, CeleryMetricsSink, TaskMetricsHooks, WorkerGaugeSource } from './task-metrics';
