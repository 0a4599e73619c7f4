import type { AmqpFieldValue } from '../protocol/amqp-field-table';
import type { IncomingMessage, MessageProperties } from '../protocol/task-message';
import type { TopologyStep } from '../protocol/routing';

/** A task message ready to publish: typed headers, AMQP properties, body bytes. */
export interface OutgoingMessage {
  headers: { [key: string]: AmqpFieldValue };
  properties: MessageProperties;
  body: Buffer;
}

/**
 * One delivered message. Exactly one of `ack` / `reject` must be called, once — unless `lost`
 * has fired: then the channel it came on is gone, the broker has already requeued the message
 * (it is redelivered, to this process or another), and `ack` / `reject` do nothing.
 */
export interface Delivery extends IncomingMessage {
  redelivered: boolean;
  /** The exchange the message was published to (`''` for the default exchange) and its routing key: Celery's `delivery_info`. */
  exchange: string;
  routingKey: string;
  /** Aborts when the channel this message was delivered on closes (AMQP: a delivery tag is specific to its channel). */
  readonly lost: AbortSignal;
  ack(): void;
  reject(requeue: boolean): void;
}

/** Where a message goes when not to the default exchange: Celery's `exchange` and `routing_key` options. */
export interface PublishRoute {
  exchange: string;
  routingKey: string;
}

/** A monitoring event ready to publish (lib/events): to `exchange` (a durable topic exchange) with `routingKey`. */
export interface EventMessage {
  exchange: string;
  routingKey: string;
  body: Buffer;
  /** Celery's event headers: `{hostname}`. */
  headers: Record<string, string>;
}

/** A result notification: Celery's rpc-backend result message, keyed by task id. */
export interface Reply {
  correlationId: string;
  body: Buffer;
}

export interface ConsumeOptions {
  /** Declarations sent (in order) before consuming, instead of the queue's configured topology. */
  declare?: TopologyStep[];
  /** Consume without acknowledgements. */
  noAck?: boolean;
}

export interface ConsumerHandle {
  /** Stop receiving new messages; unacknowledged ones stay with this consumer until settled. */
  cancel(): Promise<void>;
  /**
   * Change how many unacknowledged messages the broker may hand over (held ETA tasks raise it).
   * Takes effect at once for the running consumer (AMQP: global QoS on the consumer's own channel)
   * and is kept for the consumer that replaces it after its channel or connection is lost.
   * With per-consumer QoS (AMQP `perConsumerQos`, quorum queues) it does nothing: the prefetch is
   * fixed when the consumer starts, as in Celery.
   */
  setPrefetch(count: number): Promise<void>;
}

/** What a broker says about its connection, for health checks (lib/health). */
export interface BrokerStatus {
  /** `amqp` (RabbitMQ), `memory` (the embedded in-process transport), or `other` (a broker of the app's own). */
  transport: 'amqp' | 'memory' | 'other';
  /** Connected and set up (AMQP: from the end of a connection's setup until it is lost). */
  connected: boolean;
  /** Each queue consumed in this process, and whether its consumer is receiving now. */
  consumers: { queue: string; consuming: boolean }[];
}

/** Told of every task publish: its queue, how long the broker took to confirm it, and whether it did (metrics). */
export type PublishObserver = (queue: string, seconds: number, confirmed: boolean) => void;

/**
 * The transport the producer and the worker share. Implementations: `AmqpBroker` (RabbitMQ via
 * amqplib) and `MemoryBroker` (in-process, for zero-infrastructure runs and users' unit tests).
 * Injectable under this class as its token.
 */
export abstract class Broker {
  abstract connect(): Promise<void>;
  /** Declares Celery's topology for a queue: its exchange, the durable queue, the binding (wire spec §1.1; lib/protocol/routing.ts). */
  abstract assertQueue(queue: string): Promise<void>;
  /**
   * Declares exchanges, queues and bindings in order (the native delayed-delivery topology and its
   * bindings). With `once`, only the first call with that key on a connection sends them. The
   * default does nothing (a broker without exchanges).
   */
  // eslint-disable-next-line @typescript-eslint/no-unused-vars
  async declareTopology(steps: TopologyStep[], once?: string): Promise<void> {
    return;
  }
  /**
   * Publishes to the default exchange with routing key = queue, or, with `route`, to that exchange
   * and routing key (the queue is still declared first when named); resolves once the broker has
   * confirmed it.
   */
  abstract publish(queue: string, message: OutgoingMessage, route?: PublishRoute): Promise<void>;
  /**
   * Consumes a queue on a channel of its own, recovered after a lost channel or connection. The
   * queue is declared as the configuration says, or with `options.declare` (the remote-control
   * queue: its own exchange and arguments); `options.noAck` consumes without acknowledgements
   * (ack / reject of its deliveries do nothing), as kombu consumes a pidbox.
   */
  abstract consume(queue: string, prefetch: number, onMessage: (delivery: Delivery) => void, options?: ConsumeOptions): Promise<ConsumerHandle>;
  /**
   * Declares this process's private reply queue (exclusive, auto-delete; declared again after a
   * reconnect) and consumes it without acknowledgements. Resolves the queue's name.
   */
  abstract consumeReplies(onReply: (reply: Reply) => void): Promise<string>;
  /** Publishes a reply to a reply queue: fire and forget, no confirm (a lost reply only costs a poll). */
  abstract publishReply(queue: string, reply: Reply): void;
  /**
   * Publishes a monitoring event (Celery's `celeryev` topic exchange, delivery mode 1) on a channel
   * of its own: fire and forget, never slowing or failing task publishes. Events that cannot go out
   * (broker unreachable, its socket full) are dropped, as Celery drops what it cannot send; false
   * then. The default does nothing (the in-memory broker has no monitors).
   */
  // eslint-disable-next-line @typescript-eslint/no-unused-vars
  publishEvent(event: EventMessage): boolean {
    return false;
  }
  /** Waits, at most `timeoutMs`, until the events published so far have reached the broker (before a close). */
  // eslint-disable-next-line @typescript-eslint/no-unused-vars
  async flushEvents(timeoutMs: number): Promise<void> {
    return;
  }
  abstract close(): Promise<void>;
  /** Connection and consumer state, for health checks. A broker that does not say is taken as connected. */
  status(): BrokerStatus {
    return { transport: 'other', connected: true, consumers: [] };
  }
  /** Set by the metrics (lib/metrics) when they are on; null: nothing is measured. */
  publishObserver: PublishObserver | null = null;
  /** Where it connects, with any password masked, for logs and errors. */
  abstract describe(): string;
}
