import { Test, TestingModule } from '@nestjs/testing';
import type { ConsumeMessage } from 'amqplib';
import { CeleryControl, CeleryModule, Producer } from '../../lib';
import { replyQueueName } from '../../lib/protocol/control-message';
import { AMQP_URL, RawAmqp, eventually, uniqueName } from '../support/real-services';
import { TcpProxy } from '../support/tcp-proxy';
import { rabbitmqctl } from '../support/rabbitmq-admin';

/**
 * CeleryControl on the real RabbitMQ, answered by stand-in nodes that speak kombu's pidbox with
 * a raw AMQP client (a queue bound to `celery.pidbox`, replies to the requester's `reply_to`
 * with its ticket) — the worker side of the protocol, done the way a Celery worker does it.
 * Python workers answer it in test/interop/control.interop.spec.ts.
 */
interface Seen {
  body: Record<string, unknown>;
  headers: Record<string, unknown>;
  properties: ConsumeMessage['properties'];
  exchange: string;
  routingKey: string;
}

class StandInNode {
  readonly seen: Seen[] = [];
  private constructor(
    readonly name: string,
    private readonly amqp: RawAmqp,
  ) {}

  static async start(name: string, answers: Record<string, unknown>): Promise<StandInNode> {
    const amqp = await RawAmqp.open();
    const node = new StandInNode(name, amqp);
    const ch = amqp.channel;
    const queue = `${name}.celery.pidbox`;
    await ch.assertExchange('celery.pidbox', 'fanout', { durable: false });
    await ch.assertQueue(queue, { durable: false, exclusive: true, autoDelete: true, arguments: { 'x-message-ttl': 300000, 'x-expires': 10000 } });
    await ch.bindQueue(queue, 'celery.pidbox', '');
    await ch.consume(
      queue,
      (msg) => {
        if (!msg) return;
        const body = JSON.parse(msg.content.toString('utf8')) as Record<string, unknown>;
        const destination = body.destination as string[] | null;
        if (destination && !destination.includes(name)) return;
        node.seen.push({ body, headers: msg.properties.headers ?? {}, properties: msg.properties, exchange: msg.fields.exchange, routingKey: msg.fields.routingKey });
        const replyTo = body.reply_to as { exchange: string; routing_key: string } | undefined;
        if (!body.ticket || !replyTo) return;
        const method = body.method as string;
        const reply = method in answers ? answers[method] : { error: `No such command: ${method}` };
        ch.publish(replyTo.exchange, replyTo.routing_key, Buffer.from(JSON.stringify({ [name]: reply })), {
          contentType: 'application/json',
          contentEncoding: 'utf-8',
          deliveryMode: 1,
          headers: { ticket: body.ticket, clock: 1000 },
        });
      },
      { noAck: true },
    );
    return node;
  }

  async stop(): Promise<void> {
    await this.amqp.close();
  }
}

