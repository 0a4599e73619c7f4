import { Injectable } from '@nestjs/common';
import { Task } from '../../lib';

export class SortFailedError extends Error {
  override name = 'SortFailedError';
}

/** Tasks shared by the module and integration tests. */
@Injectable()
export class FixtureTasks {
  readonly calls: string[] = [];

  @Task('tasks.sortWords')
  sortWords(text: string, capitalize = false): string {
    this.calls.push(text);
    const sorted = text.split(' ').sort((a, b) => (a.toLowerCase() < b.toLowerCase() ? -1 : a.toLowerCase() > b.toLowerCase() ? 1 : 0));
    return (capitalize ? sorted.map((w) => w.toUpperCase()) : sorted).join(' ');
  }

  @Task('tasks.failWords')
  failWords(text: string): string {
    throw new RangeError(`cannot sort: '${text}'`);
  }

  @Task('tasks.customFailure')
  async customFailure(): Promise<never> {
    throw new SortFailedError('DB unavailable');
  }

  @Task()
  async add(a: number, b: number): Promise<number> {
    return a + b;
  }

  @Task('tasks.sleep')
  async sleep(ms: number, value: string): Promise<string> {
    await new Promise((resolve) => setTimeout(resolve, ms));
    return value;
  }

  @Task('tasks.echo')
  echo(value: unknown): unknown {
    return value;
  }
}
