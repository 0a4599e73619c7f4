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

export interface ThreadData {
  /** Int32Array(1) over it: the ABORT_* value for the run in progress. */
  flag: SharedArrayBuffer;
}

export type ToThread =
  | { type: 'run'; id: number; spec: IsolatedTaskSpec; args: unknown; context?: Record<string, unknown> }
  | { type: 'abort'; id: number; kind: number }
  | { type: 'preload'; modules: string[] };

export type ToMain =
  | { type: 'ready' }
  /** The task's code is loaded and is being called now: its time limits start. */
  | { type: 'started'; id: number }
  | { type: 'done'; id: number; ok: true; value: unknown }
  | { type: 'done'; id: number; ok: false; error: TransferredError; abortedBy: number };
