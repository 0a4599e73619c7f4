import { fromAmqpFieldValue, toAmqpFieldValue, type AmqpFieldValue } from '../protocol/amqp-field-table';
import { Broker, BrokerStatus, ConsumeOptions, ConsumerHandle, Delivery, OutgoingMessage, PublishRoute, Reply } from './broker.interface';
import { bindingTakes, DELAY_BITS, DELAYED_DELIVERY_EXCHANGE, plainQueue, queueTopology, type ExchangeType, type QueueDeclaration, type TopologyStep } from '../protocol/routing';

export interface MemoryBrokerOptions {
  /**
   * Arguments every queue is created with, as `AmqpBroker`'s `queueArguments`. Only dead-lettering
   * is modelled: `x-dead-letter-exchange` and `x-dead-letter-routing-key` (see `MemoryBroker`).
   */
  queueArguments?: Record<string, unknown>;
  /** How each queue is declared (its exchange and binding key), as `AmqpBroker`'s `queues`. */
  queues?: (name: string) => QueueDeclaration;
}

interface MemoryExchange {
  type: ExchangeType;
  /** Queues and exchanges bound to it, with their binding keys. */
  bindings: { queue?: string; exchange?: string; key: string }[];
}

interface Stored {
  message: OutgoingMessage;
  redelivered: boolean;
  exchange: string;
  routingKey: string;
}

interface MemoryConsumer {
  prefetch: number;
  /** Handed over on the current channel and not settled yet, in delivery order. */
  unacked: Set<Stored>;
  cancelled: boolean;
  /** Aborted when the consumer's (simulated) channel closes; a replacement channel gets a new one. */
  channel: AbortController;
  onMessage: (delivery: Delivery) => void;
}

interface MemoryQueue {
  name: string;
  /** Fixed when the queue is created, as RabbitMQ fixes a queue's arguments at its first declaration. */
  arguments: Record<string, unknown>;
  ready: Stored[];
  consumers: MemoryConsumer[];
  /** Cancelled consumers that still hold unacknowledged messages. */
  cancelled: Set<MemoryConsumer>;
  next: number;
}

/**
 * An in-process broker with RabbitMQ's semantics where the library depends on them, checked by the
 * same contract suite as `AmqpBroker` on a real RabbitMQ (test/contract/broker-contract.ts):
 *
 * - A queue exists once either side declares it: `assertQueue`, `consume`, or `publish` (which
 *   declares the queue first, as `AmqpBroker` does). Messages wait in it until a consumer comes.
 * - Per-consumer prefetch; `setPrefetch` applies at once to the running consumer.
 * - ack / reject(requeue) once per delivery; a requeued message goes back to the head of the queue,
 *   flagged redelivered. reject(false) drops the message, or dead-letters it when the queue has
 *   `x-dead-letter-exchange`: it is routed as a publish to that exchange with the routing key
 *   `x-dead-letter-routing-key` (default: the queue's name), with an `x-death` header. The only
 *   exchanges are the default one (`''`, routing key = queue name) and each queue's Celery
 *   exchange (same name as the queue, routing key = queue name); a dead-letter that routes to no
 *   declared queue is dropped, as RabbitMQ drops an unroutable one.
 * - Exchanges (direct, topic, fanout) and their bindings, declared with each queue as Celery
 *   declares it and by `declareTopology`: a publish follows them (exchange-to-exchange bindings
 *   too). A publish to an exchange nobody declared goes to the queue of its routing key. The native
 *   delayed-delivery levels (`celery_delayed_N`) are not modelled as queues with TTLs: a message
 *   published to one goes straight on through `celery_delayed_delivery` (the worker then holds it
 *   until its ETA), with the prefixed routing key and, as RabbitMQ reports it, the dead-letter
 *   exchange of the last delay level in its delivery; no `x-death`.
 *   `headers` exchanges, exchange arguments and the alternate exchange are not modelled.
 * - A lost channel (`simulateChannelLoss`, or `close`) puts its unacknowledged messages back at
 *   the head of the queue as redelivered and aborts their deliveries' `lost` signal; their
 *   ack / reject then do nothing.
 * - A deleted queue (`simulateQueueDeletion`) loses its messages and is declared again by its
 *   consumers, which keep consuming.
 *
 * No durability: a process exit loses the queues.
 */
