import type { Client } from 'cassandra-driver';
import { types } from 'cassandra-driver';
import { CeleryConnectionError } from '../errors/celery.errors';
import { consistency, ensureOwnTable } from '../worker/cassandra-rate-store';
import type { ClaimAttempt, TickClaim, TickClaimStore, TickState } from './tick-claims';

/** The table of tick claims: one row per (schedule, tick), written only by lightweight transactions. */
export function createTickClaimTableCql(keyspace: string, table: string): string {
  return (
    `CREATE TABLE IF NOT EXISTS ${keyspace}.${table} (\n` +
    '    schedule_name text,\n    tick timestamp,\n    state text,\n    owner text,\n' +
    '    PRIMARY KEY ((schedule_name, tick))\n)'
  );
}

export interface CassandraTickClaimOptions {
  keyspace: string;
  /** Default `celery_periodic_ticks`. */
  table: string;
  /** Consistency of the write that commits a lightweight transaction (`cassandra.writeConsistency`). */
  writeConsistency: string;
  /** Paxos consistency: `SERIAL` (all data centers agree) or `LOCAL_SERIAL` (one data center). */
  serialConsistency: 'SERIAL' | 'LOCAL_SERIAL';
}

/**
 * Tick claims in Cassandra: every change is a lightweight transaction (Paxos) on the tick's own
 * partition, so of N replicas claiming the same tick exactly one is applied, and a takeover or a
 * `sent` mark only applies while the row is as the caller saw it. Uses the result store's
 * connection, in the result keyspace; creates its table as the rate limits do.
 */
export class CassandraTickClaimStore implements TickClaimStore {
  readonly shared = true;
  private readonly claimCql: string;
  private readonly takeOverCql: string;
  private readonly markSentCql: string;
  private readonly readCql: string;
  private readonly writeConsistency: number;
  private readonly serialConsistency: number;

  constructor(
    /** The connected driver client (the result store's). */
    private readonly session: () => Client,
    private readonly options: CassandraTickClaimOptions,
  ) {
    const t = `${options.keyspace}.${options.table}`;
    this.claimCql = `INSERT INTO ${t} (schedule_name, tick, state, owner) VALUES (?, ?, 'claimed', ?) IF NOT EXISTS USING TTL ?`;
    this.takeOverCql = `UPDATE ${t} USING TTL ? SET owner = ? WHERE schedule_name = ? AND tick = ? IF state = 'claimed' AND owner = ?`;
    this.markSentCql = `UPDATE ${t} USING TTL ? SET state = 'sent' WHERE schedule_name = ? AND tick = ? IF owner = ?`;
    this.readCql = `SELECT state, owner FROM ${t} WHERE schedule_name = ? AND tick = ?`;
    this.writeConsistency = consistency(options.writeConsistency);
    this.serialConsistency = consistency(options.serialConsistency);
  }

  describe(): string {
    return `Cassandra table ${this.options.keyspace}.${this.options.table}`;
  }

  async prepare(): Promise<void> {
    await ensureOwnTable(this.session(), this.options.keyspace, this.options.table, createTickClaimTableCql, 'Periodic tick claims');
  }

  async claim(schedule: string, tickMs: number, owner: string, ttlSeconds: number): Promise<ClaimAttempt> {
    const row = await this.cas(this.claimCql, [schedule, new Date(tickMs), owner, ttlSeconds], schedule, tickMs);
    return row.applied ? { won: true, current: { state: 'claimed', owner } } : { won: false, current: row.current };
  }

  async takeOver(schedule: string, tickMs: number, staleOwner: string, owner: string, ttlSeconds: number): Promise<ClaimAttempt> {
    const row = await this.cas(this.takeOverCql, [ttlSeconds, owner, schedule, new Date(tickMs), staleOwner], schedule, tickMs);
    return row.applied ? { won: true, current: { state: 'claimed', owner } } : { won: false, current: row.current };
  }

  async markSent(schedule: string, tickMs: number, owner: string, ttlSeconds: number): Promise<boolean> {
    return (await this.cas(this.markSentCql, [ttlSeconds, schedule, new Date(tickMs), owner], schedule, tickMs)).applied;
  }

  async read(schedule: string, tickMs: number): Promise<TickClaim | null> {
    // SERIAL: a read that also settles any transaction in flight on the row, so it sees the latest claim
    const rs = await this.session().execute(this.readCql, [schedule, new Date(tickMs)], { prepare: true, consistency: this.serialConsistency });
    return claimOf(rs.rows[0]);
  }

  private async cas(cql: string, params: unknown[], schedule: string, tickMs: number): Promise<{ applied: boolean; current: TickClaim | null }> {
    const rs = await this.session().execute(cql, params, {
      prepare: true,
      consistency: this.writeConsistency,
      serialConsistency: this.serialConsistency,
      isIdempotent: false,
    });
    const row = Array.isArray(rs.rows) ? rs.rows[0] : undefined;
    const applied = row?.['[applied]'];
    // an answer without [applied] is not this request's (see the stream guard): not counted either way
    if (typeof applied !== 'boolean') {
      throw new CeleryConnectionError(`${this.describe()} answered a claim of ${schedule} at ${new Date(tickMs).toISOString()} without [applied]`);
    }
    return { applied, current: applied ? null : claimOf(row) };
  }
}

function claimOf(row: types.Row | undefined): TickClaim | null {
  const state = row?.state as string | null | undefined;
  if (state !== 'claimed' && state !== 'sent') return null;
  return { state: state as TickState, owner: String(row?.owner ?? '') };
}
