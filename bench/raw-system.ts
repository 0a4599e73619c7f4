/**
 * System b: a hand-written amqplib + cassandra-driver pipeline (no library code). The producer, in
 * this process, publishes Celery protocol v2 JSON messages on a confirm channel and receives each
 * result on its reply queue (reply_to / correlation_id); the worker(s) run bench/raw-worker.ts.
 */
import * as amqplib from 'amqplib';
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { performance } from 'node:perf_hooks';
import type { Client } from 'cassandra-driver';
import {
  AMQP_URL,
  BenchOptions,
  declareCeleryQueue,
  deleteQueues,
  payloadText,
  percentile,
  resetTable,
  rowsNote,
  round,
  sortWords,
  startNodeWorkers,
  stopChild,
  SystemResult,
  tableStats,
  TASK_NAME,
  workerRate,
} from './common';
import { MemorySampler } from './memory-sampler';

const QUEUE = 'bench_raw';
const TABLE = 'bench_raw';
const WARMUP = 50;

const int = (value: number) => ({ '!': 'int', value });

/** Python's repr of `[text, False]`, cut like Celery's saferepr (argsrepr_maxsize 1024). */
function argsRepr(text: string): string {
  const quoted = `'${text.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  const repr = `[${quoted}, False]`;
  return repr.length > 1024 ? repr.slice(0, 1021) + '...' : repr;
}

/** A Celery protocol v2 task message, built by hand (headers typed as py-amqp reads them). */
export function celeryMessage(id: string, text: string, replyTo: string, origin: string) {
  const headers = {
    lang: 'py',
    task: TASK_NAME,
    id,
    shadow: null,
    eta: null,
    expires: null,
    group: null,
    group_index: null,
    retries: int(0),
    timelimit: [null, null],
    root_id: id,
    parent_id: null,
    argsrepr: argsRepr(text),
    kwargsrepr: '{}',
    origin,
    ignore_result: false,
    replaced_task_nesting: int(0),
    stamped_headers: null,
    stamps: {},
  };
  const body = Buffer.from(JSON.stringify([[text, false], {}, { callbacks: null, errbacks: null, chain: null, chord: null }]), 'utf8');
  const properties: amqplib.Options.Publish = {
    headers,
    contentType: 'application/json',
    contentEncoding: 'utf-8',
    deliveryMode: 2,
    priority: 0,
    correlationId: id,
    replyTo,
  };
  return { body, properties };
}

export async function runRaw(opts: BenchOptions, admin: Client, log: (s: string) => void): Promise<SystemResult> {
  const text = payloadText(opts.payloadBytes);
  const expected = sortWords(text, false);
  let sampler: MemorySampler | null = null;
  const prefetch = opts.prefetch ?? opts.concurrency * 4;
  const workerArgs = ['--queue', QUEUE, '--table', TABLE, '--concurrency', String(opts.concurrency), '--prefetch', String(prefetch)];
  let workers: ChildProcess[] = [];
  let conn: amqplib.ChannelModel | null = null;
  try {
    await deleteQueues(QUEUE);
    await resetTable(admin, TABLE);
    const started = await startNodeWorkers('raw-worker.js', opts.workers, workerArgs, 'raw');
    workers = started.workers;
    sampler = await MemorySampler.start(100);
    sampler.watch(workers.map((w) => w.pid as number));
    log(`raw: ${workers.length} worker process(es) ready (concurrency ${opts.concurrency}, prefetch ${prefetch})`);

    conn = await amqplib.connect(AMQP_URL, { noDelay: process.env.BENCH_RAW_NODELAY !== '0' }); // TCP_NODELAY, as in the worker
    const ch = await conn.createConfirmChannel();
    await declareCeleryQueue(ch, QUEUE);
    const { queue: replyQueue } = await ch.assertQueue('', { exclusive: true, autoDelete: true, durable: false });
    const pending = new Map<string, (result: string) => void>();
    await ch.consume(
      replyQueue,
      (msg) => {
        if (!msg) return;
        const resolve = pending.get(msg.properties.correlationId as string);
        if (!resolve) return;
        pending.delete(msg.properties.correlationId as string);
        resolve((JSON.parse(msg.content.toString('utf8')) as { result: string }).result);
      },
      { noAck: true },
    );
    const origin = `gen${process.pid}@${hostname()}`;
    /** Publishes one task; resolves `confirmed` when RabbitMQ has it and `result` when the reply arrives. */
    const send = () => {
      const id = randomUUID();
      const result = new Promise<string>((resolve) => pending.set(id, resolve));
      const { body, properties } = celeryMessage(id, text, replyQueue, origin);
      const confirmed = new Promise<void>((resolve, reject) =>
        ch.publish('', QUEUE, body, properties, (err: unknown) => (err ? reject(new Error(`raw: not confirmed: ${String(err)}`)) : resolve())),
      );
      return { confirmed, result };
    };
    const check = (value: string) => {
      if (value !== expected) throw new Error(`raw: wrong result ${JSON.stringify(value).slice(0, 200)}`);
    };
    const withTimeout = <T>(p: Promise<T>, ms: number, what: string) => {
      let timer: NodeJS.Timeout | undefined;
      return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`raw: ${what} timed out after ${ms} ms`)), ms)))]).finally(() =>
        clearTimeout(timer),
      );
    };

    const warm = Array.from({ length: WARMUP }, send);
    await Promise.all(warm.map((w) => w.confirmed));
    (await withTimeout(Promise.all(warm.map((w) => w.result)), 60000, 'warm-up')).forEach(check);

    const n = opts.n;
    const t0 = performance.now();
    const wall0 = Date.now();
    const sent = Array.from({ length: n }, send);
    await Promise.all(sent.map((s) => s.confirmed));
    const t1 = performance.now();
    log(`raw: ${n} published in ${round((t1 - t0) / 1000, 2)} s; collecting results`);
    const values = await withTimeout(Promise.all(sent.map((s) => s.result)), Math.max(120000, n * 20), 'results');
    const t2 = performance.now();
    const wall2 = Date.now();
    values.forEach(check);

    const latencies: number[] = [];
    for (let i = 0; i < opts.roundTrips; i++) {
      const s = performance.now();
      const one = send();
      await one.confirmed;
      check(await withTimeout(one.result, 30000, 'round trip'));
      latencies.push(performance.now() - s);
    }
    const rows = await tableStats(admin, TABLE, { from: wall0, to: wall2 });
    const mem = await sampler.stop();
    const notes = [`${opts.workers} worker process(es), concurrency ${opts.concurrency}, prefetch ${prefetch}`, 'results pushed back on a reply queue (no polling)'];
    notes.push(...rowsNote(TABLE, rows, WARMUP + n + opts.roundTrips));
    return {
      publish_per_s: round(n / ((t1 - t0) / 1000), 0),
      end_to_end_per_s: round(n / ((t2 - t0) / 1000), 0),
      p50_ms: round(percentile(latencies, 50), 2),
      p99_ms: round(percentile(latencies, 99), 2),
      pss_mb: mem.pssMb,
      uss_mb: mem.ussMb,
      rss_mb: mem.rssMb,
      worker_per_s: workerRate(rows, wall0),
      n,
      round_trips: latencies.length,
      rows: rows.rows,
      memory_samples: { count: mem.samples, interval_ms: mem.intervalMs, span_s: mem.spanS, max_gap_ms: mem.maxGapMs },
      notes,
    };
  } finally {
    await sampler?.stop();
    if (conn) await conn.close().catch(() => undefined);
    await Promise.all(workers.map((w) => stopChild(w)));
    await deleteQueues(QUEUE).catch((err: unknown) => log(`raw: queue clean-up failed: ${String(err)}`));
  }
}
