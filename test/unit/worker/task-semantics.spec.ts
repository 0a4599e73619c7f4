import { Injectable } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  Broker,
  CeleryModule,
  CeleryModuleOptions,
  CeleryTaskContext,
  CeleryWorker,
  currentTask,
  Producer,
  ResultStore,
  Task,
  TaskContext,
  TaskFailedError,
} from '../../../lib';
import { fromAmqpFieldValue } from '../../../lib/protocol/amqp-field-table';
import type { ResultToStore } from '../../../lib/protocol/result-row';
import { decodeTaskMessage, encodeTaskMessage } from '../../../lib/protocol/task-message';
import { autoretryFor, encodeRetryMessage, exponentialBackoff, retryOrGiveUp, tupleRepr } from '../../../lib/worker/retry';
import { Retry } from '../../../lib/errors/task-exceptions';

class DbBusy extends Error {
  override name = 'DbBusy';
}
class Fatal extends DbBusy {
  override name = 'Fatal';
}

/** Reads the context from a service the task calls, not from its parameters. */
@Injectable()
class Audit {
  constructor(private readonly context: CeleryTaskContext) {}
  who(): string {
    const ctx = this.context.get();
    return `${ctx.name}[${ctx.id}] try ${ctx.retries} on ${ctx.hostname}`;
  }
}

let calls: Record<string, number> = {};
const count = (name: string) => (calls[name] = (calls[name] ?? 0) + 1);

@Injectable()
class SemanticsTasks {
  constructor(private readonly audit: Audit) {}

  @Task('t.context')
  context(a: number, @TaskContext() ctx: TaskContext, b = 10): Record<string, unknown> {
    return {
      a,
      b,
      id: ctx.id,
      name: ctx.name,
      args: ctx.args,
      kwargs: ctx.kwargs,
      retries: ctx.retries,
      rootId: ctx.rootId,
      parentId: ctx.parentId,
      hostname: ctx.hostname,
      delivery: ctx.deliveryInfo,
      custom: ctx.headers['x-custom'],
      timeLimit: ctx.timeLimit,
      sameAsAls: currentTask() === ctx,
      audit: this.audit.who(),
    };
  }

  @Task('t.flaky')
  flaky(failures: number, @TaskContext() ctx: TaskContext): string {
    count('t.flaky');
    if (ctx.retries < failures) ctx.retry({ countdown: 0.05, exc: new Error('flaky') });
    return `ok after ${ctx.retries} retries`;
  }

  @Task('t.retryNoExc', { maxRetries: 1 })
  retryNoExc(@TaskContext() ctx: TaskContext): never {
    ctx.retry({ countdown: 0.01 });
  }

  @Task('t.auto', { autoretryFor: [DbBusy], dontAutoretryFor: ['Fatal'], maxRetries: 2, retryKwargs: { countdown: 0.01 } })
  auto(kind: string): string {
    count(`t.auto.${kind}`);
    if (kind === 'fatal') throw new Fatal('fatal');
    throw new DbBusy('busy');
  }

  @Task('t.soft', { softTimeLimit: 0.05 })
  async soft(@TaskContext() ctx: TaskContext): Promise<string> {
    await sleep(5000, undefined, { signal: ctx.signal });
    return 'not reached';
  }

  @Task('t.softCaught', { softTimeLimit: 0.05 })
  async softCaught(@TaskContext() ctx: TaskContext): Promise<string> {
    try {
      await sleep(5000, undefined, { signal: ctx.signal });
      return 'not reached';
    } catch {
      return `cleaned up after ${String((ctx.signal.reason as Error).name)}`;
    }
  }

  @Task('t.hang', { timeLimit: 0.1 })
  hang(): Promise<never> {
    return new Promise<never>(() => undefined);
  }

  @Task('t.quick')
  quick(): string {
    return 'quick';
  }

  @Task('t.ignored', { ignoreResult: true })
  ignored(fail: boolean): string {
    if (fail) throw new RangeError('ignored failure');
    return 'ignored';
  }

  @Task('t.ignoredErrors', { ignoreResult: true, storeErrorsEvenIfIgnored: true })
  ignoredErrors(): never {
    throw new RangeError('stored anyway');
  }

