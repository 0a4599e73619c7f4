import { IntervalSchedule } from '../../../lib/scheduler/schedule';
import { MemoryTickClaimStore, type TickClaimStore } from '../../../lib/scheduler/tick-claims';
import { TickScheduler, type ScheduledEntry } from '../../../lib/scheduler/tick-scheduler';

const START = Date.parse('2026-05-01T10:00:00.400Z');
const quiet = { log: (_m: string): void => undefined, warn: (_m: string): void => undefined, error: (_m: string): void => undefined };
const entry = (everyMs = 1000): ScheduledEntry => ({ name: 'tick', schedule: new IntervalSchedule(everyMs) });

/** A replica: a TickScheduler whose sends land in `sent` as `replica@tick`. */
function replica(id: string, store: TickClaimStore, sent: string[], opts: { send?: (tick: number) => Promise<void>; catchUpMs?: number; claimTimeoutMs?: number; logger?: typeof quiet } = {}) {
  return new TickScheduler([entry()], {
    store,
    replicaId: id,
    claimTimeoutMs: opts.claimTimeoutMs ?? 3000,
    catchUpMs: opts.catchUpMs ?? 0,
    logger: opts.logger ?? quiet,
    send: opts.send ? (_e, tick) => opts.send!(tick) : async (_e, tick) => void sent.push(`${id}@${(tick - Date.parse('2026-05-01T10:00:00Z')) / 1000}`),
  });
}

const ticksOf = (sent: string[]) => sent.map((s) => Number(s.split('@')[1]));

describe('TickScheduler (fake clock, claims in memory shared by the replicas)', () => {
  beforeEach(() => jest.useFakeTimers({ now: START }));
  afterEach(() => jest.useRealTimers());

  it('three replicas on the same schedule send each tick exactly once', async () => {
    const store = new MemoryTickClaimStore();
    const sent: string[] = [];
    const replicas = ['a', 'b', 'c'].map((id) => replica(id, store, sent));
    replicas.forEach((r) => r.start());
    await jest.advanceTimersByTimeAsync(10_000);
    await Promise.all(replicas.map((r) => r.stop()));
    expect(ticksOf(sent)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it('a replica that dies between claim and publish costs its tick a delay of claimTimeoutMs, not the tick', async () => {
    const store = new MemoryTickClaimStore();
    const sent: string[] = [];
    let dead = false;
    // replica a wins tick 3 (it claims first) and never publishes it: it hangs, then is stopped (killed)
    const a = replica('a', store, sent, {
      send: (tick) => {
        if (dead || tick === Date.parse('2026-05-01T10:00:03Z')) {
          dead = true;
          return new Promise(() => undefined);
        }
        return Promise.resolve(void sent.push(`a@${(tick - Date.parse('2026-05-01T10:00:00Z')) / 1000}`));
      },
    });
    const others = ['b', 'c'].map((id) => replica(id, store, sent));
    a.start();
    others.forEach((r) => r.start());
    await jest.advanceTimersByTimeAsync(2700);
    expect(dead).toBe(true);
    void a.stop(); // never settles its hung send: killed
    await jest.advanceTimersByTimeAsync(7000);
    await Promise.all(others.map((r) => r.stop()));
    expect([...ticksOf(sent)].sort((x, y) => x - y)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    // tick 3 went out claimTimeoutMs (3 s) after its time, by b or c
    expect(sent.indexOf(sent.find((s) => s.endsWith('@3'))!)).toBeGreaterThan(sent.indexOf(sent.find((s) => s.endsWith('@5'))!));
    expect(sent.find((s) => s.endsWith('@3'))).toMatch(/^[bc]@3$/);
  });

  it('a failed publish is retried once claimTimeoutMs later (one replica, embedded store)', async () => {
    const store = new MemoryTickClaimStore();
    const sent: string[] = [];
    let failures = 1;
    const errors: string[] = [];
    const only = replica('solo', store, sent, {
      logger: { ...quiet, error: (m: string) => void errors.push(m) },
      send: async (tick) => {
        if (failures-- > 0) throw new Error('broker unreachable');
        sent.push(`solo@${(tick - Date.parse('2026-05-01T10:00:00Z')) / 1000}`);
      },
    });
    only.start();
    await jest.advanceTimersByTimeAsync(5000);
    await only.stop();
    expect(errors[0]).toMatch(/tick at 2026-05-01T10:00:01.000Z could not be sent: broker unreachable; a replica retries it in 3000 ms/);
    expect([...ticksOf(sent)].sort((x, y) => x - y)).toEqual([1, 2, 3, 4, 5]);
  });

  it('on start, the newest tick already due is sent if at most catchUpMs old (once across replicas)', async () => {
    const store = new MemoryTickClaimStore();
    const sent: string[] = [];
    const replicas = ['a', 'b'].map((id) => replica(id, store, sent, { catchUpMs: 1000 }));
    replicas.forEach((r) => r.start());
    await jest.advanceTimersByTimeAsync(1000);
    await Promise.all(replicas.map((r) => r.stop()));
    expect(ticksOf(sent)).toEqual([0, 1]); // tick 0 was 400 ms old at start

    const late: string[] = [];
    const r = replica('c', new MemoryTickClaimStore(), late, { catchUpMs: 100 });
    r.start();
    await jest.advanceTimersByTimeAsync(1000);
    await r.stop();
    expect(ticksOf(late)).toEqual([2]); // started at 10:00:01.4: tick 1 was 400 ms old, more than catchUpMs (100)
  });

  it('after a gap (a blocked event loop) sends only the newest missed tick, and says how many it skipped', async () => {
    const store = new MemoryTickClaimStore();
    const sent: string[] = [];
    const warnings: string[] = [];
    const r = replica('a', store, sent, { catchUpMs: 2000, logger: { ...quiet, warn: (m: string) => void warnings.push(m) } });
    r.start();
    await jest.advanceTimersByTimeAsync(1000); // tick 1
    jest.setSystemTime(Date.now() + 5000); // the loop is blocked 5 s: the timer of tick 2 fires at 10:00:07
    await jest.advanceTimersByTimeAsync(2000);
    await r.stop();
    expect(ticksOf(sent)).toEqual([0, 1, 7, 8]); // 0: the start's catch-up (400 ms old); 2-6 skipped
    expect(warnings[0]).toMatch(/woke 5000 ms late; 5 missed tick\(s\) skipped/);
  });

  it('a claim that fails (a Cassandra timeout: applied or not, unknown) is looked at again and the tick sent once', async () => {
    const inner = new MemoryTickClaimStore();
    let failNext = true;
    // the claim is applied but its answer is lost, as a Paxos write timeout can
    const flaky: TickClaimStore = Object.assign(Object.create(inner) as TickClaimStore, {
      claim: async (schedule: string, tick: number, owner: string, ttl: number) => {
        const attempt = await inner.claim(schedule, tick, owner, ttl);
        if (failNext) {
          failNext = false;
          throw new Error('WriteTimeout (CAS)');
        }
        return attempt;
      },
    });
    const sent: string[] = [];
    const r = replica('a', flaky, sent);
    r.start();
    await jest.advanceTimersByTimeAsync(5000);
    await r.stop();
    expect([...ticksOf(sent)].sort((x, y) => x - y)).toEqual([1, 2, 3, 4, 5]);
  });
});
