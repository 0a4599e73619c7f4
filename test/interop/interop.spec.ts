import { Injectable } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CeleryModule, Producer, PythonCeleryConfig, ResultStore, Task, TaskFailedError } from '../../lib';
import { PyDate, PyDecimal, PyTime, PyUUID } from '../../lib/protocol/kombu-types';
import { FixtureTasks } from '../support/fixture-tasks';
import { RawAmqp, eventually, removeQueueAndTable, uniqueName } from '../support/real-services';
import { ensurePythonCelery, interopCeleryconfig, PythonEnv, PythonWorker, pythonClient } from './support/python-celery';

@Injectable()
class InteropTasks {
  @Task('tasks.now')
  now(): number {
    return Date.now() / 1000;
  }

  /** A result of `bytes` characters, for the result-size limit (worker.maxResultBytes). */
  @Task('tasks.bigResult')
  bigResult(bytes: number): string {
    return 'x'.repeat(bytes);
  }
}

interface Outcome {
  id: string;
  status: string;
  result?: { json?: unknown; type?: string; repr?: string };
  exc_class?: string;
  exc_args?: string[];
  is_exception?: boolean;
  traceback?: string | null;
}

/**
 * Real Python Celery (newest 5.x from PyPI) and NestJS on the same RabbitMQ and Cassandra, one
 * queue per language, one shared result table. Python's client and worker use the walkthrough's
 * celeryconfig; the NestJS app is configured with the same keys.
 */
