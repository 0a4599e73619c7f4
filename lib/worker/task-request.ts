import type { Logger } from '@nestjs/common';
import type { Delivery } from '../broker/broker.interface';
import type { ResolvedCeleryConfig } from '../config/resolved-config';
import type { TaskContext } from '../decorators/task-context.decorator';
import { bindArguments, withContextArgument } from '../discovery/parameter-names';
import type { RegisteredTask, TaskRegistry } from '../discovery/task.registry';
import { InvalidTaskMessageError } from '../errors/celery.errors';
import { Retry, RetryOptions, SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded, WorkerShutdown } from '../errors/task-exceptions';
import { celeryException, toExceptionInfo, tracebackOf, type ExceptionInfo } from '../protocol/exceptions';
import { pythonJsonDumps } from '../protocol/python-json';
import { extendedResultOf, ResultToStore, TaskMeta } from '../protocol/result-row';
import { decodeTaskMessageAsync, DecodedTask, EncodedTaskMessage, MAYBE_DUPLICATE_HEADER } from '../protocol/task-message';
import { autoretryFor, encodeRetryMessage, retryOrGiveUp } from './retry';
import { runInTaskContext } from './task-context';
import { failedTaskIdOf, taskFailureOf, withFailedRequest } from './errback-context';
import { IsolatedPool } from './isolation/isolated-pool';
import { IsolatedPoolClosedError } from './isolation/errors';
import type { ResultStore } from '../results/result-store.interface';
import type { StoreOutcome } from '../results/result-writer';
import { NOTIFY_HEADER } from '../results/result-notifier';
import { AppliedCanvas, errbackCanvas, InvalidSignatureError, PublishStep, remainingChainIds, successCanvas } from '../protocol/canvas-apply';
import { randomUUID } from 'node:crypto';
import type { RequestPhase } from './control/request-tracker';
import { CHORD_COUNTER_HEADER } from '../protocol/canvas';
import { performance } from 'node:perf_hooks';
import { taskMessageInfo } from '../protocol/events';
import type { TaskEventHooks } from '../events/worker-events';
import { traceRun, type TaskRunSpan } from '../tracing/task-tracing';
import type { TaskMetricsHooks } from '../metrics/task-metrics';

/** How an ETA hold ended: the ETA came, the worker is stopping, or the message's channel was lost. */
export type HoldEnd = 'run' | 'stop' | 'lost';

export type { StoreOutcome } from '../results/result-writer';

// The messages (next chain step, callbacks) a run publishes when that run may be a second one —
// its own message was redelivered or carried this header — are marked: otherwise every later step
// of the chain would run twice too.
export { MAYBE_DUPLICATE_HEADER };

/** Messages marked with {@link MAYBE_DUPLICATE_HEADER}: they may have been published before. */
export function markedMaybeDuplicate(steps: readonly PublishStep[]): PublishStep[] {
  return steps.map((p) => ({ ...p, spec: { ...p.spec, headers: { ...p.spec.headers, [MAYBE_DUPLICATE_HEADER]: true } } }));
}

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
  /**
   * Stores a result, retrying with back-off, keeping a stored SUCCESS; `mayBeDuplicate`: the message
   * may be a second copy (the stored state is then always read first).
   */
  storeDurably(result: ResultToStore, mayBeDuplicate: boolean): Promise<StoreOutcome>;
  /** Pushes a stored result to the producer's reply queue. */
  notify(queue: string, result: ResultToStore): void;
  /** The worker's node name. */
  hostname: string;
  /** Task defaults of the module (`taskTimeLimit`, `taskTrackStarted`, ...). */
  taskDefaults: ResolvedCeleryConfig['tasks'];
  /** Publishes a retry message where Celery's `Task.retry` sends it, and resolves once the broker confirmed it. */
  publishRetry(taskName: string, call: RetryOptions, delivery: Delivery, message: EncodedTaskMessage): Promise<void>;
  /**
   * Publishes the messages a workflow step sends (next chain step, callbacks, errbacks), in
   * order, routed as their signatures say; resolves once the broker confirmed every one.
   */
  publishCanvas(steps: readonly PublishStep[]): Promise<void>;
  /** `gen<pid>@<host>` and the peer generation, for messages the worker sends. */
  origin: string;
  peerCompat: ResolvedCeleryConfig['peerCompat'];
  /** Celery's `result_extended`: rows carry the request's name, args, kwargs, worker, retries and queue. */
  resultExtended: boolean;
  /** Waits for the task name's rate limit; false when the wait was given up (channel lost, worker stopping). */
  rateLimit(taskName: string, signal: AbortSignal): Promise<boolean>;
  /** The worker's pool of threads for isolated tasks (started on first use). */
  isolatedPool(): IsolatedPool;
  /** Whether tasks run inside the AsyncLocalStorage behind `CeleryTaskContext` / `currentTask()`. */
  contextStorage(): boolean;
  /** Registers a running task so revoke and shutdown can abort it; returns the unregister function. */
  track(taskId: string, abort: (reason: Error) => void): () => void;
  /** Told where the request is (remote control's inspect active / reserved / scheduled); optional. */
  phase?(phase: RequestPhase, task: DecodedTask, delivery: Delivery): void;
  /** Whether the task was revoked (remote control's revoke): then it is not run and REVOKED is stored; optional. */
  isRevoked?(task: DecodedTask): boolean;
  /**
   * The chord part of a header task of a counter-mode chord (lib/worker/chord-counter.ts), after
   * its result is stored and before its ack: records it done and, when it is the last one, sends
   * the body. Rejects when it could not be done (the message then goes back to the queue).
   */
  chordPart?(task: DecodedTask): Promise<void>;
  /** The worker's task events (lib/events), or null without any; each call checks `taskEventsEnabled` first. */
  events?: TaskEventHooks | null;
  /** The module's metrics (lib/metrics), or null while they are off. */
  metrics?: TaskMetricsHooks | null;
}

