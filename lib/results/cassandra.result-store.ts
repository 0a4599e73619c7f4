import { Logger } from '@nestjs/common';
import { Client, policies, types } from 'cassandra-driver';
import type { ResolvedCassandraConfig } from '../config/resolved-config';
import { CeleryConnectionError } from '../errors/celery.errors';
import { checkExpiresSeconds, decodeResultRow, encodeResultRow, ExtendedRow, pendingMeta, ResultRow, ResultToStore, TaskMeta } from '../protocol/result-row';
import { cassandraClientOptions, DriverClientOptions, driverConsistencyKey } from './cassandra-client-options';
import { ResultStore } from './result-store.interface';
import { guardedClient } from './cassandra-stream-guard';
import { checkRowSize, DEFAULT_MAX_RESULT_BYTES } from './store-errors';
import { readTlsFiles, TlsMaterial } from '../config/tls-files';
import { DEFAULT_JSON_OPTIONS, JsonOptions } from '../protocol/python-json';

/** Celery's Cassandra result table, column for column (celery/backends/cassandra.py). */
export function createTableCql(keyspace: string, table: string): string {
  return (
    `CREATE TABLE IF NOT EXISTS ${keyspace}.${table} (\n` +
    '    task_id text,\n    status text,\n    result blob,\n    date_done timestamp,\n' +
    '    traceback blob,\n    children blob,\n    PRIMARY KEY ((task_id), date_done)\n' +
    ') WITH CLUSTERING ORDER BY (date_done DESC)'
  );
}

/**
 * The `resultExtended` columns, added to Celery's table with ALTER TABLE ADD. Celery's own
 * statements name their columns (SELECT status, result, date_done, traceback, children), so Python
 * readers and writers keep working on the altered table; Python's rows leave these null.
 */
export const EXTENDED_COLUMNS: readonly (readonly [string, string])[] = [
  ['name', 'text'],
  ['args', 'blob'],
  ['kwargs', 'blob'],
  ['worker', 'text'],
  ['retries', 'int'],
  ['queue', 'text'],
  ['parent_id', 'text'],
  ['group_id', 'text'],
];

export interface CassandraResultStoreOptions {
  /** Celery's `result_extended`: store name, args, kwargs, worker, retries, queue in extra columns. */
  resultExtended?: boolean;
}

const UNAUTHORIZED = 0x2100;
/** How often a reader looks again for the extended columns while the table lacks them. */
const EXTENDED_RECHECK_MS = 5000;
/** Status reads (before each write) out at once before new ones wait to go together. */
const STATUS_READS_IN_FLIGHT = 2;
/** Most task ids in one status read (`IN` list). */
const STATUS_READ_BATCH = 64;

/**
 * Reads and writes Celery's own Cassandra result table, so Python's `AsyncResult.get()` reads
 * what our worker stores and the other way round. Insert-only rows, JSON-text blobs, prepared
 * statements, LOCAL_QUORUM by default, optional TTL. Creates the table when a worker needs it and
 * never the keyspace (Astra forbids it) unless `createKeyspace` is set for development.
 */
export class CassandraResultStore extends ResultStore {
  private readonly logger = new Logger('CeleryResultStore');
  private client: Client | null = null;
  private readonly target: string;
  private readonly selectCql: string;
  private readonly selectExtendedCql: string;
  private readonly statusCql: string;
  /** The newest row of several tasks in one query (a chord's header). */
  private readonly metasCql: string;
  private readonly deleteCql: string;
  /** The four INSERTs: [plain, with TTL, extended, extended with TTL]. */
  private readonly insertCqls: readonly string[];
  private readonly resultExtended: boolean;
  /** Whether the table has the extended columns (checked at connect, and again by readers). */
  private extendedColumns = false;
  private extendedCheckedAt = 0;
  private readonly statusChecks: { taskId: string; resolve: (status: string | undefined) => void; reject: (err: unknown) => void }[] = [];
  private statusReadsInFlight = 0;
  private readonly readConsistency: number;
  private readonly writeConsistency: number;

