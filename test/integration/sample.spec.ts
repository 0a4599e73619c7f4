import { ChildProcess, spawn } from 'node:child_process';
import { runSample as run, SAMPLE_MAIN as MAIN } from '../support/sample-process';
import { rawCassandra, RawAmqp, uniqueName, KEYSPACE, SUPERUSER, AMQP_URL, CASSANDRA_HOST, CASSANDRA_PORT, removeQueueAndTable } from '../support/real-services';

const FIRST = 'Astra DB is my powerful results storage yay';
const SECOND = 'ANOTHER DAY IN LAND OF THE WIZARDS';

/** The sample, as the README runs it: first with nothing configured, then on RabbitMQ and Cassandra. */
describe('the sample app', () => {
  it('`npm run sample` with no infrastructure prints both sorted strings and the rows of the in-memory table', async () => {
    const out = await run('all', {});
    expect(out.code).toBe(0);
    const lines = out.stdout.split('\n');
    expect(lines).toContain(FIRST);
    expect(lines).toContain(SECOND);
    expect(out.stdout).toContain('task_id | status | result | date_done | traceback | children');
    expect(out.stdout.match(/\| SUCCESS \|/g)).toHaveLength(2);
    expect(out.stdout + out.stderr).toContain('memory://');
  });

  describe('on RabbitMQ and Cassandra (sample:worker, sample:client, sample:rows)', () => {
    const queue = uniqueName('it_sample');
    const table = uniqueName('it_sample');
    const env = {
      SAMPLE_HTTP_PORT: '0', // the worker's /health and /metrics on a free port (sample-health-metrics.spec.ts tests them)
      CELERY_BROKER_URL: AMQP_URL,
      CELERY_QUEUE: queue,
      CASSANDRA_CONTACT_POINTS: CASSANDRA_HOST,
      CASSANDRA_PORT: String(CASSANDRA_PORT),
      CASSANDRA_KEYSPACE: KEYSPACE,
      CASSANDRA_TABLE: table,
      CASSANDRA_USERNAME: SUPERUSER.username,
      CASSANDRA_PASSWORD: SUPERUSER.password,
    };
    let worker: ChildProcess | null = null;

    afterAll(async () => {
      worker?.kill('SIGKILL');
      await removeQueueAndTable(queue, table);
    });

    it('the worker and the client in two processes sort both strings; rows shows them in Cassandra; SIGTERM exits 0', async () => {
      const w = spawn(process.execPath, [MAIN, 'worker'], { env: { PATH: process.env.PATH, ...env } });
      worker = w;
      let workerOut = '';
      w.stdout.on('data', (d: Buffer) => (workerOut += d.toString()));
      w.stderr.on('data', (d: Buffer) => (workerOut += d.toString()));
      for (let i = 0; i < 300 && !workerOut.includes('Celery node '); i++) await new Promise((r) => setTimeout(r, 100));
      expect(workerOut).toContain(`Worker consuming ${queue}`);
      // the control plane on by default: its node name printed at start, mingle run, task events on
      expect(workerOut).toMatch(/Celery node nestjs-\d+@\S+: answers remote control and sends task events/);
      expect(workerOut).toMatch(/mingle: (all alone|sync with \d+ nodes? complete)/);

      const client = await run('client', env);
      expect(client.code).toBe(0);
      expect(client.stdout.split('\n')).toEqual(expect.arrayContaining([FIRST, SECOND]));

      const rows = await run('rows', env);
      expect(rows.code).toBe(0);
      expect(rows.stdout.match(/\| SUCCESS \|/g)).toHaveLength(2);
      const cql = await rawCassandra();
      try {
        const rs = await cql.execute(`SELECT status, result FROM ${KEYSPACE}.${table}`);
        const stored = rs.rows.map((r) => `${String(r.status)} ${String(JSON.parse(r.result.toString('utf8')))}`);
        expect(stored.sort()).toEqual([`SUCCESS ${SECOND}`, `SUCCESS ${FIRST}`].sort());
      } finally {
        await cql.shutdown();
      }

      const exited = new Promise<number | null>((resolve) => w.on('exit', resolve));
      w.kill('SIGTERM');
      expect(await exited).toBe(0);
      worker = null;
      expect(workerOut).not.toContain(`${SUPERUSER.username}:${SUPERUSER.password}`);
    });
  });
});
