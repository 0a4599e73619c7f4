import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CeleryControl } from '../../../lib/control/celery-control';
import type { ControlTransport, RawControlReply } from '../../../lib/control/control-transport';
import { InvalidControlRequestError } from '../../../lib/errors/celery.errors';
import { controlRequesterTopology, decodeControlReply, encodeControlRequest, flattenReplies, LamportClock } from '../../../lib/protocol/control-message';
import type { EncodedControlRequest } from '../../../lib/protocol/control-message';
import { AsyncResult } from '../../../lib/results/async-result';
import { MemoryResultStore } from '../../../lib/results/memory.result-store';
import { MemoryBroker } from '../../../lib/broker/memory.broker';

/**
 * Our remote-control requests against those Python's app.control publishes, captured off RabbitMQ
 * from Celery 5.7 and 5.2.6 by test/fixtures/celery-control.py (same ticket, oid, clock and time).
 */
interface Captured {
  call: string;
  exchange: string;
  routingKey: string;
  properties: Record<string, unknown>;
  headers: Record<string, number>;
  headerTypes: Record<string, 'int' | 'float'>;
  body: string;
}
interface Fixture {
  now: number;
  oid: string;
  clockBefore: number;
  run: string;
  replyQueue: { name: string; durable: boolean; auto_delete: boolean; exclusive: boolean; arguments: [string, string, number][] };
  requests: Captured[];
}

const load = (v: string): Fixture => JSON.parse(readFileSync(join(__dirname, `../../fixtures/celery-control-${v}.json`), 'utf8'));

/** A transport that records what would be published and answers each request that wants a reply like one worker would. */
class RecordingTransport implements ControlTransport {
  readonly sent: EncodedControlRequest[] = [];
  constructor(
    readonly oid: string,
    private readonly onReply: (r: RawControlReply) => void,
    private readonly answer: ((body: Record<string, unknown>) => RawControlReply | null) | null = null,
  ) {}
  async ready(): Promise<void> {}
  async publish(request: EncodedControlRequest): Promise<void> {
    this.sent.push(request);
    const body = JSON.parse(request.body.toString('utf8'));
    const reply = body.ticket && this.answer ? this.answer(body) : null;
    if (reply) setImmediate(() => this.onReply(reply));
  }
  async close(): Promise<void> {}
}

function pythonReply(ticket: string, node: string, reply: unknown, clock = 7): RawControlReply {
  return { headers: { ticket, clock }, contentType: 'application/json', body: Buffer.from(JSON.stringify({ [node]: reply })) };
}

/** The same call as the fixture's, through our API. */
async function replay(fx: Fixture, captured: Captured): Promise<EncodedControlRequest> {
  const body = JSON.parse(captured.body);
  let transport!: RecordingTransport;
  const control = new CeleryControl(null, {
    transport: (onReply) => (transport = new RecordingTransport(fx.oid, onReply, (b) => pythonReply(b.ticket as string, `capture-${fx.run}@nowhere`, { ok: 'x' }))),
    ticket: () => body.ticket,
    nowSeconds: () => fx.now,
    clock: new LamportClock(fx.clockBefore),
  });
  const nowhere = [`capture-${fx.run}@nowhere`];
  const taskId = `7a3b0c1d-0000-4000-8000-${fx.run}0001`;
  const taskIds = [`7a3b0c1d-0000-4000-8000-${fx.run}0002`, `7a3b0c1d-0000-4000-8000-${fx.run}0003`];
  const result = new AsyncResult(taskId, new MemoryResultStore(), 10, null, 0, null, control);
  const calls: Record<string, () => Promise<unknown>> = {
    ping: () => control.ping({ timeout: 300 }),
    'inspect.active': () => control.inspect({ timeout: 300 }).active(),
    'inspect.registered.destination': () => control.inspect({ destination: nowhere, timeout: 300 }).registered(),
    'inspect.query_task': () => control.inspect({ destination: nowhere, timeout: 300 }).queryTask(taskId),
    'inspect.conf': () => control.inspect({ destination: nowhere, timeout: 300 }).conf(),
    revoke: () => control.revoke(taskId),
    'revoke.terminate.list': () => control.revoke(taskIds, { terminate: true, signal: 'SIGKILL', destination: nowhere }),
    'revoke.reply': () => control.revoke(taskId, { reply: true, timeout: 300, destination: nowhere }),
    'asyncresult.revoke': () => result.revoke(),
    'asyncresult.revoke.terminate.wait': () => result.revoke({ terminate: true, wait: true, timeout: 300 }),
    rate_limit: () => control.rateLimit('tasks.add', '10/m', { destination: nowhere }),
    time_limit: () => control.timeLimit('tasks.add', { soft: 10, hard: 20.5 }, { destination: nowhere }),
    add_consumer: () => control.addConsumer('extra', { destination: nowhere, reply: true, timeout: 300 }),
    cancel_consumer: () => control.cancelConsumer('extra', { destination: nowhere }),
    enable_events: () => control.enableEvents({ destination: nowhere }),
    heartbeat: () => control.heartbeat({ destination: nowhere }),
    shutdown: () => control.shutdown({ destination: nowhere }),
    'inspect.hello': () => control.inspect({ destination: nowhere, timeout: 300 }).hello(`capture-${fx.run}@starting`, [taskId]),
  };
  const call = calls[captured.call];
  if (!call) throw new Error(`no replay for fixture call ${captured.call}`);
  await call();
  expect(transport.sent).toHaveLength(1);
  return transport.sent[0];
}

