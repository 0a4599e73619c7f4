/**
 * System a: nestjs-celery. Worker(s) in child processes (bench/nestjs-worker.ts); the Producer in
 * this process, in a Nest application context with the worker disabled.
 */
import 'reflect-metadata';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { INestApplicationContext } from '@nestjs/common';
import type { ChildProcess } from 'node:child_process';
import { availableParallelism } from 'node:os';
import type { Client } from 'cassandra-driver';
import { CeleryModule, Producer } from '../lib';
import {
  baseText,
  BenchOptions,
  benchCeleryOptions,
  deleteQueues,
  resetTable,
  rowsNote,
  startNodeWorkers,
  stopChild,
  SystemResult,
  tableStats,
  TASK_NAME,
  TaskInputs,
} from './common';
import { MemorySampler } from './memory-sampler';
import { BenchClient, mainPhases, PrefetchOne, prefetchOnePhase, SentTask, systemFigures } from './phases';

/**
 * A nestjs-celery Producer in a Nest application context of its own (its own broker connection and
 * result notifier; the worker disabled), publishing to `queue` with results in `table`.
 */
export async function openNestjsClient(queue: string, table: string): Promise<BenchClient & { producer: Producer }> {
  @Module({
    imports: [
      CeleryModule.forRoot(benchCeleryOptions(queue, table, { enabled: false })),
    ],
  })
  class ClientModule {}
  const app: INestApplicationContext = await NestFactory.createApplicationContext(ClientModule, { logger: ['warn', 'error'] });
  const producer = app.get(Producer);
  return {
    producer,
    send(text: string): SentTask {
      const sent = producer.sendTask<string>(TASK_NAME, { args: [text, false], queue });
      sent.catch(() => undefined); // rejections surface through `confirmed`
      return { confirmed: sent, result: (timeout) => sent.then((r) => r.get({ timeout })) };
    },
    close: () => app.close(),
  };
}

/**
 * `isolate: 'thread'` (system `nestjs_thread`): the same worker, its task run in an isolated worker
 * thread, on its own queue and table (`bench_nestjs_thread`).
 */
export async function runNestjs(opts: BenchOptions, admin: Client, log: (s: string) => void, variant: { isolate?: 'thread' } = {}): Promise<SystemResult> {
  const QUEUE = variant.isolate ? 'bench_nestjs_thread' : 'bench_nestjs';
  const TABLE = QUEUE;
  const label = variant.isolate ? 'nestjs_thread' : 'nestjs';
  const inputs = new TaskInputs(baseText(opts.payloadBytes), label);
  let sampler: MemorySampler | null = null;
  const workerArgs = (concurrency: number, prefetch: number | null) => [
    '--queue', QUEUE, '--table', TABLE, '--concurrency', String(concurrency),
    ...(prefetch ? ['--prefetch', String(prefetch)] : []),
    ...(variant.isolate ? ['--isolate', variant.isolate] : []),
  ];
  let workers: ChildProcess[] = [];
  let client: BenchClient | null = null;
  try {
    await deleteQueues(QUEUE);
    await resetTable(admin, TABLE);
    const started = await startNodeWorkers('nestjs-worker.js', opts.workers, workerArgs(opts.concurrency, opts.prefetch), label);
    workers = started.workers;
    sampler = await MemorySampler.start(100);
    sampler.watch(workers.map((w) => w.pid as number));
    log(`${label}: ${workers.length} worker process(es) ready (concurrency ${opts.concurrency}, prefetch ${String(started.info.prefetch)}${variant.isolate ? ', task in a worker thread' : ''})`);

    client = await openNestjsClient(QUEUE, TABLE);
    const main = await mainPhases(label, opts, client, () => openNestjsClient(QUEUE, TABLE), inputs, opts.getConcurrency, log, workers.map((w) => w.pid as number));
    const mem = await sampler.stop();

    let prefetchOne: PrefetchOne | undefined;
    if (opts.prefetchOneN > 0) {
      await Promise.all(workers.map((w) => stopChild(w)));
      workers = (await startNodeWorkers('nestjs-worker.js', 1, workerArgs(1, 1), label)).workers;
      prefetchOne = await prefetchOnePhase(label, opts, client, inputs, opts.getConcurrency, log);
    }
    const rows = await tableStats(admin, TABLE, { from: main.wall0, to: main.wall2 });
    const notes = [
      ...(variant.isolate ? [`task run in an isolated worker thread (IsolatedPool, ${availableParallelism()} threads per worker process)`] : []),
      `${opts.workers} worker process(es), concurrency ${opts.concurrency}, prefetch ${String(started.info.prefetch)}`,
      `results read with AsyncResult.get(), ${opts.getConcurrency > 0 && opts.getConcurrency < opts.n ? `at most ${opts.getConcurrency}` : 'all'} at once`,
      `${inputs.checkedCount} results checked, each against its own task's distinct input`,
    ];
    notes.push(...rowsNote(TABLE, rows, inputs.count));
    return systemFigures(main, mem, rows, opts, prefetchOne, inputs, notes);
  } finally {
    await sampler?.stop();
    if (client) await client.close().catch((err: unknown) => log(`${label}: closing the producer app failed: ${String(err)}`));
    await Promise.all(workers.map((w) => stopChild(w)));
    await deleteQueues(QUEUE).catch((err: unknown) => log(`${label}: queue clean-up failed: ${String(err)}`));
  }
}
