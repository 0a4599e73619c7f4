/**
 * Once per run: do raw and nestjs put the same bytes on the wire? nestjs-celery's Producer sends
 * one task (a fixed id, the benchmark's first input) to a queue of its own; raw's hand-built
 * message for the same id, argument and route (the Producer's reply_to, reply queue and origin,
 * read from its message) goes to the same queue; both are taken back with basic.get and compared:
 * body bytes, AMQP properties and header values as received, and the header tables encoded by
 * amqplib's codec (which shows the type tags, e.g. int32 `I` against a short `s`, that decoding
 * hides) — raw's against what lib/protocol/task-message.ts's encodeTaskMessage gives the Producer.
 * The library is used only here, never on raw's path.
 */
import * as amqplib from 'amqplib';
import { randomUUID } from 'node:crypto';
import { dirname, join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { encodeTaskMessage } from '../lib/protocol/task-message';
import { AMQP_URL, baseText, deleteQueues, RAW_NOTIFY_HEADER, sleep, TASK_NAME, taskText } from './common';
import { openNestjsClient } from './nestjs-system';
import { celeryMessage, RawRoute } from './raw-system';

/** amqplib's field-table encoder (not in its package exports: loaded by path, for this one comparison). */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const codec = require(join(dirname(require.resolve('amqplib')), 'lib', 'codec.js')) as { encodeTable(buffer: Buffer, value: unknown, offset: number): number };

export interface WireCheck {
  /** Everything below equal. */
  same_bytes: boolean;
  body_bytes: number;
  header_table_bytes: number;
  compared: string[];
  differences: string[];
}

function encodedTable(headers: unknown): Buffer {
  const buffer = Buffer.alloc(1 << 20);
  const length = codec.encodeTable(buffer, headers, 0);
  return Buffer.from(buffer.subarray(0, length));
}

async function takeOne(ch: amqplib.Channel, queue: string): Promise<amqplib.GetMessage> {
  for (let i = 0; i < 100; i++) {
    const msg = await ch.get(queue, { noAck: true });
    if (msg) return msg;
    await sleep(20);
  }
  throw new Error(`wire check: no message on ${queue} after 2 s`);
}

/** What the Producer's encoder (encodeTaskMessage) makes of sendTask(TASK_NAME, { args: [text, false] }) with its defaults. */
function encodeAsProducer(id: string, text: string, route: RawRoute) {
  return encodeTaskMessage(
    { task: TASK_NAME, id, args: [text, false], kwargs: {}, priority: 0, replyTo: route.replyTo, headers: { [RAW_NOTIFY_HEADER]: route.notify } },
    { nowMicros: Date.now() * 1000, origin: route.origin },
  );
}

/**
 * Where raw's hand-built message differs from the library's encoding of the same task (no broker
 * needed): body bytes, the header table as amqplib encodes it (type tags included) and the
 * properties. Empty when they are the same bytes.
 */
export function libraryDifferences(id: string, text: string, route: RawRoute): string[] {
  const out: string[] = [];
  const library = encodeAsProducer(id, text, route);
  const raw = celeryMessage(id, text, route);
  if (!library.body.equals(raw.body)) out.push(`body: library ${JSON.stringify(library.body.toString().slice(0, 300))} raw ${JSON.stringify(raw.body.toString().slice(0, 300))}`);
  const libraryTable = encodedTable(library.amqpHeaders);
  const rawTable = encodedTable(raw.properties.headers);
  if (!libraryTable.equals(rawTable)) out.push(`encoded header table: library ${libraryTable.toString('hex')} raw ${rawTable.toString('hex')}`);
  const { headers: _headers, ...rawProps } = raw.properties;
  if (!isDeepStrictEqual({ ...library.properties }, rawProps)) out.push(`properties: library ${JSON.stringify(library.properties)} raw ${JSON.stringify(rawProps)}`);
  return out;
}

export async function wireCheck(payloadBytes: number | null, table: string): Promise<WireCheck> {
  const queue = `bench_wire_${process.pid}`;
  const text = taskText(baseText(payloadBytes), 0);
  const id = randomUUID();
  const nestjs = await openNestjsClient(queue, table);
  const conn = await amqplib.connect(AMQP_URL);
  try {
    const ch = await conn.createChannel();
    await nestjs.producer.sendTask(TASK_NAME, { args: [text, false], queue, taskId: id });
    const fromNestjs = await takeOne(ch, queue);
    const h = fromNestjs.properties.headers ?? {};
    const route: RawRoute = { replyTo: String(fromNestjs.properties.replyTo), notify: String(h[RAW_NOTIFY_HEADER]), origin: String(h.origin) };
    const raw = celeryMessage(id, text, route);
    ch.publish('', queue, raw.body, raw.properties);
    const fromRaw = await takeOne(ch, queue);

    const differences: string[] = [];
    if (!fromNestjs.content.equals(fromRaw.content)) {
      differences.push(`body: nestjs ${JSON.stringify(fromNestjs.content.toString().slice(0, 300))} raw ${JSON.stringify(fromRaw.content.toString().slice(0, 300))}`);
    }
    const { headers: nestjsHeaders, ...nestjsProps } = fromNestjs.properties;
    const { headers: rawHeaders, ...rawProps } = fromRaw.properties;
    if (!isDeepStrictEqual(nestjsProps, rawProps)) differences.push(`properties: nestjs ${JSON.stringify(nestjsProps)} raw ${JSON.stringify(rawProps)}`);
    if (JSON.stringify(nestjsHeaders) !== JSON.stringify(rawHeaders)) {
      differences.push(`headers as received (values and order): nestjs ${JSON.stringify(nestjsHeaders)} raw ${JSON.stringify(rawHeaders)}`);
    }
    differences.push(...libraryDifferences(id, text, route));
    // what libraryDifferences compares against is what the Producer sent
    if (!encodeAsProducer(id, text, route).body.equals(fromNestjs.content)) differences.push('the Producer sent a body other than encodeTaskMessage gives');
    const rawTable = encodedTable(raw.properties.headers);
    return {
      same_bytes: differences.length === 0,
      body_bytes: fromRaw.content.length,
      header_table_bytes: rawTable.length,
      compared: [
        'body bytes as received (nestjs Producer.sendTask vs raw celeryMessage, same task id and argument)',
        'AMQP properties as received',
        'header values and order as received',
        'header table bytes encoded by amqplib (raw vs encodeTaskMessage, the Producer\'s encoder)',
      ],
      differences,
    };
  } finally {
    await nestjs.close().catch(() => undefined);
    await conn.close().catch(() => undefined);
    await deleteQueues(queue).catch(() => undefined);
  }
}
