import { CeleryConfigError, CeleryError, TaskFailedError, TaskTimeoutError } from '../errors/celery.errors';
import { isExceptionInfo } from '../protocol/exceptions';
import type { ExtendedResult, TaskMeta } from '../protocol/result-row';
import { parseChildren, ResultTuple } from '../protocol/result-tuple';
import { PROPAGATE_STATES, READY_STATES, TaskState } from '../protocol/states';
import type { ResultStore } from './result-store.interface';
import type { ResultNotifier } from './result-notifier';

export interface GetOptions {
  /** Milliseconds to wait before rejecting with TaskTimeoutError. Default: wait as long as it takes. */
  timeout?: number;
  /** Reject with TaskFailedError on FAILURE / REVOKED (default true); false resolves the exception dict. */
  propagate?: boolean;
  /** First poll interval in ms for stores that cannot notify; it backs off to 500 ms (Celery polls every 500 ms). */
  interval?: number;
}

const MAX_POLL_MS = 500;
/**
 * Between reads of a task whose route's workers push results (a push came for a task sent there in
 * the last minute): the push ends the wait; the reads are a safety net (a lost push, a Python
 * worker on the same queue), not the way results arrive.
 */
const PUSHED_ROUTE_POLL_MS = 2000;

/** Options of `AsyncResult.revoke()`, as Python's `AsyncResult.revoke(terminate, signal, wait, timeout)`. */
export interface AsyncRevokeOptions {
  /** Also stop the task where it is running. */
  terminate?: boolean;
  /** Signal name for `terminate` (Python's prefork pool); default none: the worker uses SIGTERM. */
  signal?: string | null;
  /** Wait for the workers' replies (default false: sent as a cast, nothing comes back). */
  wait?: boolean;
  /** With `wait`: milliseconds to wait for the next reply (default 1000). */
  timeout?: number;
}

/** What `AsyncResult.revoke()` goes through: the module's CeleryControl. */
export interface TaskRevoker {
  revoke(
    taskId: string | string[],
    options: { terminate?: boolean; signal?: string | null; reply?: boolean; timeout?: number },
  ): Promise<Record<string, { ok: string } | { error: string }>>;
}

/**
 * A handle on a sent task, like Celery's `AsyncResult`: its id, its state, and `get()` for its value.
 * `T` is the task's return type when the task was sent through a typed reference.
 *
 * States: PENDING (no row), STARTED (`info().result` is `{pid, hostname}`), RETRY (`info().result`
 * is the exception dict), and the ready ones SUCCESS, FAILURE, REVOKED. `get()` waits through
 * STARTED and RETRY.
 */
export class AsyncResult<T = unknown> {
  constructor(
    readonly id: string,
    private readonly store: ResultStore,
    private readonly defaultInterval = 100,
    private readonly notifier: ResultNotifier | null = null,
    /** Until this time (epoch ms) a push is expected: the task was just sent by this process. */
    private readonly pushExpectedUntil = 0,
    /**
     * The task this one was sent from, when known: as in Celery, only a handle made from a result
     * tuple that names it (a `children` entry, a chain step) knows it. A row does not say (Celery's
     * Cassandra table has no parent column); with `resultExtended`, `extended()` has `parentId`.
     */
    readonly parent: AsyncResult | null = null,
    /** Sends `revoke()`: the module's CeleryControl (null for a handle made without one). */
    private readonly revoker: TaskRevoker | null = null,
    /** The queue (or exchange and routing key) it was sent to, when this process sent it. */
    private readonly route?: string,
  ) {
    // Sent by this process: its push is kept for this handle, however late get() is called.
    if (notifier && pushExpectedUntil > 0) notifier.expect(id, this, route);
  }

  /**
   * The stored meta of the task: status, result, traceback, children, date done (and `extended`
   * with `resultExtended`). `result` is the value, the exception dict, or STARTED's `{pid, hostname}`.
   */
  info(): Promise<TaskMeta> {
    return this.store.getTaskMeta(this.id);
  }

  async state(): Promise<TaskState> {
    return (await this.info()).status;
  }

  async ready(): Promise<boolean> {
    return READY_STATES.has(await this.state());
  }

  async successful(): Promise<boolean> {
    return (await this.state()) === 'SUCCESS';
  }

  async failed(): Promise<boolean> {
    return (await this.state()) === 'FAILURE';
  }

