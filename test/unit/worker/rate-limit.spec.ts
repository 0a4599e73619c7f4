import { maxInWindow } from '../../../bench/rate-limit-accuracy';
import { InvalidRateLimitError, TaskNotRegisteredError } from '../../../lib/errors/celery.errors';
import { MemorySharedRateStore, RateLimiter, RateLimiterOptions, SharedRateStore, TokenBucket } from '../../../lib/worker/rate-limit';
import kombuBucket from '../../fixtures/kombu-bucket-5.7.json';

const quiet = { log: () => undefined, warn: () => undefined };

/** Admission instants (ms after the test's start) and outcomes of acquire calls, in the order they settle. */
class Recorder {
  readonly settled: { name: string; tag: string; at: number; admitted: boolean }[] = [];
  constructor(private readonly t0: number) {}
  acquire(limiter: RateLimiter, name: string, tag = name, signal?: AbortSignal): Promise<boolean> {
    const p = limiter.acquire(name, signal);
    void p.then((admitted) => this.settled.push({ name, tag, at: Date.now() - this.t0, admitted }));
    return p;
  }
  admitted(name?: string): number[] {
    return this.settled.filter((s) => s.admitted && (!name || s.name === name)).map((s) => s.at);
  }
  tags(): string[] {
    return this.settled.map((s) => s.tag);
  }
}

function limiter(options: RateLimiterOptions = {}, tasks: Record<string, Parameters<RateLimiter['configure']>[1]> = {}): RateLimiter {
  const l = new RateLimiter({ logger: quiet, ...options });
  for (const [name, option] of Object.entries(tasks)) l.configure(name, option);
  return l;
}

beforeEach(() => jest.useFakeTimers({ now: new Date('2026-01-01T00:00:00Z') }));
afterEach(() => jest.useRealTimers());

describe('TokenBucket (kombu semantics, capacity 1)', () => {
  it('starts full, gives one token, and refills at its rate', () => {
    const b = new TokenBucket(10, 0);
    expect(b.tryTake(0)).toBe(true);
    expect(b.tryTake(0)).toBe(false);
    expect(b.msUntilToken(40)).toBeCloseTo(60);
    expect(b.tryTake(99)).toBe(false);
    expect(b.tryTake(100)).toBe(true);
  });

  it('never holds more than its capacity, however long it stays idle', () => {
    const b = new TokenBucket(10, 0);
    expect(b.tryTake(60_000)).toBe(true);
    expect(b.tryTake(60_000)).toBe(false);
  });

  it('keeps its tokens when the rate changes, and refills at the new rate from then on', () => {
    const b = new TokenBucket(1, 0);
    b.tryTake(0);
    b.setRate(10, 500); // half a token so far
    expect(b.msUntilToken(500)).toBeCloseTo(50);
  });
});

