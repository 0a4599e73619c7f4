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
 * One side of the suite: a NestJS app (its producer) and a Python worker on its own queue and
 * table, started before the describe's tests and removed after them.
 */
function pythonSide(prefix: string, venv?: string, peerCompat?: '5.2') {
  const side = {
    table: uniqueName(`${prefix}_tbl`),
    env: undefined as unknown as PythonEnv,
    producer: undefined as unknown as Producer,
  };
  side.env = { pyQueue: uniqueName(`py_${prefix}`), table: side.table, ...(venv ? { venv } : {}) };
  const jsQueue = uniqueName(`js_${prefix}`);
  let worker: PythonWorker | undefined;
  let app: TestingModule | undefined;
  beforeAll(async () => {
    if (venv) ensurePythonCelery52();
    else ensurePythonCelery();
    app = await Test.createTestingModule({ imports: [CeleryModule.forRoot({ ...interopCeleryconfig(side.table, jsQueue), ...(peerCompat ? { peerCompat } : {}), resultPollIntervalMs: 50 })] }).compile();
    await app.init(); // creates the table first
    side.producer = app.get(Producer);
    worker = await PythonWorker.start(side.env);
  }, 120000);
  afterAll(async () => {
    await worker?.stop('SIGKILL');
    await app?.close();
    await removeQueueAndTable([side.env.pyQueue, jsQueue], side.table);
  });
  return side;
}

/**
 * Workflows sent by our Producer and run by a real Python Celery (newest 5.x) worker, on
 * RabbitMQ with Celery's Cassandra result table: the Python worker continues the chain from
 * `embed.chain` and runs `celery.chord_unlock` (polling Cassandra) as it does for Python callers.
 * Our caller's own get() reads the final values.
 */
describe('workflows: NestJS producer → Python Celery worker', () => {
  const side = pythonSide('wf');

  async function newestRow(taskId: string): Promise<Row> {
    const cql = await rawCassandra();
    try {
      const rs = await cql.execute(`SELECT status, result, children FROM ${KEYSPACE}.${side.table} WHERE task_id = ? LIMIT 1`, [taskId], { prepare: true });
      const json = (b: Buffer | null) => (b === null ? null : JSON.parse(b.toString('utf8')));
      const r = rs.first();
      return { status: r.status as string, result: json(r.result), children: json(r.children) };
    } finally {
      await cql.shutdown();
    }
  }

  const add = (...args: number[]) => side.producer.signatureByName<number>('tasks.add', args, { queue: side.env.pyQueue });
  const tsum = () => side.producer.signatureByName<number>('tasks.tsum', [], { queue: side.env.pyQueue });

  it('chain(add(2, 2), add(4), add(8)): get() of the last step is 16; each step stored its next step as its child', async () => {
    const result = await side.producer.chain(add(2, 2), add(4), add(8));
    await expect(result.get({ timeout: 20000 })).resolves.toBe(16);
    const second = result.parent!;
    const first = second.parent!;
    expect(await newestRow(first.id)).toEqual({ status: 'SUCCESS', result: 4, children: [[[second.id, null], null]] });
    expect(await newestRow(second.id)).toEqual({ status: 'SUCCESS', result: 8, children: [[[result.id, null], null]] });
  }, 30000);

  it('chord([add(1, 1), add(2, 2), add(3, 3)], tsum()): the Python worker runs our chord_unlock and the body gets the header values in order', async () => {
    const result = await side.producer.chord([add(1, 1), add(2, 2), add(3, 3)], tsum());
    await expect(result.get({ timeout: 20000 })).resolves.toBe(12);
    expect((await newestRow(result.id)).status).toBe('SUCCESS');
  }, 30000);

  it('group of 5 add(i, i): GroupResult.get() in member order, completedCount 5', async () => {
    const group: GroupResult = await side.producer.group(...[0, 1, 2, 3, 4].map((i) => add(i, i)));
    await expect(group.get({ timeout: 20000 })).resolves.toEqual([0, 2, 4, 6, 8]);
    expect(await group.completedCount()).toBe(5);
    expect(await group.ready()).toBe(true);
  }, 30000);

  it('chain(group(add(1, 2), add(3, 4)), tsum(), add(100)): upgraded to a chord whose body continues the chain → 110', async () => {
    const result = await side.producer.chain(groupSignature([add(1, 2), add(3, 4)]), tsum(), add(100));
    await expect(result.get({ timeout: 20000 })).resolves.toBe(110);
  }, 30000);

  it('chain(add(1, 1), group(add(10), add(20))): the Python worker applies the group with 2 prepended → GroupResult [12, 22]', async () => {
    const group: GroupResult = await side.producer.chain(add(1, 1), groupSignature([add(10), add(20)]));
    await expect(group.get({ timeout: 20000 })).resolves.toEqual([12, 22]);
    expect(await group.parent?.get({ timeout: 1000 })).toBe(2);
  }, 30000);
});

/** The same chain and chord with `peerCompat: '5.2'`, run by Celery 5.2.6 (Debian bookworm's, py-amqp 5.1.1). */
describe('workflows: NestJS producer (peerCompat 5.2) → Python Celery 5.2.6 worker', () => {
  const side = pythonSide('wf52', VENV_52, '5.2');

  const add = (...args: number[]) => side.producer.signatureByName<number>('tasks.add', args, { queue: side.env.pyQueue });

  it('chain(add(2, 2), add(4), add(8)) → 16 and chord([add(1, 1), add(2, 2)], tsum()) → 6', async () => {
    const [chain, chord] = await Promise.all([
      side.producer.chain(add(2, 2), add(4), add(8)),
      side.producer.chord([add(1, 1), add(2, 2)], side.producer.signatureByName<number>('tasks.tsum', [], { queue: side.env.pyQueue })),
    ]);
    await expect(chain.get({ timeout: 20000 })).resolves.toBe(16);
    await expect(chord.get({ timeout: 20000 })).resolves.toBe(6);
  }, 30000);
});
