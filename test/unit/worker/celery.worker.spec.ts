import { Logger } from '@nestjs/common';
import { Broker, ConsumerHandle, Delivery, OutgoingMessage, Reply } from '../../../lib/broker/broker.interface';
import { normalizeCeleryOptions } from '../../../lib/config/normalize-options';
import type { CeleryModuleOptions } from '../../../lib';
import { TaskRegistry } from '../../../lib/discovery/task.registry';
import { fromAmqpFieldValue } from '../../../lib/protocol/amqp-field-table';
import { encodeTaskMessage } from '../../../lib/protocol/task-message';
import { MemoryResultStore } from '../../../lib/results/memory.result-store';
import { CeleryWorker } from '../../../lib/worker/celery.worker';

const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

/** A broker whose deliveries the test makes by hand: it records the prefetch asked for and each settlement. */
class ScriptedBroker extends Broker {
  onMessage: ((d: Delivery) => void) | null = null;
  prefetches: number[] = [];
  async connect(): Promise<void> {}
  async assertQueue(): Promise<void> {}
  async publish(_queue: string, _message: OutgoingMessage): Promise<void> {}
  async consume(_queue: string, prefetch: number, onMessage: (d: Delivery) => void): Promise<ConsumerHandle> {
    this.onMessage = onMessage;
    this.prefetches.push(prefetch);
    return { cancel: async () => undefined, setPrefetch: async (n: number) => void this.prefetches.push(n) };
  }
  async consumeReplies(_onReply: (reply: Reply) => void): Promise<string> {
    return 'replies';
  }
  publishReply(): void {}
  async close(): Promise<void> {}
  describe(): string {
    return 'scripted://';
  }
  get prefetch(): number {
    return this.prefetches[this.prefetches.length - 1];
  }
}

interface Sent {
  delivery: Delivery;
  settled: string[];
  channel: AbortController;
}

function deliver(broker: ScriptedBroker, task: string, id: string, opts: { args?: unknown[]; countdown?: number; redelivered?: boolean; channel?: AbortController } = {}): Sent {
  const message = encodeTaskMessage({ task, id, args: opts.args ?? [], kwargs: {}, countdown: opts.countdown }, { nowMicros: Date.now() * 1000, origin: 'test' });
  const channel = opts.channel ?? new AbortController();
  const settled: string[] = [];
  const delivery: Delivery = {
    headers: fromAmqpFieldValue(message.amqpHeaders) as Record<string, unknown>,
    contentType: message.properties.contentType,
    contentEncoding: message.properties.contentEncoding,
    correlationId: message.properties.correlationId,
    replyTo: message.properties.replyTo,
    priority: message.properties.priority,
    body: message.body,
    redelivered: opts.redelivered ?? false,
    exchange: '',
    routingKey: 'celery',
    lost: channel.signal,
    ack: () => void settled.push('ack'),
    reject: (requeue: boolean) => void settled.push(requeue ? 'requeue' : 'reject'),
  };
  broker.onMessage?.(delivery);
  return { delivery, settled, channel };
}

describe('CeleryWorker: ETA holds, prefetch, and deliveries whose channel is lost', () => {
  let broker: ScriptedBroker;
  let store: MemoryResultStore;
  let worker: CeleryWorker;
  const runs: string[] = [];
  let release: (() => void) | null = null;

  async function start(options: CeleryModuleOptions = {}): Promise<void> {
    const config = normalizeCeleryOptions({ worker: { prefetch: 4, concurrency: 1 }, ...options });
    broker = new ScriptedBroker();
    store = new MemoryResultStore();
    const registry = new TaskRegistry();
    const params = [{ name: 'value', hasDefault: false, rest: false }] as never;
    registry.register({ name: 't.echo', target: 'T.echo', queue: null, ignoreResult: false, params, handler: (v: unknown) => (runs.push(String(v)), v) });
    registry.register({
      name: 't.block',
      target: 'T.block',
      queue: null,
      ignoreResult: false,
      params,
      handler: async (v: unknown) => {
        runs.push(String(v));
        await new Promise<void>((resolve) => (release = resolve));
        if (String(v).startsWith('fail')) throw new RangeError(String(v));
        return v;
      },
    });
    worker = new CeleryWorker(config, broker, store, registry);
    await worker.start();
  }

  beforeAll(() => Logger.overrideLogger(false));
  beforeEach(() => {
    runs.length = 0;
    release = null;
  });
  afterEach(async () => {
    release?.();
    await worker.stop();
  });

  it('raises the prefetch by one per held ETA task, up to worker.etaTaskLimit, and lowers it when they run', async () => {
    await start({ worker: { prefetch: 4, concurrency: 1, etaTaskLimit: 2 } });
    expect(broker.prefetch).toBe(4);
    const held = [0, 1, 2].map((i) => deliver(broker, 't.echo', `eta-${i}`, { args: [`eta-${i}`], countdown: 0.3 }));
    await tick(20);
    expect(broker.prefetch).toBe(6); // 4 + 2: the third waits in an ordinary slot
    await tick(600);
    expect(runs.sort()).toEqual(['eta-0', 'eta-1', 'eta-2']);
    expect(held.map((h) => h.settled)).toEqual([['ack'], ['ack'], ['ack']]);
    expect(broker.prefetch).toBe(4);
  });

  it('drops a held ETA task whose channel is lost: no settlement, no run, its prefetch raise undone', async () => {
    await start();
    const held = deliver(broker, 't.echo', 'eta-lost', { args: ['eta-lost'], countdown: 0.2 });
    await tick(20);
    expect(broker.prefetch).toBe(5);
    held.channel.abort();
    await tick(20);
    expect(broker.prefetch).toBe(4);
    await tick(400);
    expect(runs).toEqual([]);
    expect(held.settled).toEqual([]);
  });

  it('does not start a task whose channel was lost while it waited for a slot', async () => {
    await start();
    const first = deliver(broker, 't.block', 'a', { args: ['a'] });
    const waiting = deliver(broker, 't.echo', 'b', { args: ['b'] });
    await tick(20);
    waiting.channel.abort();
    release?.();
    await tick(50);
    expect(runs).toEqual(['a']);
    expect(first.settled).toEqual(['ack']);
    expect(waiting.settled).toEqual([]);
    expect((await store.getTaskMeta('b')).status).toBe('PENDING');
  });

  it('lets a task running when its channel is lost finish: a failure is not stored, nothing is acknowledged', async () => {
    await start();
    const running = deliver(broker, 't.block', 'f', { args: ['fail-f'] });
    await tick(20);
    running.channel.abort();
    release?.();
    await tick(50);
    expect(running.settled).toEqual([]);
    expect((await store.getTaskMeta('f')).status).toBe('PENDING');
  });

  it('handles a task id one delivery at a time: the redelivered copy waits for the run of the lost channel and finds its SUCCESS', async () => {
    await start({ worker: { prefetch: 4, concurrency: 2 } });
    const first = deliver(broker, 't.block', 'same', { args: ['once'] });
    await tick(20);
    first.channel.abort();
    const again = deliver(broker, 't.block', 'same', { args: ['once'], redelivered: true });
    await tick(20);
    expect(runs).toEqual(['once']); // the copy waits instead of running beside it
    release?.();
    await tick(50);
    expect(runs).toEqual(['once']);
    expect(first.settled).toEqual([]);
    expect(again.settled).toEqual(['ack']);
    const meta = await store.getTaskMeta('same');
    expect(meta.status).toBe('SUCCESS');
    expect(meta.result).toBe('once');
  });
});
