import { EventEmitter } from 'node:events';
import { decodeResultRow, encodeResultRow, pendingMeta, ResultRow, ResultToStore, TaskMeta } from '../protocol/result-row';
import { ResultStore } from './result-store.interface';
import { checkRowSize, DEFAULT_MAX_RESULT_BYTES, encodedRowBytes } from './store-errors';

export interface MemoryResultStoreOptions {
  /** Largest encoded row stored (`worker.maxResultBytes`, default 8 MiB); a larger one is refused. */
  maxResultBytes?: number;
  /**
   * Bytes of rows kept (their blobs and task ids, plus ROW_OVERHEAD_BYTES each); beyond it the
   * oldest rows are dropped, and their tasks read as PENDING again. Default 128 MiB.
   */
  maxBytes?: number;
}

/** Default byte budget of the memory store. */
export const DEFAULT_MEMORY_STORE_BYTES = 128 * 1024 * 1024;
/** What a kept row costs beyond its bytes (map entry, objects, Buffers), counted against the budget. */
export const ROW_OVERHEAD_BYTES = 512;

/**
 * Results kept in this process, encoded exactly as they would be in Cassandra (JSON text blobs)
 * so the same code paths run with and without infrastructure. Bounded by bytes: like Celery's
 * `cache+memory://` backend (an LRU of 5,000 results), the oldest results are forgotten first.
 */
export class MemoryResultStore extends ResultStore {
  private readonly rows = new Map<string, { row: ResultRow; bytes: number }>();
  private readonly events = new EventEmitter().setMaxListeners(0);
  private readonly maxResultBytes: number;
  private readonly maxBytes: number;
  private heldBytes = 0;

  constructor(options: MemoryResultStoreOptions = {}) {
    super();
    this.maxResultBytes = options.maxResultBytes ?? DEFAULT_MAX_RESULT_BYTES;
    this.maxBytes = options.maxBytes ?? DEFAULT_MEMORY_STORE_BYTES;
  }

  async connect(): Promise<void> {}

  async store(result: ResultToStore): Promise<void> {
    const row = encodeResultRow(result, new Date());
    checkRowSize(row, this.maxResultBytes);
    this.forget(result.taskId);
    const bytes = encodedRowBytes(row) + ROW_OVERHEAD_BYTES;
    this.rows.set(result.taskId, { row, bytes });
    this.heldBytes += bytes;
    // oldest first; the newest row stays even when it alone is over the budget
    for (const taskId of this.rows.keys()) {
      if (this.heldBytes <= this.maxBytes || taskId === result.taskId) break;
      this.forget(taskId);
    }
    this.events.emit(result.taskId);
  }

  async getTaskMeta(taskId: string): Promise<TaskMeta> {
    const kept = this.rows.get(taskId);
    return kept ? decodeResultRow(kept.row) : pendingMeta(taskId);
  }

  /** Bytes the kept rows count for (at most the budget, unless one row alone is larger). */
  get bytes(): number {
    return this.heldBytes;
  }

  /** Every kept row, newest state per task. For the sample's "rows" command and for tests. */
  allRows(): ResultRow[] {
    return [...this.rows.values()].map((kept) => kept.row);
  }

  override subscribe(taskId: string, listener: () => void): () => void {
    this.events.on(taskId, listener);
    return () => this.events.off(taskId, listener);
  }

  async close(): Promise<void> {
    this.events.removeAllListeners();
  }

  private forget(taskId: string): void {
    const kept = this.rows.get(taskId);
    if (!kept) return;
    this.rows.delete(taskId);
    this.heldBytes -= kept.bytes;
  }
}
