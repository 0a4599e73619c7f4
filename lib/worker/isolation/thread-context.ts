/**
 * What a task running in an isolated thread can see of its run. Kept on `globalThis` under a
 * registered symbol, so it is the same slot even when the task's module and the thread's runner
 * were loaded from two copies of this library.
 */

/** The run an isolated thread is executing now. */
export interface IsolatedTaskContext {
  /**
   * Fires on the soft time limit (reason: SoftTimeLimitExceeded), on `abort()` of the run (revoke,
   * shutdown). Inside the thread `signal.aborted`, `signal.reason` and `signal.throwIfAborted()`
   * see an abort at once, even in a loop that never yields to the event loop (the flag is in
   * memory shared with the main thread); `'abort'` listeners and APIs that take the signal react
   * when the task awaits.
   */
  signal: AbortSignal;
  /** The request fields the worker passed with the run (`opts.context` of IsolatedPool.run), cloned. */
  request: Readonly<Record<string, unknown>>;
}

const SLOT = Symbol.for('nestjs-celery.isolated-task');

type Slot = { [SLOT]?: IsolatedTaskContext };

/** The current isolated run, or undefined outside an isolated thread (or between runs). */
export function isolatedTaskContext(): IsolatedTaskContext | undefined {
  return (globalThis as Slot)[SLOT];
}

/** Set by the thread's runner around each run. */
export function setIsolatedTaskContext(context: IsolatedTaskContext | undefined): void {
  (globalThis as Slot)[SLOT] = context;
}
