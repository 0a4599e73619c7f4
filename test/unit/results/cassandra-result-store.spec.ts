import { CassandraResultStore } from '../../../lib/results/cassandra.result-store';
import type { ResolvedCassandraConfig } from '../../../lib/config/resolved-config';
import { CeleryConnectionError } from '../../../lib/errors/celery.errors';
import { normalizeCeleryOptions } from '../../../lib/config/normalize-options';

/**
 * The store's answer to replies that do not fit the request. The driver is replaced by a fake
 * that answers each CQL statement as told; the real driver is exercised by the integration,
 * Astra and fault suites. Seen in the fault suite after a Cassandra stall: a status read resolved
 * with no rows, and reading it threw inside a promise callback and crashed the worker.
 */
const config = normalizeCeleryOptions({
  resultBackend: 'cassandra://',
  cassandra: { contactPoints: ['127.0.0.1'], localDataCenter: 'datacenter1', keyspace: 'ks', table: 'results' },
}).cassandra as ResolvedCassandraConfig;

type Reply = { rows?: Record<string, unknown>[] };
type Answer = (cql: string, params: unknown[]) => Promise<Reply>;

function storeWith(answer: Answer): { store: CassandraResultStore; calls: string[] } {
  const store = new CassandraResultStore(config);
  const calls: string[] = [];
  const fake = {
    execute: (cql: string, params: unknown[]) => {
      calls.push(cql.split(' ')[0] + (cql.includes(' IN ') ? ' IN' : ''));
      return answer(cql, params);
    },
  };
  (store as unknown as { client: unknown }).client = fake;
  return { store, calls };
}

const success = { taskId: 'id-1', status: 'SUCCESS' as const, result: 'x' };
const isStatusRead = (cql: string) => cql.startsWith('SELECT') && cql.includes(' IN ');

describe('CassandraResultStore replies that do not fit the request', () => {
  it('a status read answered without rows rejects with a connection error (to be retried) and writes nothing', async () => {
    // a write's reply (no rows) to the status read
    const { store, calls } = storeWith(async (cql) => (isStatusRead(cql) ? {} : {}));
    const outcome = store.storeUnlessSucceeded(success);
    await expect(outcome).rejects.toThrow(CeleryConnectionError);
    await expect(outcome).rejects.toThrow(/status read without rows/);
    // nothing was written after the bad reply
    expect(calls).toEqual(['SELECT IN']);
  });

  it('after a bad reply the reads in flight are released: later checks are answered', async () => {
    let n = 0;
    const { store, calls } = storeWith(async (cql) => (isStatusRead(cql) ? (n++ === 0 ? {} : { rows: [] }) : {}));
    await expect(store.storeUnlessSucceeded(success)).rejects.toThrow(CeleryConnectionError);
    await expect(store.storeUnlessSucceeded(success)).resolves.toBeNull();
    await expect(store.storeUnlessSucceeded({ ...success, taskId: 'id-2' })).resolves.toBeNull();
    expect(calls).toEqual(['SELECT IN', 'SELECT IN', 'INSERT', 'SELECT IN', 'INSERT']);
  });

  it('a write answered with rows is not counted as stored', async () => {
    const { store } = storeWith(async (cql) => (cql.startsWith('INSERT') ? { rows: [{ status: 'SUCCESS' }] } : { rows: [] }));
    await expect(store.store(success)).rejects.toThrow(/answered the write of id-1 with rows; not counted as stored/);
  });

  it('a result read answered without rows rejects instead of reading as PENDING', async () => {
    const { store } = storeWith(async () => ({}));
    await expect(store.getTaskMeta('id-1')).rejects.toThrow(/result read without rows/);
  });

  it('a result read with no row is PENDING', async () => {
    const { store } = storeWith(async () => ({ rows: [] }));
    await expect(store.getTaskMeta('id-1')).resolves.toMatchObject({ status: 'PENDING' });
  });
});

describe('CassandraResultStore rows of other tasks', () => {
  it("a status read answered with another task's row rejects and writes nothing", async () => {
    const { store, calls } = storeWith(async (cql) => (isStatusRead(cql) ? { rows: [{ task_id: 'someone-else', status: 'SUCCESS' }] } : {}));
    await expect(store.storeUnlessSucceeded(success)).rejects.toThrow(/row of task someone-else, not asked for/);
    expect(calls).toEqual(['SELECT IN']);
  });

  it("a result read answered with another task's row rejects instead of returning that task's result", async () => {
    const { store } = storeWith(async () => ({ rows: [{ task_id: 'someone-else', status: 'SUCCESS', result: Buffer.from('"theirs"'), date_done: new Date(), traceback: null, children: null }] }));
    await expect(store.getTaskMeta('id-1')).rejects.toThrow(/result read of id-1 with the row of someone-else/);
  });

  it('a result read of its own row decodes it', async () => {
    const { store } = storeWith(async () => ({ rows: [{ task_id: 'id-1', status: 'SUCCESS', result: Buffer.from('"mine"'), date_done: new Date(), traceback: null, children: null }] }));
    await expect(store.getTaskMeta('id-1')).resolves.toMatchObject({ status: 'SUCCESS', result: 'mine' });
  });
});
