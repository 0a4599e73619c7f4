import { Logger } from '@nestjs/common';
import * as amqplib from 'amqplib';
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage } from 'amqplib';
import { CeleryConnectionError } from '../errors/celery.errors';
import { randomUUID } from 'node:crypto';
import { Broker, ConsumerHandle, Delivery, OutgoingMessage, Reply } from './broker.interface';
import { redactUrl } from './redact-url';
import { toAmqpFieldTable } from '../protocol/amqp-field-table';
import type { TlsMaterial } from '../config/tls-files';

export interface AmqpBrokerOptions {
  url: string;
  /** Retry the first connection (a few times, with back-off) instead of failing at once. */
  retryOnStartup: boolean;
  /** How long a publish waits for a lost connection to come back before it rejects. Default 30000 ms. */
  publishTimeoutMs?: number;
  /** TLS for amqps:// (verification on by default). */
  tls?: TlsMaterial | null;
  /**
   * Arguments every queue is declared with (Celery's `Queue(..., queue_arguments=...)`), for example
   * `{'x-dead-letter-exchange': 'celery.dlx'}`. They must match the queue's existing declaration.
   */
  queueArguments?: Record<string, unknown>;
}

interface ConsumerRecord {
  queue: string;
  prefetch: number;
  onMessage: (delivery: Delivery) => void;
  channel: Channel | null;
  tag: string | null;
}

type RecoveringModel = Awaited<ReturnType<typeof connectRecovering>>;

function connectRecovering(url: string, setup: (model: ChannelModel) => Promise<void>, initialMaxRetries: number, tls: TlsMaterial | null | undefined) {
  return amqplib.connect(url, {
    ...(tls ?? {}),
    // Task messages and confirms are small frames: without TCP_NODELAY, Nagle's algorithm holds
    // them back ~40 ms (it showed as the p99 of the round-trip benchmark).
    noDelay: true,
    recovery: { initialDelay: 200, maxDelay: 5000, maxRetries: Infinity, initialMaxRetries, setup },
  });
}

/**
 * RabbitMQ through amqplib. One connection with amqplib's recovery on: after a reconnect the
 * publish channel, the declared topology and every consumer are set up again (Celery's #3201 is a
 * worker that reconnects but never consumes again). Publishes use a confirm channel, so `publish`
 * resolves only once RabbitMQ has the message.
 */
export class AmqpBroker extends Broker {
  private readonly logger = new Logger('CeleryBroker');
  private readonly url: string;
  private model: RecoveringModel | null = null;
  private publishChannel: Promise<ConfirmChannel> | null = null;
  private declared = new Map<string, Promise<void>>();
  private readonly consumers = new Set<ConsumerRecord>();
  /** Open consumer channels, including those of cancelled consumers still settling their messages. */
  private readonly consumerChannels = new Set<Channel>();
  private closing = false;
  /** Settles when a connection is up and set up; replaced by a pending one when it is lost. */
  private ready!: Promise<void>;
  private markReady!: () => void;
  private replies: { queue: string; onReply: (reply: Reply) => void; channel: Channel | null } | null = null;

  constructor(private readonly options: AmqpBrokerOptions) {
    super();
    this.url = options.url.replace(/^pyamqp:/i, 'amqp:');
    this.resetReady();
  }

  private resetReady(): void {
    this.ready = new Promise<void>((resolve) => (this.markReady = resolve));
  }

  describe(): string {
    return redactUrl(this.url);
  }

  async connect(): Promise<void> {
    try {
      this.model = await connectRecovering(this.url, (model) => this.onConnected(model), this.options.retryOnStartup ? 5 : 0, this.options.tls);
    } catch (err) {
      throw new CeleryConnectionError(`Cannot connect to the broker at ${this.describe()}: ${messageOf(err)}`);
    }
    this.model.on('disconnect', (err: Error) => {
      this.resetReady();
      if (!this.closing) this.logger.warn(`Broker connection lost (${messageOf(err)}); reconnecting`);
    });
    this.model.on('connect', () => {
      if (!this.closing) this.logger.log(`Connected to the broker at ${this.describe()}`);
    });
    this.model.on('error', (err: Error) => this.logger.error(`Broker connection error: ${messageOf(err)}`));
  }