/** A chord part that failed is tried again by the redelivered message, no sooner than this. */
const CHORD_PART_RETRY_MS = 1000;

/** How a run ended: a result to store, a retry to publish, or a shutdown that sends the message back. */
type RunOutcome =
  | { kind: 'result'; result: ResultToStore }
  | { kind: 'retry'; retry: Retry; traceback: string | null }
  | { kind: 'shutdown' };

/** A task's settings for one run: its `@Task()` options over the module's defaults, under the message's own header. */
interface Effective {
  hardSeconds: number | null;
  softSeconds: number | null;
  ignoreResult: boolean;
  storeErrorsEvenIfIgnored: boolean;
  trackStarted: boolean;
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
  /** Seconds the task's function ran (`task-succeeded`'s `runtime`). */
  private runtimeSeconds = 0;
  /** When the task was ready to run (received, or its ETA), for the metrics' queue wait. */
  private readyAt = 0;

  constructor(
    private readonly delivery: Delivery,
    private readonly ctx: RequestContext,
  ) {}

  /** The task events, while they are on (a null check when they are off). */
  private get events(): TaskEventHooks | null {
    const events = this.ctx.events;
    return events && events.taskEventsEnabled ? events : null;
  }

  async handle(): Promise<void> {
    let task: DecodedTask;
    try {
      task = await decodeTaskMessageAsync(this.delivery, { accept: this.ctx.accept, maxBytes: this.ctx.maxMessageBytes });
    } catch (err) {
      const reason = err instanceof InvalidTaskMessageError ? err.message : `Invalid task message: ${String(err)}`;
      this.ctx.logger.error(`${reason}; rejected without requeue`);
      this.delivery.reject(false);
      this.ctx.metrics?.rejected('');
      return;
    }
    if (this.delivery.lost.aborted) return;
    const entry = this.ctx.registry.get(task.task);
    if (!entry) return this.rejectUnregistered(task);
    return this.ctx.oneAtATime(task.id, () => this.process(task, entry).finally(() => this.ctx.phase?.('done', task, this.delivery)));
  }

