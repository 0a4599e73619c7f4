import type { Client } from 'cassandra-driver';
import { types } from 'cassandra-driver';
import { CeleryConnectionError } from '../errors/celery.errors';
import { driverConsistencyKey } from '../results/cassandra-client-options';
import type { SharedRateStore } from './rate-limit';

/** The table of shared rate limits: one row per task name, the instant its next task may start. */
export function createRateLimitTableCql(keyspace: string, table: string): string {
  return `CREATE TABLE IF NOT EXISTS ${keyspace}.${table} (\n    task_name text PRIMARY KEY,\n    next_start bigint\n)`;
}

export interface CassandraRateStoreOptions {
  keyspace: string;
  /** Default `celery_rate_limits`. */
  table: string;
  /** Consistency of the write that commits a compare-and-set (`cassandra.writeConsistency`). */
  writeConsistency: string;
  /** Paxos consistency: `SERIAL` (all data centers agree) or `LOCAL_SERIAL` (one data center). */
  serialConsistency: 'SERIAL' | 'LOCAL_SERIAL';
}

const UNAUTHORIZED = 0x2100;
/** Rows outlive their last write by a day at least, so idle task names disappear. */
const MIN_TTL_S = 86400;
const MAX_TTL_S = 630720000;

/**
 * Shared rate limits in Cassandra, one lightweight transaction (Paxos compare-and-set) per claim:
 * `UPDATE … SET next_start = ? WHERE task_name = ? IF next_start = ?`. Nothing is read first: a
 * failed claim answers with the row's current value, which the next try uses. Uses the result
 * store's connection (`session`), in the result keyspace; creates its table as the result store
 * creates its own, never the keyspace (Astra).
 */
export class CassandraRateStore implements SharedRateStore {
  private readonly casCql: string;
  private readonly writeConsistency: number;
  private readonly serialConsistency: number;

  constructor(
    /** The connected driver client (the result store's). */
    private readonly session: () => Client,
    private readonly options: CassandraRateStoreOptions,
  ) {
    this.casCql = `UPDATE ${options.keyspace}.${options.table} USING TTL ? SET next_start = ? WHERE task_name = ? IF next_start = ?`;
    this.writeConsistency = consistency(options.writeConsistency);
    this.serialConsistency = consistency(options.serialConsistency);
  }

  describe(): string {
    return `Cassandra table ${this.options.keyspace}.${this.options.table}`;
  }

  async prepare(): Promise<void> {
    await ensureOwnTable(this.session(), this.options.keyspace, this.options.table, createRateLimitTableCql, 'Rate limit');
  }

  async compareAndSet(taskName: string, expected: number | null, next: number): Promise<{ applied: boolean; current: number | null }> {
    const ttl = Math.min(MAX_TTL_S, Math.max(MIN_TTL_S, Math.ceil((2 * (next - Date.now() * 1000)) / 1e6)));
    const rs = await this.session().execute(
      this.casCql,
      [ttl, types.Long.fromNumber(next), taskName, expected === null ? null : types.Long.fromNumber(expected)],
      { prepare: true, consistency: this.writeConsistency, serialConsistency: this.serialConsistency, isIdempotent: false },
    );
    const row = Array.isArray(rs.rows) ? rs.rows[0] : undefined;
    const applied = row?.['[applied]'];
    // an answer without [applied] is not this request's (see the stream guard): not counted as a claim
    if (typeof applied !== 'boolean') throw new CeleryConnectionError(`${this.describe()} answered a compare-and-set of ${taskName} without [applied]`);
    if (applied) return { applied, current: expected };
    const current = row?.next_start as types.Long | null | undefined;
    return { applied, current: current == null ? null : current.toNumber() };
  }
}

/**
 * Creates a table of ours beside Celery's in the result keyspace unless it exists, never the
 * keyspace (Astra); `what` names it in errors ("Rate limit", "Periodic tick claims").
 */
export async function ensureOwnTable(client: Client, keyspace: string, table: string, createCql: (keyspace: string, table: string) => string, what: string): Promise<void> {
  if (await client.metadata.getTable(keyspace.toLowerCase(), table.toLowerCase())) return;
  try {
    await client.execute(createCql(keyspace, table));
  } catch (err) {
    const why = (err as Error).message;
    if ((err as { code?: number }).code === UNAUTHORIZED) {
      throw new CeleryConnectionError(`${what} table ${keyspace}.${table} does not exist and this role may not create it (needs CREATE permission on keyspace ${keyspace}): ${why}`);
    }
    throw new CeleryConnectionError(`Cannot create ${what.toLowerCase()} table ${keyspace}.${table}: ${why}`);
  }
}

/** The driver's number of a consistency level name (`LOCAL_QUORUM`, `SERIAL`). */
export function consistency(name: string): number {
  const value = (types.consistencies as unknown as Record<string, number>)[driverConsistencyKey(name)];
  if (value === undefined) throw new CeleryConnectionError(`unknown consistency level ${name}`);
  return value;
}
