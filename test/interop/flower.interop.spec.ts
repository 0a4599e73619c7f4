import { uniqueName } from '../support/real-services';
import { FlowerProcess } from './support/flower';
import { PythonEnv, PythonWorker, pythonClient, stopInterop } from './support/python-celery';

describe('interop: Flower', () => {
  const env: PythonEnv = { pyQueue: uniqueName('py_flower'), table: uniqueName('interop_flower'), extraConfig: { worker_send_task_events: true } };
  let worker: PythonWorker;
  let flower: FlowerProcess;

  beforeAll(async () => {
    flower = await FlowerProcess.start();
    worker = await PythonWorker.start(env);
  }, 240000);

  afterAll(async () => {
    await flower?.stop();
    await stopInterop(worker, undefined, env, [env.pyQueue]);
  });

  it('lists the Python worker with its registered tasks, and its task', async () => {
    const out = await pythonClient<{ id: string; status: string }>(env, { op: 'call', task: 'tasks.add', args: [1, 2], queue: env.pyQueue });
    expect(out.status).toBe('SUCCESS');
    const workers = await flower.get<Record<string, { registered?: string[]; stats?: unknown; active_queues?: unknown[] }>>('/api/workers?refresh=1');
    console.log(JSON.stringify(workers).slice(0, 3000));
    const tasks = await flower.get<Record<string, unknown>>('/api/tasks');
    console.log(JSON.stringify(tasks).slice(0, 2000));
    expect(Object.keys(workers).length).toBeGreaterThan(0);
  }, 60000);
});
