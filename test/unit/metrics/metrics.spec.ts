import { Test, TestingModule } from '@nestjs/testing';
import { Registry } from 'prom-client';
import { CELERY_METRICS, CELERY_METRICS_REGISTRY, CeleryModule, CeleryModuleOptions, Producer, ResultStore } from '../../../lib';
import { normalizeCeleryOptions } from '../../../lib/config/normalize-options';
import { CeleryConfigError } from '../../../lib/errors/celery.errors';
import { EventTasks } from '../../support/event-tasks';

type MetricJson = { name: string; values: { value: number; labels: Record<string, string | number>; metricName?: string }[] };

async function moduleWith(options: CeleryModuleOptions): Promise<TestingModule> {
  const moduleRef = await Test.createTestingModule({
    imports: [CeleryModule.forRoot({ resultPollIntervalMs: 5, ...options, worker: { hostname: 'unit@metrics', ...options.worker } })],
    providers: [EventTasks],
  }).compile();
  await moduleRef.init();
  return moduleRef;
}

async function values(registry: Registry, name: string): Promise<MetricJson['values']> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name) as MetricJson | undefined;
  if (!metric) throw new Error(`no metric ${name} in ${(await registry.getMetricsAsJSON()).map((m) => m.name).join(', ')}`);
  return metric.values;
}

const valueOf = (vals: MetricJson['values'], labels: Record<string, string>, metricName?: string) =>
  vals.find((v) => (metricName === undefined || v.metricName === metricName) && Object.entries(labels).every(([k, x]) => v.labels[k] === x))?.value;

