import type { Broker, Delivery, OutgoingMessage } from '../../lib/broker/broker.interface';
import { encodeTaskMessage } from '../../lib/protocol/task-message';
import { plainQueue, type QueueDeclaration } from '../../lib/protocol/routing';

/**
 * What the producer and the worker rely on from a broker, as one set of jest cases run against
 * every implementation: `MemoryBroker` (test/unit/broker/memory.contract.spec.ts) and `AmqpBroker`
 * on a real RabbitMQ (test/integration/amqp.contract.spec.ts). The memory broker is what the
 * module's unit tests trust, so whatever RabbitMQ does here the memory broker must do too.
 */
export interface BrokerContractAdapter {
  /** A connected broker; every broker made is closed by `cleanup`. */
  make(options?: { queueArguments?: Record<string, unknown>; queues?: (name: string) => QueueDeclaration }): Promise<Broker>;
  /** A queue name unique to this test; every name handed out is deleted by `cleanup`. */
  queueName(prefix: string): string;
  /** Runs `body` where `loseChannel` works (AMQP: a short consumer_timeout, for channels opened inside). */
  inChannelLossScope<T>(body: () => Promise<T>): Promise<T>;
  /**
   * Closes the channel of the consumer of `queue` that holds `held` unacknowledged (simulated, or
   * by the server), and resolves once it is closed. Called inside `inChannelLossScope`.
   */
  loseChannel(broker: Broker, queue: string, held: Delivery[]): Promise<void>;
  /** Deletes `queue` on the server (AMQP: the server cancels its consumers, basic.cancel), keeping its messages nowhere. */
  deleteQueue(broker: Broker, queue: string): Promise<void>;
  /** How long a test waits for an expected delivery. */
  deliveryTimeoutMs: number;
  /** How long a test watches to be sure that nothing more is delivered. */
  quietMs: number;
  cleanup(): Promise<void>;
}

/** The messages a consumer received, in order, with waits that say what was missing. */
class Inbox {
  readonly deliveries: Delivery[] = [];
  /** Acknowledge each message as it arrives (for a replacement channel under a short consumer_timeout). */
  autoAck = false;
  private wake: (() => void) | null = null;

  readonly onMessage = (delivery: Delivery): void => {
    this.deliveries.push(delivery);
    if (this.autoAck) delivery.ack();
    this.wake?.();
  };

  ids(): string[] {
    return this.deliveries.map((d) => String(d.correlationId));
  }

  /** Waits until at least `count` messages have arrived. */
  async waitFor(count: number, ms: number): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.deliveries.length < count) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`expected ${count} deliveries within ${ms} ms, got ${this.deliveries.length}: [${this.ids().join(', ')}]`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
    }
  }

  /** Waits `ms` and checks that exactly `count` messages arrived in all. */
  async expectExactly(count: number, ms: number): Promise<void> {
    await new Promise((resolve) => setTimeout(resolve, ms));
    if (this.deliveries.length !== count) throw new Error(`expected exactly ${count} deliveries, got ${this.deliveries.length}: [${this.ids().join(', ')}]`);
  }

  byId(id: string): Delivery[] {
    return this.deliveries.filter((d) => d.correlationId === id);
  }
}

/** A task message whose correlation id (Celery's task id) is `id`. */
function message(id: string): OutgoingMessage {
  const encoded = encodeTaskMessage({ task: 'contract.probe', id, args: [id] }, { nowMicros: Date.now() * 1000, origin: 'broker-contract' });
  return { headers: encoded.amqpHeaders, properties: encoded.properties, body: encoded.body };
}

async function publishAll(broker: Broker, queue: string, ids: string[]): Promise<void> {
  for (const id of ids) await broker.publish(queue, message(id));
}

