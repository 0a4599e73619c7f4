import { Controller, Get } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import { HealthCheck, HealthCheckService, TerminusModule } from '@nestjs/terminus';
import { Broker, CeleryHealth, CeleryModule, CeleryModuleOptions, Producer, ResultStore } from '../../../lib';
import { CeleryHealthIndicator } from '../../../lib/terminus';
import { EventTasks } from '../../support/event-tasks';

@Controller()
class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly celery: CeleryHealthIndicator,
  ) {}

  @Get('health')
  @HealthCheck()
  check() {
    return this.health.check([() => this.celery.isHealthy('celery', { storeTimeoutMs: 200 })]);
  }
}

async function moduleWith(options: CeleryModuleOptions = {}, terminus = false): Promise<TestingModule> {
  const moduleRef = await Test.createTestingModule({
    imports: [CeleryModule.forRoot({ resultPollIntervalMs: 5, ...options }), ...(terminus ? [TerminusModule] : [])],
    providers: [EventTasks, ...(terminus ? [CeleryHealthIndicator] : [])],
    controllers: terminus ? [HealthController] : [],
  }).compile();
  await moduleRef.init();
  return moduleRef;
}

describe('CeleryHealth (memory transports, broker and store faked where down)', () => {
  let moduleRef: TestingModule | null = null;
  afterEach(async () => {
    jest.restoreAllMocks();
    await moduleRef?.close();
    moduleRef = null;
  });

  it('healthy on the embedded transports: memory broker connected, its queue consumed, the memory store reachable', async () => {
    moduleRef = await moduleWith({ worker: { queues: ['celery', 'other'] } });
    const health = moduleRef.get(CeleryHealth);
    await expect(health.health()).resolves.toEqual({
      healthy: true,
      broker: { transport: 'memory', url: expect.any(String), connected: true },
      consumers: [
        { queue: 'celery', consuming: true },
        { queue: 'other', consuming: true },
      ],
      store: { backend: 'memory', reachable: true },
      storeBacklog: 0,
    });
    await expect(health.isHealthy()).resolves.toBe(true);
  });

  it('no consumers reported when the worker is off', async () => {
    moduleRef = await moduleWith({ worker: { enabled: false } });
    const report = await moduleRef.get(CeleryHealth).health();
    expect(report.consumers).toEqual([]);
    expect(report.healthy).toBe(true);
  });

  it('unhealthy when the broker is disconnected (its consumers then are not consuming)', async () => {
    moduleRef = await moduleWith();
    const broker = moduleRef.get(Broker);
    jest.spyOn(broker, 'status').mockReturnValue({ transport: 'amqp', connected: false, consumers: [{ queue: 'celery', consuming: false }] });
    const report = await moduleRef.get(CeleryHealth).health();
    expect(report).toMatchObject({ healthy: false, broker: { connected: false }, consumers: [{ queue: 'celery', consuming: false }] });
  });

  it('unhealthy when a queue has no live consumer although the broker is up', async () => {
    moduleRef = await moduleWith();
    jest.spyOn(moduleRef.get(Broker), 'status').mockReturnValue({ transport: 'amqp', connected: true, consumers: [{ queue: 'celery', consuming: false }] });
    await expect(moduleRef.get(CeleryHealth).isHealthy()).resolves.toBe(false);
  });

  it('unhealthy when the store does not answer its ping in time; the error says why', async () => {
    moduleRef = await moduleWith();
    const store = moduleRef.get(ResultStore);
    const ping = jest.spyOn(store, 'ping').mockImplementation((ms) => new Promise((_, reject) => setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)));
    const report = await moduleRef.get(CeleryHealth).health({ storeTimeoutMs: 30 });
    expect(ping).toHaveBeenCalledWith(30);
    expect(report).toMatchObject({ healthy: false, store: { backend: 'memory', reachable: false, error: 'no answer within 30 ms' } });
  });

  it('reports the store backlog: results being retried while the store fails', async () => {
    moduleRef = await moduleWith();
    const store = moduleRef.get(ResultStore);
    const real = store.store.bind(store);
    let down = true;
    jest.spyOn(store, 'store').mockImplementation((r) => (down ? Promise.reject(new Error('store down')) : real(r)));
    const result = await moduleRef.get(Producer).sendTask('ev.add', { args: [1, 2] });
    const health = moduleRef.get(CeleryHealth);
    for (let i = 0; i < 100 && (await health.health()).storeBacklog === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect((await health.health()).storeBacklog).toBe(1);
    down = false;
    await expect(result.get({ timeout: 5000 })).resolves.toBe(3);
    expect((await health.health()).storeBacklog).toBe(0);
  });

  it('the terminus indicator: up with the report as details, down (503 through HealthCheckService) when the broker is down', async () => {
    moduleRef = await moduleWith({}, true);
    const indicator = moduleRef.get(CeleryHealthIndicator);
    await expect(indicator.isHealthy()).resolves.toEqual({
      celery: expect.objectContaining({ status: 'up', broker: expect.objectContaining({ connected: true }), consumers: [{ queue: 'celery', consuming: true }] }),
    });
    const controller = moduleRef.get(HealthController);
    await expect(controller.check()).resolves.toMatchObject({ status: 'ok', info: { celery: { status: 'up' } } });
    jest.spyOn(moduleRef.get(Broker), 'status').mockReturnValue({ transport: 'amqp', connected: false, consumers: [] });
    await expect(indicator.isHealthy('celery')).resolves.toMatchObject({ celery: { status: 'down', broker: { connected: false } } });
    const thrown = await controller.check().then(
      () => null,
      (err: { getStatus?: () => number; getResponse?: () => unknown }) => err,
    );
    expect(thrown?.getStatus?.()).toBe(503);
    expect(thrown?.getResponse?.()).toMatchObject({ status: 'error', error: { celery: { status: 'down' } } });
  });
});
