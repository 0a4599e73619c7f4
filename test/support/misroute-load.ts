import { Client, types } from 'cassandra-driver';

/**
 * Keyed INSERT/SELECT pairs beside a slow filler load, against a node that sheds requests
 * (native_transport_max_threads: 1, native_transport_timeout: 200ms), counting every reply that
 * cannot be the request's own: a read answered with another key's row or with no rows at all (a
 * Void), and a write that resolved as done while its row is not in Cassandra afterwards.
 */
export interface MisrouteReport {
  pairs: number;
  writesOk: number;
  writesFailed: number;
  readsOk: number;
  readsFailed: number;
  /** A read of key k resolved with the row of another key. */
  wrongRow: number;
  /** A read resolved without rows (the Void reply of a write). */
  readWithoutRows: number;
  /** A write resolved with rows (a read's reply). */
  writeWithRows: number;
  /** A write that resolved as done whose row Cassandra does not have. */
  lostWrites: number;
  /** OVERLOADED errors the requests got (each one a shed request, answered on its own stream). */
  overloaded: number;
  /** Requests that got no reply before their read timeout. */
  timedOut: number;
  /** Filler requests shed (OVERLOADED or no reply in time), and how many fillers ran at most. */
  fillerShed: number;
  fillers: number;
  /** Requests refused at once because the driver had no connection (it closes one after 64 timeouts). */
  noConnection: number;
  /** Other errors by message, first 5. */
  otherErrors: string[];
}

export function misroutes(report: MisrouteReport): number {
  return report.wrongRow + report.readWithoutRows + report.writeWithRows + report.lostWrites;
}

export interface LoadOptions extends FillerOptions {
  durationMs: number;
  pairConcurrency: number;
  /** Prefix of this run's keys (runs share the table). */
  prefix: string;
}

export async function createLoadTables(client: Client, keyspace: string, fillerRows: number): Promise<void> {
  await client.execute(`CREATE TABLE IF NOT EXISTS ${keyspace}.kv (k text PRIMARY KEY, v text)`);
  await client.execute(`CREATE TABLE IF NOT EXISTS ${keyspace}.filler (p int, c int, v text, PRIMARY KEY (p, c))`);
  const insert = `INSERT INTO ${keyspace}.filler (p, c, v) VALUES (?, ?, ?)`;
  const value = 'x'.repeat(200);
  // a node with one request thread on a busy machine times writes out now and then: each row is retried
  const write = async (i: number): Promise<void> => {
    for (let attempt = 1; ; attempt++) {
      try {
        await client.execute(insert, [0, i, value], { prepare: true, readTimeout: 3000 });
        return;
      } catch (err) {
        if (attempt === 5) throw err;
      }
    }
  };
  // few at a time: the node must not shed these (on 5.0.8 a shed request's reply is lost, see above)
  for (let start = 0; start < fillerRows; start += 4) {
    await Promise.all(Array.from({ length: Math.min(4, fillerRows - start) }, (_v, j) => write(start + j)));
  }
}

const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Counts the error; waits a little when the driver has no connection (it reconnects in the background). */
async function classify(report: MisrouteReport, err: unknown): Promise<void> {
  const e = err as { code?: number; message?: string; name?: string; innerErrors?: Record<string, unknown> };
  const inner = e.innerErrors ? Object.values(e.innerErrors)[0] as { code?: number; name?: string; message?: string } : undefined;
  const code = e.code ?? inner?.code;
  const name = inner?.name ?? e.name;
  if (code === types.responseErrorCodes.overloaded) report.overloaded++;
  else if (name === 'OperationTimedOutError') report.timedOut++;
  else if (report.otherErrors.length < 5) report.otherErrors.push(`${name}: ${inner?.message ?? e.message}`);
  if (e.name === 'NoHostAvailableError') {
    report.noConnection++;
    await pause(200);
  }
}

export interface FillerOptions {
  keyspace: string;
  /** Fillers at the start; more join (growBy every growEveryMs, default 8 every 300 ms; up to maxFillers) until shedTarget requests were shed. */
  fillerConcurrency: number;
  maxFillers: number;
  growBy?: number;
  growEveryMs?: number;
  shedTarget: number;
  readTimeoutMs: number;
  /** Shed requests the filler cannot see itself (other requests' errors, frames the guard dropped). */
  shedElsewhere?: () => number;
}

/** A filler load running until `stop()`. */
export interface FillerLoad {
  /** Filler requests shed so far (OVERLOADED or no reply in time). */
  readonly shed: number;
  /** Filler loops started so far. */
  readonly fillers: number;
  stop(): Promise<void>;
}

