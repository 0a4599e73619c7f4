import { Injectable } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import type { GetMessage } from 'amqplib';
import { hostname } from 'node:os';
import { CeleryModule, Producer, PythonCeleryConfig, Task, TaskContext, TaskFailedError } from '../../lib';
import { TasksService } from '../../sample/tasks.service';
import { KEYSPACE, RawAmqp, eventually, rawCassandra, removeQueueAndTable, uniqueName } from '../support/real-services';
import { ensurePythonCelery, ensurePythonCelery52, interopCeleryconfig, PythonEnv, PythonWorker, pythonClient, VENV_52 } from './support/python-celery';

/** Tasks of this file only: what the request looks like from inside, and the retries the suite reads. */
@Injectable()
class SemanticsTasks {
  /** The task's context as JSON; with `retryFirst`, after one retry (0.1 s) so the values are the retried message's. */
  @Task('tasks.context')
  context(retryFirst: boolean, @TaskContext() ctx: TaskContext): Record<string, unknown> {
    if (retryFirst && ctx.retries === 0) ctx.retry({ countdown: 0.1 });
    return {
      id: ctx.id, name: ctx.name, args: ctx.args, kwargs: ctx.kwargs, retries: ctx.retries, rootId: ctx.rootId, parentId: ctx.parentId,
      group: ctx.group, groupIndex: ctx.groupIndex, eta: ctx.eta?.getTime() ?? null, expires: ctx.expires?.getTime() ?? null,
      deliveryInfo: ctx.deliveryInfo, headers: ctx.headers, hostname: ctx.hostname, origin: ctx.origin, timeLimit: ctx.timeLimit,
    };
  }

  /** Retries once 1.5 s later with a TypeError (Python reads it as one): long enough for a poller to see the RETRY row. */
  @Task('tasks.retryLater')
  retryLater(@TaskContext() ctx: TaskContext): string {
    if (ctx.retries === 0) ctx.retry({ countdown: 1.5, exc: new TypeError('busy') });
    return 'done';
  }
}

/** Python's KeyError, as a JS error names it for the result table. */
class KeyError extends Error {
  readonly excType = 'KeyError';
  readonly excModule = 'builtins';
  override name = 'KeyError';
}

/** The NestJS twin of tasks.py's pyAutoretry: autoretryFor KeyError, 0.1 s, at most 2 retries. */
@Injectable()
class AutoretryTasks {
  @Task('tasks.jsAutoretry', { autoretryFor: [KeyError], retryKwargs: { countdown: 0.1, maxRetries: 2 } })
  jsAutoretry(failures: number, @TaskContext() ctx: TaskContext): string {
    if (ctx.retries < failures) throw new KeyError('missing');
    return `ok after ${ctx.retries} retries`;
  }
}

/** The NestJS twin of tasks.py's retryCapture: retries in an hour, so the retry message can be read from its queue. */
@Injectable()
class CaptureTasks {
  @Task('tasks.retryCapture')
  retryCapture(a: number, b: string, k: boolean, @TaskContext() ctx: TaskContext): never {
    ctx.retry({ countdown: 3600, exc: new Error(`DB busy (${a}, ${b}, ${k})`) });
  }
}

/** A time as Python's isoformat() writes it (6 fraction digits, +00:00). */
function pyIso(ms: number): string {
  return new Date(ms).toISOString().replace('Z', '000+00:00');
}
const PY_ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?\+00:00$/;

/** A retry message with what must differ (ids, times) replaced by checks; ETA and expiration in minutes from now. */
function comparable(m: GetMessage, id: string, queue: string) {
  const h = { ...m.properties.headers } as Record<string, unknown>;
  return {
    properties: { ...m.properties, headers: undefined, correlationId: m.properties.correlationId === id, expiration: m.properties.expiration === undefined ? undefined : Math.round(Number(m.properties.expiration) / 60000) },
    headerOrder: Object.keys(h),
    headers: { ...h, id: h.id === id, eta: Math.round((Date.parse(String(h.eta)) - Date.now()) / 60000), etaFormat: PY_ISO.test(String(h.eta)) } as Record<string, unknown>,
    body: m.content.toString('utf8'),
    routing: { exchange: m.fields.exchange, routingKey: m.fields.routingKey === queue },
  };
}

