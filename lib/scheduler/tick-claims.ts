/**
 * Claims on ticks: the one place where replicas agree who sends a tick. A claim row per
 * (schedule, tick) goes from `claimed` (a replica won it and is publishing) to `sent` (the broker
 * confirmed the message). A claim left `claimed` longer than the claim timeout belongs to a replica
 * that died or could not publish, and another replica takes it over.
 */
export type TickState = 'claimed' | 'sent';

export interface TickClaim {
  state: TickState;
  /** The replica holding the claim (`PeriodicScheduler.replicaId`). */
  owner: string;
}

export interface ClaimAttempt {
  /** True when this call made the caller the owner. */
  won: boolean;
  /** The row as it is after the attempt (the winner's, when lost); null when there is none. */
  current: TickClaim | null;
}

export interface TickClaimStore {
  /** Creates what the store needs (the Cassandra table); called once at start. */
  prepare(): Promise<void>;
  /** Claims a tick nobody claimed yet (`INSERT … IF NOT EXISTS`). */
  claim(schedule: string, tickMs: number, owner: string, ttlSeconds: number): Promise<ClaimAttempt>;
  /** Takes over a tick still `claimed` by `staleOwner` (`UPDATE … IF state = 'claimed' AND owner = ?`). */
  takeOver(schedule: string, tickMs: number, staleOwner: string, owner: string, ttlSeconds: number): Promise<ClaimAttempt>;
  /** Marks the tick sent, if `owner` still holds it; false when another replica took it over meanwhile. */
  markSent(schedule: string, tickMs: number, owner: string, ttlSeconds: number): Promise<boolean>;
  /** The claim as it is now (a serial read: no claim in flight is missed); null when there is none. */
  read(schedule: string, tickMs: number): Promise<TickClaim | null>;
  /** For logs. */
  describe(): string;
  /** Whether every replica of the app sees the same claims (Cassandra), or only this process. */
  readonly shared: boolean;
}

/**
 * Claims in this process only: the embedded default (memory result store), and the fallback when
 * there is no Cassandra. One process never sends a tick twice; several processes each send it.
 */
export class MemoryTickClaimStore implements TickClaimStore {
  readonly shared = false;
  private readonly rows = new Map<string, TickClaim & { expiresAt: number }>();

  constructor(private readonly now: () => number = () => Date.now()) {}

  async prepare(): Promise<void> {}

  async claim(schedule: string, tickMs: number, owner: string, ttlSeconds: number): Promise<ClaimAttempt> {
    this.prune();
    const current = this.get(schedule, tickMs);
    if (current) return { won: false, current };
    return this.put(schedule, tickMs, { state: 'claimed', owner }, ttlSeconds);
  }

  async takeOver(schedule: string, tickMs: number, staleOwner: string, owner: string, ttlSeconds: number): Promise<ClaimAttempt> {
    const current = this.get(schedule, tickMs);
    if (!current || current.state !== 'claimed' || current.owner !== staleOwner) return { won: false, current };
    return this.put(schedule, tickMs, { state: 'claimed', owner }, ttlSeconds);
  }

  async markSent(schedule: string, tickMs: number, owner: string, ttlSeconds: number): Promise<boolean> {
    const current = this.get(schedule, tickMs);
    if (!current || current.owner !== owner) return false;
    this.put(schedule, tickMs, { state: 'sent', owner }, ttlSeconds);
    return true;
  }

  async read(schedule: string, tickMs: number): Promise<TickClaim | null> {
    return this.get(schedule, tickMs);
  }

  describe(): string {
    return 'memory (this process only)';
  }

  private get(schedule: string, tickMs: number): TickClaim | null {
    const row = this.rows.get(`${schedule}\0${tickMs}`);
    return row && row.expiresAt > this.now() ? { state: row.state, owner: row.owner } : null;
  }

  private put(schedule: string, tickMs: number, claim: TickClaim, ttlSeconds: number): ClaimAttempt {
    this.rows.set(`${schedule}\0${tickMs}`, { ...claim, expiresAt: this.now() + ttlSeconds * 1000 });
    return { won: true, current: { ...claim } };
  }

  private prune(): void {
    const now = this.now();
    for (const [key, row] of this.rows) if (row.expiresAt <= now) this.rows.delete(key);
  }
}