describe('interop with Python Celery', () => {
  const env: PythonEnv = { pyQueue: uniqueName('py_q'), table: uniqueName('interop') };
  const jsQueue = uniqueName('js_q');
  let celeryVersion: string;
  let worker: PythonWorker;
  let app: TestingModule;
  let producer: Producer;

  /** The walkthrough's celeryconfig, as the Python side has it (test/interop/python/celeryconfig.py). */
  const celeryconfig: PythonCeleryConfig = interopCeleryconfig(env.table, jsQueue);

  beforeAll(async () => {
    celeryVersion = ensurePythonCelery();
    app = await Test.createTestingModule({
      imports: [CeleryModule.forRoot({ ...celeryconfig, resultPollIntervalMs: 50 })],
      providers: [FixtureTasks, InteropTasks],
    }).compile();
    await app.init(); // the NestJS worker creates the shared table first
    producer = app.get(Producer);
    worker = await PythonWorker.start(env);
  }, 240000);

  afterAll(async () => {
    await worker?.stop();
    await app?.close();
    await removeQueueAndTable([env.pyQueue, jsQueue], env.table);
  });

  const py = <T = Outcome>(command: Record<string, unknown>) => pythonClient<T>(env, command);
  const toPython = (task: string, options: Parameters<Producer['sendTask']>[1] = {}) =>
    producer.sendTask(task, { queue: env.pyQueue, ...options });

  it('uses Celery 5.7 or newer from PyPI', () => {
    expect(celeryVersion).toMatch(/^5\.(7|8|9|\d\d)\./);
  });

  describe('a. Python client → NestJS worker → Cassandra → Python get()', () => {
    it('sorts both walkthrough strings, the second with capitalize=True as a keyword', async () => {
      const first = await py({ op: 'call', task: 'tasks.sortWords', queue: jsQueue, args: ['storage yay my DB is powerful results Astra', false] });
      const second = await py({ op: 'call', task: 'tasks.sortWords', queue: jsQueue, args: ['In the land of another wizards day'], kwargs: { capitalize: true } });
      expect(first).toMatchObject({ status: 'SUCCESS', result: { json: 'Astra DB is my powerful results storage yay' } });
      expect(second).toMatchObject({ status: 'SUCCESS', result: { json: 'ANOTHER DAY IN LAND OF THE WIZARDS' } });
    });
  });

  describe('b. NestJS Producer → Python worker → Cassandra → NestJS get()', () => {
    it('sorts both walkthrough strings, the second with capitalize=true as a keyword', async () => {
      const first = await toPython('tasks.sortWords', { args: ['storage yay my DB is powerful results Astra', false] });
      const second = await toPython('tasks.sortWords', { args: ['In the land of another wizards day'], kwargs: { capitalize: true } });
      await expect(first.get({ timeout: 30000 })).resolves.toBe('Astra DB is my powerful results storage yay');
      await expect(second.get({ timeout: 30000 })).resolves.toBe('ANOTHER DAY IN LAND OF THE WIZARDS');
    });

    it('reads the SUCCESS row Python wrote through the ResultStore', async () => {
      const r = await toPython('tasks.echo', { args: ['stored by Python'] });
      await r.get({ timeout: 30000 });
      expect(await app.get(ResultStore).getTaskMeta(r.id)).toMatchObject({ status: 'SUCCESS', result: 'stored by Python', traceback: null, children: [] });
    });
  });

  describe('c. failures both ways', () => {
    it('a JS RangeError reaches Python as builtins.ValueError with its message and the JS traceback', async () => {
      const out = await py({ op: 'call', task: 'tasks.failWords', queue: jsQueue, args: ['x y'] });
      expect(out).toMatchObject({ status: 'FAILURE', exc_class: 'builtins.ValueError', exc_args: [`"cannot sort: 'x y'"`], is_exception: true });
      expect(out.traceback).toContain("RangeError: cannot sort: 'x y'");
    });

    it('a custom JS error reaches Python as a dynamic exception class of the same name', async () => {
      const out = await py({ op: 'call', task: 'tasks.customFailure', queue: jsQueue });
      expect(out).toMatchObject({ status: 'FAILURE', exc_class: 'celery.exceptions.SortFailedError', exc_args: ["'DB unavailable'"], is_exception: true });
    });

    it('Python → NestJS: a result over worker.maxResultBytes is stored as FAILURE, and Python get() raises builtins.ValueError naming the limit', async () => {
      const out = await py({ op: 'call', task: 'tasks.bigResult', queue: jsQueue, args: [9 * 1024 * 1024] });
      expect(out).toMatchObject({ status: 'FAILURE', exc_class: 'builtins.ValueError', is_exception: true });
      expect(out.exc_args?.[0]).toMatch(/over worker\.maxResultBytes \(8388608 bytes\)/);
    });

    it('a Python ValueError reaches NestJS with exc_type, message, module and the Python traceback', async () => {
      const r = await toPython('tasks.failWords', { args: ['x y'] });
      const error = (await r.get({ timeout: 30000 }).catch((e: unknown) => e)) as TaskFailedError;
      expect(error).toBeInstanceOf(TaskFailedError);
      expect(error).toMatchObject({ state: 'FAILURE', excType: 'ValueError', excModule: 'builtins', excMessage: ["cannot sort: 'x y'"] });
      expect(error.traceback).toContain('Traceback (most recent call last)');
      expect(error.traceback).toContain("ValueError: cannot sort: 'x y'");
    });
  });

  describe('d. countdown, eta and expires both ways', () => {
    it('NestJS → Python: a countdown task does not run early', async () => {
      const sent = Date.now() / 1000;
      const r = await toPython('tasks.now', { countdown: 2 });
      expect(await r.state()).toBe('PENDING');
      expect((await r.get({ timeout: 30000 })) as number).toBeGreaterThanOrEqual(sent + 1.99);
    });

    it('NestJS → Python: an eta task does not run early', async () => {
      const eta = new Date(Date.now() + 2000);
      const r = await toPython('tasks.now', { eta });
      expect((await r.get({ timeout: 30000 })) as number).toBeGreaterThanOrEqual(eta.getTime() / 1000 - 0.01);
    });

    it('NestJS → Python: a task that expires before its eta ends REVOKED "expired"', async () => {
      const r = await toPython('tasks.now', { countdown: 3, expires: 1 });
      await expect(r.get({ timeout: 30000 })).rejects.toMatchObject({ state: 'REVOKED', excType: 'TaskRevokedError', excMessage: ['expired'] });
    });

    it('Python → NestJS: a countdown task does not run early', async () => {
      const sent = Date.now() / 1000;
      const out = await py<Outcome>({ op: 'call', task: 'tasks.now', queue: jsQueue, options: { countdown: 2 } });
      expect(out.status).toBe('SUCCESS');
      expect(out.result?.json as number).toBeGreaterThanOrEqual(sent + 1.99);
    });

    it('Python → NestJS: a task that expires before its eta ends REVOKED "expired"', async () => {
      const out = await py({ op: 'call', task: 'tasks.now', queue: jsQueue, options: { countdown: 3, expires: 1 } });
      expect(out).toMatchObject({ status: 'REVOKED', exc_class: 'celery.exceptions.TaskRevokedError', exc_args: ["'expired'"] });
    });
  });

  describe('e. values both ways', () => {
    const value = { text: 'Grüße, 世界 🌍 — "quoted" \'single\'', big: 2 ** 40 + 7, negative: -(2 ** 35), float: 3.14159, tiny: 1e-7, nested: { list: [1, [2, [3, { deep: null }]]], flag: true } };

    it('NestJS → Python → NestJS: kwargs, non-ASCII, nested, ints beyond 2^31 and floats come back equal', async () => {
      const r = await toPython('tasks.echo', { kwargs: { value } });
      await expect(r.get({ timeout: 30000 })).resolves.toEqual(value);
    });

    it('Python → NestJS → Python: the same values come back equal', async () => {
      const out = await py({ op: 'call', task: 'tasks.echo', queue: jsQueue, kwargs: { value } });
      expect(out).toMatchObject({ status: 'SUCCESS', result: { json: value } });
    });

    it('NestJS → Python: Date, Buffer, PyDecimal, PyUUID, PyDate, PyTime arrive as datetime, bytes, Decimal, UUID, date, time', async () => {
      const r = await toPython('tasks.describe', {
        args: [new Date(Date.UTC(2025, 0, 15, 12, 0, 0, 123)), Buffer.from('abc'), Buffer.from([0xff, 0]), new PyDecimal('1.10'),
          new PyUUID('12345678-1234-5678-1234-567812345678'), new PyDate('2025-01-15'), new PyTime('12:00:00')],
      });
      const seen = (await r.get({ timeout: 30000 })) as { args: { type: string; repr: string }[] };
      expect(seen.args).toEqual([
        { type: 'datetime', repr: 'datetime.datetime(2025, 1, 15, 12, 0, 0, 123000, tzinfo=datetime.timezone.utc)' },
        { type: 'bytes', repr: "b'abc'" },
        { type: 'bytes', repr: "b'\\xff\\x00'" },
        { type: 'Decimal', repr: "Decimal('1.10')" },
        { type: 'UUID', repr: "UUID('12345678-1234-5678-1234-567812345678')" },
        { type: 'date', repr: 'datetime.date(2025, 1, 15)' },
        { type: 'time', repr: 'datetime.time(12, 0)' },
      ]);
    });

    it('Python → NestJS → Python: datetime, date, time, UUID, Decimal and bytes come back as the same Python values', async () => {
      const out = await py<Record<string, { equal: boolean; type: string }>>({ op: 'special_equal', queue: jsQueue });
      for (const [name, check] of Object.entries(out)) expect({ name, ...check }).toMatchObject({ name, equal: true });
    });
  });

  describe('f. unknown task names', () => {
    it('NestJS → Python: rejected without requeue, FAILURE NotRegistered', async () => {
      const r = await toPython('tasks.noSuchTask', { args: [1] });
      await expect(r.get({ timeout: 30000 })).rejects.toMatchObject({ excType: 'NotRegistered', excModule: 'celery.exceptions', excMessage: ['tasks.noSuchTask'] });
      const amqp = await RawAmqp.open();
      try {
        await eventually(async () => (await amqp.depth(env.pyQueue)) === 0);
      } finally {
        await amqp.close();
      }
    });

    it('Python → NestJS: rejected without requeue, Python get() raises NotRegistered', async () => {
      const out = await py({ op: 'call', task: 'tasks.noSuchTask', queue: jsQueue, args: [1] });
      expect(out).toMatchObject({ status: 'FAILURE', exc_class: 'celery.exceptions.NotRegistered', exc_args: ["'tasks.noSuchTask'"] });
    });
  });

  describe('g. integer headers Python must read as integers', () => {
    it('timelimit [300, 240] and retries 200 reach the Python worker intact', async () => {
      const r = await toPython('tasks.request', { timeLimit: 300, softTimeLimit: 240, retries: 200 });
      await expect(r.get({ timeout: 30000 })).resolves.toMatchObject({ retries: 200, timelimit: [300, 240], root_id: r.id, parent_id: null });
    });
  });

  describe('message formats', () => {
    it('Python → NestJS: a protocol v1 message (task_protocol=1) is run', async () => {
      const out = await py({ op: 'call', protocol: 1, task: 'tasks.sortWords', queue: jsQueue, args: ['b c a'], kwargs: { capitalize: true } });
      expect(out).toMatchObject({ status: 'SUCCESS', result: { json: 'A B C' } });
    });

    it('Python → NestJS: a pickle message is rejected without requeue and the worker keeps serving', async () => {
      const { id } = await py<{ id: string }>({ op: 'send', task: 'tasks.echo', queue: jsQueue, args: ['pickled'], options: { serializer: 'pickle' } });
      const after = await py({ op: 'call', task: 'tasks.echo', queue: jsQueue, args: ['after pickle'] });
      expect(after).toMatchObject({ status: 'SUCCESS', result: { json: 'after pickle' } });
      const amqp = await RawAmqp.open();
      try {
        await eventually(async () => (await amqp.depth(jsQueue)) === 0);
      } finally {
        await amqp.close();
      }
      expect(await producer.asyncResult(id).state()).toBe('PENDING');
    });
  });

  describe('compressed messages', () => {
    it.each(['zlib', 'bzip2', 'lzma', 'brotli', 'zstd'])('Python → NestJS: a body compressed with %s is read', async (compression) => {
      const out = await py({ op: 'call', task: 'tasks.sortWords', queue: jsQueue, args: ['b c a', false], options: { compression } });
      expect(out).toMatchObject({ status: 'SUCCESS', result: { json: 'a b c' } });
    });

    it.each(['zlib', 'brotli'] as const)('NestJS → Python: a body compressed with %s is read', async (compression) => {
      const r = await toPython('tasks.sortWords', { args: ['b c a', false], compression });
      await expect(r.get({ timeout: 30000 })).resolves.toBe('a b c');
    });
  });

  describe('rows Python writes, read by NestJS', () => {
    it('RETRY, with the exception dict and the retry traceback', async () => {
      const { id } = await py<{ id: string }>({ op: 'send', task: 'tasks.retryOnce', queue: env.pyQueue });
      const result = producer.asyncResult(id);
      await eventually(async () => (await result.state()) === 'RETRY', 30000);
      const meta = await result.info();
      expect(meta.result).toEqual({ exc_type: 'RuntimeError', exc_message: ['DB busy'], exc_module: 'builtins' });
      expect(meta.traceback).toContain('Retry in 60s');
      expect(await result.ready()).toBe(false);
    });

    it('STARTED while a task runs (task_track_started)', async () => {
      const r = await toPython('tasks.sleep', { args: [3] });
      await eventually(async () => (await r.state()) === 'STARTED', 30000);
      expect((await r.info()).result).toMatchObject({ pid: expect.any(Number), hostname: expect.stringContaining('py-interop') });
      await expect(r.get({ timeout: 30000 })).resolves.toBe(3);
    });

    it('REVOKED "revoked" after app.control.revoke()', async () => {
      const r = await toPython('tasks.now', { countdown: 60 });
      await py({ op: 'revoke', id: r.id });
      await expect(r.get({ timeout: 30000 })).rejects.toMatchObject({ state: 'REVOKED', excType: 'TaskRevokedError', excMessage: ['revoked'] });
    });

    it('PENDING for an id nobody stored', async () => {
      expect(await producer.asyncResult('00000000-0000-4000-8000-000000000000').state()).toBe('PENDING');
    });
  });

  it("argsrepr: Celery's own saferepr still gives the outputs our fixture pins", async () => {
    const fixture = JSON.parse(readFileSync(join(__dirname, '..', 'fixtures', 'saferepr-celery-5.7.json'), 'utf8')) as { cases: { value: unknown; saferepr: string }[] };
    const live = await py<string[]>({ op: 'saferepr', values: fixture.cases.map((c) => c.value) });
    expect(live).toEqual(fixture.cases.map((c) => c.saferepr));
  });
});
