import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { PyDecimal } from '../../../../lib/protocol/kombu-types';
import { toExceptionInfo } from '../../../../lib/protocol/exceptions';
import {
  checkIsolatedSpec,
  IsolatedPool,
  IsolatedPoolClosedError,
  IsolatedTaskSpec,
  SoftTimeLimitExceeded,
  TimeLimitExceeded,
  WorkerLostError,
} from '../../../../lib/worker/isolation';
import { CpuTasks, NeedsDependency } from './fixtures/isolated-tasks';

const MODULE = join(__dirname, 'fixtures', 'isolated-tasks.ts');
const ESM_MODULE = join(__dirname, 'fixtures', 'esm-tasks.mjs');
const task = (method: string): IsolatedTaskSpec => ({ module: MODULE, exportName: 'CpuTasks', method });

/** Passes once `turns` (a busy loop's shared counter) stays still for 300 ms: the loop is gone, not just abandoned. */
async function stopsCounting(turns: () => number): Promise<void> {
  // terminate() interrupts the thread within milliseconds; give it a moment before watching
  await sleep(100);
  const before = turns();
  await sleep(300);
  expect(turns()).toBe(before);
}

async function until(check: () => boolean, timeoutMs = 10000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(20);
  }
}

describe('IsolatedPool', () => {
  let pool: IsolatedPool;
  beforeAll(() => {
    pool = new IsolatedPool({ size: 2 });
  });
  afterAll(() => pool.close());

  describe('values and errors cross the thread boundary', () => {
    it('returns the value of a class method run in a thread', async () => {
      await expect(pool.run(task('add'), [2, 40])).resolves.toBe(42);
    });

    it('keeps Date, PyDecimal, Buffer, bigint and NaN, and drops functions as JSON would', async () => {
      const value = { d: new Date(5), n: NaN, list: [1, 'two', null, new PyDecimal('1.50')], nested: { b: Buffer.from([0xff, 0]) } };
      const back = (await pool.run(task('echo'), [value])) as typeof value;
      expect(back.d).toEqual(new Date(5));
      expect(back.n).toBeNaN();
      expect(back.list[3]).toBeInstanceOf(PyDecimal);
      expect((back.list[3] as PyDecimal).value).toBe('1.50');
      expect(Buffer.isBuffer(back.nested.b)).toBe(true);
      expect([...back.nested.b]).toEqual([0xff, 0]);

      const typed = (await pool.run(task('typed'), [])) as Record<string, unknown>;
      expect(typed).toEqual({ when: new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 678)), amount: new PyDecimal('12.3400'), bytes: Buffer.from('hi'), big: 2n ** 70n });
      expect('skip' in typed).toBe(false);
    });

    it('calls an exported plain function when no method is given', async () => {
      await expect(pool.run({ module: MODULE, exportName: 'multiplyAll' }, [2, 3, 7])).resolves.toBe(42);
    });

    it('loads an ES module (by path or file:// URL) with import()', async () => {
      await expect(pool.run({ module: ESM_MODULE, exportName: 'EsmTasks', method: 'multiply' }, [6, 7])).resolves.toBe(42);
      await expect(pool.run({ module: pathToFileURL(ESM_MODULE).href, exportName: 'greet' }, ['bob'])).resolves.toBe('hello bob');
    });

    it('keeps a builtin error class, its message and the stack from the thread', async () => {
      const err = (await pool.run(task('fail'), ['range']).catch((e: unknown) => e)) as Error;
      expect(err).toBeInstanceOf(RangeError);
      expect(err.message).toBe('out of range');
      expect(err.stack).toContain('isolated-tasks.ts');
      expect(toExceptionInfo(err)).toEqual({ exc_type: 'ValueError', exc_message: ['out of range'], exc_module: 'builtins' });
    });

    it('keeps a custom error name, so it is stored as in-process (a dynamic class)', async () => {
      const err = await pool.run(task('fail'), ['custom']).catch((e: unknown) => e);
      expect((err as Error).name).toBe('QuotaExceeded');
      expect(toExceptionInfo(err)).toEqual({ exc_type: 'QuotaExceeded', exc_message: ['quota of 3 exceeded'], exc_module: 'nestjs_celery.errors' });
    });

    it('keeps the Python class an error names, a thrown non-error, and an async failure', async () => {
      expect(toExceptionInfo(await pool.run(task('fail'), ['python']).catch((e: unknown) => e))).toEqual({ exc_type: 'KeyError', exc_message: ['k'], exc_module: 'builtins' });
      await expect(pool.run(task('fail'), ['string'])).rejects.toBe('a plain string');
      await expect(pool.run(task('failLater'), [])).rejects.toThrow(new TypeError('failed after a wait'));
    });

    it('passes the request context into the thread', async () => {
      await expect(pool.run(task('request'), [], { context: { id: 'abc', retries: 2 } })).resolves.toEqual({ id: 'abc', retries: 2 });
    });

    it('fails a run whose context cannot be cloned, and keeps serving', async () => {
      await expect(pool.run(task('request'), [], { context: { callback: () => 1 } })).rejects.toThrow(/could not be cloned/);
      await expect(pool.run(task('add'), [1, 2])).resolves.toBe(3);
    });

    it('constructs the class once per thread, with no arguments', async () => {
      const single = new IsolatedPool({ size: 1 });
      try {
        await expect(single.run(task('count'), [])).resolves.toBe(1);
        await expect(single.run(task('count'), [])).resolves.toBe(2);
      } finally {
        await single.close();
      }
    });
  });

  describe('bad task specs fail with a message saying what is wrong', () => {
    it('names the missing export and what the module exports', async () => {
      await expect(pool.run({ module: MODULE, exportName: 'Nope', method: 'x' }, [])).rejects.toThrow(/has no exported class "Nope" \(its exports: .*CpuTasks/);
    });

    it('says a class that needs constructor arguments gets no dependency injection', async () => {
      await expect(pool.run({ module: MODULE, exportName: 'NeedsDependency', method: 'value' }, [])).rejects.toThrow(/NeedsDependency with no arguments failed \(an isolated task's class gets no dependency injection\)/);
    });

    it('refuses a relative or missing module before starting a thread', async () => {
      await expect(pool.run({ module: 'fixtures/isolated-tasks.ts', exportName: 'CpuTasks', method: 'add' }, [])).rejects.toThrow(/must be an absolute path/);
      await expect(pool.run({ module: '/nonexistent/tasks.js', exportName: 'CpuTasks', method: 'add' }, [])).rejects.toThrow(/does not exist/);
    });

    it('checkIsolatedSpec tells at bootstrap whether the thread will find the class', () => {
      expect(checkIsolatedSpec(task('add'), CpuTasks)).toBeNull();
      expect(checkIsolatedSpec({ module: MODULE, exportName: 'Other', method: 'add' }, CpuTasks)).toMatch(/does not export "Other"/);
      expect(checkIsolatedSpec({ module: MODULE, exportName: 'NeedsDependency', method: 'add' }, CpuTasks)).toMatch(/exports a different "NeedsDependency"/);
      expect(checkIsolatedSpec({ module: ESM_MODULE, exportName: 'EsmTasks' }, NeedsDependency)).toBeNull(); // an ES module: cannot tell here
    });
  });

  describe('hard time limit', () => {
    it('stops a CPU-bound loop that never yields: the loop stops for good, the pool serves the next task', async () => {
      const progress = new SharedArrayBuffer(4);
      const turns = () => Atomics.load(new Int32Array(progress), 0);
      const started = Date.now();
      const err = await pool.run(task('busyCounting'), [], { hardMs: 300, context: { progress } }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TimeLimitExceeded);
      expect(Date.now() - started).toBeLessThan(3000);
      expect(toExceptionInfo(err)).toEqual({ exc_type: 'TimeLimitExceeded', exc_message: [0.3], exc_module: 'billiard.exceptions' });
      expect(turns()).toBeGreaterThan(0); // it did run
      await stopsCounting(turns);
      await expect(pool.run(task('add'), [1, 1])).resolves.toBe(2);
      expect(pool.stats().threads).toBeLessThanOrEqual(2);
    });

    it('kills and replaces threads again and again without growing threads or memory', async () => {
      const small = new IsolatedPool({ size: 1 });
      try {
        await expect(small.run(task('busy'), [], { hardMs: 100 })).rejects.toBeInstanceOf(TimeLimitExceeded); // warm-up
        const rssBefore = process.memoryUsage().rss;
        for (let i = 0; i < 8; i++) {
          const progress = new SharedArrayBuffer(4);
          await expect(small.run(task('busyCounting'), [], { hardMs: 100, context: { progress } })).rejects.toBeInstanceOf(TimeLimitExceeded);
          expect(Atomics.load(new Int32Array(progress), 0)).toBeGreaterThan(0); // the loop ran before it was stopped
          expect(small.stats().threads).toBe(1); // its replacement started at once
        }
        await expect(small.run(task('add'), [20, 22])).resolves.toBe(42);
        expect(small.stats()).toMatchObject({ threads: 1, busy: 0, queued: 0, terminated: 9 });
        // a thread here holds the TypeScript compiler (~100 MB): eight kept alive would show
        expect((process.memoryUsage().rss - rssBefore) / 2 ** 20).toBeLessThan(200);
      } finally {
        await small.close();
      }
    });

    it('ends a task that ignores its soft limit at the hard limit', async () => {
      const err = await pool.run(task('busy'), [], { softMs: 50, hardMs: 400 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TimeLimitExceeded);
      expect((err as TimeLimitExceeded).seconds).toBe(0.4);
    });

    it('stops a run whose module never finishes loading, once the load grace is over too', async () => {
      const stuck = new IsolatedPool({ size: 1, moduleLoadGraceMs: 300 });
      try {
        const started = Date.now();
        const spec = { module: join(__dirname, 'fixtures', 'hangs-on-load.js'), exportName: 'never' };
        await expect(stuck.run(spec, [], { hardMs: 100 })).rejects.toBeInstanceOf(TimeLimitExceeded);
        expect(Date.now() - started).toBeGreaterThanOrEqual(400);
        await expect(stuck.run({ module: MODULE, exportName: 'multiplyAll' }, [6, 7])).resolves.toBe(42);
      } finally {
        await stuck.close();
      }
    });

    it('counts the hard limit from the call of the task, not from the wait for a thread or its start', async () => {
      const single = new IsolatedPool({ size: 1 });
      try {
        // the first run also waits for the thread to start and compile its TypeScript (~500 ms here)
        await expect(single.run(task('add'), [0, 0], { hardMs: 200 })).resolves.toBe(0);
        const first = single.run(task('window'), [300]);
        const second = single.run(task('add'), [1, 2], { hardMs: 200 }); // waits ~300 ms for the thread, then takes ~0
        await first;
        await expect(second).resolves.toBe(3);
      } finally {
        await single.close();
      }
    });
  });

  describe('soft time limit and abort', () => {
    it('aborts the signal of a loop that never awaits (shared flag), and the uncaught abort is SoftTimeLimitExceeded', async () => {
      const err = await pool.run(task('spinUntilAborted'), [], { softMs: 200 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SoftTimeLimitExceeded);
      expect(toExceptionInfo(err)).toEqual({ exc_type: 'SoftTimeLimitExceeded', exc_message: [], exc_module: 'billiard.exceptions' });
    });

    it('lets the task catch the soft limit and return', async () => {
      await expect(pool.run(task('spinThenCleanUp'), [], { softMs: 100 })).resolves.toBe('cleaned up after SoftTimeLimitExceeded');
    });

    it('rejects an awaiting task through its signal (AbortError caused by the soft limit)', async () => {
      const started = Date.now();
      await expect(pool.run(task('sleep'), [30000], { softMs: 100 })).rejects.toBeInstanceOf(SoftTimeLimitExceeded);
      expect(Date.now() - started).toBeLessThan(5000);
    });

    it('abort(reason) through opts.signal ends a running task with that reason', async () => {
      const controller = new AbortController();
      const reason = new Error('revoked');
      setTimeout(() => controller.abort(reason), 100);
      await expect(pool.run(task('sleep'), [30000], { signal: controller.signal })).rejects.toBe(reason);
    });

    it('abort() of a queued run rejects it at once without running it', async () => {
      const single = new IsolatedPool({ size: 1 });
      try {
        const first = single.start(task('window'), [300]);
        const queued = single.start(task('count'), []);
        expect(single.stats().queued).toBe(1);
        queued.abort(new Error('shutdown'));
        await expect(queued.result).rejects.toThrow('shutdown');
        await first.result;
        await expect(single.run(task('count'), [])).resolves.toBe(1); // the aborted run never called count()
      } finally {
        await single.close();
      }
    });

    it('terminate() stops a running task at once', async () => {
      const run = pool.start(task('busy'), []);
      setTimeout(() => run.terminate(new Error('terminated by revoke')), 100);
      await expect(run.result).rejects.toThrow('terminated by revoke');
      await expect(pool.run(task('add'), [2, 2])).resolves.toBe(4);
    });
  });

  describe('threads', () => {
    it('runs at most `size` tasks at once', async () => {
      const two = new IsolatedPool({ size: 2 });
      try {
        await Promise.all([two.run(task('add'), [1, 1]), two.run(task('add'), [1, 1])]); // both threads started
        const windows = (await Promise.all(Array.from({ length: 6 }, () => two.run(task('window'), [150])))) as [number, number][];
        const most = Math.max(...windows.map(([start]) => windows.filter(([s, e]) => s <= start && start < e).length));
        expect(most).toBe(2);
        expect(two.stats().threads).toBe(2);
      } finally {
        await two.close();
      }
    });

    it('a thread that dies on its own fails its run with WorkerLostError and is replaced', async () => {
      const err = await pool.run(task('exit'), []).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(WorkerLostError);
      expect(toExceptionInfo(err)).toMatchObject({ exc_type: 'WorkerLostError', exc_module: 'billiard.exceptions' });
      await expect(pool.run(task('add'), [3, 4])).resolves.toBe(7);
    });

    it('a thread over its heap limit fails its run with WorkerLostError and is replaced', async () => {
      const limited = new IsolatedPool({ size: 1, resourceLimits: { maxOldGenerationSizeMb: 256 } });
      try {
        const err = await limited.run(task('hoard'), []).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(WorkerLostError);
        expect((err as Error).message).toMatch(/ERR_WORKER_OUT_OF_MEMORY|out of memory/i);
        await expect(limited.run(task('add'), [5, 6])).resolves.toBe(11);
      } finally {
        await limited.close();
      }
    });

    it('close() terminates running and queued runs and refuses new ones', async () => {
      const closing = new IsolatedPool({ size: 1 });
      const progress = new SharedArrayBuffer(4);
      const turns = () => Atomics.load(new Int32Array(progress), 0);
      const running = closing.run(task('busyCounting'), [], { context: { progress } }).catch((e: unknown) => e);
      const queued = closing.run(task('add'), [1, 2]).catch((e: unknown) => e);
      await until(() => turns() > 0);
      await closing.close();
      expect(await running).toBeInstanceOf(IsolatedPoolClosedError);
      expect(await queued).toBeInstanceOf(IsolatedPoolClosedError);
      await expect(closing.run(task('add'), [1, 2])).rejects.toBeInstanceOf(IsolatedPoolClosedError);
      expect(closing.stats()).toMatchObject({ threads: 0, busy: 0, queued: 0 });
      await stopsCounting(turns);
    });
  });
});