  private async process(task: DecodedTask, entry: RegisteredTask): Promise<void> {
    if (this.delivery.lost.aborted) return;
    if (this.mayBeDuplicate(task) && (await this.alreadySucceeded(task))) return;
    // Expiry and revoke are checked on receipt (an expired ETA task does not wait for its ETA) and again before running.
    if (isExpired(task)) return this.revokeExpired(task);
    if (this.ctx.isRevoked?.(task)) return this.revokeExpired(task, 'revoked');
    this.events?.received(taskMessageInfo(task)); // as Celery's strategy: after the revoked/expired check
    const metrics = this.ctx.metrics;
    if (metrics) {
      metrics.received(task.task);
      this.readyAt = performance.now();
    }
    if (task.eta !== null && task.eta > nowMicros()) {
      this.ctx.phase?.('scheduled', task, this.delivery);
      const end = await this.ctx.holdUntil(task.eta, this.delivery.lost);
      if (end === 'stop') return this.delivery.reject(true);
      if (end === 'lost') return;
      if (metrics) this.readyAt = performance.now();
      if (isExpired(task)) return this.revokeExpired(task);
      if (this.ctx.isRevoked?.(task)) return this.revokeExpired(task, 'revoked');
    }
    this.ctx.phase?.('reserved', task, this.delivery);
    // Celery's rate limit: wait, unacknowledged and without a slot, for this task name's turn
    if (!(await this.ctx.rateLimit(task.task, this.delivery.lost))) {
      if (this.delivery.lost.aborted) return; // the broker has requeued it
      return this.delivery.reject(true); // the worker is stopping
    }
    if (isExpired(task)) return this.revokeExpired(task);
    const settings = this.effective(task, entry);
    let span: TaskRunSpan | null = null; // OpenTelemetry's CONSUMER span, when an SDK is registered (lib/tracing)
    const outcome = await this.ctx.withSlot(async () => {
      if (this.delivery.lost.aborted) return null;
      if (this.ctx.isRevoked?.(task)) return 'revoked' as const; // revoked while it waited
      this.ctx.phase?.('active', task, this.delivery);
      span = traceRun(task, this.delivery, this.ctx.hostname);
      return span ? span.within(() => this.run(task, entry, settings)) : this.run(task, entry, settings);
    });
    if (outcome === 'revoked') return this.revokeExpired(task, 'revoked');
    const traced = span as TaskRunSpan | null;
    if (!traced) return outcome ? this.settle(task, outcome, settings) : undefined; // no outcome: its channel closed while it waited for a slot
    if (outcome) traced.outcome(...runEndOf(outcome));
    try {
      if (outcome) await traced.within(() => this.settle(task, outcome, settings));
    } finally {
      traced.end();
    }
  }

  /** After the run: sends the message back (shutdown), publishes the retry, or stores the result. */
  private async settle(task: DecodedTask, outcome: RunOutcome, settings: Effective): Promise<void> {
    if (outcome.kind === 'shutdown') {
      this.ctx.logger.warn(`Task ${task.task}[${task.id}] stopped for the worker's shutdown; its message goes back to the queue`);
      return this.delivery.reject(true);
    }
    if (outcome.kind === 'retry') return this.retry(task, outcome.retry, outcome.traceback, settings);
    return this.finish(task, outcome.result, this.skipsStore(outcome.result.status, settings));
  }

  /** Celery: an ignored result stores nothing, except errors (FAILURE, RETRY, REVOKED) with `storeErrorsEvenIfIgnored`. */
  private skipsStore(status: string, settings: Effective): boolean {
    if (!settings.ignoreResult) return false;
    return !(settings.storeErrorsEvenIfIgnored && (status === 'FAILURE' || status === 'RETRY' || status === 'REVOKED'));
  }

  private effective(task: DecodedTask, entry: RegisteredTask): Effective {
    const options = entry.options ?? {};
    const defaults = this.ctx.taskDefaults;
    const [hard, soft] = task.timeLimit;
    return {
      // the message's `timelimit` header wins; a null entry means the task's own (Celery §5.3)
      hardSeconds: positive(hard) ?? options.timeLimit ?? defaults.timeLimit,
      softSeconds: positive(soft) ?? options.softTimeLimit ?? defaults.softTimeLimit,
      ignoreResult: task.ignoreResult ?? options.ignoreResult ?? entry.ignoreResult ?? defaults.ignoreResult,
      storeErrorsEvenIfIgnored: options.storeErrorsEvenIfIgnored ?? defaults.storeErrorsEvenIfIgnored,
      trackStarted: options.trackStarted ?? defaults.trackStarted,
    };
  }

  /** Celery's `_announce_revoked`: not run, REVOKED stored (`TaskRevokedError('expired')` / `('revoked')`), the message acknowledged. */
  private revokeExpired(task: DecodedTask, reason: 'expired' | 'revoked' = 'expired'): Promise<void> {
    this.ctx.logger.warn(`Task ${task.task}[${task.id}] ${reason === 'expired' ? 'expired' : 'revoked'}; not run`);
    const entry = this.ctx.registry.get(task.task);
    const skip = entry ? this.skipsStore('REVOKED', this.effective(task, entry)) : false;
    return this.finish(task, { taskId: task.id, status: 'REVOKED', result: celeryException('TaskRevokedError', reason), traceback: null, children: null }, skip);
  }

