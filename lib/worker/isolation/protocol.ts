/** Messages between IsolatedPool (main thread) and thread-main (an isolated thread). */
import type { TransferredError } from './transfer';

/**
 * Where an isolated thread finds a task's code. A DI-managed instance cannot cross into a thread,
 * so the thread loads the module itself and either calls an exported function (`method` absent)
 * or constructs the exported class with no arguments (once per thread) and calls `method` on it.
 */
export interface IsolatedTaskSpec {
  /** Absolute path of the compiled module (`__filename`), or its `file://` URL (`import.meta.url`). */
  module: string;
  /** Name the class or function is exported under. */
  exportName: string;
  /** Method of the exported class; absent when the export is a plain function. */
  method?: string;
}

/** Values of the shared abort flag. */
export const ABORT_NONE = 0;
export const ABORT_SOFT = 1;
export const ABORT_REQUESTED = 2;

/**
 * Memory shared by the pool and one thread (16 bytes): Int32 0 is the ABORT_* value of the run in
 * progress; Int32 1 the id of the last run whose task was called, BigInt64 1 when (`Date.now()`).
 * Shared rather than posted so that neither side waits for the other's event loop: a loop that
 * never yields still sees an abort, and a task's start costs no message.
 */
export const SHARED_BYTES = 16;
export const ABORT_INDEX = 0;
export const STARTED_ID_INDEX = 1;
/** In the BigInt64Array view. */
export const STARTED_AT_INDEX = 1;

export interface ThreadData {
  shared: SharedArrayBuffer;
}

export type ToThread =
  | { type: 'run'; id: number; spec: IsolatedTaskSpec; args: unknown; context?: Record<string, unknown> }
  | { type: 'abort'; id: number; kind: number }
  | { type: 'preload'; modules: string[] };

export type ToMain =
  | { type: 'ready' }
  | { type: 'done'; id: number; ok: true; value: unknown }
  | { type: 'done'; id: number; ok: false; error: TransferredError; abortedBy: number };
