import { Test, TestingModule } from '@nestjs/testing';
import { CeleryModule, GroupResult, groupSignature, Producer } from '../../lib';
import { KEYSPACE, rawCassandra, removeQueueAndTable, uniqueName } from '../support/real-services';
import { ensurePythonCelery, ensurePythonCelery52, interopCeleryconfig, PythonEnv, PythonWorker, VENV_52 } from './support/python-celery';

interface Row {
  status: string;
  result: unknown;
  children: unknown;
}

/**
 * Workflows sent by our Producer and run by a real Python Celery (newest 5.x) worker, on
 * RabbitMQ with Celery's Cassandra result table: the Python worker continues the chain from
 * `embed.chain` and runs `celery.chord_unlock` (polling Cassandra) as it does for Python callers.
 * Our caller's own get() reads the final values.
 */
describe('workflows: NestJS producer → Python Celery worker', () => {
  const table = uniqueName('workflows');
  const env: PythonEnv = { pyQueue: uniqueName('py_wf'), table };
  const jsQueue = uniqueName('js_wf');
  let worker: PythonWorker;
  let app: TestingModule;
  let producer: Producer;

  beforeAll(async () => {
    ensurePythonCelery();
    app = await Test.createTestingModule({ imports: [CeleryModule.forRoot({ ...interopCeleryconfig(table, jsQueue), resultPollIntervalMs: 50 })] }).compile();
    await app.init(); // creates the table first
    producer = app.get(Producer);
    worker = await PythonWorker.start(env);
  }, 120000);

  afterAll(async () => {
    await worker?.stop('SIGKILL');
    await app?.close();
    await removeQueueAndTable([env.pyQueue, jsQueue], table);
  });

  async function newestRow(taskId: string): Promise<Row> {
    const cql = await rawCassandra();
    try {
      const rs = await cql.execute(`SELECT status, result, children FROM ${KEYSPACE}.${table} WHERE task_id = ? LIMIT 1`, [taskId], { prepare: true });
      const json = (b: Buffer | null) => (b === null ? null : JSON.parse(b.toString('utf8')));
      const r = rs.first();
      return { status: r.status as string, result: json(r.result), children: json(r.children) };
    } finally {
      await cql.shutdown();
    }
  }

  const add = (...args: number[]) => producer.signatureByName<number>('tasks.add', args, { queue: env.pyQueue });
  const tsum = () => producer.signatureByName<number>('tasks.tsum', [], { queue: env.pyQueue });

  it('chain(add(2, 2), add(4), add(8)): get() of the last step is 16; each step stored its next step as its child', async () => {
    const result = await producer.chain(add(2, 2), add(4), add(8));
    await expect(result.get({ timeout: 20000 })).resolves.toBe(16);
    const second = result.parent!;
    const first = second.parent!;
    expect(await newestRow(first.id)).toEqual({ status: 'SUCCESS', result: 4, children: [[[second.id, null], null]] });
    expect(await newestRow(second.id)).toEqual({ status: 'SUCCESS', result: 8, children: [[[result.id, null], null]] });
  }, 30000);

  it('chord([add(1, 1), add(2, 2), add(3, 3)], tsum()): the Python worker runs our chord_unlock and the body gets the header values in order', async () => {
    const result = await producer.chord([add(1, 1), add(2, 2), add(3, 3)], tsum());
    await expect(result.get({ timeout: 20000 })).resolves.toBe(12);
    expect((await newestRow(result.id)).status).toBe('SUCCESS');
  }, 30000);

  it('group of 5 add(i, i): GroupResult.get() in member order, completedCount 5', async () => {
    const group: GroupResult = await producer.group(...[0, 1, 2, 3, 4].map((i) => add(i, i)));
    await expect(group.get({ timeout: 20000 })).resolves.toEqual([0, 2, 4, 6, 8]);
    expect(await group.completedCount()).toBe(5);
    expect(await group.ready()).toBe(true);
  }, 30000);

  it('chain(group(add(1, 2), add(3, 4)), tsum(), add(100)): upgraded to a chord whose body continues the chain → 110', async () => {
    const result = await producer.chain(groupSignature([add(1, 2), add(3, 4)]), tsum(), add(100));
    await expect(result.get({ timeout: 20000 })).resolves.toBe(110);
  }, 30000);
});

/** The same chain and chord with `peerCompat: '5.2'`, run by Celery 5.2.6 (Debian bookworm's, py-amqp 5.1.1). */
describe('workflows: NestJS producer (peerCompat 5.2) → Python Celery 5.2.6 worker', () => {
  const table = uniqueName('workflows52');
  const env: PythonEnv = { pyQueue: uniqueName('py_wf52'), table, venv: VENV_52 };
  const jsQueue = uniqueName('js_wf52');
  let worker: PythonWorker;
  let app: TestingModule;
  let producer: Producer;

  beforeAll(async () => {
    ensurePythonCelery52();
    app = await Test.createTestingModule({ imports: [CeleryModule.forRoot({ ...interopCeleryconfig(table, jsQueue), peerCompat: '5.2', resultPollIntervalMs: 50 })] }).compile();
    await app.init();
    producer = app.get(Producer);
    worker = await PythonWorker.start(env);
  }, 120000);

  afterAll(async () => {
    await worker?.stop('SIGKILL');
    await app?.close();
    await removeQueueAndTable([env.pyQueue, jsQueue], table);
  });

  const add = (...args: number[]) => producer.signatureByName<number>('tasks.add', args, { queue: env.pyQueue });

  it('chain(add(2, 2), add(4), add(8)) → 16 and chord([add(1, 1), add(2, 2)], tsum()) → 6', async () => {
    const [chain, chord] = await Promise.all([
      producer.chain(add(2, 2), add(4), add(8)),
      producer.chord([add(1, 1), add(2, 2)], producer.signatureByName<number>('tasks.tsum', [], { queue: env.pyQueue })),
    ]);
    await expect(chain.get({ timeout: 20000 })).resolves.toBe(16);
    await expect(chord.get({ timeout: 20000 })).resolves.toBe(6);
  }, 30000);
});
