import type { TickSchedule } from './schedule';
import type { TickClaimStore } from './tick-claims';

/** One schedule as the scheduler runs it. */
export interface ScheduledEntry {
  /** Unique among the app's schedules; the claim key, so every replica must use the same name. */
  name: string;
  schedule: TickSchedule;
}

export interface TickSchedulerOptions {
  store: TickClaimStore;
  /** Publishes one tick of an entry; resolves when the broker confirmed it. */
  send: (entry: ScheduledEntry, tickMs: number) => Promise<void>;
  /** This replica's id (owner of its claims). */
  replicaId: string;
  /** A claim still `claimed` this long after its tick is taken over by another replica. */
  claimTimeoutMs: number;
  /** Oldest missed tick sent on start or after a gap; older ones are skipped. */
  catchUpMs: number;
  logger: { log(message: string): void; warn(message: string): void; error(message: string): void };
  now?: () => number;
}

/**
 * Fires every schedule's ticks in this replica and sends each tick at most once per claim:
 * claim, then publish, then mark sent. Every replica runs the same loop on the same tick times;
 * the claim store decides who sends. A replica that lost a tick, or could not finish its own,
 * looks again `claimTimeoutMs` later and takes over a claim still left `claimed`, so a replica
 * killed between claim and publish costs that tick a delay of at most `claimTimeoutMs`, not the tick.
 */
export class TickScheduler {
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly inFlight = new Set<Promise<void>>();
  private running = false;
  private readonly now: () => number;
  /** Claims live long enough to cover every moment a replica may still claim or take over the tick. */
  private readonly ttlSeconds: number;

  constructor(
    readonly entries: readonly ScheduledEntry[],
    private readonly options: TickSchedulerOptions,
  ) {
    this.now = options.now ?? (() => Date.now());
    this.ttlSeconds = Math.min(630720000, Math.ceil((options.catchUpMs + 2 * options.claimTimeoutMs) / 1000) + 3600);
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    const now = this.now();
    for (const entry of this.entries) {
      // the newest tick already due: sent once now if young enough (another replica may have sent it: the claim says)
      const due = entry.schedule.latestAtOrBefore(now);
      if (due !== null && now - due <= this.options.catchUpMs) this.fire(entry, due);
      this.armAfter(entry, now);
    }
  }

  /** Stops firing; waits for the ticks being claimed or sent now. */
  async stop(): Promise<void> {
    this.running = false;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await Promise.allSettled([...this.inFlight]);
  }

  private armAfter(entry: ScheduledEntry, afterMs: number): void {
    const next = entry.schedule.nextAfter(afterMs);
    if (next === null) {
      this.options.logger.log(`Periodic task ${entry.name} has no more ticks (${entry.schedule.describe()})`);
      return;
    }
    this.later(Math.max(0, next - this.now()), () => this.wake(entry, next));
  }

  private wake(entry: ScheduledEntry, expected: number): void {
    const now = this.now();
    if (now < expected) {
      this.later(expected - now, () => this.wake(entry, expected)); // a timer may fire a little early against the wall clock
      return;
    }
    const due = entry.schedule.latestAtOrBefore(now) ?? expected;
    if (due > expected) {
      // a gap (blocked event loop, suspended host, clock jump): only the newest missed tick, if young enough
      const skipped = this.countBetween(entry, expected, due);
      this.options.logger.warn(`Periodic task ${entry.name}: woke ${now - expected} ms late; ${skipped} missed tick(s) skipped, the newest one sent if at most ${this.options.catchUpMs} ms old`);
    }
    if (now - due <= this.options.catchUpMs || due === expected) this.fire(entry, due);
    this.armAfter(entry, Math.max(now, due));
  }

  private countBetween(entry: ScheduledEntry, from: number, to: number): number {
    let n = 0;
    for (let t: number | null = from; t !== null && t < to && n < 1000000; t = entry.schedule.nextAfter(t)) n++;
    return n;
  }

  private later(ms: number, fn: () => void): void {
    if (!this.running) return;
    // setTimeout's longest delay is 2^31-1 ms; a longer wait re-arms
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (this.running) fn();
    }, Math.min(ms, 2147483647));
    this.timers.add(t);
  }

  private fire(entry: ScheduledEntry, tickMs: number): void {
    this.track(this.claimAndSend(entry, tickMs));
  }

  private track(work: Promise<void>): void {
    this.inFlight.add(work);
    void work.finally(() => this.inFlight.delete(work));
  }

  private async claimAndSend(entry: ScheduledEntry, tickMs: number): Promise<void> {
    const { store, replicaId } = this.options;
    try {
      const attempt = await store.claim(entry.name, tickMs, replicaId, this.ttlSeconds);
      if (attempt.won) {
        if (await this.sendClaimed(entry, tickMs)) return;
      } else if (attempt.current?.state === 'sent') return;
    } catch (err) {
      this.options.logger.error(`Periodic task ${entry.name} at ${iso(tickMs)}: claim failed: ${(err as Error).message}; looking again in ${this.options.claimTimeoutMs} ms`);
    }
    // lost to a replica still publishing, or our own claim or publish failed: look again once the claim is stale
    this.later(this.options.claimTimeoutMs, () => this.track(this.settle(entry, tickMs)));
  }

  /** Publishes a tick this replica holds and marks it sent; false when the publish failed. */
  private async sendClaimed(entry: ScheduledEntry, tickMs: number): Promise<boolean> {
    const { store, replicaId } = this.options;
    try {
      await this.options.send(entry, tickMs);
    } catch (err) {
      this.options.logger.error(`Periodic task ${entry.name} at ${iso(tickMs)} could not be sent: ${(err as Error).message}; a replica retries it in ${this.options.claimTimeoutMs} ms`);
      return false;
    }
    try {
      if (!(await store.markSent(entry.name, tickMs, replicaId, this.ttlSeconds))) {
        this.options.logger.warn(`Periodic task ${entry.name} at ${iso(tickMs)} was taken over by another replica while this one sent it (publish slower than claimTimeoutMs): it may have been sent twice, with the same task id`);
      }
    } catch (err) {
      // sent, but still marked claimed: another replica may send it again after claimTimeoutMs (same task id)
      this.options.logger.warn(`Periodic task ${entry.name} at ${iso(tickMs)} was sent but could not be marked sent: ${(err as Error).message}`);
    }
    return true;
  }

  /** The second look at a tick not known to be sent: claim it if nobody has, take it over if still claimed. */
  private async settle(entry: ScheduledEntry, tickMs: number): Promise<void> {
    const { store, replicaId } = this.options;
    try {
      const current = await store.read(entry.name, tickMs);
      if (current?.state === 'sent') return;
      const attempt = current
        ? await store.takeOver(entry.name, tickMs, current.owner, replicaId, this.ttlSeconds)
        : await store.claim(entry.name, tickMs, replicaId, this.ttlSeconds);
      if (!attempt.won) return; // another replica took it over first
      if (current) this.options.logger.warn(`Periodic task ${entry.name} at ${iso(tickMs)}: claim of ${current.owner} not sent after ${this.options.claimTimeoutMs} ms; taken over`);
      if (!(await this.sendClaimed(entry, tickMs))) this.options.logger.error(`Periodic task ${entry.name} at ${iso(tickMs)}: given up in this replica`);
    } catch (err) {
      this.options.logger.error(`Periodic task ${entry.name} at ${iso(tickMs)}: second look failed: ${(err as Error).message}; left to the other replicas`);
    }
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
