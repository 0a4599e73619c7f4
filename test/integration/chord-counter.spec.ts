import { Injectable } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import type { Client } from 'cassandra-driver';
import type * as amqplib from 'amqplib';
import { setTimeout as sleep } from 'node:timers/promises';
import { CeleryModule, Producer, ResultStore, Task, TaskContext } from '../../lib';
import { createTableCql } from '../../lib/results/cassandra.result-store';
import { CeleryWorker } from '../../lib/worker/celery.worker';
import { createChordTableCql } from '../../lib/worker/chord-counter';
import { WorkerProcess } from '../faults/fault-harness';
import { eventually, KEYSPACE, rawCassandra, RawAmqp, realOptions, removeQueueAndTable, uniqueName } from '../support/real-services';

let bodyRuns: { id: string; values: unknown[] }[] = [];
let headerRuns: string[] = [];
let unlockRuns = 0;

@Injectable()
class CounterChordTasks {
  @Task('itc.square')
  async square(x: number, @TaskContext() ctx: TaskContext): Promise<number> {
    headerRuns.push(ctx.id);
    await sleep(Math.floor(Math.random() * 40));
    return x * x;
  }

  @Task('itc.fail')
  fail(why: string): never {
    throw new RangeError(why);
  }

  @Task('itc.collect')
  collect(values: unknown[], @TaskContext() ctx: TaskContext): unknown[] {
    bodyRuns.push({ id: ctx.id, values });
    return values;
  }

  /** Stands in for the builtin: counter-mode chords must never send it. */
  @Task('celery.chord_unlock')
  unlock(): null {
    unlockRuns++;
    return null;
  }
}

interface ChordRow {
  /** The driver reads a CQL map as an object. */
  done: Record<string, string> | null;
  finisher: string | null;
  body_sent: boolean | null;
}

/**
 * Counter-mode chords on RabbitMQ and Cassandra: the NestJS header tasks complete the chord
 * themselves through a row of ours beside Celery's table; no chord_unlock, and crash-safe.
 */