  /**
   * Runs the task in its context (AsyncLocalStorage), under its time limits. The soft limit fires
   * the context's AbortSignal with SoftTimeLimitExceeded; the hard limit ends the run at once with a
   * FAILURE TimeLimitExceeded and frees its slot (the function itself cannot be stopped in place: it
   * is told through the signal, and whatever it returns later is dropped — `isolate` really stops it).
   */
  private async run(task: DecodedTask, entry: RegisteredTask, settings: Effective): Promise<RunOutcome> {
    const started = Date.now();
    const abort = new AbortController();
    const untrack = this.ctx.track(task.id, (reason) => {
      if (!abort.signal.aborted) abort.abort(reason);
    });
    this.events?.started(task.id);
    const t0 = performance.now();
    this.ctx.metrics?.started(task.task, (t0 - this.readyAt) / 1000);
    const timers: NodeJS.Timeout[] = [];
    try {
      if (settings.trackStarted && !this.skipsStore('STARTED', settings)) {
        const succeeded = await this.storeStarted(task);
        // the same id already succeeded (published twice): keep that SUCCESS and do not run it again
        if (succeeded) return { kind: 'result', result: successOf(succeeded) };
      }
      const context = this.contextOf(task, entry, settings, abort.signal);
      const running = entry.isolated ? this.runIsolated(task, entry, settings, context, abort.signal) : this.runHere(entry, settings, context, abort, timers);
      // revoke with terminate ends the run at once (Celery kills the pool process), whether or not the task honours its signal
      const value = await Promise.race([running, terminated(abort.signal)]);
      this.runtimeSeconds = (performance.now() - t0) / 1000;
      pythonJsonDumps(value); // a value JSON cannot hold is a task failure, not a storage failure
      this.ctx.logger.log(`Task ${task.task}[${task.id}] succeeded in ${Date.now() - started} ms`);
      return { kind: 'result', result: { taskId: task.id, status: 'SUCCESS', result: value ?? null, traceback: null, children: [] } };
    } catch (thrown) {
      return this.failed(task, entry, thrown, abort.signal);
    } finally {
      for (const timer of timers) clearTimeout(timer);
      untrack();
    }
  }

  /** Runs the method in this thread, under the time limits (see run()). */
  private async runHere(entry: RegisteredTask, settings: Effective, context: TaskContext, abort: AbortController, timers: NodeJS.Timeout[]): Promise<unknown> {
    const task = context;
    const running = runInTaskContext(
      context,
      async () => {
        const bound = bindArguments(task.name, entry.params, [...task.args], { ...task.kwargs });
        if (entry.enhanced) return entry.enhanced(context, bound);
        return entry.handler(...withContextArgument(bound, entry.contextIndex, context));
      },
      this.ctx.contextStorage(),
    );
    if (settings.softSeconds !== null) {
      const soft = settings.softSeconds;
      timers.push(setTimeout(() => abort.signal.aborted || abort.abort(new SoftTimeLimitExceeded(soft)), soft * 1000));
    }
    if (settings.hardSeconds === null) return running;
    const hard = settings.hardSeconds;
    const timedOut = new Promise<never>((_resolve, reject) => {
      timers.push(
        setTimeout(() => {
          const error = new TimeLimitExceeded(hard);
          if (!abort.signal.aborted) abort.abort(error);
          reject(error);
        }, hard * 1000),
      );
    });
    running.catch(() => undefined); // it may end after the hard limit: nobody waits for it then
    return Promise.race([running, timedOut]);
  }

