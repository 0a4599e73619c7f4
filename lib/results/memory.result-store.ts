import { EventEmitter } from 'node:events';
import { decodeResultRow, encodeResultRow, pendingMeta, ResultRow, ResultToStore, TaskMeta } from '../protocol/result-row';
import { ResultStore } from './result-store.interface';

/**
 * Results kept in this process, encoded exactly as they would be in Cassandra (JSON text blobs)
 * so the same code paths run with and without infrastructure.
 */
export class MemoryResultStore extends ResultStore {
  private readonly rows = new Map<string, ResultRow>();
  private readonly events = new EventEmitter().setMaxListeners(0);

  async connect(): Promise<void> {}

  async store(result: ResultToStore): Promise<void> {
    this.rows.set(result.taskId, encodeResultRow(result, new Date()));
    this.events.emit(result.taskId);
  }

  async getTaskMeta(taskId: string): Promise<TaskMeta> {
    const row = this.rows.get(taskId);
    return row ? decodeResultRow(row) : pendingMeta(taskId);
  }

  /** Every stored row, newest state per task. For the sample's "rows" command and for tests. */
  allRows(): ResultRow[] {
    return [...this.rows.values()];
  }

  override subscribe(taskId: string, listener: () => void): () => void {
    this.events.on(taskId, listener);
    return () => this.events.off(taskId, listener);
  }

  async close(): Promise<void> {
    this.events.removeAllListeners();
  }
}
