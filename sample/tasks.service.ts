import { Injectable, UsePipes, ValidationPipe } from '@nestjs/common';
import { Periodic, Task, TaskContext } from '../lib';
import { setTimeout } from 'node:timers/promises';
import { NewUserDto } from './new-user.dto';

/** The task of Celery's Astra DB walkthrough, as a NestJS provider. */
@Injectable()
export class TasksService {
  /** Splits on single spaces, sorts case-insensitively, upper-cases every word when `capitalize` is true. */
  @Task('tasks.sortWords')
  sortWords(text: string, capitalize = false): string {
    const sorted = text.split(' ').sort((a, b) => compare(a.toLowerCase(), b.toLowerCase()));
    return (capitalize ? sorted.map((word) => word.toUpperCase()) : sorted).join(' ');
  }

  /**
   * `x + y`. Also a periodic task: with the scheduler on (`SAMPLE_SCHEDULER=1`), `add(2, 2)` is sent
   * every 30 s, once per tick however many sample workers run; no result is stored for it.
   */
  @Periodic({ every: '30s', args: [2, 2], options: { ignoreResult: true } })
  @Task('tasks.add')
  add(x: number, y: number): number {
    return x + y;
  }

  /** The sum of a list of numbers: a chord's body (it gets the header results as one list). */
  @Task('tasks.tsum')
  tsum(numbers: number[]): number {
    if (!Array.isArray(numbers) || numbers.some((n) => typeof n !== 'number')) throw new TypeError(`numbers must be a list of numbers, got ${JSON.stringify(numbers)}`);
    return numbers.reduce((sum, n) => sum + n, 0);
  }

  /**
   * Waits `seconds` and returns them: a long task, for the fault suite (a task running when a
   * channel or connection dies) and the time limits. The wait ends early when the task's
   * AbortSignal fires (soft time limit, revoke, shutdown), rejecting with the signal's reason.
   */
  @Task('tasks.sleep')
  async sleep(seconds: number, @TaskContext() ctx: TaskContext): Promise<number> {
    if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) throw new RangeError(`seconds must be a finite number >= 0, got ${JSON.stringify(seconds)}`);
    await setTimeout(seconds * 1000, undefined, { signal: ctx.signal });
    return seconds;
  }

  /** Retries itself (0.1 s countdown) while its retries are fewer than `failures`; default maxRetries 3. */
  @Task('tasks.flaky')
  flaky(failures: number, @TaskContext() ctx: TaskContext): string {
    if (ctx.retries < failures) ctx.retry({ countdown: 0.1, exc: new Error('flaky') });
    return `ok after ${ctx.retries} retries`;
  }

  /** Always fails: a RangeError, which Python reads as ValueError. */
  @Task('tasks.fail')
  fail(message: string): never {
    throw new RangeError(message);
  }

  /**
   * Registers a user given as the `user` keyword argument (or the first positional one). The
   * ValidationPipe checks it against NewUserDto first: an invalid one is a FAILURE `ValueError`
   * naming each field, e.g. `email must be an email`, and the task does not run.
   */
  @Task('tasks.registerUser')
  @UsePipes(new ValidationPipe({ transform: true, whitelist: true, forbidNonWhitelisted: true }))
  registerUser(user: NewUserDto): { registered: string; name: string; age: number } {
    return { registered: user.email.toLowerCase(), name: user.name, age: user.age };
  }

  /** The time in ms, at most 5 a second per worker. */
  @Task('tasks.limited', { rateLimit: '5/s' })
  limited(): number {
    return Date.now();
  }
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
