import type { Logger } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import type { TaskContext } from '../decorators/task-context.decorator';
import type { RegisteredTask } from '../discovery/task.registry';
import { CanvasParent, chordBodyCanvas, chordBodyFailureTargets, chordErrorOf, chordHeaderIds, chordState, ChordUnlockCall, errbackCanvas, parseChordUnlock, PublishStep, remainingChainIds } from '../protocol/canvas-apply';
import type { ExceptionInfo } from '../protocol/exceptions';
import type { ResultToStore, TaskMeta } from '../protocol/result-row';
import type { StoreOutcome } from '../results/result-writer';
import { WorkerShutdown } from '../errors/task-exceptions';

/** Celery's builtin that completes a chord on a backend without native chords (Cassandra): wire spec §4.6. */
export const CHORD_UNLOCK_TASK = 'celery.chord_unlock';

export interface ChordUnlockDeps {
  /** Reads the newest state of several tasks in one query. */
  getTaskMetas(ids: readonly string[]): Promise<TaskMeta[]>;
  publishCanvas(steps: readonly PublishStep[]): Promise<void>;
  storeDurably(result: ResultToStore, checkFirst: boolean): Promise<StoreOutcome>;
  logger: Pick<Logger, 'log' | 'warn' | 'error'>;
}

/**
 * `celery.chord_unlock(group_id, callback, interval=None, max_retries=None, result=None)` as a
 * registered task (`app/builtins.py::add_unlock_chord_task`): reads every header result in one
 * query; while any is not ready it retries itself in `interval` seconds (default 1, for ever by
 * default) through the worker's retry path; once all are ready it publishes the body with the
 * values in header order prepended — or, when a header task failed, stores Celery's `ChordError`
 * on the body's id (and on its chain), and sends the body's errbacks.
 */
export function chordUnlockTask(deps: ChordUnlockDeps): RegisteredTask {
  return {
    name: CHORD_UNLOCK_TASK,
    target: 'nestjs-celery builtin celery.chord_unlock',
    queue: null,
    ignoreResult: true,
    // Celery 5.7 adds `_chord_unlock_exchange_type` (kept for its retries; ours keep every kwarg as it came)
    params: { names: ['group_id', 'callback', 'interval', 'max_retries', 'result', '_chord_unlock_exchange_type'], restIndex: null },
    contextIndex: 6,
    options: { maxRetries: null, ignoreResult: true },
    handler: (groupId, callback, interval, maxRetries, result, _exchangeType, ctx) => unlock(deps, [groupId, callback, interval, maxRetries, result], ctx as TaskContext),
  };
}

async function unlock(deps: ChordUnlockDeps, raw: unknown[], ctx: TaskContext): Promise<null> {
  const call = parseChordUnlock(raw[0], raw[1], raw[2], raw[3], raw[4]);
  let metas: TaskMeta[];
  const ids = chordHeaderIds(call.header);
  try {
    metas = await deps.getTaskMetas(ids);
  } catch (err) {
    return ctx.retry({ countdown: call.interval, maxRetries: call.maxRetries, exc: err });
  }
  const state = chordState(call.header, new Map(metas.map((m) => [m.taskId, m])));
  if (state.kind === 'waiting') return ctx.retry({ countdown: call.interval, maxRetries: call.maxRetries });
  const parent = { id: ctx.id, rootId: ctx.rootId ?? ctx.id };
  if (state.kind === 'ready') {
    try {
      await sendChordBody(deps, call, state.values, parent);
    } catch (err) {
      // never acknowledged without its body sent: looked at again (and sent) after the interval
      deps.logger.warn(`Chord ${call.groupId}: the body could not be sent (${err instanceof Error ? err.message : String(err)}); trying again in ${call.interval} s`);
      return ctx.retry({ countdown: call.interval, maxRetries: call.maxRetries, exc: err });
    }
    return null;
  }
  await failChord(deps, call, state.culpritId, state.error, parent);
  return null;
}

/** Publishes the chord's body with the header values in header order prepended (`callback.delay(values)`); `parent` is the task that completes the chord; `mark` may add headers. */
export async function sendChordBody(deps: Pick<ChordUnlockDeps, 'publishCanvas' | 'logger'>, call: ChordUnlockCall, values: unknown[], parent: CanvasParent, mark: (steps: PublishStep[]) => PublishStep[] = (steps) => steps): Promise<void> {
  await deps.publishCanvas(mark(chordBodyCanvas(call, values, parent, randomUUID).publish));
  deps.logger.log(`Chord ${call.groupId}: ${values.length} header result(s) ready; body ${call.body.task} sent`);
}

/**
 * A header task failed: Celery's `ChordError` is stored on the body's id and on its chain, then the
 * body's errbacks are sent. Throws WorkerShutdown when a row could not be stored because the worker is stopping.
 */
export async function failChord(deps: ChordUnlockDeps, call: ChordUnlockCall, culpritId: string, cause: ExceptionInfo, parent: CanvasParent): Promise<void> {
  const error = chordErrorOf(cause);
  deps.logger.error(`Chord ${call.groupId} failed: header task ${culpritId} raised ${error.exc_message[0] as string}`);
  const targets = chordBodyFailureTargets(call);
  const bodyId = targets.bodyId ?? randomUUID();
  for (const id of [bodyId, ...remainingChainIds(targets.chain)]) {
    const outcome = await deps.storeDurably({ taskId: id, status: 'FAILURE', result: error, traceback: null, children: [] }, true);
    // not stored because the worker is stopping: the message goes back and runs again
    if (outcome.kind === 'abandoned') throw new WorkerShutdown();
  }
  await deps.publishCanvas(errbackCanvas(targets.errbacks, { id: bodyId, rootId: parent.rootId }, randomUUID).publish);
}
