import type { Logger } from '@nestjs/common';
import type { Delivery } from '../broker/broker.interface';
import { bindArguments } from '../discovery/parameter-names';
import type { RegisteredTask, TaskRegistry } from '../discovery/task.registry';
import { InvalidTaskMessageError } from '../errors/celery.errors';
import { celeryException, toExceptionInfo, tracebackOf } from '../protocol/exceptions';
import { pythonJsonDumps } from '../protocol/python-json';
import type { ResultToStore, TaskMeta } from '../protocol/result-row';
import { decodeTaskMessageAsync, DecodedTask } from '../protocol/task-message';
import type { ResultStore } from '../results/result-store.interface';
import type { StoreOutcome } from '../results/result-writer';
import { NOTIFY_HEADER } from '../results/result-notifier';

/** How an ETA hold ended: the ETA came, the worker is stopping, or the message's channel was lost. */
export type HoldEnd = 'run' | 'stop' | 'lost';

export type { StoreOutcome } from '../results/result-writer';

/** What a request needs from the worker that owns it. */
export interface RequestContext {
  registry: TaskRegistry;
  store: ResultStore;
  logger: Logger;
  accept: readonly string[];
  /** Largest body accepted, compressed or not. */
  maxMessageBytes: number;
  /** Waits until `etaMicros`, or until the worker stops or the delivery's channel is lost. */
  holdUntil(etaMicros: number, lost: AbortSignal): Promise<HoldEnd>;
  /** Runs `fn` within the worker's concurrency limit. */
  withSlot<T>(fn: () => Promise<T>): Promise<T>;
  /** Runs `fn` once every earlier request of the same task id in this process has ended. */
  oneAtATime(taskId: string, fn: () => Promise<void>): Promise<void>;
  /** Stores a result, retrying with back-off, unless a SUCCESS is already stored (then it is kept). */
  storeDurably(result: ResultToStore, redelivered: boolean): Promise<StoreOutcome>;
  /** Pushes a stored result to the producer's reply queue. */
  notify(queue: string, result: ResultToStore): void;
}

/**
 * One message's life in the worker (like celery/worker/request.py): decode → look up the task →
 * wait for its ETA → check expiry → run → store the result → acknowledge. The message is
 * acknowledged only after its result is stored; if it cannot be stored it goes back to the queue.
 *
 * When the channel the message came on closes (`delivery.lost`), RabbitMQ has already requeued
 * it: a hold or a run not yet started is dropped; a run under way finishes, stores a SUCCESS (so
 * the redelivered copy finds it and does not run again) but not a failure (the redelivered copy
 * decides), and acknowledges nothing.
 */
export class TaskRequest {
  constructor(
    private readonly delivery: Delivery,
    private readonly ctx: RequestContext,
  ) {}

  async handle(): Promise<void> {
    let task: DecodedTask;
    try {
      task = await decodeTaskMessageAsync(this.delivery, { accept: this.ctx.accept, maxBytes: this.ctx.maxMessageBytes });
    } catch (err) {
      const reason = err instanceof InvalidTaskMessageError ? err.message : `Invalid task message: ${String(err)}`;
      this.ctx.logger.error(`${reason}; rejected without requeue`);
      this.delivery.reject(false);
      return;
    }
    if (this.delivery.lost.aborted) return;
    const entry = this.ctx.registry.get(task.task);
    if (!entry) return this.rejectUnregistered(task);
    return this.ctx.oneAtATime(task.id, () => this.process(task, entry));
  }

  private async process(task: DecodedTask, entry: RegisteredTask): Promise<void> {
    if (this.delivery.lost.aborted) return;
    if (this.delivery.redelivered && (await this.alreadySucceeded(task))) return;
    // Expiry is checked on receipt (an expired ETA task does not wait for its ETA) and again before running.
    if (isExpired(task)) return this.revokeExpired(task);
    if (task.eta !== null && task.eta > nowMicros()) {
      const end = await this.ctx.holdUntil(task.eta, this.delivery.lost);
      if (end === 'stop') return this.delivery.reject(true);
      if (end === 'lost') return;
      if (isExpired(task)) return this.revokeExpired(task);
    }
    const ignoreResult = task.ignoreResult ?? entry.ignoreResult;
    const outcome = await this.ctx.withSlot(async () => (this.delivery.lost.aborted ? null : this.run(task, entry)));
    if (!outcome) return; // its channel closed while it waited for a slot: the redelivered copy runs it
    return this.finish(task, outcome, ignoreResult && outcome.status === 'SUCCESS');
  }

  private revokeExpired(task: DecodedTask): Promise<void> {
    this.ctx.logger.warn(`Task ${task.task}[${task.id}] expired; not run`);
    return this.finish(task, { taskId: task.id, status: 'REVOKED', result: celeryException('TaskRevokedError', 'expired'), traceback: null, children: null }, false);
  }

