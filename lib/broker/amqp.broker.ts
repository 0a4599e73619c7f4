import { Logger } from '@nestjs/common';
import * as amqplib from 'amqplib';
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage } from 'amqplib';
import { CeleryBrokerRefusedError, CeleryConnectionError } from '../errors/celery.errors';
import { randomUUID } from 'node:crypto';
import { Broker, BrokerStatus, ConsumeOptions, ConsumerHandle, Delivery, EventMessage, OutgoingMessage, PublishRoute, Reply } from './broker.interface';
import { AckCoalescer } from './ack-coalescer';
import { redactUrl } from './redact-url';
import { toAmqpFieldTable } from '../protocol/amqp-field-table';
import { markMaybeDuplicate } from '../protocol/task-message';
import type { TlsMaterial } from '../config/tls-files';
import { bindingTakes, plainQueue, queueTopology, type QueueDeclaration, type TopologyStep } from '../protocol/routing';

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
  /**
   * How each queue is declared (exchange, type, binding key, arguments): Celery's queue table for
   * the configuration (lib/protocol/routing.ts). Default: Celery's default topology for a queue
   * name (its own direct exchange, routing key = name) with `queueArguments`.
   */
  queues?: (name: string) => QueueDeclaration;
  /**
   * Per-consumer QoS (`basic.qos` global=false), as Celery sets it when a quorum queue is
   * configured (RabbitMQ refuses global QoS on quorum queues). The prefetch is then fixed when a
   * consumer starts: `setPrefetch` does nothing. Default false: global QoS on each consumer's own
   * channel, which a raised prefetch reaches at once.
   */
  perConsumerQos?: boolean;
}

interface ConsumerRecord {
  queue: string;
  /** The prefetch the worker asked for last: applied at once, and again to the channel that replaces a lost one. */
  prefetch: number;
  onMessage: (delivery: Delivery) => void;
  channel: Channel | null;
  tag: string | null;
  /** A channel is being opened for it (by a restart or by the connection's setup). */
  starting: boolean;
  restartTimer: NodeJS.Timeout | null;
  restartDelay: number;
  /** `ConsumeOptions`: declarations instead of the queue's topology, and no-ack consuming. */
  declare: TopologyStep[] | null;
  noAck: boolean;
}

/** Events waiting for the events channel (opening, or the connection down); older ones are dropped first. */
const MAX_PENDING_EVENTS = 1000;

interface EventChannelState {
  channel: ConfirmChannel | null;
  opening: Promise<void> | null;
  pending: EventMessage[];
  /** The socket's buffer is full: events are dropped until it drains. */
  full: boolean;
  dropped: number;
  /** Exchanges declared on this channel. */
  declared: Set<string>;
}

