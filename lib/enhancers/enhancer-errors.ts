import { BadRequestException, ForbiddenException } from '@nestjs/common';
import type { TaskContext } from '../decorators/task-context.decorator';

/**
 * A guard refused the task (Nest's ForbiddenException). Stored as Python's builtin
 * `PermissionError`, so a Python caller's `get()` raises `PermissionError`; the task is a FAILURE
 * (not requeued, not dropped).
 */
export class TaskRefusedError extends Error {
  override name = 'TaskRefusedError';
  readonly excType = 'PermissionError';
  readonly excModule = 'builtins';
}

/**
 * A pipe found the task's arguments invalid (Nest's BadRequestException, what ValidationPipe and
 * the Parse*Pipes throw). Stored as Python's builtin `ValueError`, its message listing every
 * field's problem.
 */
export class InvalidTaskArgumentsError extends Error {
  override name = 'InvalidTaskArgumentsError';
  readonly excType = 'ValueError';
  readonly excModule = 'builtins';
  constructor(
    message: string,
    /** Each problem the pipe reported, e.g. `email must be an email`. */
    readonly problems: readonly string[],
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** The Python-readable error for what a task with enhancers threw: Nest's 403 and 400 mapped, anything else as it is. */
export function taskErrorOf(thrown: unknown, task: TaskContext): unknown {
  if (thrown instanceof ForbiddenException) {
    return new TaskRefusedError(`${task.name}[${task.id}] refused: ${thrown.message}`, { cause: thrown });
  }
  if (thrown instanceof BadRequestException) {
    const problems = problemsOf(thrown);
    return new InvalidTaskArgumentsError(`${task.name}[${task.id}] got invalid arguments: ${problems.join('; ')}`, problems, { cause: thrown });
  }
  return thrown;
}

/** ValidationPipe puts one message per problem in the response's `message` list; other pipes give one message. */
function problemsOf(err: BadRequestException): string[] {
  const response = err.getResponse();
  const message = typeof response === 'object' && response !== null ? (response as { message?: unknown }).message : response;
  if (Array.isArray(message) && message.length > 0) return message.map((m) => String(m));
  return [typeof message === 'string' && message ? message : err.message];
}
