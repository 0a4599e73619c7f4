import { Logger } from '@nestjs/common';
import type { ResolvedCeleryConfig } from '../config/resolved-config';
import type { RateLimitOption } from '../decorators/task.decorator';
import { InvalidRateLimitError, TaskNotRegisteredError } from '../errors/celery.errors';
import { parseRate } from '../protocol/rate';
import { CassandraResultStore } from '../results/cassandra.result-store';
import { MemoryResultStore } from '../results/memory.result-store';
import type { ResultStore } from '../results/result-store.interface';
import { CassandraRateStore } from './cassandra-rate-store';

/**
 * A task's `rateLimit` (`@Task({ rateLimit })`), or null / undefined for none: what `configure`
 * and `setRate` take (the control command sends Celery's strings, or null).
 */
export type RateLimitSetting = RateLimitOption | null | undefined;

/**
 * Where shared limits live: per task name, the instant (epoch µs) from which the next task may
 * start, changed only by compare-and-set, so that workers reserve disjoint start times
 * (GCRA, the generic cell rate algorithm, with no burst allowance: Celery's capacity of 1).
 */
export interface SharedRateStore {
  /** Creates what the store needs (the Cassandra table); the limiter calls it once before the first claim. */
  prepare(): Promise<void>;
  /** Sets the task's next free start to `next` if it is `expected` (null: none stored); returns whether it did and the value it found. */
  compareAndSet(taskName: string, expected: number | null, next: number): Promise<{ applied: boolean; current: number | null }>;
  /** Where it is kept, for logs (never credentials). */
  describe(): string;
}

/** Tuning of the shared limit (see README, Rate limits). */
export interface RateLimiterOptions {
  /** `worker.disableRateLimits` (`worker_disable_rate_limits`): every task is admitted at once. */
  disabled?: boolean;
  /** Store of shared limits; null when none is configured (a `{ global }` limit is then refused). */
  shared?: SharedRateStore | null;
  /** How far ahead of now a worker may reserve shared start times, ms. Default 500. */
  reserveAheadMs?: number;
  /** Longest a reserved start may be missed by before it is given up (never used late), ms. Default 25. */
  maxLateMs?: number;
  logger?: Pick<Logger, 'log' | 'warn'>;
}

/** The limits in force for one task name. */
export interface TaskRateLimits {
  /** Per-worker tasks per second (Celery's `rate_limit`); 0 for none. */
  local: number;
  /** Tasks per second over every worker; 0 for none. */
  global: number;
}

const DEFAULT_RESERVE_AHEAD_MS = 500;
const DEFAULT_MAX_LATE_MS = 25;
/** First guess of a claim's round trip, before one is measured. */
const FIRST_CLAIM_LATENCY_MS = 20;
const RETRY_FIRST_MS = 100;
/** The longest delay setTimeout honours (a longer one fires at once); longer waits are taken in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const RETRY_MAX_MS = 5000;
/** Slack for float rounding when a timer fires exactly when a token is due. */
const EPSILON = 1e-9;
const ADMITTED: Promise<boolean> = Promise.resolve(true);
const REFUSED: Promise<boolean> = Promise.resolve(false);

/**
 * kombu's TokenBucket (`kombu.utils.limits`, as of kombu 5.7): starts full, holds at most
 * `capacity` tokens (1, as Celery creates it), refills at `perSecond`, on a monotonic clock (ms).
 */
export class TokenBucket {
  private tokens: number;
  private stamp: number;

  constructor(
    private perSecond: number,
    now: number,
    private readonly capacity = 1,
  ) {
    this.tokens = capacity;
    this.stamp = now;
  }

  /** Takes a token if one is there. */
  tryTake(now: number): boolean {
    this.refill(now);
    if (this.tokens + EPSILON < 1) return false;
    this.tokens = Math.max(0, this.tokens - 1);
    return true;
  }

  /** Milliseconds until a token is there; 0 when one is. */
  msUntilToken(now: number): number {
    this.refill(now);
    return this.tokens + EPSILON >= 1 ? 0 : ((1 - this.tokens) / this.perSecond) * 1000;
  }

  /** A new rate from now on; the tokens already there stay (at most `capacity`). */
  setRate(perSecond: number, now: number): void {
    this.refill(now);
    this.perSecond = perSecond;
  }

  private refill(now: number): void {
    this.tokens = Math.min(this.capacity, this.tokens + ((now - this.stamp) / 1000) * this.perSecond);
    this.stamp = now;
  }
}