describe('RateLimiter, per worker (Celery rate_limit)', () => {
  it("admits '10/s' tasks one every 100 ms, the first at once, in arrival order", async () => {
    const l = limiter({}, { 'tasks.a': '10/s' });
    const r = new Recorder(Date.now());
    for (let i = 0; i < 5; i++) void r.acquire(l, 'tasks.a', `a${i}`);
    await jest.advanceTimersByTimeAsync(1000);
    expect(r.admitted()).toEqual([0, 100, 200, 300, 400]);
    expect(r.tags()).toEqual(['a0', 'a1', 'a2', 'a3', 'a4']);
  });

  it.each((kombuBucket as { cases: { rate: string; arrivalsMs: number[]; admittedMs: number[] }[] }).cases.map((c) => [c.rate, c] as const))(
    "admits '%s' tasks when Celery does (kombu's bucket under Celery's scheduling, test/fixtures/kombu-bucket.py), within 1 ms",
    async (_rate, c) => {
      const l = limiter({}, { a: c.rate });
      const t0 = Date.now();
      const admitted: number[] = new Array(c.arrivalsMs.length);
      let elapsed = 0;
      for (const [i, at] of c.arrivalsMs.entries()) {
        await jest.advanceTimersByTimeAsync(at - elapsed);
        elapsed = at;
        void l.acquire('a').then(() => (admitted[i] = Date.now() - t0));
      }
      await jest.advanceTimersByTimeAsync(Math.max(...c.admittedMs) - elapsed + 10);
      admitted.forEach((at, i) => expect(Math.abs(at - c.admittedMs[i])).toBeLessThanOrEqual(1));
    },
  );

  it("reads '100/m' and '2/h' as Celery does", async () => {
    const l = limiter({}, { m: '100/m', h: '2/h' });
    const r = new Recorder(Date.now());
    for (let i = 0; i < 3; i++) void r.acquire(l, 'm');
    for (let i = 0; i < 2; i++) void r.acquire(l, 'h');
    await jest.advanceTimersByTimeAsync(3_600_000);
    expect(r.admitted('m')).toEqual([0, 600, 1200]);
    expect(r.admitted('h')).toEqual([0, 1_800_000]);
  });

  it('lets no burst through after an idle spell (capacity 1)', async () => {
    const l = limiter({}, { a: '10/s' });
    await jest.advanceTimersByTimeAsync(60_000);
    const r = new Recorder(Date.now());
    for (let i = 0; i < 3; i++) void r.acquire(l, 'a');
    await jest.advanceTimersByTimeAsync(1000);
    expect(r.admitted()).toEqual([0, 100, 200]);
  });

  it('keeps task names apart: a name over its limit holds up neither other limited names nor unlimited ones', async () => {
    const l = limiter({}, { slow: '1/s', other: '1/s', free: null });
    const r = new Recorder(Date.now());
    for (let i = 0; i < 3; i++) void r.acquire(l, 'slow');
    void r.acquire(l, 'other');
    void r.acquire(l, 'free');
    void r.acquire(l, 'never.configured');
    await jest.advanceTimersByTimeAsync(0);
    expect(r.admitted('other')).toEqual([0]);
    expect(r.admitted('free')).toEqual([0]);
    expect(r.admitted('never.configured')).toEqual([0]);
    await jest.advanceTimersByTimeAsync(3000);
    expect(r.admitted('slow')).toEqual([0, 1000, 2000]);
    expect(l.waiting()).toEqual({});
  });

  it('an aborted wait resolves false at once; the others keep their order and times', async () => {
    const l = limiter({}, { a: '1/s' });
    const r = new Recorder(Date.now());
    const aborts = [new AbortController(), new AbortController(), new AbortController(), new AbortController()];
    aborts.forEach((c, i) => void r.acquire(l, 'a', `a${i}`, c.signal));
    await jest.advanceTimersByTimeAsync(500);
    aborts[1].abort();
    await jest.advanceTimersByTimeAsync(0);
    expect(r.settled.map((s) => [s.tag, s.at, s.admitted])).toEqual([
      ['a0', 0, true],
      ['a1', 500, false],
    ]);
    await jest.advanceTimersByTimeAsync(3000);
    expect(r.settled.slice(2).map((s) => [s.tag, s.at, s.admitted])).toEqual([
      ['a2', 1000, true],
      ['a3', 2000, true],
    ]);
  });

  it('waits out a rate slower than setTimeout can count (one per 41.7 days) without spinning', async () => {
    const l = limiter({ shared: new MemorySharedRateStore() }, { local: '0.001/h', shared: { global: '0.001/h' } });
    const r = new Recorder(Date.now());
    for (const name of ['local', 'local', 'shared', 'shared']) void r.acquire(l, name);
    await jest.advanceTimersByTimeAsync(1000);
    expect(r.admitted()).toHaveLength(2); // the first of each
    expect(jest.getTimerCount()).toBeLessThanOrEqual(3);
    await jest.advanceTimersByTimeAsync(60_000);
    expect(jest.getTimerCount()).toBeLessThanOrEqual(3);
    await jest.advanceTimersByTimeAsync(3.6e9);
    expect(r.admitted()).toHaveLength(4);
  });

  it('refuses at once with a signal already aborted, and after close(); close() releases every waiter with false', async () => {
    const l = limiter({}, { a: '1/s' });
    const aborted = new AbortController();
    aborted.abort();
    await expect(l.acquire('a', aborted.signal)).resolves.toBe(false);
    await expect(l.acquire('a')).resolves.toBe(true);
    const waiting = [l.acquire('a'), l.acquire('a')];
    l.close();
    await expect(Promise.all(waiting)).resolves.toEqual([false, false]);
    await expect(l.acquire('a')).resolves.toBe(false);
  });

  it('worker.disableRateLimits admits everything at once', async () => {
    const l = limiter({ disabled: true }, { a: '1/h' });
    await expect(Promise.all([l.acquire('a'), l.acquire('a'), l.acquire('a')])).resolves.toEqual([true, true, true]);
  });

  it('refuses a bad rate at configure, naming the task and the value', () => {
    const l = limiter();
    expect(() => l.configure('tasks.add', '10/d')).toThrow(new InvalidRateLimitError('10/d', 'unknown unit "d" (Celery knows s, m and h)', 'tasks.add'));
    expect(() => l.configure('tasks.add', { global: '1/s', locl: '1/s' } as never)).toThrow(/for task "tasks.add": give \{ global, local\? \}; unknown key "locl"/);
  });

  it('refuses a shared limit when there is no store to keep it in', () => {
    expect(() => limiter().configure('tasks.add', { global: '10/s' })).toThrow(/for task "tasks.add": a limit shared by all workers is kept in Cassandra/);
  });
});

