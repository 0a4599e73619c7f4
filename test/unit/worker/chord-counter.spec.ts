import { Injectable } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import { setTimeout as sleep } from 'node:timers/promises';
import { Broker, CeleryModule, CeleryModuleOptions, Producer, ResultStore, Task, TaskContext } from '../../../lib';
import { MemoryBroker } from '../../../lib/broker/memory.broker';
import type { Delivery } from '../../../lib/broker/broker.interface';
import { fromAmqpFieldValue } from '../../../lib/protocol/amqp-field-table';
import { CeleryWorker } from '../../../lib/worker/celery.worker';

let bodyRuns: { values: number[]; parentId: string | null }[] = [];
let headerRuns: string[] = [];
let errbacks: string[] = [];

@Injectable()
class ChordTasks {
  @Task('cc.square')
  async square(x: number, delayMs: number, @TaskContext() ctx: TaskContext): Promise<number> {
    headerRuns.push(ctx.id);
    await sleep(delayMs);
    return x * x;
  }

  @Task('cc.fail')
  fail(why: string): never {
    throw new RangeError(why);
  }

  @Task('cc.collect')
  collect(values: number[], @TaskContext() ctx: TaskContext): number[] {
    bodyRuns.push({ values, parentId: ctx.parentId });
    return values;
  }

  @Task('cc.onError')
  onError(failedId: string): string {
    errbacks.push(failedId);
    return failedId;
  }
}

/** Chords in counter mode on the embedded transports: no chord_unlock, the last header task sends the body. */
describe('chords completed by their header tasks (counter mode, memory transports)', () => {
  let moduleRef: TestingModule;
  let producer: Producer;
  let published: Record<string, unknown>[];

  async function start(options: Partial<CeleryModuleOptions> = {}): Promise<void> {
    moduleRef = await Test.createTestingModule({ imports: [CeleryModule.forRoot({ resultPollIntervalMs: 5, ...options })], providers: [ChordTasks] }).compile();
    await moduleRef.init();
    producer = moduleRef.get(Producer);
    const broker = moduleRef.get(Broker);
    const publish = broker.publish.bind(broker);
    jest.spyOn(broker, 'publish').mockImplementation(async (queue, message, route) => {
      published.push({ ...(fromAmqpFieldValue(message.headers) as Record<string, unknown>), body: JSON.parse(message.body.toString()) });
      return publish(queue, message, route);
    });
  }

  beforeEach(() => {
    bodyRuns = [];
    headerRuns = [];
    errbacks = [];
    published = [];
  });

  afterEach(async () => {
    await moduleRef?.close();
  });

  const sq = (x: number, delayMs = 0) => producer.signatureByName('cc.square', [x, delayMs]);
  const collect = () => producer.signatureByName<number[]>('cc.collect');

  it('sends no chord_unlock; the body runs once, with the values in header order, sent by the last header task', async () => {
    await start();
    // the first header tasks finish last
    const result = await producer.chord(
      [1, 2, 3, 4, 5, 6].map((x) => sq(x, (6 - x) * 15)),
      collect(),
      { completion: 'counter' },
    );
    await expect(result.get({ timeout: 5000 })).resolves.toEqual([1, 4, 9, 16, 25, 36]);
    await sleep(100);
    expect(bodyRuns).toHaveLength(1);
    expect(published.filter((p) => p.task === 'celery.chord_unlock')).toEqual([]);
    const headers = published.filter((p) => p.task === 'cc.square');
    expect(headers.map((h) => h.nestjs_chord_size)).toEqual([6, 6, 6, 6, 6, 6]);
    // the body's parent is the header task that finished last: the first one
    expect(bodyRuns[0].parentId).toBe(headers[0].id);
  });

  it('the module option chords.completion: counter makes it the default; a call can still ask for chord_unlock', async () => {
    await start({ chords: { completion: 'counter' } });
    await expect((await producer.chord([sq(2), sq(3)], collect())).get({ timeout: 5000 })).resolves.toEqual([4, 9]);
    expect(published.filter((p) => p.task === 'celery.chord_unlock')).toEqual([]);
    await expect((await producer.chord([sq(4)], collect(), { completion: 'unlock', interval: 0.05 })).get({ timeout: 5000 })).resolves.toEqual([16]);
    expect(published.filter((p) => p.task === 'celery.chord_unlock').length).toBeGreaterThanOrEqual(1);
  });

  it('a failed header task: ChordError stored on the body, the body never runs, its errbacks are sent once', async () => {
    await start();
    const body = collect().linkError(producer.signatureByName('cc.onError'));
    const result = await producer.chord([sq(2, 30), producer.signatureByName('cc.fail', ['header broke']), sq(3, 60)], body, { completion: 'counter' });
    await expect(result.get({ timeout: 5000 })).rejects.toThrow(/ChordError\(ValueError\('header broke'\)\)/);
    const meta = await moduleRef.get(ResultStore).getTaskMeta(result.id);
    expect(meta.status).toBe('FAILURE');
    expect(meta.result).toMatchObject({ exc_type: 'ChordError', exc_module: 'celery.exceptions' });
    await sleep(150);
    expect(bodyRuns).toEqual([]);
    expect(errbacks).toEqual([result.id]);
  });

  it('a header task redelivered after its worker died with its SUCCESS stored still completes the chord (the body is sent before the ack)', async () => {
    await start({ worker: { enabled: false } });
    const store = moduleRef.get(ResultStore);
    const broker = moduleRef.get(Broker) as MemoryBroker;
    const result = await producer.chord([sq(2), sq(3), sq(4)], collect(), { completion: 'counter' });
    // a worker that died: it took every header message, ran and stored the last one, acknowledged nothing
    const taken: Delivery[] = [];
    const dead = await broker.consume('celery', 10, (d) => void taken.push(d));
    await sleep(20);
    await dead.cancel();
    expect(taken).toHaveLength(3);
    const lastId = String((fromAmqpFieldValue(taken[2].headers as never) as Record<string, unknown>).id);
    await store.store({ taskId: lastId, status: 'SUCCESS', result: 16, traceback: null, children: [] });
    broker.simulateChannelLoss('celery');
    // a new worker gets the three messages again, redelivered
    await moduleRef.get(CeleryWorker).start();
    await expect(result.get({ timeout: 3000 })).resolves.toEqual([4, 9, 16]);
    expect(headerRuns).toHaveLength(2); // the stored one is not run again
    expect(bodyRuns).toHaveLength(1);
  });

  it('refuses counter mode without a result backend, naming why', async () => {
    await start({ resultBackend: 'none', worker: { enabled: false } });
    await expect(producer.chord([sq(1)], collect(), { completion: 'counter' })).rejects.toThrow(/completion 'counter'.*needs a result backend/);
  });
});
