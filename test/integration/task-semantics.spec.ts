import { Injectable } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import type { Client } from 'cassandra-driver';
import { setTimeout as sleep } from 'node:timers/promises';
import { CeleryModule, Producer, Task, TaskContext, TaskFailedError } from '../../lib';
import { encodeTaskMessage } from '../../lib/protocol/task-message';
import { TasksService } from '../../sample/tasks.service';
import { eventually, KEYSPACE, RawAmqp, rawCassandra, realOptions, removeQueueAndTable, uniqueName } from '../support/real-services';

/** Tasks only this spec needs, beside the sample's. */
@Injectable()
class SemanticsProbe {
  @Task('it.context')
  context(@TaskContext() ctx: TaskContext): Record<string, unknown> {
    return { retries: ctx.retries, exchange: ctx.deliveryInfo.exchange, routingKey: ctx.deliveryInfo.routingKey, parentId: ctx.parentId };
  }

  @Task('it.retryOnce')
  retryOnce(@TaskContext() ctx: TaskContext): Record<string, unknown> {
    if (ctx.retries === 0) ctx.retry({ countdown: 0.1, exc: new RangeError('first try') });
    return { retries: ctx.retries, exchange: ctx.deliveryInfo.exchange, routingKey: ctx.deliveryInfo.routingKey, parentId: ctx.parentId };
  }

  @Task('it.retryDelayed')
  retryDelayed(times: number, @TaskContext() ctx: TaskContext): Record<string, unknown> {
    if (ctx.retries < times) ctx.retry({ countdown: 1 });
    const deaths = (ctx.headers['x-death'] as { queue: string; count: number }[] | undefined) ?? [];
    return { retries: ctx.retries, routingKey: ctx.deliveryInfo.routingKey, deathCounts: deaths.map((d) => Number(d.count)) };
  }

  @Task('it.shared', { rateLimit: { global: '10/s' } })
  shared(): number {
    return Date.now();
  }

  @Task('it.hang', { timeLimit: 0.3 })
  hang(): Promise<never> {
    return new Promise<never>(() => undefined);
  }

  @Task('it.started', { trackStarted: true })
  async started(ms: number): Promise<string> {
    await sleep(ms);
    return 'done';
  }
}

interface Row {
  status: string;
  result: unknown;
  children: unknown;
}

/**
 * Retries, time limits and STARTED rows on the real RabbitMQ and Cassandra, read from Cassandra's
 * rows themselves (every state Celery's table keeps is a row of its own, newest first).
 */
