import { Injectable } from '@nestjs/common';
import { AsyncLocalStorage } from 'node:async_hooks';
import type { TaskContext } from '../decorators/task-context.decorator';
import { CeleryError } from '../errors/celery.errors';

/**
 * The storage behind `CeleryTaskContext` and `currentTask()`. It is used only when the application
 * asks for it (`worker.taskContextStorage`, on by default when a provider injects
 * `CeleryTaskContext`): on Node 20 a running AsyncLocalStorage turns on promise hooks for the whole
 * process, which made every promise several times dearer in a micro-benchmark. `@TaskContext()`
 * parameters never need it.
 */
const storage = new AsyncLocalStorage<TaskContext>();

/** Runs `fn` with `ctx` as the current task of its whole async call tree (when `useStorage`), or just runs it. */
export function runInTaskContext<T>(ctx: TaskContext, fn: () => T, useStorage: boolean): T {
  return useStorage ? storage.run(ctx, fn) : fn();
}

const OUTSIDE = 'was called outside a running task (or the task context storage is off: it is on when a provider injects CeleryTaskContext, or with worker.taskContextStorage: true)';

/**
 * The running task's context, or undefined outside a task. Needs the task context storage
 * (`worker.taskContextStorage: true`, or a provider that injects `CeleryTaskContext`).
 */
export function currentTask(): TaskContext | undefined {
  return storage.getStore();
}

/**
 * The running task's context, for services a task calls (AsyncLocalStorage: it follows the task's
 * async call tree, so concurrent tasks each see their own). Injectable; needs no scope change.
 */
@Injectable()
export class CeleryTaskContext {
  /** The current task's context; throws when called outside a task. */
  get(): TaskContext {
    const ctx = storage.getStore();
    if (!ctx) throw new CeleryError(`CeleryTaskContext.get() ${OUTSIDE}`);
    return ctx;
  }

  /** The current task's context, or undefined outside a task. */
  tryGet(): TaskContext | undefined {
    return storage.getStore();
  }
}
