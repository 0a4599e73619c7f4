/**
 * The stream-id guard's own cost, without a database: a cassandra-driver client against the
 * in-process fake CQL server (test/support/fake-cql-server.ts), which answers at once, with the
 * guard and without, in alternating rounds. Reports requests/s and client CPU µs per request.
 *
 *   npm run build:bench && node dist-bench/bench/stream-guard-micro.js [N] [rounds] [concurrency]
 */
import { performance } from 'node:perf_hooks';
import { Client } from 'cassandra-driver';
import { normalizeCeleryOptions } from '../lib/config/normalize-options';
import type { ResolvedCassandraConfig } from '../lib/config/resolved-config';
import { cassandraClientOptions } from '../lib/results/cassandra-client-options';
import { guardedClient } from '../lib/results/cassandra-stream-guard';
import { FakeCqlServer } from '../test/support/fake-cql-server';
import { alternatingRounds, roundsArgs, mapLimit, percentile, round } from './common';

type Mode = 'guarded' | 'plain';

async function oneRound(port: number, mode: Mode, n: number, concurrency: number): Promise<{ rate: number; cpuUs: number }> {
  const config = normalizeCeleryOptions({
    resultBackend: 'cassandra://',
    cassandra: { contactPoints: ['127.0.0.1'], port, localDataCenter: 'datacenter1', keyspace: 'ks', table: 't' },
  }).cassandra as ResolvedCassandraConfig;
  const options = cassandraClientOptions(config, 'datacenter1') as ConstructorParameters<typeof Client>[0];
  const client = mode === 'guarded' ? guardedClient(options, console) : new Client(options);
  await client.connect();
  try {
    const keys = Array.from({ length: n }, (_v, i) => `k${i}`);
    const cpu = process.cpuUsage();
    const started = performance.now();
    await mapLimit(keys, concurrency, (key) => client.execute('SELECT k, v FROM ks.t WHERE k = ?', [key], { prepare: true }));
    const seconds = (performance.now() - started) / 1000;
    const used = process.cpuUsage(cpu);
    return { rate: n / seconds, cpuUs: (used.user + used.system) / n };
  } finally {
    await client.shutdown();
  }
}

async function main(): Promise<void> {
  const { n, rounds, concurrency } = roundsArgs({ n: 50000, rounds: 5, concurrency: 64 });
  const server = await FakeCqlServer.start();
  server.onRequest = (request) => request.answer([[request.values[0], 'v']]);
  let results: Record<Mode, { rate: number; cpuUs: number }[]>;
  try {
    await oneRound(server.port, 'plain', 5000, concurrency); // warm-up
    results = await alternatingRounds(['guarded', 'plain'] as const, rounds, async (mode, r) => {
      const result = await oneRound(server.port, mode, n, concurrency);
      console.log(`round ${r} ${mode}: ${round(result.rate)} requests/s, ${round(result.cpuUs, 2)} µs CPU per request (client and fake server)`);
      return result;
    });
  } finally {
    await server.close();
  }
  const summary = (mode: Mode) => ({ rate: round(percentile(results[mode].map((x) => x.rate), 50)), cpuUs: round(percentile(results[mode].map((x) => x.cpuUs), 50), 2) });
  console.log(JSON.stringify({ n, rounds, concurrency, guarded: summary('guarded'), plain: summary('plain') }));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
