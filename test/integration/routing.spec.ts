import { Logger } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import { AmqpBroker, CeleryBrokerRefusedError, CeleryModule, CeleryModuleOptions, Delivery, Producer } from '../../lib';
import { encodeTaskMessage } from '../../lib/protocol/task-message';
import { FixtureTasks } from '../support/fixture-tasks';
import { withConsumerTimeout } from '../support/rabbitmq-admin';
import { AMQP_URL, eventually, RawAmqp, uniqueName } from '../support/real-services';

/**
 * Routing, priorities, quorum queues, native delayed delivery and far ETAs on the real RabbitMQ
 * (3.10). Results go to the in-process memory store: only the broker side is under test here.
 */
describe('routing and queue types on RabbitMQ', () => {
  let amqp: RawAmqp;
  const apps: TestingModule[] = [];
  const queues: string[] = [];
  const exchanges: string[] = [];

  async function app(options: Partial<CeleryModuleOptions>): Promise<TestingModule> {
    const moduleRef = await Test.createTestingModule({
      imports: [CeleryModule.forRoot({ brokerUrl: AMQP_URL, resultBackend: 'memory', resultPollIntervalMs: 20, ...options })],
      providers: [FixtureTasks],
    }).compile();
    apps.push(moduleRef);
    await moduleRef.init();
    return moduleRef;
  }

  function queue(prefix: string): string {
    const name = uniqueName(prefix);
    queues.push(name);
    return name;
  }

  beforeAll(async () => {
    amqp = await RawAmqp.open();
  });

  afterEach(async () => {
    await Promise.allSettled(apps.splice(0).map((a) => a.close()));
    const ch = await (await RawAmqp.open().then((r) => ((amqp = r), r))).channel;
    for (const q of queues.splice(0)) {
      await ch.deleteQueue(q).catch(() => undefined);
      await ch.deleteExchange(q).catch(() => undefined);
    }
    for (const e of exchanges.splice(0)) await ch.deleteExchange(e).catch(() => undefined);
  });

  afterAll(async () => {
    await amqp?.close().catch(() => undefined);
  });

  it('declares x-max-priority (queueMaxPriority) as Celery, and RabbitMQ hands out higher priorities first', async () => {
    const q = queue('it_prio');
    const producer = (await app({ defaultQueue: q, queueMaxPriority: 10, worker: { enabled: false } })).get(Producer);
    for (const priority of [1, 5, 9, 3, 7]) await producer.sendTask('tasks.echo', { args: [priority], priority });
    const order: number[] = [];
    for (let i = 0; i < 5; i++) {
      const msg = await amqp.channel.get(q, { noAck: true });
      if (msg) order.push(msg.properties.priority as number);
    }
    expect(order).toEqual([9, 7, 5, 3, 1]);
    // the queue really has the argument: declaring it without is refused
    const probe = await RawAmqp.open();
    probe.channel.on('error', () => undefined);
    await expect(probe.channel.assertQueue(q, { durable: true })).rejects.toThrow(/PRECONDITION_FAILED.*x-max-priority/);
    await probe.close().catch(() => undefined);
  });

  it('routes by taskRoutes through a topic exchange of taskQueues to a worker consuming several queues', async () => {
    const q = queue('it_topic');
    const other = queue('it_other');
    exchanges.push(`${q}_x`);
    const moduleRef = await app({
      defaultQueue: other,
      taskQueues: { [q]: { exchange: `${q}_x`, exchangeType: 'topic', routingKey: `${q}.#` } },
      taskRoutes: { 'tasks.sort*': q },
      worker: { queues: [other, q] },
    });
    const result = await moduleRef.get(Producer).sendTask('tasks.sortWords', { args: ['b a', false] });
    await expect(result.get({ timeout: 10000 })).resolves.toBe('a b');
    await expect((await moduleRef.get(Producer).sendTask('tasks.echo', { args: ['other'] })).get({ timeout: 10000 })).resolves.toBe('other');
  });

  it('quorum + topic: the worker consumes a quorum queue (per-consumer QoS) and a countdown travels through celery_delayed_*', async () => {
    const q = queue('it_quorum');
    const producer = (await app({ defaultQueue: q, queueType: 'quorum', defaultExchangeType: 'topic', worker: { enabled: false } })).get(Producer);
    // No worker: the message waits in the delay levels, not in its queue, until its countdown is over.
    await producer.sendTask('tasks.echo', { args: ['delayed'], countdown: 2 });
    await new Promise((resolve) => setTimeout(resolve, 800));
    expect(await amqp.depth(q)).toBe(0);
    await eventually(async () => (await amqp.depth(q)) === 1, 5000);
    const msg = await amqp.channel.get(q, { noAck: true });
    // RabbitMQ 3.10 reports the dead-letter exchange of the last delay queue (level 1 for 2 s), with the prefixed key
    expect(msg && { exchange: msg.fields.exchange, routingKey: msg.fields.routingKey }).toEqual({
      exchange: 'celery_delayed_0',
      routingKey: `${'0.'.repeat(26)}1.0.${q}`,
    });
    expect(msg && msg.properties.headers?.['x-death']).toBeDefined();
    // A worker with global QoS would be refused on a quorum queue (NOT_IMPLEMENTED); this one runs the task at its ETA.
    const worker = await app({ defaultQueue: q, queueType: 'quorum', defaultExchangeType: 'topic' });
    const sent = Date.now();
    const result = await worker.get(Producer).sendTask('tasks.sortWords', { args: ['d c', false], countdown: 1 });
    await expect(result.get({ timeout: 10000 })).resolves.toBe('c d');
    expect(Date.now() - sent).toBeGreaterThanOrEqual(950);
  });

  it('with per-consumer QoS (quorum mode) the prefetch is fixed when the consumer starts: setPrefetch does nothing', async () => {
    const q = queue('it_static_qos');
    const broker = new AmqpBroker({ url: AMQP_URL, retryOnStartup: false, perConsumerQos: true });
    await broker.connect();
    try {
      const got: Delivery[] = [];
      const handle = await broker.consume(q, 2, (d) => got.push(d));
      for (const id of ['s1', 's2', 's3', 's4']) {
        const m = encodeTaskMessage({ task: 'tasks.echo', id, args: [] }, { nowMicros: Date.now() * 1000, origin: 'it' });
        await broker.publish(q, { headers: m.amqpHeaders, properties: m.properties, body: m.body });
      }
      await eventually(async () => got.length === 2, 5000);
      await handle.setPrefetch(4);
      await new Promise((resolve) => setTimeout(resolve, 400));
      expect(got.map((d) => d.correlationId)).toEqual(['s1', 's2']);
      got[0].ack();
      await eventually(async () => got.length === 3, 5000);
      got.slice(1).forEach((d) => d.ack());
    } finally {
      await broker.close();
    }
  });

  it('a route to an exchange that does not exist fails the send at once, naming it; the next send goes through', async () => {
    const q = queue('it_noexchange');
    const producer = (await app({ defaultQueue: q, taskRoutes: { 'tasks.lost': { exchange: `${q}_missing_x`, exchangeType: 'topic', routingKey: 'k' } }, worker: { enabled: false } })).get(Producer);
    const started = Date.now();
    await expect(producer.sendTask('tasks.lost')).rejects.toThrow(CeleryBrokerRefusedError);
    await expect(producer.sendTask('tasks.lost')).rejects.toThrow(new RegExp(`exchange '${q}_missing_x'.*NOT_FOUND`));
    expect(Date.now() - started).toBeLessThan(5000);
    await producer.sendTask('tasks.echo', { args: [1] });
    expect(await amqp.depth(q)).toBe(1);
  });

  describe('an ETA beyond RabbitMQ consumer_timeout on a classic queue', () => {
    let warnings: string[];
    beforeEach(() => {
      warnings = [];
      jest.spyOn(Logger.prototype, 'warn').mockImplementation(function (this: Logger, message: unknown) {
        warnings.push(String(message));
      });
    });
    afterEach(() => jest.restoreAllMocks());

    it('is moved before the timeout: the channel is never closed and the task runs once, at its ETA', async () => {
      await withConsumerTimeout(1500, async () => {
        const q = queue('it_far_eta');
        const moduleRef = await app({ defaultQueue: q, worker: { consumerTimeoutMs: 1500 } });
        const tasks = moduleRef.get(FixtureTasks);
        const sent = Date.now();
        const result = await moduleRef.get(Producer).sendTask('tasks.sortWords', { args: ['far eta', false], countdown: 3.5 });
        await expect(result.get({ timeout: 15000 })).resolves.toBe('eta far');
        expect(Date.now() - sent).toBeGreaterThanOrEqual(3400);
        expect(tasks.calls.filter((c) => c === 'far eta')).toHaveLength(1);
        expect(warnings.filter((w) => /closed by the broker/.test(w))).toEqual([]);
        expect(await amqp.depth(q)).toBe(0);
      });
    });

    it('(control) without the move, RabbitMQ closes the channel of the consumer holding it', async () => {
      await withConsumerTimeout(1500, async () => {
        const q = queue('it_far_eta_ctl');
        const moduleRef = await app({ defaultQueue: q, worker: { consumerTimeoutMs: 0 } });
        const result = await moduleRef.get(Producer).sendTask('tasks.sortWords', { args: ['x y', false], countdown: 3 });
        await expect(result.get({ timeout: 15000 })).resolves.toBe('x y');
        expect(warnings.filter((w) => /closed by the broker/.test(w)).length).toBeGreaterThanOrEqual(1);
      });
    });
  });
});
