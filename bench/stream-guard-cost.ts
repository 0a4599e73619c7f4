/**
 * What the stream-id guard (lib/results/cassandra-stream-guard.ts) costs: the Cassandra result
 * store's own work (status read + INSERT per result, then the result read) against the shared node,
 * with the guard (as shipped) and with a plain driver client, in alternating rounds.
 *
 *   npm run build:bench && flock /tmp/nestjs-celery-services.lock node dist-bench/bench/stream-guard-cost.js [N] [rounds] [concurrency]
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Client } from 'cassandra-driver';
import { normalizeCeleryOptions } from '../lib/config/normalize-options';
import type { ResolvedCassandraConfig } from '../lib/config/resolved-config';
import { CassandraResultStore } from '../lib/results/cassandra.result-store';
import { alternatingRounds, roundsArgs, cassandraClient, CASSANDRA_HOST, CASSANDRA_PORT, CREDENTIALS, KEYSPACE, mapLimit, percentile, round } from './common';

type Mode = 'guarded' | 'plain';

function storeFor(table: string, mode: Mode): CassandraResultStore {
  const config = normalizeCeleryOptions({
    resultBackend: 'cassandra://',
    cassandra: { contactPoints: [CASSANDRA_HOST], port: CASSANDRA_PORT, localDataCenter: 'datacenter1', keyspace: KEYSPACE, table, credentials: { ...CREDENTIALS } },
  }).cassandra as ResolvedCassandraConfig;
  const store = new CassandraResultStore(config);
  if (mode === 'plain') {
    // the store exactly as before the guard: a plain cassandra-driver Client
    (store as unknown as { open: (options: object) => Promise<Client> }).open = async (options: object) => {
      const client = new Client(options as ConstructorParameters<typeof Client>[0]);
      await client.connect();
      return client;
    };
  }
  return store;
}

async function round1(table: string, mode: Mode, n: number, concurrency: number): Promise<number> {
  const store = storeFor(table, mode);
  await store.connect({ forWrites: true });
  try {
    const ids = Array.from({ length: n }, (_v, i) => `${mode}-${randomBytes(6).toString('hex')}-${i}`);
    const started = performance.now();
    await mapLimit(ids, concurrency, async (taskId) => {
      await store.storeUnlessSucceeded({ taskId, status: 'SUCCESS', result: 'storage yay my DB is powerful results Astra', children: [] });
      const meta = await store.getTaskMeta(taskId);
      if (meta.status !== 'SUCCESS') throw new Error(`${taskId} read back as ${meta.status}`);
    });
    return n / ((performance.now() - started) / 1000);
  } finally {
    await store.close();
  }
}

async function main(): Promise<void> {
  const { n, rounds, concurrency } = roundsArgs({ n: 10000, rounds: 3, concurrency: 64 });
  const table = `guard_cost_${randomBytes(4).toString('hex')}`;
  const admin = cassandraClient();
  await admin.connect();
  let rates: Record<Mode, number[]>;
  try {
    await round1(table, 'plain', Math.min(n, 2000), concurrency); // warm-up: table, prepared statements, JIT
    rates = await alternatingRounds(['guarded', 'plain'] as const, rounds, async (mode, r) => {
      const rate = await round1(table, mode, n, concurrency);
      console.log(`round ${r} ${mode}: ${round(rate)} results/s (status read + INSERT + result read each)`);
      return rate;
    });
  } finally {
    await admin.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${table}`).catch(() => undefined);
    await admin.shutdown();
  }
  const g = percentile(rates.guarded, 50);
  const p = percentile(rates.plain, 50);
  console.log(JSON.stringify({ n, rounds, concurrency, guardedMedian: round(g), plainMedian: round(p), guardedVsPlainPct: round(((g - p) / p) * 100), guarded: rates.guarded.map((x) => round(x)), plain: rates.plain.map((x) => round(x)) }));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
