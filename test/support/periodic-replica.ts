/**
 * One replica of an app that runs the scheduler, for test/integration/periodic.spec.ts: run with
 * `node -r test/support/transpile-hook.js test/support/periodic-replica.ts`. It schedules
 * PERIODIC_SCHEDULE every second (task `periodic.tick` on PERIODIC_QUEUE), with claims in
 * PERIODIC_CLAIMS on the real Cassandra, and runs no worker. It prints `READY`, then `SENT <tick ms>`
 * for each tick it sent. A line `hang` on stdin arms it: the next tick it wins is never published
 * (`HANG <tick ms>`), as if the process died between claim and publish; the test then kills it.
 */
import 'reflect-metadata';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { createInterface } from 'node:readline';
import { CeleryModule, PERIODIC_TICK_HEADER, Producer, type SendTaskOptions } from '../../lib';
import { realOptions } from './real-services';

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

async function main(): Promise<void> {
  const queue = env('PERIODIC_QUEUE');
  const schedule = env('PERIODIC_SCHEDULE');
  const options = realOptions(queue, env('PERIODIC_RESULTS'), {
    worker: { enabled: false },
    scheduler: {
      table: env('PERIODIC_CLAIMS'),
      claimTimeoutMs: Number(env('PERIODIC_CLAIM_TIMEOUT_MS')),
      schedule: { [schedule]: { task: 'periodic.tick', schedule: 1, options: { queue, expires: 300 } } },
    },
  });

  @Module({ imports: [CeleryModule.forRoot(options)] })
  class ReplicaModule {}

  const app = await NestFactory.createApplicationContext(ReplicaModule, { logger: ['warn', 'error'] });
  const producer = app.get(Producer);
  let armed = false;
  const send = producer.sendTask.bind(producer);
  // the scheduler sends through this same Producer instance
  producer.sendTask = async <T>(name: string, opts: SendTaskOptions = {}) => {
    const tick = Date.parse(String(opts.headers?.[PERIODIC_TICK_HEADER]));
    if (armed) {
      process.stdout.write(`HANG ${tick}\n`);
      return new Promise<never>(() => undefined);
    }
    const result = await send<T>(name, opts);
    process.stdout.write(`SENT ${tick}\n`);
    return result;
  };
  createInterface({ input: process.stdin }).on('line', (line) => {
    if (line.trim() === 'hang') armed = true;
  });
  process.on('SIGTERM', () => {
    app.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
  process.stdout.write('READY\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
