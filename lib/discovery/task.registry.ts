import { Injectable } from '@nestjs/common';
import { TaskRegistrationError } from '../errors/celery.errors';
import type { TaskOptions } from '../decorators/task.decorator';
import type { IsolatedTaskSpec } from '../worker/isolation/protocol';
import type { EnhancedTaskHandler } from '../enhancers/task-enhancers';
import type { ParameterList } from './parameter-names';

/** A discovered task: its name, where it runs and how its arguments bind. */
export interface RegisteredTask {
  name: string;
  /** `ClassName.methodName` of the provider method. */
  target: string;
  queue: string | null;
  ignoreResult: boolean;
  /** The parameters callers bind to (the `@TaskContext()` parameter left out). */
  params: ParameterList;
  /** Where the `@TaskContext()` parameter is, if the method has one. */
  contextIndex?: number | null;
  /** Where an isolated task's code is (`isolate: 'thread'`): the module, its exported class and the method. */
  isolated?: IsolatedTaskSpec | null;
  /** The `@Task()` options (retries, time limits, rate limit, results). */
  options?: TaskOptions;
  /** Calls the method on its DI-managed instance. */
  handler: (...args: unknown[]) => unknown;
  /** Runs the method through the guards, interceptors, pipes and filters that apply to it; null when none does. */
  enhanced?: EnhancedTaskHandler | null;
}

/**
 * The tasks this application knows, filled by the explorer at bootstrap. Injectable, so
 * application code can list and look up tasks (like @nestjs/schedule's SchedulerRegistry).
 */
@Injectable()
export class TaskRegistry {
  private readonly tasks = new Map<string, RegisteredTask>();
  /** Whether a provider injects `CeleryTaskContext` (found at bootstrap): then tasks run in its storage. */
  contextAccessorUsed = false;

  register(task: RegisteredTask): void {
    const existing = this.tasks.get(task.name);
    if (existing) {
      throw new TaskRegistrationError(`Task name "${task.name}" is used twice: by ${existing.target} and by ${task.target}`);
    }
    this.tasks.set(task.name, task);
  }

  get(name: string): RegisteredTask | undefined {
    return this.tasks.get(name);
  }

  has(name: string): boolean {
    return this.tasks.has(name);
  }

  /** Names of all registered tasks, sorted. */
  names(): string[] {
    return [...this.tasks.keys()].sort();
  }

  all(): RegisteredTask[] {
    return [...this.tasks.values()];
  }
}
