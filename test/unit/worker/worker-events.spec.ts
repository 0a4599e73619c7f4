import { Test, TestingModule } from '@nestjs/testing';
import { Broker, CeleryModule, CeleryModuleOptions, Producer, WorkerEvents } from '../../../lib';
import { EventTasks } from '../../support/event-tasks';
import type { EventMessage } from '../../../lib/broker/broker.interface';
import { normalizeCeleryOptions } from '../../../lib/config/normalize-options';
import { CeleryConfigError } from '../../../lib/errors/celery.errors';


type Body = Record<string, unknown>;

/** A module on the memory transports whose broker records the events published to it. */
async function moduleWith(options: CeleryModuleOptions = {}): Promise<{ moduleRef: TestingModule; events: () => { routingKey: string; headers: Record<string, string>; bodies: Body[] }[] }> {
  const moduleRef = await Test.createTestingModule({
    imports: [CeleryModule.forRoot({ resultPollIntervalMs: 5, ...options, worker: { hostname: 'unit@events', ...options.worker } })],
    providers: [EventTasks],
  }).compile();
  const sent: EventMessage[] = [];
  jest.spyOn(moduleRef.get(Broker), 'publishEvent').mockImplementation((event: EventMessage) => (sent.push(event), true));
  await moduleRef.init();
  const events = () =>
    sent.map((m) => {
      const body = JSON.parse(m.body.toString('utf8')) as Body | Body[];
      return { routingKey: m.routingKey, headers: m.headers, bodies: Array.isArray(body) ? body : [body] };
    });
  return { moduleRef, events };
}

const types = (events: { bodies: Body[] }[]) => events.flatMap((e) => e.bodies.map((b) => b.type));
const taskEvents = (events: { bodies: Body[] }[], id: string) => events.flatMap((e) => e.bodies).filter((b) => b.uuid === id);

