import type { Client } from 'cassandra-driver';
import { CassandraRevokedStore, PersistentRevokedSet } from '../../lib/worker/revoked-persistence';
import { LimitedSet, REVOKE_EXPIRES_MS } from '../../lib/worker/control/limited-set';
import { KEYSPACE, rawCassandra, uniqueName } from '../support/real-services';

/** Revoked ids kept in a Cassandra table shared by workers (Celery's --statedb, for every node at once), on the real Cassandra. */
describe('CassandraRevokedStore', () => {
  const table = uniqueName('revoked');
  let cql: Client;

  beforeAll(async () => {
    cql = await rawCassandra();
  });

  afterAll(async () => {
    await cql.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${table}`);
    await cql.shutdown();
  });

  it('an id one worker revoked is restored by another worker (or the same after a restart), with a TTL so Cassandra drops it when it expires', async () => {
    const first = new PersistentRevokedSet(new LimitedSet(), new CassandraRevokedStore(cql, KEYSPACE, table));
    first.add('shared-1');
    first.add('short-lived', Date.now() + 1500);
    await first.flush();
    const ttl = (await cql.execute(`SELECT TTL(expires_at) AS ttl FROM ${KEYSPACE}.${table} WHERE task_id = ?`, ['shared-1'], { prepare: true })).first().get('ttl') as number;
    expect(ttl).toBeGreaterThan(REVOKE_EXPIRES_MS / 1000 - 60);
    expect(ttl).toBeLessThanOrEqual(REVOKE_EXPIRES_MS / 1000);

    const second = new PersistentRevokedSet(new LimitedSet(), new CassandraRevokedStore(cql, KEYSPACE, table));
    expect(await second.restore()).toBe(2);
    expect(second.has('shared-1')).toBe(true);
    await new Promise((r) => setTimeout(r, 2100));
    const third = new PersistentRevokedSet(new LimitedSet(), new CassandraRevokedStore(cql, KEYSPACE, table));
    await third.restore();
    expect(third.has('shared-1')).toBe(true);
    expect(third.has('short-lived')).toBe(false);
    // gone from the table too, not only filtered out
    expect((await cql.execute(`SELECT task_id FROM ${KEYSPACE}.${table} WHERE task_id = ?`, ['short-lived'], { prepare: true })).rowLength).toBe(0);
  });

  it('refuses a table name that is not a CQL identifier', () => {
    expect(() => new CassandraRevokedStore(cql, KEYSPACE, 'x; DROP TABLE y')).toThrow(/must be a CQL identifier/);
  });
});
