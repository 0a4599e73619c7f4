import { Injectable } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import { AsyncResult, CeleryConfigError, CeleryModule, normalizeCeleryOptions, Periodic, PeriodicScheduler, ResultStore, Task, TaskRegistrationError } from '../../../lib';
import { tickTaskId } from '../../../lib/scheduler/schedule';

describe('scheduler options', () => {
  it("accepts Celery's beat_schedule and timezone as written", () => {
    const config = normalizeCeleryOptions({
      beat_schedule: {
        'add-every-30-seconds': { task: 'tasks.add', schedule: 30.0, args: [16, 16] },
        'nightly': { task: 'reports.nightly', schedule: { minute: 30, hour: 2 }, kwargs: { full: true }, options: { queue: 'reports', expires: 3600 } },
      },
      timezone: 'Europe/Paris',
    } as never);
    expect(config.scheduler.entries).toEqual([
      { name: 'add-every-30-seconds', task: 'tasks.add', timing: { everyMs: 30000 }, args: [16, 16], kwargs: {}, options: {} },
      { name: 'nightly', task: 'reports.nightly', timing: { cron: '30 2 * * *', timezone: 'Europe/Paris', dayOfMonthAndWeek: true }, args: [], kwargs: { full: true }, options: { queue: 'reports', expires: 3600 } },
    ]);
    expect(config.scheduler).toMatchObject({ enabled: null, timezone: 'Europe/Paris', table: 'celery_periodic_ticks', claimTimeoutMs: 35000, catchUpMs: 60000, serialConsistency: 'SERIAL' });
  });

  it('defaults: no schedule, enabled when one exists, UTC', () => {
    expect(normalizeCeleryOptions({}).scheduler).toEqual({ enabled: null, timezone: 'UTC', entries: [], table: 'celery_periodic_ticks', claimTimeoutMs: 35000, catchUpMs: 60000, serialConsistency: 'SERIAL' });
  });

  it('takes a claim over only after a sender has given up: claimTimeoutMs defaults to publishTimeoutMs + 5 s', () => {
    expect(normalizeCeleryOptions({ publishTimeoutMs: 2000 }).scheduler.claimTimeoutMs).toBe(7000);
    expect(normalizeCeleryOptions({ publishTimeoutMs: 2000, scheduler: { claimTimeoutMs: 500 } }).scheduler.claimTimeoutMs).toBe(500);
  });

  it('names the key of a bad option, as the user wrote it', () => {
    const bad = (options: object) => () => normalizeCeleryOptions(options as never);
    expect(bad({ scheduler: { enable: true } })).toThrow(new CeleryConfigError('scheduler.enable', 'unknown option'));
    expect(bad({ scheduler: { enabled: 'yes' } })).toThrow('scheduler.enabled: must be true or false');
    expect(bad({ scheduler: { timezone: 'Mars/Olympus' } })).toThrow('scheduler.timezone: unknown time zone "Mars/Olympus"');
    expect(bad({ timezone: 'Mars/Olympus' })).toThrow('timezone (scheduler.timezone): unknown time zone');
    expect(bad({ scheduler: { claimTimeoutMs: 10 } })).toThrow('scheduler.claimTimeoutMs: must be an integer >= 100');
    expect(bad({ scheduler: { table: 'bad-name' } })).toThrow('scheduler.table: not a valid table name');
    expect(bad({ beat_schedule: { a: { task: 'x', schedule: 10, option: {} } } })).toThrow('beat_schedule.a.option: unknown option');
    expect(bad({ scheduler: { schedule: { a: { task: 'x', schedule: 'every day' } } } })).toThrow(/scheduler\.schedule\.a\.schedule: /);
    expect(bad({ beat_schedules: {} })).toThrow('beat_schedules: unknown option');
  });
});

@Injectable()
class PeriodicTasks {
  readonly added: number[] = [];

  @Periodic({ every: '1s', args: [2, 3] })
  @Task('tasks.add')
  add(x: number, y: number): number {
    this.added.push(x + y);
    return x + y;
  }
}

