import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { CeleryWorker } from '../lib';
import { AppModule } from './app.module';
import { formatRow, SortClient } from './sort.client';

/**
 * `node main.js all|worker|client|rows`:
 * - all: worker and client in one process (works with no infrastructure at all);
 * - worker: runs tasks until SIGINT / SIGTERM, serving GET /health and GET /metrics on SAMPLE_HTTP_PORT (default 3000);
 * - client: sends the walkthrough's two tasks and prints the results;
 * - rows: prints the rows of the result table.
 */
async function main(mode: string): Promise<void> {
  if (!['all', 'worker', 'client', 'rows'].includes(mode)) throw new Error(`unknown mode ${mode} (all, worker, client, rows)`);
  const runsWorker = mode === 'all' || mode === 'worker';
  if (mode === 'client' && !process.env.CELERY_BROKER_URL) {
    Logger.warn('CELERY_BROKER_URL is not set: the memory:// broker has no worker in this process. Use `npm run sample`, or point both sample:worker and sample:client at RabbitMQ.', 'Sample');
  }
  if (mode === 'worker') {
    // the worker also serves GET /health and GET /metrics over HTTP (sample/http.module.ts)
    const app = await NestFactory.create(AppModule.register(true, true), { logger: ['log', 'warn', 'error'] });
    const port = httpPort(process.env.SAMPLE_HTTP_PORT);
    await app.listen(port);
    const address = app.getHttpServer().address() as { port: number } | null;
    Logger.log(`HTTP on port ${address?.port ?? port}: GET /health, GET /metrics`, 'Sample');
    logNodeName(app.get(CeleryWorker));
    // SIGTERM / SIGINT: stop consuming, let in-flight tasks finish, store and ack, close, exit 0.
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      Logger.log(`${signal} received: stopping the worker`, 'Sample');
      app.close().then(
        () => process.exit(0),
        (err: unknown) => {
          process.stderr.write(`shutdown failed: ${err instanceof Error ? err.message : String(err)}\n`);
          process.exit(1);
        },
      );
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    return; // runs until a signal closes the application
  }
  const app = await NestFactory.createApplicationContext(AppModule.register(runsWorker), { logger: ['log', 'warn', 'error'] });
  if (runsWorker) logNodeName(app.get(CeleryWorker));
  app.enableShutdownHooks();
  const client = app.get(SortClient);
  const print = (line: string) => process.stdout.write(line + '\n');
  try {
    if (mode !== 'rows') await client.run(print);
    if (mode !== 'client') {
      print('task_id | status | result | date_done | traceback | children');
      for (const row of await client.rows()) print(formatRow(row));
    }
  } finally {
    await app.close();
  }
}

/** One line with the worker's node name: what `celery inspect ping` and Flower show. */
function logNodeName(worker: CeleryWorker): void {
  const node = worker.nodeName;
  Logger.log(`Celery node ${node}: answers remote control and sends task events (celery -A proj inspect ping -d ${node}; Flower lists it)`, 'Sample');
}

/** SAMPLE_HTTP_PORT: default 3000; 0 picks a free port (logged). */
function httpPort(value: string | undefined): number {
  if (value === undefined || value === '') return 3000;
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`SAMPLE_HTTP_PORT must be a port number (0-65535), not ${JSON.stringify(value)}`);
  return port;
}

main(process.argv[2] ?? 'all').catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
