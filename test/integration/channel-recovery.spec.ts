import { Injectable } from '@nestjs/common';
import { Test, TestingModule } from '@nestjs/testing';
import { CeleryBrokerRefusedError, CeleryModule, CeleryModuleOptions, Producer, Task } from '../../lib';
import { closeConnections, rabbitmqctl, withConsumerTimeout } from '../support/rabbitmq-admin';
import { eventually, RawAmqp, realOptions, removeQueueAndTable, uniqueName } from '../support/real-services';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Tasks that count their runs, so a task run twice shows. */
@Injectable()
class CountingTasks {
  readonly runs = new Map<string, number>();

  private count(key: string): number {
    const n = (this.runs.get(key) ?? 0) + 1;
    this.runs.set(key, n);
    return n;
  }

  @Task('recovery.echo')
  echo(value: string): string {
    this.count(value);
    return value;
  }

  /** Takes `ms` the first time; a second run of the same key fails (at once), so running twice cannot pass unseen. */
  @Task('recovery.slowOnce')
  async slowOnce(key: string, ms: number): Promise<string> {
    if (this.count(key) > 1) throw new Error(`ran twice: ${key}`);
    await sleep(ms);
    return `done ${key}`;
  }
}

/**
 * Issue 11 items 1–3 on the real RabbitMQ: held ETA tasks raise the prefetch of the running
 * consumer (and only by what is held now, after a reconnect too); a channel the server closes
 * (consumer_timeout) or a consumer it cancels (queue deleted) consumes again; a refused
 * declaration fails its own publish at once and leaves every other publish working; work of a
 * closed channel is dropped or finishes without running twice.
 */
