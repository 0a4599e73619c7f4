import type { Logger } from '@nestjs/common';
import type { Broker } from '../broker/broker.interface';
import { batchRoutingKey, buildEvent, EVENT_BUFFER_LIMIT, EVENT_EXCHANGE, eventGroup, eventRoutingKey, LamportClock, utcoffsetHours, type CeleryEvent } from '../protocol/events';
import { pythonJsonDumps } from '../protocol/python-json';

export interface EventDispatcherOptions {
  broker: Pick<Broker, 'publishEvent'>;
  /** The node name events carry (`hostname` field and header). */
  hostname: string;
  clock: LamportClock;
  /** Groups buffered and sent as `<group>.multi` lists (a Celery worker with its event loop: `['task']`). */
  bufferGroups?: readonly string[];
  bufferLimit?: number;
  logger?: Pick<Logger, 'warn'>;
  /** Seconds since the epoch; default the system clock. */
  now?: () => number;
  pid?: number;
}

/**
 * Celery's `EventDispatcher`: stamps events (hostname, utcoffset, pid, Lamport clock, timestamp)
 * and publishes them to `celeryev` with routing key = type (`-` → `.`) and header `{hostname}`.
 * Events of a buffered group wait in a list that is published as one `task.multi` message when it
 * holds `bufferLimit` (24) events, or at the next turn of the event loop — Celery's hub adds its
 * flush to the loop's ready queue after each buffered event, so a burst goes out as one list and a
 * lone event goes out at once. Publishing never throws: an event that cannot be sent is dropped.
 */
export class EventDispatcher {
  readonly hostname: string;
  private readonly clock: LamportClock;
  private readonly buffered: ReadonlySet<string>;
  private readonly bufferLimit: number;
  private readonly buffers = new Map<string, CeleryEvent[]>();
  private flushScheduled = false;
  private readonly now: () => number;
  private readonly pid: number;
  private readonly headers: Record<string, string>;
  enabled = true;

  constructor(private readonly options: EventDispatcherOptions) {
    this.hostname = options.hostname;
    this.clock = options.clock;
    this.buffered = new Set(options.bufferGroups ?? []);
    this.bufferLimit = options.bufferLimit ?? EVENT_BUFFER_LIMIT;
    this.now = options.now ?? (() => Date.now() / 1000);
    this.pid = options.pid ?? process.pid;
    this.headers = { hostname: this.hostname };
  }

  /** An event of this node, stamped now with the next clock value (none when `blind`). */
  event(type: string, fields: Record<string, unknown>, blind = false): CeleryEvent {
    return buildEvent(type, fields, {
      hostname: this.hostname,
      utcoffset: utcoffsetHours(),
      pid: this.pid,
      clock: blind ? null : this.clock.forward(),
      timestamp: this.now(),
    });
  }

  /** `EventDispatcher.send`: buffered when its group is, published at once otherwise. */
  send(type: string, fields: Record<string, unknown>): void {
    if (!this.enabled) return;
    const group = eventGroup(type);
    if (!this.buffered.has(group)) {
      this.publish(eventRoutingKey(type), this.event(type, fields));
      return;
    }
    let buffer = this.buffers.get(group);
    if (!buffer) this.buffers.set(group, (buffer = []));
    buffer.push(this.event(type, fields));
    if (buffer.length >= this.bufferLimit) this.flush();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        this.flush();
      });
    }
  }

  /** Publishes every buffered group as one `<group>.multi` list. */
  flush(): void {
    for (const [group, events] of this.buffers) {
      if (events.length === 0) continue;
      this.publish(batchRoutingKey(group), events.splice(0));
    }
  }

  /** Flushes what is buffered and sends nothing more. */
  close(): void {
    this.flush();
    this.enabled = false;
  }

  private publish(routingKey: string, body: CeleryEvent | CeleryEvent[]): void {
    try {
      this.options.broker.publishEvent({ exchange: EVENT_EXCHANGE, routingKey, body: Buffer.from(pythonJsonDumps(body), 'utf8'), headers: this.headers });
    } catch (err) {
      // an event that cannot be encoded or sent never disturbs the task it is about
      this.options.logger?.warn(`Event ${routingKey} not sent: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
}
