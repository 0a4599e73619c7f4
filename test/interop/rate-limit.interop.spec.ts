import { Injectable } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import { maxInWindow, windowBound } from '../../bench/rate-limit-accuracy';
import { CeleryModule, Producer, Task, TaskContext } from '../../lib';
import { TasksService } from '../../sample/tasks.service';
import { KEYSPACE, rawCassandra, removeQueueAndTable, uniqueName } from '../support/real-services';
import { ensurePythonCelery, ensurePythonCelery52, interopCeleryconfig, PythonEnv, PythonWorker, pythonClient, VENV_52 } from './support/python-celery';

/** How many tasks a burst sends: the first runs at once, then one per 200 ms at '5/s'. */
const BURST = 6;
const PY_MIN_GAP = 180;
/** A '10/s' limit shared by two workers: more tasks than one second allows, so a limit not shared shows. */
const SHARED_BURST = 16;
const sharedTask = uniqueName('tasks.shared');

/** Tasks of this file only: the time of an unlimited task, and a limit shared by two workers. */
@Injectable()
class RateTasks {
  /** The time in ms, without a limit: sent after a burst of tasks.limited, it must not wait behind them. */
  @Task('tasks.nowMs')
  nowMs(): number {
    return Date.now();
  }
}

@Injectable()
class SharedTasks {
  /** The time in ms and the worker that ran it, at most 10 a second over every worker. */
  @Task(sharedTask, { rateLimit: { global: '10/s' } })
  shared(@TaskContext() ctx: TaskContext): { at: number; worker: string } {
    return { at: Date.now(), worker: ctx.hostname };
  }
}

interface Outcome<T = unknown> {
  id: string;
  status: string;
  result?: { json?: T };
}

/** The gaps between consecutive start times, ms. */
function gaps(times: number[]): number[] {
  return times.slice(1).map((t, i) => t - times[i]);
}

/** What the suite says of a burst: the start times from the first, and the gaps. */
function pattern(times: number[]): { starts: number[]; gaps: number[]; total: number } {
  const sorted = [...times].sort((a, b) => a - b);
  return { starts: sorted.map((t) => t - sorted[0]), gaps: gaps(sorted), total: sorted.at(-1)! - sorted[0] };
}

/**
 * A burst under a capacity-1 bucket at '5/s' (kombu's, as Celery creates it): one every 200 ms, none
 * early, none much late. A Python task reads the time in a pool thread after the handoff, a few ms
 * after its admission: its gaps get `minGap` 180.
 */
function expectFiveASecond(times: number[], minGap = 190): void {
  const { gaps: g, total } = pattern(times);
  expect(g).toHaveLength(times.length - 1);
  for (const gap of g) {
    expect(gap).toBeGreaterThanOrEqual(minGap);
    expect(gap).toBeLessThan(350);
  }
  expect(total).toBeGreaterThanOrEqual((times.length - 1) * 200 - (200 - minGap));
}

const say = (line: string) => process.stdout.write(`[rate-limit interop] ${line}\n`);

/**
 * Rate limits (`rateLimit`, Celery's `rate_limit`) against real Python Celery, live, both ways: a
 * Python client's burst to our worker, our Producer's burst to a Python worker with
 * `rate_limit='5/s'`, the two workers' admission patterns for the same burst compared, and a
 * limit shared by two NestJS workers (not in Celery) under a Python client's burst. The newest
 * Celery 5.x and 5.2.6 (Debian bookworm's), one Python worker each, one shared result table.
 */
