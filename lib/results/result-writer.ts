import type { Logger } from '@nestjs/common';
import { checkExpiresSeconds, ResultToStore, TaskMeta } from '../protocol/result-row';
import { READY_STATES } from '../protocol/states';
import type { ResultStore } from './result-store.interface';
import { classifyStoreError, StoreErrorClass } from './store-errors';

/**
 * How a durable store ended: written; skipped because a SUCCESS was already stored; given up
 * (the worker is stopping: the message goes back); or `unstorable`: the store refused the result
 * for good, and `stored` is the FAILURE written in its place (null when even that was refused).
 */
export type StoreOutcome =
  | { kind: 'stored' }
  | { kind: 'kept'; meta: TaskMeta }
  | { kind: 'abandoned' }
  | { kind: 'unstorable'; reason: string; stored: ResultToStore | null };

type Attempt = Exclude<StoreOutcome, { kind: 'unstorable' }> | { kind: 'refused'; error: StoreErrorClass; message: string };

/** Told of every store attempt (how long it took, how it ended) and of every retry after a transient error (metrics). */
export interface StoreObserver {
  storeAttempted(seconds: number, outcome: 'stored' | 'kept' | 'error'): void;
  storeRetried(): void;
}

const FIRST_DELAY_MS = 100;
const MAX_DELAY_MS = 5000;

/**
 * Writes results for the worker. A transient error (the store is down, slow, overloaded) is retried
 * with back-off for as long as the worker runs: the message stays unacknowledged meanwhile, and once
 * every prefetched message waits so, the broker stops delivering. A permanent error (too large, not
 * allowed, invalid) is never retried: a FAILURE saying why is stored in the result's place when the
 * store takes it. A stored SUCCESS is never replaced (Celery 5.7's rule; checked first when asked).
 *
 * Non-final states (STARTED, RETRY) are always checked first, whatever `checkFirst` says: a late
 * STARTED or RETRY (a duplicate delivery, a task id published twice) must never hide a stored
 * SUCCESS. One refused for good is not replaced by a FAILURE: the task has not failed, its state
 * just goes unrecorded (`unstorable` with `stored: null`), and its final state is stored later.
 */
export class ResultWriter {
  /** Results whose first write failed and that are being retried now (the health's store backlog). */
  private retrying = 0;

  constructor(
    private readonly store: ResultStore,
    private readonly logger: Logger,
    private readonly stopping: () => boolean,
    private readonly observer: StoreObserver | null = null,
  ) {}

  /** How many results wait for the store to come back (retried with back-off). */
  get backlog(): number {
    return this.retrying;
  }

  async write(result: ResultToStore, checkFirst: boolean): Promise<StoreOutcome> {
    const final = READY_STATES.has(result.status);
    const first = await this.attempt(result, checkFirst || !final);
    if (first.kind !== 'refused') return first;
    const reason = `${first.message} (${first.error.label})`;
    if (!final) {
      this.logger.warn(`The ${result.status} state of ${result.taskId} cannot be stored: ${reason}; not recorded`);
      return { kind: 'unstorable', reason, stored: null };
    }
    this.logger.warn(`The ${result.status} result of ${result.taskId} cannot be stored: ${reason}; storing a FAILURE that says so`);
    const failure = unstorableFailure(result, first.message, first.error.tooLarge);
    // a FAILURE never replaces a stored SUCCESS, so this write always checks first
    const second = await this.attempt(failure, true);
    if (second.kind === 'refused') {
      return { kind: 'unstorable', reason: `${reason}; the FAILURE in its place was refused too: ${second.message} (${second.error.label})`, stored: null };
    }
    if (second.kind === 'stored') return { kind: 'unstorable', reason, stored: failure };
    return second;
  }

  /** One result: retried while the error is transient, until stored, kept, refused or stopping. */
  private async attempt(result: ResultToStore, checkFirst: boolean): Promise<Attempt> {
    let delay = FIRST_DELAY_MS;
    let backlogged = false;
    try {
      for (let attempt = 1; ; attempt++) {
        const outcome = await this.tryOnce(result, checkFirst, attempt);
        if (outcome !== 'again') return outcome;
        if (!backlogged) {
          backlogged = true;
          this.retrying++;
        }
        this.observer?.storeRetried();
        await new Promise((resolve) => setTimeout(resolve, delay));
        delay = Math.min(MAX_DELAY_MS, delay * 2);
      }
    } finally {
      if (backlogged) this.retrying--;
    }
  }

  /** One write: its outcome, or 'again' after a transient error. */
  private async tryOnce(result: ResultToStore, checkFirst: boolean, attempt: number): Promise<Attempt | 'again'> {
    const observer = this.observer;
    const t0 = observer ? performance.now() : 0;
    try {
      const kept = checkFirst ? await this.store.storeUnlessSucceeded(result) : await this.store.store(result).then(() => null);
      observer?.storeAttempted((performance.now() - t0) / 1000, kept ? 'kept' : 'stored');
      // a kept SUCCESS after a failed attempt is usually that attempt's own write, landed after its reply was lost
      if (attempt > 1) this.logger.log(`${kept ? 'Found the stored SUCCESS' : 'Stored the result'} of ${result.taskId} after ${attempt} attempts`);
      return kept ? { kind: 'kept', meta: kept } : { kind: 'stored' };
    } catch (err) {
      observer?.storeAttempted((performance.now() - t0) / 1000, 'error');
      const error = classifyStoreError(err);
      const message = err instanceof Error ? err.message : String(err);
      if (error.kind === 'permanent') return { kind: 'refused', error, message };
      if (this.stopping()) {
        this.logger.warn(`Storing the result of ${result.taskId} failed while stopping: ${message}`);
        return { kind: 'abandoned' };
      }
      if (attempt === 1 || attempt % 10 === 0) {
        const unknown = error.known ? '' : ' (an error not known to be transient or permanent: treated as transient)';
        this.logger.warn(`Storing the result of ${result.taskId} failed (attempt ${attempt}, ${error.label}${unknown}): ${message}; retrying with back-off`);
      }
      return 'again';
    }
  }
}

/**
 * The FAILURE stored for a result the store refused. Python's `AsyncResult.get()` raises it as a
 * builtin exception (Celery rebuilds `exc_module` + `exc_type` from `sys.modules`, and `builtins` is
 * always there): `ValueError` for a result that is too large (the value is what is wrong),
 * `RuntimeError` for anything else (the store refused the write).
 */
export function unstorableFailure(result: ResultToStore, why: string, tooLarge: boolean): ResultToStore {
  const message = `The ${result.status} result of task ${result.taskId} was not stored: ${why}`;
  return {
    taskId: result.taskId,
    status: 'FAILURE',
    result: { exc_type: tooLarge ? 'ValueError' : 'RuntimeError', exc_message: [message], exc_module: 'builtins' },
    traceback: null,
    children: [],
    // the row it stands for would have expired and carried these; so does the FAILURE (without
    // args and kwargs when the row was too large: they may be what made it so)
    ...(validExpiry(result) !== undefined ? { expiresSeconds: result.expiresSeconds } : {}),
    ...(result.extended ? { extended: tooLarge ? { ...result.extended, args: null, kwargs: null } : result.extended } : {}),
  };
}

/** The result's `expiresSeconds` when the store takes it; undefined when absent or refused. */
function validExpiry(result: ResultToStore): number | undefined {
  try {
    return checkExpiresSeconds(result);
  } catch {
    return undefined;
  }
}