describe('Prometheus metrics (memory transports)', () => {
  let moduleRef: TestingModule | null = null;
  afterEach(async () => {
    await moduleRef?.close();
    moduleRef = null;
  });

  it('off by default: no metrics object, no registry, the global register untouched', async () => {
    const { register } = await import('prom-client');
    const before = (await register.getMetricsAsJSON()).map((m) => m.name);
    moduleRef = await moduleWith({});
    expect(moduleRef.get(CELERY_METRICS)).toBeNull();
    expect(moduleRef.get(CELERY_METRICS_REGISTRY)).toBeNull();
    await (await moduleRef.get(Producer).sendTask('ev.add', { args: [1, 2] })).get({ timeout: 5000 });
    expect((await register.getMetricsAsJSON()).map((m) => m.name)).toEqual(before);
  });

  it('counts tasks by name and state, observes runtime, queue wait and store latency, in the registry given', async () => {
    const registry = new Registry();
    moduleRef = await moduleWith({ metrics: { enabled: true, registry } });
    expect(moduleRef.get(CELERY_METRICS_REGISTRY)).toBe(registry);
    const producer = moduleRef.get(Producer);
    await (await producer.sendTask('ev.add', { args: [2, 3] })).get({ timeout: 5000 });
    await (await producer.sendTask('ev.add', { args: [4, 5] })).get({ timeout: 5000 });
    await expect((await producer.sendTask('ev.fail')).get({ timeout: 5000 })).rejects.toThrow();
    await (await producer.sendTask('ev.retry_once')).get({ timeout: 5000 });
    await expect((await producer.sendTask('no.such_task')).get({ timeout: 5000 })).rejects.toThrow();
    await new Promise((resolve) => setTimeout(resolve, 20));

    const tasks = await values(registry, 'celery_tasks_total');
    expect(valueOf(tasks, { task: 'ev.add', state: 'received' })).toBe(2);
    expect(valueOf(tasks, { task: 'ev.add', state: 'succeeded' })).toBe(2);
    expect(valueOf(tasks, { task: 'ev.fail', state: 'failed' })).toBe(1);
    expect(valueOf(tasks, { task: 'ev.retry_once', state: 'received' })).toBe(2);
    expect(valueOf(tasks, { task: 'ev.retry_once', state: 'retried' })).toBe(1);
    expect(valueOf(tasks, { task: 'ev.retry_once', state: 'succeeded' })).toBe(1);
    expect(valueOf(tasks, { task: 'no.such_task', state: 'rejected' })).toBe(1);

    const runtime = await values(registry, 'celery_task_runtime_seconds');
    expect(valueOf(runtime, { task: 'ev.add', state: 'succeeded' }, 'celery_task_runtime_seconds_count')).toBe(2);
    expect(valueOf(runtime, { task: 'ev.fail', state: 'failed' }, 'celery_task_runtime_seconds_count')).toBe(1);
    const wait = await values(registry, 'celery_task_queue_wait_seconds');
    expect(valueOf(wait, { task: 'ev.add' }, 'celery_task_queue_wait_seconds_count')).toBe(2);
    // 2 ev.add + ev.fail + the RETRY and SUCCESS rows of ev.retry_once (the NotRegistered FAILURE is not the writer's)
    const store = await values(registry, 'celery_store_duration_seconds');
    expect(valueOf(store, { outcome: 'stored' }, 'celery_store_duration_seconds_count')).toBe(5);
    expect(valueOf(await values(registry, 'celery_messages_in_flight'), {})).toBe(0);
    expect(valueOf(await values(registry, 'celery_held_eta_messages'), {})).toBe(0);
    expect(valueOf(await values(registry, 'celery_store_backlog'), {})).toBe(0);
    expect(valueOf(await values(registry, 'celery_broker_connected'), {})).toBe(1);
    const text = await registry.metrics();
    expect(text).toContain('celery_tasks_total{task="ev.add",state="succeeded"} 2');
  });

  it('gauges read the worker at scrape time: held ETA tasks and messages in flight', async () => {
    const registry = new Registry();
    moduleRef = await moduleWith({ metrics: { enabled: true, registry, prefix: 'app_celery_' } });
    await moduleRef.get(Producer).sendTask('ev.add', { args: [1, 1], countdown: 30 });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(valueOf(await values(registry, 'app_celery_held_eta_messages'), {})).toBe(1);
    expect(valueOf(await values(registry, 'app_celery_messages_in_flight'), {})).toBe(1);
    expect(valueOf(await values(registry, 'app_celery_tasks_total'), { task: 'ev.add', state: 'received' })).toBe(1);
  });

  it('store retries counted while the store fails; the retried write lands', async () => {
    const registry = new Registry();
    moduleRef = await moduleWith({ metrics: { enabled: true, registry } });
    const store = moduleRef.get(ResultStore);
    const real = store.store.bind(store);
    let failures = 2;
    jest.spyOn(store, 'store').mockImplementation((r) => (failures-- > 0 ? Promise.reject(new Error('store down')) : real(r)));
    await (await moduleRef.get(Producer).sendTask('ev.add', { args: [1, 2] })).get({ timeout: 5000 });
    expect(valueOf(await values(registry, 'celery_store_retries_total'), {})).toBe(2);
    const store_ = await values(registry, 'celery_store_duration_seconds');
    expect(valueOf(store_, { outcome: 'error' }, 'celery_store_duration_seconds_count')).toBe(2);
  });

  it('a module created again in the same registry replaces its metrics', async () => {
    const registry = new Registry();
    moduleRef = await moduleWith({ metrics: { enabled: true, registry } });
    await moduleRef.close();
    moduleRef = await moduleWith({ metrics: { enabled: true, registry } });
    await (await moduleRef.get(Producer).sendTask('ev.add', { args: [1, 2] })).get({ timeout: 5000 });
    await new Promise((resolve) => setTimeout(resolve, 20)); // counted after the ack, which follows the stored result
    expect(valueOf(await values(registry, 'celery_tasks_total'), { task: 'ev.add', state: 'succeeded' })).toBe(1);
  });

  it('bad metrics options are refused naming the option', () => {
    expect(() => normalizeCeleryOptions({ metrics: { enabled: 'yes' as unknown as boolean } })).toThrow(CeleryConfigError);
    expect(() => normalizeCeleryOptions({ metrics: { registry: {} } })).toThrow(/metrics\.registry.*prom-client Registry/);
    expect(() => normalizeCeleryOptions({ metrics: { prefix: '1x' } })).toThrow(/metrics\.prefix/);
    expect(() => normalizeCeleryOptions({ metrics: { enable: true } as never })).toThrow(/metrics\.enable/);
    expect(normalizeCeleryOptions({}).metrics).toEqual({ enabled: false, registry: null, prefix: 'celery_' });
  });
});
