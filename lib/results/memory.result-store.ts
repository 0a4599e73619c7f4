import { EventEmitter } from 'node:events';
import { checkExpiresSeconds, decodeResultRow, encodeResultRow, pendingMeta, ResultRow, ResultToStore, TaskMeta } from '../protocol/result-row';
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
  /** Keep the `resultExtended` fields (name, args, kwargs, worker, retries, queue) with each row. */
  resultExtended?: boolean;
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
  /** Newest row per task; `expiresAt` (epoch ms) when it was stored with `expiresSeconds`. */
  private readonly rows = new Map<string, { row: ResultRow; bytes: number; expiresAt: number | null }>();
  private readonly events = new EventEmitter().setMaxListeners(0);
  private readonly maxResultBytes: number;
  private readonly maxBytes: number;
  private readonly resultExtended: boolean;
  private heldBytes = 0;

  constructor(options: MemoryResultStoreOptions = {}) {
    super();
    this.maxResultBytes = options.maxResultBytes ?? DEFAULT_MAX_RESULT_BYTES;
    this.maxBytes = options.maxBytes ?? DEFAULT_MEMORY_STORE_BYTES;
    this.resultExtended = options.resultExtended ?? false;
  }

  async connect(): Promise<void> {}

  async store(result: ResultToStore): Promise<void> {
    const seconds = checkExpiresSeconds(result);
    const row = encodeResultRow(this.resultExtended ? result : { ...result, extended: undefined }, new Date());
    checkRowSize(row, this.maxResultBytes);
    this.drop(result.taskId);
    const bytes = encodedRowBytes(row) + ROW_OVERHEAD_BYTES;
    this.rows.set(result.taskId, { row, bytes, expiresAt: seconds ? row.dateDone.getTime() + seconds * 1000 : null });
    this.heldBytes += bytes;
    // oldest first; the newest row stays even when it alone is over the budget
    for (const taskId of this.rows.keys()) {
      if (this.heldBytes <= this.maxBytes || taskId === result.taskId) break;
      this.drop(taskId);
    }
    this.events.emit(result.taskId);
  }

  async getTaskMeta(taskId: string): Promise<TaskMeta> {
    const kept = this.rows.get(taskId);
    if (kept && kept.expiresAt !== null && kept.expiresAt <= Date.now()) {
      this.drop(taskId); // expired, like a Cassandra row past its TTL
      return pendingMeta(taskId);
    }
    return kept ? decodeResultRow(kept.row) : pendingMeta(taskId);
  }

  async forget(taskId: string): Promise<void> {
    this.drop(taskId);
  }

  /** Bytes the kept rows count for (at most the budget, unless one row alone is larger). */
  get bytes(): number {
    return this.heldBytes;
  }

  /** Every kept row, newest state per task. For the sample's "rows" command and for tests. */
  allRows(): ResultRow[] {
    const now = Date.now();
    return [...this.rows.values()].filter((kept) => kept.expiresAt === null || kept.expiresAt > now).map((kept) => kept.row);
  }

  override subscribe(taskId: string, listener: () => void): () => void {
    this.events.on(taskId, listener);
    return () => this.events.off(taskId, listener);
  }

  async close(): Promise<void> {
    this.events.removeAllListeners();
  }

  private drop(taskId: string): void {
    const kept = this.rows.get(taskId);
    if (!kept) return;
    this.rows.delete(taskId);
    this.heldBytes -= kept.bytes;
  }
}