  /**
   * Runs an isolated task (`isolate: 'thread'`) in the worker's thread pool: the pool applies the
   * limits, and at the hard limit it terminates the thread — the work really stops. The request
   * goes along as plain data (`isolatedTaskContext()` in the thread); revoke and shutdown abort it.
   */
  private runIsolated(task: DecodedTask, entry: RegisteredTask, settings: Effective, context: TaskContext, signal: AbortSignal): Promise<unknown> {
    const callArgs = bindArguments(task.task, entry.params, task.args, task.kwargs);
    const { signal: _signal, retry: _retry, failure: _failure, ...request } = context;
    const run = this.ctx.isolatedPool().start(entry.isolated as NonNullable<RegisteredTask['isolated']>, callArgs, {
      hardMs: settings.hardSeconds === null ? undefined : settings.hardSeconds * 1000,
      softMs: settings.softSeconds === null ? undefined : settings.softSeconds * 1000,
      signal,
      context: request as unknown as Record<string, unknown>,
    });
    // revoke with terminate stops the thread, as Celery's terminate kills the pool process
    const onAbort = () => signal.reason instanceof TaskRevokedError && run.terminate(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    return run.result.finally(() => signal.removeEventListener('abort', onAbort));
  }

  /** A thrown error: a retry (asked for, or automatic), the worker's shutdown, or a FAILURE. */
  private failed(task: DecodedTask, entry: RegisteredTask, thrown: unknown, signal: AbortSignal): RunOutcome {
    let err = abortReasonOf(thrown, signal);
    if (err instanceof WorkerShutdown || err instanceof IsolatedPoolClosedError) return { kind: 'shutdown' };
    if (err instanceof TaskRevokedError) {
      // Celery's on_failure for a terminated request: REVOKED TaskRevokedError('terminated'), no traceback
      this.ctx.logger.warn(`Task ${task.task}[${task.id}] terminated (revoked)`);
      return { kind: 'result', result: { taskId: task.id, status: 'REVOKED', result: celeryException('TaskRevokedError', 'terminated'), traceback: null, children: null } };
    }
    if (!(err instanceof Retry) && !(err instanceof TimeLimitExceeded)) {
      const auto = autoretryFor(err, task.retries, entry.options);
      if (auto) err = retryOrGiveUp(task, auto, entry.options);
    }
    if (err instanceof Retry) return { kind: 'retry', retry: err, traceback: tracebackOf(err) };
    const info = toExceptionInfo(err);
    this.ctx.logger.error(`Task ${task.task}[${task.id}] raised ${info.exc_type}: ${info.exc_message.join(', ')}`);
    // Celery stores a hard time limit without a traceback (Request.on_timeout: mark_as_failure(exc) alone)
    const traceback = err instanceof TimeLimitExceeded ? null : tracebackOf(err);
    return { kind: 'result', result: { taskId: task.id, status: 'FAILURE', result: info, traceback, children: [] } };
  }

  private contextOf(task: DecodedTask, entry: RegisteredTask, settings: Effective, signal: AbortSignal): TaskContext {
    const delivery = this.delivery;
    return {
      id: task.id,
      name: task.task,
      args: task.args,
      kwargs: task.kwargs,
      retries: task.retries,
      rootId: task.rootId,
      parentId: task.parentId,
      group: task.group,
      groupIndex: task.groupIndex,
      eta: task.eta === null ? null : new Date(task.eta / 1000),
      expires: task.expires === null ? null : new Date(task.expires / 1000),
      deliveryInfo: { exchange: delivery.exchange, routingKey: delivery.routingKey, redelivered: delivery.redelivered, priority: task.priority },
      headers: task.headers,
      hostname: this.ctx.hostname,
      origin: task.origin,
      timeLimit: [settings.hardSeconds, settings.softSeconds],
      signal,
      retry: (options: RetryOptions = {}): never => {
        throw retryOrGiveUp(task, options, entry.options);
      },
      failure: async () => {
        const failedId = failedTaskIdOf(task);
        return failedId === null ? null : taskFailureOf(await this.ctx.store.getTaskMeta(failedId), task.headers);
      },
    };
  }

  /** Celery's `task_track_started`: a STARTED row with the worker's pid and hostname; a failure to store it does not stop the task. */
  private async storeStarted(task: DecodedTask): Promise<TaskMeta | null> {
    try {
      return await this.ctx.store.storeUnlessSucceeded(
        this.withResultOptions(task, { taskId: task.id, status: 'STARTED', result: { pid: process.pid, hostname: this.ctx.hostname }, traceback: null, children: [] }),
      );
    } catch (err) {
      this.ctx.logger.warn(`Could not store STARTED for ${task.task}[${task.id}]: ${err instanceof Error ? err.message : String(err)}; running it anyway`);
      return null;
    }
  }

  /**
   * Celery's retry: the new message is published (and confirmed) first, then the RETRY row is
   * stored, then the original is acknowledged — a crash in between leaves a duplicate, never a loss.
   * If the retry cannot be published, the original goes back to the queue (Celery rejects it
   * without requeue and the task is lost).
   */
  private async retry(task: DecodedTask, retry: Retry, traceback: string | null, settings: Effective): Promise<void> {
    if (this.delivery.lost.aborted) {
      this.ctx.logger.warn(`Task ${task.task}[${task.id}]: its channel closed while it ran; its retry is not sent: the broker redelivers it`);
      return;
    }
    const call = retry.options;
    const message = encodeRetryMessage(task, call, { nowMicros: Date.now() * 1000, origin: this.ctx.origin, peer: this.ctx.peerCompat });
    try {
      await this.ctx.publishRetry(task.task, call, this.delivery, message);
    } catch (err) {
      this.ctx.logger.error(`Task ${task.task}[${task.id}]: its retry could not be sent (${err instanceof Error ? err.message : String(err)}); the message goes back to the queue`);
      this.delivery.reject(true);
      return;
    }
    const exc = call.exc !== undefined ? call.exc : retry;
    this.ctx.logger.warn(`Task ${task.task}[${task.id}] retry ${task.retries + 1}: ${retry.message}`);
    if (!this.skipsStore('RETRY', settings)) {
      // the RETRY row lists the task itself as its child: the retry was sent from inside it (wire spec §3.2);
      // its traceback is the Retry's, as Celery's handle_retry stores it: it ends "Retry in 10s: RuntimeError('DB busy')"
      const result = this.withResultOptions(task, {
        taskId: task.id,
        status: 'RETRY',
        result: toExceptionInfo(exc),
        traceback: traceback ?? tracebackOf(exc),
        children: [[[task.id, null], null]],
      });
      const outcome = await this.ctx.storeDurably(result, true);
      if (outcome.kind === 'abandoned') this.ctx.logger.warn(`RETRY of ${task.task}[${task.id}] not stored (the worker is stopping); the retry message is out`);
    }
    this.delivery.ack();
    this.ctx.metrics?.retried(task.task);
    this.events?.retried(task.id, call.exc !== undefined && call.exc !== null ? toExceptionInfo(call.exc) : null, traceback ?? tracebackOf(exc));
  }

  private async finish(task: DecodedTask, plain: ResultToStore, skipStore: boolean): Promise<void> {
    let result = this.withResultOptions(task, plain);
    if (result.status === 'SUCCESS' && !(this.delivery.lost.aborted && skipStore)) {
      // the next chain step and the callbacks go out (confirmed) before the SUCCESS is stored and
      // acknowledged: a crash in between runs a step twice, never breaks the chain
      const dispatched = await this.dispatchSuccess(task, result);
      if (dispatched === 'requeued') return;
      result = dispatched;
      if (result.status === 'FAILURE') skipStore = this.skipsStoreOf(task, 'FAILURE');
    }
    if (this.delivery.lost.aborted) return this.finishLost(task, result, skipStore);
    if (skipStore) {
      if (result.status === 'FAILURE' && !(await this.propagateFailure(task, result, false))) return this.delivery.reject(true);
      if (!(await this.chordPartDone(task))) return this.delivery.reject(true);
      this.delivery.ack();
      this.events?.ended(task.id, result, this.runtimeSeconds);
      this.ctx.metrics?.ended(task.task, result.status, this.runtimeSeconds);
      return;
    }
    const outcome = await this.ctx.storeDurably(result, this.mayBeDuplicate(task));
    // the errbacks go out after the FAILURE rows; one that cannot be sent sends the message back (the task runs again)
    if (outcome.kind === 'stored' && result.status === 'FAILURE' && !(await this.propagateFailure(task, result, true))) return this.delivery.reject(true);
    if (outcome.kind === 'abandoned') {
      this.ctx.logger.warn(`Result of ${task.task}[${task.id}] not stored; message returned to the queue`);
      this.delivery.reject(true);
      return;
    }
    if (outcome.kind === 'unstorable') {
      // retrying cannot help: reject without requeue (dead-lettered when the queue has a dead-letter exchange)
      const stored = outcome.stored ? `a FAILURE saying so is stored` : 'no FAILURE could be stored either';
      this.ctx.logger.error(`Result of ${task.task}[${task.id}] cannot be stored: ${outcome.reason}; ${stored}; message rejected without requeue`);
      if (outcome.stored) await this.chordPartDone(task); // its chord fails on that FAILURE
      this.delivery.reject(false);
      this.events?.rejected(task.id, false);
      this.ctx.metrics?.rejected(task.task);
      if (outcome.stored) this.notify(task, outcome.stored);
      return;
    }
    // a header task of a counter-mode chord is acknowledged once its chord part is done too
    if (!(await this.chordPartDone(task))) return this.delivery.reject(true);
    this.delivery.ack();
    this.events?.ended(task.id, outcome.kind === 'kept' ? successOf(outcome.meta) : result, this.runtimeSeconds);
    this.ctx.metrics?.ended(task.task, outcome.kind === 'kept' ? 'SUCCESS' : result.status, this.runtimeSeconds);
    if (outcome.kind === 'kept') {
      this.ctx.logger.warn(`Task ${task.task}[${task.id}] already has a stored SUCCESS; kept it, this run's ${result.status} is not stored`);
      return this.notify(task, successOf(outcome.meta));
    }
    this.notify(task, result);
  }

  /** Whether a result of `status` for this task is stored (its effective settings), for a result that changed status. */
  private skipsStoreOf(task: DecodedTask, status: string): boolean {
    const entry = this.ctx.registry.get(task.task);
    return entry ? this.skipsStore(status, this.effective(task, entry)) : false;
  }

  /**
   * Celery's `_dispatch_callbacks_and_chain`: the callbacks and the next chain step are published,
   * and the SUCCESS row lists them as its children. A signature that cannot be applied makes the
   * task a FAILURE naming it; a publish that fails sends the message back to the queue.
   */
  private async dispatchSuccess(task: DecodedTask, result: ResultToStore): Promise<ResultToStore | 'requeued'> {
    const { callbacks, chain } = task.embed;
    if ((!callbacks || callbacks.length === 0) && (!chain || chain.length === 0)) return result;
    let canvas: AppliedCanvas;
    try {
      canvas = successCanvas({ callbacks, chain }, result.result, { id: task.id, rootId: task.rootId ?? task.id }, randomUUID);
    } catch (err) {
      this.ctx.logger.error(`Task ${task.task}[${task.id}] succeeded but its workflow cannot continue: ${err instanceof Error ? err.message : String(err)}`);
      return { ...result, status: 'FAILURE', result: toExceptionInfo(err), traceback: tracebackOf(err), children: [] };
    }
    // a second run (its message redelivered, or itself published twice) publishes what the first
    // run may have published already: marked, so its receiver checks for a stored SUCCESS first
    const publish = this.mayBeDuplicate(task) ? markedMaybeDuplicate(canvas.publish) : canvas.publish;
    try {
      await this.ctx.publishCanvas(publish);
    } catch (err) {
      this.ctx.logger.error(
        `Task ${task.task}[${task.id}]: the next step / callbacks could not be sent (${err instanceof Error ? err.message : String(err)}); the message goes back to the queue`,
      );
      if (!this.delivery.lost.aborted) this.delivery.reject(true);
      return 'requeued';
    }
    return { ...result, children: canvas.children };
  }

  /**
   * Celery's `mark_as_failure` after the task's own FAILURE: the same FAILURE for every remaining
   * chain step with a frozen id (so the caller's get() of the last step raises), then the errbacks,
   * sent with the failed task's id. False when the errbacks could not be sent.
   */
  private async propagateFailure(task: DecodedTask, failure: ResultToStore, storeRows: boolean): Promise<boolean> {
    if (storeRows) {
      for (const id of remainingChainIds(task.embed.chain)) {
        const outcome = await this.ctx.storeDurably({ ...failure, taskId: id, children: [], extended: undefined }, true);
        if (outcome.kind !== 'stored' && outcome.kind !== 'kept') this.ctx.logger.warn(`FAILURE of chain step ${id} (after ${task.task}[${task.id}]) not stored: ${outcome.kind}`);
      }
    }
    try {
      const errbacks = errbackCanvas(task.embed.errbacks, { id: task.id, rootId: task.rootId ?? task.id }, randomUUID);
      await this.ctx.publishCanvas(withFailedRequest(errbacks.publish, task));
      return true;
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      if (err instanceof InvalidSignatureError) {
        this.ctx.logger.error(`Task ${task.task}[${task.id}] failed and its errbacks cannot be applied: ${why}`);
        return true; // sending it again cannot help
      }
      this.ctx.logger.error(`Task ${task.task}[${task.id}] failed and its errbacks could not be sent (${why}); the message goes back to the queue`);
      return false;
    }
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

  /**
   * Every row of a task carries the same expiry (`resultExpires`: each state is a row of its own, and
   * a newer row that expired first would bring an older one back) and, with `resultExtended`, the
   * request's name, args, kwargs, worker, retries and queue.
   */
  private withResultOptions(task: DecodedTask, result: ResultToStore): ResultToStore {
    const expires = this.ctx.registry.get(task.task)?.options?.resultExpires;
    if (expires === undefined && !this.ctx.resultExtended) return result;
    return {
      ...result,
      ...(expires !== undefined ? { expiresSeconds: expires } : {}),
      ...(this.ctx.resultExtended ? { extended: extendedResultOf(task, this.ctx.hostname, this.delivery.routingKey) } : {}),
    };
  }

  private notify(task: DecodedTask, result: ResultToStore): void {
    const queue = task.headers[NOTIFY_HEADER];
    if (typeof queue === 'string' && queue) this.ctx.notify(queue, result);
  }

  /** Whether this message may be a second one for its task: redelivered, or marked so by the run that published it. */
  private mayBeDuplicate(task: DecodedTask): boolean {
    return this.delivery.redelivered || task.headers[MAYBE_DUPLICATE_HEADER] === true;
  }

  /**
   * A redelivered message may belong to a task that already succeeded (its worker died before the
   * ack), and a marked one to a chain step already run (the step before ran twice). A stored
   * SUCCESS is never replaced (Celery 5.7 keeps the first SUCCESS too): the task is not run again
   * and the message is acknowledged.
   */
  private async alreadySucceeded(task: DecodedTask): Promise<boolean> {
    let meta;
    try {
      meta = await this.ctx.store.getTaskMeta(task.id);
    } catch {
      return false; // the store is down: run the task; storing will wait for the store
    }
    if (meta.status !== 'SUCCESS') return false;
    this.ctx.logger.warn(`Task ${task.task}[${task.id}] was ${this.delivery.redelivered ? 'redelivered' : 'published again'} but already succeeded; not run again`);
    // its worker may have died between storing the SUCCESS and doing its chord part: done here
    if (!(await this.chordPartDone(task))) {
      this.delivery.reject(true);
      return true;
    }
    this.delivery.ack();
    this.notify(task, successOf(meta));
    return true;
  }

  /**
   * The chord part of a counter-mode chord's header task (a no-op for other tasks). False when it
   * failed: the caller sends the message back, after a pause, and the redelivered copy does it.
   */
  private async chordPartDone(task: DecodedTask): Promise<boolean> {
    if (!this.ctx.chordPart || task.headers[CHORD_COUNTER_HEADER] === undefined) return true;
    try {
      await this.ctx.chordPart(task);
      return true;
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      this.ctx.logger.error(`Task ${task.task}[${task.id}]: its result is stored but its chord part failed (${why}); the message goes back to the queue`);
      await new Promise((resolve) => setTimeout(resolve, CHORD_PART_RETRY_MS));
      return false;
    }
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
    this.events?.failed(task.id, celeryException('NotRegistered', task.task), null);
    this.ctx.metrics?.rejected(task.task);
  }
}

/** How a run ended, for its span: the state and, for a FAILURE or a RETRY, the exception. */
function runEndOf(outcome: RunOutcome): [string, ExceptionInfo | null] {
  if (outcome.kind === 'shutdown') return ['SHUTDOWN', null];
  if (outcome.kind === 'retry') return ['RETRY', toExceptionInfo(outcome.retry.options.exc ?? outcome.retry)];
  const { status, result } = outcome.result;
  return [status, status === 'FAILURE' ? (result as ExceptionInfo) : null];
}

function successOf(meta: TaskMeta): ResultToStore {
  return { taskId: meta.taskId, status: 'SUCCESS', result: meta.result, traceback: null, children: meta.children };
}

function isExpired(task: DecodedTask): boolean {
  return task.expires !== null && task.expires <= nowMicros();
}

/** Rejects with the signal's reason once it fires with a TaskRevokedError (revoke with terminate); never settles otherwise. */
function terminated(signal: AbortSignal): Promise<never> {
  return new Promise<never>((_resolve, reject) => {
    const check = () => signal.reason instanceof TaskRevokedError && reject(signal.reason as Error);
    if (signal.aborted) check();
    else signal.addEventListener('abort', check, { once: true });
  });
}

function nowMicros(): number {
  return Date.now() * 1000;
}

function positive(value: number | null): number | null {
  return typeof value === 'number' && value > 0 ? value : null;
}

/**
 * What an await that honoured the task's signal threw, read as the signal's reason: Node's
 * `timers/promises` and `events` reject with an `AbortError` whose `cause` is the reason, `fetch`
 * with the reason itself. Either way the task failed with SoftTimeLimitExceeded (or the other reasons).
 */
function abortReasonOf(thrown: unknown, signal: AbortSignal): unknown {
  if (!signal.aborted) return thrown;
  const reason: unknown = signal.reason;
  if (thrown === reason) return reason;
  // duck-typed: errors from Node's internals may come from another realm (vm contexts, test runners)
  const e = thrown as { name?: unknown; cause?: unknown } | null;
  if (e !== null && typeof e === 'object' && e.name === 'AbortError' && (e.cause === reason || e.cause === undefined)) return reason;
  return thrown;
}
