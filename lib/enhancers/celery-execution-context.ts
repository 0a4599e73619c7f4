import type { ArgumentsHost } from '@nestjs/common';
import type { TaskContext } from '../decorators/task-context.decorator';

/** The execution context type of a task run: `context.getType<CeleryContextType>() === 'celery'`. */
export type CeleryContextType = 'celery';
export const CELERY_CONTEXT_TYPE: CeleryContextType = 'celery';

/** What a task was called with, as the message carried it (before binding to parameters). */
export interface TaskPayload {
  readonly args: readonly unknown[];
  readonly kwargs: Readonly<Record<string, unknown>>;
}

/**
 * The arguments of a task's execution context are `[payload, task]`, laid out as Nest's RPC
 * transports lay out theirs: `switchToRpc().getData()` is the {@link TaskPayload} and
 * `switchToRpc().getContext()` the running task's {@link TaskContext}. This wrapper reads them by
 * name, as `GqlExecutionContext` does for GraphQL.
 *
 * @example
 * ```ts
 * canActivate(context: ExecutionContext): boolean {
 *   if (context.getType<CeleryContextType>() !== 'celery') return true;
 *   return CeleryExecutionContext.create(context).getTask().origin !== 'gen1@untrusted';
 * }
 * ```
 */
export class CeleryExecutionContext {
  private constructor(private readonly host: ArgumentsHost) {}

  static create(host: ArgumentsHost): CeleryExecutionContext {
    if (host.getType<string>() !== CELERY_CONTEXT_TYPE) {
      throw new TypeError(`CeleryExecutionContext.create() needs the context of a task run (type 'celery'), got type '${host.getType<string>()}'`);
    }
    return new CeleryExecutionContext(host);
  }

  /** The running task's request (id, name, origin, headers, retries, signal, retry()). */
  getTask(): TaskContext {
    return this.host.getArgByIndex<TaskContext>(1);
  }

  /** The positional and keyword arguments as sent. */
  getPayload(): TaskPayload {
    return this.host.getArgByIndex<TaskPayload>(0);
  }
}
