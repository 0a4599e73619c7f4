import { Injectable } from '@nestjs/common';
import { Task } from '../lib';

/** The task of Celery's Astra DB walkthrough, as a NestJS provider. */
@Injectable()
export class TasksService {
  /** Splits on single spaces, sorts case-insensitively, upper-cases every word when `capitalize` is true. */
  @Task('tasks.sortWords')
  sortWords(text: string, capitalize = false): string {
    const sorted = text.split(' ').sort((a, b) => compare(a.toLowerCase(), b.toLowerCase()));
    return (capitalize ? sorted.map((word) => word.toUpperCase()) : sorted).join(' ');
  }
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
