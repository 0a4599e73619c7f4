/**
 * The hand-written worker of system b (no library code): amqplib consumer with manual acks and a
 * prefetch, sortWords, a prepared INSERT of a Celery-format row at LOCAL_QUORUM, the ack once the
 * insert has resolved, then the result pushed to the producer's reply queue (the `nestjs_celery_notify` header, correlation_id).
 *
 *   node dist-bench/bench/raw-worker.js --queue bench_raw --table bench_raw --concurrency 8 [--prefetch 32]
 */
import * as amqplib from 'amqplib';
import { types } from 'cassandra-driver';
import { AMQP_URL, cassandraClient, declareCeleryQueue, KEYSPACE, RAW_NOTIFY_HEADER, sortWords, TASK_NAME } from './common';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const NULL_JSON = Buffer.from('null');
const EMPTY_LIST_JSON = Buffer.from('[]');

async function main(): Promise<void> {
  const queue = arg('queue') ?? 'bench_raw';
  const table = arg('table') ?? 'bench_raw';
  const concurrency = Number(arg('concurrency') ?? process.env.BENCH_CONCURRENCY ?? 8);
  const prefetch = Number(arg('prefetch') ?? process.env.BENCH_PREFETCH ?? concurrency * 4);
  const insert = `INSERT INTO ${KEYSPACE}.${table} (task_id, status, result, date_done, traceback, children) VALUES (?, ?, ?, ?, ?, ?)`;

  const cassandra = cassandraClient();
  await cassandra.connect();
  // TCP_NODELAY: without it Nagle's algorithm and delayed ACKs add ~40 ms stalls to small frames.
  const conn = await amqplib.connect(AMQP_URL, { noDelay: process.env.BENCH_RAW_NODELAY !== '0' });
  const ch = await conn.createChannel();
  const replies = await conn.createChannel();
  await declareCeleryQueue(ch, queue);
  await ch.prefetch(prefetch);

  let running = 0;
  const waiting: amqplib.ConsumeMessage[] = [];

  const handle = async (msg: amqplib.ConsumeMessage): Promise<void> => {
    const headers = msg.properties.headers ?? {};
    const id = String(headers.id ?? msg.properties.correlationId);
    try {
      if (headers.task !== TASK_NAME) throw new Error(`unknown task ${String(headers.task)}`);
      const [args, kwargs] = JSON.parse(msg.content.toString('utf8')) as [unknown[], Record<string, unknown>];
      const text = String(args[0]);
      const capitalize = Boolean(args.length > 1 ? args[1] : kwargs.capitalize);
      const result = sortWords(text, capitalize);
      const resultJson = JSON.stringify(result);
      const dateDone = new Date();
      await cassandra.execute(insert, [id, 'SUCCESS', Buffer.from(resultJson), dateDone, NULL_JSON, EMPTY_LIST_JSON], {
        prepare: true,
        consistency: types.consistencies.localQuorum,
      });
      ch.ack(msg);
      // The producer's reply queue, in the header nestjs-celery's Producer uses (reply_to is Celery's, a UUID).
      const replyTo = headers[RAW_NOTIFY_HEADER] as string | undefined;
      if (replyTo) {
        const body = `{"task_id":${JSON.stringify(id)},"status":"SUCCESS","result":${resultJson},"traceback":null,"children":[],"date_done":${JSON.stringify(dateDone.toISOString())}}`;
        replies.publish('', replyTo, Buffer.from(body), { correlationId: id, contentType: 'application/json', contentEncoding: 'utf-8' });
      }
    } catch (err) {
      process.stderr.write(`raw worker: task ${id} failed: ${err instanceof Error ? err.message : String(err)}\n`);
      ch.nack(msg, false, false);
    }
  };

  const next = () => {
    while (running < concurrency && waiting.length) {
      const msg = waiting.shift() as amqplib.ConsumeMessage;
      running++;
      void handle(msg).finally(() => {
        running--;
        next();
      });
    }
  };

  const { consumerTag } = await ch.consume(
    queue,
    (msg) => {
      if (!msg) return;
      waiting.push(msg);
      next();
    },
    { noAck: false },
  );

  let closing = false;
  const close = async (code: number) => {
    if (closing) return;
    closing = true;
    const timer = setTimeout(() => process.exit(code || 1), 20000);
    try {
      await ch.cancel(consumerTag).catch(() => undefined);
      while (running > 0) await new Promise((r) => setTimeout(r, 20));
      await ch.close().catch(() => undefined);
      await replies.close().catch(() => undefined);
      await conn.close().catch(() => undefined);
      await cassandra.shutdown().catch(() => undefined);
    } finally {
      clearTimeout(timer);
      process.exit(code);
    }
  };
  process.on('SIGTERM', () => void close(0));
  process.on('SIGINT', () => void close(0));
  process.on('disconnect', () => void close(0));
  process.send?.({ type: 'ready', pid: process.pid, concurrency, prefetch });
}

main().catch((err: unknown) => {
  process.stderr.write(`raw worker failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
