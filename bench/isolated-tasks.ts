/**
 * The benchmark's task as an isolated worker thread loads it: a module that exports the class and
 * does nothing else on load (bench/nestjs-worker.ts could not be it: loading it starts a worker).
 */
import { Injectable } from '@nestjs/common';
import { sortWords } from './sort-words';

@Injectable()
export class IsolatedTasksService {
  sortWords(text: string, capitalize = false): string {
    return sortWords(text, capitalize);
  }
}
