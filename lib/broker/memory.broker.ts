import { fromAmqpFieldValue } from '../protocol/amqp-field-table';
import { Broker, ConsumerHandle, Delivery, OutgoingMessage, Reply } from './broker.interface';

interface Stored {
  message: OutgoingMessage;
  redelivered: boolean;
}

interface MemoryConsumer {
  prefetch: number;
  unacked: number;
  cancelled: boolean;
  /** Aborted when the consumer's (simulated) channel closes. */
  channel: AbortController;
  onMessage: (delivery: Delivery) => void;
}

interface MemoryQueue {
  ready: Stored[];
  consumers: MemoryConsumer[];
  next: number;
}

/**
 * An in-process broker with AMQP's delivery semantics where they matter: per-consumer prefetch,
 * ack / reject with or without requeue, redelivery of what was not acknowledged on close.
 * No durability: a process exit loses the queue.
 */
export class MemoryBroker extends Broker {
  private readonly queues = new Map<string, MemoryQueue>();
  private closed = false;

  async connect(): Promise<void> {
    this.closed = false;
  }

  async assertQueue(queue: string): Promise<void> {
    this.queueOf(queue);
  }

  async publish(queue: string, message: OutgoingMessage): Promise<void> {
    if (this.closed) throw new Error('memory broker is closed');
    // Like the default exchange: a message for a queue nobody declared is dropped.
    const q = this.queues.get(queue);
    if (!q) return;
    q.ready.push({ message: { ...message, body: Buffer.from(message.body) }, redelivered: false });
    queueMicrotask(() => this.dispatch(q));
  }

  async consume(queue: string, prefetch: number, onMessage: (delivery: Delivery) => void): Promise<ConsumerHandle> {
    const q = this.queueOf(queue);
    const consumer: MemoryConsumer = { prefetch, unacked: 0, cancelled: false, channel: new AbortController(), onMessage };
    q.consumers.push(consumer);
    queueMicrotask(() => this.dispatch(q));
    return {
      cancel: async () => {
        consumer.cancelled = true;
        q.consumers = q.consumers.filter((c) => c !== consumer);
      },
      setPrefetch: async (count: number) => {
        consumer.prefetch = count;
        this.dispatch(q);
      },
    };
  }

  private readonly replyQueues = new Map<string, (reply: Reply) => void>();

  async consumeReplies(onReply: (reply: Reply) => void): Promise<string> {
    const name = `celery.replies.memory.${this.replyQueues.size + 1}`;
    this.replyQueues.set(name, onReply);
    return name;
  }

  publishReply(queue: string, reply: Reply): void {
    const listener = this.replyQueues.get(queue);
    if (listener && !this.closed) queueMicrotask(() => listener({ correlationId: reply.correlationId, body: Buffer.from(reply.body) }));
  }

  async close(): Promise<void> {
    this.closed = true;
    this.replyQueues.clear();
    for (const q of this.queues.values()) q.consumers = [];
  }

  describe(): string {
    return 'memory://';
  }

  /** Messages waiting in a queue (not delivered). For tests. */
  depth(queue: string): number {
    return this.queues.get(queue)?.ready.length ?? 0;
  }

  private queueOf(name: string): MemoryQueue {
    let q = this.queues.get(name);
    if (!q) {
      q = { ready: [], consumers: [], next: 0 };
      this.queues.set(name, q);
    }
    return q;
  }

  private dispatch(q: MemoryQueue): void {
    while (q.ready.length > 0 && !this.closed) {
      const consumer = this.pickConsumer(q);
      if (!consumer) return;
      const stored = q.ready.shift() as Stored;
      consumer.unacked++;
      consumer.onMessage(this.deliveryOf(q, consumer, stored));
    }
  }

  private pickConsumer(q: MemoryQueue): MemoryConsumer | undefined {
    for (let i = 0; i < q.consumers.length; i++) {
      const c = q.consumers[(q.next + i) % q.consumers.length];
      if (!c.cancelled && c.unacked < c.prefetch) {
        q.next = (q.next + i + 1) % q.consumers.length;
        return c;
      }
    }
    return undefined;
  }

  private deliveryOf(q: MemoryQueue, consumer: MemoryConsumer, stored: Stored): Delivery {
    let settled = false;
    const settle = (requeue: boolean | null) => {
      if (settled) throw new Error('message already acknowledged or rejected');
      settled = true;
      consumer.unacked--;
      if (requeue) q.ready.unshift({ message: stored.message, redelivered: true });
      queueMicrotask(() => this.dispatch(q));
    };
    const { properties, headers, body } = stored.message;
    return {
      headers: fromAmqpFieldValue(headers) as Record<string, unknown>,
      contentType: properties.contentType,
      contentEncoding: properties.contentEncoding,
      correlationId: properties.correlationId,
      replyTo: properties.replyTo,
      priority: properties.priority,
      body,
      redelivered: stored.redelivered,
      lost: consumer.channel.signal,
      ack: () => settle(null),
      reject: (requeue: boolean) => settle(requeue),
    };
  }
}
