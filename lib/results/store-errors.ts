import { errors, types } from 'cassandra-driver';
import { CeleryConnectionError, InvalidResultError, ResultTooLargeError } from '../errors/celery.errors';
import type { ResultRow } from '../protocol/result-row';

/**
 * Whether writing a result again can succeed. `transient`: the store is unreachable, slow or
 * overloaded, or its reply was not trustworthy; retrying later will do. `permanent`: the store
 * understood the write and refused it (too large, not allowed, invalid); the same write always
 * fails, so retrying would loop forever.
 */
export type StoreErrorKind = 'transient' | 'permanent';

export interface StoreErrorClass {
  kind: StoreErrorKind;
  /** What the error is, for logs: the driver's class and, for a server error, its code name. */
  label: string;
  /** The write was refused for its size (a FAILURE saying so fits where the result did not). */
  tooLarge: boolean;
  /** False when nothing here knows the error; it is then treated as transient, so no result is lost. */
  known: boolean;
}

const CODE_NAMES = new Map<number, string>(Object.entries(types.responseErrorCodes as unknown as Record<string, number>).map(([name, code]) => [code, name]));

/** Server error codes after which the same write never succeeds (native protocol spec v4, §9). */
const PERMANENT_CODES = new Set([
  types.responseErrorCodes.syntaxError,
  types.responseErrorCodes.unauthorized,
  types.responseErrorCodes.invalid,
  types.responseErrorCodes.configError,
  types.responseErrorCodes.alreadyExists,
  types.responseErrorCodes.functionFailure,
  types.responseErrorCodes.badCredentials,
]);

/** Server error codes that a later attempt may not get: overload, timeouts, replicas down or failing. */
const TRANSIENT_CODES = new Set([
  types.responseErrorCodes.serverError,
  types.responseErrorCodes.unavailableException,
  types.responseErrorCodes.overloaded,
  types.responseErrorCodes.isBootstrapping,
  types.responseErrorCodes.truncateError,
  types.responseErrorCodes.writeTimeout,
  types.responseErrorCodes.readTimeout,
  types.responseErrorCodes.readFailure,
  types.responseErrorCodes.writeFailure,
  types.responseErrorCodes.unprepared,
  types.responseErrorCodes.clientWriteFailure,
  0x1700, // CAS_WRITE_UNKNOWN (protocol v5)
]);

/**
 * How the server says a write is too large, whatever the code it sends it with. Measured on 5.0.8
 * over protocol v4: a blob of 15.99 MiB is stored, one of 16 MiB gets INVALID "Request is too big:
 * length 16777308 exceeds maximum allowed length 16777216." (native_transport_max_frame_size, which
 * binds before the mutation limit) and the connection stays usable. Also matched: "Rejected an
 * oversized mutation (…/…)" (4.0+, above half of commitlog_segment_size; what large v5 requests
 * get) and "Mutation of … bytes is too large for the maximum size of …" (3.x).
 */
const TOO_LARGE = /oversized mutation|request is too big|is too large for the maximum size|exceeds maximum allowed length/i;

/** Socket error codes of Node: the connection failed, not the write. */
const SOCKET_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ERR_SOCKET_CLOSED']);

/** Tells a store error that may go away from one that never will. Unknown errors are transient. */
export function classifyStoreError(err: unknown): StoreErrorClass {
  if (err instanceof ResultTooLargeError) return permanent('ResultTooLargeError', true);
  if (err instanceof InvalidResultError) return permanent('InvalidResultError', false);
  if (err instanceof CeleryConnectionError) return transient('CeleryConnectionError');
  if (err instanceof errors.ResponseError) {
    const label = `ResponseError ${CODE_NAMES.get(err.code) ?? 'unknown'} (0x${err.code.toString(16).padStart(4, '0')})`;
    if (TOO_LARGE.test(err.message)) return permanent(label, true);
    if (PERMANENT_CODES.has(err.code)) return permanent(label, false);
    if (TRANSIENT_CODES.has(err.code)) return transient(label);
    return { kind: 'transient', label, tooLarge: false, known: false };
  }
  if (err instanceof errors.NoHostAvailableError) return transient('NoHostAvailableError');
  if (err instanceof errors.OperationTimedOutError) return transient('OperationTimedOutError');
  if (err instanceof errors.BusyConnectionError) return transient('BusyConnectionError');
  // the driver refused the values before sending them: the same values are refused again
  if (err instanceof errors.ArgumentError) return permanent('ArgumentError', false);
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && SOCKET_CODES.has(code)) return transient(`socket error ${code}`);
  const name = err instanceof Error ? err.name : typeof err;
  return { kind: 'transient', label: name, tooLarge: false, known: false };
}

function permanent(label: string, tooLarge: boolean): StoreErrorClass {
  return { kind: 'permanent', label, tooLarge, known: true };
}

function transient(label: string): StoreErrorClass {
  return { kind: 'transient', label, tooLarge: false, known: true };
}

/**
 * Default `worker.maxResultBytes`: half of what one Cassandra write takes by default (a request
 * frame up to `native_transport_max_frame_size`, 16 MiB; a mutation up to half of
 * `commitlog_segment_size`, 16 MiB), leaving room for the rest of the row and for nodes and
 * services configured lower.
 */
export const DEFAULT_MAX_RESULT_BYTES = 8 * 1024 * 1024;

/** Bytes of a row as stored: its blobs, task id and status, and its resultExtended fields. */
export function encodedRowBytes(row: ResultRow): number {
  const e = row.extended;
  const extended = e ? (e.args?.length ?? 0) + (e.kwargs?.length ?? 0) + Buffer.byteLength((e.name ?? '') + (e.worker ?? '') + (e.queue ?? '') + (e.parentId ?? '') + (e.groupId ?? '')) + 4 : 0;
  return row.result.length + row.traceback.length + row.children.length + Buffer.byteLength(row.taskId) + Buffer.byteLength(row.status) + extended;
}

/** Throws ResultTooLargeError for a row over `maxBytes`, before any write is tried. */
export function checkRowSize(row: ResultRow, maxBytes: number): void {
  const bytes = encodedRowBytes(row);
  if (bytes > maxBytes) throw new ResultTooLargeError(row.taskId, bytes, maxBytes);
}