export class MemoryBroker extends Broker {
  private readonly queues = new Map<string, MemoryQueue>();
  private readonly exchanges = new Map<string, MemoryExchange>();
  private closed = false;

  constructor(private readonly options: MemoryBrokerOptions = {}) {
    super();
  }

  async connect(): Promise<void> {
    this.closed = false;
  }

  /** Always connected until closed (it lives in this process); every active consumer is consuming. */
  override status(): BrokerStatus {
    const consumers: BrokerStatus['consumers'] = [];
    for (const q of this.queues.values()) for (const c of q.consumers) if (!c.cancelled) consumers.push({ queue: q.name, consuming: !this.closed });
    return { transport: 'memory', connected: !this.closed, consumers };
  }

  async assertQueue(queue: string): Promise<void> {
    this.queueOf(queue);
  }

  override async declareTopology(steps: TopologyStep[]): Promise<void> {
    for (const step of steps) {
      if (step.kind === 'exchange.declare') this.exchangeOf(step.exchange, step.type);
      else if (step.kind === 'queue.declare') this.queueOf(step.queue, step.arguments);
      else if (step.kind === 'queue.bind') this.bind(step.exchange, { queue: step.queue, key: step.routingKey });
      else this.bind(step.source, { exchange: step.destination, key: step.routingKey });
    }
  }

  async publish(queue: string, message: OutgoingMessage, route?: PublishRoute): Promise<void> {
    if (this.closed) throw new Error('memory broker is closed');
    // AmqpBroker declares the queue before it publishes: the message waits for a consumer.
    if (queue) this.queueOf(queue);
    let exchange = route?.exchange ?? '';
    const routingKey = route?.routingKey ?? queue;
    let delivered = exchange;
    if (/^celery_delayed_\d+$/.test(exchange)) {
      // No delay levels here: straight on to where the last one dead-letters. RabbitMQ reports the
      // dead-letter exchange of the last delay queue the message waited in (that of its lowest 1 digit).
      exchange = DELAYED_DELIVERY_EXCHANGE;
      const lowest = routingKey.split('.').slice(0, DELAY_BITS).reverse().indexOf('1');
      delivered = lowest > 0 ? `celery_delayed_${lowest - 1}` : DELAYED_DELIVERY_EXCHANGE;
    }
    const copy = { ...message, body: Buffer.from(message.body) };
    for (const q of this.route(exchange, routingKey, queue)) this.enqueue(q, { message: copy, redelivered: false, exchange: delivered, routingKey });
  }

  /** The queues a publish reaches: by name through the default exchange, else along the declared bindings. */
  private route(exchange: string, routingKey: string, declared: string): MemoryQueue[] {
    if (exchange === '') return [this.queues.get(routingKey) ?? this.queueOf(routingKey)];
    // An exchange nobody declared: Celery's default topology (each queue's own direct exchange) is assumed.
    if (!this.exchanges.has(exchange)) return [this.queueOf(declared || routingKey)];
    const found = new Set<MemoryQueue>();
    const seen = new Set<string>();
    const walk = (name: string) => {
      const ex = this.exchanges.get(name);
      if (!ex || seen.has(name)) return;
      seen.add(name);
      for (const b of ex.bindings) {
        if (!bindingTakes(ex.type, b.key, routingKey)) continue;
        if (b.queue) {
          const q = this.queues.get(b.queue);
          if (q) found.add(q);
        } else if (b.exchange) walk(b.exchange);
      }
    };
    walk(exchange);
    return [...found];
  }

  private exchangeOf(name: string, type: ExchangeType): MemoryExchange {
    let ex = this.exchanges.get(name);
    if (!ex) {
      ex = { type, bindings: [] };
      this.exchanges.set(name, ex);
    }
    return ex;
  }

