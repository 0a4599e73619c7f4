import * as amqplib from 'amqplib';
import { randomUUID } from 'node:crypto';
import { AMQP_URL } from './real-services';

export interface PidboxReply {
  body: Record<string, unknown>;
  headers: Record<string, unknown>;
  exchange: string;
  routingKey: string;
}

/**
 * A remote-control requester on the real broker that publishes exactly what Python's
 * `app.control` publishes (kombu's Mailbox, captured in test/fixtures/celery-control-replies-5.7.json):
 * a JSON body to the `celery.pidbox` fanout exchange with headers `clock` and `expires`, and
 * collects the replies sent to its own `<oid>.reply.celery.pidbox` queue.
 */
export class PidboxClient {
  private readonly oid = randomUUID();
  private readonly replies: PidboxReply[] = [];
  private clock = 0;

  private constructor(
    private readonly connection: amqplib.ChannelModel,
    private readonly channel: amqplib.Channel,
  ) {}

  static async open(): Promise<PidboxClient> {
    const connection = await amqplib.connect(AMQP_URL);
    const channel = await connection.createChannel();
    const client = new PidboxClient(connection, channel);
    await channel.assertExchange('celery.pidbox', 'fanout', { durable: false, autoDelete: false });
    await channel.assertExchange('reply.celery.pidbox', 'direct', { durable: false, autoDelete: false });
    const queue = `${client.oid}.reply.celery.pidbox`;
    await channel.assertQueue(queue, { durable: false, exclusive: true, autoDelete: true, arguments: { 'x-expires': 10000, 'x-message-ttl': 300000 } });
    await channel.bindQueue(queue, 'reply.celery.pidbox', client.oid);
    await channel.consume(
      queue,
      (msg) => {
        if (!msg) return;
        client.replies.push({ body: JSON.parse(msg.content.toString('utf8')) as Record<string, unknown>, headers: msg.properties.headers ?? {}, exchange: msg.fields.exchange, routingKey: msg.fields.routingKey });
      },
      { noAck: true },
    );
    return client;
  }

  /** A call (ticket + reply_to); resolves the replies carrying its ticket that came within `waitMs`. */
  async call(method: string, args: Record<string, unknown> = {}, destination: string[] | null = null, waitMs = 1000): Promise<PidboxReply[]> {
    const ticket = randomUUID();
    this.publish({ method, arguments: args, destination, pattern: null, matcher: null, ticket, reply_to: { exchange: 'reply.celery.pidbox', routing_key: this.oid } }, waitMs);
    await new Promise((resolve) => setTimeout(resolve, waitMs));
    return this.replies.filter((r) => r.headers.ticket === ticket);
  }

  /** The reply of one node to a call. */
  async ask(node: string, method: string, args: Record<string, unknown> = {}, waitMs = 1000): Promise<unknown> {
    const replies = await this.call(method, args, [node], waitMs);
    if (replies.length !== 1) throw new Error(`${method}: expected one reply from ${node}, got ${JSON.stringify(replies.map((r) => r.body))}`);
    return replies[0].body[node];
  }

  /** A cast (no ticket, no reply_to), as Python's `app.control.revoke` sends. */
  cast(method: string, args: Record<string, unknown> = {}, destination: string[] | null = null): void {
    this.publish({ method, arguments: args, destination, pattern: null, matcher: null }, 1000);
  }

  /** Raw bytes to the exchange (a malformed message). */
  publishRaw(body: Buffer, contentType = 'application/json'): void {
    this.channel.publish('celery.pidbox', '', body, { contentType, contentEncoding: 'utf-8', deliveryMode: 2, headers: { clock: ++this.clock, expires: Date.now() / 1000 + 1 } });
  }

  private publish(body: Record<string, unknown>, timeoutMs: number): void {
    this.channel.publish('celery.pidbox', '', Buffer.from(JSON.stringify(body), 'utf8'), {
      contentType: 'application/json',
      contentEncoding: 'utf-8',
      deliveryMode: 2,
      priority: 0,
      headers: { clock: ++this.clock, expires: Date.now() / 1000 + timeoutMs / 1000 },
    });
  }

  async close(): Promise<void> {
    await this.connection.close().catch(() => undefined);
  }
}
