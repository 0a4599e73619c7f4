import { Controller, Get, Header, Inject, Module } from '@nestjs/common';
import { HealthCheck, HealthCheckService, TerminusModule } from '@nestjs/terminus';
import { CELERY_METRICS_REGISTRY, type CeleryMetricsSink } from '../lib';
import { CeleryHealthIndicator } from '../lib/terminus';

/** `GET /health`: 200 with terminus' JSON while the broker, the consumers and the result store are up; 503 when one is down. */
@Controller('health')
export class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly celery: CeleryHealthIndicator,
  ) {}

  @Get()
  @HealthCheck()
  check() {
    return this.health.check([() => this.celery.isHealthy('celery', { storeTimeoutMs: 1000 })]);
  }
}

/** `GET /metrics`: the registry the module's metrics are in (prom-client's global one here), in Prometheus' text format. */
@Controller('metrics')
export class MetricsController {
  constructor(@Inject(CELERY_METRICS_REGISTRY) private readonly registry: CeleryMetricsSink['registry'] | null) {}

  @Get()
  @Header('Content-Type', 'text/plain; version=0.0.4; charset=utf-8')
  async metrics(): Promise<string> {
    return this.registry ? this.registry.metrics() : '# metrics are off (metrics.enabled)\n';
  }
}

/** The sample worker's HTTP side (`SAMPLE_HTTP_PORT`, default 3000): health through @nestjs/terminus and Prometheus metrics. */
@Module({
  imports: [TerminusModule],
  controllers: [HealthController, MetricsController],
  providers: [CeleryHealthIndicator],
})
export class SampleHttpModule {}