/** Reads a `rateLimit` option; the error names the task and the value. */
export function parseRateLimitOption(option: unknown, taskName: string): TaskRateLimits {
  if (option === null || typeof option !== 'object') return { local: parseRate(option, taskName), global: 0 };
  const unknown = Object.keys(option).filter((k) => k !== 'global' && k !== 'local');
  if (unknown.length > 0 || !('global' in option)) {
    throw new InvalidRateLimitError(option, `give { global, local? }${unknown.length ? `; unknown key ${JSON.stringify(unknown[0])}` : ''}`, taskName);
  }
  const { global, local } = option as { global: unknown; local?: unknown };
  return { local: parseRate(local, taskName), global: parseRate(global, taskName) };
}

interface Waiter {
  resolve(admitted: boolean): void;
  signal: AbortSignal | undefined;
  onAbort(): void;
  /** The shared start reserved for it (epoch ms), and the timer that admits it then. */
  slot: number | null;
  timer: NodeJS.Timeout | null;
}

/** One task name's limits and the requests waiting for them, in arrival order. */
class TaskLimit {
  bucket: TokenBucket | null = null;
  local = 0;
  global = 0;
  readonly queue: Waiter[] = [];
  /** How many waiters at the head of `queue` have a shared start reserved. */
  assigned = 0;
  /** Shared starts reserved and not yet given to a waiter (epoch ms, ascending). */
  readonly pool: number[] = [];
  /** The store's next free start as last seen (epoch µs); null when not known. */
  known: number | null = null;
  claiming = false;
  timer: NodeJS.Timeout | null = null;

  constructor(readonly name: string) {}

  get limited(): boolean {
    return this.bucket !== null || this.global > 0;
  }
}

/**
 * Rate limits of one worker. Per task name (Celery's semantics): a token bucket of capacity 1
 * refilled at the task's rate; a task over the limit waits here, unacknowledged and without a
 * concurrency slot, in arrival order, while tasks of other names go on. Optionally a limit shared
 * by every worker of the task, kept in a SharedRateStore (Cassandra): workers reserve disjoint
 * start times `1/rate` apart by compare-and-set, up to `reserveAheadMs` ahead, several at once
 * when several tasks wait.
 *
 * The worker calls `acquire` for each task after its ETA and before it takes a concurrency slot;
 * `setRate` changes a limit at run time (Celery's `rate_limit` control command).
 */
export class RateLimiter {
  private readonly limits = new Map<string, TaskLimit>();
  private readonly disabled: boolean;
  private readonly shared: SharedRateStore | null;
  private readonly reserveAheadMs: number;
  private readonly maxLateMs: number;
  private readonly logger: Pick<Logger, 'log' | 'warn'>;
  private readonly sleeps = new Set<() => void>();
  private prepared: Promise<void> | null = null;
  /** Round trip of a claim, smoothed (ms): how far ahead a claim's first start is put. */
  private claimLatencyMs = FIRST_CLAIM_LATENCY_MS;
  private closed = false;

  constructor(options: RateLimiterOptions = {}) {
    this.disabled = options.disabled ?? false;
    this.shared = options.shared ?? null;
    this.reserveAheadMs = options.reserveAheadMs ?? DEFAULT_RESERVE_AHEAD_MS;
    this.maxLateMs = options.maxLateMs ?? DEFAULT_MAX_LATE_MS;
    this.logger = options.logger ?? new Logger('CeleryRateLimit');
  }

  /**
   * Registers a task and its `rateLimit` option (call it for every task at bootstrap, limited or
   * not: `setRate` accepts only registered names). Throws InvalidRateLimitError on a value Celery
   * would not read, or a shared limit with no store to keep it in.
   */
  configure(taskName: string, option: RateLimitSetting): void {
    const limits = parseRateLimitOption(option, taskName);
    this.checkShared(taskName, option, limits);
    const t = this.limits.get(taskName) ?? new TaskLimit(taskName);
    this.limits.set(taskName, t);
    this.apply(t, limits);
  }

  /**
   * Creates the shared store's table when a configured task has a shared limit, so that a
   * store that cannot be used fails the bootstrap. Logs what is limited.
   */
  async start(): Promise<void> {
    const limited = [...this.limits.values()].filter((t) => t.limited);
    if (limited.length === 0) return;
    if (this.disabled) {
      this.logger.warn(`Rate limits are disabled (worker.disableRateLimits); not applied to ${limited.map((t) => t.name).join(', ')}`);
      return;
    }
    if (limited.some((t) => t.global > 0)) await this.prepare();
    this.logger.log(`Rate limits: ${limited.map((t) => `${t.name} ${describe(t)}`).join('; ')}`);
  }

