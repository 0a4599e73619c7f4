import { Injectable } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Broker, CeleryModule, CeleryWorker, Producer, ResultStore, Task, TaskContext, TaskRegistry, type CeleryModuleOptions } from '../../../lib';
import { fromAmqpFieldValue, toAmqpFieldTable } from '../../../lib/protocol/amqp-field-table';
import type { MessageProperties } from '../../../lib/protocol/task-message';

let release: (() => void) | null = null;
const runs: string[] = [];

@Injectable()
class ControlTasks {
  @Task('rc.slow')
  async slow(tag: string, @TaskContext() ctx: TaskContext): Promise<string> {
    runs.push(tag);
    // ignores its signal on purpose: terminate must end the run anyway
    void ctx;
    await new Promise<void>((resolve) => (release = resolve));
    return tag;
  }

  @Task('rc.add', { rateLimit: '100/s' })
  add(x: number, y: number): number {
    runs.push(`add ${x} ${y}`);
    return x + y;
  }
}

const NODE = 'nest@unit';

interface Reply {
  body: Record<string, unknown>;
  headers: Record<string, unknown>;
}

/** Publishes a control request as Python's app.control does, and collects the replies for `waitMs`. */
async function control(
  broker: Broker,
  method: string,
  args: Record<string, unknown> = {},
  opts: { destination?: string[] | null; pattern?: string; matcher?: string; expires?: number; cast?: boolean; raw?: Buffer; waitMs?: number } = {},
): Promise<Reply[]> {
  const oid = randomUUID();
  const replyQueue = `${oid}.reply.celery.pidbox`;
  const replies: Reply[] = [];
  await broker.declareTopology([
    { kind: 'exchange.declare', exchange: 'reply.celery.pidbox', type: 'direct', durable: false, autoDelete: false },
    { kind: 'queue.declare', queue: replyQueue, durable: false, exclusive: true, autoDelete: true, arguments: {} },
    { kind: 'queue.bind', queue: replyQueue, exchange: 'reply.celery.pidbox', routingKey: oid },
  ]);
  const handle = await broker.consume(replyQueue, 1, (d) => replies.push({ body: JSON.parse(d.body.toString()) as Record<string, unknown>, headers: d.headers ?? {} }), { noAck: true });
  const ticket = randomUUID();
  const body = opts.raw ?? Buffer.from(JSON.stringify({
    method,
    arguments: args,
    destination: opts.destination === undefined ? [NODE] : opts.destination,
    pattern: opts.pattern ?? null,
    matcher: opts.matcher ?? null,
    ...(opts.cast ? {} : { ticket, reply_to: { exchange: 'reply.celery.pidbox', routing_key: oid } }),
  }));
  const properties = { contentType: 'application/json', contentEncoding: 'utf-8', deliveryMode: 2 } as MessageProperties;
  await broker.publish('', { headers: toAmqpFieldTable({ clock: 1, expires: opts.expires ?? Date.now() / 1000 + 1 }), properties, body }, { exchange: 'celery.pidbox', routingKey: '' });
  await sleep(opts.waitMs ?? 60);
  await handle.cancel();
  for (const r of replies) r.headers = fromAmqpFieldValue(r.headers as never) as Record<string, unknown>;
  if (!opts.cast) for (const r of replies) expect(r.headers.ticket).toBe(ticket);
  return replies;
}

/** The one reply of this node. */
async function ask(broker: Broker, method: string, args: Record<string, unknown> = {}): Promise<unknown> {
  const replies = await control(broker, method, args);
  expect(replies).toHaveLength(1);
  return replies[0].body[NODE];
}

