import type { Client } from 'cassandra-driver';
import { CeleryConnectionError } from '../errors/celery.errors';
import type { ResolvedCeleryConfig } from '../config/resolved-config';
import { chordState, ChordState, counterChordCall, counterChordPartOf, CounterChordPart, InvalidSignatureError } from '../protocol/canvas-apply';
import { READY_STATES } from '../protocol/states';
import type { DecodedTask } from '../protocol/task-message';
import { CassandraResultStore } from '../results/cassandra.result-store';
import { MemoryResultStore } from '../results/memory.result-store';
import type { ResultStore } from '../results/result-store.interface';
import { consistency, ensureOwnTable } from './cassandra-rate-store';
import { ChordUnlockDeps, failChord, sendChordBody } from './chord-unlock';
import { markedMaybeDuplicate } from './task-request';

/**
 * Chords completed by their header tasks (counter mode, README "How a chord completes"): no
 * `celery.chord_unlock` polls the results. Each header task, once its own result is stored,
 * records itself in the chord's row (its `group_index` → its id); the one whose record makes the
 * set complete claims the chord (a compare-and-set, so exactly one header task finishes it),
 * reads every header result in one query and publishes the body — or stores the `ChordError` and
 * sends the errbacks — exactly as chord_unlock would, then marks the body sent. Its message is
 * acknowledged only after that: a header task redelivered after its worker died does the part it
 * missed (the claim remembers who holds it, so the holder's redelivered copy finishes the chord).
 */

/** A chord's row is kept this long after its last write (a chord whose header runs longer loses its row). */
export const CHORD_ROW_TTL_SECONDS = 7 * 24 * 3600;

/** Where counter-mode chords keep their state: one row per chord (its group id). */
export interface ChordCounterStore {
  describe(): string;
  /** Creates the table when missing (once). */
  prepare(): Promise<void>;
  /** Records header task `index` (id `taskId`) as done, then reads every header task recorded so far (index → id). Idempotent. */
  markDone(groupId: string, index: number, taskId: string): Promise<Map<number, string>>;
  /**
   * Claims the completion of the chord for `taskId` (compare-and-set: the first claim wins):
   * who holds it, and whether the body has been sent (only read when `taskId` holds it).
   */
  claim(groupId: string, taskId: string): Promise<Claim>;
  /** The body has been published (or the ChordError stored): a redelivered finisher does not send it again. */
  markSent(groupId: string): Promise<void>;
}

/** Who completes a chord; `again`: `taskId` claimed it before (a redelivered finisher, which may have sent the body already). */
export interface Claim {
  finisher: string;
  sent: boolean;
  again: boolean;
}

/** The table of counter-mode chords. */
export function createChordTableCql(keyspace: string, table: string): string {
  return `CREATE TABLE IF NOT EXISTS ${keyspace}.${table} (\n    group_id text PRIMARY KEY,\n    done map<int, text>,\n    finisher text,\n    body_sent boolean\n)`;
}


export interface CassandraChordStoreOptions {
  keyspace: string;
  table: string;
  readConsistency: string;
  writeConsistency: string;
  serialConsistency: 'SERIAL' | 'LOCAL_SERIAL';
}

/**
 * Counter-mode chords in Cassandra, beside Celery's result table (the result store's connection
 * and keyspace): `done` is a map, so a redelivered header task writes the same cell again; the
 * claim is a lightweight transaction on `finisher`. Every other statement is a plain write or a
 * single-partition read at the result store's consistencies.
 */
export class CassandraChordStore implements ChordCounterStore {
  private prepared: Promise<void> | null = null;
  private readonly cql: { markDone: string; readDone: string; claim: string; readSent: string; markSent: string };
  private readonly read: number;
  private readonly write: number;
  private readonly serial: number;