describe.each(['5.7', '5.2'])('remote-control requests match Celery %s byte for byte', (version) => {
  const fx = load(version);

  it('the fixture holds every call', () => {
    expect(fx.requests.map((r) => r.call)).toHaveLength(18);
  });

  it.each(fx.requests.map((r) => [r.call, r] as const))('%s', async (_name, captured) => {
    const ours = await replay(fx, captured);
    expect(ours.exchange).toBe(captured.exchange);
    expect(ours.routingKey).toBe(captured.routingKey);
    expect({
      content_type: ours.properties.contentType,
      content_encoding: ours.properties.contentEncoding,
      delivery_mode: ours.properties.deliveryMode,
      priority: ours.properties.priority,
    }).toEqual(captured.properties);
    expect(ours.headers).toEqual(captured.headers);
    expect(Object.keys(ours.headers)).toEqual(Object.keys(captured.headers));
    // py-amqp reads `I`/`l` as int and `d` as float: the same types as Python wrote
    const types = Object.fromEntries(Object.entries(ours.amqpHeaders).map(([k, v]) => [k, (v as { '!': string })['!'] === 'double' ? 'float' : 'int']));
    expect(types).toEqual(captured.headerTypes);
    expect(ours.body.toString('utf8')).toBe(captured.body);
  });

  it('declares its reply queue as kombu does (5.7: exclusive; 5.2.6 was not, either works for a private queue)', () => {
    const q = controlRequesterTopology(fx.oid).find((s) => s.kind === 'queue.declare');
    expect(q).toMatchObject({ queue: fx.replyQueue.name, durable: fx.replyQueue.durable, autoDelete: fx.replyQueue.auto_delete });
    expect(q && 'arguments' in q ? q.arguments : null).toEqual(Object.fromEntries(fx.replyQueue.arguments.map(([k, , v]) => [k, v])));
    if (version === '5.7') expect(q).toMatchObject({ exclusive: fx.replyQueue.exclusive });
  });
});

