import { Injectable } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import type { Client } from 'cassandra-driver';
import { randomUUID } from 'node:crypto';
import { CeleryModule, Producer, Task, TaskContext, TaskFailure } from '../../lib';
import { TasksService } from '../../sample/tasks.service';
import { eventually, KEYSPACE, rawCassandra, uniqueName } from '../support/real-services';
import { ensurePythonCelery, ensurePythonCelery52, PythonEnv, PythonWorker, pythonClient, stopInterop, VENV_52, walkthroughCeleryconfig } from './support/python-celery';

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

/** A NestJS errback (the by-id form Celery sends across processes) that answers what its context reads of the failure. */
@Injectable()
class ErrbackTasks {
  @Task('xlang.readFailure')
  async readFailure(failedId: string, @TaskContext() ctx: TaskContext): Promise<{ failedId: string; failure: TaskFailure | null }> {
    return { failedId, failure: await ctx.failure() };
  }
}

/**
 * Workflows that cross languages (issue 13 items 3 and 5), against real Python Celery, newest and
 * 5.2.6: Python or our Producer builds and sends the workflow and the caller's own get() reads
 * the outcome; some steps run on the NestJS worker (the sample's tasks on its own queue), the rest
 * on one Python worker; the rows are read from the shared Cassandra table. Which worker ran a step
 * is read from the Python worker's log (`Task tasks.add[<id>] received`): both languages have a
 * `tasks.add`, so a step routed to the wrong queue would give the same values. The last cells:
 * chords that our worker applies itself as chain steps.
 */
