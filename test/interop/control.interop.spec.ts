import { Test, TestingModule } from '@nestjs/testing';
import { CeleryControl, CeleryModule, Producer, TaskFailedError } from '../../lib';
import { eventually, uniqueName } from '../support/real-services';
import { LimitedSet } from '../../lib/worker/control/limited-set';
import { mingle } from '../../lib/worker/mingle';
import { ensurePythonCelery, ensurePythonCelery52, interopCeleryconfig, PythonEnv, PythonWorker, stopInterop, VENV, VENV_52 } from './support/python-celery';

/**
 * CeleryControl from NestJS against real Python Celery workers (prefork pool, so `terminate`
 * reaches the child process): ping and inspect replies parsed and typed, revoke(terminate) stops a
 * running task, and a revoked task is never run — REVOKED read back from Cassandra by our AsyncResult.
 */
describe.each([
  ['5.7', VENV, ensurePythonCelery],
  ['5.2.6', VENV_52, ensurePythonCelery52],
])('CeleryControl with a Python Celery %s worker', (label, venv, ensure) => {
  const env: PythonEnv = { pyQueue: uniqueName('py_ctl'), table: uniqueName('interop_ctl'), venv };
  const nestQueue = uniqueName('js_ctl');
  const node = `py-interop-${env.pyQueue}@localhost`;
  let worker: PythonWorker | undefined;
  let app: TestingModule | undefined;
  let control: CeleryControl;
  let producer: Producer;

  beforeAll(async () => {
    const version = ensure();
    expect(version.startsWith(label === '5.7' ? '5.' : '5.2.6')).toBe(true);
    app = await Test.createTestingModule({
      imports: [CeleryModule.forRoot({ ...interopCeleryconfig(env.table, nestQueue), resultPollIntervalMs: 50, worker: { hostname: `nestjs-ctl-${label}@localhost` } })],
    }).compile();
    await app.init(); // creates the result table
    control = app.get(CeleryControl);
    producer = app.get(Producer);
    worker = await PythonWorker.start(env, { pool: 'prefork', concurrency: 2 });
  }, 180000);

  afterAll(async () => {
    await stopInterop(worker, app, env, [env.pyQueue, nestQueue]);
  });

  it('ping: the Python node answers pong, by its node name', async () => {
    expect(await control.ping({ destination: [node], timeout: 3000 })).toEqual({ [node]: { ok: 'pong' } });
    const everyone = await control.ping({ timeout: 1000 });
    expect(everyone[node]).toEqual({ ok: 'pong' });
  });

  it('inspect registered, stats, active_queues, conf, report, revoked: typed replies from Python', async () => {
    const inspect = control.inspect({ destination: [node], timeout: 3000 });
    const registered = await inspect.registered();
    expect(registered[node]).toEqual(expect.arrayContaining(['tasks.add', 'tasks.sleep']));
    const stats = (await inspect.stats())[node];
    expect(stats.pid).toBe(worker?.pid);
    expect(typeof stats.clock).toBe('string');
    expect(stats.pool).toMatchObject({ 'max-concurrency': 2 });
    const queues = (await inspect.activeQueues())[node];
    expect(queues.map((q) => q.name)).toEqual([env.pyQueue]);
    expect(queues[0].exchange.name).toBe(env.pyQueue);
    const conf = (await inspect.conf())[node];
    expect(conf.task_default_queue).toBe(env.pyQueue);
    const report = (await inspect.report())[node];
    expect('ok' in report && report.ok).toMatch(/celery:/);
    expect(Array.isArray((await inspect.revoked())[node])).toBe(true);
  });

  it('active / query_task show a running task; revoke(terminate) stops it on the prefork pool, REVOKED read back from Cassandra', async () => {
    const result = await producer.sendTask('tasks.sleep', { args: [60], queue: env.pyQueue });
    const inspect = control.inspect({ destination: [node], timeout: 3000 });
    await eventually(async () => ((await inspect.active())[node] ?? []).some((t) => t.id === result.id), 30000);
    const running = ((await inspect.active())[node] ?? []).find((t) => t.id === result.id);
    expect(running).toMatchObject({ id: result.id, name: 'tasks.sleep', type: 'tasks.sleep', args: [60], kwargs: {}, acknowledged: true, hostname: node });
    expect(typeof running?.worker_pid).toBe('number');
    expect(typeof running?.time_start).toBe('number');
    expect(running?.delivery_info.routing_key).toBe(env.pyQueue);
    const queried = (await inspect.queryTask(result.id))[node];
    expect(queried[result.id][0]).toBe('active');
    expect(queried[result.id][1].id).toBe(result.id);

    const t0 = Date.now();
    const replies = await control.revoke(result.id, { terminate: true, reply: true, destination: [node], timeout: 3000 });
    expect(replies[node]).toEqual({ ok: expect.stringContaining(result.id) });
    const err = await result.get({ timeout: 20000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TaskFailedError);
    expect((err as TaskFailedError).state).toBe('REVOKED');
    // Celery 5.6.2+ stores REVOKED as soon as the command arrives: what shows the child was stopped
    // is that the 60 s task leaves `active` within seconds
    await eventually(async () => !((await inspect.active())[node] ?? []).some((t) => t.id === result.id), 15000);
    expect(Date.now() - t0).toBeLessThan(20000);
    expect(await result.state()).toBe('REVOKED');
    await eventually(async () => ((await inspect.revoked())[node] ?? []).includes(result.id), 5000);
  });

  it('a queued task revoked by AsyncResult.revoke() is never run: scheduled shows it, then REVOKED', async () => {
    const result = await producer.sendTask('tasks.add', { args: [2, 3], queue: env.pyQueue, countdown: 3 });
    const inspect = control.inspect({ destination: [node], timeout: 3000 });
    await eventually(async () => ((await inspect.scheduled())[node] ?? []).some((s) => s.request.id === result.id), 15000);
    const held = ((await inspect.scheduled())[node] ?? []).find((s) => s.request.id === result.id);
    expect(held?.eta).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(held?.request.name).toBe('tasks.add');
    await result.revoke();
    const err = await result.get({ timeout: 20000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TaskFailedError);
    expect((err as TaskFailedError).state).toBe('REVOKED');
    // Celery 5.6.2+ stores REVOKED at once; the task itself is dropped when its ETA comes, never run
    await eventually(async () => (worker?.log() ?? '').includes(`Discarding revoked task: tasks.add[${result.id}]`), 15000);
    expect(worker?.log()).not.toContain(`Task tasks.add[${result.id}] succeeded`);
    expect(await result.state()).toBe('REVOKED');
  });

  it('a task id revoked before it is sent is not run when it arrives', async () => {
    const taskId = `revoked-first-${uniqueName('t')}`;
    await control.revoke(taskId);
    // the cast is fire-and-forget: give the worker a moment to take it in, as a Python client would
    await eventually(async () => ((await control.inspect({ destination: [node] }).revoked())[node] ?? []).includes(taskId), 10000);
    const result = await producer.sendTask('tasks.add', { args: [1, 1], queue: env.pyQueue, taskId });
    const err = await result.get({ timeout: 20000 }).catch((e: unknown) => e);
    expect((err as TaskFailedError).state).toBe('REVOKED');
    await eventually(async () => (worker?.log() ?? '').includes(`Discarding revoked task: tasks.add[${taskId}]`), 15000);
    expect(worker?.log()).not.toContain(`Task tasks.add[${taskId}] succeeded`);
    expect(await result.state()).toBe('REVOKED');
  });

  it('rate_limit and time_limit reach the Python worker and it answers ok', async () => {
    expect((await control.rateLimit('tasks.add', '100/m', { reply: true, destination: [node], timeout: 3000 }))[node]).toEqual({ ok: expect.stringMatching(/rate limit/) });
    expect((await control.timeLimit('tasks.add', { soft: 30, hard: 60 }, { reply: true, destination: [node], timeout: 3000 }))[node]).toEqual({ ok: expect.stringMatching(/time limits set/) });
  });

  it('mingle: our hello brings back the Python node\'s revoked ids, and the Python node takes ours', async () => {
    const theirs = `py-side-${uniqueName('r')}`;
    await control.revoke(theirs, { destination: [node], reply: true, timeout: 3000 });
    const set = new LimitedSet();
    const ours = `nest-side-${uniqueName('r')}`;
    set.add(ours);
    const result = await mingle(control, `nestjs-mingle-${label}@localhost`, set, { timeout: 2000 });
    expect(result.nodes).toContain(node);
    expect(set.has(theirs)).toBe(true);
    expect(typeof result.clock).toBe('number');
    expect((await control.inspect({ destination: [node], timeout: 3000 }).revoked())[node]).toContain(ours);
  });
});
