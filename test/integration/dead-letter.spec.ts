import { Test } from '@nestjs/testing';
import { CeleryModule, Producer } from '../../lib';
import { FixtureTasks } from '../support/fixture-tasks';
import { eventually, RawAmqp, rawCassandra, realOptions, uniqueName, KEYSPACE } from '../support/real-services';

/** With a dead-letter exchange on the queue, rejected messages are dead-lettered instead of dropped. */
describe('dead-lettering rejected messages', () => {
  it('a malformed message and an unknown task land in the dead-letter queue; valid tasks still run', async () => {
    const queue = uniqueName('it_dl');
    const table = uniqueName('it_dl');
    const dlx = `${queue}.dlx`;
    const dlq = `${queue}.dlq`;
    const amqp = await RawAmqp.open();
    await amqp.channel.assertExchange(dlx, 'fanout', { durable: true });
    await amqp.channel.assertQueue(dlq, { durable: true });
    await amqp.channel.bindQueue(dlq, dlx, '');
    const app = await Test.createTestingModule({
      imports: [CeleryModule.forRoot(realOptions(queue, table, { queueArguments: { 'x-dead-letter-exchange': dlx } }))],
      providers: [FixtureTasks],
    }).compile();
    await app.init();
    try {
      amqp.channel.sendToQueue(queue, Buffer.from('[[1], {'), { contentType: 'application/json', headers: { task: 'tasks.echo', id: 'dl-bad-json' } });
      const unknown = await app.get(Producer).sendTask('tasks.noSuchTask');
      const ok = await app.get(Producer).sendTask('tasks.echo', { args: ['fine'] });
      await expect(ok.get({ timeout: 20000 })).resolves.toBe('fine');
      await expect(unknown.get({ timeout: 20000 })).rejects.toMatchObject({ excType: 'NotRegistered' });
      await eventually(async () => (await amqp.depth(dlq)) === 2);
      const first = await amqp.channel.get(dlq, { noAck: true });
      const second = await amqp.channel.get(dlq, { noAck: true });
      const ids = [first, second].map((m) => (m ? (m.properties.headers?.id as string) : null)).sort();
      expect(ids).toEqual(['dl-bad-json', unknown.id].sort());
      expect(first && first.properties.headers?.['x-death']).toBeDefined();
    } finally {
      await app.close();
      await amqp.deleteQueues(queue);
      await amqp.channel.deleteQueue(dlq);
      await amqp.channel.deleteExchange(dlx);
      await amqp.close();
      const cql = await rawCassandra();
      await cql.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${table}`);
      await cql.shutdown();
    }
  });
});