  /**
   * The tasks this task sent, from its row's `children` column (Celery's result tuples): an
   * `AsyncResult` per task, a `GroupResult` per group. Null when the task has no row (PENDING) or
   * the row says null (a REVOKED row written without a request), as Python's `children` is None.
   */
  async children(): Promise<(AsyncResult | GroupResult)[] | null> {
    const meta = await this.info();
    if (meta.status === 'PENDING') return null;
    return parseChildren(meta.children, this.id)?.map((t) => this.fromTuple(t)) ?? null;
  }

  /**
   * Celery's `result_extended` fields of the newest row: name, args, kwargs, worker, retries,
   * queue (and parentId, groupId). Null when the row has none: `resultExtended` off, a row written
   * by Python (Celery's Cassandra backend never stores them), or no row at all.
   */
  async extended(): Promise<ExtendedResult | null> {
    return (await this.info()).extended ?? null;
  }

  /**
   * Deletes the task's stored states (and, as Celery, its known parent's): readers see PENDING
   * again. A push this process kept for it is dropped too. Celery 5.7's Cassandra backend deletes
   * the rows the same way (`DELETE ... WHERE task_id`); a worker storing a state later writes a
   * new row.
   */
  async forget(): Promise<void> {
    if (this.parent) await this.parent.forget();
    this.notifier?.forget(this.id);
    await this.store.forget(this.id);
  }

  /**
   * Python's `AsyncResult.revoke()`: broadcasts `revoke` for this id to every worker (Python or
   * NestJS), so a worker that has not run it yet never does (it stores REVOKED) and, with
   * `terminate`, one running it stops it. Sent as Python sends it: signal null unless given, and
   * without `wait` a cast with no expiry. With `wait`, resolves the replies by node name.
   */
  async revoke(options: AsyncRevokeOptions = {}): Promise<Record<string, { ok: string } | { error: string }>> {
    if (!this.revoker) {
      throw new CeleryError(`AsyncResult ${this.id} cannot revoke: it was made without a CeleryControl (get handles from the module's Producer, or use CeleryControl.revoke)`);
    }
    const wait = options.wait ?? false;
    return this.revoker.revoke(this.id, {
      terminate: options.terminate ?? false,
      signal: options.signal ?? null,
      reply: wait,
      timeout: wait ? (options.timeout ?? 1000) : 0,
    });
  }

  /** A handle on a task named by a result tuple, sharing this handle's store and notifier. */
  private fromTuple(t: ResultTuple): AsyncResult | GroupResult {
    const parent = t.parent ? (this.fromTuple(t.parent) as AsyncResult) : null;
    if (t.results) return new GroupResult(t.id, t.results.map((r) => this.fromTuple(r)), parent);
    return new AsyncResult(t.id, this.store, this.defaultInterval, this.notifier, 0, parent, this.revoker);
  }

