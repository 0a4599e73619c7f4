import { MemoryBroker } from '../../../lib';
import { encodeResultMessage } from '../../../lib/protocol/result-row';
import { ResultNotifier } from '../../../lib/results/result-notifier';

const push = (broker: MemoryBroker, queue: string, taskId: string, result: unknown) =>
  broker.publishReply(queue, { correlationId: taskId, body: encodeResultMessage({ taskId, status: 'SUCCESS', result, traceback: null, children: [] }) });

const flush = () => new Promise((resolve) => setImmediate(resolve));

describe('ResultNotifier', () => {
  it('keeps the push for a task a live AsyncResult waits for, however many other results arrive after it', async () => {
    const broker = new MemoryBroker();
    const notifier = await ResultNotifier.start(broker);
    const handle = {};
    notifier.expect('mine', handle);
    push(broker, notifier.queue, 'mine', 'kept');
    push(broker, notifier.queue, 'other', 'evicted');
    for (let i = 0; i < 10_001; i++) push(broker, notifier.queue, `later-${i}`, i);
    await flush();
    expect(notifier.latest('mine')).toMatchObject({ status: 'SUCCESS', result: 'kept' });
    // A push nobody in this process waits for is only kept among the latest few thousand.
    expect(notifier.latest('other')).toBeUndefined();
    expect(notifier.latest('later-10000')).toMatchObject({ result: 10_000 });
    expect(handle).toBeDefined();
  });
});