  constructor(
    private readonly session: () => Client,
    private readonly options: CassandraChordStoreOptions,
  ) {
    const t = `${options.keyspace}.${options.table}`;
    this.cql = {
      markDone: `UPDATE ${t} USING TTL ${CHORD_ROW_TTL_SECONDS} SET done[?] = ? WHERE group_id = ?`,
      readDone: `SELECT done FROM ${t} WHERE group_id = ?`,
      claim: `UPDATE ${t} USING TTL ${CHORD_ROW_TTL_SECONDS} SET finisher = ? WHERE group_id = ? IF finisher = null`,
      readSent: `SELECT body_sent FROM ${t} WHERE group_id = ?`,
      markSent: `UPDATE ${t} USING TTL ${CHORD_ROW_TTL_SECONDS} SET body_sent = true WHERE group_id = ?`,
    };
    this.read = consistency(options.readConsistency);
    this.write = consistency(options.writeConsistency);
    this.serial = consistency(options.serialConsistency);
  }

  describe(): string {
    return `Cassandra table ${this.options.keyspace}.${this.options.table}`;
  }

  prepare(): Promise<void> {
    this.prepared ??= ensureOwnTable(this.session(), this.options.keyspace, this.options.table, createChordTableCql, 'Chord').catch((err: unknown) => {
      this.prepared = null; // tried again by the next header task
      throw err;
    });
    return this.prepared;
  }

  async markDone(groupId: string, index: number, taskId: string): Promise<Map<number, string>> {
    const client = this.session();
    await client.execute(this.cql.markDone, [index, taskId, groupId], { prepare: true, consistency: this.write });
    const rs = await client.execute(this.cql.readDone, [groupId], { prepare: true, consistency: this.read });
    const done = rs.rows[0]?.done as Record<string, string> | Map<number, string> | null | undefined;
    if (!done) return new Map();
    return done instanceof Map ? done : new Map(Object.entries(done).map(([k, v]) => [Number(k), v]));
  }

  async claim(groupId: string, taskId: string): Promise<Claim> {
    const client = this.session();
    const rs = await client.execute(this.cql.claim, [taskId, groupId], { prepare: true, consistency: this.write, serialConsistency: this.serial, isIdempotent: false });
    const row = rs.rows[0];
    const applied = row?.['[applied]'];
    if (typeof applied !== 'boolean') throw new CeleryConnectionError(`${this.describe()} answered the claim of chord ${groupId} without [applied]`);
    if (applied) return { finisher: taskId, sent: false, again: false };
    const finisher = String(row.finisher);
    if (finisher !== taskId) return { finisher, sent: false, again: false };
    const sent = await client.execute(this.cql.readSent, [groupId], { prepare: true, consistency: this.serial });
    return { finisher, sent: sent.rows[0]?.body_sent === true, again: true };
  }

  async markSent(groupId: string): Promise<void> {
    await this.session().execute(this.cql.markSent, [groupId], { prepare: true, consistency: this.write });
  }
}

/** Counter-mode chords in this process (the memory result store: producer and worker in one process). */
export class MemoryChordStore implements ChordCounterStore {
  private readonly chords = new Map<string, { done: Map<number, string>; finisher: string | null; sent: boolean; touched: number }>();

  describe(): string {
    return 'memory';
  }

  async prepare(): Promise<void> {}

  private row(groupId: string) {
    const now = Date.now();
    for (const [id, c] of this.chords) if (now - c.touched > CHORD_ROW_TTL_SECONDS * 1000) this.chords.delete(id);
    let chord = this.chords.get(groupId);
    if (!chord) this.chords.set(groupId, (chord = { done: new Map(), finisher: null, sent: false, touched: now }));
    chord.touched = now;
    return chord;
  }

  async markDone(groupId: string, index: number, taskId: string): Promise<Map<number, string>> {
    const chord = this.row(groupId);
    chord.done.set(index, taskId);
    return new Map(chord.done);
  }