describe('CeleryControl on RabbitMQ', () => {
  let app: TestingModule;
  let control: CeleryControl;
  let a: StandInNode;
  let b: StandInNode;
  const nodeA = `${uniqueName('celery')}@standin-a`;
  const nodeB = `${uniqueName('celery')}@standin-b`;
  const answers = {
    ping: { ok: 'pong' },
    registered: ['tasks.add', 'tasks.sleep'],
    revoke: { ok: 'tasks 1 flagged as revoked' },
    active: [{ id: 't1', name: 'tasks.sleep', args: [30], kwargs: {}, type: 'tasks.sleep', hostname: 'x', time_start: 1.5, acknowledged: true, delivery_info: { exchange: '', routing_key: 'q', priority: 0, redelivered: false }, worker_pid: 42 }],
  };

  beforeAll(async () => {
    a = await StandInNode.start(nodeA, answers);
    b = await StandInNode.start(nodeB, answers);
    app = await Test.createTestingModule({ imports: [CeleryModule.forRoot({ brokerUrl: AMQP_URL, worker: { enabled: false } })] }).compile();
    await app.init();
    control = app.get(CeleryControl);
  });

  afterAll(async () => {
    await app?.close();
    await a?.stop();
    await b?.stop();
  });

  it('ping with destinations: every named node answers, collected as soon as all have (limit = destinations)', async () => {
    const t0 = Date.now();
    expect(await control.ping({ destination: [nodeA, nodeB], timeout: 5000 })).toEqual({ [nodeA]: { ok: 'pong' }, [nodeB]: { ok: 'pong' } });
    expect(Date.now() - t0).toBeLessThan(2000);
  });

  it('ping with no destination reaches every node on the broker', async () => {
    const replies = await control.ping({ timeout: 500 });
    expect(replies[nodeA]).toEqual({ ok: 'pong' });
    expect(replies[nodeB]).toEqual({ ok: 'pong' });
  });

  it('inspect replies are typed by node; the request is what kombu publishes', async () => {
    const active = await control.inspect({ destination: [nodeA] }).active();
    expect(active[nodeA][0].worker_pid).toBe(42);
    expect(await control.inspect({ destination: [nodeB] }).registered()).toEqual({ [nodeB]: ['tasks.add', 'tasks.sleep'] });
    const req = b.seen.find((s) => s.body.method === 'registered') as Seen;
    expect(req.exchange).toBe('celery.pidbox');
    expect(req.routingKey).toBe('');
    expect(req.properties).toMatchObject({ contentType: 'application/json', contentEncoding: 'utf-8', deliveryMode: 2, priority: 0 });
    expect(Object.keys(req.headers)).toEqual(['clock', 'expires']);
    expect(typeof req.headers.expires).toBe('number');
    expect(req.headers.expires as number).toBeGreaterThan(Date.now() / 1000);
    expect(req.body).toMatchObject({ method: 'registered', arguments: { taskinfoitems: [] }, destination: [nodeB], reply_to: { exchange: 'reply.celery.pidbox' } });
  });

  it('an unknown command gets the node error reply; a node that never answers leaves an empty result after the timeout', async () => {
    expect(await control.broadcast('no_such_thing', { destination: [nodeA], reply: true })).toEqual([{ [nodeA]: { error: 'No such command: no_such_thing' } }]);
    const t0 = Date.now();
    expect(await control.ping({ destination: ['nobody@nowhere'], timeout: 300 })).toEqual({});
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
  });

  it('revoke is a cast: published with no ticket, the nodes get it; AsyncResult.revoke({wait}) collects the replies', async () => {
    await control.revoke(['r1', 'r2'], { terminate: true, signal: 'SIGKILL', destination: [nodeA] });
    await eventually(async () => a.seen.some((s) => s.body.method === 'revoke'));
    const cast = a.seen.find((s) => s.body.method === 'revoke') as Seen;
    expect(cast.body).toEqual({ method: 'revoke', arguments: { task_id: ['r1', 'r2'], terminate: true, signal: 'SIGKILL' }, destination: [nodeA], pattern: null, matcher: null });
    const producer = app.get(Producer);
    const replies = await producer.asyncResult('r3').revoke({ wait: true, timeout: 500 });
    expect(replies[nodeA]).toEqual({ ok: 'tasks 1 flagged as revoked' });
    const fromHandle = a.seen.filter((s) => s.body.method === 'revoke').pop() as Seen;
    expect(fromHandle.body.arguments).toEqual({ task_id: 'r3', terminate: false, signal: null });
  });

  it('the reply queue is private: exclusive to our connection, auto-delete, with kombu arguments', async () => {
    const oid = (control as unknown as { transport: { oid: string } }).transport.oid;
    const listed = JSON.parse(await rabbitmqctl('-q', 'list_queues', '--formatter', 'json', 'name', 'durable', 'auto_delete', 'exclusive', 'arguments')) as {
      name: string;
      arguments: [string, string, number][];
    }[];
    const q = listed.find((x) => x.name === replyQueueName(oid));
    expect(q).toEqual({
      name: replyQueueName(oid),
      durable: false,
      auto_delete: true,
      exclusive: true,
      arguments: expect.arrayContaining([
        ['x-expires', 'signedint', 10000],
        ['x-message-ttl', 'signedint', 300000],
      ]),
    });
    // another connection cannot take it: a passive declare there fails with 405 RESOURCE_LOCKED
    const amqp = await RawAmqp.open();
    amqp.channel.on('error', () => undefined);
    try {
      await expect(amqp.channel.checkQueue(replyQueueName(oid))).rejects.toThrow(/RESOURCE_LOCKED/);
    } finally {
      await amqp.close().catch(() => undefined);
    }
  });

  it('the Lamport clock moves past the replies\' clocks', async () => {
    await control.ping({ destination: [nodeA] });
    expect(control.clock.value).toBeGreaterThan(1000);
  });
});

describe('CeleryControl across a lost connection', () => {
  let proxy: TcpProxy;
  let app: TestingModule | null = null;
  let node: StandInNode;
  const name = `${uniqueName('celery')}@standin-c`;

  beforeAll(async () => {
    proxy = await TcpProxy.start('127.0.0.1', 5672);
    node = await StandInNode.start(name, { ping: { ok: 'pong' } });
  });

  afterAll(async () => {
    proxy.restore();
    await app?.close();
    await node?.stop();
    await proxy.close();
  });

  it('after the broker connection comes back, the next request opens a new channel and reply queue and gets its replies', async () => {
    app = await Test.createTestingModule({
      imports: [CeleryModule.forRoot({ brokerUrl: `amqp://guest:guest@127.0.0.1:${proxy.port}`, worker: { enabled: false } })],
    }).compile();
    await app.init();
    const control = app.get(CeleryControl);
    expect(await control.ping({ destination: [name] })).toEqual({ [name]: { ok: 'pong' } });
    proxy.cut();
    await new Promise((r) => setTimeout(r, 300));
    proxy.restore();
    await eventually(async () => {
      const replies = await control.ping({ destination: [name], timeout: 500 }).catch(() => ({}));
      return (replies as Record<string, unknown>)[name] !== undefined;
    }, 20000);
  });
});