describe('channels the broker closes, and ETA tasks that must not stall the queue (real RabbitMQ)', () => {
  const queue = uniqueName('it_chan');
  const table = uniqueName('it_chan');
  const apps: TestingModule[] = [];

  afterEach(async () => {
    for (const app of apps.splice(0)) await app.close();
    const amqp = await RawAmqp.open();
    try {
      await amqp.channel.purgeQueue(queue).catch(() => undefined);
    } finally {
      await amqp.close().catch(() => undefined);
    }
  });

  afterAll(async () => {
    await removeQueueAndTable(queue, table);
  });

  async function worker(extra: Partial<CeleryModuleOptions> = {}): Promise<{ tasks: CountingTasks; producer: Producer }> {
    const app = await Test.createTestingModule({
      imports: [CeleryModule.forRoot(realOptions(queue, table, { worker: { concurrency: 4, prefetch: 4 }, ...extra }))],
      providers: [CountingTasks],
    }).compile();
    apps.push(app);
    await app.init();
    return { tasks: app.get(CountingTasks), producer: app.get(Producer) };
  }

  async function client(extra: Partial<CeleryModuleOptions> = {}): Promise<Producer> {
    const app = await Test.createTestingModule({ imports: [CeleryModule.forRoot(realOptions(queue, table, { worker: { enabled: false }, ...extra }))] }).compile();
    apps.push(app);
    await app.init();
    return app.get(Producer);
  }

  /** The global prefetch (basic.qos global) of the channels consuming `queue`'s worker, as RabbitMQ reports it. */
  async function globalPrefetches(): Promise<number[]> {
    const out = await rabbitmqctl('list_channels', '--quiet', '--no-table-headers', 'consumer_count', 'global_prefetch_count');
    return out
      .trim()
      .split('\n')
      .map((line) => line.trim().split(/\s+/).map(Number))
      .filter(([consumers]) => consumers > 0)
      .map(([, prefetch]) => prefetch);
  }

  it('runs immediate tasks at once behind more held ETA tasks than the prefetch, and raises the prefetch only by what is held, after a reconnect too', async () => {
    const { tasks, producer } = await worker();
    const later = await Promise.all(Array.from({ length: 12 }, (_, i) => producer.sendTask('recovery.echo', { args: [`later-${i}`], countdown: 90 })));
    const now = await Promise.all(Array.from({ length: 8 }, (_, i) => producer.sendTask('recovery.echo', { args: [`now-${i}`] })));
    const started = Date.now();
    await expect(Promise.all(now.map((r) => r.get({ timeout: 20000 })))).resolves.toEqual(now.map((_, i) => `now-${i}`));
    expect(Date.now() - started).toBeLessThan(15000); // the countdowns are 90 s away
    await eventually(async () => (await globalPrefetches()).includes(4 + 12), 10000);

    // A lost connection requeues the 12 held tasks; the new channel counts them once, not on top of the old holds.
    await closeConnections('test: connection cut while ETA tasks are held');
    await eventually(async () => (await globalPrefetches()).includes(4 + 12), 20000);
    expect(await globalPrefetches()).not.toContain(4 + 24);
    const after = await producer.sendTask('recovery.echo', { args: ['after-reconnect'] });
    await expect(after.get({ timeout: 20000 })).resolves.toBe('after-reconnect');
    for (const r of later) expect(await r.state()).toBe('PENDING');
    expect([...tasks.runs.keys()].filter((k) => k.startsWith('later-'))).toEqual([]);
  }, 90000);

  it('consumes again after RabbitMQ closes the channel for a delivery held beyond consumer_timeout, and runs the held ETA task once', async () => {
    await withConsumerTimeout(2000, async () => {
      const { tasks, producer } = await worker();
      const held = await producer.sendTask('recovery.echo', { args: ['held'], countdown: 6 });
      await sleep(3500); // the channel holding it has been closed with 406 by now (timeout 2 s, checked every 0.5 s)
      const next = await producer.sendTask('recovery.echo', { args: ['next'] });
      await expect(next.get({ timeout: 15000 })).resolves.toBe('next');
      await expect(held.get({ timeout: 20000 })).resolves.toBe('held');
      expect(tasks.runs.get('held')).toBe(1);
    });
  }, 60000);

  it('lets a task still running when its channel closes finish without running it again, and keeps its SUCCESS', async () => {
    await withConsumerTimeout(2000, async () => {
      const { tasks, producer } = await worker();
      const slow = await producer.sendTask('recovery.slowOnce', { args: ['long', 5000] });
      await expect(slow.get({ timeout: 30000 })).resolves.toBe('done long');
      await sleep(1000); // the redelivered copy, if it ran, would have failed by now
      expect(tasks.runs.get('long')).toBe(1);
      expect(await slow.state()).toBe('SUCCESS');
      const next = await producer.sendTask('recovery.echo', { args: ['after-long'] });
      await expect(next.get({ timeout: 15000 })).resolves.toBe('after-long');
    });
  }, 60000);

  it('declares its queue and consumes again when the broker cancels the consumer (queue deleted)', async () => {
    const { producer } = await worker();
    const first = await producer.sendTask('recovery.echo', { args: ['before-delete'] });
    await expect(first.get({ timeout: 10000 })).resolves.toBe('before-delete');
    const amqp = await RawAmqp.open();
    try {
      await amqp.channel.deleteQueue(queue);
      await eventually(async () => {
        const probe = await RawAmqp.open();
        probe.channel.on('error', () => undefined); // the 404 below closes the probe's channel
        try {
          return (await probe.channel.checkQueue(queue)).consumerCount === 1;
        } catch {
          return false; // 404 until the worker has declared it again
        } finally {
          await probe.close().catch(() => undefined);
        }
      }, 15000);
    } finally {
      await amqp.close();
    }
    const second = await producer.sendTask('recovery.echo', { args: ['after-delete'] });
    await expect(second.get({ timeout: 10000 })).resolves.toBe('after-delete');
  }, 60000);

  it('publishes to a queue deleted under it: the message is returned unroutable, the queue declared again and the message queued', async () => {
    const producer = await client();
    await producer.sendTask('recovery.echo', { args: ['declares'] });
    const amqp = await RawAmqp.open();
    try {
      await amqp.channel.deleteQueue(queue);
      const sent = await producer.sendTask('recovery.echo', { args: ['into the void?'] });
      const msg = await amqp.channel.get(queue, { noAck: true });
      expect(msg && msg.properties.headers?.id).toBe(sent.id);
    } finally {
      await amqp.close();
    }
  }, 30000);

  it('fails a publish to a queue declared with other arguments at once, naming the queue and the reason, and keeps publishing elsewhere', async () => {
    const other = uniqueName('it_chan_mismatch');
    const amqp = await RawAmqp.open();
    try {
      await amqp.channel.assertQueue(other, { durable: true, arguments: { 'x-max-priority': 10 } });
      const producer = await client({ publishTimeoutMs: 8000 });
      const started = Date.now();
      const error = (await producer.sendTask('recovery.echo', { args: ['x'], queue: other }).catch((e: unknown) => e)) as Error;
      expect(error).toBeInstanceOf(CeleryBrokerRefusedError);
      expect(error.message).toContain(other);
      expect(error.message).toMatch(/PRECONDITION_FAILED/);
      expect(Date.now() - started).toBeLessThan(3000);
      const okStarted = Date.now();
      const ok = await producer.sendTask('recovery.echo', { args: ['still publishing'] });
      expect(Date.now() - okStarted).toBeLessThan(3000);
      expect(ok.id).toBeTruthy();
    } finally {
      await amqp.deleteQueues(other).catch(() => undefined);
      await amqp.close().catch(() => undefined);
    }
  }, 30000);
});
