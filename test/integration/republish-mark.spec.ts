import { Injectable } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import { AmqpBroker } from '../../lib/broker/amqp.broker';
import { Broker } from '../../lib/broker/broker.interface';
import { CeleryModule, Producer, ResultStore, Task } from '../../lib';
import { MAYBE_DUPLICATE_HEADER } from '../../lib/protocol/task-message';
import { rawCassandra, KEYSPACE, realOptions, removeQueueAndTable, uniqueName } from '../support/real-services';

const runs = new Map<string, number>();

@Injectable()
class CountingTasks {
  @Task('tasks.countRuns')
  countRuns(key: string): string {
    runs.set(key, (runs.get(key) ?? 0) + 1);
    return `ran ${key}`;
  }
}

/**
 * A publish whose confirm is lost (the message may be queued) is sent again marked as a possible
 * second copy; with the default successCheck ('auto', no read before a fresh SUCCESS), the marked
 * copy's worker reads the stored state first and does not run the task again. Real RabbitMQ and
 * Cassandra; the lost confirm is made by failing the first publish after RabbitMQ took it.
 */
describe('a task message published again after a lost confirm', () => {
  const queue = uniqueName('republish');
  const table = uniqueName('republish');
  let app: TestingModule;

  beforeAll(async () => {
    app = await Test.createTestingModule({
      imports: [CeleryModule.forRoot(realOptions(queue, table, { worker: { concurrency: 4 } }))],
      providers: [CountingTasks],
    }).compile();
    await app.init();
  });

  afterAll(async () => {
    await app?.close();
    await removeQueueAndTable(queue, table);
  });

  it('is marked, and the task runs once: one SUCCESS row, the copy not run', async () => {
    const broker = app.get(Broker) as AmqpBroker;
    const published: Record<string, unknown>[] = [];
    type PublishOnce = (queue: string, message: { headers: Record<string, unknown> }, route?: unknown) => Promise<void>;
    const target = broker as unknown as { publishOnce: PublishOnce };
    const real = target.publishOnce.bind(broker);
    let lose = true;
    const spy = jest.spyOn(target, 'publishOnce').mockImplementation(async (q, message, route) => {
      await real(q, message, route);
      if (q === queue) published.push(message.headers);
      if (lose && q === queue) {
        lose = false;
        // RabbitMQ has the message; the worker's side never hears its confirm
        throw new Error('channel closed before the confirm (simulated)');
      }
    });
    try {
      const key = uniqueName('k');
      const result = await app.get(Producer).sendTask('tasks.countRuns', { args: [key] });
      await expect(result.get({ timeout: 15000 })).resolves.toBe(`ran ${key}`);
      expect(published).toHaveLength(2);
      expect(published[0]).not.toHaveProperty(MAYBE_DUPLICATE_HEADER);
      expect(published[1]).toMatchObject({ id: result.id, [MAYBE_DUPLICATE_HEADER]: true });
      // both copies handled: the marked one found the SUCCESS (a flush task behind them proves the queue drained)
      const flush = await app.get(Producer).sendTask('tasks.countRuns', { args: [`${key}-flush`] });
      await flush.get({ timeout: 15000 });
      await new Promise((r) => setTimeout(r, 300));
      expect(runs.get(key)).toBe(1);
      const cql = await rawCassandra();
      try {
        const rows = await cql.execute(`SELECT status FROM ${KEYSPACE}.${table} WHERE task_id = ?`, [result.id], { prepare: true });
        expect(rows.rows.map((r) => r.status)).toEqual(['SUCCESS']);
      } finally {
        await cql.shutdown();
      }
      expect(await app.get(ResultStore).getTaskMeta(result.id)).toMatchObject({ status: 'SUCCESS' });
    } finally {
      spy.mockRestore();
    }
  });
});
