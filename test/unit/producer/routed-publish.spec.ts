import { MemoryBroker } from '../../../lib/broker/memory.broker';
import type { OutgoingMessage } from '../../../lib/broker/broker.interface';
import { normalizeCeleryOptions } from '../../../lib/config/normalize-options';
import { CeleryBrokerRefusedError } from '../../../lib/errors/celery.errors';
import { publishRouted } from '../../../lib/producer/routed-publish';
import { QueueTable, retryDestination, routeTask, TopologyStep } from '../../../lib/protocol/routing';
import { encodeTaskMessage } from '../../../lib/protocol/task-message';

function message(id: string): OutgoingMessage {
  const m = encodeTaskMessage({ task: 't.x', id, args: [] }, { nowMicros: Date.now() * 1000, origin: 'unit' });
  return { headers: m.amqpHeaders, properties: m.properties, body: m.body };
}

class RecordingBroker extends MemoryBroker {
  readonly declared: { steps: number; once?: string }[] = [];
  refuse = false;
  override async declareTopology(steps: TopologyStep[], once?: string): Promise<void> {
    this.declared.push({ steps: steps.length, once });
    if (this.refuse) throw new CeleryBrokerRefusedError('Broker refused to declare native delayed delivery: PRECONDITION_FAILED');
    return super.declareTopology(steps);
  }
}

describe('publishRouted', () => {
  const table = () => new QueueTable(normalizeCeleryOptions({ queueType: 'quorum', defaultExchangeType: 'topic' }).routing);
  const warn = jest.fn();

  beforeEach(() => warn.mockReset());

  it('declares the delayed-delivery topology and the destination binding before a delayed publish, then publishes to celery_delayed_27', async () => {
    const t = table();
    const broker = new RecordingBroker({ queues: (name) => t.get(name) });
    const publish = jest.spyOn(broker, 'publish');
    await publishRouted(broker, t, routeTask(t, 't.x', { delaySeconds: 3 }), message('d1'), { warn });
    expect(broker.declared).toEqual([
      { steps: 113, once: 'native delayed delivery' },
      { steps: 2, once: 'native delayed delivery bindings of celery' },
    ]);
    expect(publish).toHaveBeenCalledWith('celery', expect.anything(), { exchange: 'celery_delayed_27', routingKey: `${'0.'.repeat(26)}1.1.celery` });
    expect(broker.depth('celery')).toBe(1);
  });

  it('publishes all the same when the topology declaration is refused, saying so', async () => {
    const t = table();
    const broker = new RecordingBroker({ queues: (name) => t.get(name) });
    broker.refuse = true;
    await publishRouted(broker, t, routeTask(t, 't.x', { delaySeconds: 3 }), message('d2'), { warn });
    expect(warn).toHaveBeenCalledWith(expect.stringMatching(/PRECONDITION_FAILED; publishing through the existing topology/));
    expect(broker.depth('celery')).toBe(1);
  });

  it('declares nothing extra for an ordinary publish', async () => {
    const t = table();
    const broker = new RecordingBroker({ queues: (name) => t.get(name) });
    await publishRouted(broker, t, routeTask(t, 't.x'), message('n1'), { warn });
    expect(broker.declared).toEqual([]);
    expect(broker.depth('celery')).toBe(1);
  });

  it('sends a retry of a delayed delivery back through the delayed topology, its old prefix gone (the lead\'s retry path)', async () => {
    const t = table();
    const broker = new RecordingBroker({ queues: (name) => t.get(name) });
    const dest = retryDestination(t, 't.x', { exchange: 'celery_delayed_0', routingKey: `${'0.'.repeat(26)}1.0.celery` }, { countdownSeconds: 5 });
    expect(dest).toMatchObject({ exchange: 'celery_delayed_27', routingKey: `${'0.'.repeat(25)}1.0.1.celery`, delayed: true });
    await publishRouted(broker, t, dest, message('r1'), { warn });
    expect(broker.depth('celery')).toBe(1);
  });
});
