/**
 * The benchmark's task as an isolated worker thread loads it: a module that exports the class and
 * does nothing else on load (bench/nestjs-worker.ts could not be it: loading it starts a worker).
 */
import { Injectable } from '@nestjs/common';
import { Task } from '../lib/decorators/task.decorator';
import { sortWords, TASK_NAME } from './sort-words';

/** The walkthrough task as users declare an isolated one: the worker runs it in its thread pool. */
@Injectable()
export class IsolatedTasksService {
  @Task({ name: TASK_NAME, isolate: 'thread', module: __filename })
  sortWords(text: string, capitalize = false): string {
    return sortWords(text, capitalize);
  }
}
