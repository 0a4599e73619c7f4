import { Injectable } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import type { ConsumeMessage } from 'amqplib';
import { setTimeout as sleep } from 'node:timers/promises';
import { CeleryModule, Producer, Task } from '../../lib';
import { closeConnections } from '../support/rabbitmq-admin';
import { eventually, RawAmqp, realOptions, removeQueueAndTable, uniqueName } from '../support/real-services';

@Injectable()
class EventProbe {
  @Task('ev.add')
  async add(x: number, y: number): Promise<number> {
    await sleep(5);
    return x + y;
  }

  @Task('ev.fail')
  fail(): never {
    throw new RangeError('boom');
  }
}

type Body = Record<string, unknown>;
interface Seen {
  routingKey: string;
  deliveryMode: number | undefined;
  contentType: string | undefined;
  headers: Record<string, unknown>;
  bodies: Body[];
}

/**
 * The worker's events on the real RabbitMQ, read as a monitor reads them: a queue of our own bound
 * to `celeryev` with `#` (as `celery events` / Flower bind theirs).
 */
describe('events on RabbitMQ', () => {
  const queue = uniqueName('it_ev');
  const table = uniqueName('it_ev');
  const node = `${uniqueName('events')}@it`;
  const monitorQueue = `celeryev.${uniqueName('monitor')}`;
  let amqp: RawAmqp;
  let seen: Seen[];
  let moduleRef: TestingModule | null = null;

  const mine = () => seen.filter((s) => s.headers.hostname === node);
  const bodies = () => mine().flatMap((s) => s.bodies);

  beforeAll(async () => {
    amqp = await RawAmqp.open();
    await amqp.channel.assertExchange('celeryev', 'topic', { durable: true });
    await amqp.channel.assertQueue(monitorQueue, { exclusive: true, autoDelete: true, durable: false, arguments: { 'x-message-ttl': 60000 } });
    await amqp.channel.bindQueue(monitorQueue, 'celeryev', '#');
    seen = [];
    await amqp.channel.consume(
      monitorQueue,
      (msg: ConsumeMessage | null) => {
        if (!msg) return;
        const body = JSON.parse(msg.content.toString('utf8')) as Body | Body[];
        seen.push({
          routingKey: msg.fields.routingKey,
          deliveryMode: msg.properties.deliveryMode as number | undefined,
          contentType: msg.properties.contentType as string | undefined,
          headers: msg.properties.headers ?? {},
          bodies: Array.isArray(body) ? body : [body],
        });
      },
      { noAck: true },
    );
  });

  afterAll(async () => {
    await moduleRef?.close();
    await amqp.close();
    await removeQueueAndTable(queue, table);
  });

  it('worker-online, heartbeats 2 s apart, task events in order with the clock increasing, task.multi batches, worker-offline at close', async () => {
    moduleRef = await Test.createTestingModule({
      imports: [CeleryModule.forRoot(realOptions(queue, table, { worker: { hostname: node, sendTaskEvents: true, concurrency: 8, prefetch: 32 }, taskSendSentEvent: true }))],
      providers: [EventProbe],
    }).compile();
    await moduleRef.init();
    await eventually(async () => bodies().some((b) => b.type === 'worker-online'));
    const producer = moduleRef.get(Producer);
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => producer.sendTask('ev.add', { args: [i, 1] })));
    const failed = await producer.sendTask('ev.fail');
    for (const r of results) await r.get({ timeout: 20000 });
    await expect(failed.get({ timeout: 20000 })).rejects.toThrow();
    await eventually(async () => bodies().filter((b) => b.type === 'worker-heartbeat').length >= 2, 8000);
    await eventually(async () => bodies().filter((b) => b.type === 'task-succeeded').length >= 40);
    await moduleRef.close();
    moduleRef = null;
    await eventually(async () => bodies().some((b) => b.type === 'worker-offline'));

    // every message: exchange celeryev, delivery mode 1, JSON, header {hostname}
    for (const s of mine()) {
      expect(s.deliveryMode).toBe(1);
      expect(s.contentType).toBe('application/json');
      expect(s.routingKey).toBe(s.routingKey === 'task.multi' ? 'task.multi' : String(s.bodies[0].type).replace(/-/g, '.'));
    }
    const all = bodies();
    expect(all[0].type).toBe('worker-online');
    expect(all.at(-1)?.type).toBe('worker-offline');
    expect(all[0]).toMatchObject({ hostname: node, sw_ident: 'nestjs-celery', freq: 2, pid: process.pid });

    // heartbeats every 2 s
    const beats = all.filter((b) => b.type === 'worker-heartbeat').map((b) => b.timestamp as number);
    for (let i = 1; i < beats.length; i++) expect(beats[i] - beats[i - 1]).toBeGreaterThan(1.8);
    for (let i = 1; i < beats.length; i++) expect(beats[i] - beats[i - 1]).toBeLessThan(2.5);
    const lastBeat = all.filter((b) => b.type === 'worker-heartbeat').at(-1) as Body;
    expect(lastBeat.processed).toBe(41);

    // the node's clock only increases
    const clocks = all.map((b) => b.clock as number);
    for (let i = 1; i < clocks.length; i++) expect(clocks[i]).toBeGreaterThan(clocks[i - 1]);

    // each task: received, started, succeeded (or failed), in this order
    for (const r of results) {
      const events = all.filter((b) => b.uuid === r.id);
      expect(events.map((e) => e.type)).toEqual(['task-received', 'task-started', 'task-succeeded']);
      expect(events[2].result).toBe(String((results.indexOf(r) as number) + 1));
    }
    expect(all.filter((b) => b.uuid === failed.id).map((e) => [e.type, e.exception ?? null])).toEqual([
      ['task-received', null],
      ['task-started', null],
      ['task-failed', "ValueError('boom')"],
    ]);

    // task events travel as task.multi lists: some of a burst share one, none holds more than 24
    const multis = mine().filter((s) => s.routingKey === 'task.multi');
    expect(multis.length).toBeGreaterThan(0);
    expect(mine().filter((s) => s.bodies.some((b) => String(b.type).startsWith('task-')) && s.routingKey !== 'task.multi')).toEqual([]);
    expect(Math.max(...multis.map((m) => m.bodies.length))).toBeGreaterThan(1);
    expect(Math.max(...multis.map((m) => m.bodies.length))).toBeLessThanOrEqual(24);

    // task-sent from the Producer, under its own name gen<pid>@host, unbatched
    const sent = seen.filter((s) => s.routingKey === 'task.sent' && results.some((r) => r.id === s.bodies[0].uuid));
    expect(sent).toHaveLength(40);
    expect(sent[0].bodies[0]).toMatchObject({ type: 'task-sent', name: 'ev.add', queue, exchange: '', routing_key: queue });
    expect(String(sent[0].headers.hostname)).toMatch(/^gen\d+@/);
  });

  it('a lost broker connection drops or delays events, never tasks or the worker: heartbeats resume after the reconnect', async () => {
    const name = `${uniqueName('events')}@it`;
    const ref = await Test.createTestingModule({
      imports: [CeleryModule.forRoot(realOptions(queue, table, { worker: { hostname: name, sendTaskEvents: true } }))],
      providers: [EventProbe],
    }).compile();
    await ref.init();
    try {
      const ofNode = () => seen.filter((s) => s.headers.hostname === name).flatMap((s) => s.bodies);
      await eventually(async () => ofNode().some((b) => b.type === 'worker-online'));
      await closeConnections('events test: connection closed on purpose');
      // our monitor's connection went too: open it again
      amqp = await RawAmqp.open();
      await amqp.channel.assertQueue(monitorQueue, { exclusive: true, autoDelete: true, durable: false, arguments: { 'x-message-ttl': 60000 } });
      await amqp.channel.bindQueue(monitorQueue, 'celeryev', '#');
      const before = ofNode().length;
      await amqp.channel.consume(
        monitorQueue,
        (msg) => {
          if (!msg) return;
          const body = JSON.parse(msg.content.toString('utf8')) as Body | Body[];
          seen.push({ routingKey: msg.fields.routingKey, deliveryMode: 1, contentType: 'application/json', headers: msg.properties.headers ?? {}, bodies: Array.isArray(body) ? body : [body] });
        },
        { noAck: true },
      );
      const r = await ref.get(Producer).sendTask('ev.add', { args: [20, 22] });
      await expect(r.get({ timeout: 20000 })).resolves.toBe(42);
      await eventually(async () => ofNode().slice(before).some((b) => b.type === 'worker-heartbeat'), 10000);
      await eventually(async () => ofNode().some((b) => b.type === 'task-succeeded' && b.uuid === r.id), 10000);
    } finally {
      await ref.close();
    }
  });
});