export function defineBrokerContract(name: string, makeAdapter: () => BrokerContractAdapter): void {
  describe(`Broker contract: ${name}`, () => {
    let adapter: BrokerContractAdapter;
    let wait: number;
    let quiet: number;

    beforeEach(() => {
      adapter = makeAdapter();
      wait = adapter.deliveryTimeoutMs;
      quiet = adapter.quietMs;
    });

    afterEach(async () => {
      await adapter.cleanup();
    });

    it('keeps a message published before any consumer and delivers it to the first consumer', async () => {
      const broker = await adapter.make();
      const queue = adapter.queueName('early');
      await broker.assertQueue(queue);
      await publishAll(broker, queue, ['early-1', 'early-2']);
      const inbox = new Inbox();
      await broker.consume(queue, 10, inbox.onMessage);
      await inbox.waitFor(2, wait);
      expect(inbox.ids()).toEqual(['early-1', 'early-2']);
      expect(inbox.deliveries.map((d) => d.redelivered)).toEqual([false, false]);
      expect(inbox.deliveries[0].headers).toMatchObject({ task: 'contract.probe', id: 'early-1' });
      expect(inbox.deliveries[0].lost.aborted).toBe(false);
    });

    it('declares the queue on publish: a message to a queue nobody declared waits for its consumer', async () => {
      const broker = await adapter.make();
      const queue = adapter.queueName('undeclared');
      await broker.publish(queue, message('to-undeclared'));
      const inbox = new Inbox();
      await broker.consume(queue, 10, inbox.onMessage);
      await inbox.waitFor(1, wait);
      expect(inbox.ids()).toEqual(['to-undeclared']);
    });

    it('declares the queue on consume: a consumer of a queue nobody declared receives what is published later', async () => {
      const broker = await adapter.make();
      const queue = adapter.queueName('consumed_first');
      const inbox = new Inbox();
      await broker.consume(queue, 10, inbox.onMessage);
      await publishAll(broker, queue, ['later']);
      await inbox.waitFor(1, wait);
      expect(inbox.ids()).toEqual(['later']);
    });

    it('hands a consumer no more unacknowledged messages than its prefetch, and one more per ack', async () => {
      const broker = await adapter.make();
      const queue = adapter.queueName('prefetch');
      const inbox = new Inbox();
      await broker.consume(queue, 2, inbox.onMessage);
      await publishAll(broker, queue, ['p1', 'p2', 'p3', 'p4', 'p5']);
      await inbox.waitFor(2, wait);
      await inbox.expectExactly(2, quiet);
      inbox.deliveries[0].ack();
      await inbox.waitFor(3, wait);
      await inbox.expectExactly(3, quiet);
      expect(inbox.ids()).toEqual(['p1', 'p2', 'p3']);
    });

    it('applies a prefetch raised on a live consumer at once, while it still holds its messages unacknowledged', async () => {
      const broker = await adapter.make();
      const queue = adapter.queueName('raise');
      const inbox = new Inbox();
      const handle = await broker.consume(queue, 2, inbox.onMessage);
      await publishAll(broker, queue, ['r1', 'r2', 'r3', 'r4', 'r5', 'r6']);
      await inbox.waitFor(2, wait);
      await inbox.expectExactly(2, quiet);
      await handle.setPrefetch(5);
      await inbox.waitFor(5, wait);
      await inbox.expectExactly(5, quiet);
      expect(inbox.ids()).toEqual(['r1', 'r2', 'r3', 'r4', 'r5']);
    });

    it('redelivers a message rejected with requeue, flagged redelivered, before the ones behind it', async () => {
      const broker = await adapter.make();
      const queue = adapter.queueName('requeue');
      const inbox = new Inbox();
      await broker.consume(queue, 1, inbox.onMessage);
      await publishAll(broker, queue, ['q1', 'q2']);
      await inbox.waitFor(1, wait);
      inbox.deliveries[0].reject(true);
      await inbox.waitFor(2, wait);
      expect(inbox.ids()).toEqual(['q1', 'q1']);
      expect(inbox.deliveries[1].redelivered).toBe(true);
      expect(inbox.deliveries[1].body.equals(inbox.deliveries[0].body)).toBe(true);
      inbox.deliveries[1].ack();
      await inbox.waitFor(3, wait);
      expect(inbox.ids()).toEqual(['q1', 'q1', 'q2']);
      expect(inbox.deliveries[2].redelivered).toBe(false);
    });

    it('drops a message rejected without requeue when the queue has no dead-letter exchange', async () => {
      const broker = await adapter.make();
      const queue = adapter.queueName('reject');
      const inbox = new Inbox();
      const handle = await broker.consume(queue, 1, inbox.onMessage);
      await publishAll(broker, queue, ['gone', 'kept']);
      await inbox.waitFor(1, wait);
      inbox.deliveries[0].reject(false);
      await inbox.waitFor(2, wait);
      inbox.deliveries[1].ack();
      await inbox.expectExactly(2, quiet);
      expect(inbox.ids()).toEqual(['gone', 'kept']);
      // Nothing is left for another consumer either.
      await handle.cancel();
      const next = new Inbox();
      await broker.consume(queue, 10, next.onMessage);
      await next.expectExactly(0, quiet);
    });

    it('dead-letters a message rejected without requeue when the queue has x-dead-letter-exchange', async () => {
      const queue = adapter.queueName('dl_src');
      const dlq = adapter.queueName('dl_dst');
      // Celery's topology: exchange `dlq` (direct) bound to queue `dlq` by the key `dlq`.
      const broker = await adapter.make({ queueArguments: { 'x-dead-letter-exchange': dlq, 'x-dead-letter-routing-key': dlq } });
      await broker.assertQueue(dlq);
      const inbox = new Inbox();
      await broker.consume(queue, 1, inbox.onMessage);
      await publishAll(broker, queue, ['dead', 'alive']);
      await inbox.waitFor(1, wait);
      inbox.deliveries[0].reject(false);
      await inbox.waitFor(2, wait);
      inbox.deliveries[1].ack();
      const dead = new Inbox();
      dead.autoAck = true;
      await broker.consume(dlq, 10, dead.onMessage);
      await dead.waitFor(1, wait);
      await dead.expectExactly(1, quiet);
      expect(dead.ids()).toEqual(['dead']);
      expect(dead.deliveries[0].headers).toMatchObject({ task: 'contract.probe', id: 'dead' });
      const deaths = dead.deliveries[0].headers?.['x-death'] as Record<string, unknown>[];
      expect(deaths).toHaveLength(1);
      expect(deaths[0]).toMatchObject({ reason: 'rejected', queue, count: 1 });
      await inbox.expectExactly(2, quiet);
    });

    it('routes a publish through a queue\'s topic exchange by its binding pattern, with its exchange and key in the delivery; a key it does not take is dropped', async () => {
      // Queues behind a topic exchange of their own name, bound by `<name>.#` (Celery's task_queues with exchange_type topic).
      const broker = await adapter.make({ queues: (name) => ({ ...plainQueue(name), exchange: { name, type: 'topic', durable: true, autoDelete: false }, routingKey: `${name}.#` }) });
      const queue = adapter.queueName('topic');
      const inbox = new Inbox();
      inbox.autoAck = true;
      await broker.consume(queue, 10, inbox.onMessage);
      await broker.publish(queue, message('taken'), { exchange: queue, routingKey: `${queue}.a.b` });
      await broker.publish(queue, message('not-taken'), { exchange: queue, routingKey: 'elsewhere.a' });
      await inbox.waitFor(1, wait);
      await inbox.expectExactly(1, quiet);
      expect(inbox.ids()).toEqual(['taken']);
      expect(inbox.deliveries[0]).toMatchObject({ exchange: queue, routingKey: `${queue}.a.b` });
    });

    it('follows exchange-to-exchange bindings declared with declareTopology', async () => {
      const broker = await adapter.make({ queues: (name) => ({ ...plainQueue(name), exchange: { name, type: 'topic', durable: true, autoDelete: false }, routingKey: name }) });
      const queue = adapter.queueName('e2e_dst');
      const entry = adapter.queueName('e2e_src');
      await broker.assertQueue(queue);
      await broker.declareTopology([
        { kind: 'exchange.declare', exchange: entry, type: 'topic', durable: true, autoDelete: false },
        { kind: 'exchange.bind', destination: queue, source: entry, routingKey: `#.${queue}` },
        { kind: 'queue.bind', queue, exchange: queue, routingKey: `#.${queue}` },
      ]);
      const inbox = new Inbox();
      inbox.autoAck = true;
      await broker.consume(queue, 10, inbox.onMessage);
      await broker.publish('', message('via-entry'), { exchange: entry, routingKey: `0.1.${queue}` });
      await inbox.waitFor(1, wait);
      await inbox.expectExactly(1, quiet);
      expect(inbox.deliveries[0]).toMatchObject({ exchange: entry, routingKey: `0.1.${queue}` });
    });

    it('does not deliver an acknowledged message again, to this consumer or a later one', async () => {
      const broker = await adapter.make();
      const queue = adapter.queueName('ack');
      const inbox = new Inbox();
      const handle = await broker.consume(queue, 10, inbox.onMessage);
      await publishAll(broker, queue, ['a1', 'a2']);
      await inbox.waitFor(2, wait);
      inbox.deliveries.forEach((d) => d.ack());
      expect(() => inbox.deliveries[0].ack()).toThrow(/already acknowledged or rejected/);
      await handle.cancel();
      const next = new Inbox();
      await broker.consume(queue, 10, next.onMessage);
      await publishAll(broker, queue, ['a3']);
      await next.waitFor(1, wait);
      await next.expectExactly(1, quiet);
      expect(next.ids()).toEqual(['a3']);
      await inbox.expectExactly(2, 0);
    });

    it('delivers nothing new after cancel; a message still held is settled by its consumer and not redelivered', async () => {
      const broker = await adapter.make();
      const queue = adapter.queueName('cancel');
      const inbox = new Inbox();
      const handle = await broker.consume(queue, 10, inbox.onMessage);
      await publishAll(broker, queue, ['c1']);
      await inbox.waitFor(1, wait);
      await handle.cancel();
      await publishAll(broker, queue, ['c2']);
      await inbox.expectExactly(1, quiet);
      expect(() => inbox.deliveries[0].ack()).not.toThrow();
      const next = new Inbox();
      await broker.consume(queue, 10, next.onMessage);
      await next.waitFor(1, wait);
      await next.expectExactly(1, quiet);
      expect(next.ids()).toEqual(['c2']);
      expect(next.deliveries[0].redelivered).toBe(false);
    });

    it('after its channel is lost: unacked messages come back redelivered, old deliveries are lost and settle as no-ops, and the consumer consumes again', async () => {
      const broker = await adapter.make();
      const queue = adapter.queueName('lost');
      const inbox = new Inbox();
      await adapter.inChannelLossScope(async () => {
        await broker.consume(queue, 2, inbox.onMessage);
        await publishAll(broker, queue, ['l1', 'l2', 'l3']);
        await inbox.waitFor(2, wait);
        const held = inbox.deliveries.slice(0, 2);
        expect(held.map((d) => d.lost.aborted)).toEqual([false, false]);
        // The replacement channel must not hold anything long (AMQP: the short consumer_timeout applies to it too).
        inbox.autoAck = true;
        await adapter.loseChannel(broker, queue, held);
        expect(held.map((d) => d.lost.aborted)).toEqual([true, true]);
        expect(() => held[0].ack()).not.toThrow();
        expect(() => held[1].reject(false)).not.toThrow();
        // l1 and l2 again (redelivered), then l3, on the consumer's new channel.
        await inbox.waitFor(5, wait);
        await publishAll(broker, queue, ['l4']);
        await inbox.waitFor(6, wait);
        await inbox.expectExactly(6, quiet);
      });
      expect(inbox.ids()).toEqual(['l1', 'l2', 'l1', 'l2', 'l3', 'l4']);
      expect(inbox.deliveries.map((d) => d.redelivered)).toEqual([false, false, true, true, false, false]);
      expect(inbox.deliveries.slice(2).map((d) => d.lost.aborted)).toEqual([false, false, false, false]);
    });

    it('after its channel is lost, the replacement consumer keeps the last prefetch set', async () => {
      const broker = await adapter.make();
      const queue = adapter.queueName('lost_prefetch');
      const inbox = new Inbox();
      await adapter.inChannelLossScope(async () => {
        const handle = await broker.consume(queue, 1, inbox.onMessage);
        await handle.setPrefetch(3);
        await publishAll(broker, queue, ['k1']);
        await inbox.waitFor(1, wait);
        await adapter.loseChannel(broker, queue, inbox.deliveries.slice(0, 1));
        await publishAll(broker, queue, ['k2', 'k3', 'k4', 'k5']);
        // Prefetch 3 on the new channel: k1 (redelivered), k2, k3 — held only briefly, then all acknowledged.
        await inbox.waitFor(4, wait);
        await inbox.expectExactly(4, quiet);
        inbox.autoAck = true;
        inbox.deliveries.slice(1).forEach((d) => d.ack());
        await inbox.waitFor(6, wait);
      });
      expect(inbox.ids()).toEqual(['k1', 'k1', 'k2', 'k3', 'k4', 'k5']);
      expect(inbox.deliveries[1].redelivered).toBe(true);
    });

    it('after its queue is deleted under it (server-side cancel), the consumer declares it again and consumes what is published next', async () => {
      const broker = await adapter.make();
      const queue = adapter.queueName('deleted');
      const inbox = new Inbox();
      inbox.autoAck = true;
      await broker.consume(queue, 10, inbox.onMessage);
      await publishAll(broker, queue, ['before']);
      await inbox.waitFor(1, wait);
      await adapter.deleteQueue(broker, queue);
      // Until the queue is declared again a publish to it is unroutable and gone (RabbitMQ confirms it all the same): keep publishing.
      const deadline = Date.now() + wait;
      let published = 0;
      while (inbox.deliveries.length < 2) {
        if (Date.now() > deadline) throw new Error(`nothing delivered within ${wait} ms after the queue was deleted (${published} published): the consumer does not consume again`);
        await broker.publish(queue, message(`after-${++published}`));
        await inbox.waitFor(2, 250).catch(() => undefined);
      }
      expect(inbox.ids()[0]).toBe('before');
      expect(inbox.ids().slice(1).every((id) => id.startsWith('after-'))).toBe(true);
    });
  });
}
