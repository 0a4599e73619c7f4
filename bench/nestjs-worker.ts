/**
 * The NestJS worker of the benchmark, in its own process: a Nest application context with
 * CeleryModule.forRoot (RabbitMQ, Cassandra with credentials) and the walkthrough's task, in
 * production settings (Nest logger at warn / error only).
 *
 *   node dist-bench/bench/nestjs-worker.js --queue bench_nestjs --table bench_nestjs --concurrency 8 [--prefetch 32] [--isolate thread]
 *
 * `--isolate thread` runs the same task as `@Task({ isolate: 'thread', module })` (bench/isolated-tasks.ts):
 * the worker runs it in its pool of worker threads (os.availableParallelism()).
 *
 * Environment overrides: BENCH_CONCURRENCY, BENCH_PREFETCH, BENCH_SUCCESS_CHECK (worker.successCheck), BENCH_METRICS=1 (Prometheus metrics on, in a registry of their own: their cost). Tells its parent `{ type: 'ready' }`
 * over IPC once it consumes; ends on SIGTERM / SIGINT (draining in-flight tasks) or when the parent goes.
 */
import 'reflect-metadata';
import { Injectable, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { CeleryModule, Task } from '../lib';
import { IsolatedTasksService } from './isolated-tasks';
import { benchCeleryOptions, sortWords, TASK_NAME } from './common';

@Injectable()
export class TasksService {
  @Task(TASK_NAME)
  sortWords(text: string, capitalize = false): string {
    return sortWords(text, capitalize);
  }
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const queue = arg('queue') ?? 'bench_nestjs';
  const table = arg('table') ?? 'bench_nestjs';
  const concurrency = Number(arg('concurrency') ?? process.env.BENCH_CONCURRENCY ?? 8);
  const prefetchArg = arg('prefetch') ?? process.env.BENCH_PREFETCH;
  const prefetch = prefetchArg ? Number(prefetchArg) : undefined;
  const isolate = arg('isolate');
  if (isolate !== undefined && isolate !== 'thread') throw new Error(`--isolate takes "thread", got ${isolate}`);

  // BENCH_METRICS=1 measures the worker with its Prometheus metrics on (prom-client loaded only then)
  const metrics = process.env.BENCH_METRICS === '1' ? { metrics: { enabled: true, registry: new (await import('prom-client')).Registry() } } : {};
  @Module({
    imports: [
      CeleryModule.forRoot({
        ...benchCeleryOptions(queue, table, {
          enabled: true,
          queues: [queue],
          concurrency,
          ...(prefetch ? { prefetch } : {}),
          // BENCH_SUCCESS_CHECK=always measures the worker with a read before every write (Celery 5.7 to the letter).
          ...(process.env.BENCH_SUCCESS_CHECK ? { successCheck: process.env.BENCH_SUCCESS_CHECK as 'auto' | 'always' | 'redelivered' } : {}),
        }),
        ...metrics,
      }),
    ],
    providers: [isolate ? IsolatedTasksService : TasksService],
  })
  class WorkerModule {}

  const app = await NestFactory.createApplicationContext(WorkerModule, { logger: ['warn', 'error'] });
  let closing = false;
  const close = async (code: number) => {
    if (closing) return;
    closing = true;
    const timer = setTimeout(() => process.exit(code || 1), 20000);
    try {
      await app.close();
    } finally {
      clearTimeout(timer);
      process.exit(code);
    }
  };
  process.on('SIGTERM', () => void close(0));
  process.on('SIGINT', () => void close(0));
  process.on('disconnect', () => void close(0)); // the benchmark went away
  process.send?.({ type: 'ready', pid: process.pid, concurrency, prefetch: prefetch ?? concurrency * 4, isolate: isolate ?? null });
}

main().catch((err: unknown) => {
  process.stderr.write(`nestjs worker failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