  constructor(
    private readonly config: ResolvedCassandraConfig,
    private readonly json: JsonOptions = DEFAULT_JSON_OPTIONS,
    /** Largest encoded row written (`worker.maxResultBytes`); a larger one is refused before the write. */
    private readonly maxResultBytes = DEFAULT_MAX_RESULT_BYTES,
    options: CassandraResultStoreOptions = {},
  ) {
    super();
    const target = `${config.keyspace}.${config.table}`;
    this.target = target;
    this.resultExtended = options.resultExtended ?? false;
    const base = 'task_id, status, result, date_done, traceback, children';
    this.selectCql = `SELECT ${base} FROM ${target} WHERE task_id=? LIMIT 1`;
    this.selectExtendedCql = `SELECT ${base}, ${EXTENDED_COLUMNS.map(([c]) => c).join(', ')} FROM ${target} WHERE task_id=? LIMIT 1`;
    this.statusCql = `SELECT task_id, status FROM ${target} WHERE task_id IN ? PER PARTITION LIMIT 1`;
    this.metasCql = `SELECT ${base} FROM ${target} WHERE task_id IN ? PER PARTITION LIMIT 1`;
    this.deleteCql = `DELETE FROM ${target} WHERE task_id=?`;
    this.insertCqls = [false, true].flatMap((extended) => [false, true].map((ttl) => insertCql(target, extended, ttl)));
    this.readConsistency = consistencyOf(config.readConsistency);
    this.writeConsistency = consistencyOf(config.writeConsistency);
  }

  /** Where it connects, for logs and errors (never credentials). */
  describe(): string {
    if (this.config.secureConnectBundle) return `Astra DB bundle ${this.config.secureConnectBundle}`;
    return `Cassandra ${(this.config.contactPoints ?? []).join(',')} port ${this.config.port}${this.config.tls ? ' (TLS)' : ''}`;
  }

  async connect({ forWrites }: { forWrites: boolean }): Promise<void> {
    if (this.client) return;
    const tls = this.config.tls ? readTlsFiles(this.config.tls, 'Cassandra') : null;
    const dataCenter = this.config.secureConnectBundle ? null : (this.config.localDataCenter ?? (await this.detectDataCenter(tls)));
    const client = await this.open(cassandraClientOptions(this.config, dataCenter, tls));
    try {
      await this.checkKeyspace(client);
      if (forWrites) await this.ensureTable(client);
      if (this.resultExtended) await (forWrites ? this.checkExtendedColumns(client, true) : this.checkExtendedColumnsQuietly(client));
    } catch (err) {
      await client.shutdown().catch(() => undefined);
      throw err;
    }
    // the driver reconnects by itself; say when it loses and regains a node, so an outage shows in the logs
    client.on('hostDown', (host: { address: string }) => this.logger.warn(`Cassandra node ${host.address} is down; reconnecting`));
    client.on('hostUp', (host: { address: string }) => this.logger.log(`Cassandra node ${host.address} is up again`));
    this.client = client;
  }

