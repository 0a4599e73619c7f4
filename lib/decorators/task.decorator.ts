import { SetMetadata } from '@nestjs/common';
import { TASK_METADATA } from '../celery.constants';

/** Options of `@Task()`. */
export interface TaskOptions {
  /** Task name; default `<ClassName>.<methodName>`. Same as the first argument of `@Task(name)`. */
  name?: string;
  /** Queue the `Producer` sends this task to by default. Default: the module's `defaultQueue`. */
  queue?: string;
  /** Store no result (Celery's `ignore_result`). Default false. */
  ignoreResult?: boolean;
  /**
   * Parameter names, for keyword arguments (`kwargs`) sent by Python callers. Default: read from
   * the method's own parameter list; give them when a build step renames parameters.
   */
  params?: string[];
}

export interface TaskMetadata extends TaskOptions {
  methodName: string;
}

/**
 * Marks a provider method as a Celery task. The worker runs it on the DI-managed instance when a
 * message with this task name arrives; positional `args` map onto the parameters in order and
 * `kwargs` by parameter name. Without a name the task is called `<ClassName>.<methodName>`.
 *
 * @example
 * ```ts
 * @Injectable()
 * export class TasksService {
 *   @Task('tasks.sortWords')
 *   sortWords(text: string, capitalize = false): string { ... }
 * }
 * ```
 */
export function Task(nameOrOptions?: string | TaskOptions, options: TaskOptions = {}): MethodDecorator {
  const merged: TaskOptions = typeof nameOrOptions === 'string' ? { ...options, name: nameOrOptions } : { ...nameOrOptions, ...options };
  return (target, propertyKey, descriptor) => {
    const metadata: TaskMetadata = { ...merged, methodName: String(propertyKey) };
    return SetMetadata(TASK_METADATA, metadata)(target, propertyKey, descriptor);
  };
}
