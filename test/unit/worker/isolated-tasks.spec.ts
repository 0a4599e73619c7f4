import { Injectable } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import { CeleryModule, CeleryWorker, Producer, Task, TaskContext, TaskFailedError, TaskRegistrationError, TaskRevokedError } from '../../../lib';
import { IsolatedModuleTasks } from './fixtures/isolated-module-tasks';

function failureOf(err: unknown): [string, string | null, unknown[]] {
  expect(err).toBeInstanceOf(TaskFailedError);
  const f = err as TaskFailedError;
  return [f.excType, f.excModule, f.excMessage];
}

/** `@Task({ isolate: 'thread' })` through the module: discovery, the worker's pool, the limits. */
describe('isolated tasks in the worker', () => {
  let moduleRef: TestingModule;
  let producer: Producer;

  beforeAll(async () => {
    moduleRef = await Test.createTestingModule({
      imports: [CeleryModule.forRoot({ resultPollIntervalMs: 5, worker: { concurrency: 2, isolatedThreads: 1 } })],
      providers: [IsolatedModuleTasks],
    }).compile();
    await moduleRef.init();
    producer = moduleRef.get(Producer);
  }, 30000);

  afterAll(async () => {
    await moduleRef?.close();
  });

  it('runs the method in a worker thread with the request as data', async () => {
    const r = await producer.sendTask('iso.request');
    await expect(r.get({ timeout: 20000 })).resolves.toEqual({ id: r.id, name: 'iso.request', retries: 0, thread: true });
    await expect((await producer.sendTask('iso.square', { args: [7] })).get({ timeout: 20000 })).resolves.toBe(49);
  }, 30000);

  it('a hard limit terminates a busy loop (the only way to stop it) and the pool serves the next task', async () => {
    const spin = await producer.sendTask('iso.spin');
    expect(failureOf(await spin.get({ timeout: 20000 }).catch((e: unknown) => e))).toEqual(['TimeLimitExceeded', 'billiard.exceptions', [0.3]]);
    // one thread only: this runs only because the spinning thread was terminated
    await expect((await producer.sendTask('iso.square', { args: [3] })).get({ timeout: 20000 })).resolves.toBe(9);
  }, 30000);

  it('revoke with terminate stops the thread of a task that ignores its signal: REVOKED terminated, the pool serves the next task', async () => {
    const forever = await producer.sendTask('iso.forever');
    const worker = moduleRef.get(CeleryWorker);
    const deadline = Date.now() + 10000;
    while (!worker.runningTaskIds().includes(forever.id) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 300)); // in its thread by now
    expect(worker.abortTask(forever.id, new TaskRevokedError('terminated'))).toBe(true);
    expect(failureOf(await forever.get({ timeout: 20000 }).catch((e: unknown) => e))).toEqual(['TaskRevokedError', 'celery.exceptions', ['terminated']]);
    expect((await forever.info()).status).toBe('REVOKED');
    // one thread only: this runs only because the busy thread was terminated
    await expect((await producer.sendTask('iso.square', { args: [5] })).get({ timeout: 20000 })).resolves.toBe(25);
  }, 30000);

  it('a soft limit reaches a loop that never awaits through the shared abort flag', async () => {
    const r = await producer.sendTask('iso.softLoop');
    expect(failureOf(await r.get({ timeout: 20000 }).catch((e: unknown) => e))[0]).toBe('SoftTimeLimitExceeded');
  }, 30000);
});

@Injectable()
class NoModule {
  @Task({ name: 'iso.bad', isolate: 'thread' })
  bad(): void {}
}

@Injectable()
class WithContext {
  @Task({ name: 'iso.ctx', isolate: 'thread', module: __filename })
  ctx(@TaskContext() _ctx: TaskContext): void {}
}

describe('isolated tasks: checked at bootstrap', () => {
  async function boot(provider: new () => unknown): Promise<unknown> {
    const moduleRef = await Test.createTestingModule({ imports: [CeleryModule.forRoot({})], providers: [provider] }).compile();
    try {
      await moduleRef.init();
      return null;
    } catch (err) {
      return err;
    } finally {
      await moduleRef.close().catch(() => undefined);
    }
  }

  it('without module: names the option', async () => {
    const err = await boot(NoModule);
    expect(err).toBeInstanceOf(TaskRegistrationError);
    expect(String(err)).toContain('module is required');
  });

  it('with a @TaskContext() parameter, or a class its module does not export: says why', async () => {
    expect(String(await boot(WithContext))).toContain('cannot take a @TaskContext() parameter');
  });
});
