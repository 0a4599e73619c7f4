import { Client } from 'cassandra-driver';
import { normalizeCeleryOptions } from '../../lib/config/normalize-options';
import type { ResolvedCassandraConfig } from '../../lib/config/resolved-config';
import { cassandraClientOptions } from '../../lib/results/cassandra-client-options';
import { CassandraResultStore } from '../../lib/results/cassandra.result-store';
import { DroppedFrame, guardStreamIds } from '../../lib/results/cassandra-stream-guard';
import { createLoadTables, misroutes, MisrouteReport, runKeyedPairs } from '../support/misroute-load';
import { CASSANDRA_COMPAT_VERSIONS, PrivateCassandra } from '../support/private-cassandra';
import { SUPERUSER } from '../support/real-services';

/**
 * Misrouted replies on real Cassandra nodes (issue 11 item 4). Each version in
 * CASSANDRA_COMPAT_VERSIONS gets its own node (scripts/services.sh node-up: its own directory and
 * ports, not the shared node) with one request thread and a 200 ms native_transport_timeout, so a
 * slow filler load makes it shed requests. Keyed INSERT/SELECT pairs then check every reply.
 * 5.0.8 sends the OVERLOADED error of a shed request on stream 0 (CASSANDRA-21508): the plain
 * driver hands replies to the wrong requests; the library's guard drops those frames, and no
 * request gets another's reply. 5.0.9 answers on the request's own stream. The result store itself
 * is also run on each version (the compatibility run of the versions users have).
 * MISROUTE_VERSIONS=5.0.8 runs one version only; MISROUTE_LOAD_MS sets each load's length (8000).
 * No services lock: it never touches the shared node or RabbitMQ.
 */

const KEYSPACE = 'misroute';
const SHEDDING_YAML = 'native_transport_max_threads: 1\nnative_transport_timeout: 200ms\n';
const LOAD = { durationMs: Number(process.env.MISROUTE_LOAD_MS ?? 8000), pairConcurrency: 16, fillerConcurrency: 16, maxFillers: 96, shedTarget: 40, readTimeoutMs: 3000 };

function configFor(port: number, table: string): ResolvedCassandraConfig {
  return normalizeCeleryOptions({
    resultBackend: 'cassandra://',
    cassandra: { contactPoints: ['127.0.0.1'], port, localDataCenter: 'datacenter1', keyspace: KEYSPACE, table, credentials: { ...SUPERUSER } },
  }).cassandra as ResolvedCassandraConfig;
}

function optionsFor(port: number): ConstructorParameters<typeof Client>[0] {
  return cassandraClientOptions(configFor(port, 'kv'), 'datacenter1') as ConstructorParameters<typeof Client>[0];
}

function summary(version: string, which: string, report: MisrouteReport, dropped: DroppedFrame[]): string {
  const streams = [...new Set(dropped.map((d) => d.streamId))];
  return `Cassandra ${version}, ${which}: ${JSON.stringify(report)}, frames dropped by the guard ${dropped.length} (streams ${JSON.stringify(streams)})`;
}

const VERSIONS = process.env.MISROUTE_VERSIONS?.split(',') ?? CASSANDRA_COMPAT_VERSIONS;

describe.each(VERSIONS.map((version, i) => [version, 9142 + i, 7100 + i] as const))(
  'Cassandra %s shedding requests under load (one request thread, native_transport_timeout 200ms)',
  (version, port, storagePort) => {
    let node: PrivateCassandra | null = null;
    const clients: Client[] = [];
    /** Reads back the rows after each load, on a connection that carried none of it. */
    let verifier: Client;

    async function connected(client: Client): Promise<Client> {
      clients.push(client);
      await client.connect();
      return client;
    }

    beforeAll(async () => {
      node = await PrivateCassandra.start({ version, port, storagePort, keyspace: KEYSPACE, extraYaml: SHEDDING_YAML });
      verifier = await connected(new Client(optionsFor(port)));
      await createLoadTables(verifier, KEYSPACE, 3000);
    }, 120000);

    afterAll(async () => {
      await Promise.all(clients.map((c) => c.shutdown().catch(() => undefined)));
      await node?.stop();
    }, 60000);

    it('the result store creates its table, stores and reads results (with the guard on)', async () => {
      const store = new CassandraResultStore(configFor(port, 'results'));
      try {
        await store.connect({ forWrites: true });
        const taskId = `compat-${version}-${Date.now()}`;
        expect(await store.storeUnlessSucceeded({ taskId, status: 'SUCCESS', result: { version }, children: [] })).toBeNull();
        expect(await store.getTaskMeta(taskId)).toMatchObject({ taskId, status: 'SUCCESS', result: { version } });
        expect((await store.rows()).map((r) => r.taskId)).toContain(taskId);
      } finally {
        await store.close();
      }
    });

    it('the plain driver', async () => {
      // On 5.0.8 a load can pass without a misroute (seen once in ~10 runs: the driver recycled the connection first),
      // so up to three loads, each on a fresh client, until one shows it; 5.0.9 gets one load.
      let report!: MisrouteReport;
      for (let load = 1; load <= (version === '5.0.8' ? 3 : 1); load++) {
        const plain = await connected(new Client(optionsFor(port)));
        report = await runKeyedPairs(plain, verifier, { ...LOAD, keyspace: KEYSPACE, prefix: `plain-${load}-${Date.now()}` });
        console.log(`${summary(version, 'plain driver', report, [])} (load ${load})`);
        if (misroutes(report) > 0) break;
      }
      expect(report.overloaded + report.timedOut + report.fillerShed).toBeGreaterThan(0);
      if (version === '5.0.8') expect(misroutes(report)).toBeGreaterThan(0);
      else expect(misroutes(report)).toBe(0);
    }, 150000);

    it("with the library's guard, no request resolves with another request's reply", async () => {
      const dropped: DroppedFrame[] = [];
      // as for the plain driver: on 5.0.8, up to three loads until the server's stream-0 frames show (each load must be clean)
      for (let load = 1; load <= (version === '5.0.8' ? 3 : 1); load++) {
        const guarded = await connected(guardStreamIds(new Client(optionsFor(port)), (frame) => dropped.push(frame), () => undefined));
        const report = await runKeyedPairs(guarded, verifier, { ...LOAD, keyspace: KEYSPACE, prefix: `guarded-${load}-${Date.now()}`, shedElsewhere: () => dropped.length });
        console.log(`${summary(version, 'guarded driver', report, dropped)} (load ${load})`);
        expect(report.overloaded + report.timedOut + report.fillerShed).toBeGreaterThan(0); // the node did shed requests
        expect(misroutes(report)).toBe(0);
        expect(report.writesOk).toBeGreaterThan(0);
        if (dropped.some((d) => d.streamId === 0)) break;
      }
      if (version === '5.0.8') expect(dropped.filter((d) => d.streamId === 0).length).toBeGreaterThan(0); // the server bug, seen and dropped
      else expect(dropped).toEqual([]);
    }, 150000);
  },
);
