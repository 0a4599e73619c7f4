import { Test, TestingModule } from '@nestjs/testing';
import { CeleryConnectionError, CeleryModule, Producer } from '../../lib';
import { TcpProxy } from '../support/tcp-proxy';
import { rawCassandra, RawAmqp, realOptions, uniqueName, KEYSPACE, removeQueueAndTable } from '../support/real-services';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The Producer when its connection to the real RabbitMQ is cut (the broker away) or hangs (open
 * but passing no bytes). A local TCP proxy stands between them, so the broker keeps running for
 * the other suites. `delay()` either waits and then resolves on RabbitMQ's confirm, or rejects with
 * a CeleryConnectionError after `publishTimeoutMs`; it never resolves for an unconfirmed message.
 */
describe('Producer through a cut or hung broker connection', () => {
  const queue = uniqueName('it_outage');
  const table = uniqueName('it_outage');
  let proxy: TcpProxy;
  let app: TestingModule | null = null;

  beforeAll(async () => {
    proxy = await TcpProxy.start('127.0.0.1', 5672);
  });

  afterEach(async () => {
    proxy.restore();
    await app?.close();
    app = null;
  });

  afterAll(async () => {
    await proxy.close();
    await removeQueueAndTable(queue, table);
  });

  async function client(publishTimeoutMs: number): Promise<Producer> {
    app = await Test.createTestingModule({
      imports: [
        CeleryModule.forRoot(
          realOptions(queue, table, { brokerUrl: `amqp://guest:guest@127.0.0.1:${proxy.port}`, publishTimeoutMs, worker: { enabled: false } }),
        ),
      ],
    }).compile();
    await app.init();
    const producer = app.get(Producer);
    await producer.sendTask('tasks.echo', { args: ['warm-up'] }); // connection, channel and topology are up
    return producer;
  }

  /** Task ids of the messages in the queue (taken off it). */
  async function drainIds(): Promise<string[]> {
    const amqp = await RawAmqp.open();
    try {
      const ids: string[] = [];
      for (;;) {
        const msg = await amqp.channel.get(queue, { noAck: true });
        if (!msg) return ids;
        ids.push(String(msg.properties.headers?.id));
      }
    } finally {
      await amqp.close();
    }
  }

  it('waits while the broker is away and resolves only after RabbitMQ is back and has confirmed the message', async () => {
    const producer = await client(30000);
    await drainIds();
    proxy.cut();
    let resolvedAt = 0;
    const sent = producer.sendTask('tasks.echo', { args: ['during the outage'] }).then((r) => {
      resolvedAt = Date.now();
      return r;
    });
    await sleep(1500);
    expect(resolvedAt).toBe(0);
    const restoredAt = Date.now();
    proxy.restore();
    const result = await sent;
    expect(resolvedAt).toBeGreaterThanOrEqual(restoredAt);
    expect(await drainIds()).toContain(result.id);
  });

  it('rejects with a CeleryConnectionError after publishTimeoutMs when the broker stays away', async () => {
    const producer = await client(1500);
    proxy.cut();
    const started = Date.now();
    const error = (await producer.sendTask('tasks.echo', { args: ['never'] }).catch((e: unknown) => e)) as Error;
    const elapsed = Date.now() - started;
    expect(error).toBeInstanceOf(CeleryConnectionError);
    expect(error.message).toContain(queue);
    expect(error.message).toContain('publishTimeoutMs');
    expect(error.message).not.toContain('guest:guest');
    expect(elapsed).toBeGreaterThanOrEqual(1400);
    expect(elapsed).toBeLessThan(10000);
  });

  it('rejects after publishTimeoutMs on a connection that hangs without closing, instead of waiting for ever', async () => {
    const producer = await client(1500);
    proxy.freeze();
    const started = Date.now();
    const error = (await producer.sendTask('tasks.echo', { args: ['hung'] }).catch((e: unknown) => e)) as Error;
    const elapsed = Date.now() - started;
    expect(error).toBeInstanceOf(CeleryConnectionError);
    expect(error.message).toMatch(/did not confirm the message for queue .* within 1500 ms/);
    expect(elapsed).toBeGreaterThanOrEqual(1400);
    expect(elapsed).toBeLessThan(10000);
  });
});
