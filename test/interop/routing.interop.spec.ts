import { Logger } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import { CeleryModule, Producer, PythonCeleryConfig } from '../../lib';
import { DELAY_BITS, DELAYED_DELIVERY_EXCHANGE } from '../../lib/protocol/routing';
import { FixtureTasks } from '../support/fixture-tasks';
import { KEYSPACE, pythonServiceKeys, RawAmqp, rawCassandra, uniqueName } from '../support/real-services';
import { ensurePythonCelery, PythonEnv, PythonWorker, pythonClient } from './support/python-celery';

interface Outcome {
  id: string;
  status: string;
  result?: { json?: unknown };
}

/**
 * A Python Celery 5.7 worker and a NestJS worker with the same routing settings (one celeryconfig,
 * passed to both as it is) share the same queues: a classic direct queue, an x-max-priority queue,
 * a quorum queue behind a topic exchange (which turns on native delayed delivery for the whole
 * configuration) and a classic queue behind a topic exchange. Each side declares them, and the
 * celery_delayed_* topology, in both start orders, without PRECONDITION_FAILED; tasks cross both
 * ways, countdowns through the delayed-delivery topology included.
 */
describe('interop: shared queue topology, quorum queues and native delayed delivery', () => {
  const table = uniqueName('interop_routing');
  const logged: string[] = [];
  let cleanupQueues: string[] = [];
  let cleanupExchanges: string[] = [];

  /** The settings of one start order, with queue names of its own. */
  function settings(tag: string) {
    const q = (name: string) => {
      const full = uniqueName(`rt${tag}_${name}`);
      cleanupQueues.push(full);
      return full;
    };
    const names = { plain: q('plain'), prio: q('prio'), quorum: q('quorum'), topic: q('topic'), js: q('js'), py: q('py') };
    const topicX = `${names.topic}_x`;
    cleanupExchanges.push(topicX);
    const topicQuorum = (name: string) => ({ exchange: name, exchange_type: 'topic', routing_key: name, queue_arguments: { 'x-queue-type': 'quorum' } });
    const extra = {
      task_default_queue: names.plain,
      task_queues: {
        [names.plain]: { exchange: names.plain, routing_key: names.plain },
        [names.prio]: { exchange: names.prio, routing_key: names.prio, queue_arguments: { 'x-max-priority': 10 } },
        [names.quorum]: topicQuorum(names.quorum),
        [names.topic]: { exchange: topicX, exchange_type: 'topic', routing_key: `${names.topic}.#` },
        [names.js]: topicQuorum(names.js),
        [names.py]: topicQuorum(names.py),
      },
    };
    const shared = [names.plain, names.prio, names.quorum, names.topic];
    return { names, extra, shared, env: { pyQueue: names.py, table, workerQueues: [...shared, names.py], extraConfig: extra } as PythonEnv };
  }

  function nestConfig(s: ReturnType<typeof settings>): PythonCeleryConfig {
    return {
      ...pythonServiceKeys(table),
      task_default_queue: s.extra.task_default_queue,
      task_queues: s.extra.task_queues,
    };
  }

  async function nestApp(s: ReturnType<typeof settings>): Promise<TestingModule> {
    const app = await Test.createTestingModule({
      imports: [CeleryModule.forRoot({ ...nestConfig(s), resultPollIntervalMs: 50, worker: { queues: [...s.shared, s.names.js] } })],
      providers: [FixtureTasks],
    }).compile();
    await app.init();
    return app;
  }

  /** Deletes the celery_delayed_* topology, so that the side started first declares it. */
  async function deleteDelayedTopology(): Promise<void> {
    const amqp = await RawAmqp.open();
    try {
      for (let l = 0; l < DELAY_BITS; l++) {
        await amqp.channel.deleteQueue(`celery_delayed_${l}`);
        await amqp.channel.deleteExchange(`celery_delayed_${l}`);
      }
      await amqp.channel.deleteExchange(DELAYED_DELIVERY_EXCHANGE);
    } finally {
      await amqp.close();
    }
  }

  /** Echo tasks to every shared queue from both sides: each may be run by either worker. */
  async function crossShared(s: ReturnType<typeof settings>, producer: Producer): Promise<void> {
    const fromPython = await pythonClient<Outcome[]>(s.env, {
      op: 'calls',
      calls: s.shared.map((queue) => ({ task: 'tasks.echo', args: [`py→${queue}`], queue, options: queue === s.names.prio ? { priority: 7 } : {} })),
    });
    expect(fromPython.map((o) => [o.status, o.result?.json])).toEqual(s.shared.map((queue) => ['SUCCESS', `py→${queue}`]));
    const fromNest = await Promise.all(s.shared.map((queue) => producer.sendTask('tasks.echo', { args: [`js→${queue}`], queue, priority: queue === s.names.prio ? 7 : undefined })));
    await expect(Promise.all(fromNest.map((r) => r.get({ timeout: 30000 })))).resolves.toEqual(s.shared.map((queue) => `js→${queue}`));
  }

  beforeAll(() => {
    ensurePythonCelery();
    const record = (message: unknown) => void logged.push(String(message));
    jest.spyOn(Logger.prototype, 'warn').mockImplementation(record);
    jest.spyOn(Logger.prototype, 'error').mockImplementation(record);
  }, 240000);

  afterAll(async () => {
    jest.restoreAllMocks();
    const amqp = await RawAmqp.open();
    try {
      for (const q of cleanupQueues) {
        await amqp.channel.deleteQueue(q);
        await amqp.channel.deleteExchange(q);
      }
      for (const e of cleanupExchanges) await amqp.channel.deleteExchange(e);
    } finally {
      await amqp.close();
    }
    const cql = await rawCassandra();
    await cql.execute(`DROP TABLE IF EXISTS ${KEYSPACE}.${table}`);
    await cql.shutdown();
  });

  const refused = () => logged.filter((m) => /PRECONDITION_FAILED|refused|Could not declare/.test(m));

  it('Python worker first, then NestJS: same declarations; tasks cross both ways; a NestJS countdown reaches the Python worker through celery_delayed_*', async () => {
    const s = settings('a');
    await deleteDelayedTopology();
    const worker = await PythonWorker.start(s.env);
    let app: TestingModule | undefined;
    try {
      app = await nestApp(s);
      const producer = app.get(Producer);
      await crossShared(s, producer);
      const sent = Date.now();
      const delayed = await producer.sendTask('tasks.sleep', { args: [0], queue: s.names.py, countdown: 2 });
      await expect(delayed.get({ timeout: 30000 })).resolves.toBe(0);
      expect(Date.now() - sent).toBeGreaterThanOrEqual(1900);
      expect(refused()).toEqual([]);
      // (Python, started first, could not bind the NestJS-only queue it does not declare: Celery logs that and goes on.)
      expect(worker.log()).not.toMatch(/PRECONDITION_FAILED|Failed to declare/);
    } finally {
      await app?.close();
      await worker.stop();
    }
  }, 120000);

  it('NestJS first, then the Python worker: a Python countdown reaches the NestJS worker through the topology NestJS declared; the Python worker then starts cleanly', async () => {
    const s = settings('b');
    await deleteDelayedTopology();
    const app = await nestApp(s);
    let worker: PythonWorker | undefined;
    try {
      // Python's client publishes a countdown to celery_delayed_27 (quorum configured, topic exchange); only NestJS declared it.
      const [out] = await pythonClient<Outcome[]>(s.env, { op: 'calls', calls: [{ task: 'FixtureTasks.add', args: [2, 3], queue: s.names.js, options: { countdown: 2 } }] });
      expect(out).toMatchObject({ status: 'SUCCESS', result: { json: 5 } });
      worker = await PythonWorker.start(s.env);
      await crossShared(s, app.get(Producer));
      expect(refused()).toEqual([]);
      expect(worker.log()).not.toMatch(/PRECONDITION_FAILED|Failed to declare|Failed to bind/);
    } finally {
      await worker?.stop();
      await app.close();
    }
  }, 120000);
});