  /**
   * Waits until the task may start under its limits. Resolves true then; false at once when
   * `signal` aborts (shutdown, channel lost, revoke) or the limiter closes, so the caller can
   * return the message. A task name without a limit is admitted at once.
   */
  acquire(taskName: string, signal?: AbortSignal): Promise<boolean> {
    const t = this.disabled ? undefined : this.limits.get(taskName);
    if (!t?.limited) return ADMITTED;
    if (this.closed || signal?.aborted) return REFUSED;
    return new Promise<boolean>((resolve) => {
      const waiter: Waiter = { resolve, signal, slot: null, timer: null, onAbort: () => this.abandon(t, waiter) };
      signal?.addEventListener('abort', waiter.onAbort, { once: true });
      t.queue.push(waiter);
      this.drive(t);
    });
  }

  /**
   * Changes a task's limit at run time, for tasks already waiting too. A string, number or null
   * sets the per-worker limit (Celery's `rate_limit` control command; 0 / null removes it) and
   * keeps a shared one; `{ global, local? }` sets both. The bucket keeps the tokens it has.
   */
  setRate(taskName: string, rate: RateLimitSetting): void {
    const t = this.limits.get(taskName);
    if (!t) throw new TaskNotRegisteredError(taskName);
    const limits = parseRateLimitOption(rate, taskName);
    if (rate === null || typeof rate !== 'object') limits.global = t.global;
    this.checkShared(taskName, rate, limits);
    this.apply(t, limits);
    this.logger.log(`Rate limit of ${taskName} is now ${describe(t)}`);
  }

  /** The limits in force for a task; undefined for a name never configured. */
  limitsOf(taskName: string): TaskRateLimits | undefined {
    const t = this.limits.get(taskName);
    return t && { local: t.local, global: t.global };
  }

