import { DEFAULT_JSON_OPTIONS, JsonOptions, parsePythonJson, pythonJsonDumps } from './python-json';
import { EXCEPTION_STATES, TaskState } from './states';
import { isExceptionInfo } from './exceptions';

/**
 * One row of Celery's Cassandra result table (wire spec §4): the blobs are JSON text, never empty
 * (`null`, `[]`), and `result` holds only the value or the exception dict, not a meta dict.
 */
export interface ResultRow {
  taskId: string;
  status: TaskState;
  result: Buffer;
  dateDone: Date;
  traceback: Buffer;
  children: Buffer;
}

/** What a reader learns about a task: Celery's meta, with PENDING for "no row". */
export interface TaskMeta {
  taskId: string;
  status: TaskState;
  result: unknown;
  traceback: string | null;
  children: unknown;
  dateDone: Date | null;
}

export interface ResultToStore {
  taskId: string;
  status: TaskState;
  result: unknown;
  traceback?: string | null;
  /** `[]` for a task run by a worker; `null` when no request exists (Celery's revoke command). */
  children?: unknown;
}

export function encodeResultRow(value: ResultToStore, dateDone: Date, json: JsonOptions = DEFAULT_JSON_OPTIONS): ResultRow {
  return {
    taskId: value.taskId,
    status: value.status,
    result: Buffer.from(pythonJsonDumps(value.result ?? null, json), 'utf8'),
    dateDone,
    traceback: Buffer.from(pythonJsonDumps(value.traceback ?? null, json), 'utf8'),
    children: Buffer.from(pythonJsonDumps(value.children === undefined ? [] : value.children, json), 'utf8'),
  };
}

/** Reads a stored row; tolerates CQL NULL blobs as Celery's reader does. Throws on undecodable blobs. */
export function decodeResultRow(row: {
  taskId: string;
  status: string;
  result: Buffer | null;
  dateDone: Date | null;
  traceback: Buffer | null;
  children: Buffer | null;
}): TaskMeta {
  const traceback = decodeBlob(row.traceback, 'traceback', row.taskId);
  const result = decodeBlob(row.result, 'result', row.taskId);
  if (EXCEPTION_STATES.has(row.status) && result !== null && !isExceptionInfo(result)) {
    throw new TypeError(`task ${row.taskId}: ${row.status} row whose result is not an exception dict`);
  }
  return {
    taskId: row.taskId,
    status: row.status as TaskState,
    result,
    traceback: typeof traceback === 'string' ? traceback : null,
    children: decodeBlob(row.children, 'children', row.taskId),
    dateDone: row.dateDone,
  };
}

export function pendingMeta(taskId: string): TaskMeta {
  return { taskId, status: 'PENDING', result: null, traceback: null, children: null, dateDone: null };
}

function decodeBlob(blob: Buffer | null, column: string, taskId: string): unknown {
  if (blob === null || blob === undefined) return null;
  try {
    return parsePythonJson(blob.toString('utf8'));
  } catch (err) {
    throw new TypeError(`task ${taskId}: column ${column} is not JSON text (${(err as Error).message})`);
  }
}

/**
 * A result as a message: Celery's rpc-backend body `{"task_id", "status", "result", "traceback",
 * "children"}`. The worker pushes it to the producer's reply queue after storing the row, so
 * `AsyncResult.get()` need not poll; Cassandra stays the durable record.
 */
export function encodeResultMessage(value: ResultToStore, json: JsonOptions = DEFAULT_JSON_OPTIONS): Buffer {
  const message = {
    task_id: value.taskId,
    status: value.status,
    result: value.result ?? null,
    traceback: value.traceback ?? null,
    children: value.children === undefined ? [] : value.children,
  };
  return Buffer.from(pythonJsonDumps(message, json), 'utf8');
}

export function decodeResultMessage(body: Buffer): TaskMeta {
  const m = parsePythonJson(body.toString('utf8')) as Record<string, unknown>;
  if (typeof m !== 'object' || m === null || typeof m.task_id !== 'string' || typeof m.status !== 'string') {
    throw new TypeError('result message without task_id and status');
  }
  return {
    taskId: m.task_id,
    status: m.status as TaskState,
    result: m.result ?? null,
    traceback: typeof m.traceback === 'string' ? m.traceback : null,
    children: m.children ?? null,
    dateDone: null,
  };
}