  @Task('t.started', { trackStarted: true })
  started(): string {
    return 'done';
  }

  @Task('t.expiring', { resultExpires: 60, trackStarted: true })
  expiring(x: number): number {
    return x;
  }

  @Task('t.limited', { rateLimit: '5/s' })
  limited(): number {
    return Date.now();
  }

  @Task('t.shared', { rateLimit: { global: '10/s' } })
  shared(): number {
    return Date.now();
  }

  @Task('t.waitForAbort')
  async waitForAbort(@TaskContext() ctx: TaskContext): Promise<string> {
    await sleep(60000, undefined, { signal: ctx.signal });
    return 'not reached';
  }
}

async function moduleWith(options: CeleryModuleOptions = {}): Promise<TestingModule> {
  const moduleRef = await Test.createTestingModule({
    imports: [CeleryModule.forRoot({ resultPollIntervalMs: 5, ...options })],
    providers: [SemanticsTasks, Audit],
  }).compile();
  await moduleRef.init();
  return moduleRef;
}

function failureOf(err: unknown): { excType: string; excModule: string; excMessage: unknown[] } {
  expect(err).toBeInstanceOf(TaskFailedError);
  const f = err as TaskFailedError;
  return { excType: f.excType, excModule: f.excModule ?? '', excMessage: f.excMessage };
}

