import type { Client } from 'cassandra-driver';
import { Test, TestingModule } from '@nestjs/testing';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CeleryModule, Producer, type CeleryModuleOptions } from '../../lib';
import { ControlProbeTasks, probeRuns } from '../support/control-probe-tasks';
import { PidboxClient } from '../support/pidbox-client';
import { CassandraRevokedStore, PersistentRevokedSet } from '../../lib/worker/revoked-persistence';
import { LimitedSet, REVOKE_EXPIRES_MS } from '../../lib/worker/control/limited-set';
import { eventually, KEYSPACE, rawCassandra, realOptions, removeQueueAndTable, uniqueName } from '../support/real-services';

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

/**
 * The worker wired to them (issue 14 item 5), on the real RabbitMQ and Cassandra: a revoke
 * broadcast before a restart still stops a delivery after it — from `worker.stateDb`, or learnt
 * from another NestJS worker by mingle's hello at start.
 */
describe('revokes across a worker restart (worker.stateDb, mingle)', () => {
  const queue = uniqueName('it_statedb');
  const otherQueue = uniqueName('it_statedb_other');
  const table = uniqueName('it_statedb');
  const dir = mkdtempSync(join(tmpdir(), 'statedb-'));
  let client: PidboxClient;
  const apps: TestingModule[] = [];

  async function startWorker(hostname: string, worker: CeleryModuleOptions['worker'], q = queue): Promise<TestingModule> {
    const moduleRef = await Test.createTestingModule({
      imports: [CeleryModule.forRoot(realOptions(q, table, { worker: { hostname, concurrency: 1, shutdownTimeoutMs: 1000, ...worker } }))],
      providers: [ControlProbeTasks],
    }).compile();
    await moduleRef.init();
    apps.push(moduleRef);
    return moduleRef;
  }

  async function stop(app: TestingModule): Promise<void> {
    apps.splice(apps.indexOf(app), 1);
    await app.close();
  }

  /** Revokes `id` on `nodes` as Python's control.revoke does (a cast), and waits until each lists it. */
  async function revokeOn(id: string, nodes: string[]): Promise<void> {
    client.cast('revoke', { task_id: id, terminate: false, signal: 'SIGTERM' }, nodes);
    for (const node of nodes) await eventually(async () => ((await client.ask(node, 'revoked', {}, 300)) as string[]).includes(id));
  }

  /** Sends `id` (revoked) then a marker task behind it; once the marker is done, `id` must not have run and stay REVOKED. */
  async function expectNotRun(app: TestingModule, id: string): Promise<void> {
    const producer = app.get(Producer);
    const revoked = await producer.sendTask('probe.add', { args: [1, 1], taskId: id });
    const marker = await producer.sendTask('probe.add', { args: [2, 2] });
    expect(await marker.get({ timeout: 10000 })).toBe(4);
    await sleep(300);
    expect(probeRuns).not.toContain(id);
    expect(await revoked.state()).toBe('REVOKED');
  }

  beforeAll(async () => {
    client = await PidboxClient.open();
  });

  // every test's workers stop at its end: none of them takes the next test's deliveries
  afterEach(async () => {
    for (const app of apps.splice(0)) await app.close();
  });

  afterAll(async () => {
    await client?.close();
    await removeQueueAndTable([queue, otherQueue], table);
  });

  it('stateDb (a file): a worker gets a revoke, is stopped and restarted with the same file: the delivery of the revoked id is not run', async () => {
    const node = `${uniqueName('nest-sdb')}@it-host`;
    const stateDb = join(dir, 'worker.revoked');
    const id = uniqueName('revoked-before-restart');
    const first = await startWorker(node, { stateDb, mingle: false });
    await revokeOn(id, [node]);
    await stop(first);
    expect(readFileSync(stateDb, 'utf8')).toContain(id);
    const again = await startWorker(node, { stateDb, mingle: false });
    expect(await client.ask(node, 'revoked', {}, 500)).toContain(id);
    await expectNotRun(again, id);
  });

  it('stateDb { table }: restored from the Cassandra table after a restart', async () => {
    const node = `${uniqueName('nest-sdbt')}@it-host`;
    const stateTable = uniqueName('it_revoked');
    const id = uniqueName('revoked-table');
    const first = await startWorker(node, { stateDb: { table: stateTable }, mingle: false });
    await revokeOn(id, [node]);
    await stop(first);
    const again = await startWorker(node, { stateDb: { table: stateTable }, mingle: false });
    try {
      await expectNotRun(again, id);
    } finally {
      const cql = await rawCassandra();
      await cql.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${stateTable}`).finally(() => cql.shutdown());
    }
  });

  it('mingle: without stateDb, a restarted worker learns the revoked id from another NestJS worker that got the broadcast, and does not run it', async () => {
    const node = `${uniqueName('nest-mgl')}@it-host`;
    const neighbour = `${uniqueName('nest-nbr')}@it-host`;
    const id = uniqueName('revoked-mingle');
    await startWorker(neighbour, { mingle: true }, otherQueue);
    const first = await startWorker(node, { mingle: true });
    await revokeOn(id, [node, neighbour]);
    await stop(first);
    const startedAt = Date.now();
    const again = await startWorker(node, { mingle: true });
    const startMs = Date.now() - startedAt;
    expect(await client.ask(node, 'revoked', {}, 500)).toContain(id);
    await expectNotRun(again, id);
    // the neighbour answers at once; the worker still waits mingleTimeoutMs (1 s) after the last reply
    expect(startMs).toBeGreaterThanOrEqual(1000);
    expect(startMs).toBeLessThan(10000);
  });

  it('without stateDb and mingle the restarted worker does not know the id (what the two options add)', async () => {
    const node = `${uniqueName('nest-none')}@it-host`;
    const id = uniqueName('revoked-forgotten');
    const first = await startWorker(node, { mingle: false });
    await revokeOn(id, [node]);
    await stop(first);
    const again = await startWorker(node, { mingle: false });
    expect(await client.ask(node, 'revoked', {}, 500)).not.toContain(id);
    const ran = await again.get(Producer).sendTask('probe.add', { args: [1, 1], taskId: id });
    await eventually(async () => probeRuns.includes(id));
    await eventually(async () => (await ran.state()) === 'SUCCESS');
  });
});