  private bind(exchange: string, binding: { queue?: string; exchange?: string; key: string }): void {
    const ex = this.exchanges.get(exchange) ?? this.exchangeOf(exchange, 'direct');
    if (!ex.bindings.some((b) => b.queue === binding.queue && b.exchange === binding.exchange && b.key === binding.key)) ex.bindings.push(binding);
  }

  async consume(queue: string, prefetch: number, onMessage: (delivery: Delivery) => void, options: ConsumeOptions = {}): Promise<ConsumerHandle> {
    if (options.declare) await this.declareTopology(options.declare);
    const q = this.queueOf(queue);
    const consumer: MemoryConsumer = {
      prefetch,
      unacked: new Set(),
      cancelled: false,
      channel: new AbortController(),
      // no-ack: settled as soon as it is handed over
      onMessage: options.noAck ? (d) => (d.ack(), onMessage({ ...d, ack: () => undefined, reject: () => undefined })) : onMessage,
    };
    q.consumers.push(consumer);
    queueMicrotask(() => this.dispatch(q));
    return {
      cancel: async () => {
        if (consumer.cancelled) return;
        consumer.cancelled = true;
        q.consumers = q.consumers.filter((c) => c !== consumer);
        if (consumer.unacked.size > 0) q.cancelled.add(consumer);
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

  /** Closes every channel: unacknowledged messages go back to their queues (redelivered) and their deliveries' `lost` fires. */
  async close(): Promise<void> {
    this.closed = true;
    this.replyQueues.clear();
    for (const q of this.queues.values()) {
      for (const consumer of [...q.consumers, ...q.cancelled]) this.closeChannel(q, consumer);
      q.consumers = [];
      q.cancelled.clear();
    }
  }

  describe(): string {
    return 'memory://';
  }

  /** Messages waiting in a queue (not delivered). For tests. */
  depth(queue: string): number {
    return this.queues.get(queue)?.ready.length ?? 0;
  }

  /**
   * For tests: the channels of the consumers of `queue` close, as when RabbitMQ closes a channel
   * (consumer_timeout, a channel error) and `AmqpBroker` reopens it. Their unacknowledged messages
   * go back to the head of the queue flagged redelivered, the `lost` signal of those deliveries
   * aborts and their ack / reject do nothing; each live consumer continues on a new channel with
   * the same callback and its current prefetch. A cancelled consumer's messages come back too.
   */
  simulateChannelLoss(queue: string): void {
    const q = this.queues.get(queue);
    if (!q) return;
    for (const consumer of [...q.consumers, ...q.cancelled]) this.closeChannel(q, consumer);
    q.cancelled.clear();
    queueMicrotask(() => this.dispatch(q));
  }

  /**
   * For tests: the queue is deleted on the server and declared again at once by its consumers (as
   * `AmqpBroker` does when RabbitMQ cancels them): waiting and unacknowledged messages are gone,
   * and the unacknowledged ones' ack / reject do nothing. The channels stay open (`lost` does not fire).
   */
  simulateQueueDeletion(queue: string): void {
    const q = this.queues.get(queue);
    if (!q) return;
    q.ready = [];
    for (const consumer of [...q.consumers, ...q.cancelled]) consumer.unacked.clear();
    q.cancelled.clear();
  }

  private closeChannel(q: MemoryQueue, consumer: MemoryConsumer): void {
    q.ready.unshift(...[...consumer.unacked].map((stored) => ({ ...stored, redelivered: true })));
    consumer.unacked.clear();
    const old = consumer.channel;
    consumer.channel = new AbortController();
    old.abort(new Error(`memory broker: channel of the consumer of queue ${q.name} closed`));
  }

  /** The queue, created (with its exchange and binding, as Celery declares them) on first use. */
  private queueOf(name: string, args?: Record<string, unknown>): MemoryQueue {
    let q = this.queues.get(name);
    if (!q) {
      const decl = args ? null : this.options.queues ? this.options.queues(name) : plainQueue(name, this.options.queueArguments);
      q = { name, arguments: { ...(args ?? decl?.arguments) }, ready: [], consumers: [], cancelled: new Set(), next: 0 };
      this.queues.set(name, q);
      if (decl) {
        for (const step of queueTopology(decl)) {
          if (step.kind === 'exchange.declare') this.exchangeOf(step.exchange, step.type);
          else if (step.kind === 'queue.bind') this.bind(step.exchange, { queue: step.queue, key: step.routingKey });
        }
      }
    }
    return q;
  }

  private enqueue(q: MemoryQueue, stored: Stored): void {
    q.ready.push(stored);
    queueMicrotask(() => this.dispatch(q));
  }

  private dispatch(q: MemoryQueue): void {
    while (q.ready.length > 0 && !this.closed) {
      const consumer = this.pickConsumer(q);
      if (!consumer) return;
      const stored = q.ready.shift() as Stored;
      consumer.unacked.add(stored);
      consumer.onMessage(this.deliveryOf(q, consumer, stored));
    }
  }

  private pickConsumer(q: MemoryQueue): MemoryConsumer | undefined {
    for (let i = 0; i < q.consumers.length; i++) {
      const c = q.consumers[(q.next + i) % q.consumers.length];
      if (!c.cancelled && c.unacked.size < c.prefetch) {
        q.next = (q.next + i + 1) % q.consumers.length;
        return c;
      }
    }
    return undefined;
  }

  private deliveryOf(q: MemoryQueue, consumer: MemoryConsumer, stored: Stored): Delivery {
    const lost = consumer.channel.signal;
    let settled = false;
    const settle = (requeue: boolean | null) => {
      if (settled) throw new Error('message already acknowledged or rejected');
      settled = true;
      // Its channel is gone (the message is already back in the queue), or its queue was deleted.
      if (lost.aborted || !consumer.unacked.delete(stored)) return;
      if (consumer.cancelled && consumer.unacked.size === 0) q.cancelled.delete(consumer);
      if (requeue) q.ready.unshift({ ...stored, redelivered: true });
      else if (requeue === false) this.deadLetter(q, stored.message);
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
      exchange: stored.exchange,
      routingKey: stored.routingKey,
      lost,
      ack: () => settle(null),
      reject: (requeue: boolean) => settle(requeue),
    };
  }

  /** reject(false): dropped, or routed on as RabbitMQ dead-letters (see the class comment). */
  private deadLetter(q: MemoryQueue, message: OutgoingMessage): void {
    const exchange = q.arguments['x-dead-letter-exchange'];
    if (typeof exchange !== 'string') return;
    const dlKey = q.arguments['x-dead-letter-routing-key'];
    const routingKey = typeof dlKey === 'string' ? dlKey : q.name;
    // Along the declared bindings; an unroutable dead letter is dropped.
    const targets = exchange === '' ? [this.queues.get(routingKey)].filter((t): t is MemoryQueue => !!t) : this.exchanges.has(exchange) ? this.route(exchange, routingKey, '') : [];
    const headers = { ...message.headers, 'x-death': xDeath(message.headers['x-death'], q.name) };
    for (const target of targets) this.enqueue(target, { message: { ...message, headers }, redelivered: false, exchange, routingKey });
  }
}

/** RabbitMQ's `x-death` after one more rejection from `queue`: its entry counted up and moved first. */
function xDeath(previous: AmqpFieldValue | undefined, queue: string): AmqpFieldValue {
  const entries = Array.isArray(previous) ? (fromAmqpFieldValue(previous) as Record<string, unknown>[]) : [];
  const same = entries.find((e) => e.queue === queue && e.reason === 'rejected');
  const entry = { reason: 'rejected', queue, exchange: '', 'routing-keys': [queue], count: same ? Number(same.count) + 1 : 1, time: Math.floor(Date.now() / 1000) };
  return toAmqpFieldValue([entry, ...entries.filter((e) => e !== same)]);
}
