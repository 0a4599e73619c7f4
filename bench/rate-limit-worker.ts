/**
 * One worker process of the shared rate limit measurement (bench/rate-limit-accuracy.ts): the
 * library's RateLimiter on the library's Cassandra connection (CassandraResultStore, with its
 * stream guard and driver settings) against the real Cassandra, with a steady backlog of
 * `backlog` tasks of one name waiting, as a worker whose prefetch is full of them. Reports every
 * admission instant and each compare-and-set (round trip, applied or not) over IPC.
 *
 * Protocol: → `{ type: 'ready' }` once connected; ← `{ type: 'go', startAt, untilAt }`;
 * → `{ type: 'result', ... }` after `untilAt`, then exits.
 */
import { normalizeCeleryOptions } from '../lib/config/normalize-options';
import { CassandraResultStore } from '../lib/results/cassandra.result-store';
import { CassandraRateStore } from '../lib/worker/cassandra-rate-store';
import { RateLimiter, SharedRateStore } from '../lib/worker/rate-limit';
import { CASSANDRA_DC, CASSANDRA_HOST, CASSANDRA_PORT, CREDENTIALS, KEYSPACE } from './common';

export interface RateWorkerArgs {
  table: string;
  taskName: string;
  rate: string;
  backlog: number;
  reserveAheadMs: number;
  maxLateMs: number;
}

export interface RateWorkerResult {
  type: 'result';
  pid: number;
  admitted: number[];
  /** From each acquire() to its admission, ms. */
  waitMs: number[];
  /** Round trip of each compare-and-set, ms. */
  casMs: number[];
  casApplied: number;
  casConflicts: number;
  casErrors: number;
}

/** Counts and times the claims a limiter makes. */
class MeasuredStore implements SharedRateStore {
  readonly casMs: number[] = [];
  applied = 0;
  conflicts = 0;
  errors = 0;
  constructor(private readonly inner: SharedRateStore) {}
  prepare(): Promise<void> {
    return this.inner.prepare();
  }
  describe(): string {
    return this.inner.describe();
  }
  async compareAndSet(name: string, expected: number | null, next: number): Promise<{ applied: boolean; current: number | null }> {
    const t0 = performance.now();
    try {
      const r = await this.inner.compareAndSet(name, expected, next);
      if (r.applied) this.applied++;
      else this.conflicts++;
      return r;
    } catch (err) {
      this.errors++;
      throw err;
    } finally {
      this.casMs.push(performance.now() - t0);
    }
  }
}

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2]) as RateWorkerArgs;
  const config = normalizeCeleryOptions({
    brokerUrl: 'amqp://unused',
    resultBackend: 'cassandra',
    cassandra: { contactPoints: [CASSANDRA_HOST], port: CASSANDRA_PORT, localDataCenter: CASSANDRA_DC, keyspace: KEYSPACE, credentials: CREDENTIALS },
    globalRateLimits: { table: args.table, reserveAheadMs: args.reserveAheadMs, maxLateMs: args.maxLateMs },
  });
  const cassandra = config.cassandra!;
  const results = new CassandraResultStore(cassandra);
  await results.connect({ forWrites: false });
  const store = new MeasuredStore(
    new CassandraRateStore(() => results.session(), {
      keyspace: cassandra.keyspace,
      table: config.rateLimits.table,
      writeConsistency: cassandra.writeConsistency,
      serialConsistency: config.rateLimits.serialConsistency,
    }),
  );
  const quiet = { log: () => undefined, warn: (m: string) => process.stderr.write(`${m}\n`) };
  const limiter = new RateLimiter({ shared: store, reserveAheadMs: config.rateLimits.reserveAheadMs, maxLateMs: config.rateLimits.maxLateMs, logger: quiet });
  limiter.configure(args.taskName, { global: args.rate });
  await limiter.start();
  process.send!({ type: 'ready' });
  const go = await new Promise<{ startAt: number; untilAt: number }>((resolve) => process.once('message', resolve));
  await new Promise((r) => setTimeout(r, Math.max(0, go.startAt - Date.now())));

  const admitted: number[] = [];
  const waitMs: number[] = [];
  let stopping = false;
  const waitOne = async (): Promise<void> => {
    while (!stopping) {
      const asked = performance.now();
      if (await limiter.acquire(args.taskName)) {
        admitted.push(Date.now());
        waitMs.push(performance.now() - asked);
      }
    }
  };
  const loops = Array.from({ length: args.backlog }, waitOne);
  await new Promise((r) => setTimeout(r, Math.max(0, go.untilAt - Date.now())));
  stopping = true;
  limiter.close();
  await Promise.all(loops);
  const result: RateWorkerResult = {
    type: 'result',
    pid: process.pid,
    admitted,
    waitMs,
    casMs: store.casMs,
    casApplied: store.applied,
    casConflicts: store.conflicts,
    casErrors: store.errors,
  };
  process.send!(result);
  await results.close();
  process.disconnect();
}

main().catch((err: unknown) => {
  process.stderr.write(`rate-limit worker failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
