import { Logger } from '@nestjs/common';
import type { Broker } from '../broker/broker.interface';
import { decodeResultMessage, TaskMeta } from '../protocol/result-row';
import { READY_STATES } from '../protocol/states';

/** Message header naming the producer's reply queue; our worker pushes the result there once stored. */
export const NOTIFY_HEADER = 'nestjs_celery_notify';

const RECENT_LIMIT = 10_000;
/** A route whose last push is older than this is not counted as one whose workers push. */
const PUSH_MEMORY_MS = 60_000;
/** Default byte budget of the pushes kept (ResultNotifier.start's `maxBytes`). */
export const DEFAULT_NOTIFIER_BYTES = 32 * 1024 * 1024;
/** What a kept push costs beyond its body (map entries, the decoded meta), counted against the budget. */
const PUSH_OVERHEAD_BYTES = 512;

/**
 * Receives result pushes on this process's reply queue and hands them to waiting `AsyncResult`s,
 * so `get()` resolves as soon as the worker has stored the row instead of on its next poll. A
 * result may arrive before anyone asks for it: the push for a task this process sent is kept as
 * long as its `AsyncResult` handle is alive (so a get() made late never has to read the store),
 * and the latest few thousand others are kept besides. All kept pushes together stay within a byte
 * budget (their body sizes): beyond it the oldest others go first, then the oldest expected ones;
 * an `AsyncResult` whose push was dropped reads the store instead.
 */
export class ResultNotifier {
  private readonly logger = new Logger('CeleryResults');
  private readonly recent = new Map<string, TaskMeta>();
  /** Tasks that live AsyncResult handles of this process wait for, and their push once it came. */
  private readonly expected = new Map<string, { handles: number; meta?: TaskMeta; route?: string }>();
  /** When a push last came for a task sent to each route (queue): its workers push (NestJS workers do, Python ones do not). */
  private readonly pushedAt = new Map<string, number>();
  private readonly released = new FinalizationRegistry<string>((taskId) => this.release(taskId));
  private readonly listeners = new Map<string, Set<(meta: TaskMeta) => void>>();
  /** Bytes each kept push counts for, oldest first, whether it is in `recent` or `expected`. */
  private readonly sizes = new Map<string, number>();
  private heldBytes = 0;

  private constructor(
    readonly queue: string,
    private readonly maxBytes: number,
  ) {}

  /** `maxBytes`: budget of the pushes kept, default DEFAULT_NOTIFIER_BYTES (32 MiB). */
  static async start(broker: Broker, options: { maxBytes?: number } = {}): Promise<ResultNotifier> {
    let notifier: ResultNotifier | null = null;
    const pending: Buffer[] = [];
    const queue = await broker.consumeReplies((reply) => (notifier ? notifier.onReply(reply.body) : pending.push(reply.body)));
    notifier = new ResultNotifier(queue, options.maxBytes ?? DEFAULT_NOTIFIER_BYTES);
    for (const body of pending) notifier.onReply(body);
    return notifier;
  }

  latest(taskId: string): TaskMeta | undefined {
    return this.expected.get(taskId)?.meta ?? this.recent.get(taskId);
  }

  /**
   * Keeps the push for `taskId` for as long as `handle` (its AsyncResult) is reachable. `route`
   * (the queue it was sent to): a push for it counts as one from that route's workers.
   */
  expect(taskId: string, handle: object, route?: string): void {
    const entry = this.expected.get(taskId);
    if (entry) entry.handles++;
    else this.expected.set(taskId, route === undefined ? { handles: 1 } : { handles: 1, route });
    this.released.register(handle, taskId);
  }

  /** Whether a task sent to `route` had its result pushed in the last minute: that route's workers push. */
  pushesFrom(route: string): boolean {
    const at = this.pushedAt.get(route);
    return at !== undefined && Date.now() - at < PUSH_MEMORY_MS;
  }

  private release(taskId: string): void {
    const entry = this.expected.get(taskId);
    if (entry && --entry.handles <= 0) {
      this.expected.delete(taskId);
      if (!this.recent.has(taskId)) this.unsize(taskId);
    }
  }

  /** Bytes the kept pushes count for (at most the budget). */
  get bytes(): number {
    return this.heldBytes;
  }

  /** Drops the kept push of a task (`AsyncResult.forget()`): its state is read from the store again. */
  forget(taskId: string): void {
    this.drop(taskId);
  }

  subscribe(taskId: string, listener: (meta: TaskMeta) => void): () => void {
    let set = this.listeners.get(taskId);
    if (!set) this.listeners.set(taskId, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.listeners.delete(taskId);
    };
  }

  private onReply(body: Buffer): void {
    let meta: TaskMeta;
    try {
      meta = decodeResultMessage(body);
    } catch (err) {
      this.logger.warn(`Ignored an unreadable result message: ${(err as Error).message}`);
      return;
    }
    // a late STARTED or RETRY push (a duplicate run) never hides a SUCCESS, as in the store
    if (!READY_STATES.has(meta.status) && this.latest(meta.taskId)?.status === 'SUCCESS') return;
    const route = this.expected.get(meta.taskId)?.route;
    if (route !== undefined) this.pushedAt.set(route, Date.now());
    this.keep(meta, body.length + PUSH_OVERHEAD_BYTES);
    for (const listener of this.listeners.get(meta.taskId) ?? []) listener(meta);
  }

  private keep(meta: TaskMeta, bytes: number): void {
    this.drop(meta.taskId);
    // a push over the whole budget is not kept: its listeners have it, later readers read the store
    if (bytes > this.maxBytes) return;
    const expected = this.expected.get(meta.taskId);
    if (expected) {
      expected.meta = meta;
    } else {
      this.recent.set(meta.taskId, meta);
      if (this.recent.size > RECENT_LIMIT) this.drop(this.recent.keys().next().value as string);
    }
    this.sizes.set(meta.taskId, bytes);
    this.heldBytes += bytes;
    this.evictOver(this.recent.keys());
    this.evictOver(this.sizes.keys());
  }

  /** Drops pushes in `order` (oldest first) while the kept ones are over the budget. */
  private evictOver(order: Iterable<string>): void {
    for (const taskId of order) {
      if (this.heldBytes <= this.maxBytes) return;
      this.drop(taskId);
    }
  }

  private drop(taskId: string): void {
    this.recent.delete(taskId);
    const expected = this.expected.get(taskId);
    if (expected) expected.meta = undefined;
    this.unsize(taskId);
  }

  private unsize(taskId: string): void {
    const bytes = this.sizes.get(taskId);
    if (bytes === undefined) return;
    this.sizes.delete(taskId);
    this.heldBytes -= bytes;
  }
}