describe('task semantics (memory transports)', () => {
  let moduleRef: TestingModule;
  let producer: Producer;
  let stored: ResultToStore[];
  let published: { queue: string; headers: Record<string, unknown> }[];

  beforeEach(async () => {
    calls = {};
    moduleRef = await moduleWith({ worker: { hostname: 'unit@test' } });
    producer = moduleRef.get(Producer);
    const store = moduleRef.get(ResultStore);
    stored = [];
    // every write ends in store() (storeUnlessSucceeded reads, then calls it)
    const original = store.store.bind(store);
    jest.spyOn(store, 'store').mockImplementation(async (r: ResultToStore) => {
      stored.push(r);
      return original(r);
    });
    const broker = moduleRef.get(Broker);
    const publish = broker.publish.bind(broker);
    published = [];
    jest.spyOn(broker, 'publish').mockImplementation(async (queue, message, route) => {
      published.push({ queue, headers: fromAmqpFieldValue(message.headers) as Record<string, unknown> });
      return publish(queue, message, route);
    });
  });

  afterEach(async () => {
    await moduleRef.close();
  });

  describe('task context', () => {
    it('hands the request to a @TaskContext() parameter that callers do not bind, and to services through CeleryTaskContext', async () => {
      const r = await producer.sendTask('t.context', { args: [1], kwargs: { b: 2 }, headers: { 'x-custom': 'yes' }, timeLimit: 30, softTimeLimit: 20 });
      const value = (await r.get({ timeout: 2000 })) as Record<string, unknown>;
      expect(value).toMatchObject({
        a: 1,
        b: 2,
        id: r.id,
        name: 't.context',
        args: [1],
        kwargs: { b: 2 },
        retries: 0,
        rootId: r.id,
        parentId: null,
        hostname: 'unit@test',
        delivery: { exchange: '', routingKey: 'celery', redelivered: false, priority: 0 },
        custom: 'yes',
        timeLimit: [30, 20],
        sameAsAls: true,
        audit: `t.context[${r.id}] try 0 on unit@test`,
      });
    });

    it('leaves a default value in place when the caller sends fewer arguments', async () => {
      const r = await producer.sendTask('t.context', { args: [7] });
      expect(await r.get({ timeout: 2000 })).toMatchObject({ a: 7, b: 10 });
    });

    it('CeleryTaskContext.get() outside a task says so', () => {
      expect(() => moduleRef.get(CeleryTaskContext).get()).toThrow('outside a running task');
      expect(moduleRef.get(CeleryTaskContext).tryGet()).toBeUndefined();
    });
  });

  describe('retries', () => {
    it('retries with the same id, retries + 1, parent = its own id and the same root, storing RETRY before each new run', async () => {
      const r = await producer.sendTask('t.flaky', { args: [2], headers: { 'x-trace': 'abc' } });
      await expect(r.get({ timeout: 3000 })).resolves.toBe('ok after 2 retries');
      expect(calls['t.flaky']).toBe(3);
      const retries = published.filter((p) => p.headers.id === r.id).slice(1);
      expect(retries.map((p) => p.headers.retries)).toEqual([1, 2]);
      for (const p of retries) {
        expect(p.queue).toBe('celery');
        expect(p.headers).toMatchObject({ root_id: r.id, parent_id: r.id, 'x-trace': 'abc', task: 't.flaky' });
        expect(typeof p.headers.eta).toBe('string');
      }
      expect(stored.filter((s) => s.taskId === r.id).map((s) => s.status)).toEqual(['RETRY', 'RETRY', 'SUCCESS']);
      const retryRow = stored.find((s) => s.status === 'RETRY');
      expect(retryRow?.result).toEqual({ exc_type: 'Exception', exc_message: ['flaky'], exc_module: 'builtins' });
      expect(retryRow?.children).toEqual([[[r.id, null], null]]);
      // the Retry's traceback, whose text is Celery's: "Retry in <countdown>s: <Python repr of exc>"
      expect(retryRow?.traceback).toMatch(/^Retry: Retry in 0\.05s: Exception\('flaky'\)\n/);
    });

    it('fails with the retry exception once maxRetries (default 3) is used up', async () => {
      const r = await producer.sendTask('t.flaky', { args: [10] });
      const err = await r.get({ timeout: 3000 }).catch((e: unknown) => e);
      expect(failureOf(err)).toEqual({ excType: 'Exception', excModule: 'builtins', excMessage: ['flaky'] });
      expect(calls['t.flaky']).toBe(4);
    });

    it('fails with MaxRetriesExceededError when retries run out without an exc', async () => {
      const r = await producer.sendTask('t.retryNoExc');
      const err = await r.get({ timeout: 3000 }).catch((e: unknown) => e);
      const f = failureOf(err);
      expect(f.excType).toBe('MaxRetriesExceededError');
      expect(f.excModule).toBe('celery.exceptions');
      expect(String(f.excMessage[0])).toContain(`Can't retry t.retryNoExc[${r.id}]`);
    });

    it('autoretryFor retries matching errors up to maxRetries, then fails with the error; dontAutoretryFor wins', async () => {
      const busy = await producer.sendTask('t.auto', { args: ['busy'] });
      expect(failureOf(await busy.get({ timeout: 3000 }).catch((e: unknown) => e))).toMatchObject({ excType: 'DbBusy', excMessage: ['busy'] });
      expect(calls['t.auto.busy']).toBe(3);
      const fatal = await producer.sendTask('t.auto', { args: ['fatal'] });
      expect(failureOf(await fatal.get({ timeout: 3000 }).catch((e: unknown) => e))).toMatchObject({ excType: 'Fatal' });
      expect(calls['t.auto.fatal']).toBe(1);
    });
  });

  describe('time limits', () => {
    it('soft limit: the signal fires and an await on it fails the task with SoftTimeLimitExceeded (billiard.exceptions)', async () => {
      const r = await producer.sendTask('t.soft');
      expect(failureOf(await r.get({ timeout: 3000 }).catch((e: unknown) => e))).toEqual({
        excType: 'SoftTimeLimitExceeded',
        excModule: 'billiard.exceptions',
        excMessage: [], // billiard raises SoftTimeLimitExceeded() without arguments (seen live: test/interop/semantics.interop.spec.ts)
      });
    });

    it('soft limit: a task that catches it and returns is a SUCCESS', async () => {
      const r = await producer.sendTask('t.softCaught');
      await expect(r.get({ timeout: 3000 })).resolves.toBe('cleaned up after SoftTimeLimitExceeded');
    });

    it('hard limit: FAILURE TimeLimitExceeded, acknowledged, and the slot is free for the next task', async () => {
      await moduleRef.close();
      moduleRef = await moduleWith({ worker: { concurrency: 1 } });
      producer = moduleRef.get(Producer);
      const hung = await producer.sendTask('t.hang');
      const next = await producer.sendTask('t.quick');
      expect(failureOf(await hung.get({ timeout: 3000 }).catch((e: unknown) => e))).toEqual({ excType: 'TimeLimitExceeded', excModule: 'billiard.exceptions', excMessage: [0.1] });
      // Celery's on_timeout stores the hard limit without a traceback
      expect((await moduleRef.get(ResultStore).getTaskMeta(hung.id)).traceback).toBeNull();
      await expect(next.get({ timeout: 3000 })).resolves.toBe('quick');
    });

    it("the message's timelimit header wins over the task's options, as Python's apply_async(time_limit=, soft_time_limit=) sets it", async () => {
      const r = await producer.sendTask('t.waitForAbort', { softTimeLimit: 0.05 });
      expect(failureOf(await r.get({ timeout: 3000 }).catch((e: unknown) => e)).excType).toBe('SoftTimeLimitExceeded');
      const hard = await producer.sendTask('t.hang', { timeLimit: 0.02 });
      expect(failureOf(await hard.get({ timeout: 3000 }).catch((e: unknown) => e)).excMessage).toEqual([0.02]);
    });

    it('module defaults (taskSoftTimeLimit) apply to tasks without their own', async () => {
      await moduleRef.close();
      moduleRef = await moduleWith({ taskSoftTimeLimit: 0.05 });
      const r = await moduleRef.get(Producer).sendTask('t.waitForAbort');
      expect(failureOf(await r.get({ timeout: 3000 }).catch((e: unknown) => e)).excType).toBe('SoftTimeLimitExceeded');
    });
  });

  describe('rate limits', () => {
    it("'5/s' admits one task every 200 ms (capacity 1, as kombu's bucket) without holding up other task names", async () => {
      const sent = Date.now();
      const limited = await Promise.all(Array.from({ length: 6 }, () => producer.sendTask('t.limited')));
      const quick = await producer.sendTask('t.quick');
      await expect(quick.get({ timeout: 3000 })).resolves.toBe('quick');
      const quickDone = Date.now() - sent;
      const times = (await Promise.all(limited.map((r) => r.get({ timeout: 5000 })))) as number[];
      times.sort((a, b) => a - b);
      const gaps = times.slice(1).map((t, i) => t - times[i]);
      expect(Math.min(...gaps)).toBeGreaterThanOrEqual(180);
      expect(times[5] - times[0]).toBeGreaterThanOrEqual(950);
      expect(quickDone).toBeLessThan(500);
    });

    it('a shared limit ({ global }) on the memory backend spaces starts too, and the control plane can change a rate at run time', async () => {
      const limited = await Promise.all(Array.from({ length: 4 }, () => producer.sendTask('t.shared')));
      const times = ((await Promise.all(limited.map((r) => r.get({ timeout: 5000 })))) as number[]).sort((a, b) => a - b);
      expect(times[3] - times[0]).toBeGreaterThanOrEqual(250);
      moduleRef.get(CeleryWorker).rateLimiter.setRate('t.limited', '1000/s');
      const fast = await Promise.all(Array.from({ length: 5 }, () => producer.sendTask('t.limited')));
      const fastTimes = ((await Promise.all(fast.map((r) => r.get({ timeout: 5000 })))) as number[]).sort((a, b) => a - b);
      expect(fastTimes[4] - fastTimes[0]).toBeLessThan(150);
    });
  });

  describe('results', () => {
    it('ignoreResult stores nothing, failures included; storeErrorsEvenIfIgnored stores the FAILURE', async () => {
      // through the typed reference the message says ignore_result: true; a bare sendTask says false, which
      // wins over the task's option on a Celery 5.7 worker too (get_actual_ignore_result)
      const ignored = producer.task(SemanticsTasks, 'ignored');
      const ok = await ignored.delay(false);
      const bad = await ignored.delay(true);
      const kept = await producer.task(SemanticsTasks, 'ignoredErrors').delay();
      expect(failureOf(await kept.get({ timeout: 3000 }).catch((e: unknown) => e)).excType).toBe('ValueError');
      await sleep(50);
      expect(stored.map((s) => s.taskId)).not.toContain(ok.id);
      expect(stored.map((s) => s.taskId)).not.toContain(bad.id);
      expect(await bad.state()).toBe('PENDING');
    });

    it('resultExpires gives every row of the task the same TTL; resultExtended fills the request fields', async () => {
      await moduleRef.close();
      moduleRef = await moduleWith({ resultExtended: true, worker: { hostname: 'unit@test' } });
      const store = moduleRef.get(ResultStore);
      const seen: ResultToStore[] = [];
      const original = store.store.bind(store);
      jest.spyOn(store, 'store').mockImplementation(async (r: ResultToStore) => {
        seen.push(r);
        return original(r);
      });
      const r = await moduleRef.get(Producer).sendTask('t.expiring', { args: [4] });
      await expect(r.get({ timeout: 2000 })).resolves.toBe(4);
      expect(seen.map((s) => [s.status, s.expiresSeconds])).toEqual([['STARTED', 60], ['SUCCESS', 60]]);
      expect(seen[1].extended).toMatchObject({ name: 't.expiring', args: [4], kwargs: {}, worker: 'unit@test', retries: 0, queue: 'celery' });
    });

    it('trackStarted stores STARTED with the pid and the hostname before the task runs', async () => {
      const r = await producer.sendTask('t.started');
      await expect(r.get({ timeout: 3000 })).resolves.toBe('done');
      const rows = stored.filter((s) => s.taskId === r.id);
      expect(rows.map((s) => s.status)).toEqual(['STARTED', 'SUCCESS']);
      expect(rows[0].result).toEqual({ pid: process.pid, hostname: 'unit@test' });
    });
  });

  it('abortTask fires the running task signal; WorkerShutdown sends the message back instead of storing', async () => {
    const r = await producer.sendTask('t.waitForAbort');
    const worker = moduleRef.get(CeleryWorker);
    for (let i = 0; i < 100 && !worker.runningTaskIds().includes(r.id); i++) await sleep(5);
    const { WorkerShutdown } = await import('../../../lib');
    expect(worker.abortTask(r.id, new WorkerShutdown())).toBe(true);
    await sleep(20);
    expect(stored.map((s) => s.taskId)).not.toContain(r.id);
    // the message went back and runs again (and waits again): abort it for good with another reason
    for (let i = 0; i < 100 && !worker.runningTaskIds().includes(r.id); i++) await sleep(5);
    expect(worker.abortTask(r.id, new RangeError('stop'))).toBe(true);
    expect(failureOf(await r.get({ timeout: 3000 }).catch((e: unknown) => e)).excType).toBe('ValueError');
  });
});

