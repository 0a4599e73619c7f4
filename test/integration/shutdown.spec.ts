import { Test } from '@nestjs/testing';
import { CeleryModule, Producer } from '../../lib';
import { FixtureTasks } from '../support/fixture-tasks';
import { rawCassandra, RawAmqp, realOptions, uniqueName, KEYSPACE, removeQueueAndTable } from '../support/real-services';

/** On application shutdown the worker stops consuming, finishes in-flight tasks, stores and acks them. */
describe('worker shutdown on the real services', () => {
  const queue = uniqueName('it_stop');
  const table = uniqueName('it_tasks');

  afterAll(async () => {
    await removeQueueAndTable(queue, table);
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

  it('after worker.shutdownTimeoutMs returns a task still running to the queue unacknowledged, never to a FAILURE row', async () => {
    const worker = await Test.createTestingModule({
      imports: [CeleryModule.forRoot(realOptions(queue, table, { worker: { concurrency: 1, prefetch: 1, shutdownTimeoutMs: 300 } }))],
      providers: [FixtureTasks],
    }).compile();
    await worker.init();
    const client = await Test.createTestingModule({ imports: [CeleryModule.forRoot(realOptions(queue, table, { worker: { enabled: false } }))] }).compile();
    await client.init();
    const amqp = await RawAmqp.open();
    try {
      await amqp.channel.purgeQueue(queue);
      const slow = await client.get(Producer).sendTask('tasks.sleep', { args: [3000, 'too slow'] });
      for (let i = 0; i < 100 && (await amqp.depth(queue)) !== 0; i++) await new Promise((r) => setTimeout(r, 20));
      const started = Date.now();
      await worker.close();
      expect(Date.now() - started).toBeLessThan(2500);
      // The unfinished task is back in the queue (redelivered to the next worker), with no row at all.
      const info = await amqp.channel.checkQueue(queue);
      expect(info.messageCount).toBe(1);
      expect(await slow.state()).toBe('PENDING');
      const cql = await rawCassandra();
      try {
        const rows = await cql.execute(`SELECT status FROM ${KEYSPACE}.${table} WHERE task_id = ?`, [slow.id], { prepare: true });
        expect(rows.rows).toHaveLength(0);
      } finally {
        await cql.shutdown();
      }
      const back = await amqp.channel.get(queue, { noAck: true });
      expect(back && back.fields.redelivered).toBe(true);
      expect(back && back.properties.headers?.id).toBe(slow.id);
    } finally {
      await amqp.close();
      await client.close();
    }
  });
});
