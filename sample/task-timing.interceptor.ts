import { CallHandler, ExecutionContext, Injectable, Logger, NestInterceptor } from '@nestjs/common';
import { Observable, tap } from 'rxjs';
import { CeleryContextType, CeleryExecutionContext } from '../lib';

/** Logs each task run with its origin and how long it took (registered globally with APP_INTERCEPTOR). */
@Injectable()
export class TaskTimingInterceptor implements NestInterceptor {
  private readonly logger = new Logger('TaskTiming');

  intercept(context: ExecutionContext, next: CallHandler): Observable<unknown> {
    if (context.getType<CeleryContextType>() !== 'celery') return next.handle();
    const task = CeleryExecutionContext.create(context).getTask();
    const started = performance.now();
    const took = () => `${(performance.now() - started).toFixed(1)} ms`;
    return next.handle().pipe(
      tap({
        complete: () => this.logger.log(`${task.name}[${task.id}] from ${task.origin ?? 'an unnamed origin'} ran in ${took()}`),
        error: (err: unknown) => this.logger.log(`${task.name}[${task.id}] from ${task.origin ?? 'an unnamed origin'} ended with ${err instanceof Error ? err.name : 'an error'} after ${took()}`),
      }),
    );
  }
}