  /** `SELECT release_version FROM system.local` on one node, bounded by `timeoutMs` (the driver's read timeout and a timer). */
  override async ping(timeoutMs: number): Promise<void> {
    const client = this.requireClient();
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new CeleryConnectionError(`${this.describe()} did not answer within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      await Promise.race([client.execute('SELECT release_version FROM system.local', [], { readTimeout: timeoutMs, isIdempotent: true }), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  async store(result: ResultToStore): Promise<void> {
    const ttl = checkExpiresSeconds(result) ?? this.config.entryTtl ?? undefined;
    const extended = this.resultExtended && this.extendedColumns;
    const row = encodeResultRow(extended || !result.extended ? result : { ...result, extended: undefined }, new Date(), this.json);
    checkRowSize(row, this.maxResultBytes);
    const params: unknown[] = [row.taskId, row.status, row.result, row.dateDone, row.traceback, row.children];
    if (row.extended) params.push(...extendedParams(row.extended));
    if (ttl !== undefined) params.push(ttl);
    const rs = await this.requireClient().execute(this.insertCqls[(row.extended ? 2 : 0) + (ttl !== undefined ? 1 : 0)], params, {
      prepare: true,
      consistency: this.writeConsistency,
    });
    // an INSERT answers with no rows; rows mean the reply belongs to another request, so the write is not known to be done
    if (rs.rows !== undefined) throw new CeleryConnectionError(`${this.describe()} answered the write of ${row.taskId} with rows; not counted as stored`);
  }

  /** Deletes every row of the task, as Celery 5.7's `_forget` (`DELETE FROM t WHERE task_id=%s`, write consistency). */
  async forget(taskId: string): Promise<void> {
    const rs = await this.requireClient().execute(this.deleteCql, [taskId], { prepare: true, consistency: this.writeConsistency });
    if (rs.rows !== undefined) throw new CeleryConnectionError(`${this.describe()} answered the delete of ${taskId} with rows; not counted as done`);
  }

  /**
   * As the base class, but the check before the write reads the status column only, and checks
   * that pile up while others are in flight go together in one `IN` query (see `newestStatus`).
   */
  override async storeUnlessSucceeded(result: ResultToStore): Promise<TaskMeta | null> {
    if ((await this.newestStatus(result.taskId)) === 'SUCCESS') return this.getTaskMeta(result.taskId);
    await this.store(result);
    return null;
  }

  /**
   * The newest stored status of a task. A lone check is sent at once; while
   * STATUS_READS_IN_FLIGHT reads are out, new checks wait and leave together, up to
   * STATUS_READ_BATCH ids per query, so a busy worker pays one read per batch rather than per task.
   */
  private newestStatus(taskId: string): Promise<string | undefined> {
    return new Promise((resolve, reject) => {
      this.statusChecks.push({ taskId, resolve, reject });
      if (this.statusReadsInFlight < STATUS_READS_IN_FLIGHT) this.sendStatusReads();
    });
  }

  private sendStatusReads(): void {
    const batch = this.statusChecks.splice(0, STATUS_READ_BATCH);
    if (batch.length === 0) return;
    this.statusReadsInFlight++;
    const asked = new Set(batch.map((c) => c.taskId));
    const ids = [...asked];
    let client: Client;
    try {
      client = this.requireClient();
    } catch (err) {
      this.statusReadsInFlight--;
      for (const check of batch) check.reject(err);
      return;
    }
    client
      .execute(this.statusCql, [ids], { prepare: true, consistency: this.readConsistency })
      .then((rs) => {
        const rows = rowsOf(rs, 'status read');
        const stray = rows.find((r) => !asked.has(r.task_id as string));
        if (stray) throw new CeleryConnectionError(`Cassandra answered a status read with the row of task ${String(stray.task_id)}, not asked for; retrying`);
        const status = new Map<string, string>(rows.map((r) => [r.task_id as string, r.status as string]));
        for (const check of batch) check.resolve(status.get(check.taskId));
      })
      // any failure, the driver's or ours, rejects the batch's checks (their writes retry); none escapes
      .catch((err: unknown) => {
        for (const check of batch) check.reject(err);
      })
      .finally(() => {
        this.statusReadsInFlight--;
        this.sendStatusReads();
      });
  }

  /**
   * The newest row of each task in one `IN` query (`PER PARTITION LIMIT 1`), up to
   * STATUS_READ_BATCH ids a query: `celery.chord_unlock` reads a chord's whole header so, where
   * Celery reads it one task at a time. Celery's columns only (no resultExtended fields).
   */
  override async getTaskMetas(taskIds: readonly string[]): Promise<TaskMeta[]> {
    const client = this.requireClient();
    const found = new Map<string, TaskMeta>();
    const unique = [...new Set(taskIds)];
    for (let i = 0; i < unique.length; i += STATUS_READ_BATCH) {
      const ids = unique.slice(i, i + STATUS_READ_BATCH);
      const asked = new Set(ids);
      const rs = await client.execute(this.metasCql, [ids], { prepare: true, consistency: this.readConsistency });
      for (const row of rowsOf(rs, 'header results read')) {
        const id = row.task_id as string;
        if (!asked.has(id)) throw new CeleryConnectionError(`Cassandra answered a read of ${ids.length} results with the row of task ${id}, not asked for; retrying`);
        found.set(
          id,
          decodeResultRow({
            taskId: id,
            status: row.status as string,
            result: row.result as Buffer | null,
            dateDone: row.date_done as Date | null,
            traceback: row.traceback as Buffer | null,
            children: row.children as Buffer | null,
            extended: null,
          }),
        );
      }
    }
    return taskIds.map((id) => found.get(id) ?? pendingMeta(id));
  }

  async getTaskMeta(taskId: string): Promise<TaskMeta> {
    const client = this.requireClient();
    if (this.resultExtended && !this.extendedColumns && Date.now() - this.extendedCheckedAt >= EXTENDED_RECHECK_MS) await this.checkExtendedColumnsQuietly(client);
    const extended = this.resultExtended && this.extendedColumns;
    const rs = await client.execute(extended ? this.selectExtendedCql : this.selectCql, [taskId], { prepare: true, consistency: this.readConsistency });
    const row = rowsOf(rs, 'result read')[0];
    if (!row) return pendingMeta(taskId);
    if (row.task_id !== taskId) throw new CeleryConnectionError(`Cassandra answered the result read of ${taskId} with the row of ${String(row.task_id)}; retrying`);
    return decodeResultRow({
      taskId,
      status: row.status as string,
      result: row.result as Buffer | null,
      dateDone: row.date_done as Date | null,
      traceback: row.traceback as Buffer | null,
      children: row.children as Buffer | null,
      extended: extended
        ? {
            name: row.name as string | null,
            args: row.args as Buffer | null,
            kwargs: row.kwargs as Buffer | null,
            worker: row.worker as string | null,
            retries: row.retries as number | null,
            queue: row.queue as string | null,
            parentId: row.parent_id as string | null,
            groupId: row.group_id as string | null,
          }
        : null,
    });
  }

  /** Raw rows of the table (all states), newest first per task, like the walkthrough's CQL step. */
  async rows(limit = 100): Promise<ResultRow[]> {
    const rs = await this.requireClient().execute(
      `SELECT task_id, status, result, date_done, traceback, children FROM ${this.config.keyspace}.${this.config.table} LIMIT ${Math.trunc(limit)}`,
      [],
      { consistency: this.readConsistency },
    );
    return rowsOf(rs, 'rows read').map((r) => ({
      taskId: r.task_id as string,
      status: r.status,
      result: r.result,
      dateDone: r.date_done,
      traceback: r.traceback,
      children: r.children,
    }));
  }

  /** The connected driver client, for other tables in the result keyspace (the shared rate limits'). */
  session(): Client {
    return this.requireClient();
  }

  async close(): Promise<void> {
    const client = this.client;
    this.client = null;
    if (client) await client.shutdown();
  }

  private async open(options: DriverClientOptions): Promise<Client> {
    const client = guardedClient(options as ConstructorParameters<typeof Client>[0], this.logger);
    try {
      await client.connect();
      return client;
    } catch (err) {
      await client.shutdown().catch(() => undefined);
      throw new CeleryConnectionError(`Cannot connect to ${this.describe()}: ${messageOf(err)}`);
    }
  }

  /** Python's driver finds the local data center itself; the Node driver needs it, so ask the node. */
  private async detectDataCenter(tls: TlsMaterial | null): Promise<string> {
    const options = cassandraClientOptions(this.config, null, tls);
    const probe = await this.open({ ...options, policies: { ...options.policies, loadBalancing: new policies.loadBalancing.RoundRobinPolicy() } });
    try {
      const host = probe.hosts.values()[0];
      if (!host?.datacenter) throw new CeleryConnectionError(`${this.describe()} did not report its data center; set cassandra.localDataCenter`);
      this.logger.log(`Using Cassandra local data center "${host.datacenter}" (set cassandra.localDataCenter to choose another)`);
      return host.datacenter;
    } finally {
      await probe.shutdown().catch(() => undefined);
    }
  }

  private async checkKeyspace(client: Client): Promise<void> {
    const name = this.config.keyspace.toLowerCase();
    if (client.metadata.keyspaces[name]) return;
    if (!this.config.createKeyspace) {
      throw new CeleryConnectionError(
        `Cassandra keyspace "${this.config.keyspace}" does not exist on ${this.describe()}. Create it first ` +
          '(like Celery, nestjs-celery never creates it; on Astra DB create it in the Astra console), ' +
          'or set cassandra.createKeyspace for local development.',
      );
    }
    await client.execute(
      `CREATE KEYSPACE IF NOT EXISTS ${this.config.keyspace} WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}`,
    );
    await client.metadata.refreshKeyspace(name);
  }

  private async ensureTable(client: Client): Promise<void> {
    const table = await client.metadata.getTable(this.config.keyspace.toLowerCase(), this.config.table.toLowerCase());
    if (table) return;
    try {
      await client.execute(createTableCql(this.config.keyspace, this.config.table));
      this.logger.log(`Created result table ${this.config.keyspace}.${this.config.table}`);
    } catch (err) {
      if ((err as { code?: number }).code === UNAUTHORIZED) {
        throw new CeleryConnectionError(
          `Result table ${this.config.keyspace}.${this.config.table} does not exist and this role may not create it ` +
            `(needs CREATE permission on keyspace ${this.config.keyspace}): ${messageOf(err)}`,
        );
      }
      throw new CeleryConnectionError(`Cannot create result table ${this.config.keyspace}.${this.config.table}: ${messageOf(err)}`);
    }
  }

  /**
   * With `resultExtended`: finds whether the table has the extended columns, and a worker
   * (`forWrites`) adds the missing ones (ALTER TABLE ADD; a column another worker added meanwhile
   * is fine). A reader never alters the table: it reads the columns once a worker has added them.
   */
  /** A reader's look for the extended columns: a failure leaves them unread until the next look, never fails a read. */
  private async checkExtendedColumnsQuietly(client: Client): Promise<void> {
    try {
      await this.checkExtendedColumns(client, false);
    } catch (err) {
      this.logger.warn(`Could not look for the resultExtended columns of ${this.target}: ${messageOf(err)}; reading without them`);
    }
  }

  private async checkExtendedColumns(client: Client, forWrites: boolean): Promise<void> {
    this.extendedCheckedAt = Date.now();
    // system_schema directly: the driver's table metadata lags another client's ALTER by a second or more
    const missing = async () => {
      const rs = await client.execute(
        'SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?',
        [this.config.keyspace.toLowerCase(), this.config.table.toLowerCase()],
        { prepare: true, consistency: this.readConsistency },
      );
      const rows = rowsOf(rs, 'schema read');
      if (rows.length === 0) return null; // no table yet
      const have = new Set(rows.map((r) => r.column_name as string));
      return EXTENDED_COLUMNS.filter(([c]) => !have.has(c));
    };
    let absent = await missing();
    if (absent && absent.length > 0 && forWrites) {
      try {
        await client.execute(`ALTER TABLE ${this.target} ADD (${absent.map(([c, t]) => `${c} ${t}`).join(', ')})`);
        this.logger.log(`Added the resultExtended columns ${absent.map(([c]) => c).join(', ')} to ${this.target}`);
      } catch (err) {
        if ((err as { code?: number }).code === UNAUTHORIZED) {
          throw new CeleryConnectionError(
            `resultExtended is on but result table ${this.target} lacks its columns (${absent.map(([c, t]) => `${c} ${t}`).join(', ')}) ` +
              `and this role may not add them (needs ALTER permission on ${this.target}): ${messageOf(err)}`,
          );
        }
        // another worker added them meanwhile
        if (!/already exist/i.test(messageOf(err))) throw new CeleryConnectionError(`Cannot add the resultExtended columns to ${this.target}: ${messageOf(err)}`);
      }
      absent = await missing();
    }
    this.extendedColumns = absent !== null && absent.length === 0;
  }

  private requireClient(): Client {
    if (!this.client) throw new CeleryConnectionError(`${this.describe()} is not connected`);
    return this.client;
  }
}

/**
 * Celery's INSERT (wire spec §4.3), with the extended columns when given, and `USING TTL ?` when
 * the row expires: its `expiresSeconds`, else `cassandra.entryTtl`. Without either the statement
 * has no TTL clause, so a table's own `default_time_to_live` still applies.
 */
function insertCql(target: string, extended: boolean, ttl: boolean): string {
  const columns = ['task_id', 'status', 'result', 'date_done', 'traceback', 'children', ...(extended ? EXTENDED_COLUMNS.map(([c]) => c) : [])];
  return `INSERT INTO ${target} (${columns.join(', ')}) VALUES (${columns.map(() => '?').join(', ')})${ttl ? ' USING TTL ?' : ''}`;
}

function extendedParams(e: ExtendedRow): unknown[] {
  return [e.name, e.args, e.kwargs, e.worker, e.retries, e.queue, e.parentId, e.groupId];
}

function consistencyOf(name: string): number {
  const value = (types.consistencies as unknown as Record<string, number>)[driverConsistencyKey(name)];
  if (value === undefined) throw new CeleryConnectionError(`unknown consistency level ${name}`);
  return value;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * The rows of a SELECT's reply. Seen in the fault suite after a 20-s Cassandra stall, sometimes
 * in bursts: a status read resolved with no `rows` at all, and reading it once crashed the worker.
 * Such a reply is an error to retry, never an empty result (which would read as "not stored");
 * for the same reason every read checks that the rows it got are of the tasks it asked for.
 */
function rowsOf(rs: types.ResultSet, what: string): types.Row[] {
  if (!Array.isArray(rs.rows)) {
    const info = rs.info as { queriedHost?: unknown; triedHosts?: unknown } | undefined;
    const shape = `rowLength ${String(rs.rowLength)}, columns ${rs.columns ? rs.columns.length : 'none'}, host ${String(info?.queriedHost)}, tried ${JSON.stringify(info?.triedHosts ?? null)}, keys ${Object.keys(rs).join('/')}`;
    throw new CeleryConnectionError(`Cassandra answered a ${what} without rows (${shape}); retrying`);
  }
  return rs.rows;
}