  private async run(task: DecodedTask, entry: RegisteredTask): Promise<ResultToStore> {
    const started = Date.now();
    try {
      const callArgs = bindArguments(task.task, entry.params, task.args, task.kwargs);
      const value = await entry.handler(...callArgs);
      pythonJsonDumps(value); // a value JSON cannot hold is a task failure, not a storage failure
      this.ctx.logger.log(`Task ${task.task}[${task.id}] succeeded in ${Date.now() - started} ms`);
      return { taskId: task.id, status: 'SUCCESS', result: value ?? null, traceback: null, children: [] };
    } catch (err) {
      const info = toExceptionInfo(err);
      this.ctx.logger.error(`Task ${task.task}[${task.id}] raised ${info.exc_type}: ${info.exc_message.join(', ')}`);
      return { taskId: task.id, status: 'FAILURE', result: info, traceback: tracebackOf(err), children: [] };
    }
  }

  private async finish(task: DecodedTask, result: ResultToStore, skipStore: boolean): Promise<void> {
    if (this.delivery.lost.aborted) return this.finishLost(task, result, skipStore);
    if (skipStore) {
      this.delivery.ack();
      return;
    }
    const outcome = await this.ctx.storeDurably(result, this.delivery.redelivered);
    if (outcome.kind === 'abandoned') {
      this.ctx.logger.warn(`Result of ${task.task}[${task.id}] not stored; message returned to the queue`);
      this.delivery.reject(true);
      return;
    }
    if (outcome.kind === 'unstorable') {
      // retrying cannot help: reject without requeue (dead-lettered when the queue has a dead-letter exchange)
      const stored = outcome.stored ? `a FAILURE saying so is stored` : 'no FAILURE could be stored either';
      this.ctx.logger.error(`Result of ${task.task}[${task.id}] cannot be stored: ${outcome.reason}; ${stored}; message rejected without requeue`);
      this.delivery.reject(false);
      if (outcome.stored) this.notify(task, outcome.stored);
      return;
    }
    this.delivery.ack();
    if (outcome.kind === 'kept') {
      this.ctx.logger.warn(`Task ${task.task}[${task.id}] already has a stored SUCCESS; kept it, this run's ${result.status} is not stored`);
      return this.notify(task, successOf(outcome.meta));
    }
    this.notify(task, result);
  }

  /** The run ended after its channel closed: the message is already back in the queue and runs again. */
  private async finishLost(task: DecodedTask, result: ResultToStore, skipStore: boolean): Promise<void> {
    if (result.status !== 'SUCCESS' || skipStore) {
      this.ctx.logger.warn(`Task ${task.task}[${task.id}]: its channel closed while it ran; its ${result.status} is not stored: the broker redelivers it`);
      return;
    }
    const outcome = await this.ctx.storeDurably(result, true);
    if (outcome.kind === 'stored' || outcome.kind === 'kept') {
      this.ctx.logger.warn(`Task ${task.task}[${task.id}]: its channel closed while it ran; its SUCCESS is stored, so the redelivered message is not run again`);
      this.notify(task, outcome.kind === 'kept' ? successOf(outcome.meta) : result);
    } else {
      // the redelivered copy runs again and meets the same store
      this.ctx.logger.warn(`Task ${task.task}[${task.id}]: its channel closed while it ran; its SUCCESS is not stored (${outcome.kind === 'unstorable' ? outcome.reason : 'the worker is stopping'})`);
    }
  }

  private notify(task: DecodedTask, result: ResultToStore): void {
    const queue = task.headers[NOTIFY_HEADER];
    if (typeof queue === 'string' && queue) this.ctx.notify(queue, result);
  }

  /**
   * A redelivered message may belong to a task that already succeeded (its worker died before the
   * ack). A stored SUCCESS is never replaced (Celery 5.7 keeps the first SUCCESS too): the task is
   * not run again and the message is acknowledged.
   */
  private async alreadySucceeded(task: DecodedTask): Promise<boolean> {
    let meta;
    try {
      meta = await this.ctx.store.getTaskMeta(task.id);
    } catch {
      return false; // the store is down: run the task; storing will wait for the store
    }
    if (meta.status !== 'SUCCESS') return false;
    this.ctx.logger.warn(`Task ${task.task}[${task.id}] was redelivered but already succeeded; not run again`);
    this.delivery.ack();
    this.notify(task, successOf(meta));
    return true;
  }

  /** As Celery: a FAILURE `NotRegistered` row, and the message rejected without requeue. */
  private async rejectUnregistered(task: DecodedTask): Promise<void> {
    this.ctx.logger.error(
      `Received unregistered task "${task.task}" (id ${task.id}); rejected without requeue. Registered tasks: ${this.ctx.registry.names().join(', ') || 'none'}`,
    );
    try {
      const result: ResultToStore = { taskId: task.id, status: 'FAILURE', result: celeryException('NotRegistered', task.task), traceback: null, children: [] };
      const kept = await this.ctx.store.storeUnlessSucceeded(result);
      this.notify(task, kept ? successOf(kept) : result);
    } catch (err) {
      this.ctx.logger.error(`Could not store NotRegistered for ${task.id}: ${(err as Error).message}`);
    }
    this.delivery.reject(false);
  }
}

function successOf(meta: TaskMeta): ResultToStore {
  return { taskId: meta.taskId, status: 'SUCCESS', result: meta.result, traceback: null, children: meta.children };
}

function isExpired(task: DecodedTask): boolean {
  return task.expires !== null && task.expires <= nowMicros();
}

function nowMicros(): number {
  return Date.now() * 1000;
}
