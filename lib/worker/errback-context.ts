import type { TaskFailure } from '../decorators/task-context.decorator';
import type { PublishStep } from '../protocol/canvas-apply';
import { isExceptionInfo } from '../protocol/exceptions';
import { parsePythonJson, pythonJsonDumps } from '../protocol/python-json';
import type { TaskMeta } from '../protocol/result-row';
import type { DecodedTask } from '../protocol/task-message';

/**
 * The header a NestJS worker adds to the errbacks it sends: the failed task's request (id, name,
 * args, kwargs) as one JSON string, for errbacks that run where the row has no `resultExtended`
 * columns. Python workers ignore it (it shows up in their `task.request`).
 */
export const FAILED_REQUEST_HEADER = 'nestjs_celery_failed_request';

/**
 * Largest header value carried, in characters: AMQP sends a message's headers in one frame (RabbitMQ's
 * frame_max, 128 KiB by default), so large arguments would make the errback impossible to publish.
 * Beyond it only the id and the name are carried (the errback reads args / kwargs from an extended row, or null).
 */
export const FAILED_REQUEST_HEADER_MAX = 8192;

/** The errbacks to publish, each carrying the failed task's request in {@link FAILED_REQUEST_HEADER}. */
export function withFailedRequest(steps: readonly PublishStep[], failed: Pick<DecodedTask, 'id' | 'task' | 'args' | 'kwargs'>): PublishStep[] {
  if (steps.length === 0) return [];
  let value = pythonJsonDumps({ id: failed.id, name: failed.task, args: failed.args, kwargs: failed.kwargs });
  if (value.length > FAILED_REQUEST_HEADER_MAX) value = pythonJsonDumps({ id: failed.id, name: failed.task });
  return steps.map((step) => ({ ...step, spec: { ...step.spec, headers: { ...step.spec.headers, [FAILED_REQUEST_HEADER]: value } } }));
}

/** The id of the task an errback was called for: Celery sends it as `parent_id` and as the first argument. */
export function failedTaskIdOf(task: Pick<DecodedTask, 'parentId' | 'args'>): string | null {
  if (task.parentId) return task.parentId;
  return typeof task.args[0] === 'string' && task.args[0] ? task.args[0] : null;
}

/**
 * What `ctx.failure()` answers from the failed task's newest row and the errback's headers: null
 * unless the row is a FAILURE; the request's name, args and kwargs from the row's extended
 * columns, else from our header when it names the same task.
 */
export function taskFailureOf(meta: TaskMeta, headers: Readonly<Record<string, unknown>>): TaskFailure | null {
  if (meta.status !== 'FAILURE') return null;
  const carried = carriedRequest(headers[FAILED_REQUEST_HEADER], meta.taskId);
  const ext = meta.extended;
  const exc = isExceptionInfo(meta.result) ? meta.result : null;
  const message = exc === null ? [meta.result] : Array.isArray(exc.exc_message) ? exc.exc_message : [exc.exc_message];
  return {
    request: {
      id: meta.taskId,
      name: ext?.name ?? carried?.name ?? null,
      args: ext?.args ?? carried?.args ?? null,
      kwargs: ext?.kwargs ?? carried?.kwargs ?? null,
    },
    exception: { type: exc?.exc_type ?? 'Exception', module: exc?.exc_module ?? 'builtins', message },
    traceback: meta.traceback,
  };
}

interface CarriedRequest {
  name: string | null;
  args: unknown[] | null;
  kwargs: Record<string, unknown> | null;
}

/** Our header, read defensively: anything malformed, or naming another task, is ignored. */
function carriedRequest(header: unknown, taskId: string): CarriedRequest | null {
  if (typeof header !== 'string') return null;
  let value: unknown;
  try {
    value = parsePythonJson(header);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  const v = value as Record<string, unknown>;
  if (v.id !== taskId) return null;
  return {
    name: typeof v.name === 'string' ? v.name : null,
    args: Array.isArray(v.args) ? v.args : null,
    kwargs: typeof v.kwargs === 'object' && v.kwargs !== null && !Array.isArray(v.kwargs) ? (v.kwargs as Record<string, unknown>) : null,
  };
}