describe('remote control: a NestJS worker answers the pidbox broadcast (memory broker)', () => {
  let app: TestingModule;
  let broker: Broker;
  let producer: Producer;
  let store: ResultStore;
  let worker: CeleryWorker;

  async function start(extra: CeleryModuleOptions = {}): Promise<void> {
    runs.length = 0;
    release = null;
    app = await Test.createTestingModule({
      imports: [CeleryModule.forRoot({ resultPollIntervalMs: 5, ...extra, worker: { hostname: NODE, concurrency: 1, shutdownTimeoutMs: 300, ...extra.worker } })],
      providers: [ControlTasks],
    }).compile();
    await app.init();
    broker = app.get(Broker);
    producer = app.get(Producer);
    store = app.get(ResultStore);
    worker = app.get(CeleryWorker);
  }

  afterEach(async () => {
    release?.();
    await app?.close();
  });

  it('ping: {node: {ok: pong}} with the ticket; other destinations and patterns as kombu', async () => {
    await start();
    expect(await ask(broker, 'ping')).toEqual({ ok: 'pong' });
    expect(await control(broker, 'ping', {}, { destination: ['celery@elsewhere'] })).toEqual([]);
    expect((await control(broker, 'ping', {}, { destination: null, pattern: 'nest@*', matcher: 'glob' })).map((r) => r.body)).toEqual([{ [NODE]: { ok: 'pong' } }]);
    expect(await control(broker, 'ping', {}, { destination: null, pattern: 'celery@.*', matcher: 'pcre' })).toEqual([]);
  });

  it('unknown commands get kombu\'s error; malformed messages are dropped and the worker goes on', async () => {
    await start();
    expect(await ask(broker, 'no_such_command')).toEqual({ error: "KeyError('no_such_command')" });
    expect(await control(broker, 'ping', {}, { raw: Buffer.from('{not json') })).toEqual([]);
    expect(await control(broker, 'ping', {}, { raw: Buffer.from('[1, 2]') })).toEqual([]);
    expect(await control(broker, 'ping', {}, { raw: Buffer.from('{"method": 42}') })).toEqual([]);
    expect(await control(broker, 'ping', {}, { destination: null, pattern: 'x', matcher: 'nosuch' })).toEqual([]);
    // a handler that throws answers with the error's repr, as kombu's dispatch does
    expect(await ask(broker, 'revoke', { task_id: [1, 2] })).toEqual({ error: expect.stringMatching(/^TypeError\('task_id must be a task id or a list of them/) });
    expect(await ask(broker, 'ping')).toEqual({ ok: 'pong' });
  });

  it('drops an inspect request that expired before it arrived (its reply would not be collected)', async () => {
    await start();
    expect(await control(broker, 'ping', {}, { expires: Date.now() / 1000 - 5 })).toEqual([]);
  });

  it('inspect active, reserved, scheduled, query_task, registered, stats, active_queues', async () => {
    await start();
    const running = await producer.sendTask('rc.slow', { args: ['one'], taskId: 'rc-running' });
    await producer.sendTask('rc.slow', { args: ['two'], taskId: 'rc-reserved' });
    await producer.sendTask('rc.add', { args: [2, 3], taskId: 'rc-scheduled', countdown: 600 });
    await sleep(80);
    const active = (await ask(broker, 'active')) as Record<string, unknown>[];
    expect(active).toEqual([
      expect.objectContaining({ id: running.id, name: 'rc.slow', type: 'rc.slow', args: ['one'], kwargs: {}, hostname: NODE, acknowledged: false, worker_pid: process.pid, time_start: expect.any(Number) }),
    ]);
    expect(Object.keys(active[0].delivery_info as object).sort()).toEqual(['exchange', 'priority', 'redelivered', 'routing_key']);
    expect(((await ask(broker, 'active', { safe: true })) as Record<string, unknown>[])[0]).toMatchObject({ args: "['one']", kwargs: '{}' });
    expect(await ask(broker, 'reserved')).toEqual([expect.objectContaining({ id: 'rc-reserved', time_start: null, worker_pid: null })]);
    const scheduled = (await ask(broker, 'scheduled')) as { eta: string; priority: number; request: { id: string } }[];
    expect(scheduled).toEqual([{ eta: expect.stringMatching(/\+00:00$/), priority: 6, request: expect.objectContaining({ id: 'rc-scheduled', args: [2, 3] }) }]);
    expect(Math.abs(Date.parse(scheduled[0].eta) - (Date.now() + 600_000))).toBeLessThan(5000);
    expect(await ask(broker, 'query_task', { ids: ['rc-running', 'rc-reserved', 'nope'] })).toEqual({
      'rc-running': ['active', expect.objectContaining({ id: 'rc-running' })],
      'rc-reserved': ['reserved', expect.objectContaining({ id: 'rc-reserved' })],
    });
    expect(await ask(broker, 'registered')).toEqual(['rc.add [rate_limit=100/s]', 'rc.slow']);
    expect(await ask(broker, 'registered', { builtins: true })).toEqual(['celery.chord_unlock', 'rc.add [rate_limit=100/s]', 'rc.slow']);
    const stats = (await ask(broker, 'stats')) as Record<string, unknown>;
    expect(stats).toMatchObject({ pid: process.pid, total: { 'rc.slow': 1 }, pool: { 'max-concurrency': 1 }, prefetch_count: expect.any(Number), clock: expect.any(String), uptime: expect.any(Number) });
    expect(Object.keys(stats).sort()).toEqual(['broker', 'clock', 'pid', 'pool', 'prefetch_count', 'rusage', 'total', 'uptime']);
    const queues = (await ask(broker, 'active_queues')) as { name: string }[];
    expect(queues.map((q) => q.name)).toEqual(['celery']);
  });

  it('revoke (a cast, as Python sends it): a queued task is not run, REVOKED is stored, the id is listed', async () => {
    await start();
    await producer.sendTask('rc.slow', { args: ['blocker'], taskId: 'rc-blocker' });
    await sleep(30);
    await control(broker, 'revoke', { task_id: 'rc-later', terminate: false, signal: 'SIGTERM' }, { destination: null, cast: true });
    expect(await ask(broker, 'revoke', { task_id: ['rc-later2'] })).toEqual({ ok: "tasks {'rc-later2'} flagged as revoked" });
    expect(await ask(broker, 'revoked')).toEqual(['rc-later', 'rc-later2']);
    // stored at once by the worker that got the broadcast (Celery 5.6.2+)
    expect((await store.getTaskMeta('rc-later')).status).toBe('REVOKED');
    // delivered after the revoke: not run
    const later = await producer.sendTask('rc.add', { args: [1, 1], taskId: 'rc-later' });
    release?.();
    await sleep(50);
    const meta = await later.info();
    expect(meta.status).toBe('REVOKED');
    expect(meta.result).toMatchObject({ exc_type: 'TaskRevokedError', exc_message: ['revoked'] });
    expect(runs).toEqual(['blocker']);
  });

  it('revoke with terminate ends a running task (even one ignoring its signal) as REVOKED terminated', async () => {
    await start();
    const running = await producer.sendTask('rc.slow', { args: ['doomed'], taskId: 'rc-doomed' });
    await sleep(30);
    expect(await ask(broker, 'revoke', { task_id: 'rc-doomed', terminate: true, signal: 'SIGTERM' })).toEqual({ ok: 'terminate: rc-doomed' });
    await sleep(30);
    const meta = await running.info();
    expect(meta.status).toBe('REVOKED');
    expect(meta.result).toMatchObject({ exc_type: 'TaskRevokedError', exc_message: ['terminated'] });
    // its slot is free: the next task runs
    const next = await producer.sendTask('rc.add', { args: [1, 2] });
    expect(await next.get({ timeout: 2000 })).toBe(3);
  });

  it('rate_limit, time_limit, add_consumer / cancel_consumer, enable_events / disable_events, heartbeat', async () => {
    await start();
    expect(await ask(broker, 'rate_limit', { task_name: 'rc.add', rate_limit: '5/m' })).toEqual({ ok: 'new rate limit set successfully' });
    expect(worker.rateLimiter.limitsOf('rc.add')?.local).toBeCloseTo(5 / 60);
    expect(await ask(broker, 'registered')).toEqual(['rc.add [rate_limit=5/m]', 'rc.slow']);
    expect(await ask(broker, 'rate_limit', { task_name: 'rc.add', rate_limit: null })).toEqual({ ok: 'rate limit disabled successfully' });
    expect(await ask(broker, 'rate_limit', { task_name: 'nope', rate_limit: '1/s' })).toEqual({ error: 'unknown task' });
    expect(await ask(broker, 'rate_limit', { task_name: 'rc.add', rate_limit: '5/fortnight' })).toEqual({ error: expect.stringMatching(/^Invalid rate limit string/) });
    expect(await ask(broker, 'time_limit', { task_name: 'rc.slow', soft: 30, hard: 60 })).toEqual({ ok: 'time limits set successfully' });
    expect(app.get(TaskRegistry).get('rc.slow')?.options).toMatchObject({ softTimeLimit: 30, timeLimit: 60 });
    expect(await ask(broker, 'time_limit', { task_name: 'nope', soft: 1 })).toEqual({ error: 'unknown task' });
    expect(await ask(broker, 'add_consumer', { queue: 'rc.extra' })).toEqual({ ok: 'add consumer rc.extra' });
    await sleep(20);
    expect(((await ask(broker, 'active_queues')) as { name: string }[]).map((q) => q.name)).toEqual(['celery', 'rc.extra']);
    const viaExtra = await producer.sendTask('rc.add', { args: [4, 4], queue: 'rc.extra' });
    expect(await viaExtra.get({ timeout: 2000 })).toBe(8);
    expect(await ask(broker, 'cancel_consumer', { queue: 'rc.extra' })).toEqual({ ok: 'no longer consuming from rc.extra' });
    await sleep(20);
    expect(((await ask(broker, 'active_queues')) as { name: string }[]).map((q) => q.name)).toEqual(['celery']);
    // the module's WorkerEvents is the events side: enable_events switches its task events
    expect(await ask(broker, 'enable_events')).toEqual({ ok: 'task events enabled' });
    expect(worker.remoteControl && (await ask(broker, 'disable_events'))).toEqual({ ok: 'task events disabled' });
    worker.remoteControl?.useEvents(null);
    expect(await ask(broker, 'enable_events')).toEqual({ error: 'event dispatcher unavailable' });
    const switched: string[] = [];
    let enabled = false;
    worker.remoteControl?.useEvents({
      enableTaskEvents: () => ((enabled = true), switched.push('on')),
      disableTaskEvents: () => ((enabled = false), switched.push('off')),
      get taskEventsEnabled() {
        return enabled;
      },
      sendHeartbeatNow: () => switched.push('heartbeat'),
    });
    expect(await ask(broker, 'enable_events')).toEqual({ ok: 'task events enabled' });
    expect(await ask(broker, 'enable_events')).toEqual({ ok: 'task events already enabled' });
    expect(await ask(broker, 'disable_events')).toEqual({ ok: 'task events disabled' });
    expect(await ask(broker, 'disable_events')).toEqual({ ok: 'task events already disabled' });
    expect(await ask(broker, 'heartbeat')).toBeNull();
    expect(switched).toEqual(['on', 'off', 'heartbeat']);
  });

  it('refuses the commands named in worker.remoteControl.refuse, with a clear error', async () => {
    await start({ worker: { remoteControl: { refuse: 'reshaping' } } });
    for (const [method, args] of [['shutdown', {}], ['rate_limit', { task_name: 'rc.add', rate_limit: '1/s' }], ['add_consumer', { queue: 'x' }], ['cancel_consumer', { queue: 'celery' }], ['time_limit', { task_name: 'rc.add', soft: 1 }]] as const) {
      expect(await ask(broker, method, args)).toEqual({ error: `command ${method} refused by this worker's configuration (worker.remoteControl.refuse)` });
    }
    expect(worker.rateLimiter.limitsOf('rc.add')?.local).toBe(100);
    expect(await ask(broker, 'ping')).toEqual({ ok: 'pong' });
  });

  it('shutdown: no reply (as Celery), the worker stops, then the process is asked to exit', async () => {
    await start();
    let exited = false;
    worker.exitAfterRemoteShutdown = () => void (exited = true);
    expect(await control(broker, 'shutdown')).toEqual([]);
    await sleep(50);
    expect(exited).toBe(true);
  });

  it('hello (Celery\'s mingle): takes the revoked ids sent, answers ours as LimitedSet data with the clock; not its own hello', async () => {
    await start();
    await ask(broker, 'revoke', { task_id: 'ours-1' });
    const reply = (await ask(broker, 'hello', { from_node: 'celery@py', revoked: { 'theirs-1': [12.5, 'theirs-1'] } })) as { revoked: Record<string, [number, string]>; clock: number };
    expect(Object.keys(reply.revoked)).toEqual(['ours-1', 'theirs-1']);
    expect(reply.revoked['ours-1']).toEqual([expect.any(Number), 'ours-1']);
    expect(Number.isInteger(reply.revoked['ours-1'][0])).toBe(false); // Python's LimitedSet.update wants a float
    expect(reply.clock).toEqual(expect.any(Number));
    expect(await ask(broker, 'revoked')).toEqual(['ours-1', 'theirs-1']);
    expect(await ask(broker, 'hello', { from_node: NODE, revoked: {} })).toBeNull();
  });

  it('worker.enableRemoteControl false: no pidbox queue, no answer', async () => {
    await start({ worker: { enableRemoteControl: false } });
    expect(worker.remoteControl).toBeNull();
    expect(await control(broker, 'ping')).toEqual([]);
  });
});
