import { Injectable } from '@nestjs/common';
import { Task, TaskContext } from '../../lib';

/**
 * The tasks of test/fixtures/celery-events.py (the Python worker whose events are the golden ones),
 * on the NestJS side, named and failing as there: the events tests compare the two workers' events.
 */
@Injectable()
export class EventTasks {
  @Task('ev.add')
  add(x: number, y: number): number {
    return x + y;
  }

  @Task('ev.echo')
  echo(text: string): Record<string, unknown> {
    return { text, n: [1, 2.5, null, true] };
  }

  @Task('ev.fail')
  fail(): never {
    throw Object.assign(new Error('boom'), { excType: 'ValueError', excModule: 'builtins' });
  }

  @Task('ev.retry_once', { maxRetries: 1 })
  retryOnce(@TaskContext() ctx: TaskContext): string {
    if (ctx.retries === 0) ctx.retry({ countdown: 0, exc: Object.assign(new Error('again'), { excType: 'RuntimeError', excModule: 'builtins' }) });
    return 'retried';
  }
}
