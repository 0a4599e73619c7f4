import { Injectable, Module } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import {
  AsyncResult,
  CELERY_CONFIG,
  CeleryWorker,
  ConsumerHandle,
  Delivery,
  CeleryConfigError,
  ResolvedCeleryConfig,
  CeleryModule,
  MemoryBroker,
  Broker,
  Producer,
  ResultStore,
  Task,
  TaskFailedError,
  TaskRegistrationError,
  TaskRegistry,
  TaskTimeoutError,
} from '../../../lib';
import { encodeTaskMessage } from '../../../lib/protocol/task-message';
import { FixtureTasks } from '../../support/fixture-tasks';

/**
 * The module on its embedded in-memory broker and result store: the same code paths the real
 * services use (the integration suite runs them against RabbitMQ and Cassandra).
 */
describe('CeleryModule on memory://', () => {
  let moduleRef: TestingModule;
  let producer: Producer;

  beforeEach(async () => {
    moduleRef = await Test.createTestingModule({
      imports: [CeleryModule.forRoot({})],
      providers: [FixtureTasks],
    }).compile();
    await moduleRef.init();
    producer = moduleRef.get(Producer);
  });

  afterEach(async () => {
    await moduleRef.close();
  });

  it('discovers @Task methods and lists them in the registry, with the documented default name', () => {
    expect(moduleRef.get(TaskRegistry).names()).toEqual(['FixtureTasks.add', 'celery.chord_unlock', 'tasks.customFailure', 'tasks.echo', 'tasks.failWords', 'tasks.sleep', 'tasks.sortWords']);
  });

  it('runs the sortWords walkthrough through a typed reference, positional and keyword', async () => {
    const sortWords = producer.task(FixtureTasks, 'sortWords');
    const first = await sortWords.delay('storage yay my DB is powerful results Astra', false);
    const second = await sortWords.applyAsync(['In the land of another wizards day'], { kwargs: { capitalize: true } });
    await expect(first.get({ timeout: 5000 })).resolves.toBe('Astra DB is my powerful results storage yay');
    await expect(second.get({ timeout: 5000 })).resolves.toBe('ANOTHER DAY IN LAND OF THE WIZARDS');
    expect(await first.ready()).toBe(true);
    expect(await first.state()).toBe('SUCCESS');
  });

  it('runs the method on the DI-managed instance', async () => {
    await (await producer.sendTask('tasks.sortWords', { args: ['b a'] })).get({ timeout: 5000 });
    expect(moduleRef.get(FixtureTasks).calls).toEqual(['b a']);
  });

  it('sends by name with kwargs only', async () => {
    const result = await producer.sendTask<number>('FixtureTasks.add', { kwargs: { a: 2, b: 40 } });
    await expect(result.get({ timeout: 5000 })).resolves.toBe(42);
  });

  it('stores FAILURE with Celery exception fields and get() rejects with them', async () => {
    const result = await producer.sendTask('tasks.failWords', { args: ['x y'] });
    const error = (await result.get({ timeout: 5000 }).catch((e: unknown) => e)) as TaskFailedError;
    expect(error).toBeInstanceOf(TaskFailedError);
    expect(error.state).toBe('FAILURE');
    expect(error.excType).toBe('ValueError');
    expect(error.excModule).toBe('builtins');
    expect(error.excMessage).toEqual(["cannot sort: 'x y'"]);
    expect(error.traceback).toContain('RangeError');
    expect(await result.failed()).toBe(true);
  });

  it('maps a custom JS error to a dynamic Python exception class name', async () => {
    const result = await producer.sendTask('tasks.customFailure');
    await expect(result.get({ timeout: 5000 })).rejects.toMatchObject({ excType: 'SortFailedError', excModule: 'nestjs_celery.errors' });
  });

  it('fails a call with an unexpected keyword argument as Python would (TypeError)', async () => {
    const result = await producer.sendTask('tasks.sortWords', { args: ['a'], kwargs: { reverse: true } });
    await expect(result.get({ timeout: 5000 })).rejects.toMatchObject({ excType: 'TypeError', excMessage: ["tasks.sortWords() got an unexpected keyword argument 'reverse'"] });
  });

  it('marks an unknown task FAILURE NotRegistered, rejects it, and keeps serving', async () => {
    const unknown = await producer.sendTask('tasks.noSuchTask');
    await expect(unknown.get({ timeout: 5000 })).rejects.toMatchObject({ excType: 'NotRegistered', excModule: 'celery.exceptions', excMessage: ['tasks.noSuchTask'] });
    const ok = await producer.sendTask('tasks.echo', { args: ['still here'] });
    await expect(ok.get({ timeout: 5000 })).resolves.toBe('still here');
  });

  it('rejects a malformed message without requeue and keeps serving', async () => {
    const broker = moduleRef.get(Broker) as MemoryBroker;
    const bad = encodeTaskMessage({ task: 'tasks.echo', id: 'bad-1', args: ['x'] }, { nowMicros: Date.now() * 1000, origin: 'test' });
    await broker.publish('celery', { headers: bad.amqpHeaders, properties: bad.properties, body: Buffer.from('[[1], {}') });
    const ok = await producer.sendTask('tasks.echo', { args: ['after bad'] });
    await expect(ok.get({ timeout: 5000 })).resolves.toBe('after bad');
    expect(broker.depth('celery')).toBe(0);
    expect(await producer.asyncResult('bad-1').state()).toBe('PENDING');
  });

  it('does not run a countdown task early', async () => {
    const started = Date.now();
    const result = await producer.sendTask('tasks.echo', { args: ['later'], countdown: 0.4 });
    expect(await result.state()).toBe('PENDING');
    await expect(result.get({ timeout: 5000 })).resolves.toBe('later');
    expect(Date.now() - started).toBeGreaterThanOrEqual(390);
  });

  it('stores REVOKED expired for a task that expired before it ran', async () => {
    const result = await producer.sendTask('tasks.echo', { args: ['too late'], eta: new Date(Date.now() + 300), expires: new Date(Date.now() + 100) });
    await expect(result.get({ timeout: 5000 })).rejects.toMatchObject({ state: 'REVOKED', excType: 'TaskRevokedError', excMessage: ['expired'] });
  });

  it('stores REVOKED expired on receipt for an expired ETA task, without waiting for its ETA', async () => {
    const result = await producer.sendTask('tasks.echo', { args: ['stale'], eta: new Date(Date.now() + 60_000), expires: new Date(Date.now() - 1000) });
    await expect(result.get({ timeout: 2000 })).rejects.toMatchObject({ state: 'REVOKED', excMessage: ['expired'] });
  });

  it('holds a task whose ETA is beyond setTimeout range (24.8 days) instead of running it at once', async () => {
    const far = await producer.sendTask('tasks.echo', { args: ['next month'], eta: new Date(Date.now() + 30 * 86_400_000) });
    const control = await producer.sendTask('tasks.echo', { args: ['now'] });
    await control.get({ timeout: 5000 });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await far.state()).toBe('PENDING');
  });

  it('keeps the first SUCCESS when the same task id is sent again and fails (Celery 5.7)', async () => {
    const first = await producer.sendTask('tasks.echo', { args: ['first'], taskId: 'dup-1' });
    await expect(first.get({ timeout: 5000 })).resolves.toBe('first');
    const again = await producer.sendTask('tasks.failWords', { args: ['x'], taskId: 'dup-1' });
    const control = await producer.sendTask('tasks.echo', { args: ['after'] });
    await control.get({ timeout: 5000 });
    const meta = await moduleRef.get(ResultStore).getTaskMeta('dup-1');
    expect(meta).toMatchObject({ status: 'SUCCESS', result: 'first' });
    await expect(again.get({ timeout: 1000 })).resolves.toBe('first');
    const broker = moduleRef.get(Broker) as MemoryBroker;
    expect(broker.depth('celery')).toBe(0);
  });

  it("by default (successCheck 'auto') a later SUCCESS of a task id published twice is stored after the first, without a read", async () => {
    const store = moduleRef.get(ResultStore);
    await (await producer.sendTask('tasks.echo', { args: ['one'], taskId: 'dup-2' })).get({ timeout: 5000 });
    const reads = jest.spyOn(store, 'storeUnlessSucceeded');
    try {
      await producer.sendTask('tasks.echo', { args: ['two'], taskId: 'dup-2' });
      await (await producer.sendTask('tasks.echo', { args: ['flush'] })).get({ timeout: 5000 });
      expect(await store.getTaskMeta('dup-2')).toMatchObject({ status: 'SUCCESS', result: 'two' });
      expect(reads).not.toHaveBeenCalled();
    } finally {
      reads.mockRestore();
    }
  });

  it("with worker.successCheck 'always', a stored SUCCESS is kept when a later run of the same id succeeds with another value (Celery 5.7 to the letter)", async () => {
    const app = await Test.createTestingModule({ imports: [CeleryModule.forRoot({ worker: { successCheck: 'always' } })], providers: [FixtureTasks] }).compile();
    await app.init();
    try {
      const p = app.get(Producer);
      await (await p.sendTask('tasks.echo', { args: ['one'], taskId: 'dup-4' })).get({ timeout: 5000 });
      await p.sendTask('tasks.echo', { args: ['two'], taskId: 'dup-4' });
      await (await p.sendTask('tasks.echo', { args: ['flush'] })).get({ timeout: 5000 });
      expect(await app.get(ResultStore).getTaskMeta('dup-4')).toMatchObject({ status: 'SUCCESS', result: 'one' });
    } finally {
      await app.close();
    }
  });

  it("with worker.successCheck 'redelivered', a task id published twice whose second run fails replaces the SUCCESS (no read before the write)", async () => {
    const app = await Test.createTestingModule({ imports: [CeleryModule.forRoot({ worker: { successCheck: 'redelivered' } })], providers: [FixtureTasks] }).compile();
    await app.init();
    try {
      const p = app.get(Producer);
      await (await p.sendTask('tasks.echo', { args: ['one'], taskId: 'dup-3' })).get({ timeout: 5000 });
      await p.sendTask('tasks.failWords', { args: ['x'], taskId: 'dup-3' });
      await (await p.sendTask('tasks.echo', { args: ['flush'] })).get({ timeout: 5000 });
      expect(await app.get(ResultStore).getTaskMeta('dup-3')).toMatchObject({ status: 'FAILURE' });
    } finally {
      await app.close();
    }
  });

  it('rejects get() with TaskTimeoutError when no result comes', async () => {
    const result = producer.asyncResult('never-sent');
    await expect(result.get({ timeout: 150 })).rejects.toBeInstanceOf(TaskTimeoutError);
    expect(await result.state()).toBe('PENDING');
  });

  it('stores no result for ignoreResult tasks', async () => {
    const result = await producer.sendTask('tasks.echo', { args: ['quiet'], ignoreResult: true });
    const control = await producer.sendTask('tasks.echo', { args: ['loud'] });
    await control.get({ timeout: 5000 });
    expect(await result.state()).toBe('PENDING');
  });

  it('exposes the ResultStore for reading any task id', async () => {
    const result = await producer.sendTask('tasks.echo', { args: [{ nested: [1, 'two', null] }] });
    await result.get({ timeout: 5000 });
    const meta = await moduleRef.get(ResultStore).getTaskMeta(result.id);
    expect(meta).toMatchObject({ status: 'SUCCESS', result: { nested: [1, 'two', null] }, traceback: null, children: [] });
  });
});

