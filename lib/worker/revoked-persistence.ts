import { Logger } from '@nestjs/common';
import type { Client } from 'cassandra-driver';
import { appendFile, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { REVOKE_EXPIRES_MS, REVOKES_MAX, type RevokedSet } from './control/limited-set';

/**
 * Revoked task ids that outlive the worker, as Celery's `--statedb` (worker_state_db) keeps them:
 * a revoke received before a restart still stops the task when it is delivered after it. Celery
 * writes its shelve file at shutdown only; these stores write each revoke through at once, so a
 * crash loses nothing either.
 *
 * The worker's in-memory revoked set (Celery's `worker_state.revoked`, a LimitedSet of 50,000 ids
 * kept 3 hours) stays where it is; `PersistentRevokedSet` wraps it: `add` goes to both, `restore`
 * fills it from the store at start (CeleryWorker does both when `worker.stateDb` is set).
 */

/** One persisted revoke. */
export interface RevokedEntry {
  id: string;
  /** Epoch ms after which it no longer counts. */
  expiresAt: number;
}

/** Where revoked ids are kept between runs: a file (one worker) or a Cassandra table (every worker sharing it). */
export interface RevokedStore {
  /** The live entries, oldest first (expired ones dropped), at most REVOKES_MAX of the newest. */
  load(now?: number): Promise<RevokedEntry[]>;
  save(entry: RevokedEntry): Promise<void>;
  close(): Promise<void>;
  describe(): string;
}

/**
 * A JSON-lines file: one `{"id", "expires"}` line per revoke, appended as it comes (Celery's
 * statedb is a shelve file written at shutdown). `load` drops expired and repeated ids and, when
 * most lines are dead, rewrites the file with the live ones (atomically, by rename).
 */
export class FileRevokedStore implements RevokedStore {
  private writes: Promise<void> = Promise.resolve();

  constructor(readonly path: string) {
    if (typeof path !== 'string' || path.length === 0) throw new TypeError('the revoked-state file needs a path');
  }

  describe(): string {
    return `file ${this.path}`;
  }

  async load(now = Date.now()): Promise<RevokedEntry[]> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const byId = new Map<string, RevokedEntry>();
    const lines = text.split('\n').filter((l) => l.length > 0);
    for (const line of lines) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        continue; // a line cut short by a crash mid-write
      }
      const e = parsed as { id?: unknown; expires?: unknown };
      if (typeof e.id !== 'string' || typeof e.expires !== 'number') continue;
      byId.delete(e.id); // re-inserted: ordered by its latest revoke
      byId.set(e.id, { id: e.id, expiresAt: e.expires });
    }
    const live = [...byId.values()].filter((e) => e.expiresAt > now).slice(-REVOKES_MAX);
    if (lines.length > 2 * live.length + 100) await this.rewrite(live);
    return live;
  }

  save(entry: RevokedEntry): Promise<void> {
    const line = `${JSON.stringify({ id: entry.id, expires: entry.expiresAt })}\n`;
    // one write after the other (lines never interleave); a failed write does not stop the next
    const write = this.writes
      .catch(() => undefined)
      .then(async () => {
        await mkdir(dirname(this.path), { recursive: true });
        await appendFile(this.path, line, 'utf8');
      });
    this.writes = write;
    return write;
  }

  private async rewrite(live: RevokedEntry[]): Promise<void> {
    const tmp = `${this.path}.${process.pid}.tmp`;
    await writeFile(tmp, live.map((e) => `${JSON.stringify({ id: e.id, expires: e.expiresAt })}\n`).join(''), 'utf8');
    await rename(tmp, this.path);
  }

  async close(): Promise<void> {
    await this.writes.catch(() => undefined);
  }
}

/**
 * A Cassandra table shared by every worker that names it: `(task_id text PRIMARY KEY, expires_at
 * timestamp)`, each row written `USING TTL` so Cassandra drops it when it expires. A worker that
 * starts reads every live row, so an id revoked while it was down (by any node) still counts.
 */
export class CassandraRevokedStore implements RevokedStore {
  private ready: Promise<void> | null = null;

