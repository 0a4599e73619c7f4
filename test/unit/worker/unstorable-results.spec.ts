import { Logger } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import { errors, types } from 'cassandra-driver';
import { Broker, CeleryModule, CeleryWorker, Delivery, MemoryBroker, Producer, ResultStore, TaskFailedError } from '../../../lib';
import type { ResultToStore } from '../../../lib/protocol/result-row';
import { MemoryResultStore } from '../../../lib/results/memory.result-store';
import { ResultTasks } from '../../support/result-tasks';

/** Records how each message was settled. */
class RecordingBroker extends MemoryBroker {
  readonly settled: { id: string; how: string }[] = [];
  override consume(queue: string, prefetch: number, onMessage: (delivery: Delivery) => void) {
    return super.consume(queue, prefetch, (delivery) => {
      const id = String(delivery.headers?.id);
      onMessage(
        Object.assign(Object.create(delivery) as Delivery, {
          ack: () => (this.settled.push({ id, how: 'ack' }), delivery.ack()),
          reject: (requeue: boolean) => (this.settled.push({ id, how: requeue ? 'requeue' : 'reject' }), delivery.reject(requeue)),
        }),
      );
    });
  }
}

/** A memory store that refuses every write of the task ids in `denied`, as Cassandra does for a role without MODIFY. */
class DenyingStore extends MemoryResultStore {
  readonly denied = new Set<string>();
  writes = 0;
  override async store(result: ResultToStore): Promise<void> {
    this.writes++;
    if (this.denied.has(result.taskId)) {
      throw new errors.ResponseError(types.responseErrorCodes.unauthorized, 'User worker has no MODIFY permission on <table celery_test.celery_taskmeta> or any of its parents');
    }
    return super.store(result);
  }
}

describe('Worker: a result that can never be stored', () => {
  let moduleRef: TestingModule;
  let broker: RecordingBroker;
  let store: DenyingStore;
  let errorLogs: string[];

  beforeEach(async () => {
    broker = new RecordingBroker();
    store = new DenyingStore({ maxResultBytes: 4096 });
    moduleRef = await Test.createTestingModule({
      imports: [CeleryModule.forRoot({ worker: { maxResultBytes: 4096 } })],
      providers: [ResultTasks],
    })
      .overrideProvider(Broker)
      .useValue(broker)
      .overrideProvider(ResultStore)
      .useValue(store)
      .compile();
    errorLogs = [];
    jest.spyOn(Logger.prototype, 'error').mockImplementation((...args: unknown[]) => void errorLogs.push(String(args[0])));
    jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    jest.spyOn(Logger.prototype, 'log').mockImplementation(() => undefined);
    await broker.connect();
    await moduleRef.init();
  });

  afterEach(async () => {
    await moduleRef.close();
    jest.restoreAllMocks();
  });

  it('stores a ValueError FAILURE naming the size and worker.maxResultBytes, rejects the message without requeue, and runs the next task', async () => {
    const producer = moduleRef.get(Producer);
    const big = await producer.sendTask('tasks.bigResult', { args: [10_000] });
    const error = (await big.get({ timeout: 5000 }).catch((e: unknown) => e)) as TaskFailedError;
    expect(error).toBeInstanceOf(TaskFailedError);
    expect(error).toMatchObject({ excType: 'ValueError', excModule: 'builtins' });
    expect(String(error.excMessage[0])).toMatch(new RegExp(`^The SUCCESS result of task ${big.id} was not stored: The result row of task ${big.id} is 100\\d\\d bytes, over worker\\.maxResultBytes \\(4096 bytes\\)$`));
    const next = await producer.sendTask('tasks.small', { args: ['still running'] });
    await expect(next.get({ timeout: 5000 })).resolves.toBe('still running');
    await waitFor(() => broker.settled.length === 2); // the result is stored (get() wakes) just before the ack
    expect(broker.settled).toEqual([
      { id: big.id, how: 'reject' },
      { id: next.id, how: 'ack' },
    ]);
    expect(errorLogs.some((l) => l.includes(`tasks.bigResult[${big.id}]`) && l.includes('rejected without requeue'))).toBe(true);
  });

  it('rejects without requeue, with an error naming the task, its id and the reason, when not even a FAILURE can be stored; never loops', async () => {
    const producer = moduleRef.get(Producer);
    const worker = moduleRef.get(CeleryWorker);
    expect(worker).toBeDefined();
    // the id is known before sending: deny its writes from the start
    const id = 'denied-task-1';
    store.denied.add(id);
    await producer.sendTask('tasks.small', { args: ['lost'], taskId: id });
    await waitFor(() => broker.settled.length === 1);
    expect(broker.settled).toEqual([{ id, how: 'reject' }]);
    const writes = store.writes;
    expect(writes).toBe(2); // the result, then the FAILURE in its place
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(store.writes).toBe(writes);
    const logged = errorLogs.find((l) => l.includes(`tasks.small[${id}]`));
    expect(logged).toMatch(/cannot be stored: .*no MODIFY permission.*ResponseError unauthorized \(0x2100\).*no FAILURE could be stored either; message rejected without requeue/);
    const next = await producer.sendTask('tasks.small', { args: ['next'] });
    await expect(next.get({ timeout: 5000 })).resolves.toBe('next');
  });
});

async function waitFor(check: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