async function getMessage(amqp: RawAmqp, queue: string): Promise<GetMessage> {
  const m = await amqp.channel.get(queue, { noAck: true });
  if (!m) throw new Error(`no message in ${queue}`);
  return m;
}

/** A direct exchange whose routing keys reach a worker's queue and a copy queue each: what a worker publishes back through it is read from the copy. */
async function exchangeWithCopies(amqp: RawAmqp, exchange: string, bindings: [queue: string, copy: string, key: string][]): Promise<void> {
  await amqp.channel.assertExchange(exchange, 'direct', { durable: true, autoDelete: false });
  for (const [queue, copy, key] of bindings) {
    await amqp.channel.assertQueue(copy, { durable: false });
    await amqp.channel.bindQueue(queue, exchange, key);
    await amqp.channel.bindQueue(copy, exchange, key);
  }
}

interface Described {
  json?: unknown;
  type?: string;
  repr?: string;
  exc_class?: string;
  exc_args?: string[];
}

interface Outcome {
  id: string;
  status: string;
  result?: Described;
  exc_class?: string;
  exc_args?: string[];
  traceback?: string | null;
  seen?: { state: string; info: Described }[];
}

interface Row {
  status: string;
  result: unknown;
  traceback: unknown;
  children: unknown;
}

/**
 * Task semantics (retries, time limits, the task's context, STARTED rows) against real Python
 * Celery, live, both directions: the newest 5.x from PyPI and 5.2.6 (Debian bookworm's). One
 * Python worker per version on its own queue, one NestJS app with the sample's TasksService, the
 * interop celeryconfig and one shared result table.
 */
