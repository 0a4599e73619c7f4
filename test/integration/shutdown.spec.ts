import { Test } from '@nestjs/testing';
import { CeleryModule, Producer } from '../../lib';
import { FixtureTasks } from '../support/fixture-tasks';
import { rawCassandra, RawAmqp, realOptions, uniqueName, KEYSPACE } from '../support/real-services';

/** On application shutdown the worker stops consuming, finishes in-flight tasks, stores and acks them. */
describe('worker shutdown on the real services', () => {
  const queue = uniqueName('it_stop');
  const table = uniqueName('it_tasks');

  afterAll(async () => {
    const amqp = await RawAmqp.open();
    await amqp.deleteQueues(queue);
    await amqp.close();
    const cql = await rawCassandra();
    await cql.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${table}`);
    await cql.shutdown();
  });

  it('finishes and stores the task in flight, leaves the rest queued, then closes', async () => {
    const worker = await Test.createTestingModule({
      imports: [CeleryModule.forRoot(realOptions(queue, table, { worker: { concurrency: 1, prefetch: 1 } }))],
      providers: [FixtureTasks],
    }).compile();
    await worker.init();
    const client = await Test.createTestingModule({ imports: [CeleryModule.forRoot(realOptions(queue, table, { worker: { enabled: false } }))] }).compile();
    await client.init();
    const producer = client.get(Producer);
    const inFlight = await producer.sendTask('tasks.sleep', { args: [1500, 'finished'] });
    const queued = await producer.sendTask('tasks.sleep', { args: [10, 'second'] });
    const amqp = await RawAmqp.open();
    try {
      // Wait until the first task is running (the second then waits in the queue: prefetch 1).
      for (let i = 0; i < 100 && (await amqp.depth(queue)) !== 1; i++) await new Promise((r) => setTimeout(r, 20));
      await worker.close();
      expect(await inFlight.state()).toBe('SUCCESS');
      await expect(inFlight.get({ timeout: 1000 })).resolves.toBe('finished');
      expect(await queued.state()).toBe('PENDING');
      const info = await amqp.channel.checkQueue(queue);
      expect(info.consumerCount).toBe(0);
      expect(info.messageCount).toBe(1);
    } finally {
      await amqp.close();
      await client.close();
    }
  });
});