  /** Tasks waiting for their limit now, per task name (names with none waiting left out). */
  waiting(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const t of this.limits.values()) if (t.queue.length > 0) out[t.name] = t.queue.length;
    return out;
  }

  /** Every waiting `acquire` resolves false (their messages go back), and later ones too. */
  close(): void {
    this.closed = true;
    for (const wake of [...this.sleeps]) wake();
    for (const t of this.limits.values()) {
      if (t.timer) clearTimeout(t.timer);
      t.timer = null;
      for (const w of t.queue.splice(0)) this.settle(w, false);
      t.assigned = 0;
      t.pool.length = 0;
    }
  }

  private checkShared(taskName: string, option: unknown, limits: TaskRateLimits): void {
    if (limits.global > 0 && !this.shared) {
      throw new InvalidRateLimitError(
        option,
        "a limit shared by all workers is kept in Cassandra: set resultBackend to 'cassandra' (with the memory result backend it is kept in this worker)",
        taskName,
      );
    }
  }

  private apply(t: TaskLimit, limits: TaskRateLimits): void {
    const now = performance.now();
    if (limits.local > 0) {
      if (t.bucket) t.bucket.setRate(limits.local, now);
      else t.bucket = new TokenBucket(limits.local, now);
    } else t.bucket = null;
    t.local = limits.local;
    t.global = limits.global;
    // starts already reserved stay reserved; they are handed out again in arrival order under the new limits
    this.unassignFrom(t, 0);
    this.drive(t);
  }

  /**
   * Admits whoever may start now and arranges to come back when the next one may: a timer for
   * the next token, a reserved shared start per waiter, or a claim on the shared store.
   */
  private drive(t: TaskLimit): void {
    if (t.timer) clearTimeout(t.timer);
    t.timer = null;
    if (this.closed) return;
    if (!t.limited) {
      for (const w of t.queue.splice(0)) this.settle(w, true);
      t.assigned = 0;
      t.pool.length = 0;
      return;
    }
    while (t.assigned < t.queue.length) {
      // both limits: one shared start at a time, taken only when the local token is there
      if (t.bucket && t.global > 0 && t.assigned > 0) return;
      const next = t.queue[t.assigned];
      if (t.bucket) {
        const wait = t.bucket.msUntilToken(performance.now());
        if (wait > 0) {
          t.timer = setTimeout(() => this.drive(t), Math.min(Math.ceil(wait), MAX_TIMER_MS));
          return;
        }
        if (t.global === 0) {
          t.bucket.tryTake(performance.now());
          this.admit(t, next);
          continue;
        }
      }
      const slot = this.takeSlot(t);
      if (slot === null) {
        if (!t.claiming) {
          // on the next turn of the event loop, so the deliveries of one socket read share a claim
          t.claiming = true;
          setImmediate(() => void this.claim(t));
        }
        return;
      }
      this.assign(t, next, slot);
    }
  }

  private assign(t: TaskLimit, w: Waiter, slot: number): void {
    w.slot = slot;
    t.assigned++;
    const arm = (): void => {
      const left = slot - Date.now();
      // a timer may fire a little early by the wall clock: never start before the reserved instant
      w.timer = left > 0 ? setTimeout(arm, Math.min(left, MAX_TIMER_MS)) : null;
      if (left <= 0) this.startAtSlot(t, w);
    };
    arm();
  }

  private startAtSlot(t: TaskLimit, w: Waiter): void {
    const late = Date.now() - (w.slot as number) > this.maxLateMs; // a busy event loop fired the timer late
    if (late || (t.bucket && !t.bucket.tryTake(performance.now()))) {
      // the start is given up, never used late (nor when the local limit changed meanwhile); the
      // waiters from this one on get the next reserved starts, in arrival order
      this.unassignFrom(t, t.queue.indexOf(w));
      this.drive(t);
      return;
    }
    this.admit(t, w);
    if (t.bucket) this.drive(t);
  }

  /** The earliest reserved start still usable; starts missed by more than maxLateMs are dropped. */
  private takeSlot(t: TaskLimit): number | null {
    const now = Date.now();
    while (t.pool.length > 0) {
      const slot = t.pool.shift() as number;
      if (now - slot <= this.maxLateMs) return slot;
    }
    return null;
  }

  private admit(t: TaskLimit, w: Waiter): void {
    const i = t.queue.indexOf(w);
    if (i >= 0) t.queue.splice(i, 1);
    if (w.slot !== null && i >= 0 && i < t.assigned) t.assigned--;
    this.settle(w, true);
  }

  /** An aborted wait: it leaves at once; its reserved start goes to the next in line (arrival order kept). */
  private abandon(t: TaskLimit, w: Waiter): void {
    const i = t.queue.indexOf(w);
    if (i < 0) return;
    this.unassignFrom(t, i);
    t.queue.splice(i, 1);
    this.settle(w, false);
    this.drive(t);
  }

  /** Takes back the reserved starts of the waiters from position `i` on, into the pool. */
  private unassignFrom(t: TaskLimit, i: number): void {
    for (let k = i; k < t.assigned; k++) {
      const w = t.queue[k];
      if (w.timer) clearTimeout(w.timer);
      w.timer = null;
      if (w.slot !== null) t.pool.push(w.slot);
      w.slot = null;
    }
    t.assigned = Math.min(t.assigned, i);
    t.pool.sort((a, b) => a - b);
  }

  private settle(w: Waiter, admitted: boolean): void {
    if (w.timer) clearTimeout(w.timer);
    w.timer = null;
    w.signal?.removeEventListener('abort', w.onAbort);
    w.resolve(admitted);
  }

  /**
   * Reserves shared starts for the waiters without one: reads nothing, writes one compare-and-set
   * per batch (a failed one returns the value it found, and the next try uses it). A store that
   * fails is retried with back-off for as long as the worker runs; the tasks keep waiting.
   */
  private async claim(t: TaskLimit): Promise<void> {
    t.claiming = true;
    let failures = 0;
    try {
      for (;;) {
        const want = (t.bucket ? Math.min(1, t.queue.length - t.assigned) : t.queue.length - t.assigned) - t.pool.length;
        if (want <= 0 || this.closed || t.global === 0 || (t.bucket && t.assigned > 0)) return;
        const batch = this.nextBatch(t, want);
        if ('waitMs' in batch) {
          await this.sleep(batch.waitMs);
          continue;
        }
        const result = await this.compareAndSet(t, batch.next, failures > 0).catch((err: unknown) => ({ error: err }));
        if ('error' in result) {
          await this.sleep(this.retryDelay(t, ++failures, result.error));
          continue;
        }
        if (failures > 0) this.logger.log(`Shared rate limit of ${t.name}: ${this.sharedStore().describe()} answers again`);
        failures = 0;
        if (!result.applied) {
          t.known = result.current;
          continue;
        }
        t.known = batch.next;
        for (let k = 0; k < batch.count; k++) t.pool.push((batch.start + k * batch.interval) / 1000);
        this.drive(t);
      }
    } finally {
      t.claiming = false;
      if (!this.closed && t.assigned < t.queue.length) this.drive(t);
    }
  }

  /**
   * The next batch of starts to claim (epoch µs), or how long to wait first. The first start is
   * the later of the stored value last seen and now plus a claim's round trip (so that it is
   * still ahead when the answer comes); as many follow, 1/rate apart, as fit within the horizon.
   */
  private nextBatch(t: TaskLimit, want: number): { start: number; count: number; interval: number; next: number } | { waitMs: number } {
    const interval = 1e6 / t.global;
    const now = Date.now() * 1000;
    const ahead = this.reserveAheadMs * 1000;
    const start = Math.max(Math.ceil(now + this.claimLatencyMs * 1000), t.known ?? 0);
    // claim once half the horizon is free: claiming each time one more start comes within reach would cost a write per task;
    // workers that saw the same value would wake together and contend in Paxos: spread them
    const room = start - (now + ahead / 2);
    if (room > 0) return { waitMs: room / 1000 + Math.random() * this.reserveAheadMs * 0.1 };
    const count = Math.max(1, Math.min(want, Math.floor((now + ahead - start) / interval) + 1));
    return { start, count, interval, next: start + Math.ceil(count * interval) };
  }

  private async compareAndSet(t: TaskLimit, next: number, retrying: boolean): Promise<{ applied: boolean; current: number | null }> {
    if (retrying) this.prepared = null; // a table that failed to be created is tried again
    await this.prepare();
    const sent = performance.now();
    const result = await this.sharedStore().compareAndSet(t.name, t.known, next);
    this.claimLatencyMs = Math.min(1000, 0.8 * this.claimLatencyMs + 0.2 * (performance.now() - sent));
    return result;
  }

  /** The back-off after the `failures`-th failed claim in a row; says so at the first and then every RETRY_MAX_MS. */
  private retryDelay(t: TaskLimit, failures: number, err: unknown): number {
    const delay = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** (failures - 1));
    if (failures === 1 || delay === RETRY_MAX_MS) {
      const why = String((err as Error | undefined)?.message ?? err).replace(/\s+/g, ' ');
      this.logger.warn(
        `Shared rate limit of ${t.name}: ${this.sharedStore().describe()} failed (${why}); ` +
          `its ${t.queue.length} waiting task(s) stay unacknowledged; trying again in ${delay} ms`,
      );
    }
    return delay;
  }

  private sharedStore(): SharedRateStore {
    return this.shared as SharedRateStore; // configure() refuses a shared limit without a store
  }

  private prepare(): Promise<void> {
    if (!this.shared) return Promise.resolve();
    this.prepared ??= this.shared.prepare();
    return this.prepared;
  }

  /** A timer that close() ends early. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.sleeps.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, Math.min(Math.max(0, ms), MAX_TIMER_MS));
      this.sleeps.add(wake);
    });
  }
}

function describe(t: TaskLimit): string {
  const parts = [];
  if (t.local > 0) parts.push(`${round(t.local)}/s per worker`);
  if (t.global > 0) parts.push(`${round(t.global)}/s over all workers`);
  return parts.join(' and ') || 'none';
}

function round(n: number): string {
  return String(Number(n.toPrecision(4)));
}

/**
 * Shared limits kept in memory: with the memory result backend (one process, nothing to share
 * with) a `{ global }` limit is kept in the worker itself; and for tests.
 */