describe('task semantics with Python Celery', () => {
  const table = uniqueName('semantics');
  const env: PythonEnv = { pyQueue: uniqueName('py_sem'), table };
  /** A short-lived prefork worker: the threads pool applies no time limits. */
  const refEnv: PythonEnv = { pyQueue: uniqueName('py_ref'), table };
  /**
   * A short-lived solo worker whose retry message the suite reads. Not the prefork one: after a hard
   * time limit kills its child, the replacement child (Celery 5.7, cassandra-driver 3.30) ran nothing
   * more here — the retry-capture task was received and never run in 20 s.
   */
  const capEnv: PythonEnv = { pyQueue: uniqueName('py_cap'), table };
  const env52: PythonEnv = { pyQueue: uniqueName('py_52'), table, venv: VENV_52 };
  const jsQueue = uniqueName('js_sem');
  const jsQueue52 = uniqueName('js_52');
  const capJs = uniqueName('js_cap');
  let worker: PythonWorker;
  let app: TestingModule;
  let producer: Producer;

  /** The walkthrough's celeryconfig (as Python's, task_track_started included). */
  const celeryconfig: PythonCeleryConfig = { ...interopCeleryconfig(table, jsQueue), task_track_started: true };

  beforeAll(async () => {
    ensurePythonCelery();
    app = await Test.createTestingModule({
      imports: [CeleryModule.forRoot({ ...celeryconfig, resultPollIntervalMs: 50, worker: { hostname: 'nestjs-sem@localhost' } })],
      providers: [TasksService, SemanticsTasks, AutoretryTasks],
    }).compile();
    await app.init(); // creates the shared table first
    producer = app.get(Producer);
    worker = await PythonWorker.start(env);
  }, 240000);

  afterAll(async () => {
    await worker?.stop();
    await app?.close();
    await removeQueueAndTable([env.pyQueue, refEnv.pyQueue, capEnv.pyQueue, env52.pyQueue, jsQueue, jsQueue52, capJs], table);
  });

  const py = (command: Record<string, unknown>, on: PythonEnv = env) => pythonClient<Outcome>(on, command);

  /** Every row stored for a task, oldest first (Celery's Cassandra table keeps one per state change). */
  async function rowsOf(taskId: string): Promise<Row[]> {
    const cql = await rawCassandra();
    try {
      const rs = await cql.execute(`SELECT status, result, traceback, children FROM ${KEYSPACE}.${table} WHERE task_id = ?`, [taskId], { prepare: true });
      const json = (b: Buffer | null) => (b === null ? null : JSON.parse(b.toString('utf8')));
      return rs.rows.reverse().map((r) => ({ status: r.status as string, result: json(r.result), traceback: json(r.traceback), children: json(r.children) }));
    } finally {
      await cql.shutdown();
    }
  }

  const statuses = (rows: Row[]) => rows.map((r) => r.status).filter((s) => s !== 'STARTED');

  /** Sends the same call to our worker and a Python one (one Python client), and waits for both RETRY rows. */
  async function sendRetryingToBoth(command: Record<string, unknown>, client: PythonEnv, python: PythonWorker): Promise<[string, string]> {
    const [ourId, theirId] = (await pythonClient<{ ids: string[] }>(client, command)).ids;
    const states = async () => [await producer.asyncResult(ourId).state(), await producer.asyncResult(theirId).state()];
    await eventually(async () => (await states()).every((s) => s === 'RETRY'), 20000).catch(async (e: Error) => {
      throw new Error(`${e.message}: states (ours, Python's) ${(await states()).join(', ')}\n${python.log()}`);
    });
    return [ourId, theirId];
  }

  describe('1. retry: Python client → NestJS worker (sample tasks.flaky)', () => {
    it("flaky(2): Python's get() returns 'ok after 2 retries'; two RETRY rows with the exception, children = the task itself", async () => {
      const out = await py({ op: 'call', task: 'tasks.flaky', queue: jsQueue, args: [2] });
      expect(out).toMatchObject({ status: 'SUCCESS', result: { json: 'ok after 2 retries' } });
      const rows = await rowsOf(out.id);
      expect(statuses(rows)).toEqual(['RETRY', 'RETRY', 'SUCCESS']);
      for (const row of rows.filter((r) => r.status === 'RETRY')) {
        expect(row).toMatchObject({ result: { exc_type: 'Exception', exc_message: ['flaky'], exc_module: 'builtins' }, children: [[[out.id, null], null]] });
      }
    });

    it("flaky(5): beyond maxRetries 3, Python's get() raises the original Exception('flaky'), as Python's own pyFlaky(5) does", async () => {
      const [ours, theirs] = await Promise.all([
        py({ op: 'call', task: 'tasks.flaky', queue: jsQueue, args: [5] }),
        py({ op: 'call', task: 'tasks.pyFlaky', queue: env.pyQueue, args: [5] }),
      ]);
      for (const out of [ours, theirs]) expect(out).toMatchObject({ status: 'FAILURE', exc_class: 'builtins.Exception', exc_args: ["'flaky'"] });
      const [ourRows, theirRows] = await Promise.all([rowsOf(ours.id), rowsOf(theirs.id)]);
      expect(statuses(ourRows)).toEqual(statuses(theirRows));
      expect(statuses(ourRows)).toEqual(['RETRY', 'RETRY', 'RETRY', 'FAILURE']);
      expect(ourRows.at(-1)?.result).toEqual(theirRows.at(-1)?.result);
      // a RETRY row as Celery writes it: the exception, the Retry's own traceback (its message names when and why), the task as its child
      const retryRow = (rows: Row[], id: string) => {
        const row = rows.find((r) => r.status === 'RETRY') as Row;
        return { result: row.result, children: JSON.stringify(row.children).split(id).join('<id>'), says: String(row.traceback).includes("Retry in 0.1s: Exception('flaky')") };
      };
      expect(retryRow(ourRows, ours.id)).toEqual(retryRow(theirRows, theirs.id));
      expect(retryRow(ourRows, ours.id).says).toBe(true);
    });

    it("autoretryFor: a Python caller gets the value after one retry, and beyond maxRetries 2 the rows and KeyError Python's own autoretry_for task gives", async () => {
      const [ok, ours, theirs] = await Promise.all([
        py({ op: 'call', task: 'tasks.jsAutoretry', queue: jsQueue, args: [1] }),
        py({ op: 'call', task: 'tasks.jsAutoretry', queue: jsQueue, args: [5] }),
        py({ op: 'call', task: 'tasks.pyAutoretry', queue: env.pyQueue, args: [5] }),
      ]);
      expect(ok).toMatchObject({ status: 'SUCCESS', result: { json: 'ok after 1 retries' } });
      for (const out of [ours, theirs]) expect(out).toMatchObject({ status: 'FAILURE', exc_class: 'builtins.KeyError', exc_args: ["'missing'"] });
      const [ourRows, theirRows] = await Promise.all([rowsOf(ours.id), rowsOf(theirs.id)]);
      const view = (rows: Row[]) => rows.filter((r) => r.status !== 'STARTED').map((r) => ({ status: r.status, result: r.result, says: r.status === 'RETRY' ? String(r.traceback).includes("Retry in 0.1s: KeyError('missing')") : null }));
      expect(view(ourRows)).toEqual(view(theirRows));
      expect(view(ourRows).map((r) => r.status)).toEqual(['RETRY', 'RETRY', 'FAILURE']);
    });

    it('Python polling sees RETRY with .info the exception (TypeError), then SUCCESS', async () => {
      const out = await py({ op: 'watch', task: 'tasks.retryLater', queue: jsQueue });
      expect(out).toMatchObject({ status: 'SUCCESS', result: { json: 'done' } });
      const retry = out.seen?.find((s) => s.state === 'RETRY');
      expect(retry?.info).toEqual({ exc_class: 'builtins.TypeError', exc_args: ["'busy'"] });
      expect(out.seen?.at(-1)?.state).toBe('SUCCESS');
    });

    it("a kwarg the sample's ValidationPipe rejects (tasks.registerUser): Python's get() raises ValueError naming the fields; a valid one runs", async () => {
      const [bad, good] = await Promise.all([
        py({ op: 'call', task: 'tasks.registerUser', queue: jsQueue, kwargs: { user: { email: 'nope', name: 'Ada', age: 9 } } }),
        py({ op: 'call', task: 'tasks.registerUser', queue: jsQueue, kwargs: { user: { email: 'Ada@Example.com', name: 'Ada', age: 36 } } }),
      ]);
      expect(bad).toMatchObject({ status: 'FAILURE', exc_class: 'builtins.ValueError' });
      expect(bad.exc_args).toEqual([`'tasks.registerUser[${bad.id}] got invalid arguments: email must be an email; age must not be less than 13'`]);
      expect(statuses(await rowsOf(bad.id))).toEqual(['FAILURE']);
      expect(good).toMatchObject({ status: 'SUCCESS', result: { json: { registered: 'ada@example.com', name: 'Ada', age: 36 } } });
    });
  });

  describe('2. retry: NestJS Producer → Python worker', () => {
    const toPython = (task: string, args: unknown[]) => producer.sendTask(task, { queue: env.pyQueue, args });

    it("self.retry(countdown=0.1) twice, then our get() returns the value", async () => {
      await expect((await toPython('tasks.pyFlaky', [2])).get({ timeout: 30000 })).resolves.toBe('ok after 2 retries');
    });

    it('max_retries exhausted: our get() rejects with TaskFailedError Exception (builtins) "flaky"', async () => {
      const error = await (await toPython('tasks.pyFlaky', [5])).get({ timeout: 30000 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(TaskFailedError);
      expect(error).toMatchObject({ state: 'FAILURE', excType: 'Exception', excModule: 'builtins', excMessage: ['flaky'] });
    });

    it('autoretry_for=(KeyError,): one retry, then the value; beyond max_retries 2, KeyError (builtins)', async () => {
      await expect((await toPython('tasks.pyAutoretry', [1])).get({ timeout: 30000 })).resolves.toBe('ok after 1 retries');
      const r = await toPython('tasks.pyAutoretry', [5]);
      await expect(r.get({ timeout: 30000 })).rejects.toMatchObject({ state: 'FAILURE', excType: 'KeyError', excModule: 'builtins', excMessage: ['missing'] });
      expect(statuses(await rowsOf(r.id))).toEqual(['RETRY', 'RETRY', 'FAILURE']);
    });
  });

  describe('4. time limits from a Python caller, against a prefork Python worker (the threads pool applies none)', () => {
    let ref: PythonWorker;

    beforeAll(async () => {
      ref = await PythonWorker.start(refEnv, { pool: 'prefork', concurrency: 1 });
    }, 60000);

    afterAll(async () => {
      await ref?.stop();
    });

    it.each([
      ['soft_time_limit', 'billiard.exceptions.SoftTimeLimitExceeded'],
      ['time_limit', 'billiard.exceptions.TimeLimitExceeded'],
    ])('tasks.sleep(5) with %s=0.5: Python raises %s, and our row is the row Python writes', async (option, excClass) => {
      const call = { op: 'call', task: 'tasks.sleep', args: [5], options: { [option]: 0.5 } };
      const [ours, theirs] = await Promise.all([py({ ...call, queue: jsQueue }), py({ ...call, queue: refEnv.pyQueue }, refEnv)]);
      expect(theirs).toMatchObject({ status: 'FAILURE', exc_class: excClass });
      expect(ours).toMatchObject({ status: 'FAILURE', exc_class: excClass, exc_args: theirs.exc_args });
      const [ourRow, theirRow] = [(await rowsOf(ours.id)).at(-1), (await rowsOf(theirs.id)).at(-1)];
      expect(ourRow?.result).toEqual(theirRow?.result);
      expect({ traceback: ourRow?.traceback === null, children: ourRow?.children }).toEqual({ traceback: theirRow?.traceback === null, children: theirRow?.children });
    });
  });

  describe('3. the retry message: ours against the one a Python 5.7 worker publishes for the same original', () => {
    const exchange = uniqueName('sem_x');
    const copyJs = uniqueName('copy_js');
    const copyPy = uniqueName('copy_py');
    /** Second copies, read by py-amqp: the Python type of every header as a Python worker decodes the frame. */
    const typedJs = uniqueName('typed_js');
    const typedPy = uniqueName('typed_py');
    let pyCapture: PythonWorker;
    let capture: TestingModule;
    let amqp: RawAmqp;
    let captureClosed = false;
    const closeCapture = async () => {
      if (captureClosed || !capture) return;
      captureClosed = true;
      await capture.close();
    };

    beforeAll(async () => {
      [pyCapture, capture, amqp] = await Promise.all([
        PythonWorker.start(capEnv, { pool: 'solo', concurrency: 1 }),
        Test.createTestingModule({ imports: [CeleryModule.forRoot({ ...celeryconfig, task_default_queue: capJs })], providers: [CaptureTasks] }).compile(),
        RawAmqp.open(),
      ]);
      await capture.init();
      await exchangeWithCopies(amqp, exchange, [[capJs, copyJs, 'rk_js'], [capEnv.pyQueue, copyPy, 'rk_py'], [typedJs, typedJs, 'rk_js'], [typedPy, typedPy, 'rk_py']]);
    }, 60000);

    afterAll(async () => {
      await closeCapture();
      await pyCapture?.stop();
      await amqp?.deleteQueues(copyJs, copyPy, typedJs, typedPy);
      await amqp?.channel.deleteExchange(exchange);
      await amqp?.close();
    });

    // one Python client sends the same call to both: fixed expires, priority, custom header, stamps, time limits, root/parent/group ids
    const original = (expires: string) => ({
      op: 'send', task: 'tasks.retryCapture', args: [1, 'two'], kwargs: { k: true },
      options: { expires, priority: 3, headers: { 'x-custom': 'c1' }, time_limit: 30, soft_time_limit: 20, root_id: 'root-x', parent_id: 'parent-x', group_id: 'group-x', group_index: 2, stamped_headers: ['stamp1'], stamp1: 'st' },
    });

    const sendToBoth = (command: Record<string, unknown>) => sendRetryingToBoth(command, env, pyCapture);
    const get = (queue: string) => getMessage(amqp, queue);

    it('sent through a direct exchange: the retry goes back through it, with the same headers, properties and body', async () => {
      const expires = pyIso(Date.now() + 600_000);
      const [ourId, theirId] = await sendToBoth({ ...original(expires), routes: [[exchange, 'rk_js'], [exchange, 'rk_py']] });
      // each copy queue got the original, then the retry
      const [ourOriginal, theirOriginal] = [await get(copyJs), await get(copyPy)];
      expect([ourOriginal.properties.headers?.retries, theirOriginal.properties.headers?.retries]).toEqual([0, 0]);
      const mine = comparable(await get(copyJs), ourId, 'rk_js');
      const python = comparable(await get(copyPy), theirId, 'rk_py');
      expect(mine).toEqual(python);
      expect(mine).toMatchObject({ headers: { retries: 1, root_id: 'root-x', parent_id: 'parent-x', expires, eta: 60, 'x-custom': 'c1' }, routing: { exchange, routingKey: true } });
      // as py-amqp decodes the two frames: the same Python type for every header and property (int, not float or str), the same body bytes
      const [ourTypes, theirTypes] = await Promise.all([py({ op: 'raw_get', queue: typedJs }), py({ op: 'raw_get', queue: typedPy })]);
      expect(ourTypes).toEqual(theirTypes);
      expect(ourTypes).toMatchObject({ header_types: { retries: 'int', timelimit: ['int', 'int'], group_index: 'int', ignore_result: 'bool', stamps: { stamp1: 'str' } }, property_types: { priority: 'int', delivery_mode: 'int' } });
    });

    it('sent to the queue (default exchange): the retry goes back to that queue, with the same headers, properties and body', async () => {
      const expires = pyIso(Date.now() + 600_000);
      const [ourId, theirId] = await sendToBoth({ ...original(expires), queues: [capJs, capEnv.pyQueue] });
      // each worker holds its retry (ETA in an hour) unacknowledged: stopped (Python's killed), it goes back to the queue
      await closeCapture();
      await pyCapture.stop('SIGKILL');
      // the exchange test's retries are held too and come back first: skip them (retries 1 from the exchange)
      const retryOf = async (queue: string, id: string) => {
        for (;;) {
          const m = await get(queue);
          if (m.properties.headers?.id === id) return m;
        }
      };
      const mine = comparable(await retryOf(capJs, ourId), ourId, capJs);
      const python = comparable(await retryOf(capEnv.pyQueue, theirId), theirId, capEnv.pyQueue);
      expect(mine).toEqual(python);
      expect(mine).toMatchObject({
        headers: { retries: 1, root_id: 'root-x', parent_id: 'parent-x', expires, eta: 60, etaFormat: true, 'x-custom': 'c1', argsrepr: "(1, 'two')", stamps: { stamp1: 'st' } },
        properties: { priority: 3, expiration: 10 }, routing: { exchange: '', routingKey: true },
      });
    });
  });

  describe('5. the task context of a Python message', () => {
    const expires = pyIso(Date.now() + 600_000);
    const options = { headers: { 'x-tenant': 'acme' }, expires, root_id: 'root-5', parent_id: 'parent-5', group_id: 'group-5', group_index: 1, time_limit: 30, soft_time_limit: 20, priority: 4 };

    it('apply_async with eta, expires, headers, ids, time limits and priority: the context holds what Python set', async () => {
      const eta = pyIso(Date.now() + 500);
      const out = await py({ op: 'call', task: 'tasks.context', queue: jsQueue, args: [false], options: { ...options, eta } });
      expect(out.result?.json).toEqual({
        id: out.id, name: 'tasks.context', args: [false], kwargs: {}, retries: 0, rootId: 'root-5', parentId: 'parent-5', group: 'group-5', groupIndex: 1,
        eta: Date.parse(eta), expires: Date.parse(expires), deliveryInfo: { exchange: '', routingKey: jsQueue, redelivered: false, priority: 4 },
        headers: expect.objectContaining({ 'x-tenant': 'acme', eta, expires, lang: 'py' }), hostname: 'nestjs-sem@localhost', origin: expect.stringMatching(/^gen\d+@/), timeLimit: [30, 20],
      });
    });

    it('after one retry: retries 1; root, parent and group ids, expires, headers, priority and time limits kept as Celery keeps them', async () => {
      const out = await py({ op: 'call', task: 'tasks.context', queue: jsQueue, args: [true], options });
      expect(out.result?.json).toMatchObject({
        retries: 1, rootId: 'root-5', parentId: 'parent-5', group: 'group-5', groupIndex: 1, expires: Date.parse(expires), timeLimit: [30, 20],
        deliveryInfo: { exchange: '', routingKey: jsQueue, priority: 4 }, headers: expect.objectContaining({ 'x-tenant': 'acme', expires }),
      });
    });

    it('a top-level call retried: parent_id becomes the task itself, root_id stays its own id', async () => {
      const out = await py({ op: 'call', task: 'tasks.context', queue: jsQueue, args: [true] });
      expect(out.result?.json).toMatchObject({ retries: 1, rootId: out.id, parentId: out.id });
    });
  });

  describe('6. trackStarted (task_track_started)', () => {
    it('Python polling sees STARTED with our pid and hostname while tasks.sleep runs, as its own worker writes it', async () => {
      const call = { op: 'watch', task: 'tasks.sleep', args: [1] };
      const [ours, theirs] = await Promise.all([py({ ...call, queue: jsQueue }), py({ ...call, queue: env.pyQueue })]);
      for (const out of [ours, theirs]) expect(out).toMatchObject({ status: 'SUCCESS', result: { json: 1 } });
      const started = (out: Outcome) => out.seen?.find((s) => s.state === 'STARTED')?.info.json as Record<string, unknown> | undefined;
      expect(started(ours)).toEqual({ pid: process.pid, hostname: 'nestjs-sem@localhost' });
      expect(Object.keys(started(ours) ?? {})).toEqual(Object.keys(started(theirs) ?? {}));
    });
  });

  describe('7. Celery 5.2.6 (Debian bookworm), with peerCompat "5.2" on our side', () => {
    let version: string;
    let worker52: PythonWorker;
    let app52: TestingModule;
    let producer52: Producer;

    beforeAll(async () => {
      version = ensurePythonCelery52();
      app52 = await Test.createTestingModule({
        imports: [CeleryModule.forRoot({ ...celeryconfig, task_default_queue: jsQueue52, peerCompat: '5.2', resultPollIntervalMs: 50, worker: { hostname: 'nestjs-52@localhost' } })],
        providers: [TasksService, CaptureTasks],
      }).compile();
      await app52.init();
      producer52 = app52.get(Producer);
      worker52 = await PythonWorker.start(env52);
    }, 600000);

    afterAll(async () => {
      await worker52?.stop();
      await app52?.close();
    });

    const to52 = (task: string, args: unknown[], expires?: number) => producer52.sendTask(task, { queue: env52.pyQueue, args, expires });

    it('runs Celery 5.2.6 with kombu 5.2.4', () => {
      expect(version).toBe('5.2.6 5.2.4');
    });

    it("5.2.6 client → NestJS worker: flaky(2) succeeds after 2 retries, flaky(5) raises Exception('flaky') in Python", async () => {
      const [ok, failed] = await Promise.all([
        py({ op: 'call', task: 'tasks.flaky', queue: jsQueue52, args: [2] }, env52),
        py({ op: 'call', task: 'tasks.flaky', queue: jsQueue52, args: [5] }, env52),
      ]);
      expect(ok).toMatchObject({ status: 'SUCCESS', result: { json: 'ok after 2 retries' } });
      expect(failed).toMatchObject({ status: 'FAILURE', exc_class: 'builtins.Exception', exc_args: ["'flaky'"] });
    });

    it('NestJS producer → 5.2.6 worker: self.retry() and autoretry_for end in the value, or in the original exception beyond max_retries', async () => {
      const [ok, failed, auto] = await Promise.all([to52('tasks.pyFlaky', [2]), to52('tasks.pyFlaky', [5]), to52('tasks.pyAutoretry', [1])]);
      await expect(ok.get({ timeout: 30000 })).resolves.toBe('ok after 2 retries');
      await expect(failed.get({ timeout: 30000 })).rejects.toMatchObject({ state: 'FAILURE', excType: 'Exception', excModule: 'builtins', excMessage: ['flaky'] });
      await expect(auto.get({ timeout: 30000 })).resolves.toBe('ok after 1 retries');
    });

    it('the 5.2.x retry+expires bug: a 5.2.6 worker drops a message with expires that retries (no RETRY row, nothing republished)', async () => {
      const r = await to52('tasks.pyFlaky', [1], 60);
      await eventually(async () => (await r.state()) === 'STARTED', 15000);
      await new Promise((resolve) => setTimeout(resolve, 2000)); // a retry (0.1 s countdown) would have run by now
      expect(statuses(await rowsOf(r.id))).toEqual([]); // only STARTED rows: no RETRY, no SUCCESS
      const amqp = await RawAmqp.open();
      try {
        expect(await amqp.depth(env52.pyQueue)).toBe(0);
      } finally {
        await amqp.close();
      }
      expect(worker52.log()).toMatch(/TypeError: '<' not supported between instances of 'str' and 'int'/);
    });

    it("the retry message of our peerCompat 5.2 worker is the one a 5.2.6 worker publishes for the same original (through a direct exchange; no expires: 5.2.6 would drop it)", async () => {
      const exchange = uniqueName('sem52_x');
      const [copyJs, copyPy] = [uniqueName('copy52_js'), uniqueName('copy52_py')];
      const amqp = await RawAmqp.open();
      try {
        await exchangeWithCopies(amqp, exchange, [[jsQueue52, copyJs, 'rk_js'], [env52.pyQueue, copyPy, 'rk_py']]);
        const [ourId, theirId] = await sendRetryingToBoth({
          op: 'send', task: 'tasks.retryCapture', args: [1, 'two'], kwargs: { k: true }, routes: [[exchange, 'rk_js'], [exchange, 'rk_py']],
          options: { priority: 3, headers: { 'x-custom': 'c1' }, time_limit: 30, soft_time_limit: 20, root_id: 'root-x', parent_id: 'parent-x', group_id: 'group-x', group_index: 2 },
        }, env52, worker52);
        const [original] = await Promise.all([getMessage(amqp, copyJs), getMessage(amqp, copyPy)]);
        const mine = comparable(await getMessage(amqp, copyJs), ourId, 'rk_js');
        const python = comparable(await getMessage(amqp, copyPy), theirId, 'rk_py');
        // 5.2.6 differs from 5.7 in two points, where we keep 5.7's behaviour for every peer: its retry loses the
        // custom headers, and its origin is the retrying worker's, not the original sender's
        expect(python.headers).not.toHaveProperty('x-custom');
        expect(python.headers.origin).toBe(`gen${worker52.pid}@${hostname()}`);
        expect(mine.headers).toMatchObject({ 'x-custom': 'c1', origin: original.properties.headers?.origin });
        const as52 = { ...mine, headerOrder: mine.headerOrder.filter((k) => k !== 'x-custom'), headers: { ...mine.headers, 'x-custom': undefined, origin: python.headers.origin } };
        expect(as52).toEqual(python);
        expect(mine.headerOrder).not.toContain('stamps');
        expect(mine).toMatchObject({ headers: { retries: 1, root_id: 'root-x', parent_id: 'parent-x', argsrepr: "(1, 'two')", eta: 60 } });
      } finally {
        await amqp.deleteQueues(copyJs, copyPy);
        await amqp.channel.deleteExchange(exchange);
        await amqp.close();
      }
    });

    it('our worker has no such bug: the same retry with expires from the 5.2.6 client succeeds', async () => {
      const out = await py({ op: 'call', task: 'tasks.flaky', queue: jsQueue52, args: [1], options: { expires: 60 } }, env52);
      expect(out).toMatchObject({ status: 'SUCCESS', result: { json: 'ok after 1 retries' } });
    });
  });
});