  /** Runs after every (re)connect: fresh channels, topology and consumers. */
  private async onConnected(model: ChannelModel): Promise<void> {
    this.declared = new Map();
    const channel = model.createConfirmChannel();
    this.publishChannel = channel;
    const ch = await channel;
    ch.on('error', (err: Error) => this.logger.error(`Publish channel error: ${messageOf(err)}`));
    for (const record of this.consumers) await this.startConsumer(model, record);
    if (this.replies) await this.startReplyConsumer(model);
    this.markReady();
  }

  async consumeReplies(onReply: (reply: Reply) => void): Promise<string> {
    if (this.replies) throw new Error('reply queue already consumed');
    this.replies = { queue: `celery.replies.${randomUUID()}`, onReply, channel: null };
    await this.startReplyConsumer(this.requireModel());
    return this.replies.queue;
  }

  publishReply(queue: string, reply: Reply): void {
    // Replies ride on the publish channel without waiting for a confirm.
    this.channel()
      .then((ch) => {
        ch.publish('', queue, reply.body, { correlationId: reply.correlationId, contentType: 'application/json', contentEncoding: 'utf-8', deliveryMode: 1 });
      })
      .catch((err: unknown) => this.logger.debug?.(`Reply for ${reply.correlationId} not sent: ${messageOf(err)}`));
  }

  private async startReplyConsumer(model: Pick<ChannelModel, 'createChannel'>): Promise<void> {
    const replies = this.replies;
    if (!replies) return;
    const ch = await model.createChannel();
    this.consumerChannels.add(ch);
    ch.on('close', () => this.consumerChannels.delete(ch));
    ch.on('error', (err: Error) => this.logger.error(`Reply channel failed: ${messageOf(err)}`));
    await ch.assertQueue(replies.queue, { exclusive: true, autoDelete: true, durable: false });
    await ch.consume(replies.queue, (msg) => {
      if (msg) replies.onReply({ correlationId: msg.properties.correlationId, body: msg.content });
    }, { noAck: true });
    replies.channel = ch;
  }

  async assertQueue(queue: string): Promise<void> {
    let pending = this.declared.get(queue);
    if (!pending) {
      pending = this.channel().then(async (ch) => {
        await declareTopology(ch, queue, this.options.queueArguments);
      });
      this.declared.set(queue, pending);
      pending.catch(() => this.declared.delete(queue));
    }
    return pending;
  }

  /**
   * Resolves once RabbitMQ has confirmed the message. While the connection is down it waits for
   * the reconnect and then publishes; a message whose confirm was lost with the connection is
   * published again (at least once, never "sent" without a confirm). All of it is bounded by
   * `publishTimeoutMs`: when no confirm has come by then (broker away, or a connection that hangs
   * without closing) it rejects with a CeleryConnectionError.
   */
  async publish(queue: string, message: OutgoingMessage): Promise<void> {
    const timeoutMs = this.options.publishTimeoutMs ?? 30000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        await this.waitReady(deadline, queue);
        await beforeDeadline(
          this.publishOnce(queue, message),
          deadline,
          () =>
            new CeleryConnectionError(
              `Broker ${this.describe()} did not confirm the message for queue ${queue} within ${timeoutMs} ms (publishTimeoutMs); it may or may not be queued`,
            ),
        );
        return;
      } catch (err) {
        if (this.closing || err instanceof CeleryConnectionError || Date.now() >= deadline) {
          throw err instanceof CeleryConnectionError ? err : new CeleryConnectionError(`Broker did not confirm the message for queue ${queue}: ${messageOf(err)}`);
        }
        // The channel or connection went away under the publish: wait for the reconnect and try again.
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  }

  private async publishOnce(queue: string, message: OutgoingMessage): Promise<void> {
    await this.assertQueue(queue);
    const ch = await this.channel();
    await new Promise<void>((resolve, reject) => {
      ch.publish('', queue, message.body, { ...message.properties, headers: message.headers }, (err: unknown) => (err ? reject(err) : resolve()));
    });
  }

  private async waitReady(deadline: number, queue: string): Promise<void> {
    await beforeDeadline(
      this.ready,
      deadline,
      () => new CeleryConnectionError(`Broker ${this.describe()} unreachable: message for queue ${queue} not sent within the publish timeout (publishTimeoutMs)`),
    );
  }