describe('RateLimiter.setRate (the control command, at run time)', () => {
  it('applies a new rate to tasks already waiting', async () => {
    const l = limiter({}, { a: '1/s' });
    const r = new Recorder(Date.now());
    for (let i = 0; i < 4; i++) void r.acquire(l, 'a');
    await jest.advanceTimersByTimeAsync(0);
    l.setRate('a', '10/s');
    await jest.advanceTimersByTimeAsync(1000);
    expect(r.admitted()).toEqual([0, 100, 200, 300]);
  });

  it('0 or null removes the limit and releases every waiting task at once', async () => {
    const l = limiter({}, { a: '1/m' });
    const r = new Recorder(Date.now());
    for (let i = 0; i < 3; i++) void r.acquire(l, 'a');
    await jest.advanceTimersByTimeAsync(10);
    l.setRate('a', null);
    await jest.advanceTimersByTimeAsync(0);
    expect(r.admitted()).toEqual([0, 10, 10]);
    expect(l.limitsOf('a')).toEqual({ local: 0, global: 0 });
  });

  it('limits a task that had no limit, and keeps a shared limit when the per-worker one changes', () => {
    const l = limiter({ shared: new MemorySharedRateStore() }, { a: null, b: { global: '5/s' } });
    l.setRate('a', 2);
    l.setRate('b', '1/s');
    expect(l.limitsOf('a')).toEqual({ local: 2, global: 0 });
    expect(l.limitsOf('b')).toEqual({ local: 1, global: 5 });
    l.setRate('b', { global: '20/m' });
    expect(l.limitsOf('b')).toEqual({ local: 0, global: 20 / 60 });
  });

  it('refuses an unknown task and a bad rate, keeping the old limit', () => {
    const l = limiter({}, { a: '1/s' });
    expect(() => l.setRate('nope', '1/s')).toThrow(TaskNotRegisteredError);
    expect(() => l.setRate('a', 'fast')).toThrow(/Invalid rate limit "fast" for task "a"/);
    expect(l.limitsOf('a')).toEqual({ local: 1, global: 0 });
  });
});

/** A shared store that counts compare-and-sets and can fail or answer slowly. */
class ScriptedStore implements SharedRateStore {
  readonly inner = new MemorySharedRateStore();
  calls = 0;
  failNext = 0;
  latencyMs = 0;
  /** Reserved ranges [from, to) in µs, from applied compare-and-sets. */
  readonly reserved: [number, number][] = [];
  async prepare(): Promise<void> {}
  async compareAndSet(name: string, expected: number | null, next: number): Promise<{ applied: boolean; current: number | null }> {
    this.calls++;
    if (this.latencyMs) await new Promise((r) => setTimeout(r, this.latencyMs));
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error('Cassandra timeout');
    }
    const result = await this.inner.compareAndSet(name, expected, next);
    return result;
  }
  describe(): string {
    return 'scripted';
  }
}

