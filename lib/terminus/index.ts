import { Injectable } from '@nestjs/common';
import { HealthIndicatorService, type HealthIndicatorResult } from '@nestjs/terminus';
import { CeleryHealth, type CeleryHealthOptions } from '../health/celery-health';

/**
 * `nestjs-celery/terminus`: the module's health as a @nestjs/terminus indicator (an optional peer:
 * only this entry point loads it). Up or down with {@link CeleryHealth}'s report as its details:
 *
 *     imports: [TerminusModule, CeleryModule.forRoot(...)], providers: [CeleryHealthIndicator]
 *     @Get('health') @HealthCheck() check() { return this.health.check([() => this.celery.isHealthy('celery')]); }
 */
@Injectable()
export class CeleryHealthIndicator {
  constructor(
    private readonly indicators: HealthIndicatorService,
    private readonly celery: CeleryHealth,
  ) {}

  async isHealthy<const Key extends string = 'celery'>(key: Key = 'celery' as Key, options: CeleryHealthOptions = {}): Promise<HealthIndicatorResult<Key>> {
    const indicator = this.indicators.check(key);
    const { healthy, ...details } = await this.celery.health(options);
    return healthy ? indicator.up(details) : indicator.down(details);
  }
}