describe('CeleryModule configuration', () => {
  it('forRootAsync builds the options from an injected provider', async () => {
    @Injectable()
    class SettingsService {
      readonly broker = 'memory://';
    }
    @Module({ providers: [SettingsService], exports: [SettingsService] })
    class SettingsModule {}
    const moduleRef = await Test.createTestingModule({
      imports: [
        CeleryModule.forRootAsync({
          imports: [SettingsModule],
          inject: [SettingsService],
          useFactory: (settings: SettingsService) => ({ brokerUrl: settings.broker, defaultQueue: 'from-factory' }),
        }),
      ],
      providers: [FixtureTasks],
    }).compile();
    await moduleRef.init();
    expect(moduleRef.get<ResolvedCeleryConfig>(CELERY_CONFIG).defaultQueue).toBe('from-factory');
    // The worker consumes the default queue the factory chose, so the task runs.
    const result = await moduleRef.get(Producer).sendTask('tasks.echo', { args: ['async'] });
    await expect(result.get({ timeout: 5000 })).resolves.toBe('async');
    await moduleRef.close();
  });

  it('fails at startup on an unknown option, naming the key', async () => {
    await expect(
      Test.createTestingModule({ imports: [CeleryModule.forRoot({ brokerURL: 'memory://' } as never)] }).compile(),
    ).rejects.toThrow(CeleryConfigError);
    await expect(
      Test.createTestingModule({ imports: [CeleryModule.forRoot({ cassandra_tabel: 'x' } as never)] }).compile(),
    ).rejects.toThrow(/cassandra_tabel/);
  });

  it('fails at startup when two tasks share a name', async () => {
    @Injectable()
    class Duplicate {
      @Task('tasks.sortWords')
      other(): string {
        return '';
      }
    }
    const moduleRef = await Test.createTestingModule({ imports: [CeleryModule.forRoot({})], providers: [FixtureTasks, Duplicate] }).compile();
    const error = await moduleRef.init().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TaskRegistrationError);
    expect((error as Error).message).toMatch(/"tasks\.sortWords" is used twice: by (FixtureTasks\.sortWords and by Duplicate\.other|Duplicate\.other and by FixtureTasks\.sortWords)/);
    // close() re-awaits the failed initialisation.
    await moduleRef.close().catch(() => undefined);
  });

  it('accepts a Python celeryconfig as written', async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [CeleryModule.forRoot({ broker_url: 'memory://', result_backend: 'memory://', task_serializer: 'json', result_serializer: 'json', accept_content: ['json'], enable_utc: true })],
      providers: [FixtureTasks],
    }).compile();
    await moduleRef.init();
    const result = await moduleRef.get(Producer).sendTask('tasks.sortWords', { args: ['b a'] });
    await expect(result.get({ timeout: 5000 })).resolves.toBe('a b');
    await moduleRef.close();
  });
});