/**
 * Starts the filler load on `client` (a table made by createLoadTables): `count(*)` reads of the
 * whole filler partition, slow on the node, one small row back, so the load is the node's, not
 * this process's. How long a request waits for a shedding node's one thread depends on the
 * machine and on how warm the node is: fillers are added until the node sheds something, so every
 * run sees shedding.
 */
export function startFillerLoad(client: Client, options: FillerOptions): FillerLoad {
  const fillerQuery = `SELECT count(*) FROM ${options.keyspace}.filler WHERE p = 0`;
  const state = { shed: 0, fillers: 0, stopped: false };
  const loops: Promise<void>[] = [];
  const fillerLoop = async (): Promise<void> => {
    while (!state.stopped) {
      await client.execute(fillerQuery, [], { prepare: true, readTimeout: options.readTimeoutMs }).catch((err: unknown) => {
        const e = err as { name?: string; code?: number };
        if (e.name === 'OperationTimedOutError' || e.code === types.responseErrorCodes.overloaded) state.shed++;
        if (e.name === 'NoHostAvailableError') return pause(200);
        return undefined;
      });
    }
  };
  const shedSeen = (): boolean => state.shed + (options.shedElsewhere?.() ?? 0) >= options.shedTarget;
  const grow = (async () => {
    while (!state.stopped) {
      if (state.fillers < options.fillerConcurrency || (!shedSeen() && state.fillers < options.maxFillers)) {
        const add = state.fillers < options.fillerConcurrency ? options.fillerConcurrency : (options.growBy ?? 8);
        for (let i = 0; i < add; i++) loops.push(fillerLoop());
        state.fillers += add;
      }
      await pause(options.growEveryMs ?? 300);
    }
  })();
  return {
    get shed() {
      return state.shed;
    },
    get fillers() {
      return state.fillers;
    },
    stop: async () => {
      state.stopped = true;
      await grow;
      await Promise.all(loops);
    },
  };
}

/**
 * Runs the pairs and the filler on `client` (one connection: a reply misrouted there can reach a
 * pair), then checks with `verifier`, a client that saw no load, that every write it was told was
 * done is stored.
 */
export async function runKeyedPairs(client: Client, verifier: Client, options: LoadOptions): Promise<MisrouteReport> {
  const report: MisrouteReport = { pairs: 0, writesOk: 0, writesFailed: 0, readsOk: 0, readsFailed: 0, wrongRow: 0, readWithoutRows: 0, writeWithRows: 0, lostWrites: 0, overloaded: 0, timedOut: 0, noConnection: 0, fillerShed: 0, fillers: 0, otherErrors: [] };
  const { keyspace, readTimeoutMs } = options;
  const insert = `INSERT INTO ${keyspace}.kv (k, v) VALUES (?, ?)`;
  const select = `SELECT k, v FROM ${keyspace}.kv WHERE k = ?`;
  const stored: string[] = [];
  const deadline = Date.now() + options.durationMs;
  let next = 0;

  const pairLoop = async (): Promise<void> => {
    while (Date.now() < deadline) {
      const key = `${options.prefix}-${next++}`;
      report.pairs++;
      try {
        const rs = await client.execute(insert, [key, `value of ${key}`], { prepare: true, readTimeout: readTimeoutMs });
        report.writesOk++;
        stored.push(key);
        if (rs.rows !== undefined) report.writeWithRows++;
      } catch (err) {
        report.writesFailed++;
        await classify(report, err);
        continue;
      }
      try {
        const rs = await client.execute(select, [key], { prepare: true, readTimeout: readTimeoutMs });
        report.readsOk++;
        if (!Array.isArray(rs.rows)) report.readWithoutRows++;
        else if (rs.rows.length > 0 && rs.rows[0].k !== key) report.wrongRow++;
      } catch (err) {
        report.readsFailed++;
        await classify(report, err);
      }
    }
  };
  const pairs = Array.from({ length: options.pairConcurrency }, pairLoop);
  const filler = startFillerLoad(client, { ...options, shedElsewhere: () => report.overloaded + report.timedOut + (options.shedElsewhere?.() ?? 0) });
  await pause(Math.max(0, deadline - Date.now()));
  await Promise.all(pairs);
  await filler.stop();
  report.fillerShed = filler.shed;
  report.fillers = filler.fillers;

  // the load is over: every write that resolved as done must have its row
  for (let i = 0; i < stored.length; i += 100) {
    const keys = stored.slice(i, i + 100);
    const rs = await verifier.execute(`SELECT k FROM ${keyspace}.kv WHERE k IN ?`, [keys], { prepare: true, readTimeout: 20000 });
    const found = new Set(rs.rows.map((r) => r.k as string));
    report.lostWrites += keys.filter((k) => !found.has(k)).length;
  }
  return report;
}
