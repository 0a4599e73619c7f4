import type { ResultToStore, TaskMeta } from '../protocol/result-row';

/**
 * Where task states are written and read: Celery's result backend. Injectable under this class.
 * Implementations: `CassandraResultStore` (Celery's own table), `MemoryResultStore`, `DisabledResultStore`.
 */
export abstract class ResultStore {
  /** Connects; a worker's store also makes sure the table exists (`forWrites`). */
  abstract connect(options: { forWrites: boolean }): Promise<void>;
  /** Appends a state row for a task (never updates: Celery's table is insert-only). */
  abstract store(result: ResultToStore): Promise<void>;
  /** The newest state of a task; PENDING when there is no row. */
  abstract getTaskMeta(taskId: string): Promise<TaskMeta>;
  /**
   * The newest state of each task, in the order asked (PENDING for those without a row): what
   * `celery.chord_unlock` reads of a chord's header. A store that can reads them in one query.
   */
  async getTaskMetas(taskIds: readonly string[]): Promise<TaskMeta[]> {
    return Promise.all(taskIds.map((id) => this.getTaskMeta(id)));
  }
  /**
   * Stores `result` unless the task's newest stored state is already SUCCESS, and then returns that
   * stored success instead (Celery 5.7's "keep the first SUCCESS": a duplicate delivery of a task,
   * redelivered or published twice, never replaces a stored success). Returns null when it stored.
   */
  async storeUnlessSucceeded(result: ResultToStore): Promise<TaskMeta | null> {
    const current = await this.getTaskMeta(result.taskId);
    if (current.status === 'SUCCESS') return current;
    await this.store(result);
    return null;
  }
  /**
   * Deletes every stored state of the task (Celery 5.7's `CassandraBackend._forget`: `DELETE ...
   * WHERE task_id`): readers see PENDING again. A worker that stores a state for it later writes
   * a new row, as with Celery.
   */
  abstract forget(taskId: string): Promise<void>;
  abstract close(): Promise<void>;
  /**
   * A cheap round trip to the store (health checks), rejecting when it does not answer within
   * `timeoutMs`. Stores in this process always answer.
   */
  // eslint-disable-next-line @typescript-eslint/no-unused-vars
  async ping(timeoutMs: number): Promise<void> {
    return;
  }
  /** Whether results can be read back at all (false for the disabled store). */
  readonly enabled: boolean = true;
  /**
   * Optional push: calls `listener` when a state for `taskId` is stored by this process, so
   * `AsyncResult.get()` need not poll. Returns an unsubscribe function.
   */
  subscribe?(taskId: string, listener: () => void): () => void;
}