export class MemorySharedRateStore implements SharedRateStore {
  private readonly next = new Map<string, number>();

  async prepare(): Promise<void> {}

  async compareAndSet(taskName: string, expected: number | null, next: number): Promise<{ applied: boolean; current: number | null }> {
    const current = this.next.get(taskName) ?? null;
    if (current !== expected) return { applied: false, current };
    this.next.set(taskName, next);
    return { applied: true, current };
  }

  describe(): string {
    return 'memory';
  }
}

/**
 * The rate limiter of a worker with these settings: shared limits in the Cassandra result
 * keyspace (through the result store's connection), in the worker itself with the memory result
 * store, and nowhere otherwise (a task with a `{ global }` limit is then refused at `configure`).
 */
export function createRateLimiter(config: ResolvedCeleryConfig, store: ResultStore, logger?: Pick<Logger, 'log' | 'warn'>): RateLimiter {
  const { rateLimits } = config;
  let shared: SharedRateStore | null = null;
  if (store instanceof CassandraResultStore && config.cassandra) {
    shared = new CassandraRateStore(() => store.session(), {
      keyspace: config.cassandra.keyspace,
      table: rateLimits.table,
      writeConsistency: config.cassandra.writeConsistency,
      serialConsistency: rateLimits.serialConsistency,
    });
  } else if (store instanceof MemoryResultStore) shared = new MemorySharedRateStore();
  return new RateLimiter({ disabled: rateLimits.disabled, shared, reserveAheadMs: rateLimits.reserveAheadMs, maxLateMs: rateLimits.maxLateMs, logger });
}
