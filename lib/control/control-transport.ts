import { Logger } from '@nestjs/common';
import type { Channel } from 'amqplib';
import { randomUUID } from 'node:crypto';
import { AmqpBroker, applySteps } from '../broker/amqp.broker';
import type { Broker } from '../broker/broker.interface';
import { CeleryConfigError, CeleryConnectionError } from '../errors/celery.errors';
import { controlRequesterTopology, replyQueueName, type EncodedControlRequest } from '../protocol/control-message';

/** A reply message off the requester's reply queue, undecoded. */
export interface RawControlReply {
  headers: Record<string, unknown> | undefined;
  contentType: string | undefined;
  body: Buffer;
}

/**
 * How CeleryControl reaches the workers: publishes requests to the control exchange and hands over
 * what arrives on its reply queue (`<oid>.reply.celery.pidbox`, routing key `oid`).
 */
export interface ControlTransport {
  /** The requester's id: its reply routing key. */
  readonly oid: string;
  /** Declares the exchanges and the reply queue and consumes it (once; again after a lost channel). */
  ready(): Promise<void>;
  publish(request: EncodedControlRequest): Promise<void>;
  close(): Promise<void>;
}

/**
 * Over RabbitMQ: one channel of its own on the module broker's connection, holding the exclusive,
 * auto-delete reply queue kombu declares, consumed without acknowledgements. A channel or
 * connection lost is replaced at the next request (replies in flight on it are lost: that call
 * sees fewer replies, as a Python requester would).
 */
export class AmqpControlTransport implements ControlTransport {
  private readonly logger = new Logger('CeleryControl');
  readonly oid = randomUUID();
  private channel: Promise<Channel> | null = null;
  private closed = false;

  constructor(
    private readonly broker: AmqpBroker,
    private readonly onReply: (reply: RawControlReply) => void,
  ) {}

  ready(): Promise<void> {
    return this.open().then(() => undefined);
  }

  private open(): Promise<Channel> {
    if (this.closed) return Promise.reject(new CeleryConnectionError('CeleryControl is closed (the application is shutting down)'));
    if (!this.channel) {
      const pending = this.setUp();
      this.channel = pending;
      pending.catch(() => {
        if (this.channel === pending) this.channel = null;
      });
    }
    return this.channel;
  }

  private async setUp(): Promise<Channel> {
    const ch = await this.broker.openChannel();
    const mine = this.channel;
    ch.on('error', (err: Error) => this.logger.warn(`Control channel failed: ${err.message}`));
    ch.on('close', () => {
      if (this.channel === mine) this.channel = null;
    });
    try {
      await applySteps(ch, controlRequesterTopology(this.oid));
      await ch.consume(
        replyQueueName(this.oid),
        (msg) => {
          if (msg) this.onReply({ headers: msg.properties.headers, contentType: msg.properties.contentType, body: msg.content });
        },
        { noAck: true },
      );
    } catch (err) {
      await ch.close().catch(() => undefined);
      throw err;
    }
    return ch;
  }

  async publish(request: EncodedControlRequest): Promise<void> {
    const ch = await this.open();
    ch.publish(request.exchange, request.routingKey, request.body, { ...request.properties, headers: request.amqpHeaders });
  }

  async close(): Promise<void> {
    this.closed = true;
    const pending = this.channel;
    this.channel = null;
    const ch = await pending?.catch(() => null);
    await ch?.close().catch(() => undefined);
  }
}

/** The in-memory broker has no remote control: every request fails with this error, naming why. */
export class UnsupportedControlTransport implements ControlTransport {
  readonly oid = randomUUID();

  constructor(private readonly brokerName: string) {}

  ready(): Promise<void> {
    return Promise.reject(this.error());
  }

  publish(): Promise<void> {
    return Promise.reject(this.error());
  }

  async close(): Promise<void> {
    return;
  }

  private error(): CeleryConfigError {
    return new CeleryConfigError(
      'brokerUrl',
      `CeleryControl needs RabbitMQ (brokerUrl amqp://...): remote control (Celery's pidbox) does not exist on the ${this.brokerName}, so there are no workers to ping, inspect or revoke through it`,
    );
  }
}

/** The transport for the module's broker. */
export function controlTransportFor(broker: Broker, onReply: (reply: RawControlReply) => void): ControlTransport {
  return broker instanceof AmqpBroker ? new AmqpControlTransport(broker, onReply) : new UnsupportedControlTransport('in-memory broker');
}
