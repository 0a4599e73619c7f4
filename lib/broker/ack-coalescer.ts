/** What the coalescer needs of an amqplib channel. */
export interface AckTarget<M> {
  ack(message: M, allUpTo?: boolean): void;
}

/** One delivery on the channel, by its delivery tag. */
export interface AckEntry<M> {
  readonly message: M;
  readonly tag: number;
}

/**
 * The acknowledgements of one consumer channel, sent in as few frames as their order allows.
 * Delivery tags grow along a channel, so every gathered ack whose tag is older than the oldest
 * delivery still open is sent as one `basic.ack` with `multiple` set on the newest of them
 * (RabbitMQ acknowledges every outstanding delivery up to that tag: they are all settled). An ack
 * behind an open delivery (a long task, a held ETA message) goes on its own at the same flush: it
 * is never held back, so the prefetch window never waits on a slow task. Acks are gathered until
 * the end of the current turn of the event loop (`setImmediate`); `flush()` sends them at once
 * (before the channel is closed).
 *
 * Rejections are not gathered (the caller sends them at once); `settled()` records them, so that
 * the oldest open delivery moves past them. The cost is O(1) per delivery and O(acks) per flush,
 * whatever is held open.
 */
export class AckCoalescer<M> {
  /** Deliveries not yet settled, in delivery order (a Set keeps insertion order). */
  private readonly open = new Set<AckEntry<M>>();
  private pending: AckEntry<M>[] = [];
  private scheduled = false;
  /** Ack frames sent, and the messages they acknowledged (tests and the benchmark read them). */
  frames = 0;
  acknowledged = 0;

  constructor(
    private readonly target: AckTarget<M>,
    private readonly onError: (err: unknown) => void,
    private readonly schedule: (fn: () => void) => void = setImmediate,
  ) {}

  /** A delivery received on the channel, in delivery order. */
  track(message: M, tag: number): AckEntry<M> {
    const entry = { message, tag };
    this.open.add(entry);
    return entry;
  }

  /** Acknowledges the delivery at the next flush. */
  ack(entry: AckEntry<M>): void {
    if (!this.open.delete(entry)) return;
    this.pending.push(entry);
    if (!this.scheduled) {
      this.scheduled = true;
      this.schedule(() => this.flush());
    }
  }

  /** The delivery was settled otherwise (rejected by the caller): nothing to send for it. */
  settled(entry: AckEntry<M>): void {
    this.open.delete(entry);
  }

  /** Sends every gathered ack now: those older than every open delivery as one frame, the others one frame each. */
  flush(): void {
    this.scheduled = false;
    const pending = this.pending;
    if (pending.length === 0) return;
    this.pending = [];
    const oldestOpen = this.oldestOpenTag();
    let newest: AckEntry<M> | null = null;
    let below = 0;
    for (const entry of pending) {
      if (entry.tag < oldestOpen) {
        below++;
        if (!newest || entry.tag > newest.tag) newest = entry;
      }
    }
    if (newest) this.send(newest.message, below > 1, below);
    if (below === pending.length) return;
    for (const entry of pending) if (entry.tag >= oldestOpen) this.send(entry.message, false, 1);
  }

  /** Deliveries received and not yet settled. */
  get openCount(): number {
    return this.open.size;
  }

  private oldestOpenTag(): number {
    for (const entry of this.open) return entry.tag;
    return Number.POSITIVE_INFINITY;
  }

  private send(message: M, allUpTo: boolean, count: number): void {
    try {
      this.target.ack(message, allUpTo);
      this.frames++;
      this.acknowledged += count;
    } catch (err) {
      // the channel is gone: RabbitMQ redelivers what it had not been told of
      this.onError(err);
    }
  }
}
