/**
 * System b: a hand-written amqplib + cassandra-driver pipeline (no library code on its path). The
 * producer, in this process, publishes Celery protocol v2 JSON messages (the same bytes as the
 * Producer's) on a confirm channel and receives each result on its reply queue, named in the
 * message's `nestjs_celery_notify` header (correlation_id = task id); the worker(s) run bench/raw-worker.ts.
 */
import * as amqplib from 'amqplib';
import type { ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import type { Client } from 'cassandra-driver';
import {
  AMQP_URL,
  baseText,
  BenchOptions,
  declareCeleryQueue,
  deleteQueues,
  resetTable,
  rowsNote,
  startNodeWorkers,
  stopChild,
  SystemResult,
  tableStats,
  TASK_NAME,
  RAW_NOTIFY_HEADER,
  TaskInputs,
} from './common';
import { MemorySampler } from './memory-sampler';
import { BenchClient, mainPhases, PrefetchOne, prefetchOnePhase, SentTask, systemFigures } from './phases';

const QUEUE = 'bench_raw';
const TABLE = 'bench_raw';

const int = (value: number) => ({ '!': 'int', value });

/** celery.utils.text.truncate: the first `max` characters, cut back to the last space, and `...`. */
function cut(text: string, max: number): string {
  if (text.length < max) return text;
  const head = text.slice(0, max);
  const space = head.lastIndexOf(' ');
  return (space >= 0 ? head.slice(0, space) : head) + '...';
}

/**
 * Celery's saferepr of `[text, False]` (the argsrepr header), written out for this one shape: the
 * text in single quotes with only `'` escaped (celery.utils.saferepr's _format_chars; Python's repr
 * would double backslashes too), and the whole held to argsrepr_maxsize 1024 the way saferepr
 * counts it: each part cut to what is left, `, ...` once nothing is, the bracket always closed.
 */
function argsRepr(text: string): string {
  let left = 1024 - 1; // after '['
  const quoted = `'${cut(text, left).replace(/'/g, "\\'")}'`;
  left -= quoted.length;
  if (left <= 0) return `[${quoted}, ...]`;
  left -= 2; // ', '
  if (left <= 0) return `[${quoted}, , ...]`;
  return `[${quoted}, ${cut('False', left)}]`;
}

/** Where a raw message says its result goes, and who sent it (as the Producer fills them in). */
export interface RawRoute {
  /** Celery's `reply_to` property: a UUID per producer, as the Producer sends. */
  replyTo: string;
  /** The producer's reply queue, in the RAW_NOTIFY_HEADER header. */
  notify: string;
  /** `gen<pid>@<hostname>`. */
  origin: string;
}

/**
 * A Celery protocol v2 task message built by hand: the headers in Celery's order and typed as
 * py-amqp reads them, the body in Python's json.dumps layout (", " and ": " separators), the
 * properties the Producer sets. For an ASCII text argument these are the same bytes as
 * nestjs-celery's Producer publishes for the same id, argument and route (checked once per run by
 * bench/wire-check.ts).
 */
export function celeryMessage(id: string, text: string, route: RawRoute) {
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
    origin: route.origin,
    ignore_result: false,
    replaced_task_nesting: int(0),
    stamped_headers: null,
    stamps: {},
    [RAW_NOTIFY_HEADER]: route.notify,
  };
  const body = Buffer.from(`[[${JSON.stringify(text)}, false], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]`, 'utf8');
  const properties: amqplib.Options.Publish = {
    headers,
    contentType: 'application/json',
    contentEncoding: 'utf-8',
    deliveryMode: 2,
    priority: 0,
    correlationId: id,
    replyTo: route.replyTo,
  };
  return { body, properties };
}

/**
 * raw's producer on a connection of its own: a confirm channel, an exclusive reply queue, and a map
 * of the tasks waiting for their pushed result (by correlation id).
 */
export async function openRawClient(queue: string): Promise<BenchClient> {
  const conn = await amqplib.connect(AMQP_URL, { noDelay: process.env.BENCH_RAW_NODELAY !== '0' }); // TCP_NODELAY, as in the worker
  const ch = await conn.createConfirmChannel();
  await declareCeleryQueue(ch, queue);
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
  const route: RawRoute = { replyTo: randomUUID(), notify: replyQueue, origin: `gen${process.pid}@${hostname()}` };
  return {
    send(text: string): SentTask {
      const id = randomUUID();
      const result = new Promise<string>((resolve) => pending.set(id, resolve));
      const { body, properties } = celeryMessage(id, text, route);
      const confirmed = new Promise<void>((resolve, reject) =>
        ch.publish('', queue, body, properties, (err: unknown) => (err ? reject(new Error(`raw: not confirmed: ${String(err)}`)) : resolve())),
      );
      return { confirmed, result: (ms) => withTimeout(result, ms, `raw: result of ${id}`) };
    },
    close: () => conn.close().catch(() => undefined),
  };
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms)))]).finally(() =>
    clearTimeout(timer),
  );
}

export async function runRaw(opts: BenchOptions, admin: Client, log: (s: string) => void): Promise<SystemResult> {
  const inputs = new TaskInputs(baseText(opts.payloadBytes), 'raw');
  let sampler: MemorySampler | null = null;
  const prefetch = opts.prefetch ?? opts.concurrency * 4;
  const workerArgs = (concurrency: number, prefetch: number) => ['--queue', QUEUE, '--table', TABLE, '--concurrency', String(concurrency), '--prefetch', String(prefetch)];
  let workers: ChildProcess[] = [];
  let client: BenchClient | null = null;
  try {
    await deleteQueues(QUEUE);
    await resetTable(admin, TABLE);
    workers = (await startNodeWorkers('raw-worker.js', opts.workers, workerArgs(opts.concurrency, prefetch), 'raw')).workers;
    sampler = await MemorySampler.start(100);
    sampler.watch(workers.map((w) => w.pid as number));
    log(`raw: ${workers.length} worker process(es) ready (concurrency ${opts.concurrency}, prefetch ${prefetch})`);

    client = await openRawClient(QUEUE);
    const main = await mainPhases('raw', opts, client, () => openRawClient(QUEUE), inputs, 0, log, workers.map((w) => w.pid as number));
    const mem = await sampler.stop();

    let prefetchOne: PrefetchOne | undefined;
    if (opts.prefetchOneN > 0) {
      await Promise.all(workers.map((w) => stopChild(w)));
      workers = (await startNodeWorkers('raw-worker.js', 1, workerArgs(1, 1), 'raw')).workers;
      prefetchOne = await prefetchOnePhase('raw', opts, client, inputs, 0, log);
    }
    const rows = await tableStats(admin, TABLE, { from: main.wall0, to: main.wall2 });
    const notes = [
      `${opts.workers} worker process(es), concurrency ${opts.concurrency}, prefetch ${prefetch}`,
      'results pushed back on a reply queue (no polling)',
      `${inputs.checkedCount} results checked, each against its own task's distinct input`,
    ];
    notes.push(...rowsNote(TABLE, rows, inputs.count));
    return systemFigures(main, mem, rows, opts, prefetchOne, inputs, notes);
  } finally {
    await sampler?.stop();
    if (client) await client.close();
    await Promise.all(workers.map((w) => stopChild(w)));
    await deleteQueues(QUEUE).catch((err: unknown) => log(`raw: queue clean-up failed: ${String(err)}`));
  }
}