describe.each([
  { celery: '5.7', venv: undefined, peerCompat: undefined },
  { celery: '5.2.6', venv: VENV_52, peerCompat: '5.2' as const },
])('interop: workflows across languages (Celery $celery)', ({ venv, peerCompat }) => {
  const env: PythonEnv = { pyQueue: uniqueName('py_wf'), table: uniqueName('interop_wf'), ...(venv ? { venv } : {}) };
  const jsQueue = uniqueName('js_wf');
  let worker: PythonWorker;
  let app: TestingModule;
  let producer: Producer;
  let cql: Client;

  beforeAll(async () => {
    if (venv) ensurePythonCelery52();
    else ensurePythonCelery();
    cql = await rawCassandra();
    app = await Test.createTestingModule({
      imports: [CeleryModule.forRoot({ ...walkthroughCeleryconfig(env, jsQueue), ...(peerCompat ? { peerCompat } : {}), resultPollIntervalMs: 50 })],
      providers: [TasksService, ErrbackTasks],
    }).compile();
    await app.init();
    producer = app.get(Producer);
    worker = await PythonWorker.start(env);
  }, 240000);

  afterAll(async () => {
    await cql?.shutdown();
    await stopInterop(worker, app, env, [env.pyQueue, jsQueue]);
  });

  const py = (command: Record<string, unknown>) => pythonClient<Outcome>(env, { op: 'workflow', ...command });
  const js = (task: string, args: unknown[] = []) => ({ task, args, queue: jsQueue });
  const pyTask = (task: string, args: unknown[] = []) => ({ task, args, queue: env.pyQueue });
  /** The newest row of a task (Celery's reader takes LIMIT 1). */
  const newest = async (taskId: string): Promise<Row> => {
    const rs = await cql.execute(`SELECT status, result, children FROM ${KEYSPACE}.${env.table} WHERE task_id = ? LIMIT 1`, [taskId], { prepare: true });
    const r = rs.rows[0];
    return { status: r.status as string, result: JSON.parse(String(r.result)), children: JSON.parse(String(r.children)) };
  };
  const statuses = async (taskId: string): Promise<string[]> =>
    (await cql.execute(`SELECT status FROM ${KEYSPACE}.${env.table} WHERE task_id = ?`, [taskId], { prepare: true })).rows.map((r) => r.status as string);
  /** Whether the Python worker received the task (else the NestJS worker ran it). */
  const ranOnPython = (taskId: string) => worker.log().includes(`[${taskId}] received`);

  it("(a) a Python chain whose middle step is a NestJS task: Python's get() of the last step returns the final value; every step's row", async () => {
    const out = await py({ kind: 'chain', steps: [pyTask('tasks.add', [1, 2]), js('tasks.add', [10]), pyTask('tasks.add', [100])] });
    expect(out).toMatchObject({ status: 'SUCCESS', result: { json: 113 } });
    const [a, b, c] = out.ids;
    expect(out.id).toBe(c);
    expect(await newest(a)).toEqual({ status: 'SUCCESS', result: 3, children: [[[b, null], null]] });
    // the NestJS step lists the next (Python) step it published as its child
    expect(await newest(b)).toEqual({ status: 'SUCCESS', result: 13, children: [[[c, null], null]] });
    expect(await newest(c)).toEqual({ status: 'SUCCESS', result: 113, children: [] });
    expect([a, b, c].map(ranOnPython)).toEqual([true, false, true]);
  }, 60000);

  it("(b) a chain from our Producer, NestJS → Python → NestJS: our get() of the last step; every step's row", async () => {
    const last = await producer.chain(
      producer.signature(TasksService, 'add', [1, 2], { queue: jsQueue }),
      producer.signatureByName<number>('tasks.add', [10], { queue: env.pyQueue }),
      producer.signature(TasksService, 'add', [100], { queue: jsQueue }),
    );
    await expect(last.get({ timeout: 30000 })).resolves.toBe(113);
    const b = last.parent!;
    const a = b.parent!;
    expect(await newest(a.id)).toEqual({ status: 'SUCCESS', result: 3, children: [[[b.id, null], null]] });
    // the Python step published the last (NestJS) step and lists it as its child
    expect(await newest(b.id)).toEqual({ status: 'SUCCESS', result: 13, children: [[[last.id, null], null]] });
    expect(await newest(last.id)).toEqual({ status: 'SUCCESS', result: 113, children: [] });
    expect([a.id, b.id, last.id].map(ranOnPython)).toEqual([false, true, false]);
  }, 60000);

  it("(c) a group of 20 NestJS tasks collected by Python's GroupResult.get() (no save()): values in member order, every member's row", async () => {
    const out = await py({ kind: 'group', members: Array.from({ length: 20 }, (_, i) => js('tasks.add', [i, i])) });
    const expected = Array.from({ length: 20 }, (_, i) => 2 * i);
    expect(out).toMatchObject({ status: 'SUCCESS', result: { json: expected } });
    expect(out.ids).toHaveLength(20);
    expect(await Promise.all(out.ids.map(newest))).toEqual(expected.map((v) => ({ status: 'SUCCESS', result: v, children: [] })));
    expect(out.ids.filter(ranOnPython)).toEqual([]);
  }, 60000);

  it('a Python chain whose NestJS step is followed by a group of Python tasks: the NestJS worker publishes the group; Python\'s get() of the GroupResult', async () => {
    const out = await py({ kind: 'chain', steps: [js('tasks.add', [1, 2]), { group: [10, 20].map((n) => pyTask('tasks.add', [n])) }] });
    expect(out).toMatchObject({ status: 'SUCCESS', result: { json: [13, 23] } });
    const [first, groupId] = out.ids;
    const row = await newest(first);
    expect(row).toMatchObject({ status: 'SUCCESS', result: 3 });
    expect((row.children as unknown[][])[0][0]).toEqual([groupId, null]);
    expect(((row.children as unknown[][])[0][1] as unknown[]).length).toBe(2);
  }, 60000);

  // (d) both ways, and both sides NestJS: the Python caller sends celery.chord_unlock to the body's queue,
  // so whoever consumes it (the Python worker or OUR celery.chord_unlock) reads the other side's header rows
  for (const [headerOn, bodyOn] of [['NestJS', 'Python'], ['Python', 'NestJS'], ['NestJS', 'NestJS']] as const) {
    it(`(d) a Python chord with ${headerOn} header tasks and a ${bodyOn} body: the ${bodyOn} worker's chord_unlock reads the header rows; Python's get() of the body`, async () => {
      const on = (side: 'NestJS' | 'Python', task: string, args: unknown[] = []) => (side === 'NestJS' ? js(task, args) : pyTask(task, args));
      const out = await py({ kind: 'chord', header: [1, 2, 3].map((i) => on(headerOn, 'tasks.add', [i, 10])), body: on(bodyOn, 'tasks.tsum') });
      expect(out).toMatchObject({ status: 'SUCCESS', result: { json: 36 } });
      const header = out.ids.slice(0, 3);
      expect(await Promise.all(header.map(newest))).toEqual([11, 12, 13].map((v) => ({ status: 'SUCCESS', result: v, children: [] })));
      expect(await newest(out.id)).toEqual({ status: 'SUCCESS', result: 36, children: [] });
      expect([...header, out.id].map(ranOnPython)).toEqual([...header.map(() => headerOn === 'Python'), bodyOn === 'Python']);
    }, 60000);
  }

  it('(e) a chain whose second (NestJS) step fails, link_error on the whole chain: FAILURE on it and the remaining steps, Python get() raises, the errback runs exactly once', async () => {
    const out = await py({
      kind: 'chain',
      steps: [pyTask('tasks.add', [1, 2]), js('tasks.fail'), pyTask('tasks.add', [5]), pyTask('tasks.add', [6])],
      // Celery gives the chain's link_error to every step: only the failing one calls it
      link_error: { task: 'tasks.pyErrback', queue: env.pyQueue },
    });
    const [first, failed, c, d] = out.ids;
    expect(out).toMatchObject({ id: d, status: 'FAILURE', exc_class: 'builtins.ValueError', exc_args: ["'3'"] });
    expect(await newest(first)).toEqual({ status: 'SUCCESS', result: 3, children: [[[failed, null], null]] });
    const failure = await newest(failed);
    expect(failure).toMatchObject({ status: 'FAILURE', result: { exc_type: 'ValueError', exc_message: ['3'], exc_module: 'builtins' } });
    expect(await newest(c)).toEqual(failure);
    expect(await newest(d)).toEqual(failure);
    // the (Python) errback ran with the failed task's id, once: one SUCCESS row, one receipt in the Python worker's log
    const [errback] = out.errbacks;
    await expect(pythonClient(env, { op: 'get', id: errback })).resolves.toMatchObject({ status: 'SUCCESS', result: { json: failed } });
    await new Promise((resolve) => setTimeout(resolve, 1000)); // room for a second call, if there were one
    expect((await statuses(errback)).filter((s) => s === 'SUCCESS')).toHaveLength(1);
    expect(worker.log().split(`tasks.pyErrback[${errback}] received`).length - 1).toBe(1);
    expect([c, d].map(ranOnPython)).toEqual([false, false]);
  }, 60000);

  for (const bodyOn of ['NestJS', 'Python'] as const) {
    const headerOf = () => [js('tasks.add', [1, 1]), js('tasks.fail', ['boom']), pyTask('tasks.add', [2, 2])];
    const bodyOf = () => (bodyOn === 'NestJS' ? js('tasks.tsum') : pyTask('tasks.tsum'));
    /**
     * The body's rows: one FAILURE ChordError, stored by the chord_unlock of the body's side, the same
     * text whichever side ran it; the body never ran. Celery's chord_unlock writes `Dependency <id>
     * raised ...` only for a failed member in its backend's cache, which holds SUCCESS metas only:
     * on Cassandra the reason is always the exception's repr.
     */
    const expectChordError = async (culprit: string, body: string) => {
      expect(await newest(culprit)).toMatchObject({ status: 'FAILURE', result: { exc_type: 'ValueError', exc_message: ['boom'] } });
      const reason = "ValueError('boom')";
      expect(await newest(body)).toEqual({ status: 'FAILURE', result: { exc_type: 'ChordError', exc_module: 'celery.exceptions', exc_message: [reason] }, children: [] });
      expect(await statuses(body)).toEqual(['FAILURE']);
      expect(ranOnPython(body)).toBe(false);
      return reason;
    };

    it(`(f) a Python chord with one failing (NestJS) header task and a ${bodyOn} body: ChordError on the body; Python's get() of the chord raises the header's error, of the body id the ChordError`, async () => {
      const out = await py({ kind: 'chord', header: headerOf(), body: bodyOf() });
      const [, culprit, , body] = out.ids;
      // Celery's get() of a chord's result looks at its parent (the header group) first and raises the failed member's error
      expect(out).toMatchObject({ id: body, exc_class: 'builtins.ValueError', exc_args: ["'boom'"] });
      const read = await pythonClient<Outcome>(env, { op: 'get', id: body });
      const reason = await expectChordError(culprit, body);
      expect(read).toMatchObject({ status: 'FAILURE', exc_class: 'celery.exceptions.ChordError', exc_args: [`"${reason}"`] });
    }, 60000);

    it(`(f) a chord from our Producer with one failing (NestJS) header task and a ${bodyOn} body: our get() rejects with the ChordError`, async () => {
      const culprit = randomUUID();
      const sig = (s: { task: string; args: unknown[]; queue: string }) =>
        producer.signatureByName<number>(s.task, s.args, { queue: s.queue, ...(s.task === 'tasks.fail' ? { taskId: culprit } : {}) });
      const result = await producer.chord(headerOf().map(sig), sig(bodyOf()));
      const err = await result.get({ timeout: 30000 }).catch((e: unknown) => e);
      const reason = await expectChordError(culprit, result.id);
      expect(err).toMatchObject({ taskId: result.id, state: 'FAILURE', excType: 'ChordError', excModule: 'celery.exceptions', excMessage: [reason] });
    }, 60000);
  }

  it("our counter-mode chord, NestJS header tasks and a Python body: no chord_unlock, the last NestJS header task sends the body to the Python queue, Python runs it", async () => {
    const header = [1, 2, 3, 4].map((i) => producer.signatureByName('tasks.add', [i, 100], { queue: jsQueue }));
    const result = await producer.chord(header, producer.signatureByName<number>('tasks.tsum', [], { queue: env.pyQueue }), { completion: 'counter' });
    await expect(result.get({ timeout: 30000 })).resolves.toBe(410);
    expect(await newest(result.id)).toEqual({ status: 'SUCCESS', result: 410, children: [] });
  }, 60000);

  it('a counter-mode chord whose header tasks a Python worker runs: Python ignores nestjs_chord_size, stores the header results, and the body is never sent (README: route counter-mode headers to NestJS workers only)', async () => {
    const ids = [randomUUID(), randomUUID()];
    const header = ids.map((id, i) => producer.signatureByName('tasks.add', [i, 1], { queue: env.pyQueue, taskId: id }));
    const result = await producer.chord(header, producer.signatureByName<number>('tasks.tsum', [], { queue: jsQueue }), { completion: 'counter' });
    await eventually(async () => (await Promise.all(ids.map(statuses))).every((s) => s.includes('SUCCESS')), 30000);
    expect(await newest(ids[1])).toMatchObject({ status: 'SUCCESS', result: 2 });
    await new Promise((r) => setTimeout(r, 3000));
    expect(await statuses(result.id)).toEqual([]); // PENDING for ever: nobody completes the chord
  }, 60000);

  it("errback context: a Python task fails, its link_error is a NestJS task that reads the failed request and the exception from its context", async () => {
    const out = await py({
      kind: 'chain',
      steps: [{ ...pyTask('tasks.failWords', ['b a']), link_error: { task: 'xlang.readFailure', queue: jsQueue } }],
    });
    expect(out).toMatchObject({ status: 'FAILURE', exc_class: 'builtins.ValueError' });
    const [failed] = out.ids;
    const [errback] = out.errbacks;
    const seen = await pythonClient<{ status: string; result: { json: { failedId: string; failure: TaskFailure } } }>(env, { op: 'get', id: errback });
    expect(seen.status).toBe('SUCCESS');
    expect(seen.result.json).toEqual({
      failedId: failed,
      failure: {
        // Celery's Cassandra rows have no extended columns and a Python worker adds no header: the request is its id
        request: { id: failed, name: null, args: null, kwargs: null },
        exception: { type: 'ValueError', module: 'builtins', message: ["cannot sort: 'b a'"] },
        traceback: expect.stringMatching(/^Traceback \(most recent call last\):[\s\S]*ValueError: cannot sort: 'b a'\n$/),
      },
    });
    expect(ranOnPython(errback)).toBe(false);
  }, 60000);

  // Python sends chain(a, group(...), b) as chain(a, chord(group, b)): when `a` runs on the NestJS
  // worker, the next chain step is a chord, which our worker applies as Celery's worker does (header
  // tasks with a's result, celery.chord_unlock routed as the body, the rest of the chain in the body)
  it('a NestJS step followed by a chord of Python tasks with a Python body: the header gets its result, Python get() the sum', async () => {
    const out = await py({
      kind: 'chain',
      steps: [js('tasks.add', [1, 2]), { group: [10, 20, 30].map((n) => pyTask('tasks.add', [n])) }, pyTask('tasks.tsum')],
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
    expect([first, out.id].map(ranOnPython)).toEqual([false, true]);
  }, 90000);

  it('a NestJS step, a chord of NestJS tasks with a NestJS body (our chord_unlock), then a Python step: the chain goes on after the chord', async () => {
    const out = await py({
      kind: 'chain',
      steps: [js('tasks.add', [1, 1]), { group: [1, 2].map((n) => js('tasks.add', [n])) }, js('tasks.tsum'), pyTask('tasks.add', [1000])],
    });
    // (2+1) + (2+2) = 7, then + 1000
    expect(out).toMatchObject({ status: 'SUCCESS', result: { json: 1007 } });
    expect(await newest(out.id)).toEqual({ status: 'SUCCESS', result: 1007, children: [] });
    expect(ranOnPython(out.id)).toBe(true);
  }, 90000);
});