describe('worker limits', () => {
  it('rejects a message larger than worker.maxMessageBytes without requeue, and keeps serving', async () => {
    const moduleRef = await Test.createTestingModule({ imports: [CeleryModule.forRoot({ worker: { maxMessageBytes: 1000 } })], providers: [FixtureTasks] }).compile();
    await moduleRef.init();
    try {
      const producer = moduleRef.get(Producer);
      const big = await producer.sendTask('tasks.echo', { args: ['x'.repeat(5000)] });
      const small = await producer.sendTask('tasks.echo', { args: ['small'] });
      await expect(small.get({ timeout: 5000 })).resolves.toBe('small');
      expect(await big.state()).toBe('PENDING');
      expect((moduleRef.get(Broker) as MemoryBroker).depth('celery')).toBe(0);
    } finally {
      await moduleRef.close();
    }
  });
});

/**
 * On the embedded default a queue exists once either side declares it, as on RabbitMQ: a task sent
 * before any worker consumes its queue waits there instead of being dropped (issue 11 item 6).
 */
describe('CeleryModule on memory://: tasks sent before a worker consumes their queue', () => {
  it('runs a task sent from a provider\'s onModuleInit, before the worker starts consuming', async () => {
    @Injectable()
    class SendsAtInit {
      sent: Promise<AsyncResult<string>> | null = null;
      constructor(private readonly producer: Producer) {}
      onModuleInit(): void {
        this.sent = this.producer.sendTask<string>('tasks.echo', { args: ['from onModuleInit'] });
      }
    }
    const moduleRef = await Test.createTestingModule({ imports: [CeleryModule.forRoot({})], providers: [FixtureTasks, SendsAtInit] }).compile();
    await moduleRef.init();
    try {
      const result = await (moduleRef.get(SendsAtInit).sent as Promise<AsyncResult<string>>);
      await expect(result.get({ timeout: 2000 })).resolves.toBe('from onModuleInit');
    } finally {
      await moduleRef.close();
    }
  });

  it('keeps a task sent to a queue the worker does not consume, until a consumer of that queue comes', async () => {
    const moduleRef = await Test.createTestingModule({ imports: [CeleryModule.forRoot({})], providers: [FixtureTasks] }).compile();
    await moduleRef.init();
    try {
      const result = await moduleRef.get(Producer).sendTask('tasks.echo', { args: ['elsewhere'], queue: 'not-consumed' });
      const broker = moduleRef.get(Broker) as MemoryBroker;
      expect(broker.depth('not-consumed')).toBe(1);
      let handle: ConsumerHandle | null = null;
      const delivered = new Promise<Delivery>((resolve) => {
        void broker.consume('not-consumed', 1, resolve).then((h) => (handle = h));
      });
      const delivery = await delivered;
      expect(delivery.headers).toMatchObject({ task: 'tasks.echo', id: result.id });
      delivery.ack();
      await (handle as ConsumerHandle | null)?.cancel();
      expect(broker.depth('not-consumed')).toBe(0);
    } finally {
      await moduleRef.close();
    }
  });

  it('with worker.enabled false, runs the tasks sent earlier once a worker is started', async () => {
    const moduleRef = await Test.createTestingModule({ imports: [CeleryModule.forRoot({ worker: { enabled: false } })], providers: [FixtureTasks] }).compile();
    await moduleRef.init();
    try {
      const result = await moduleRef.get(Producer).sendTask('tasks.echo', { args: ['waited'] });
      await expect(result.get({ timeout: 200 })).rejects.toBeInstanceOf(TaskTimeoutError);
      await moduleRef.get(CeleryWorker).start();
      await expect(result.get({ timeout: 2000 })).resolves.toBe('waited');
    } finally {
      await moduleRef.close();
    }
  });
});
