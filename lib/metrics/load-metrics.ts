import type { Broker } from '../broker/broker.interface';
import { CeleryConfigError } from '../errors/celery.errors';
import type { CeleryMetricsSink, ResolvedMetricsConfig } from './task-metrics';

/**
 * The module's metrics when `metrics.enabled`, else null. prom-client is loaded here, on first use
 * only: `import 'nestjs-celery'` never requires it.
 */
export function loadMetrics(config: ResolvedMetricsConfig, broker: Broker): CeleryMetricsSink | null {
  if (!config.enabled) return null;
  let loaded: typeof import('./prometheus-metrics');
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    loaded = require('./prometheus-metrics') as typeof import('./prometheus-metrics');
  } catch (err) {
    if ((err as { code?: string }).code === 'MODULE_NOT_FOUND' && String((err as Error).message).includes("'prom-client'")) {
      throw new CeleryConfigError('metrics.enabled', 'needs the optional peer dependency prom-client (npm install prom-client)');
    }
    throw err;
  }
  const { PrometheusCeleryMetrics } = loaded;
  const metrics = new PrometheusCeleryMetrics(config);
  metrics.bindBroker(broker);
  return metrics;
}
