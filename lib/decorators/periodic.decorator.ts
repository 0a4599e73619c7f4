import { SetMetadata } from '@nestjs/common';
import { PERIODIC_METADATA } from '../celery.constants';
import type { PeriodicSendOptions } from '../scheduler/periodic-entry';

/** Options of `@Periodic()`: `every` or `cron`, what to send, and how. */
export type PeriodicOptions = ({ every: string | number; cron?: never; timezone?: never } | { cron: string; timezone?: string; every?: never }) & {
  /**
   * The schedule's name: the key of its tick claims, the same in every replica. Default
   * `<ClassName>.<methodName>`.
   */
  name?: string;
  /**
   * The task to send, by name (any task of any language). Default: the `@Task()` of the decorated
   * method; one of the two is required.
   */
  task?: string;
  /** Positional arguments of each send. */
  args?: unknown[];
  /** Keyword arguments of each send. */
  kwargs?: Record<string, unknown>;
  /** Send options (queue, exchange, routingKey, priority, expires, countdown, headers, ignoreResult, timeLimit, softTimeLimit, compression). */
  options?: PeriodicSendOptions;
};

export type PeriodicMetadata = PeriodicOptions & { methodName: string };

/**
 * Sends a task on a schedule, once per tick however many replicas of the app run the scheduler.
 * On a `@Task()` method it sends that task (through the Producer: any worker of its queue, of any
 * language, runs it); with `task` it sends the task of that name. `every`: `'30s'`, `'5m'`, `'1h'`,
 * `'1d'` or seconds, aligned to the clock (UTC); `cron`: 5 fields, or 6 with seconds, in `timezone`
 * (default the module's `scheduler.timezone`, UTC).
 *
 * @example
 * ```ts
 * @Periodic({ every: '30s', args: [2, 2] })
 * @Task('tasks.add')
 * add(x: number, y: number) { return x + y; }
 *
 * @Periodic({ cron: '0 3 * * *', timezone: 'Europe/Paris', task: 'reports.nightly' })
 * nightlyReport() {}
 * ```
 */
export function Periodic(options: PeriodicOptions): MethodDecorator {
  return (target, propertyKey, descriptor) => {
    const metadata: PeriodicMetadata = { ...options, methodName: String(propertyKey) };
    return SetMetadata(PERIODIC_METADATA, metadata)(target, propertyKey, descriptor);
  };
}
