import { Logger } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import { Broker, CeleryModule, CeleryModuleOptions, MemoryBroker, Producer } from '../../../lib';
import type { OutgoingMessage, PublishRoute } from '../../../lib/broker/broker.interface';
import { FixtureTasks } from '../../support/fixture-tasks';

/** The module on memory:// with Celery's routing settings: where the producer publishes, and that the worker gets it. */
describe('CeleryModule routing on memory://', () => {
  let moduleRef: TestingModule;
  let producer: Producer;
  let publishes: { queue: string; route?: PublishRoute; message: OutgoingMessage }[];

  async function start(options: CeleryModuleOptions): Promise<void> {
    moduleRef = await Test.createTestingModule({ imports: [CeleryModule.forRoot(options)], providers: [FixtureTasks] }).compile();
    const broker = moduleRef.get(Broker) as MemoryBroker;
    publishes = [];
    const publish = broker.publish.bind(broker);
    jest.spyOn(broker, 'publish').mockImplementation(async (queue, message, route) => {
      publishes.push({ queue, route, message });
      return publish(queue, message, route);
    });
    await moduleRef.init();
    producer = moduleRef.get(Producer);
  }

  beforeAll(() => Logger.overrideLogger(false));
  afterEach(async () => {
    await moduleRef?.close();
  });

  it('routes by taskRoutes to a topic exchange of taskQueues, and the worker consuming that queue runs it', async () => {
    await start({
      taskQueues: { words: { exchange: 'words_x', exchangeType: 'topic', routingKey: 'words.#' } },
      taskRoutes: { 'tasks.sort*': { queue: 'words', priority: 3 } },
      worker: { queues: ['celery', 'words'] },
    });
    const result = await producer.sendTask('tasks.sortWords', { args: ['b a', false] });
    await expect(result.get({ timeout: 3000 })).resolves.toBe('a b');
    expect(publishes[0]).toMatchObject({ queue: 'words', route: { exchange: 'words_x', routingKey: 'words.#' } });
    expect(publishes[0].message.properties.priority).toBe(3);
  });

  it('publishes to the default exchange by queue name with the default settings, as Celery', async () => {
    await start({});
    await (await producer.sendTask('tasks.echo', { args: [1] })).get({ timeout: 3000 });
    expect(publishes[0]).toMatchObject({ queue: 'celery', route: { exchange: '', routingKey: 'celery' } });
  });

  it('applies defaultPriority (task_default_priority) to sends that give none', async () => {
    await start({ task_default_priority: 5 } as CeleryModuleOptions);
    await producer.sendTask('tasks.echo', { args: [1] });
    await producer.sendTask('tasks.echo', { args: [1], priority: 9 });
    expect(publishes.map((p) => p.message.properties.priority)).toEqual([5, 9]);
  });

  it('sends a countdown through native delayed delivery on quorum + topic, and the worker runs it at its ETA', async () => {
    await start({ queueType: 'quorum', defaultExchangeType: 'topic' });
    const sent = Date.now();
    const result = await producer.sendTask('tasks.sortWords', { args: ['d c', false], countdown: 1 });
    expect(publishes[0].route).toEqual({ exchange: 'celery_delayed_27', routingKey: `${'0.'.repeat(27)}1.celery` });
    await expect(result.get({ timeout: 3000 })).resolves.toBe('c d');
    expect(Date.now() - sent).toBeGreaterThanOrEqual(950);
  });

  it('moves a held ETA task before worker.consumerTimeoutMs: copies go to the back of its queue, it runs once, at its ETA', async () => {
    await start({ worker: { consumerTimeoutMs: 200 } });
    const tasks = moduleRef.get(FixtureTasks);
    const sent = Date.now();
    const result = await producer.sendTask('tasks.sortWords', { args: ['moved along', false], countdown: 0.8 });
    await expect(result.get({ timeout: 3000 })).resolves.toBe('along moved');
    expect(Date.now() - sent).toBeGreaterThanOrEqual(750);
    const moves = publishes.slice(1);
    // every ~100 ms (half the timeout): the same message, to the same queue
    expect(moves.length).toBeGreaterThanOrEqual(3);
    expect(moves.every((m) => m.queue === 'celery' && m.message.body.equals(publishes[0].message.body) && m.message.properties.correlationId === result.id)).toBe(true);
    expect(tasks.calls.filter((c) => c === 'moved along')).toHaveLength(1);
    expect((moduleRef.get(Broker) as MemoryBroker).depth('celery')).toBe(0);
  });

  it('never moves an ETA task due within half the consumer timeout, nor any with consumerTimeoutMs 0', async () => {
    await start({ worker: { consumerTimeoutMs: 0 } });
    await (await producer.sendTask('tasks.echo', { args: [1], countdown: 0.3 })).get({ timeout: 3000 });
    expect(publishes).toHaveLength(1);
  });
});
