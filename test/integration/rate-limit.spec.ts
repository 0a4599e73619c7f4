import { Logger } from '@nestjs/common';
import type { Client } from 'cassandra-driver';
import { maxInWindow, windowBound } from '../../bench/rate-limit-accuracy';
import { normalizeCeleryOptions } from '../../lib/config/normalize-options';
import type { CeleryModuleOptions } from '../../lib';
import { CassandraResultStore } from '../../lib/results/cassandra.result-store';
import { CassandraRateStore } from '../../lib/worker/cassandra-rate-store';
import { createRateLimiter, RateLimiter } from '../../lib/worker/rate-limit';
import { TcpProxy } from '../support/tcp-proxy';
import { CASSANDRA_HOST, CASSANDRA_PORT, KEYSPACE, rawCassandra, realOptions, uniqueName } from '../support/real-services';

/**
 * The shared rate limit on the real Cassandra: its table, its lightweight transactions, two
 * workers (two connections) sharing one limit, and an outage during which tasks wait.
 */
const rateTable = uniqueName('it_rate_limits');
const warnings: string[] = [];
const logger = { log: () => undefined, warn: (m: string) => void warnings.push(m) };
const opened: CassandraResultStore[] = [];
let su: Client;

function config(extra: Partial<CeleryModuleOptions> = {}) {
  return normalizeCeleryOptions({ ...realOptions('unused', 'unused_results'), globalRateLimits: { table: rateTable }, ...extra });
}

async function worker(extra: Partial<CeleryModuleOptions> = {}): Promise<{ store: CassandraResultStore; limiter: RateLimiter }> {
  const resolved = config(extra);
  const store = new CassandraResultStore(resolved.cassandra!);
  opened.push(store);
  await store.connect({ forWrites: false });
  return { store, limiter: createRateLimiter(resolved, store, logger) };
}

beforeAll(async () => {
  su = await rawCassandra();
  jest.spyOn(Logger.prototype, 'log').mockImplementation(() => undefined);
});

