import { CeleryConfigError } from '../errors/celery.errors';
import type { ResultToStore, TaskMeta } from '../protocol/result-row';
import { ResultStore } from './result-store.interface';

/** No result backend (Celery's DisabledBackend): the worker stores nothing, readers get a clear error. */
export class DisabledResultStore extends ResultStore {
  override readonly enabled = false;

  async connect(): Promise<void> {}

  async store(_result: ResultToStore): Promise<void> {}

  /** Nothing is stored, so there is nothing to keep. */
  override async storeUnlessSucceeded(_result: ResultToStore): Promise<TaskMeta | null> {
    return null;
  }

  async getTaskMeta(_taskId: string): Promise<TaskMeta> {
    throw new CeleryConfigError('resultBackend', 'no result backend is configured, so results cannot be read; set resultBackend to cassandra or memory');
  }

  async forget(_taskId: string): Promise<void> {
    throw new CeleryConfigError('resultBackend', 'no result backend is configured, so there are no results to forget; set resultBackend to cassandra or memory');
  }

  async close(): Promise<void> {}
}
