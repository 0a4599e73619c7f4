import { AckCoalescer } from '../../../lib/broker/ack-coalescer';

/** A channel that records the ack frames it is asked to send: [tag, multiple]. */
function world() {
  const frames: Array<[number, boolean]> = [];
  const queued: Array<() => void> = [];
  const errors: unknown[] = [];
  let broken = false;
  const acks = new AckCoalescer<number>(
    {
      ack: (tag, allUpTo) => {
        if (broken) throw new Error('Channel closed');
        frames.push([tag, allUpTo ?? false]);
      },
    },
    (err) => errors.push(err),
    (fn) => queued.push(fn),
  );
  const deliver = (...tags: number[]) => tags.map((t) => acks.track(t, t));
  const turn = () => queued.splice(0).forEach((fn) => fn());
  return { acks, frames, errors, deliver, turn, breakChannel: () => (broken = true) };
}

describe('AckCoalescer: one channel\'s acks in as few frames as their order allows', () => {
  it('acks a front run of settled deliveries with one multiple ack on the newest tag, at the end of the turn', () => {
    const w = world();
    const [d1, d2, d3] = w.deliver(1, 2, 3);
    w.acks.ack(d2);
    w.acks.ack(d1);
    w.acks.ack(d3);
    expect(w.frames).toEqual([]); // nothing before the turn ends
    w.turn();
    expect(w.frames).toEqual([[3, true]]);
    expect(w.acks).toMatchObject({ frames: 1, acknowledged: 3, openCount: 0 });
  });

  it('never holds an ack behind an open delivery: it goes on its own, and the front run stops below the open one', () => {
    const w = world();
    const [d1, d2, d3, d4] = w.deliver(1, 2, 3, 4);
    w.acks.ack(d1);
    w.acks.ack(d2);
    w.acks.ack(d4); // 3 still runs (a long task)
    w.turn();
    expect(w.frames).toEqual([[2, true], [4, false]]);
    w.acks.ack(d3);
    w.turn();
    // 4 was acknowledged already; a single ack for 3 (a multiple one would cover nothing more)
    expect(w.frames.at(-1)).toEqual([3, false]);
    expect(w.acks.openCount).toBe(0);
  });

  it('moves past rejected deliveries (the caller sends the reject): a multiple ack over them acknowledges only the acked ones', () => {
    const w = world();
    const [d1, d2, d3] = w.deliver(1, 2, 3);
    w.acks.settled(d2); // rejected
    w.acks.ack(d1);
    w.acks.ack(d3);
    w.turn();
    expect(w.frames).toEqual([[3, true]]);
    expect(w.acks.acknowledged).toBe(2);
  });

  it('a single ack at the front is a plain ack', () => {
    const w = world();
    const [d1] = w.deliver(1, 2);
    w.acks.ack(d1);
    w.turn();
    expect(w.frames).toEqual([[1, false]]);
  });

  it('flush() sends what is gathered at once (before the channel closes); an ack twice or of a settled delivery sends nothing more', () => {
    const w = world();
    const [d1, d2] = w.deliver(1, 2);
    w.acks.ack(d1);
    w.acks.ack(d1);
    w.acks.settled(d2);
    w.acks.ack(d2);
    w.acks.flush();
    expect(w.frames).toEqual([[1, false]]);
    w.turn(); // the scheduled flush finds nothing
    expect(w.frames).toEqual([[1, false]]);
  });

  it('a channel that is gone reports the error and does not throw (RabbitMQ redelivers)', () => {
    const w = world();
    const [d1] = w.deliver(1);
    w.acks.ack(d1);
    w.breakChannel();
    expect(() => w.turn()).not.toThrow();
    expect(w.errors).toHaveLength(1);
  });

  it('costs nothing extra per ack while a delivery is held open for long: each ack behind it goes at its flush', () => {
    const w = world();
    const [held] = w.deliver(1);
    for (let tag = 2; tag <= 10_001; tag++) {
      const [d] = w.deliver(tag);
      w.acks.ack(d);
      if (tag % 100 === 0) w.turn();
    }
    w.turn();
    expect(w.frames).toHaveLength(10_000);
    expect(w.frames.every(([, multiple]) => !multiple)).toBe(true);
    expect(w.acks.openCount).toBe(1);
    w.acks.ack(held);
    w.turn();
    expect(w.frames.at(-1)).toEqual([1, false]);
  });
});