describe('task semantics on RabbitMQ and Cassandra', () => {
  const queue = uniqueName('it_sem');
  const table = uniqueName('it_sem');
  let app: TestingModule;
  let producer: Producer;
  let cql: Client;
  let amqp: RawAmqp;

  async function rows(taskId: string): Promise<Row[]> {
    const rs = await cql.execute(`SELECT status, result, children FROM ${KEYSPACE}.${table} WHERE task_id = ?`, [taskId], { prepare: true });
    // oldest first
    return rs.rows.reverse().map((r) => ({ status: r.status as string, result: JSON.parse(String(r.result)), children: JSON.parse(String(r.children)) }));
  }

  beforeAll(async () => {
    cql = await rawCassandra();
    amqp = await RawAmqp.open();
    app = await Test.createTestingModule({
      imports: [CeleryModule.forRoot(realOptions(queue, table, { worker: { concurrency: 1, hostname: 'it@semantics' } }))],
      providers: [TasksService, SemanticsProbe],
    }).compile();
    await app.init();
    producer = app.get(Producer);
  });

  afterAll(async () => {
    await app?.close();
    await amqp?.close();
    await cql?.shutdown();
    await removeQueueAndTable(queue, table);
  });

  it('tasks.flaky retries through RabbitMQ: a RETRY row per retry, then SUCCESS, all under the same id', async () => {
    const r = await producer.sendTask('tasks.flaky', { args: [2] });
    await expect(r.get({ timeout: 15000 })).resolves.toBe('ok after 2 retries');
    const history = await rows(r.id);
    expect(history.map((h) => h.status)).toEqual(['RETRY', 'RETRY', 'SUCCESS']);
    expect(history[0].result).toEqual({ exc_type: 'Exception', exc_message: ['flaky'], exc_module: 'builtins' });
    expect(history[0].children).toEqual([[[r.id, null], null]]);
  });

  it("tasks.fail stores the RangeError as Python's ValueError, and tasks.add adds", async () => {
    const failed = await producer.sendTask('tasks.fail', { args: ['no such report'] });
    const err = (await failed.get({ timeout: 10000 }).catch((e: unknown) => e)) as TaskFailedError;
    expect([err.excType, err.excModule, err.excMessage]).toEqual(['ValueError', 'builtins', ['no such report']]);
    await expect((await producer.sendTask('tasks.add', { args: [2, 40] })).get({ timeout: 10000 })).resolves.toBe(42);
  });

  it('tasks.flaky beyond maxRetries (3) fails with its own exception after 3 RETRY rows', async () => {
    const r = await producer.sendTask('tasks.flaky', { args: [5] });
    const err = (await r.get({ timeout: 15000 }).catch((e: unknown) => e)) as TaskFailedError;
    expect(err).toBeInstanceOf(TaskFailedError);
    expect([err.excType, err.excModule, err.excMessage]).toEqual(['Exception', 'builtins', ['flaky']]);
    expect((await rows(r.id)).map((h) => h.status)).toEqual(['RETRY', 'RETRY', 'RETRY', 'FAILURE']);
  });

  it("a retry goes back the way the message came: through the queue's own exchange when Python published it so", async () => {
    // Python's Celery publishes to exchange <queue> with routing key <queue> (wire spec §1.1)
    const id = uniqueName('py_style');
    const m = encodeTaskMessage({ task: 'it.retryOnce', id }, { nowMicros: Date.now() * 1000, origin: 'gen1@python' });
    amqp.channel.publish(queue, queue, m.body, { ...m.properties, headers: m.amqpHeaders });
    await eventually(async () => (await rows(id)).some((h) => h.status === 'SUCCESS'), 15000);
    const history = await rows(id);
    expect(history.map((h) => h.status)).toEqual(['RETRY', 'SUCCESS']);
    expect(history[1].result).toEqual({ retries: 1, exchange: queue, routingKey: queue, parentId: id });
  });

  it('on a quorum queue behind a topic exchange a retry travels through native delayed delivery, its x-death headers stripped and its old delay prefix replaced', async () => {
    const q = uniqueName('it_sem_quorum');
    const quorumApp = await Test.createTestingModule({
      imports: [CeleryModule.forRoot(realOptions(q, table, { queueType: 'quorum', defaultExchangeType: 'topic' }))],
      providers: [SemanticsProbe],
    }).compile();
    await quorumApp.init();
    try {
      const r = await quorumApp.get(Producer).sendTask('it.retryDelayed', { args: [2] });
      const value = (await r.get({ timeout: 20000 })) as { retries: number; routingKey: string; deathCounts: number[] };
      expect(value.retries).toBe(2);
      // one prefix of 28 binary digits (1 s), not one per retry
      expect(value.routingKey).toBe(`${'0.'.repeat(27)}1.${q}`);
      // the delay queues it passed on its last trip, each once: the x-death of earlier trips was not carried over
      // (carried over, RabbitMQ < 4.0.1 sees a dead-letter cycle and drops the message)
      expect(value.deathCounts.length).toBeGreaterThan(0);
      expect(value.deathCounts.every((c) => c === 1)).toBe(true);
      expect((await rows(r.id)).map((h) => h.status)).toEqual(['RETRY', 'RETRY', 'SUCCESS']);
    } finally {
      await quorumApp.close();
      await amqp.deleteQueues(q);
    }
  });

  it("tasks.limited ('5/s') runs one task every 200 ms on the real broker", async () => {
    const results = await Promise.all(Array.from({ length: 6 }, () => producer.sendTask('tasks.limited')));
    const times = ((await Promise.all(results.map((r) => r.get({ timeout: 10000 })))) as number[]).sort((a, b) => a - b);
    expect(times[5] - times[0]).toBeGreaterThanOrEqual(950);
  });

  it('a shared limit ({ global: 10/s }) holds across two workers through Cassandra: starts at least ~100 ms apart in total', async () => {
    const second = await Test.createTestingModule({
      imports: [CeleryModule.forRoot(realOptions(queue, table, { worker: { concurrency: 4, hostname: 'it@second' } }))],
      providers: [TasksService, SemanticsProbe],
    }).compile();
    await second.init();
    try {
      const results = await Promise.all(Array.from({ length: 12 }, () => producer.sendTask('it.shared')));
      const times = ((await Promise.all(results.map((r) => r.get({ timeout: 15000 })))) as number[]).sort((a, b) => a - b);
      // 12 starts at 10/s: at least 11 intervals of ~100 ms (the stated bound lets one extra start in a window)
      expect(times[11] - times[0]).toBeGreaterThanOrEqual(950);
      const cql = await rawCassandra();
      try {
        const row = await cql.execute(`SELECT next_start FROM ${KEYSPACE}.celery_rate_limits WHERE task_name = ?`, ['it.shared'], { prepare: true });
        expect(row.rowLength).toBe(1);
      } finally {
        await cql.shutdown();
      }
    } finally {
      await second.close();
    }
  });

  it('a hard time limit stores TimeLimitExceeded, acknowledges, and the single slot serves the next task', async () => {
    const hung = await producer.sendTask('it.hang');
    const next = await producer.sendTask('tasks.add', { args: [2, 3] });
    const err = (await hung.get({ timeout: 10000 }).catch((e: unknown) => e)) as TaskFailedError;
    expect([err.excType, err.excModule, err.excMessage]).toEqual(['TimeLimitExceeded', 'billiard.exceptions', [0.3]]);
    await expect(next.get({ timeout: 10000 })).resolves.toBe(5);
    await eventually(async () => (await amqp.depth(queue)) === 0);
  });

  it("a soft time limit from the call's timelimit header stops tasks.sleep with SoftTimeLimitExceeded", async () => {
    const r = await producer.sendTask('tasks.sleep', { args: [30], softTimeLimit: 0.2 });
    const started = Date.now();
    const err = (await r.get({ timeout: 10000 }).catch((e: unknown) => e)) as TaskFailedError;
    expect([err.excType, err.excModule]).toEqual(['SoftTimeLimitExceeded', 'billiard.exceptions']);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('trackStarted writes a STARTED row with pid and hostname before the SUCCESS row', async () => {
    const r = await producer.sendTask('it.started', { args: [300] });
    await eventually(async () => (await r.state()) === 'STARTED', 5000);
    await expect(r.get({ timeout: 10000 })).resolves.toBe('done');
    const history = await rows(r.id);
    expect(history.map((h) => h.status)).toEqual(['STARTED', 'SUCCESS']);
    expect(history[0].result).toEqual({ pid: process.pid, hostname: 'it@semantics' });
  });
});
