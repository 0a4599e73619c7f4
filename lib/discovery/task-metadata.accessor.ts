import { Injectable, Type } from '@nestjs/common';
import { Reflector } from '@nestjs/core';
import { TASK_METADATA } from '../celery.constants';
import type { TaskMetadata } from '../decorators/task.decorator';

/** The one place that reads `@Task()` metadata, and applies the naming rule. */
@Injectable()
export class TaskMetadataAccessor {
  constructor(private readonly reflector: Reflector) {}

  /** Metadata of a method (the function itself), or undefined when it is not a task. */
  getTaskMetadata(method: Function): TaskMetadata | undefined {
    return this.reflector.get<TaskMetadata | undefined>(TASK_METADATA, method);
  }

  /** Metadata of `type.prototype[methodName]`, for typed references from the producer. */
  getTaskMetadataOf(type: Type<unknown>, methodName: string): TaskMetadata | undefined {
    const method = (type.prototype as Record<string, unknown>)[methodName];
    return typeof method === 'function' ? this.getTaskMetadata(method) : undefined;
  }
}

/** The naming rule: the explicit name, else `<ClassName>.<methodName>`. */
export function taskNameOf(className: string, metadata: TaskMetadata): string {
  return metadata.name ?? `${className}.${metadata.methodName}`;
}
