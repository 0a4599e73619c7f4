/**
 * One replica of an app that runs the scheduler, for test/integration/periodic.spec.ts:
 * `node test/support/periodic-replica.js`, on the library as `npm run build:sample` compiles it
 * (dist-sample/lib: starts in well under a second, where transpiling the sources took seconds per
 * process). It schedules PERIODIC_SCHEDULE every second (task `periodic.tick` on PERIODIC_QUEUE),
 * with claims in PERIODIC_CLAIMS on the real Cassandra, and runs no worker. It prints `READY`, then
 * `SENT <tick ms>` for each tick it sent. A line `hang` on stdin arms it: the next tick it wins is
 * never published (`HANG <tick ms>`), as if the process died between claim and publish; the test
 * then kills it.
 */
require('reflect-metadata');
const { join } = require('node:path');
const { createInterface } = require('node:readline');
const { Module } = require('@nestjs/common');
const { NestFactory } = require('@nestjs/core');
const { CeleryModule, PERIODIC_TICK_HEADER, Producer } = require(join(__dirname, '..', '..', 'dist-sample', 'lib'));

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

async function main() {
  const queue = env('PERIODIC_QUEUE');
  const schedule = env('PERIODIC_SCHEDULE');
  const options = {
    brokerUrl: env('AMQP_URL'),
    defaultQueue: queue,
    resultBackend: 'cassandra',
    cassandra: {
      contactPoints: [env('CASSANDRA_HOST')],
      port: Number(env('CASSANDRA_PORT')),
      localDataCenter: 'datacenter1',
      keyspace: env('CASSANDRA_KEYSPACE'),
      table: env('PERIODIC_RESULTS'),
      credentials: { username: env('CASSANDRA_USERNAME'), password: env('CASSANDRA_PASSWORD') },
    },
    worker: { enabled: false },
    scheduler: {
      table: env('PERIODIC_CLAIMS'),
      claimTimeoutMs: Number(env('PERIODIC_CLAIM_TIMEOUT_MS')),
      schedule: { [schedule]: { task: 'periodic.tick', schedule: 1, options: { queue, expires: 300 } } },
    },
  };
  class ReplicaModule {}
  Module({ imports: [CeleryModule.forRoot(options)] })(ReplicaModule);

  const app = await NestFactory.createApplicationContext(ReplicaModule, { logger: ['warn', 'error'] });
  const producer = app.get(Producer);
  let armed = false;
  const send = producer.sendTask.bind(producer);
  // the scheduler sends through this same Producer instance
  producer.sendTask = async (name, opts = {}) => {
    const tick = Date.parse(String(opts.headers && opts.headers[PERIODIC_TICK_HEADER]));
    if (armed) {
      process.stdout.write(`HANG ${tick}\n`);
      return new Promise(() => undefined);
    }
    const result = await send(name, opts);
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

main().catch((err) => {
  process.stderr.write(`${err instanceof Error ? (err.stack || err.message) : String(err)}\n`);
  process.exit(1);
});