afterAll(async () => {
  await Promise.all(opened.map((s) => s.close()));
  await su.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${rateTable}`);
  await su.shutdown();
});

beforeEach(() => (warnings.length = 0));

describe('shared rate limit on the real Cassandra', () => {
  it('creates its table in the configured keyspace at start, and claims by lightweight transaction (a lost race returns the value that won)', async () => {
    const { store, limiter } = await worker();
    limiter.configure('tasks.limited', { global: '5/s' });
    await limiter.start();
    const columns = await su.execute('SELECT column_name, type, kind FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?', [KEYSPACE, rateTable]);
    expect(columns.rows.map((r) => [r.column_name, r.type, r.kind]).sort()).toEqual([
      ['next_start', 'bigint', 'regular'],
      ['task_name', 'text', 'partition_key'],
    ]);
    const cas = new CassandraRateStore(() => store.session(), { keyspace: KEYSPACE, table: rateTable, writeConsistency: 'LOCAL_QUORUM', serialConsistency: 'SERIAL' });
    const now = Date.now() * 1000;
    const name = uniqueName('cas');
    await expect(cas.compareAndSet(name, null, now + 100)).resolves.toEqual({ applied: true, current: null });
    await expect(cas.compareAndSet(name, null, now + 200)).resolves.toEqual({ applied: false, current: now + 100 });
    await expect(cas.compareAndSet(name, now + 5, now + 200)).resolves.toEqual({ applied: false, current: now + 100 });
    await expect(cas.compareAndSet(name, now + 100, now + 300)).resolves.toEqual({ applied: true, current: now + 100 });
    const row = await su.execute(`SELECT next_start, TTL(next_start) AS ttl FROM ${KEYSPACE}.${rateTable} WHERE task_name = ?`, [name]);
    expect(Number(row.rows[0].next_start)).toBe(now + 300);
    expect(row.rows[0].ttl).toBeGreaterThan(86000);
    // a second start finds the table and does not create it again
    await limiter.start();
  });

  it("two workers on two connections share a '20/s' limit: 60 tasks take 3 s, never more than the bound in any second", async () => {
    const name = uniqueName('tasks.shared');
    const [w1, w2] = [await worker(), await worker()];
    for (const w of [w1, w2]) w.limiter.configure(name, { global: '20/s' });
    const admitted: { at: number; by: string }[] = [];
    const t0 = Date.now();
    const all: Promise<boolean>[] = [];
    for (let i = 0; i < 30; i++) {
      for (const [by, w] of [['w1', w1], ['w2', w2]] as const) {
        all.push(w.limiter.acquire(name).then((ok) => (admitted.push({ at: Date.now(), by }), ok)));
      }
    }
    expect(await Promise.all(all)).toEqual(Array(60).fill(true));
    const times = admitted.map((a) => a.at);
    expect(maxInWindow(times, 1000)).toBeLessThanOrEqual(windowBound(20, 1000, 25));
    expect(Math.max(...times) - t0).toBeGreaterThanOrEqual(2900 - 25);
    expect(admitted.filter((a) => a.by === 'w1').length).toBeGreaterThan(0);
    expect(admitted.filter((a) => a.by === 'w2').length).toBeGreaterThan(0);
  });

  it('while Cassandra is unreachable tasks wait, neither admitted nor refused, with a warning; an aborted wait still ends at once; all are admitted once it is back', async () => {
    const proxy = await TcpProxy.start(CASSANDRA_HOST, CASSANDRA_PORT);
    try {
      const base = realOptions('unused', 'unused_results');
      const { limiter } = await worker({ cassandra: { ...base.cassandra!, contactPoints: ['127.0.0.1'], port: proxy.port } });
      const name = uniqueName('tasks.outage');
      limiter.configure(name, { global: '50/s' });
      await limiter.start();
      proxy.cut();
      const settled: boolean[] = [];
      const waiting = Array.from({ length: 5 }, () => limiter.acquire(name).then((ok) => (settled.push(ok), ok)));
      const abort = new AbortController();
      const aborted = limiter.acquire(name, abort.signal);
      await new Promise((r) => setTimeout(r, 3000));
      expect(settled).toEqual([]);
      expect(warnings.join('\n')).toMatch(new RegExp(`Shared rate limit of ${name.replace('.', '\\.')}: Cassandra table ${KEYSPACE}\\.${rateTable} failed .*its 6 waiting task\\(s\\) stay unacknowledged`));
      const abortedAt = Date.now();
      abort.abort();
      await expect(aborted).resolves.toBe(false);
      expect(Date.now() - abortedAt).toBeLessThan(50);
      proxy.restore();
      await expect(Promise.all(waiting)).resolves.toEqual(Array(5).fill(true));
    } finally {
      await proxy.close();
    }
  }, 60000);

  it('a role that may not create the table fails the start with an error saying which permission is missing', async () => {
    const role = uniqueName('it_rate_ro');
    await su.execute(`CREATE ROLE ${role} WITH PASSWORD = 'ro-pw' AND LOGIN = true`);
    try {
      await su.execute(`GRANT SELECT ON KEYSPACE ${KEYSPACE} TO ${role}`);
      const base = realOptions('unused', 'unused_results');
      const { limiter } = await worker({
        cassandra: { ...base.cassandra!, credentials: { username: role, password: 'ro-pw' } },
        globalRateLimits: { table: uniqueName('it_rate_denied') },
      });
      limiter.configure('tasks.limited', { global: '1/s' });
      await expect(limiter.start()).rejects.toThrow(/Rate limit table celery_test\.it_rate_denied_\w+ does not exist and this role may not create it \(needs CREATE permission on keyspace celery_test\)/);
    } finally {
      await su.execute(`DROP ROLE IF EXISTS ${role}`);
    }
  });
});
