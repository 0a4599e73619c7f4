import { Test, TestingModule } from '@nestjs/testing';
import { Registry } from 'prom-client';
import { CeleryHealth, CeleryModule, Producer } from '../../lib';
import { EventTasks } from '../support/event-tasks';
import { realOptions, removeQueueAndTable, uniqueName } from '../support/real-services';

type Values = { value: number; labels: Record<string, string | number>; metricName?: string }[];

/** Metrics and health of a module on the real RabbitMQ and Cassandra: publish confirms, store latency, task counters. */
describe('metrics and health on RabbitMQ and Cassandra', () => {
  const queue = uniqueName('it_metrics');
  const table = uniqueName('it_metrics');
  const registry = new Registry();
  let moduleRef: TestingModule;

  beforeAll(async () => {
    moduleRef = await Test.createTestingModule({
      imports: [CeleryModule.forRoot(realOptions(queue, table, { metrics: { enabled: true, registry }, worker: { queues: [queue] } }))],
      providers: [EventTasks],
    }).compile();
    await moduleRef.init();
  });

  afterAll(async () => {
    await moduleRef?.close();
    await removeQueueAndTable(queue, table);
  });

  const values = async (name: string): Promise<Values> => ((await registry.getMetricsAsJSON()).find((m) => m.name === name)?.values ?? []) as Values;
  const find = (vals: Values, labels: Record<string, string>, metricName?: string) =>
    vals.find((v) => (metricName === undefined || v.metricName === metricName) && Object.entries(labels).every(([k, x]) => v.labels[k] === x))?.value;

  it('publish confirms and their latency by queue, store latency, tasks by name; health up with the real store pinged', async () => {
    const producer = moduleRef.get(Producer);
    const results = await Promise.all([1, 2, 3].map((n) => producer.sendTask('ev.add', { args: [n, n] })));
    await Promise.all(results.map((r) => r.get({ timeout: 15000 })));
    await new Promise((resolve) => setTimeout(resolve, 50));

    expect(find(await values('celery_publish_confirms_total'), { messaging_destination_name: queue, outcome: 'confirmed' })).toBe(3);
    const publish = await values('celery_publish_duration_seconds');
    expect(find(publish, { messaging_destination_name: queue }, 'celery_publish_duration_seconds_count')).toBe(3);
    expect(find(publish, { messaging_destination_name: queue }, 'celery_publish_duration_seconds_sum')).toBeGreaterThan(0);
    expect(find(await values('celery_store_duration_seconds'), { outcome: 'stored' }, 'celery_store_duration_seconds_count')).toBe(3);
    expect(find(await values('celery_tasks_total'), { task: 'ev.add', state: 'succeeded' })).toBe(3);
    expect(find(await values('celery_broker_connected'), {})).toBe(1);

    const report = await moduleRef.get(CeleryHealth).health({ storeTimeoutMs: 2000 });
    expect(report).toMatchObject({ healthy: true, broker: { transport: 'amqp', connected: true }, consumers: [{ queue, consuming: true }], store: { backend: 'cassandra', reachable: true } });
  });
});