describe('chords completed by their header tasks (counter mode) on RabbitMQ and Cassandra', () => {
  const queue = uniqueName('it_cc');
  const table = uniqueName('it_cc');
  const chordTable = uniqueName('it_chords');
  let app: TestingModule;
  let cql: Client;

  async function chordRow(groupId: string): Promise<ChordRow | undefined> {
    const rs = await cql.execute(`SELECT done, finisher, body_sent FROM ${KEYSPACE}.${chordTable} WHERE group_id = ?`, [groupId], { prepare: true });
    return rs.rows[0] as unknown as ChordRow | undefined;
  }

  async function open(workerEnabled: boolean): Promise<void> {
    app = await Test.createTestingModule({
      imports: [CeleryModule.forRoot(realOptions(queue, table, { chords: { table: chordTable }, worker: { enabled: workerEnabled, concurrency: 8, hostname: 'it@chords' } }))],
      providers: [CounterChordTasks],
    }).compile();
    await app.init();
  }

  beforeAll(async () => {
    cql = await rawCassandra();
    await cql.execute(createTableCql(KEYSPACE, table));
  }, 60000);

  beforeEach(() => {
    bodyRuns = [];
    headerRuns = [];
    unlockRuns = 0;
  });

  afterEach(async () => {
    await app?.close();
  }, 60000);

  afterAll(async () => {
    await cql.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${chordTable}`);
    await cql?.shutdown();
    await removeQueueAndTable(queue, table);
  }, 60000);

  it('50 header tasks: the body runs exactly once with the 50 values in header order; no chord_unlock; the chord row says who sent it', async () => {
    await open(true);
    const producer = app.get(Producer);
    const header = Array.from({ length: 50 }, (_, i) => producer.signatureByName('itc.square', [i]));
    const result = await producer.chord(header, producer.signatureByName('itc.collect'), { completion: 'counter' });
    const expected = Array.from({ length: 50 }, (_, i) => i * i);
    await expect(result.get({ timeout: 30000 })).resolves.toEqual(expected);
    await sleep(1500); // a chord_unlock would have come after 1 s; a second body would show too
    expect(bodyRuns).toEqual([{ id: result.id, values: expected }]);
    expect(unlockRuns).toBe(0);
    expect(new Set(headerRuns).size).toBe(50);
    const meta = await app.get(ResultStore).getTaskMeta(result.id);
    const groupId = (await cql.execute(`SELECT group_id FROM ${KEYSPACE}.${chordTable}`)).rows.map((r) => r.group_id as string);
    expect(groupId).toHaveLength(1);
    const row = (await chordRow(groupId[0])) as ChordRow;
    expect(Object.keys(row.done ?? {})).toHaveLength(50);
    expect(row.body_sent).toBe(true);
    expect(Object.values(row.done ?? {})).toContain(row.finisher);
    expect(meta.status).toBe('SUCCESS');
    await cql.execute(`TRUNCATE ${KEYSPACE}.${chordTable}`);
  }, 60000);

  it('a failing header task: ChordError on the body row, the body never runs', async () => {
    await open(true);
    const producer = app.get(Producer);
    const header = [producer.signatureByName('itc.square', [1]), producer.signatureByName('itc.fail', ['no luck']), producer.signatureByName('itc.square', [2])];
    const result = await producer.chord(header, producer.signatureByName('itc.collect'), { completion: 'counter' });
    await expect(result.get({ timeout: 30000 })).rejects.toThrow(/ChordError\(ValueError\('no luck'\)\)/);
    const meta = await app.get(ResultStore).getTaskMeta(result.id);
    expect(meta).toMatchObject({ status: 'FAILURE', result: { exc_type: 'ChordError', exc_module: 'celery.exceptions' } });
    await sleep(500);
    expect(bodyRuns).toEqual([]);
    expect(unlockRuns).toBe(0);
    await cql.execute(`TRUNCATE ${KEYSPACE}.${chordTable}`);
  }, 60000);

  it('a worker that died after storing a header SUCCESS but before its chord part: the redelivered message completes the chord', async () => {
    await open(false);
    const producer = app.get(Producer);
    const result = await producer.chord([3, 4, 5].map((x) => producer.signatureByName('itc.square', [x])), producer.signatureByName('itc.collect'), { completion: 'counter' });
    // the "dead worker": takes every header message on its own channel, stores the last one's SUCCESS, acknowledges nothing
    const amqp = await RawAmqp.open();
    const taken: amqplib.ConsumeMessage[] = [];
    try {
      await amqp.channel.prefetch(10);
      await amqp.channel.consume(queue, (m) => void (m && taken.push(m)), { noAck: false });
      await eventually(async () => taken.length === 3, 10000);
      const lastId = String(taken[2].properties.headers?.id);
      await app.get(ResultStore).store({ taskId: lastId, status: 'SUCCESS', result: 25, traceback: null, children: [] });
    } finally {
      await amqp.close(); // its channel closes: RabbitMQ requeues the three messages, redelivered
    }
    await app.get(CeleryWorker).start();
    await expect(result.get({ timeout: 30000 })).resolves.toEqual([9, 16, 25]);
    expect(headerRuns).toHaveLength(2); // the stored one was not run again
    await sleep(500);
    expect(bodyRuns).toHaveLength(1);
    expect(unlockRuns).toBe(0);
  }, 60000);

  it('kill -9 of the sample worker in the middle of a 600-task chord, then a new worker: the body gets all 600 values', async () => {
    // the sample runs with the module's default table celery_chords; created here as the superuser
    await cql.execute(createChordTableCql(KEYSPACE, 'celery_chords'));
    await open(false);
    const producer = app.get(Producer);
    const first = await WorkerProcess.start(queue, table);
    let second: WorkerProcess | null = null;
    try {
      const seconds = Array.from({ length: 600 }, (_, i) => (i % 3) * 0.01);
      const result = await producer.chord(seconds.map((s) => producer.signatureByName('tasks.sleep', [s])), producer.signatureByName<number>('tasks.tsum'), { completion: 'counter' });
      await eventually(async () => first.executions.size >= 150, 30000);
      first.signal('SIGKILL', true);
      await first.waitExit(10000);
      const ranBefore = first.executions.size;
      expect(ranBefore).toBeLessThan(600); // killed mid-chord
      second = await WorkerProcess.start(queue, table);
      const sum = await result.get({ timeout: 60000 });
      expect(sum).toBeCloseTo(seconds.reduce((a, b) => a + b, 0), 6);
      const bodyRunsSeen = [...first.lines, ...second.lines].filter((l) => l.includes(`Task tasks.tsum[${result.id}] succeeded`)).length;
      expect(bodyRunsSeen).toBe(1);
      const ran = new Set([...first.executions.keys(), ...second.executions.keys()]);
      const all = await cql.execute(`SELECT group_id, done, finisher, body_sent FROM ${KEYSPACE}.celery_chords`);
      const mine = all.rows.filter((r) => Object.values((r.done ?? {}) as Record<string, string>).some((id) => ran.has(id)));
      expect(mine).toHaveLength(1);
      expect(Object.keys(mine[0].done as Record<string, string>)).toHaveLength(600);
      expect(mine[0].body_sent).toBe(true);
    } finally {
      if (first.alive) first.signal('SIGKILL', true);
      await second?.stop();
    }
  }, 120000);
});
