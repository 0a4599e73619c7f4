import { ChildProcess, spawn } from 'node:child_process';
import { runSample as run, SAMPLE_MAIN as MAIN } from '../support/sample-process';
import { AMQP_URL, CASSANDRA_HOST, CASSANDRA_PORT, eventually, KEYSPACE, removeQueueAndTable, SUPERUSER, uniqueName } from '../support/real-services';
import { TcpProxy } from '../support/tcp-proxy';

async function get(port: number, path: string): Promise<{ status: number; body: string; type: string | null }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text(), type: res.headers.get('content-type') };
}

/**
 * `npm run sample:worker` on RabbitMQ and Cassandra serves /health and /metrics. The worker reaches
 * both services through TCP proxies (test/support/tcp-proxy.ts) so that each can be made
 * unreachable for this worker alone, while the services keep running for everybody else.
 */
describe('the sample worker over HTTP: GET /health and GET /metrics (real RabbitMQ and Cassandra)', () => {
  const queue = uniqueName('it_health');
  const table = uniqueName('it_health');
  let amqpProxy: TcpProxy | null = null;
  let cqlProxy: TcpProxy | null = null;
  let worker: ChildProcess | null = null;

  afterAll(async () => {
    worker?.kill('SIGKILL');
    amqpProxy?.restore();
    cqlProxy?.restore();
    await amqpProxy?.close();
    await cqlProxy?.close();
    await removeQueueAndTable(queue, table);
  });

  it('200 with the report while healthy; /metrics counts the tasks by name; 503 while RabbitMQ, then Cassandra, is unreachable; 200 again after', async () => {
    const amqp = new URL(AMQP_URL);
    amqpProxy = await TcpProxy.start(amqp.hostname, Number(amqp.port || 5672));
    cqlProxy = await TcpProxy.start(CASSANDRA_HOST, CASSANDRA_PORT);
    const proxiedAmqp = new URL(AMQP_URL);
    proxiedAmqp.hostname = '127.0.0.1';
    proxiedAmqp.port = String(amqpProxy.port);
    const common = {
      CELERY_QUEUE: queue,
      CASSANDRA_CONTACT_POINTS: '127.0.0.1',
      CASSANDRA_KEYSPACE: KEYSPACE,
      CASSANDRA_TABLE: table,
      CASSANDRA_USERNAME: SUPERUSER.username,
      CASSANDRA_PASSWORD: SUPERUSER.password,
    };
    const w = spawn(process.execPath, [MAIN, 'worker'], {
      env: { PATH: process.env.PATH, ...common, CELERY_BROKER_URL: proxiedAmqp.toString(), CASSANDRA_PORT: String(cqlProxy.port), SAMPLE_HTTP_PORT: '0' },
    });
    worker = w;
    let out = '';
    w.stdout.on('data', (d: Buffer) => (out += d.toString()));
    w.stderr.on('data', (d: Buffer) => (out += d.toString()));
    for (let i = 0; i < 300 && !/HTTP on port \d+/.test(out); i++) await new Promise((r) => setTimeout(r, 100));
    const port = Number(/HTTP on port (\d+)/.exec(out)?.[1]);
    expect(port).toBeGreaterThan(0);

    const healthy = await get(port, '/health');
    expect(healthy.status).toBe(200);
    expect(JSON.parse(healthy.body)).toMatchObject({
      status: 'ok',
      info: {
        celery: {
          status: 'up',
          broker: { transport: 'amqp', connected: true },
          consumers: [{ queue, consuming: true }],
          store: { backend: 'cassandra', reachable: true },
          storeBacklog: 0,
        },
      },
    });

    // the client (straight to the services) sends the walkthrough's tasks; the worker runs them
    const client = await run('client', { ...common, CELERY_BROKER_URL: AMQP_URL, CASSANDRA_PORT: String(CASSANDRA_PORT) });
    expect(client.code).toBe(0);
    let metrics = { status: 0, body: '', type: null as string | null };
    await eventually(async () => {
      metrics = await get(port, '/metrics');
      return metrics.body.includes('celery_tasks_total{task="tasks.sortWords",state="succeeded"} 2');
    });
    expect(metrics.status).toBe(200);
    expect(metrics.type).toContain('text/plain');
    expect(metrics.body).toContain('celery_tasks_total{task="tasks.sortWords",state="received"} 2');
    expect(metrics.body).toMatch(/celery_task_runtime_seconds_count\{task="tasks\.sortWords",state="succeeded"\} 2/);
    expect(metrics.body).toMatch(/celery_store_duration_seconds_count\{outcome="stored"\} 2/);
    expect(metrics.body).toContain('celery_broker_connected 1');
    expect(metrics.body).toContain('celery_messages_in_flight 0');

    // RabbitMQ unreachable for this worker: 503, the broker reported down
    amqpProxy.cut();
    let down = { status: 0, body: '', type: null as string | null };
    await eventually(async () => (down = await get(port, '/health')).status === 503, 15000);
    expect(JSON.parse(down.body)).toMatchObject({ status: 'error', error: { celery: { status: 'down', broker: { connected: false } } } });
    expect((await get(port, '/metrics')).body).toContain('celery_broker_connected 0');
    amqpProxy.restore();
    await eventually(async () => (await get(port, '/health')).status === 200, 30000);

    // Cassandra unreachable: 503, the store reported unreachable with the reason
    cqlProxy.cut();
    await eventually(async () => (down = await get(port, '/health')).status === 503, 15000);
    const report = JSON.parse(down.body) as { error: { celery: { broker: { connected: boolean }; store: { reachable: boolean; error?: string } } } };
    expect(report.error.celery.broker.connected).toBe(true);
    expect(report.error.celery.store.reachable).toBe(false);
    expect(report.error.celery.store.error).toEqual(expect.any(String));
    cqlProxy.restore();
    await eventually(async () => (await get(port, '/health')).status === 200, 60000);

    const exited = new Promise<number | null>((resolve) => w.on('exit', resolve));
    w.kill('SIGTERM');
    expect(await exited).toBe(0);
    worker = null;
  }, 180000);
});
