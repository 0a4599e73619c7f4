import { Injectable } from '@nestjs/common';
import { AsyncLocalStorage } from 'node:async_hooks';
import type { TaskContext } from '../decorators/task-context.decorator';
import { CeleryError } from '../errors/celery.errors';

const storage = new AsyncLocalStorage<TaskContext>();

/** Runs `fn` with `ctx` as the current task of its whole async call tree. */
export function runInTaskContext<T>(ctx: TaskContext, fn: () => T): T {
  return storage.run(ctx, fn);
}

/** The running task's context, or undefined outside a task. */
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
    if (!ctx) throw new CeleryError('CeleryTaskContext.get() was called outside a running task');
    return ctx;
  }

  /** The current task's context, or undefined outside a task. */
  tryGet(): TaskContext | undefined {
    return storage.getStore();
  }
}