/** Consumer and publish channels lost on a live connection are opened again after this, doubling up to the maximum. */
const CHANNEL_RETRY_MS = { initial: 200, max: 5000 };
/** basic.qos takes a short; 0 would mean "no limit". */
const MAX_PREFETCH = 65535;

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
 * worker that reconnects but never consumes again). A channel the server closes on a live
 * connection (consumer_timeout, a failed declaration, ...) is opened again too, and a consumer
 * the server cancels (its queue deleted) declares its queue and consumes again. Publishes use a
 * confirm channel, so `publish` resolves only once RabbitMQ has the message; declarations go on a
 * channel of their own, so a refused one fails that publish with the server's reason and
 * leaves the confirm channel (and every other queue's publishes) alone.
 *
 * Prefetch is a global QoS on each consumer's own channel (as Celery sets it on RabbitMQ 3.x), so
 * raising it for held ETA tasks takes effect on the running consumer: a per-consumer QoS only
 * applies to consumers created after it. With `perConsumerQos` (a quorum queue configured: RabbitMQ
 * refuses global QoS there), or on RabbitMQ 4.0+ (global QoS deprecated, denied from 4.3), it is
 * per consumer and static, as Celery 5.7 / kombu 5.7 set it.
 *
 * Queues are declared as Celery declares them for the configuration (`queues`, see
 * lib/protocol/routing.ts); a publish goes to the exchange and routing key the producer routed it
 * to, and a publish to an exchange that does not exist fails at once with CeleryBrokerRefusedError.
 */
export class AmqpBroker extends Broker {
  private readonly logger = new Logger('CeleryBroker');
  private readonly url: string;
  private model: RecoveringModel | null = null;
  private publishChannel: Promise<ConfirmChannel> | null = null;
  /** Where queues are declared: a refused declaration closes this channel, not the confirm channel. */
  private declareChannel: Promise<Channel> | null = null;
  /** Task messages the broker returned as unroutable (queue, correlation id), seen before their confirm. */
  private readonly returned = new Set<string>();
  /** True from the end of a connection's setup until it is lost. */
  private connected = false;
  private declared = new Map<string, Promise<void>>();
  /** Topology declared with `declare(steps, once)` on this connection, by its key. */
  private declaredOnce = new Map<string, Promise<void>>();
  /** The server is RabbitMQ 4.0 or newer, where global QoS is deprecated (and denied from 4.3). */
  private serverPerConsumerQos = false;
  /** The last error the server closed the publish channel with (a publish to a missing exchange: 404). */
  private publishChannelError: { code?: number; message: string } | null = null;
  private readonly consumers = new Set<ConsumerRecord>();
  /** Open consumer channels, including those of cancelled consumers still settling their messages. */
  private readonly consumerChannels = new Set<Channel>();
  private closing = false;
  /** Settles when a connection is up and set up; replaced by a pending one when it is lost. */
  private ready!: Promise<void>;
  private markReady!: () => void;
  private replies: { queue: string; onReply: (reply: Reply) => void; channel: Channel | null } | null = null;
  /** Monitoring events (publishEvent): a channel of their own, opened on first use and after a reconnect. */
  private events: EventChannelState = { channel: null, opening: null, pending: [], full: false, dropped: 0, declared: new Set() };

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
      this.connected = false;
      this.resetReady();
      if (!this.closing) this.logger.warn(`Broker connection lost (${messageOf(err)}); reconnecting`);
    });
    this.model.on('connect', () => {
      if (!this.closing) this.logger.log(`Connected to the broker at ${this.describe()}`);
    });
    this.model.on('error', (err: Error) => this.logger.error(`Broker connection error: ${messageOf(err)}`));
  }

  /** Per-consumer QoS: configured (quorum queues), or a RabbitMQ 4.0+ server (kombu 5.7 #2481). */
  private get perConsumerQos(): boolean {
    return !!this.options.perConsumerQos || this.serverPerConsumerQos;
  }

  /** Runs after every (re)connect: fresh channels, topology and consumers. */
  private async onConnected(model: ChannelModel): Promise<void> {
    const version = (model.connection as unknown as { serverProperties?: { version?: unknown } }).serverProperties?.version;
    this.serverPerConsumerQos = serverWantsPerConsumerQos(version);
    this.declared = new Map();
    this.declaredOnce = new Map();
    await this.openPublishChannel(model);
    this.openDeclareChannel(model);
    for (const record of this.consumers) {
      // channels of the lost connection are gone, whether or not their close has been seen yet
      record.channel = null;
      record.tag = null;
      await this.ensureConsumer(record, model);
    }
    if (this.replies) await this.startReplyConsumer(model);
    this.connected = true;
    this.markReady();
    // events held while the connection was down go out on a new channel (never delaying the setup)
    this.events.channel = null;
    this.events.opening = null;
    if (this.events.pending.length > 0) void this.openEventChannel(model);
  }

  /**
   * Publishes a monitoring event on the events channel without waiting for anything. While that
   * channel opens, or the connection is down, up to MAX_PENDING_EVENTS wait (oldest dropped first);
   * while its socket is full, events are dropped. Never throws.
   */
  override publishEvent(event: EventMessage): boolean {
    if (this.closing) return false;
    const state = this.events;
    const ch = state.channel;
    if (!ch || !this.connected) {
      state.pending.push(event);
      if (state.pending.length > MAX_PENDING_EVENTS) {
        state.pending.shift();
        this.countDropped();
      }
      if (this.connected && this.model) void this.openEventChannel(this.model);
      return true;
    }
    return this.sendEvent(ch, event);
  }

  private sendEvent(ch: ConfirmChannel, event: EventMessage): boolean {
    const state = this.events;
    if (state.full) {
      this.countDropped();
      return false;
    }
    try {
      if (!state.declared.has(event.exchange)) {
        // the exchange is declared once per channel, ahead of its first event (the frames go in order)
        state.declared.add(event.exchange);
        ch.assertExchange(event.exchange, 'topic', { durable: true, autoDelete: false }).catch(() => undefined);
      }
      const ok = ch.publish(event.exchange, event.routingKey, event.body, {
        deliveryMode: 1,
        contentType: 'application/json',
        contentEncoding: 'utf-8',
        headers: event.headers,
      });
      if (!ok) {
        state.full = true;
        ch.once('drain', () => (state.full = false));
      }
      return true;
    } catch (err) {
      this.countDropped();
      this.logger.debug?.(`Event ${event.routingKey} dropped: ${messageOf(err)}`);
      return false;
    }
  }

  private countDropped(): void {
    if (this.events.dropped++ === 0) this.logger.warn('Monitoring events are being dropped (broker unreachable or slow); tasks are not affected');
  }

  private openEventChannel(model: Pick<ChannelModel, 'createConfirmChannel'>): Promise<void> {
    const state = this.events;
    if (state.opening) return state.opening;
    const opening = (async () => {
      const ch = await model.createConfirmChannel();
      ch.on('error', (err: Error) => this.logger.warn(`Events channel error: ${messageOf(err)}`));
      ch.on('close', () => {
        if (state.channel !== ch) return;
        state.channel = null;
        state.opening = null;
        state.full = false;
      });
      state.declared = new Set();
      state.full = false;
      state.channel = ch;
      const held = state.pending.splice(0);
      for (const event of held) this.sendEvent(ch, event);
    })();
    state.opening = opening;
    return opening.catch((err: unknown) => {
      if (state.opening === opening) state.opening = null;
      this.logger.warn(`Could not open the events channel: ${messageOf(err)}`);
    });
  }

  override async flushEvents(timeoutMs: number): Promise<void> {
    const state = this.events;
    if (state.opening) await beforeDeadline(state.opening, Date.now() + timeoutMs, () => new Error('events channel not open')).catch(() => undefined);
    const ch = state.channel;
    if (!ch) return;
    await beforeDeadline(ch.waitForConfirms(), Date.now() + timeoutMs, () => new Error('events not confirmed')).catch(() => undefined);
  }

  /** The confirm channel; opened again when the server closes it on a live connection. */
  private async openPublishChannel(model: Pick<ChannelModel, 'createConfirmChannel'>): Promise<void> {
    const channel = model.createConfirmChannel();
    this.publishChannel = channel;
    const ch = await channel;
    ch.on('error', (err: Error) => {
      this.publishChannelError = { code: (err as { code?: number }).code, message: messageOf(err) };
      this.logger.error(`Publish channel error: ${messageOf(err)}`);
    });
    // RabbitMQ sends basic.return before the confirm of a mandatory message no queue took
    ch.on('return', (msg: ConsumeMessage) => this.returned.add(returnKey(msg.fields.routingKey, msg.properties.correlationId)));
    ch.on('close', () =>
      // a lost connection closes its channels before it reports itself lost: look once that has happened
      setImmediate(() => {
        if (this.publishChannel !== channel || this.closing || !this.connected || !this.model) return;
        this.logger.warn('Publish channel closed by the broker; opening it again');
        // publishes waiting for a confirm on it fail and are sent again on the new channel
        this.openPublishChannel(this.model).catch((err: unknown) => this.logger.error(`Could not reopen the publish channel: ${messageOf(err)}`));
      }),
    );
  }

  /** The channel queue declarations go on; a refused declaration closes it and the next one opens a new one. */
  private openDeclareChannel(model: Pick<ChannelModel, 'createChannel'>): Promise<Channel> {
    const channel = model.createChannel();
    this.declareChannel = channel;
    channel
      .then((ch) => {
        ch.on('error', () => undefined); // the declaration that closed it reports the reason
        ch.on('close', () => {
          if (this.declareChannel === channel) this.declareChannel = null;
        });
      })
      .catch(() => {
        if (this.declareChannel === channel) this.declareChannel = null;
      });
    return channel;
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
    ch.on('close', () => {
      this.consumerChannels.delete(ch);
      if (replies.channel !== ch) return;
      replies.channel = null;
      // closed alone on a live connection: consume the reply queue again (a lost connection's setup does it otherwise)
      setImmediate(() => {
        if (this.closing || !this.connected || !this.model || replies.channel) return;
        this.startReplyConsumer(this.model).catch((err: unknown) => this.logger.error(`Could not consume the reply queue again: ${messageOf(err)}`));
      });
    });
    ch.on('error', (err: Error) => this.logger.error(`Reply channel failed: ${messageOf(err)}`));
    await ch.assertQueue(replies.queue, { exclusive: true, autoDelete: true, durable: false });
    await ch.consume(replies.queue, (msg) => {
      if (msg) replies.onReply({ correlationId: msg.properties.correlationId, body: msg.content });
    }, { noAck: true });
    replies.channel = ch;
  }

  /**
   * A channel of the caller's own on this broker's connection (remote control: CeleryControl's
   * reply queue). Waits up to `timeoutMs` for a lost connection to come back. The caller closes it;
   * it closes with the connection, and is not opened again after a reconnect: open a new one.
   */
  async openChannel(timeoutMs = this.options.publishTimeoutMs ?? 30000): Promise<Channel> {
    if (this.closing) throw new CeleryConnectionError(`Broker ${this.describe()} is closed`);
    await beforeDeadline(this.ready, Date.now() + timeoutMs, () => new CeleryConnectionError(`Broker ${this.describe()} unreachable: no channel within ${timeoutMs} ms`));
    const ch = await this.requireModel().createChannel();
    this.consumerChannels.add(ch);
    ch.on('close', () => this.consumerChannels.delete(ch));
    return ch;
  }

  async assertQueue(queue: string): Promise<void> {
    let pending = this.declared.get(queue);
    if (!pending) {
      pending = this.declare(queue);
      this.declared.set(queue, pending);
      pending.catch(() => this.declared.delete(queue));
    }
    return pending;
  }

  private declare(queue: string): Promise<void> {
    const q = this.queueOf(queue);
    const args = Object.keys(q.arguments).length > 0 ? ` with arguments ${JSON.stringify(q.arguments)}` : '';
    return this.runSteps(queueTopology(q), `declare queue ${queue} (exchange ${q.exchange.name || "''"} ${q.exchange.type})${args}`);
  }

  /**
   * Declares exchanges, queues and bindings (the native delayed-delivery topology, its bindings).
   * With `once`, only the first call with that key on a connection sends them; a reconnect sends them again.
   */
  override async declareTopology(steps: TopologyStep[], once?: string): Promise<void> {
    if (!once) return this.runSteps(steps, 'declare its topology');
    let pending = this.declaredOnce.get(once);
    if (!pending) {
      pending = this.runSteps(steps, `declare ${once}`);
      this.declaredOnce.set(once, pending);
      pending.catch(() => this.declaredOnce.delete(once));
    }
    return pending;
  }

  private queueOf(queue: string): QueueDeclaration {
    return this.options.queues ? this.options.queues(queue) : plainQueue(queue, this.options.queueArguments);
  }

  private async runSteps(steps: TopologyStep[], what: string): Promise<void> {
    const model = this.requireModel();
    const ch = await (this.declareChannel ?? this.openDeclareChannel(model));
    try {
      await applySteps(ch, steps);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (typeof code === 'number' && code >= 400 && code < 500) {
        // 403/404/405/406: the server refused this declaration (for example the queue exists with other
        // arguments); trying again cannot help, and the confirm channel is untouched.
        throw new CeleryBrokerRefusedError(`Broker ${this.describe()} refused to ${what}: ${messageOf(err)}`);
      }
      throw err;
    }
  }

  /**
   * Resolves once RabbitMQ has confirmed the message. While the connection is down it waits for
   * the reconnect and then publishes; a message whose confirm was lost with the connection is
   * published again (at least once, never "sent" without a confirm). All of it is bounded by
   * `publishTimeoutMs`: when no confirm has come by then (broker away, or a connection that hangs
   * without closing) it rejects with a CeleryConnectionError.
   */
  async publish(queue: string, message: OutgoingMessage, route?: PublishRoute): Promise<void> {
    const observer = this.publishObserver;
    if (!observer) return this.publishConfirmed(queue, message, route);
    const t0 = performance.now();
    try {
      await this.publishConfirmed(queue, message, route);
      observer(queue, (performance.now() - t0) / 1000, true);
    } catch (err) {
      observer(queue, (performance.now() - t0) / 1000, false);
      throw err;
    }
  }

  override status(): BrokerStatus {
    return {
      transport: 'amqp',
      connected: this.connected && !this.closing,
      consumers: [...this.consumers].map((c) => ({ queue: c.queue, consuming: this.connected && c.channel !== null && c.tag !== null })),
    };
  }

  private async publishConfirmed(queue: string, message: OutgoingMessage, route?: PublishRoute): Promise<void> {
    const timeoutMs = this.options.publishTimeoutMs ?? 30000;
    const deadline = Date.now() + timeoutMs;
    let outgoing = message;
    for (;;) {
      try {
        await this.waitReady(deadline, queue);
        await beforeDeadline(
          this.publishOnce(queue, outgoing, route),
          deadline,
          () =>
            new CeleryConnectionError(
              `Broker ${this.describe()} did not confirm the message for queue ${queue} within ${timeoutMs} ms (publishTimeoutMs); it may or may not be queued`,
            ),
        );
        return;
      } catch (err) {
        if (this.closing || err instanceof CeleryConnectionError || err instanceof CeleryBrokerRefusedError || Date.now() >= deadline) {
          if (err instanceof CeleryBrokerRefusedError) throw err;
          throw err instanceof CeleryConnectionError ? err : new CeleryConnectionError(`Broker did not confirm the message for queue ${queue}: ${messageOf(err)}`);
        }
        // The channel or connection went away under the publish: wait for the reconnect and try again.
        // The first try may have been queued (its confirm was lost): a task message goes again marked
        // as one that may be a second copy, so its receiver reads the stored state before running it.
        outgoing = outgoing.headers === message.headers ? { ...message, headers: markMaybeDuplicate(message.headers) } : outgoing;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  }

  /**
   * Publishes as mandatory: when the queue was deleted after we declared it, RabbitMQ returns the
   * message instead of dropping it, and it is declared and published again.
   */
  private async publishOnce(queue: string, message: OutgoingMessage, route?: PublishRoute): Promise<void> {
    if (queue) await this.assertQueue(queue);
    const ch = await this.channel();
    const exchange = route?.exchange ?? '';
    const routingKey = route?.routingKey ?? queue;
    // Mandatory only where a return means "the queue we declared is gone": to it through the default
    // exchange, or through its own exchange with a key its binding takes. Elsewhere an unroutable
    // message is dropped, as Celery publishes (mandatory=False).
    const mandatory = !!queue && (exchange === '' ? routingKey === queue : this.takenBy(queue, exchange, routingKey));
    this.publishChannelError = null;
    try {
      await new Promise<void>((resolve, reject) => {
        ch.publish(exchange, routingKey, message.body, { ...message.properties, headers: message.headers, mandatory }, (err: unknown) => (err ? reject(err) : resolve()));
      });
    } catch (err) {
      const closed = this.publishChannelError as { code?: number; message: string } | null;
      if (closed?.code === 404) {
        // NOT_FOUND: the exchange does not exist. Publishing again cannot help.
        throw new CeleryBrokerRefusedError(`Broker ${this.describe()} refused the message for exchange '${exchange}' (routing key ${routingKey}): ${closed.message}`);
      }
      throw err;
    }
    if (this.returned.size > 0 && this.returned.delete(returnKey(routingKey, message.properties.correlationId))) {
      this.declared.delete(queue);
      this.logger.warn(`Queue ${queue} no longer exists (message ${message.properties.correlationId} returned unroutable); declaring it again`);
      throw new Error(`queue ${queue} missing`);
    }
  }

  private takenBy(queue: string, exchange: string, routingKey: string): boolean {
    const q = this.queueOf(queue);
    return q.exchange.name === exchange && bindingTakes(q.exchange.type, q.routingKey, routingKey);
  }

  private async waitReady(deadline: number, queue: string): Promise<void> {
    await beforeDeadline(
      this.ready,
      deadline,
      () => new CeleryConnectionError(`Broker ${this.describe()} unreachable: message for queue ${queue} not sent within the publish timeout (publishTimeoutMs)`),
    );
  }

  async consume(queue: string, prefetch: number, onMessage: (delivery: Delivery) => void, options: ConsumeOptions = {}): Promise<ConsumerHandle> {
    const record: ConsumerRecord = {
      declare: options.declare ?? null,
      noAck: options.noAck ?? false,
      queue,
      prefetch: clampPrefetch(prefetch),
      onMessage,
      channel: null,
      tag: null,
      starting: true,
      restartTimer: null,
      restartDelay: CHANNEL_RETRY_MS.initial,
    };
    this.consumers.add(record);
    try {
      await this.startConsumer(this.requireModel(), record);
    } catch (err) {
      this.consumers.delete(record);
      throw err;
    } finally {
      record.starting = false;
    }
    return {
      cancel: async () => {
        this.consumers.delete(record);
        if (record.restartTimer) clearTimeout(record.restartTimer);
        if (record.channel && record.tag) await record.channel.cancel(record.tag).catch(() => undefined);
      },
      setPrefetch: async (count: number) => {
        // Per-consumer QoS reaches only consumers started after it: the prefetch stays what it was (Celery: "static").
        if (this.perConsumerQos) return;
        record.prefetch = clampPrefetch(count);
        await record.channel?.prefetch(record.prefetch, true).catch(() => undefined);
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
    for (const ch of channels) ackCoalescers.get(ch)?.flush();
    const publish = await this.publishChannel?.catch(() => null);
    if (publish) channels.push(publish);
    if (this.events.channel) channels.push(this.events.channel);
    await Promise.allSettled(channels.map((ch) => ch.close()));
    if (model) await model.close().catch(() => undefined);
  }

  /** Opens a channel for a consumer that has none, unless one is being opened; a failure is retried with back-off. */
  private async ensureConsumer(record: ConsumerRecord, model: Pick<ChannelModel, 'createChannel'>): Promise<void> {
    if (this.closing || !this.consumers.has(record) || record.channel || record.starting) return;
    record.starting = true;
    try {
      await this.startConsumer(model, record);
      record.restartDelay = CHANNEL_RETRY_MS.initial;
    } catch (err) {
      this.logger.error(`Could not consume queue ${record.queue} again: ${messageOf(err)}; retrying in ${record.restartDelay} ms`);
      this.scheduleRestart(record);
    } finally {
      record.starting = false;
    }
  }

  /** A consumer's channel was lost on a live connection: open a new one after a short back-off. */
  private scheduleRestart(record: ConsumerRecord): void {
    if (record.restartTimer || this.closing || !this.consumers.has(record)) return;
    const delay = record.restartDelay;
    record.restartDelay = Math.min(CHANNEL_RETRY_MS.max, delay * 2);
    record.restartTimer = setTimeout(() => {
      record.restartTimer = null;
      // a lost connection is the connection's setup to handle (it starts every consumer)
      if (this.connected && this.model) void this.ensureConsumer(record, this.model);
    }, delay);
  }

  private async startConsumer(model: Pick<ChannelModel, 'createChannel'>, record: ConsumerRecord): Promise<void> {
    const ch = await model.createChannel();
    this.consumerChannels.add(ch);
    const lost = new AbortController();
    ch.on('close', () => {
      this.consumerChannels.delete(ch);
      // every unacknowledged message of this channel is back in the queue: its deliveries are void
      lost.abort();
      if (record.channel !== ch) return;
      record.channel = null;
      record.tag = null;
      if (this.closing || !this.consumers.has(record)) return;
      setImmediate(() => {
        if (this.connected) this.logger.warn(`Consumer channel for queue ${record.queue} closed by the broker; consuming again`);
      });
      this.scheduleRestart(record);
    });
    ch.on('error', (err: Error) => this.logger.error(`Consumer channel for queue ${record.queue} failed: ${messageOf(err)}`));
    try {
      await this.consumeOn(ch, record, lost.signal);
    } catch (err) {
      await ch.close().catch(() => undefined);
      throw err;
    }
    record.channel = ch;
  }

  /** Declares the queue, sets the channel's prefetch and consumes; again on the same channel if the server cancels the consumer. */
  private async consumeOn(ch: Channel, record: ConsumerRecord, lost: AbortSignal): Promise<void> {
    await applySteps(ch, record.declare ?? queueTopology(this.queueOf(record.queue)));
    if (!record.noAck) await ch.prefetch(record.prefetch, !this.perConsumerQos);
    const reply = await ch.consume(record.queue, (msg) => {
      if (msg) {
        record.onMessage(deliveryOf(ch, lost, msg, this.logger, record.noAck ? null : coalescerOf(ch, this.logger)));
        return;
      }
      // basic.cancel from the server: the queue was deleted (or moved). Messages delivered so far can still be
      // acknowledged on this channel; declare the queue and consume again.
      record.tag = null;
      if (this.closing || !this.consumers.has(record) || record.channel !== ch) return;
      this.logger.warn(`The broker cancelled the consumer of queue ${record.queue} (queue deleted?); declaring it and consuming again`);
      this.consumeOn(ch, record, lost).catch((err: unknown) => {
        this.logger.error(`Could not consume queue ${record.queue} again: ${messageOf(err)}`);
        ch.close().catch(() => undefined); // the close handler opens a new channel with back-off
      });
    }, { noAck: record.noAck });
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

/**
 * kombu 5.7's `qos_semantics_matches_spec`: RabbitMQ 4.0+ gets per-consumer QoS for every queue
 * (global QoS is deprecated there and denied by default from 4.3); 3.x keeps the global QoS.
 */
export function serverWantsPerConsumerQos(version: unknown): boolean {
  const text = Buffer.isBuffer(version) ? version.toString('utf8') : typeof version === 'string' ? version : '';
  const major = /^(\d+)\./.exec(text)?.[1];
  return major !== undefined && Number(major) >= 4;
}

/** Sends declaration frames in order, as kombu does (lib/protocol/routing.ts). */
export async function applySteps(ch: Channel, steps: readonly TopologyStep[]): Promise<void> {
  for (const step of steps) {
    switch (step.kind) {
      case 'exchange.declare':
        await ch.assertExchange(step.exchange, step.type, { durable: step.durable, autoDelete: step.autoDelete });
        break;
      case 'queue.declare':
        await ch.assertQueue(step.queue, { durable: step.durable, exclusive: step.exclusive, autoDelete: step.autoDelete, arguments: toAmqpFieldTable(step.arguments) });
        break;
      case 'queue.bind':
        await ch.bindQueue(step.queue, step.exchange, step.routingKey);
        break;
      case 'exchange.bind':
        await ch.bindExchange(step.destination, step.source, step.routingKey);
        break;
    }
  }
}

/** Each consumer channel's acknowledgements, gathered into fewer frames (lib/broker/ack-coalescer.ts). */
const ackCoalescers = new WeakMap<Channel, AckCoalescer<ConsumeMessage>>();

function coalescerOf(ch: Channel, logger: Logger): AckCoalescer<ConsumeMessage> {
  let acks = ackCoalescers.get(ch);
  if (!acks) {
    acks = new AckCoalescer<ConsumeMessage>(
      { ack: (msg, allUpTo) => ch.ack(msg, allUpTo) },
      // The channel is gone: RabbitMQ redelivers the messages to the next consumer.
      (err) => logger.warn(`Could not acknowledge messages: ${messageOf(err)}; the broker redelivers them`),
    );
    ackCoalescers.set(ch, acks);
  }
  return acks;
}

/** A delivery; `acks` gathers its acknowledgement with others of its channel (null: consumed without acknowledgements). */
function deliveryOf(ch: Channel, lost: AbortSignal, msg: ConsumeMessage, logger: Logger, acks: AckCoalescer<ConsumeMessage> | null): Delivery {
  const p = msg.properties;
  const entry = acks?.track(msg, msg.fields.deliveryTag);
  let settled = false;
  const settle = (action: () => void, what: string) => {
    if (!acks || !entry) return; // consumed without acknowledgements: nothing to settle
    if (settled) throw new Error('message already acknowledged or rejected');
    settled = true;
    if (lost.aborted) {
      acks.settled(entry);
      // its channel is gone and RabbitMQ has requeued it: a tag of a dead channel means nothing on another one
      logger.debug?.(`Not ${what === 'acknowledge' ? 'acknowledging' : 'rejecting'} message ${p.correlationId ?? ''}: its channel is closed and the broker has requeued it`);
      return;
    }
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
    exchange: msg.fields.exchange,
    routingKey: msg.fields.routingKey,
    lost,
    ack: () => settle(() => acks?.ack(entry!), 'acknowledge'),
    reject: (requeue: boolean) =>
      settle(() => {
        acks?.settled(entry!);
        ch.reject(msg, requeue);
      }, 'reject'),
  };
}

function returnKey(queue: string, correlationId: string | undefined): string {
  return `${queue}\u0000${correlationId ?? ''}`;
}

function clampPrefetch(count: number): number {
  return Math.min(MAX_PREFETCH, Math.max(1, Math.floor(count)));
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