describe('RateLimiter, shared by all workers (rateLimit: { global })', () => {
  it('two workers on one store admit at most the shared rate between them', async () => {
    const store = new ScriptedStore();
    const w1 = limiter({ shared: store }, { a: { global: '10/s' } });
    const w2 = limiter({ shared: store }, { a: { global: '10/s' } });
    const r = new Recorder(Date.now());
    for (let i = 0; i < 15; i++) {
      void r.acquire(w1, 'a', 'w1');
      void r.acquire(w2, 'a', 'w2');
    }
    await jest.advanceTimersByTimeAsync(5000);
    const times = r.admitted();
    expect(times).toHaveLength(30);
    expect(maxInWindow(times, 1000)).toBeLessThanOrEqual(10);
    const sorted = [...times].sort((a, b) => a - b);
    for (let i = 1; i < sorted.length; i++) expect(sorted[i] - sorted[i - 1]).toBeGreaterThanOrEqual(99);
    // both workers get starts, and it takes about 30 / 10 per second
    expect(r.tags().filter((t) => t === 'w1')).toHaveLength(15);
    expect(sorted[sorted.length - 1]).toBeLessThan(3200);
  });

  it('reserves starts for several waiting tasks with one compare-and-set', async () => {
    const store = new ScriptedStore();
    const l = limiter({ shared: store, reserveAheadMs: 1000 }, { a: { global: '10/s' } });
    const all = Array.from({ length: 20 }, () => l.acquire('a'));
    await jest.advanceTimersByTimeAsync(3000);
    await expect(Promise.all(all)).resolves.toEqual(Array(20).fill(true));
    expect(store.calls).toBeLessThanOrEqual(4);
  });

  it('keeps tasks waiting (neither admitted nor refused) while the store fails, and admits them once it answers', async () => {
    const store = new ScriptedStore();
    const warnings: string[] = [];
    const l = limiter({ shared: store, logger: { log: () => undefined, warn: (m: string) => void warnings.push(m) } }, { a: { global: '10/s' } });
    store.failNext = 6;
    const r = new Recorder(Date.now());
    for (let i = 0; i < 3; i++) void r.acquire(l, 'a');
    await jest.advanceTimersByTimeAsync(3000);
    expect(r.settled).toEqual([]);
    expect(warnings[0]).toMatch(/Shared rate limit of a: scripted failed \(Cassandra timeout\); its 3 waiting task\(s\) stay unacknowledged/);
    await jest.advanceTimersByTimeAsync(10_000);
    expect(r.settled.map((s) => s.admitted)).toEqual([true, true, true]);
  });

  it('an aborted wait for a reserved start resolves false at once and its start goes to the next in line', async () => {
    const store = new ScriptedStore();
    const l = limiter({ shared: store, reserveAheadMs: 1000 }, { a: { global: '2/s' } });
    const r = new Recorder(Date.now());
    const c = [new AbortController(), new AbortController(), new AbortController()];
    c.forEach((ctl, i) => void r.acquire(l, 'a', `a${i}`, ctl.signal));
    await jest.advanceTimersByTimeAsync(100);
    c[1].abort();
    await jest.advanceTimersByTimeAsync(0);
    expect(r.settled.map((s) => [s.tag, s.admitted])).toEqual([
      ['a0', true],
      ['a1', false],
    ]);
    await jest.advanceTimersByTimeAsync(2000);
    const a2 = r.settled.find((s) => s.tag === 'a2');
    expect(a2?.admitted).toBe(true);
    expect(a2!.at).toBeLessThan(600); // a1's start (about 500 ms), not a later one
    expect(store.calls).toBe(1);
  });

  it('never admits a task later than maxLateMs after its reserved start when the store is slow', async () => {
    const store = new ScriptedStore();
    store.latencyMs = 80; // above the first guess of 20 ms: the first reserved start is missed
    const l = limiter({ shared: store, maxLateMs: 25 }, { a: { global: '20/s' } });
    const r = new Recorder(Date.now());
    for (let i = 0; i < 40; i++) void r.acquire(l, 'a');
    await jest.advanceTimersByTimeAsync(10_000);
    const times = r.admitted();
    expect(times).toHaveLength(40);
    // bound: rate × (window + maxLate) + 1
    expect(maxInWindow(times, 1000)).toBeLessThanOrEqual(Math.floor(20 * 1.025) + 1);
    const sorted = [...times].sort((a, b) => a - b);
    for (let i = 1; i < sorted.length; i++) expect(sorted[i] - sorted[i - 1]).toBeGreaterThanOrEqual(50 - 25);
  });

  it('gives up reserved starts that a stalled event loop reaches late, instead of running them into the next worker\'s starts', async () => {
    const store = new ScriptedStore();
    const w1 = limiter({ shared: store, reserveAheadMs: 1000, maxLateMs: 25 }, { a: { global: '10/s' } });
    const w2 = limiter({ shared: store, reserveAheadMs: 1000, maxLateMs: 25 }, { a: { global: '10/s' } });
    const r = new Recorder(Date.now());
    for (let i = 0; i < 8; i++) void r.acquire(w1, 'a', 'w1');
    await jest.advanceTimersByTimeAsync(0); // w1 reserves starts at about 20, 120, ..., 720 ms
    expect(store.calls).toBe(1);
    jest.setSystemTime(Date.now() + 350); // the wall clock moves on while w1 runs no timer: a 350 ms stall
    void r.acquire(w2, 'a', 'w2'); // w2 reserves the first start after w1's
    await jest.advanceTimersByTimeAsync(3000);
    const times = [...r.admitted()].sort((a, b) => a - b);
    expect(times).toHaveLength(9);
    for (let i = 1; i < times.length; i++) expect(times[i] - times[i - 1]).toBeGreaterThanOrEqual(100 - 25);
  });

  it('with both limits, starts are spaced by the stricter one', async () => {
    const l = limiter({ shared: new ScriptedStore() }, { a: { global: '10/s', local: '2/s' } });
    const r = new Recorder(Date.now());
    for (let i = 0; i < 4; i++) void r.acquire(l, 'a');
    await jest.advanceTimersByTimeAsync(3000);
    const times = r.admitted();
    expect(times).toHaveLength(4);
    for (let i = 1; i < times.length; i++) expect(times[i] - times[i - 1]).toBeGreaterThanOrEqual(500);
  });
});