  /**
   * Waits for a ready state and resolves the value; rejects on FAILURE / REVOKED and on timeout.
   * A NestJS worker pushes the result to this process as soon as it is stored; otherwise (a Python
   * worker, a lost push) the store is polled with back-off (every `resultPollIntervalMs`, growing
   * to 500 ms). A task sent by this process to a queue whose workers pushed a result in the last
   * minute is read only every 2 s: its push is what ends the wait, and a burst of waiting get()s
   * does not turn into a stream of Cassandra reads.
   */
  async get(options: GetOptions = {}): Promise<T> {
    const deadline = options.timeout === undefined ? Infinity : Date.now() + options.timeout;
    const propagate = options.propagate ?? true;
    let interval = options.interval ?? this.defaultInterval;
    let wake: (() => void) | null = null;
    let pushed: TaskMeta | undefined;
    let lastError: unknown;
    const unsubscribeStore = this.store.subscribe?.(this.id, () => wake?.());
    const unsubscribePush = this.notifier?.subscribe(this.id, (meta) => {
      pushed = meta;
      // STARTED and RETRY are not worth a store read: the worker pushes the final state too
      if (READY_STATES.has(meta.status)) wake?.();
    });
    try {
      pushed ??= this.notifier?.latest(this.id);
      // For a task this process has just sent, the first wait goes before any read: our worker
      // usually reports within it, and then the store is never read (each read is a Cassandra
      // query). An older task is read at once — unless this process sent it to a route whose
      // workers push: its push is kept for this handle, so no push yet means not done yet.
      let readNow = !this.notifier || (Date.now() >= this.pushExpectedUntil && !(this.pushExpectedUntil > 0 && this.routePushes()));
      for (;;) {
        if (pushed && READY_STATES.has(pushed.status)) return this.settle(pushed, propagate);
        const meta = readNow ? await this.readQuietly((err) => (lastError = err)) : null;
        if (meta && READY_STATES.has(meta.status)) return this.settle(meta, propagate);
        if (pushed && READY_STATES.has(pushed.status)) return this.settle(pushed, propagate);
        const remaining = deadline - Date.now();
        if (remaining <= 0) {
          const timeout = new TaskTimeoutError(this.id, options.timeout as number);
          if (lastError) (timeout as Error & { cause?: unknown }).cause = lastError;
          throw timeout;
        }
        // the route's workers push (ours): the push ends the wait, reads are only a safety net
        const pushedRoute = this.routePushes();
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(pushedRoute ? PUSHED_ROUTE_POLL_MS : interval, remaining));
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = null;
        if (readNow && !pushedRoute) interval = Math.min(MAX_POLL_MS, interval * 1.5);
        readNow = true;
      }
    } finally {
      unsubscribeStore?.();
      unsubscribePush?.();
    }
  }

  /** Whether the route this process sent the task to has workers that push results (a push came lately). */
  private routePushes(): boolean {
    return this.route !== undefined && this.notifier?.pushesFrom(this.route) === true;
  }

  /**
   * One read of the store; a store that is briefly unreachable is waited out like a pending task,
   * a configuration error is not.
   */
  private async readQuietly(onError: (err: unknown) => void): Promise<TaskMeta | null> {
    try {
      return await this.info();
    } catch (err) {
      if (err instanceof CeleryConfigError) throw err;
      onError(err);
      return null;
    }
  }

  private settle(meta: TaskMeta, propagate: boolean): T {
    if (propagate && PROPAGATE_STATES.has(meta.status)) {
      const exc = isExceptionInfo(meta.result) ? meta.result : { exc_type: 'Exception', exc_message: [String(meta.result)], exc_module: null };
      const message = Array.isArray(exc.exc_message) ? exc.exc_message : [exc.exc_message];
      throw new TaskFailedError(this.id, meta.status, exc.exc_type, message, exc.exc_module ?? null, meta.traceback);
    }
    return meta.result as T;
  }
}

/**
 * A group's results (Celery's `GroupResult`): from `producer.group(...)`, or named in a `children`
 * column (Celery's tuple `[[id, parent], [members]]`). Celery's Cassandra backend cannot save or
 * restore groups (`GroupResult.save()` raises there), so a group is only known from either.
 */
export class GroupResult {
  constructor(
    readonly id: string,
    readonly results: (AsyncResult | GroupResult)[],
    readonly parent: AsyncResult | null = null,
  ) {}

  /**
   * The members' values, in member order, as Celery's `join()`: each member is waited for in
   * turn, and the first (in order) that fails rejects. `timeout` is for the whole group.
   */
  async get(options: GetOptions = {}): Promise<unknown[]> {
    const deadline = options.timeout === undefined ? Infinity : Date.now() + options.timeout;
    const values: unknown[] = [];
    for (const r of this.results) {
      const remaining = deadline - Date.now();
      values.push(await r.get({ ...options, timeout: remaining === Infinity ? undefined : Math.max(0, remaining) }));
    }
    return values;
  }

  /** True when every member is in a ready state (SUCCESS, FAILURE, REVOKED). */
  async ready(): Promise<boolean> {
    return (await Promise.all(this.results.map((r) => r.ready()))).every(Boolean);
  }

  /** True when every member succeeded. */
  async successful(): Promise<boolean> {
    return (await Promise.all(this.results.map((r) => r.successful()))).every(Boolean);
  }

  /** True when any member failed. */
  async failed(): Promise<boolean> {
    return (await Promise.all(this.results.map((r) => r.failed()))).some(Boolean);
  }

  /** How many members succeeded (Celery's `completed_count()`). */
  async completedCount(): Promise<number> {
    return (await Promise.all(this.results.map((r) => r.successful()))).filter(Boolean).length;
  }
}