describe('rate limits with Python Celery', () => {
  const table = uniqueName('ratelimit');
  // no STARTED row: its write, before the task body reads the time, would blur the start times
  const extraConfig = { task_track_started: false };
  const env: PythonEnv = { pyQueue: uniqueName('py_rate'), table, extraConfig };
  const env52: PythonEnv = { pyQueue: uniqueName('py_rate52'), table, venv: VENV_52, extraConfig };
  const jsQueue = uniqueName('js_rate');
  const jsQueue52 = uniqueName('js_rate52');
  const sharedQueue = uniqueName('js_shared');
  const rateTable = uniqueName('rate_limits');
  const celeryconfig = interopCeleryconfig(table, jsQueue);
  let worker: PythonWorker;
  let worker52: PythonWorker;
  let app: TestingModule;
  let app52: TestingModule;
  const sharedApps: TestingModule[] = [];
  let producer: Producer;
  let producer52: Producer;

  beforeAll(async () => {
    ensurePythonCelery();
    ensurePythonCelery52();
    app = await Test.createTestingModule({
      imports: [CeleryModule.forRoot({ ...celeryconfig, resultPollIntervalMs: 20, worker: { hostname: 'nestjs-rate@localhost' } })],
      providers: [TasksService, RateTasks],
    }).compile();
    await app.init(); // creates the shared table first
    producer = app.get(Producer);
    app52 = await Test.createTestingModule({
      imports: [CeleryModule.forRoot({ ...celeryconfig, task_default_queue: jsQueue52, peerCompat: '5.2', resultPollIntervalMs: 20, worker: { hostname: 'nestjs-rate52@localhost' } })],
      providers: [TasksService, RateTasks],
    }).compile();
    for (const name of ['a', 'b']) {
      sharedApps.push(
        await Test.createTestingModule({
          imports: [CeleryModule.forRoot({ ...celeryconfig, task_default_queue: sharedQueue, globalRateLimits: { table: rateTable }, worker: { hostname: `nestjs-shared-${name}@localhost` } })],
          providers: [SharedTasks],
        }).compile(),
      );
    }
    [worker, worker52] = await Promise.all([PythonWorker.start(env), PythonWorker.start(env52), app52.init(), ...sharedApps.map((a) => a.init())]);
    producer52 = app52.get(Producer);
    // warm up every thread of both Python workers: each opens its own Cassandra session on its first
    // task (Celery's backend is per thread), which would delay the first starts of a burst by ~300 ms
    await Promise.all([warmUp(producer, env, worker), warmUp(producer52, env52, worker52)]);
  }, 300000);

  /**
   * Four tasks.sleep to the worker's four threads, until all four come back. A pool thread whose
   * first Cassandra session fails to open (the pure-Python driver of 5.2.6 on a busy 2-core
   * machine) loses that task's result — Celery acknowledges before running — so a round that does
   * not come back in 30 s is sent again (three rounds), with what the worker logged meanwhile.
   */
  async function warmUp(p: Producer, on: PythonEnv, w: PythonWorker): Promise<void> {
    for (let round = 1; ; round++) {
      const logged = w.log().length;
      const sent = await Promise.all(Array.from({ length: 4 }, () => p.sendTask('tasks.sleep', { queue: on.pyQueue, args: [0.3] })));
      const outcomes = await Promise.allSettled(sent.map((r) => r.get({ timeout: 30000 })));
      const failed = outcomes.filter((o) => o.status === 'rejected');
      if (failed.length === 0) return;
      const why = `${failed.length} of 4 warm-up tasks on ${on.pyQueue} did not come back (round ${round}): ${String((failed[0] as PromiseRejectedResult).reason)}\nthe worker logged meanwhile:\n${w.log().slice(logged).slice(-4000)}`;
      if (round === 3) throw new Error(why);
      say(why);
    }
  }

  afterAll(async () => {
    // SIGKILL: a warm shutdown takes ~9 s even when idle, and nothing of theirs is kept
    await Promise.all([worker?.stop('SIGKILL'), worker52?.stop('SIGKILL')]);
    await Promise.all([app, app52, ...sharedApps].map((a) => a?.close()));
    await removeQueueAndTable([env.pyQueue, env52.pyQueue, jsQueue, jsQueue52, sharedQueue], table);
    const cql = await rawCassandra();
    try {
      await cql.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${rateTable}`);
    } finally {
      await cql.shutdown();
    }
  });

  /** A Python client sends BURST × tasks.limited and then tasks.nowMs, all at once, and get()s them: the values Python's get() returned. */
  async function pythonBurst(on: PythonEnv, queue: string): Promise<{ limited: number[]; unlimited: number }> {
    const calls = [...Array.from({ length: BURST }, () => ({ task: 'tasks.limited', queue })), { task: 'tasks.nowMs', queue }];
    const outcomes = await pythonClient<Outcome<number>[]>(on, { op: 'calls', calls, timeout: 30 });
    for (const out of outcomes) expect(out).toMatchObject({ status: 'SUCCESS', result: { json: expect.any(Number) } });
    const values = outcomes.map((o) => o.result!.json!);
    return { limited: values.slice(0, BURST), unlimited: values[BURST] };
  }

  /** The Python client's burst to our worker: spaced by the limit; the unlimited task sent after it runs at once. */
  async function expectLimitedForPythonClient(on: PythonEnv, queue: string, label: string): Promise<void> {
    const { limited, unlimited } = await pythonBurst(on, queue);
    const p = pattern(limited);
    say(`${label}: starts ${p.starts.join(', ')} ms (gaps ${p.gaps.join(', ')}; total ${p.total}); unlimited task started ${unlimited - Math.min(...limited)} ms after the first`);
    expectFiveASecond(limited);
    // sent after the whole burst, it neither waits for the limit nor behind the tasks that do
    expect(unlimited - Math.min(...limited)).toBeLessThan(150);
  }

  /** Our Producer sends the same burst (and an unlimited task after it) to a Python worker and to ours at once: both workers' start times. */
  async function burstToBoth(to: Producer, pyQueue: string, ourQueue: string) {
    const send = (task: string, queue: string) => to.sendTask(task, { queue });
    const sentAt = Date.now();
    const sent = await Promise.all([
      ...Array.from({ length: BURST }, () => send('tasks.pyLimited', pyQueue)),
      send('tasks.now', pyQueue),
      ...Array.from({ length: BURST }, () => send('tasks.limited', ourQueue)),
      send('tasks.nowMs', ourQueue),
    ]);
    const values = (await Promise.all(sent.map((r) => r.get({ timeout: 30000 })))) as number[];
    const theirs = values.slice(0, BURST);
    const ours = values.slice(BURST + 1, 2 * BURST + 1);
    return { sentAt, theirs, theirUnlimited: values[BURST] * 1000, ours, ourUnlimited: values[2 * BURST + 1] };
  }

  /**
   * Both workers' starts for the same burst: the first at once, then one per 200 ms, each start within
   * a few ms of the other worker's. `pythonExtra`: kombu 5.2.4's bucket (Celery 5.2.6) admits a second
   * task at once after an idle spell (it does not advance its clock while full, so the idle time counts
   * as refill; kombu 5.7 fixed it); ours keeps kombu 5.7's pattern for every peer.
   */
  function compareWorkers(label: string, burst: Awaited<ReturnType<typeof burstToBoth>>, pythonExtra = false): void {
    const [theirs, ours] = [pattern(burst.theirs), pattern(burst.ours)];
    const first = (times: number[]) => Math.min(...times) - burst.sentAt;
    say(`${label} Python worker: first ${first(burst.theirs)} ms after sending, gaps ${theirs.gaps.join(', ')} (total ${theirs.total}); unlimited ${Math.round(burst.theirUnlimited - Math.min(...burst.theirs))} ms after the first`);
    say(`${label} NestJS worker: first ${first(burst.ours)} ms after sending, gaps ${ours.gaps.join(', ')} (total ${ours.total}); unlimited ${burst.ourUnlimited - Math.min(...burst.ours)} ms after the first`);
    expectFiveASecond(burst.ours);
    if (pythonExtra) {
      expect(theirs.gaps[0]).toBeLessThan(50);
      expectFiveASecond(burst.theirs.slice(1), PY_MIN_GAP);
    } else expectFiveASecond(burst.theirs, PY_MIN_GAP);
    for (const times of [burst.theirs, burst.ours]) expect(first(times)).toBeLessThan(250);
    const offset = pythonExtra ? 1 : 0;
    for (let i = 0; i + offset < BURST; i++) expect(Math.abs(ours.starts[i] - theirs.starts[i + offset])).toBeLessThan(60);
    // neither worker holds an unlimited task behind the limited ones
    expect(burst.theirUnlimited - Math.min(...burst.theirs)).toBeLessThan(150);
    expect(burst.ourUnlimited - Math.min(...burst.ours)).toBeLessThan(150);
  }

  describe('Celery 5.7', () => {
    it(`Python client → NestJS worker: ${BURST} × tasks.limited ('5/s') start 200 ms apart, as Python's get() returns them; tasks.nowMs sent after them is not held up`, async () => {
      await expectLimitedForPythonClient(env, jsQueue, '5.7 client → NestJS');
    });

    it(`NestJS Producer → Python worker: ${BURST} × tasks.pyLimited (rate_limit='5/s') start 200 ms apart; our worker admits the same burst of tasks.limited in the same pattern`, async () => {
      compareWorkers('Producer → 5.7', await burstToBoth(producer, env.pyQueue, jsQueue));
    });

    it(`a limit shared by two NestJS workers ({ global: '10/s' }), Python client: ${SHARED_BURST} tasks start ≥ 100 ms apart (less a start's allowed lateness) over both workers`, async () => {
      const calls = Array.from({ length: SHARED_BURST }, () => ({ task: sharedTask, queue: sharedQueue }));
      const outcomes = await pythonClient<Outcome<{ at: number; worker: string }>[]>(env, { op: 'calls', calls, timeout: 30 });
      for (const out of outcomes) expect(out).toMatchObject({ status: 'SUCCESS', result: { json: { at: expect.any(Number), worker: expect.any(String) } } });
      const runs = outcomes.map((o) => o.result!.json!);
      const times = runs.map((r) => r.at);
      const p = pattern(times);
      const byWorker = (w: string) => runs.filter((r) => r.worker === w).length;
      say(`shared 10/s, 2 workers (${byWorker('nestjs-shared-a@localhost')} + ${byWorker('nestjs-shared-b@localhost')} tasks): gaps ${p.gaps.join(', ')} (min ${Math.min(...p.gaps)}, total ${p.total}); most in 1 s ${maxInWindow(times, 1000)}`);
      expect(byWorker('nestjs-shared-a@localhost')).toBeGreaterThan(0);
      expect(byWorker('nestjs-shared-b@localhost')).toBeGreaterThan(0);
      // reserved starts are 100 ms apart; a start is used at most maxLateMs (25) late, never early
      expect(Math.min(...p.gaps)).toBeGreaterThanOrEqual(100 - 25 - 5);
      expect(maxInWindow(times, 1000)).toBeLessThanOrEqual(windowBound(10, 1000, 25));
      expect(p.total).toBeGreaterThanOrEqual((SHARED_BURST - 1) * 100 - 25);
    });
  });

  describe('Celery 5.2.6 (Debian bookworm), with peerCompat "5.2" on our side', () => {
    it(`5.2.6 client → NestJS worker: ${BURST} × tasks.limited start 200 ms apart; tasks.nowMs is not held up`, async () => {
      await expectLimitedForPythonClient(env52, jsQueue52, '5.2.6 client → NestJS');
    });

    it(`NestJS Producer → 5.2.6 worker: ${BURST} × tasks.pyLimited start 200 ms apart after kombu 5.2.4's extra first one; ours keeps 5.7's pattern`, async () => {
      compareWorkers('Producer → 5.2.6', await burstToBoth(producer52, env52.pyQueue, jsQueue52), true);
    });
  });
});