describe('retry rules (pure)', () => {
  const task = { task: 't', id: 'id-1', retries: 0, args: [1], kwargs: {} };

  it("exponential back-off is Celery's: min(max, factor * 2^retries), full jitter picks 0..n", () => {
    expect(exponentialBackoff(1, 0, 600, false)).toBe(1);
    expect(exponentialBackoff(2, 3, 600, false)).toBe(16);
    expect(exponentialBackoff(1, 20, 600, false)).toBe(600);
    expect(exponentialBackoff(4, 2, 600, true, () => 0.999)).toBe(16);
    expect(exponentialBackoff(4, 2, 600, true, () => 0)).toBe(0);
  });

  it('autoretry with retryBackoff uses the back-off as the countdown; without it the retryKwargs countdown or the default delay', () => {
    const opts = { autoretryFor: [Error], retryBackoff: 3, retryJitter: false };
    expect(autoretryFor(new Error('x'), 2, opts)?.countdown).toBe(12);
    expect(autoretryFor(new Error('x'), 2, { autoretryFor: ['Error'] })?.countdown).toBeUndefined();
    expect(autoretryFor(new Error('x'), 0, { autoretryFor: [TypeError] })).toBeNull();
    const retry = retryOrGiveUp(task, { exc: new Error('x') }, {});
    expect((retry as { options: { countdown: number } }).options.countdown).toBe(180);
    expect((retryOrGiveUp(task, {}, { defaultRetryDelay: 5 }) as { options: { countdown: number } }).options.countdown).toBe(5);
  });

  it("Retry's text is Celery's: when, and the exception as Python's repr of its stored class", () => {
    expect(new Retry({ countdown: 10, exc: new RangeError('busy') }).message).toBe("Retry in 10s: ValueError('busy')");
    expect(new Retry({ countdown: 180 }).message).toBe('Retry in 180s');
    expect(new Retry({ eta: new Date(Date.UTC(2025, 0, 15, 12, 0, 10, 123)) }).message).toBe('Retry at 2025-01-15 12:00:10.123000+00:00');
  });

  it("tupleRepr is Python's repr of a tuple", () => {
    expect(tupleRepr([1, 'two'])).toBe("(1, 'two')");
    expect(tupleRepr([1])).toBe('(1,)');
    expect(tupleRepr([])).toBe('()');
  });

  describe('the retry message (as a Python 5.7 worker publishes it: test/interop/semantics.interop.spec.ts)', () => {
    const incoming = (spec: Parameters<typeof encodeTaskMessage>[0]) => {
      const m = encodeTaskMessage(spec, { nowMicros: Date.now() * 1000, origin: 'gen1@client' });
      return decodeTaskMessage({ headers: m.headers, contentType: 'application/json', correlationId: spec.id, priority: m.properties.priority, body: m.body });
    };
    const retried = (task: ReturnType<typeof incoming>) => encodeRetryMessage(task, { countdown: 10 }, { nowMicros: Date.now() * 1000, origin: 'gen2@worker', peer: '5.3' });

    it("keeps the original parent_id when it had one (Celery's send_task fills it only when empty), else the task's own id", () => {
      expect(retried(incoming({ task: 't', id: 'id-1', parentId: 'parent-x', rootId: 'root-x' })).headers).toMatchObject({ parent_id: 'parent-x', root_id: 'root-x' });
      expect(retried(incoming({ task: 't', id: 'id-1' })).headers).toMatchObject({ parent_id: 'id-1', root_id: 'id-1' });
    });

    it('argsrepr is the args as a tuple; the original origin, stamps and replaced_task_nesting are carried', () => {
      const task = incoming({ task: 't', id: 'id-1', args: [1, 'two'], stampedHeaders: ['stamp1'], stamps: { stamp1: 'st', other: 'x' }, replacedTaskNesting: 2 });
      expect(retried(task).headers).toMatchObject({
        argsrepr: "(1, 'two')", origin: 'gen1@client', stamped_headers: ['stamp1'], stamps: { stamp1: 'st' }, replaced_task_nesting: 2, retries: 1,
      });
      expect(retried(incoming({ task: 't', id: 'id-1' })).headers).toMatchObject({ argsrepr: '()', stamped_headers: null, stamps: {}, replaced_task_nesting: 0 });
    });
  });

  it('maxRetries null retries for ever; a call can lower it', () => {
    expect(retryOrGiveUp({ ...task, retries: 1000 }, {}, { maxRetries: null })).toHaveProperty('excType', 'Retry');
    const exc = new Error('out');
    expect(retryOrGiveUp({ ...task, retries: 1 }, { maxRetries: 1, exc }, {})).toBe(exc);
  });
});

@Injectable()
class NoAccessorTasks {
  @Task('t.alsProbe')
  probe(@TaskContext() ctx: TaskContext): string {
    return currentTask() === ctx ? 'storage on' : 'storage off';
  }
}

describe('task context storage (AsyncLocalStorage) is used only when asked for', () => {
  async function probe(options: CeleryModuleOptions): Promise<unknown> {
    const moduleRef = await Test.createTestingModule({ imports: [CeleryModule.forRoot(options)], providers: [NoAccessorTasks] }).compile();
    await moduleRef.init();
    try {
      return await (await moduleRef.get(Producer).sendTask('t.alsProbe')).get({ timeout: 2000 });
    } finally {
      await moduleRef.close();
    }
  }

  it('is off when no provider injects CeleryTaskContext (a live AsyncLocalStorage makes every promise dearer on Node 20)', async () => {
    await expect(probe({})).resolves.toBe('storage off');
  });

  it('is on with worker.taskContextStorage: true', async () => {
    await expect(probe({ worker: { taskContextStorage: true } })).resolves.toBe('storage on');
  });
});