  async claim(groupId: string, taskId: string): Promise<Claim> {
    const chord = this.row(groupId);
    const again = chord.finisher === taskId;
    chord.finisher ??= taskId;
    return { finisher: chord.finisher, sent: chord.finisher === taskId && chord.sent, again };
  }

  async markSent(groupId: string): Promise<void> {
    this.row(groupId).sent = true;
  }
}

/** The chord store of a worker with these settings: beside the Cassandra result table, in memory with the memory store, none otherwise. */
export function createChordStore(config: ResolvedCeleryConfig, store: ResultStore): ChordCounterStore | null {
  if (store instanceof CassandraResultStore && config.cassandra) {
    return new CassandraChordStore(() => store.session(), {
      keyspace: config.cassandra.keyspace,
      table: config.chords.table,
      readConsistency: config.cassandra.readConsistency,
      writeConsistency: config.cassandra.writeConsistency,
      serialConsistency: config.chords.serialConsistency,
    });
  }
  if (store instanceof MemoryResultStore) return new MemoryChordStore();
  return null;
}

/**
 * The chord part of a header task in counter mode, done after its result is stored and before its
 * message is acknowledged. Throws when it could not be done (the message then goes back, and the
 * redelivered copy does it); a message whose chord part cannot be read is logged and left.
 */
export class ChordCounter {
  constructor(
    private readonly store: ChordCounterStore | null,
    private readonly deps: ChordUnlockDeps,
  ) {}

  async partDone(task: DecodedTask): Promise<void> {
    let part: CounterChordPart | null;
    try {
      part = counterChordPartOf(task);
    } catch (err) {
      if (!(err instanceof InvalidSignatureError)) throw err;
      this.deps.logger.error(`${err.message}; its chord cannot be completed`);
      return;
    }
    if (!part) return;
    if (!this.store) {
      this.deps.logger.error(`Task ${task.task}[${task.id}] is a header task of counter-mode chord ${part.groupId}, but this worker has no result backend to keep the chord in: the chord's body is never sent`);
      return;
    }
    await this.store.prepare();
    const done = await this.store.markDone(part.groupId, part.index, task.id);
    const ids: string[] = [];
    for (let i = 0; i < part.size; i++) {
      const id = done.get(i);
      if (id === undefined) return; // not the last one: another header task completes the chord
      ids.push(id);
    }
    const claim = await this.store.claim(part.groupId, task.id);
    if (claim.finisher !== task.id || claim.sent) return; // another header task holds it, or it is done
    const call = counterChordCall(part, ids);
    const metas = await this.deps.getTaskMetas(ids);
    const state = completeState(chordState(call.header, new Map(metas.map((m) => [m.taskId, m]))), ids, new Map(metas.map((m) => [m.taskId, m.status])));
    const parent = { id: task.id, rootId: task.rootId ?? task.id };
    // a finisher claiming again may have sent the body before it died: the copy is marked, and not run again once the first stored its SUCCESS
    if (state.kind === 'ready') await sendChordBody(this.deps, call, state.values, parent, claim.again ? markedMaybeDuplicate : undefined);
    else await failChord(this.deps, call, state.culpritId, state.error, parent);
    await this.store.markSent(part.groupId);
  }
}

/**
 * Every header task has recorded itself after storing its result, so each result is there: one
 * still not ready was not stored (an ignored result) and fails the chord, naming it, instead of
 * leaving the body waiting for ever.
 */
function completeState(state: ChordState, ids: readonly string[], statuses: ReadonlyMap<string, string>): Exclude<ChordState, { kind: 'waiting' }> {
  if (state.kind !== 'waiting') return state;
  const culpritId = ids.find((id) => !READY_STATES.has(statuses.get(id) ?? 'PENDING')) ?? ids[0];
  return {
    kind: 'failed',
    culpritId,
    error: { exc_type: 'RuntimeError', exc_message: [`no result stored for header task ${culpritId} (ignore_result?); a counter-mode chord needs every header result`], exc_module: 'builtins' },
  };
}