describe('@Periodic on the embedded default (memory://, one process)', () => {
  let moduleRef: TestingModule | null = null;
  afterEach(async () => {
    await moduleRef?.close().catch(() => undefined); // close() re-awaits a failed initialisation
    moduleRef = null;
  });

  it('sends the @Task() it decorates through the Producer each tick under the tick task id; the worker runs it', async () => {
    moduleRef = await Test.createTestingModule({ imports: [CeleryModule.forRoot({ scheduler: { catchUpMs: 0 } })], providers: [PeriodicTasks] }).compile();
    await moduleRef.init();
    const scheduler = moduleRef.get(PeriodicScheduler);
    expect(scheduler.running).toBe(true);
    expect(scheduler.schedules()).toEqual([{ name: 'PeriodicTasks.add', task: 'tasks.add', timing: { everyMs: 1000 }, args: [2, 3], kwargs: {}, options: {} }]);
    const tasks = moduleRef.get(PeriodicTasks);
    for (let i = 0; i < 40 && tasks.added.length < 2; i++) await new Promise((r) => setTimeout(r, 100));
    expect(tasks.added.slice(0, 2)).toEqual([5, 5]);
    // the tick's task id: the result of the last whole second's tick (or the one before) is stored under it
    const store = moduleRef.get(ResultStore);
    const second = Math.floor(Date.now() / 1000) * 1000;
    const ids = [second, second - 1000, second - 2000].map((t) => tickTaskId('PeriodicTasks.add', t));
    const results = await Promise.all(ids.map((id) => new AsyncResult(id, store, 50).state()));
    expect(results).toContain('SUCCESS');
  });

  it('a configured schedule (beat_schedule) sends any task by name; scheduler.enabled false sends nothing', async () => {
    const store = async (enabled: boolean) => {
      moduleRef = await Test.createTestingModule({
        imports: [CeleryModule.forRoot({ scheduler: { enabled, catchUpMs: 0, schedule: { 'sum-every-second': { task: 'tasks.add', schedule: 1, args: [20, 22] } } } })],
        providers: [PeriodicTasks],
      }).compile();
      await moduleRef.init();
      await new Promise((r) => setTimeout(r, 2300));
      const added = moduleRef.get(PeriodicTasks).added;
      await moduleRef.close();
      moduleRef = null;
      return added;
    };
    const on = await store(true);
    expect(on.filter((v) => v === 42).length).toBeGreaterThanOrEqual(2);
    const off = await store(false);
    expect(off).toEqual([]);
  });

  it('refuses @Periodic() on a method that is no @Task() and names no task', async () => {
    @Injectable()
    class Orphan {
      @Periodic({ every: '1m' })
      cleanup(): void {}
    }
    moduleRef = await Test.createTestingModule({ imports: [CeleryModule.forRoot({})], providers: [Orphan] }).compile();
    expect(await moduleRef.init().catch((e: unknown) => e)).toEqual(new TaskRegistrationError("Orphan.cleanup: @Periodic() needs a task to send: put it on a @Task() method, or name one with task: 'tasks.name'"));
  });

  it('refuses a bad @Periodic() timing, naming the method and the option', async () => {
    @Injectable()
    class BadCron {
      @Periodic({ cron: '0 25 * * *', task: 'x' })
      nightly(): void {}
    }
    moduleRef = await Test.createTestingModule({ imports: [CeleryModule.forRoot({})], providers: [BadCron] }).compile();
    expect(String(await moduleRef.init().catch((e: unknown) => e))).toMatch(/BadCron\.nightly: @Periodic\(\) option cron: /);
  });
});

describe("the sample's periodic task", () => {
  it('SAMPLE_SCHEDULER=1 runs TasksService.add(2, 2) every 30 s in a worker; without it the scheduler is off', async () => {
    const { AppModule } = await import('../../../sample/app.module');
    const saved = process.env.SAMPLE_SCHEDULER;
    try {
      for (const [value, running] of [['1', true], [undefined, false]] as const) {
        if (value === undefined) delete process.env.SAMPLE_SCHEDULER;
        else process.env.SAMPLE_SCHEDULER = value;
        const moduleRef = await Test.createTestingModule({ imports: [AppModule.register(true)] }).compile();
        await moduleRef.init();
        const scheduler = moduleRef.get(PeriodicScheduler);
        expect(scheduler.running).toBe(running);
        expect(scheduler.schedules()).toEqual([{ name: 'TasksService.add', task: 'tasks.add', timing: { everyMs: 30000 }, args: [2, 2], kwargs: {}, options: { ignoreResult: true } }]);
        await moduleRef.close();
      }
    } finally {
      if (saved === undefined) delete process.env.SAMPLE_SCHEDULER;
      else process.env.SAMPLE_SCHEDULER = saved;
    }
  });
});