  async consume(queue: string, prefetch: number, onMessage: (delivery: Delivery) => void): Promise<ConsumerHandle> {
    const record: ConsumerRecord = { queue, prefetch, onMessage, channel: null, tag: null };
    this.consumers.add(record);
    await this.startConsumer(this.requireModel(), record);
    return {
      cancel: async () => {
        this.consumers.delete(record);
        if (record.channel && record.tag) await record.channel.cancel(record.tag).catch(() => undefined);
      },
      setPrefetch: async (count: number) => {
        record.prefetch = count;
        await record.channel?.prefetch(count).catch(() => undefined);
      },
    };
  }

  async close(): Promise<void> {
    this.closing = true;
    const model = this.model;
    this.model = null;
    // Close the channels first: amqplib can drop acknowledgements still buffered on a channel when
    // the connection closes under it, and RabbitMQ would then redeliver tasks that were done.
    const channels: Channel[] = [...this.consumerChannels];
    this.consumers.clear();
    const publish = await this.publishChannel?.catch(() => null);
    if (publish) channels.push(publish);
    await Promise.allSettled(channels.map((ch) => ch.close()));
    if (model) await model.close().catch(() => undefined);
  }

  private async startConsumer(model: Pick<ChannelModel, 'createChannel'>, record: ConsumerRecord): Promise<void> {
    const ch = await model.createChannel();
    this.consumerChannels.add(ch);
    const lost = new AbortController();
    ch.on('close', () => {
      this.consumerChannels.delete(ch);
      lost.abort();
    });
    ch.on('error', (err: Error) => this.logger.error(`Consumer channel for queue ${record.queue} failed: ${messageOf(err)}`));
    await declareTopology(ch, record.queue, this.options.queueArguments);
    await ch.prefetch(record.prefetch);
    const reply = await ch.consume(record.queue, (msg) => {
      if (msg) record.onMessage(deliveryOf(ch, lost.signal, msg, this.logger));
    }, { noAck: false });
    record.channel = ch;
    record.tag = reply.consumerTag;
  }

  private channel(): Promise<ConfirmChannel> {
    if (!this.publishChannel) return Promise.reject(new CeleryConnectionError(`Broker ${this.describe()} is not connected`));
    return this.publishChannel;
  }

  private requireModel(): RecoveringModel {
    if (!this.model) throw new CeleryConnectionError(`Broker ${this.describe()} is not connected`);
    return this.model;
  }
}

/** Celery's topology for a queue: a direct exchange and a durable queue of the same name, bound by it. */
async function declareTopology(ch: Channel, queue: string, queueArguments?: Record<string, unknown>): Promise<void> {
  await ch.assertExchange(queue, 'direct', { durable: true, autoDelete: false });
  await ch.assertQueue(queue, { durable: true, exclusive: false, autoDelete: false, arguments: queueArguments ? toAmqpFieldTable(queueArguments) : undefined });
  await ch.bindQueue(queue, queue, queue);
}

function deliveryOf(ch: Channel, lost: AbortSignal, msg: ConsumeMessage, logger: Logger): Delivery {
  const p = msg.properties;
  let settled = false;
  const settle = (action: () => void, what: string) => {
    if (settled) throw new Error('message already acknowledged or rejected');
    settled = true;
    try {
      action();
    } catch (err) {
      // The channel is gone: RabbitMQ redelivers the message to the next consumer.
      logger.warn(`Could not ${what} message ${p.correlationId ?? ''}: ${messageOf(err)}`);
    }
  };
  return {
    headers: p.headers,
    contentType: p.contentType,
    contentEncoding: p.contentEncoding,
    correlationId: p.correlationId,
    replyTo: p.replyTo,
    priority: p.priority,
    body: msg.content,
    redelivered: msg.fields.redelivered,
    lost,
    ack: () => settle(() => ch.ack(msg), 'acknowledge'),
    reject: (requeue: boolean) => settle(() => ch.reject(msg, requeue), 'reject'),
  };
}

/** Settles as `work` does, or rejects with `timeoutError()` at `deadline` (epoch ms), whichever comes first. */
async function beforeDeadline<T>(work: Promise<T>, deadline: number, timeoutError: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(timeoutError()), Math.max(0, deadline - Date.now()));
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