describe('worker events (memory transports, the broker spied on)', () => {
  let moduleRef: TestingModule | null = null;
  afterEach(async () => {
    await moduleRef?.close();
    moduleRef = null;
  });

  it('worker-online at start and worker-offline at close, named by worker.hostname, software nestjs-celery', async () => {
    const m = await moduleWith();
    moduleRef = m.moduleRef;
    const online = m.events()[0];
    expect(online.routingKey).toBe('worker.online');
    expect(online.headers).toEqual({ hostname: 'unit@events' });
    expect(online.bodies[0]).toMatchObject({ type: 'worker-online', hostname: 'unit@events', freq: 2, active: 0, processed: 0, sw_ident: 'nestjs-celery', sw_ver: '0.1.0' });
    expect(online.bodies[0].loadavg).toHaveLength(3);
    await m.moduleRef.close();
    moduleRef = null;
    expect(m.events().at(-1)?.routingKey).toBe('worker.offline');
  });

  it('no task events unless worker.sendTaskEvents; tasks still run', async () => {
    const m = await moduleWith();
    moduleRef = m.moduleRef;
    const result = await m.moduleRef.get(Producer).sendTask('ev.add', { args: [2, 3] });
    await expect(result.get({ timeout: 5000 })).resolves.toBe(5);
    await new Promise((resolve) => setImmediate(resolve));
    expect(types(m.events()).filter((t) => String(t).startsWith('task-'))).toEqual([]);
  });

  it('with sendTaskEvents: received, started, succeeded (result repr, runtime) in order as task.multi, clocks increasing', async () => {
    const m = await moduleWith({ worker: { sendTaskEvents: true } });
    moduleRef = m.moduleRef;
    const result = await m.moduleRef.get(Producer).sendTask('ev.add', { args: [2, 3] });
    await result.get({ timeout: 5000 });
    await new Promise((resolve) => setTimeout(resolve, 20));
    const mine = taskEvents(m.events(), result.id);
    expect(mine.map((e) => e.type)).toEqual(['task-received', 'task-started', 'task-succeeded']);
    expect(mine[0]).toMatchObject({ name: 'ev.add', args: '[2, 3]', kwargs: '{}', root_id: result.id, parent_id: null, retries: 0, eta: null, expires: null });
    expect(mine[2]).toMatchObject({ result: '5', hostname: 'unit@events' });
    expect(typeof mine[2].runtime).toBe('number');
    const clocks = mine.map((e) => e.clock as number);
    expect(clocks).toEqual([...clocks].sort((a, b) => a - b));
    expect(m.events().filter((e) => e.bodies.some((b) => b.uuid === result.id)).every((e) => e.routingKey === 'task.multi')).toBe(true);
  });

  it('task-failed with the exception repr, task-retried then task-succeeded, task-failed NotRegistered for an unknown task', async () => {
    const m = await moduleWith({ worker: { sendTaskEvents: true } });
    moduleRef = m.moduleRef;
    const producer = m.moduleRef.get(Producer);
    const failed = await producer.sendTask('ev.fail');
    await expect(failed.get({ timeout: 5000 })).rejects.toThrow();
    const retried = await producer.sendTask('ev.retry_once');
    await expect(retried.get({ timeout: 5000 })).resolves.toBe('retried');
    const unknown = await producer.sendTask('ev.nope');
    await expect(unknown.get({ timeout: 5000 })).rejects.toThrow();
    await new Promise((resolve) => setTimeout(resolve, 20));
    const f = taskEvents(m.events(), failed.id);
    expect(f.map((e) => e.type)).toEqual(['task-received', 'task-started', 'task-failed']);
    expect(f[2].exception).toBe("ValueError('boom')");
    expect(f[2].traceback).toMatch(/Error: boom/);
    const r = taskEvents(m.events(), retried.id);
    expect(r.map((e) => e.type)).toEqual(['task-received', 'task-started', 'task-retried', 'task-received', 'task-started', 'task-succeeded']);
    expect(r[2].exception).toBe("RuntimeError('again')");
    expect(r[3].retries).toBe(1);
    expect(taskEvents(m.events(), unknown.id)).toEqual([expect.objectContaining({ type: 'task-failed', exception: "NotRegistered('ev.nope')" })]);
  });

  it('an expired task: task-revoked (expired), no task-received', async () => {
    const m = await moduleWith({ worker: { sendTaskEvents: true } });
    moduleRef = m.moduleRef;
    const expired = await m.moduleRef.get(Producer).sendTask('ev.add', { args: [1, 1], expires: new Date(Date.now() - 1000) });
    await expect(expired.get({ timeout: 5000 })).rejects.toThrow();
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(taskEvents(m.events(), expired.id)).toEqual([expect.objectContaining({ type: 'task-revoked', terminated: false, signum: null, expired: true })]);
  });

  it('enableTaskEvents / disableTaskEvents switch task events at run time (remote control)', async () => {
    const m = await moduleWith();
    moduleRef = m.moduleRef;
    const switcher = m.moduleRef.get(WorkerEvents);
    const producer = m.moduleRef.get(Producer);
    expect(switcher.taskEventsEnabled).toBe(false);
    expect(switcher.enableTaskEvents()).toBe(true);
    expect(switcher.enableTaskEvents()).toBe(false);
    const on = await producer.sendTask('ev.add', { args: [1, 2] });
    await on.get({ timeout: 5000 });
    await new Promise((resolve) => setTimeout(resolve, 20)); // the result is stored (and get() resolves) just before the event
    expect(switcher.disableTaskEvents()).toBe(true);
    const off = await producer.sendTask('ev.add', { args: [1, 3] });
    await off.get({ timeout: 5000 });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(taskEvents(m.events(), on.id).map((e) => e.type)).toEqual(['task-received', 'task-started', 'task-succeeded']);
    expect(taskEvents(m.events(), off.id)).toEqual([]);
  });

  it('the heartbeat counts processed and active tasks; a remote heartbeat request sends one with freq 5', async () => {
    const m = await moduleWith();
    moduleRef = m.moduleRef;
    const producer = m.moduleRef.get(Producer);
    await (await producer.sendTask('ev.add', { args: [1, 2] })).get({ timeout: 5000 });
    m.moduleRef.get(WorkerEvents).sendHeartbeatNow();
    const beat = m.events().at(-1)?.bodies[0];
    expect(beat).toMatchObject({ type: 'worker-heartbeat', freq: 5, processed: 1, active: 0 });
  });

  it('withoutHeartbeat: no worker events; task events still go', async () => {
    const m = await moduleWith({ worker: { withoutHeartbeat: true, sendTaskEvents: true } });
    moduleRef = m.moduleRef;
    const r = await m.moduleRef.get(Producer).sendTask('ev.add', { args: [1, 2] });
    await r.get({ timeout: 5000 });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(types(m.events()).filter((t) => String(t).startsWith('worker-'))).toEqual([]);
    expect(taskEvents(m.events(), r.id)).toHaveLength(3);
  });

  it('taskSendSentEvent: the Producer sends task-sent (named gen<pid>@host) with where it went', async () => {
    const m = await moduleWith({ taskSendSentEvent: true, worker: { enabled: false } });
    moduleRef = m.moduleRef;
    const r = await m.moduleRef.get(Producer).sendTask('ev.add', { args: [2, 3], queue: 'q1' });
    const sent = m.events().find((e) => e.routingKey === 'task.sent');
    expect(sent?.bodies[0]).toMatchObject({
      type: 'task-sent',
      uuid: r.id,
      name: 'ev.add',
      args: '[2, 3]',
      kwargs: '{}',
      root_id: r.id,
      parent_id: null,
      retries: 0,
      eta: null,
      expires: null,
      queue: 'q1',
      exchange: '',
      routing_key: 'q1',
    });
    expect(String(sent?.bodies[0].hostname)).toMatch(/^gen\d+@/);
  });
});

describe('event options', () => {
  it('worker.sendTaskEvents / worker_send_task_events, taskSendSentEvent / task_send_sent_event, worker.withoutHeartbeat', () => {
    expect(normalizeCeleryOptions({}).events).toEqual({ sendTaskEvents: false, withoutHeartbeat: false, taskSendSentEvent: false });
    expect(normalizeCeleryOptions({ worker: { sendTaskEvents: true, withoutHeartbeat: true }, taskSendSentEvent: true }).events).toEqual({
      sendTaskEvents: true,
      withoutHeartbeat: true,
      taskSendSentEvent: true,
    });
    expect(normalizeCeleryOptions({ worker_send_task_events: true, task_send_sent_event: true }).events).toMatchObject({ sendTaskEvents: true, taskSendSentEvent: true });
    expect(() => normalizeCeleryOptions({ worker: { sendTaskEvents: 'yes' as unknown as boolean } })).toThrow(CeleryConfigError);
    expect(() => normalizeCeleryOptions({ worker_send_task_events: 1 as unknown as boolean })).toThrow(/worker_send_task_events/);
  });
});
