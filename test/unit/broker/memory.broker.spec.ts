import { Delivery, OutgoingMessage } from '../../../lib/broker/broker.interface';
import { MemoryBroker } from '../../../lib/broker/memory.broker';
import { toAmqpFieldTable } from '../../../lib/protocol/amqp-field-table';
import { encodeTaskMessage } from '../../../lib/protocol/task-message';
import { CAPTURE_NOW_MICROS, CAPTURE_ORIGIN } from '../../support/vectors';

/** Lets queued microtasks (the broker's dispatch) and one macrotask turn run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

function taskMessage(id: string, extra: { retries?: number; timeLimit?: number; softTimeLimit?: number } = {}): OutgoingMessage {
  const encoded = encodeTaskMessage(
    { task: 'tasks.sortWords', id, args: ['a b', false], ...extra },
    { nowMicros: CAPTURE_NOW_MICROS, origin: CAPTURE_ORIGIN },
  );
  return { headers: encoded.amqpHeaders, properties: encoded.properties, body: encoded.body };
}

async function brokerWithQueue(queue = 'celery'): Promise<MemoryBroker> {
  const broker = new MemoryBroker();
  await broker.connect();
  await broker.assertQueue(queue);
  return broker;
}

function collect(): { deliveries: Delivery[]; onMessage: (d: Delivery) => void; ids: () => unknown[] } {
  const deliveries: Delivery[] = [];
  return { deliveries, onMessage: (d) => deliveries.push(d), ids: () => deliveries.map((d) => d.correlationId) };
}

describe('MemoryBroker: delivery', () => {
  it('delivers a published message with plain header values (no {"!": "int"} wrappers)', async () => {
    const broker = await brokerWithQueue();
    const c = collect();
    await broker.consume('celery', 10, c.onMessage);
    await broker.publish('celery', taskMessage('t1', { retries: 200, timeLimit: 300, softTimeLimit: 240 }));
    await settle();
    expect(c.deliveries).toHaveLength(1);
    const d = c.deliveries[0];
    expect(d.headers).toMatchObject({ task: 'tasks.sortWords', id: 't1', retries: 200, timelimit: [300, 240], group_index: null, stamps: {} });
    expect(d.headers?.replaced_task_nesting).toBe(0);
  });

  it('delivers the AMQP properties and body bytes, with redelivered false', async () => {
    const broker = await brokerWithQueue();
    const c = collect();
    await broker.consume('celery', 10, c.onMessage);
    const message = { ...taskMessage('t1'), properties: { ...taskMessage('t1').properties, replyTo: 'oid', priority: 3 } };
    await broker.publish('celery', message);
    await settle();
    expect(c.deliveries[0]).toMatchObject({
      contentType: 'application/json',
      contentEncoding: 'utf-8',
      correlationId: 't1',
      replyTo: 'oid',
      priority: 3,
      redelivered: false,
    });
    expect(c.deliveries[0].body.equals(message.body)).toBe(true);
  });

  it('delivers a copy of the body: changing the published buffer afterwards does not change it', async () => {
    const broker = await brokerWithQueue();
    const c = collect();
    await broker.consume('celery', 10, c.onMessage);
    const message = taskMessage('t1');
    const original = Buffer.from(message.body);
    await broker.publish('celery', message);
    message.body.fill(0x20);
    await settle();
    expect(c.deliveries[0].body.equals(original)).toBe(true);
  });

  it('delivers messages in publish order', async () => {
    const broker = await brokerWithQueue();
    const c = collect();
    await broker.consume('celery', 10, c.onMessage);
    for (const id of ['t1', 't2', 't3']) await broker.publish('celery', taskMessage(id));
    await settle();
    expect(c.ids()).toEqual(['t1', 't2', 't3']);
  });

  it('keeps messages published before anyone consumes and delivers them to the first consumer', async () => {
    const broker = await brokerWithQueue();
    await broker.publish('celery', taskMessage('early'));
    await settle();
    expect(broker.depth('celery')).toBe(1);
    const c = collect();
    await broker.consume('celery', 1, c.onMessage);
    await settle();
    expect(c.ids()).toEqual(['early']);
    expect(broker.depth('celery')).toBe(0);
  });

  it('declares the queue a message is published to, as AmqpBroker does: it waits there for a consumer', async () => {
    const broker = await brokerWithQueue('celery');
    await broker.publish('undeclared', taskMessage('kept'));
    expect(broker.depth('undeclared')).toBe(1);
    const c = collect();
    await broker.consume('undeclared', 10, c.onMessage);
    await settle();
    expect(c.ids()).toEqual(['kept']);
    expect(broker.depth('undeclared')).toBe(0);
  });

  it('delivers only to the queue the message was published to', async () => {
    const broker = await brokerWithQueue('a');
    await broker.assertQueue('b');
    const a = collect();
    const b = collect();
    await broker.consume('a', 10, a.onMessage);
    await broker.consume('b', 10, b.onMessage);
    await broker.publish('b', taskMessage('for-b'));
    await settle();
    expect(a.deliveries).toHaveLength(0);
    expect(b.ids()).toEqual(['for-b']);
  });
});

describe('MemoryBroker: prefetch and acknowledgement', () => {
  it('hands a consumer no more unacknowledged messages than its prefetch', async () => {
    const broker = await brokerWithQueue();
    const c = collect();
    await broker.consume('celery', 2, c.onMessage);
    for (const id of ['t1', 't2', 't3', 't4', 't5']) await broker.publish('celery', taskMessage(id));
    await settle();
    expect(c.ids()).toEqual(['t1', 't2']);
    expect(broker.depth('celery')).toBe(3);
  });

  it('frees one slot per ack, delivering the next waiting message', async () => {
    const broker = await brokerWithQueue();
    const c = collect();
    await broker.consume('celery', 2, c.onMessage);
    for (const id of ['t1', 't2', 't3', 't4']) await broker.publish('celery', taskMessage(id));
    await settle();
    c.deliveries[0].ack();
    await settle();
    expect(c.ids()).toEqual(['t1', 't2', 't3']);
    expect(broker.depth('celery')).toBe(1);
  });

  it('throws on a second ack of the same delivery', async () => {
    const broker = await brokerWithQueue();
    const c = collect();
    await broker.consume('celery', 1, c.onMessage);
    await broker.publish('celery', taskMessage('t1'));
    await settle();
    c.deliveries[0].ack();
    expect(() => c.deliveries[0].ack()).toThrow(/already acknowledged or rejected/);
  });

  it('throws on ack after reject and on reject after ack', async () => {
    const broker = await brokerWithQueue();
    const c = collect();
    await broker.consume('celery', 2, c.onMessage);
    await broker.publish('celery', taskMessage('t1'));
    await broker.publish('celery', taskMessage('t2'));
    await settle();
    c.deliveries[0].reject(false);
    expect(() => c.deliveries[0].ack()).toThrow();
    c.deliveries[1].ack();
    expect(() => c.deliveries[1].reject(true)).toThrow();
  });

  it('does not free an extra slot when a double ack is refused', async () => {
    const broker = await brokerWithQueue();
    const c = collect();
    await broker.consume('celery', 1, c.onMessage);
    for (const id of ['t1', 't2', 't3']) await broker.publish('celery', taskMessage(id));
    await settle();
    c.deliveries[0].ack();
    expect(() => c.deliveries[0].ack()).toThrow();
    await settle();
    expect(c.ids()).toEqual(['t1', 't2']);
  });

  it('redelivers a message rejected with requeue=true, flagged redelivered, before newer messages', async () => {
    const broker = await brokerWithQueue();
    const c = collect();
    await broker.consume('celery', 1, c.onMessage);
    await broker.publish('celery', taskMessage('t1'));
    await broker.publish('celery', taskMessage('t2'));
    await settle();
    c.deliveries[0].reject(true);
    await settle();
    expect(c.ids()).toEqual(['t1', 't1']);
    expect(c.deliveries[1].redelivered).toBe(true);
    expect(c.deliveries[1].body.equals(c.deliveries[0].body)).toBe(true);
  });

  it('drops a message rejected with requeue=false and moves on', async () => {
    const broker = await brokerWithQueue();
    const c = collect();
    await broker.consume('celery', 1, c.onMessage);
    await broker.publish('celery', taskMessage('t1'));
    await broker.publish('celery', taskMessage('t2'));
    await settle();
    c.deliveries[0].reject(false);
    await settle();
    expect(c.ids()).toEqual(['t1', 't2']);
    c.deliveries[1].ack();
    await settle();
    expect(c.deliveries).toHaveLength(2);
    expect(broker.depth('celery')).toBe(0);
  });

  it('raises the flow when the prefetch is raised', async () => {
    const broker = await brokerWithQueue();
    const c = collect();
    const handle = await broker.consume('celery', 1, c.onMessage);
    for (const id of ['t1', 't2', 't3']) await broker.publish('celery', taskMessage(id));
    await settle();
    expect(c.deliveries).toHaveLength(1);
    await handle.setPrefetch(3);
    await settle();
    expect(c.ids()).toEqual(['t1', 't2', 't3']);
  });

  it('shares a queue between two consumers, each within its own prefetch', async () => {
    const broker = await brokerWithQueue();
    const a = collect();
    const b = collect();
    await broker.consume('celery', 1, a.onMessage);
    await broker.consume('celery', 1, b.onMessage);
    for (const id of ['t1', 't2', 't3']) await broker.publish('celery', taskMessage(id));
    await settle();
    expect(a.deliveries).toHaveLength(1);
    expect(b.deliveries).toHaveLength(1);
    expect([...a.ids(), ...b.ids()].sort()).toEqual(['t1', 't2']);
    expect(broker.depth('celery')).toBe(1);
  });

  it('delivers nothing more to a cancelled consumer', async () => {
    const broker = await brokerWithQueue();
    const c = collect();
    const handle = await broker.consume('celery', 10, c.onMessage);
    await handle.cancel();
    await broker.publish('celery', taskMessage('t1'));
    await settle();
    expect(c.deliveries).toHaveLength(0);
    expect(broker.depth('celery')).toBe(1);
  });
});

describe('MemoryBroker: lost channels and dead-lettering (beyond the shared contract)', () => {
  it('returns the messages of a cancelled consumer that still held them when its channel is lost', async () => {
    const broker = await brokerWithQueue();
    const first = collect();
    const handle = await broker.consume('celery', 10, first.onMessage);
    await broker.publish('celery', taskMessage('t1'));
    await settle();
    await handle.cancel();
    broker.simulateChannelLoss('celery');
    expect(first.deliveries[0].lost.aborted).toBe(true);
    expect(broker.depth('celery')).toBe(1);
    const next = collect();
    await broker.consume('celery', 10, next.onMessage);
    await settle();
    expect(next.ids()).toEqual(['t1']);
    expect(next.deliveries[0].redelivered).toBe(true);
    expect(first.deliveries).toHaveLength(1);
  });

  it('on a simulated queue deletion, drops waiting and unacknowledged messages; the consumer stays and gets what is published next', async () => {
    const broker = await brokerWithQueue();
    const c = collect();
    await broker.consume('celery', 1, c.onMessage);
    for (const id of ['t1', 't2']) await broker.publish('celery', taskMessage(id));
    await settle();
    broker.simulateQueueDeletion('celery');
    expect(broker.depth('celery')).toBe(0);
    expect(c.deliveries[0].lost.aborted).toBe(false);
    expect(() => c.deliveries[0].reject(true)).not.toThrow();
    await broker.publish('celery', taskMessage('t3'));
    await settle();
    expect(c.ids()).toEqual(['t1', 't3']);
  });

  it('on close, fires lost on unsettled deliveries and puts their messages back, redelivered', async () => {
    const broker = await brokerWithQueue();
    const c = collect();
    await broker.consume('celery', 10, c.onMessage);
    await broker.publish('celery', taskMessage('t1'));
    await settle();
    await broker.close();
    expect(c.deliveries[0].lost.aborted).toBe(true);
    expect(() => c.deliveries[0].ack()).not.toThrow();
    expect(broker.depth('celery')).toBe(1);
    await broker.connect();
    const next = collect();
    await broker.consume('celery', 10, next.onMessage);
    await settle();
    expect(next.deliveries.map((d) => [d.correlationId, d.redelivered])).toEqual([['t1', true]]);
  });

  it('dead-letters through the default exchange by x-dead-letter-routing-key, and counts repeated deaths in x-death', async () => {
    const broker = new MemoryBroker({ queueArguments: { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': 'dlq' } });
    await broker.connect();
    await broker.assertQueue('dlq');
    const src = collect();
    await broker.consume('celery', 10, src.onMessage);
    await broker.publish('celery', taskMessage('t1'));
    await settle();
    src.deliveries[0].reject(false);
    await settle();
    expect(broker.depth('dlq')).toBe(1);
    // Back into the source queue by hand, rejected again: one x-death entry, count 2.
    const dead = collect();
    const handle = await broker.consume('dlq', 10, dead.onMessage);
    await settle();
    await handle.cancel();
    const d = dead.deliveries[0];
    dead.deliveries[0].ack();
    await broker.publish('celery', { headers: toAmqpFieldTable(d.headers as Record<string, unknown>), properties: taskMessage('t1').properties, body: d.body });
    await settle();
    src.deliveries[1].reject(false);
    await settle();
    const again = collect();
    await broker.consume('dlq', 10, again.onMessage);
    await settle();
    expect(again.deliveries[0].headers?.['x-death']).toEqual([expect.objectContaining({ queue: 'celery', reason: 'rejected', count: 2 })]);
  });

  it('drops a dead-letter that routes to no declared queue, as RabbitMQ drops an unroutable message', async () => {
    const broker = new MemoryBroker({ queueArguments: { 'x-dead-letter-exchange': 'nowhere' } });
    await broker.connect();
    const c = collect();
    await broker.consume('celery', 10, c.onMessage);
    await broker.publish('celery', taskMessage('t1'));
    await settle();
    c.deliveries[0].reject(false);
    await settle();
    expect(broker.depth('celery')).toBe(0);
    expect(broker.depth('nowhere')).toBe(0);
  });
});

describe('MemoryBroker: lifecycle', () => {
  it('refuses to publish after close', async () => {
    const broker = await brokerWithQueue();
    await broker.close();
    await expect(broker.publish('celery', taskMessage('t1'))).rejects.toThrow(/closed/);
  });

  it('describes itself as memory://', () => {
    expect(new MemoryBroker().describe()).toBe('memory://');
  });
});
