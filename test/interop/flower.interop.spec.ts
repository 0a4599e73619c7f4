import { Test, TestingModule } from '@nestjs/testing';
import { CeleryModule, CeleryWorker, Producer, TaskFailedError } from '../../lib';
import { TasksService } from '../../sample/tasks.service';
import { eventually, uniqueName } from '../support/real-services';
import { FlowerProcess } from './support/flower';
import { ensurePythonCelery, PythonEnv, PythonWorker, stopInterop, walkthroughCeleryconfig } from './support/python-celery';

interface FlowerWorker {
  registered?: string[];
  active_queues?: { name: string }[];
  stats?: { pid?: number; total?: Record<string, number>; prefetch_count?: number };
  conf?: Record<string, unknown>;
}

interface FlowerTask {
  uuid: string;
  name: string;
  state: string;
  result: string | null;
  exception: string | null;
  worker: string;
  runtime: number | null;
  args: string;
}

/**
 * Flower 2 from PyPI against the test broker, with a NestJS worker (the sample's tasks, task
 * events on) and a Python Celery 5.7 worker running at once (issue 14 item 4): Flower's HTTP API
 * lists the NestJS node (through its inspect broadcast: registered, active queues, stats; online
 * through its heartbeats), shows its tasks with their states and results (from its task events),
 * and its revoke and rate-limit actions reach the NestJS worker.
 */
describe('interop: Flower sees and controls a NestJS worker', () => {
  const env: PythonEnv = { pyQueue: uniqueName('py_flower'), table: uniqueName('interop_flower'), extraConfig: { worker_send_task_events: true } };
  const jsQueue = uniqueName('js_flower');
  const node = `nestjs-flower-${process.pid}@localhost`;
  let flower: FlowerProcess;
  let worker: PythonWorker;
  let app: TestingModule;
  let producer: Producer;

  beforeAll(async () => {
    ensurePythonCelery();
    flower = await FlowerProcess.start();
    app = await Test.createTestingModule({
      imports: [CeleryModule.forRoot({ ...walkthroughCeleryconfig(env, jsQueue), resultPollIntervalMs: 50, worker: { hostname: node, sendTaskEvents: true } })],
      providers: [TasksService],
    }).compile();
    await app.init();
    producer = app.get(Producer);
    worker = await PythonWorker.start(env);
  }, 240000);

  afterAll(async () => {
    await flower?.stop();
    await stopInterop(worker, app, env, [env.pyQueue, jsQueue]);
  });

  /** The first non-null value `read` gives within `ms`. */
  const until = async <T>(read: () => Promise<T | null>, ms: number): Promise<T> => {
    let value: T | null = null;
    await eventually(async () => (value = await read()) !== null, ms);
    return value as T;
  };
  const workers = () => flower.get<Record<string, FlowerWorker>>('/api/workers?refresh=1');
  const tasks = () => flower.get<Record<string, FlowerTask>>('/api/tasks');

  it('lists the NestJS worker beside the Python one, with its registered tasks, active queues and stats, and online', async () => {
    const listed = await until(async () => {
      const all = await workers();
      return all[node]?.stats && Object.keys(all).some((n) => n.startsWith('py-interop-')) ? all : null;
    }, 30000);
    const ours = listed[node];
    expect(ours.registered).toEqual(expect.arrayContaining(['tasks.add', 'tasks.sortWords', 'tasks.fail', 'tasks.limited [rate_limit=5/s]']));
    expect(ours.active_queues?.map((q) => q.name)).toEqual([jsQueue]);
    expect(ours.stats?.pid).toBe(process.pid);
    // alive: Flower's events state has seen its worker-online / heartbeats
    await eventually(async () => (await flower.get<Record<string, boolean>>('/api/workers?status=1'))[node] === true, 15000);
  }, 60000);

  it("shows the NestJS worker's tasks with their states and results (from its task events)", async () => {
    const ok = await producer.sendTask<number>('tasks.add', { args: [2, 3], queue: jsQueue });
    await expect(ok.get({ timeout: 15000 })).resolves.toBe(5);
    const failed = await producer.sendTask('tasks.fail', { args: ['boom'], queue: jsQueue });
    await expect(failed.get({ timeout: 15000 })).rejects.toBeInstanceOf(TaskFailedError);
    const seen = await until(async () => {
      const all = await tasks();
      return all[ok.id]?.state === 'SUCCESS' && all[failed.id]?.state === 'FAILURE' ? all : null;
    }, 15000);
    expect(seen[ok.id]).toMatchObject({ name: 'tasks.add', state: 'SUCCESS', result: '5', worker: node, args: '[2, 3]' }); // the message's argsrepr: send_task's list, as Python's send_task shows it
    expect(seen[ok.id].runtime).toEqual(expect.any(Number));
    expect(seen[failed.id]).toMatchObject({ name: 'tasks.fail', state: 'FAILURE', worker: node });
    expect(seen[failed.id].exception).toContain("ValueError('boom')");
  }, 60000);

  it("Flower's revoke (terminate) stops a task running on the NestJS worker: REVOKED read back", async () => {
    const running = await producer.sendTask('tasks.sleep', { args: [30], queue: jsQueue });
    await eventually(async () => (await tasks())[running.id]?.state === 'STARTED', 15000);
    await expect(flower.post(`/api/task/revoke/${running.id}`, { terminate: 'true' })).resolves.toEqual({ message: `Revoked '${running.id}'` });
    const err = (await running.get({ timeout: 15000 }).catch((e: unknown) => e)) as TaskFailedError;
    expect(err).toMatchObject({ state: 'REVOKED', excType: 'TaskRevokedError' });
    await eventually(async () => (await tasks())[running.id]?.state === 'REVOKED', 15000);
  }, 60000);

  it("Flower's rate limit reaches the NestJS worker", async () => {
    await workers(); // Flower knows a worker only after an inspect
    await expect(flower.post('/api/task/rate-limit/tasks.add', { workername: node, ratelimit: '10/m' })).resolves.toEqual({
      message: expect.stringContaining("new rate limit set successfully"),
    });
    expect(app.get(CeleryWorker).rateLimiter.limitsOf('tasks.add')?.local).toBeCloseTo(10 / 60, 5);
  }, 60000);
});
