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
  /**
   * The call that produced each capture, as a TS caller makes it. Ids, clock, origin and reply_to
   * are injected; args, kwargs and embed come from the captured body. Signatures store args as
   * tuples, so Celery's argsrepr of canvas messages prints `(...)`: a caller passes that display form
   * explicitly, as apply_async's `argsrepr` option allows.
   */
  function encodeLike(m: CapturedMessage) {
    const body = JSON.parse(m.body) as [unknown[], Record<string, unknown>, Record<string, unknown>];
    const tupleRepr = (m.headers.argsrepr as string).startsWith('(');
    return encodeTaskMessage(
      {
        task: m.headers.task as string,
        id: m.headers.id as string,
        args: body[0],
        kwargs: body[1],
        countdown: m.label.startsWith('countdown60') ? 60 : m.headers.task === 'celery.chord_unlock' ? 1 : undefined,
        expires: m.label.includes('expires3600') ? 3600 : undefined,
        group: m.headers.group as string | null,
        groupIndex: m.headers.group_index as number | null,
        priority: m.properties.priority === null ? null : (m.properties.priority as number),
        ignoreResult: m.headers.ignore_result as boolean,
        argsrepr: tupleRepr ? (m.headers.argsrepr as string) : undefined,
        kwargsrepr: tupleRepr ? (m.headers.kwargsrepr as string) : undefined,
        replyTo: CAPTURE_REPLY_TO,
        embed: body[2] as never,
      },
      { nowMicros: CAPTURE_NOW_MICROS, origin: CAPTURE_ORIGIN, peer },
    );
  }

  it.each(capture.messages.map((m, i) => [`${i} ${m.label}`, m] as const))(
    'encodes captured message %s with the same headers, body and property bytes',
    (_label, m) => {
      const encoded = encodeLike(m);
      expect(encoded.headers).toEqual(m.headers);
      expect(Object.keys(encoded.headers)).toEqual(Object.keys(m.headers));
      expect(encoded.body.toString('utf8')).toBe(m.body);
      expect(propertyBytes(encoded)).toBe(m.props_bytes_hex);
      expect(m.exchange).toBe('');
      expect(m.routing_key).toBe('celery');
    },
  );

  it('computes the argsrepr of plain messages itself', () => {
    for (const m of capture.messages.filter((x) => !(x.headers.argsrepr as string).startsWith('('))) {
      const body = JSON.parse(m.body);
      const encoded = encodeTaskMessage({ task: 't', id: 'i', args: body[0], kwargs: body[1] }, { nowMicros: 0, origin: 'o', peer });
      expect(encoded.headers.argsrepr).toBe(m.headers.argsrepr);
      expect(encoded.headers.kwargsrepr).toBe(m.headers.kwargsrepr);
    }
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

  it('decodes the messages a worker published (chain step, retry)', () => {
    const worker = loadVector<Record<string, { published?: CapturedMessage[] }>>(file.replace('capture', 'worker'));
    const published = Object.values(worker).flatMap((v) => (typeof v === 'object' && v && Array.isArray(v.published) ? v.published : []));
    expect(published.length).toBeGreaterThan(0);
    for (const m of published) {
      const decoded = decodeTaskMessage({
        headers: m.headers,
        contentType: m.properties.content_type as string,
        correlationId: m.properties.correlation_id as string,
        priority: (m.properties.priority as number | null) ?? undefined,
        body: Buffer.from(m.body, 'utf8'),
      });
      expect(decoded.id).toBe(m.headers.id);
      expect(decoded.parentId).toBe(m.headers.parent_id);
      expect(decoded.retries).toBe(m.headers.retries);
      if (m.label === 'retry') expect(decoded.eta).not.toBeNull();
      if (m.label === 'chain_step') expect(decoded.embed.chain).toEqual([]);
    }
  });
});