describe('CeleryControl replies', () => {
  function control(answer: (body: Record<string, unknown>) => RawControlReply[] | null) {
    let transport!: RecordingTransport;
    const c = new CeleryControl(null, {
      transport: (onReply) => {
        transport = new RecordingTransport('oid-1', (r) => onReply(r), null);
        transport.publish = async (request) => {
          transport.sent.push(request);
          const body = JSON.parse(request.body.toString('utf8'));
          for (const r of answer(body) ?? []) setImmediate(() => onReply(r));
        };
        return transport;
      },
    });
    return { c, sent: () => transport.sent };
  }

  it('collects replies by node name and types them; replies to other tickets are not mixed in', async () => {
    const { c } = control((b) => [
      pythonReply(b.ticket as string, 'celery@py', { ok: 'pong' }),
      pythonReply('someone-else', 'celery@other', { ok: 'pong' }),
      pythonReply(b.ticket as string, 'celery@node', { ok: 'pong' }),
    ]);
    expect(await c.ping({ timeout: 100 })).toEqual({ 'celery@py': { ok: 'pong' }, 'celery@node': { ok: 'pong' } });
  });

  it('no reply before the timeout: an empty result, after about the timeout', async () => {
    const { c } = control(() => null);
    const t0 = Date.now();
    expect(await c.inspect({ timeout: 150 }).active()).toEqual({});
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140);
  });

  it('stops at the limit (by default the number of destinations) without waiting out the timeout', async () => {
    const { c } = control((b) => [pythonReply(b.ticket as string, 'celery@a', ['tasks.add'])]);
    const t0 = Date.now();
    expect(await c.inspect({ destination: ['celery@a'], timeout: 5000 }).registered()).toEqual({ 'celery@a': ['tasks.add'] });
    expect(Date.now() - t0).toBeLessThan(1000);
  });

  it('adjusts its Lamport clock by the replies and forwards it for each request', async () => {
    const { c, sent } = control((b) => [pythonReply(b.ticket as string, 'celery@a', { ok: 'pong' }, 500)]);
    await c.ping({ destination: ['celery@a'] });
    expect(sent()[0].headers.clock).toBe(1);
    expect(c.clock.value).toBe(501);
    await c.revoke('t1');
    expect(sent()[1].headers.clock).toBe(502);
  });

  it('a malformed reply is skipped, the good ones kept', async () => {
    const { c } = control((b) => [
      { headers: { ticket: b.ticket }, contentType: 'application/json', body: Buffer.from('[1, 2]') },
      { headers: { ticket: b.ticket }, contentType: 'application/json', body: Buffer.from('{not json') },
      pythonReply(b.ticket as string, 'celery@a', { ok: 'pong' }),
    ]);
    expect(await c.ping({ timeout: 100 })).toEqual({ 'celery@a': { ok: 'pong' } });
  });

  it('a reply whose expires has passed is dropped, as kombu does', async () => {
    const { c } = control((b) => [{ headers: { ticket: b.ticket, expires: 1000 }, contentType: 'application/json', body: Buffer.from('{"celery@a": {"ok": "pong"}}') }]);
    expect(await c.ping({ timeout: 100 })).toEqual({});
  });

  it('bad input is refused with an error naming it, before anything is sent', async () => {
    const { c, sent } = control(() => null);
    await expect(c.ping({ destination: 'celery@a' as unknown as string[] })).rejects.toThrow(/destination must be a list of node names/);
    await expect(c.inspect({ destination: 'celery@a' as unknown as string[] }).stats()).rejects.toThrow(InvalidControlRequestError);
    await expect(c.revoke('')).rejects.toThrow(InvalidControlRequestError);
    await expect(c.revoke([])).rejects.toThrow(/no task id given/);
    await expect(c.rateLimit('tasks.add', -1)).rejects.toThrow(/rateLimit of tasks.add must be/);
    await expect(c.timeLimit('', { soft: 1 })).rejects.toThrow(/timeLimit needs a task name/);
    await expect(c.broadcast('', {})).rejects.toThrow(/control command must be a non-empty string/);
    await expect(c.ping({ timeout: -1 })).rejects.toThrow(/timeout must be a finite number of milliseconds/);
    await expect(c.ping({ limit: 0 })).rejects.toThrow(/limit must be a positive integer/);
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    await expect(c.broadcast('x', { arguments: circular })).rejects.toThrow(/arguments of control command 'x' cannot be sent as JSON/);
    expect(sent()).toHaveLength(0);
  });

  it('on the in-memory broker every call rejects naming why', async () => {
    const c = new CeleryControl(new MemoryBroker());
    await expect(c.ping()).rejects.toThrow(/CeleryControl needs RabbitMQ .* in-memory broker/);
    await expect(c.revoke('t1')).rejects.toThrow(/CeleryControl needs RabbitMQ/);
  });

  it('AsyncResult.revoke without a CeleryControl says so', async () => {
    await expect(new AsyncResult('t1', new MemoryResultStore()).revoke()).rejects.toThrow(/made without a CeleryControl/);
  });
});

describe('control-message helpers', () => {
  it('flattenReplies keeps the last reply of a node and names duplicates', () => {
    expect(flattenReplies([{ a: 1 }, { b: 2 }, { a: 3 }])).toEqual({ byNode: { a: 3, b: 2 }, duplicates: ['a'] });
  });

  it('decodeControlReply refuses a non-JSON content type', () => {
    expect(() => decodeControlReply({ contentType: 'application/x-python-serialize', body: Buffer.from('x') })).toThrow(/only application\/json/);
  });

  it('expires is the integer 0 without a timeout and a double with one', () => {
    const enc = (t: number) => encodeControlRequest({ method: 'ping', clock: 1, nowSeconds: 100, timeoutSeconds: t }).amqpHeaders.expires;
    expect(enc(0)).toEqual({ '!': 'int', value: 0 });
    expect(enc(1)).toEqual({ '!': 'double', value: 101 });
  });
});
