import { Test, TestingModule } from '@nestjs/testing';
import type { Client } from 'cassandra-driver';
import { randomUUID } from 'node:crypto';
import { CeleryModule, Producer } from '../../lib';
import { TasksService } from '../../sample/tasks.service';
import { eventually, KEYSPACE, rawCassandra, uniqueName } from '../support/real-services';
import { ensurePythonCelery, PythonEnv, PythonWorker, pythonClient, stopInterop, walkthroughCeleryconfig } from './support/python-celery';

interface Outcome {
  id: string;
  status: string;
  result?: { json?: unknown };
  exc_class?: string;
  exc_args?: string[];
  ids: string[];
  errbacks: string[];
}

interface Row {
  status: string;
  result: unknown;
  children: unknown;
}

/**
 * The worker side of workflows against real Python Celery 5.7 (issue 13 item 3): Python builds
 * and sends the workflow, its own `get()` reads the outcome, some steps run on the NestJS worker
 * (the sample's tasks on its default queue), the rest on one Python worker; the rows are read
 * from the shared Cassandra table. Chords applied by our worker as chain steps are in the last cells.
 */
describe('interop: workflows through the NestJS worker', () => {
  const env: PythonEnv = { pyQueue: uniqueName('py_wf'), table: uniqueName('interop_wf') };
  const jsQueue = uniqueName('js_wf');
  let worker: PythonWorker;
  let app: TestingModule;
  let cql: Client;

  beforeAll(async () => {
    ensurePythonCelery();
    cql = await rawCassandra();
    app = await Test.createTestingModule({ imports: [CeleryModule.forRoot({ ...walkthroughCeleryconfig(env, jsQueue), resultPollIntervalMs: 50 })], providers: [TasksService] }).compile();
    await app.init();
    worker = await PythonWorker.start(env);
  }, 240000);

  afterAll(async () => {
    await cql?.shutdown();
    await stopInterop(worker, app, env, [env.pyQueue, jsQueue]);
  });

  const py = (command: Record<string, unknown>) => pythonClient<Outcome>(env, { op: 'workflow', ...command });
  /** The newest row of a task (Celery's reader takes LIMIT 1). */
  const newest = async (taskId: string): Promise<Row> => {
    const rs = await cql.execute(`SELECT status, result, children FROM ${KEYSPACE}.${env.table} WHERE task_id = ? LIMIT 1`, [taskId], { prepare: true });
    const r = rs.rows[0];
    return { status: r.status as string, result: JSON.parse(String(r.result)), children: JSON.parse(String(r.children)) };
  };
  const statuses = async (taskId: string): Promise<string[]> =>
    (await cql.execute(`SELECT status FROM ${KEYSPACE}.${env.table} WHERE task_id = ?`, [taskId], { prepare: true })).rows.map((r) => r.status as string);

  it("a Python chain whose middle step is a NestJS task: Python's get() of the last step returns the final value; every step's row", async () => {
    const out = await py({
      kind: 'chain',
      steps: [
        { task: 'tasks.add', args: [1, 2], queue: env.pyQueue },
        { task: 'tasks.add', args: [10], queue: jsQueue },
        { task: 'tasks.add', args: [100], queue: env.pyQueue },
      ],
    });
    expect(out).toMatchObject({ status: 'SUCCESS', result: { json: 113 } });
    const [a, b, c] = out.ids;
    expect(out.id).toBe(c);
    expect(await newest(a)).toEqual({ status: 'SUCCESS', result: 3, children: [[[b, null], null]] });
    // the NestJS step lists the next (Python) step it published as its child
    expect(await newest(b)).toEqual({ status: 'SUCCESS', result: 13, children: [[[c, null], null]] });
    expect(await newest(c)).toEqual({ status: 'SUCCESS', result: 113, children: [] });
  }, 60000);

  it('a chain whose second (NestJS) step fails: FAILURE on it and the remaining steps, Python get() raises, link_error called once', async () => {
    const out = await py({
      kind: 'chain',
      steps: [
        { task: 'tasks.add', args: [1, 2], queue: env.pyQueue },
        { task: 'tasks.fail', args: [], queue: jsQueue, link_error: { task: 'tasks.pyErrback', queue: env.pyQueue } },
        { task: 'tasks.add', args: [5], queue: env.pyQueue },
        { task: 'tasks.add', args: [6], queue: env.pyQueue },
      ],
    });
    const [, failed, c, d] = out.ids;
    expect(out).toMatchObject({ id: d, status: 'FAILURE', exc_class: 'builtins.ValueError', exc_args: ["'3'"] });
    const failure = await newest(failed);
    expect(failure).toMatchObject({ status: 'FAILURE', result: { exc_type: 'ValueError', exc_message: ['3'], exc_module: 'builtins' } });
    expect(await newest(c)).toEqual(failure);
    expect(await newest(d)).toEqual(failure);
    // the errback ran once, on the Python worker, with the failed task's id
    const [errback] = out.errbacks;
    await expect(pythonClient(env, { op: 'get', id: errback })).resolves.toMatchObject({ status: 'SUCCESS', result: { json: failed } });
    expect((await statuses(errback)).filter((s) => s === 'SUCCESS')).toHaveLength(1);
  }, 60000);

  it("a Python chain whose NestJS step is followed by a group of Python tasks: the NestJS worker publishes the group; Python's get() of the GroupResult", async () => {
    const out = await py({
      kind: 'chain',
      steps: [{ task: 'tasks.add', args: [1, 2], queue: jsQueue }, { group: [10, 20].map((n) => ({ task: 'tasks.add', args: [n], queue: env.pyQueue })) }],
    });
    expect(out).toMatchObject({ status: 'SUCCESS', result: { json: [13, 23] } });
    const [first, groupId] = out.ids;
    const row = await newest(first);
    expect(row).toMatchObject({ status: 'SUCCESS', result: 3 });
    expect((row.children as unknown[][])[0][0]).toEqual([groupId, null]);
    expect(((row.children as unknown[][])[0][1] as unknown[]).length).toBe(2);
  }, 60000);

  it("a Python chord with NestJS header tasks and a NestJS body: Python's chord_unlock goes to the body's queue, where OUR celery.chord_unlock completes it", async () => {
    const out = await py({
      kind: 'chord',
      header: [1, 2, 3].map((i) => ({ task: 'tasks.add', args: [i, i], queue: jsQueue })),
      body: { task: 'tasks.tsum', args: [], queue: jsQueue },
    });
    expect(out).toMatchObject({ status: 'SUCCESS', result: { json: 12 } });
    expect(await newest(out.ids[3])).toEqual({ status: 'SUCCESS', result: 12, children: [] });
  }, 60000);

  it("our counter-mode chord, NestJS header tasks and a Python body: no chord_unlock, the last NestJS header task sends the body to the Python queue, Python runs it", async () => {
    const producer = app.get(Producer);
    const header = [1, 2, 3, 4].map((i) => producer.signatureByName('tasks.add', [i, 100], { queue: jsQueue }));
    const result = await producer.chord(header, producer.signatureByName<number>('tasks.tsum', [], { queue: env.pyQueue }), { completion: 'counter' });
    await expect(result.get({ timeout: 30000 })).resolves.toBe(410);
    expect(await newest(result.id)).toEqual({ status: 'SUCCESS', result: 410, children: [] });
  }, 60000);

  it('a counter-mode chord whose header tasks a Python worker runs: Python ignores nestjs_chord_size, stores the header results, and the body is never sent (README: route counter-mode headers to NestJS workers only)', async () => {
    const producer = app.get(Producer);
    const ids = [randomUUID(), randomUUID()];
    const header = ids.map((id, i) => producer.signatureByName('tasks.add', [i, 1], { queue: env.pyQueue, taskId: id }));
    const result = await producer.chord(header, producer.signatureByName<number>('tasks.tsum', [], { queue: jsQueue }), { completion: 'counter' });
    await eventually(async () => (await Promise.all(ids.map(statuses))).every((s) => s.includes('SUCCESS')), 30000);
    expect(await newest(ids[1])).toMatchObject({ status: 'SUCCESS', result: 2 });
    await new Promise((r) => setTimeout(r, 3000));
    expect(await statuses(result.id)).toEqual([]); // PENDING for ever: nobody completes the chord
  }, 60000);

  it("a Python chord with NestJS header tasks and a Python body: Python's chord_unlock (on the body's queue) reads our header rows", async () => {
    const out = await py({
      kind: 'chord',
      header: [1, 2, 3].map((i) => ({ task: 'tasks.add', args: [i, 10], queue: jsQueue })),
      body: { task: 'tasks.tsum', args: [], queue: env.pyQueue },
    });
    expect(out).toMatchObject({ status: 'SUCCESS', result: { json: 36 } });
    for (const id of out.ids.slice(0, 3)) expect((await newest(id)).status).toBe('SUCCESS');
  }, 60000);

  // Python sends chain(a, group(...), b) as chain(a, chord(group, b)): when `a` runs on the NestJS
  // worker, the next chain step is a chord, which our worker applies as Celery's worker does (header
  // tasks with a's result, celery.chord_unlock routed as the body, the rest of the chain in the body)
  it('a NestJS step followed by a chord of Python tasks with a Python body: the header gets its result, Python get() the sum', async () => {
    const out = await py({
      kind: 'chain',
      steps: [{ task: 'tasks.add', args: [1, 2], queue: jsQueue }, { group: [10, 20, 30].map((n) => ({ task: 'tasks.add', args: [n], queue: env.pyQueue })) }, { task: 'tasks.tsum', args: [], queue: env.pyQueue }],
    });
    // (3+10) + (3+20) + (3+30)
    expect(out).toMatchObject({ status: 'SUCCESS', result: { json: 69 } });
    const first = out.ids[0];
    const row = await newest(first);
    expect(row).toMatchObject({ status: 'SUCCESS', result: 3 });
    // the row lists the chord's result as Celery's worker does: the body with the header group as its parent
    const [[[bodyId, [[, ], members]]]] = row.children as [[[string, [[string, null], unknown[]]]]];
    expect(bodyId).toBe(out.id);
    expect(members).toHaveLength(3);
  }, 90000);

  it('a NestJS step, a chord of NestJS tasks with a NestJS body (our chord_unlock), then a Python step: the chain goes on after the chord', async () => {
    const out = await py({
      kind: 'chain',
      steps: [
        { task: 'tasks.add', args: [1, 1], queue: jsQueue },
        { group: [1, 2].map((n) => ({ task: 'tasks.add', args: [n], queue: jsQueue })) },
        { task: 'tasks.tsum', args: [], queue: jsQueue },
        { task: 'tasks.add', args: [1000], queue: env.pyQueue },
      ],
    });
    // (2+1) + (2+2) = 7, then + 1000
    expect(out).toMatchObject({ status: 'SUCCESS', result: { json: 1007 } });
    expect((await newest(out.id)).status).toBe('SUCCESS');
  }, 90000);
});
