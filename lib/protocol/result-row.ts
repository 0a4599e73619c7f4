import { DEFAULT_JSON_OPTIONS, JsonOptions, parsePythonJson, pythonJsonDumps } from './python-json';
import { EXCEPTION_STATES, TaskState } from './states';
import type { DecodedTask } from './task-message';
import { isExceptionInfo } from './exceptions';
import { InvalidResultError } from '../errors/celery.errors';

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
  /** The `resultExtended` columns; absent when the row has none (Celery's own rows never do). */
  extended?: ExtendedRow;
}

/**
 * Celery's `result_extended` fields (`Backend._get_result_meta`: the request's task name, args,
 * kwargs, worker hostname, retries and delivery routing key), plus the parent and group ids that
 * Celery's key-value backends keep in every meta. Celery's Cassandra table has no column for any
 * of them; with `resultExtended` on they go to extra nullable columns (see CassandraResultStore).
 */
export interface ExtendedResult {
  name: string | null;
  args: unknown[] | null;
  kwargs: Record<string, unknown> | null;
  /** The worker's hostname (Celery's `request.hostname`, e.g. `celery@host`). */
  worker: string | null;
  retries: number | null;
  /** The routing key the message was delivered with (Celery's `delivery_info['routing_key']`). */
  queue: string | null;
  parentId?: string | null;
  groupId?: string | null;
}

/**
 * The `resultExtended` fields of a run, taken from its request as Celery's `_get_result_meta` does:
 * `name` the task name, `worker` the worker's hostname (`name@host`), `queue` the routing key the
 * message was delivered with, `retries` the request's count (0 on the first run).
 */
export function extendedResultOf(
  task: Pick<DecodedTask, 'task' | 'args' | 'kwargs' | 'retries' | 'parentId' | 'group'>,
  worker: string,
  routingKey: string | null,
): ExtendedResult {
  return { name: task.task, args: task.args, kwargs: task.kwargs, worker, retries: task.retries, queue: routingKey, parentId: task.parentId, groupId: task.group };
}

/** The extended fields as stored: args and kwargs are JSON text like the other blobs. */
export interface ExtendedRow {
  name: string | null;
  args: Buffer | null;
  kwargs: Buffer | null;
  worker: string | null;
  retries: number | null;
  queue: string | null;
  parentId: string | null;
  groupId: string | null;
}

/** What a reader learns about a task: Celery's meta, with PENDING for "no row". */
export interface TaskMeta {
  taskId: string;
  status: TaskState;
  result: unknown;
  traceback: string | null;
  children: unknown;
  dateDone: Date | null;
  /** The `resultExtended` fields when the row has them, else absent. */
  extended?: ExtendedResult;
}

/**
 * One state to store. Every state Celery stores goes through this: STARTED (result
 * `{pid, hostname}`), RETRY (the exception dict and traceback), SUCCESS, FAILURE, REVOKED.
 */
export interface ResultToStore {
  taskId: string;
  status: TaskState;
  result: unknown;
  traceback?: string | null;
  /** `[]` for a task run by a worker; `null` when no request exists (Celery's revoke command). */
  children?: unknown;
  /**
   * Seconds this row lives (the row's `USING TTL`), overriding `cassandra.entryTtl`; 0 = never
   * expires. Absent: `cassandra.entryTtl` (or no expiry). Give every state of a task the same
   * value: each state is its own row, and the newest row that has not expired is what readers see.
   */
  expiresSeconds?: number;
  /** The `resultExtended` fields; stored only when the store has `resultExtended` on. */
  extended?: ExtendedResult;
}

/** Largest TTL Cassandra takes (20 years). */
export const MAX_TTL_SECONDS = 630_720_000;

/** Checks `expiresSeconds` of a result to store; throws an InvalidResultError naming the task and the value. */
export function checkExpiresSeconds(value: ResultToStore): number | undefined {
  const seconds = value.expiresSeconds;
  if (seconds === undefined) return undefined;
  if (typeof seconds !== 'number' || !Number.isInteger(seconds) || seconds < 0 || seconds > MAX_TTL_SECONDS) {
    throw new InvalidResultError(`task ${value.taskId}: expiresSeconds must be an integer from 0 (never expires) to ${MAX_TTL_SECONDS}, got ${JSON.stringify(seconds)}`);
  }
  return seconds;
}

export function encodeResultRow(value: ResultToStore, dateDone: Date, json: JsonOptions = DEFAULT_JSON_OPTIONS): ResultRow {
  const row: ResultRow = {
    taskId: value.taskId,
    status: value.status,
    result: Buffer.from(pythonJsonDumps(value.result ?? null, json), 'utf8'),
    dateDone,
    traceback: Buffer.from(pythonJsonDumps(value.traceback ?? null, json), 'utf8'),
    children: Buffer.from(pythonJsonDumps(value.children === undefined ? [] : value.children, json), 'utf8'),
  };
  if (value.extended) row.extended = encodeExtended(value.extended, json);
  return row;
}

function encodeExtended(e: ExtendedResult, json: JsonOptions): ExtendedRow {
  const blob = (v: unknown) => (v === null || v === undefined ? null : Buffer.from(pythonJsonDumps(v, json), 'utf8'));
  return {
    name: e.name ?? null,
    args: blob(e.args),
    kwargs: blob(e.kwargs),
    worker: e.worker ?? null,
    retries: e.retries ?? null,
    queue: e.queue ?? null,
    parentId: e.parentId ?? null,
    groupId: e.groupId ?? null,
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
  extended?: ExtendedRow | null;
}): TaskMeta {
  const traceback = decodeBlob(row.traceback, 'traceback', row.taskId);
  const result = decodeBlob(row.result, 'result', row.taskId);
  if (EXCEPTION_STATES.has(row.status) && result !== null && !isExceptionInfo(result)) {
    throw new TypeError(`task ${row.taskId}: ${row.status} row whose result is not an exception dict`);
  }
  const meta: TaskMeta = {
    taskId: row.taskId,
    status: row.status as TaskState,
    result,
    traceback: typeof traceback === 'string' ? traceback : null,
    children: decodeBlob(row.children, 'children', row.taskId),
    dateDone: row.dateDone,
  };
  const e = row.extended;
  // a row written without the extended fields (by Python, or with resultExtended off) has them all null
  if (e && Object.values(e).some((v) => v !== null && v !== undefined)) {
    meta.extended = {
      name: e.name ?? null,
      args: decodeBlob(e.args, 'args', row.taskId) as unknown[] | null,
      kwargs: decodeBlob(e.kwargs, 'kwargs', row.taskId) as Record<string, unknown> | null,
      worker: e.worker ?? null,
      retries: e.retries ?? null,
      queue: e.queue ?? null,
      parentId: e.parentId ?? null,
      groupId: e.groupId ?? null,
    };
  }
  return meta;
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