  /** `client`: a connected client, or how to get one (the worker's: the result store's session, connected by then). */
  constructor(
    private readonly clientOf: Client | (() => Client),
    private readonly keyspace: string,
    private readonly table: string,
  ) {
    for (const [what, name] of [
      ['keyspace', keyspace],
      ['table', table],
    ] as const) {
      if (!/^[A-Za-z][A-Za-z0-9_]{0,47}$/.test(name)) throw new TypeError(`revoked-state ${what} must be a CQL identifier (letters, digits, _), not ${JSON.stringify(name)}`);
    }
  }

  describe(): string {
    return `Cassandra table ${this.keyspace}.${this.table}`;
  }

  private get client(): Client {
    return typeof this.clientOf === 'function' ? this.clientOf() : this.clientOf;
  }

  private ensureTable(): Promise<void> {
    this.ready ??= this.client
      .execute(`CREATE TABLE IF NOT EXISTS ${this.keyspace}.${this.table} (task_id text PRIMARY KEY, expires_at timestamp)`)
      .then(() => undefined)
      .catch((err: unknown) => {
        this.ready = null;
        throw err;
      });
    return this.ready;
  }

  async load(now = Date.now()): Promise<RevokedEntry[]> {
    await this.ensureTable();
    const out: RevokedEntry[] = [];
    let pageState: string | undefined;
    do {
      const rs = await this.client.execute(`SELECT task_id, expires_at FROM ${this.keyspace}.${this.table}`, [], { prepare: true, fetchSize: 5000, pageState });
      for (const row of rs.rows) {
        const expires = row.get('expires_at') as Date | null;
        const expiresAt = expires ? expires.getTime() : now + REVOKE_EXPIRES_MS;
        if (expiresAt > now) out.push({ id: String(row.get('task_id')), expiresAt });
      }
      pageState = rs.pageState ?? undefined;
    } while (pageState);
    // oldest first, as the in-memory set evicts: the one expiring first was revoked first
    out.sort((a, b) => a.expiresAt - b.expiresAt);
    return out.slice(-REVOKES_MAX);
  }

  async save(entry: RevokedEntry): Promise<void> {
    await this.ensureTable();
    const ttl = Math.max(1, Math.ceil((entry.expiresAt - Date.now()) / 1000));
    await this.client.execute(`INSERT INTO ${this.keyspace}.${this.table} (task_id, expires_at) VALUES (?, ?) USING TTL ?`, [entry.id, new Date(entry.expiresAt), ttl], { prepare: true });
  }

  async close(): Promise<void> {
    return;
  }
}

/**
 * The worker's revoked set, persisted: `add` flags the id in memory at once and writes it to the
 * store (a write that fails is logged; the id still counts in this run); `restore` loads the store
 * into the set at start. Plug it where the worker handles `revoke` (and mingle's `hello`).
 */
export class PersistentRevokedSet implements RevokedSet {
  private readonly logger = new Logger('CeleryRevokedState');
  private pending = new Set<Promise<void>>();

  constructor(
    readonly inner: RevokedSet,
    readonly store: RevokedStore,
  ) {}

  async restore(now = Date.now()): Promise<number> {
    let entries: RevokedEntry[];
    try {
      entries = await this.store.load(now);
    } catch (err) {
      throw new Error(`Could not restore revoked task ids from ${this.store.describe()} (worker.stateDb): ${err instanceof Error ? err.message : String(err)}`);
    }
    for (const e of entries) this.inner.add(e.id, e.expiresAt);
    this.logger.log(`Restored ${entries.length} revoked task id${entries.length === 1 ? '' : 's'} from ${this.store.describe()}`);
    return entries.length;
  }

  add(id: string, expiresAt = Date.now() + REVOKE_EXPIRES_MS): void {
    this.inner.add(id, expiresAt);
    const write = this.store.save({ id, expiresAt }).catch((err: unknown) => {
      this.logger.error(`Could not persist revoked id ${id} to ${this.store.describe()}: ${err instanceof Error ? err.message : String(err)}`);
    });
    this.pending.add(write);
    void write.finally(() => this.pending.delete(write));
  }

  has(id: string): boolean {
    return this.inner.has(id);
  }

  ids(): string[] {
    return this.inner.ids();
  }

  /** Waits for the writes in flight (call at shutdown, before closing the store's connection). */
  async flush(): Promise<void> {
    await Promise.all([...this.pending]);
  }

  /** Flushes and closes the store (worker shutdown). */
  async close(): Promise<void> {
    await this.flush();
    await this.store.close();
  }
}
