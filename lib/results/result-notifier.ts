import { Logger } from '@nestjs/common';
import type { Broker } from '../broker/broker.interface';
import { decodeResultMessage, TaskMeta } from '../protocol/result-row';

/** Message header naming the producer's reply queue; our worker pushes the result there once stored. */
export const NOTIFY_HEADER = 'nestjs_celery_notify';

const RECENT_LIMIT = 10_000;

/**
 * Receives result pushes on this process's reply queue and hands them to waiting `AsyncResult`s,
 * so `get()` resolves as soon as the worker has stored the row instead of on its next poll. A
 * result may arrive before anyone asks for it: the push for a task this process sent is kept as
 * long as its `AsyncResult` handle is alive (so a get() made late never has to read the store),
 * and the latest few thousand others are kept besides.
 */
export class ResultNotifier {
  private readonly logger = new Logger('CeleryResults');
  private readonly recent = new Map<string, TaskMeta>();
  /** Tasks that live AsyncResult handles of this process wait for, and their push once it came. */
  private readonly expected = new Map<string, { handles: number; meta?: TaskMeta }>();
  private readonly released = new FinalizationRegistry<string>((taskId) => this.release(taskId));
  private readonly listeners = new Map<string, Set<(meta: TaskMeta) => void>>();

  private constructor(readonly queue: string) {}

  static async start(broker: Broker): Promise<ResultNotifier> {
    let notifier: ResultNotifier | null = null;
    const pending: Buffer[] = [];
    const queue = await broker.consumeReplies((reply) => (notifier ? notifier.onReply(reply.body) : pending.push(reply.body)));
    notifier = new ResultNotifier(queue);
    for (const body of pending) notifier.onReply(body);
    return notifier;
  }

  latest(taskId: string): TaskMeta | undefined {
    return this.expected.get(taskId)?.meta ?? this.recent.get(taskId);
  }

  /** Keeps the push for `taskId` for as long as `handle` (its AsyncResult) is reachable. */
  expect(taskId: string, handle: object): void {
    const entry = this.expected.get(taskId);
    if (entry) entry.handles++;
    else this.expected.set(taskId, { handles: 1 });
    this.released.register(handle, taskId);
  }

  private release(taskId: string): void {
    const entry = this.expected.get(taskId);
    if (entry && --entry.handles <= 0) this.expected.delete(taskId);
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
    const expected = this.expected.get(meta.taskId);
    if (expected) {
      expected.meta = meta;
    } else {
      this.recent.delete(meta.taskId);
      this.recent.set(meta.taskId, meta);
      if (this.recent.size > RECENT_LIMIT) this.recent.delete(this.recent.keys().next().value as string);
    }
    for (const listener of this.listeners.get(meta.taskId) ?? []) listener(meta);
  }
}
