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

  /** Waits `seconds` and returns them: a long task, for the fault suite (a task running when a channel or connection dies). */
  @Task('tasks.sleep')
  async sleep(seconds: number): Promise<number> {
    if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) throw new RangeError(`seconds must be a finite number >= 0, got ${JSON.stringify(seconds)}`);
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    return seconds;
  }
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
