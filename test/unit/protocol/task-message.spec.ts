import { deflateSync, gzipSync } from 'node:zlib';
import { InvalidTaskMessageError } from '../../../lib/errors/celery.errors';
import {
  decodeTaskMessage,
  decodeTaskMessageAsync,
  encodeTaskMessage,
  EncodeContext,
  IncomingMessage,
  TaskMessageSpec,
} from '../../../lib/protocol/task-message';
import { CAPTURE_NOW_MICROS, CAPTURE_ORIGIN, CaptureFile, loadVector } from '../../support/vectors';

const ID = '6d3c1c9e-8c7a-4e0f-9a47-2a1b5e6f7d80';
const GOOD_BODY = '[["storage yay my DB is powerful results Astra", false], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]';
const CTX: EncodeContext = { nowMicros: CAPTURE_NOW_MICROS, origin: CAPTURE_ORIGIN };
/** A clock with no sub-second part, so expected date strings are easy to read. */
const ROUND_NOW_MICROS = Date.UTC(2025, 0, 15, 12, 0, 0) * 1000;

const CELERY_52_HEADERS = [
  'lang', 'task', 'id', 'shadow', 'eta', 'expires', 'group', 'group_index', 'retries', 'timelimit',
  'root_id', 'parent_id', 'argsrepr', 'kwargsrepr', 'origin', 'ignore_result',
];
const CELERY_53_HEADERS = [...CELERY_52_HEADERS, 'replaced_task_nesting', 'stamped_headers', 'stamps'];

function plainHeaders(extra: Record<string, unknown> = {}): Record<string, unknown> {
  const plain = loadVector<CaptureFile>('capture_new.json').messages.find((m) => m.label === 'plain');
  if (!plain) throw new Error('vector "plain" missing');
  return { ...plain.headers, ...extra };
}

function message(overrides: Partial<IncomingMessage> = {}): IncomingMessage {
  return {
    headers: plainHeaders(),
    contentType: 'application/json',
    contentEncoding: 'utf-8',
    correlationId: ID,
    replyTo: '0b6c8a7e-3d1f-3c2a-9e4b-7f5d2c1a9e08',
    priority: 0,
    body: Buffer.from(GOOD_BODY, 'utf8'),
    ...overrides,
  };
}

/** Decodes and returns the InvalidTaskMessageError it must throw. */
function rejection(msg: IncomingMessage): InvalidTaskMessageError {
  try {
    decodeTaskMessage(msg);
  } catch (err) {
    expect(err).toBeInstanceOf(InvalidTaskMessageError);
    return err as InvalidTaskMessageError;
  }
  throw new Error('decodeTaskMessage accepted the message');
}

function encode(spec: Partial<TaskMessageSpec>, ctx: Partial<EncodeContext> = {}) {
  return encodeTaskMessage({ task: 'tasks.sortWords', id: ID, args: ['a b', false], ...spec }, { ...CTX, ...ctx });
}

describe('decodeTaskMessage: content type and body encoding', () => {
  it('rejects the pickle content type, naming the task id and the content type', () => {
    const err = rejection(message({ contentType: 'application/x-python-serialize' }));
    expect(err.taskId).toBe(ID);
    expect(err.reason).toContain('application/x-python-serialize');
    expect(err.message).toContain(ID);
  });

  it.each(['application/x-yaml', 'application/x-msgpack', 'text/plain', 'application/json; charset=utf-8', ''])(
    'rejects the non-accepted content type %p',
    (contentType) => {
      expect(rejection(message({ contentType })).taskId).toBe(ID);
    },
  );

  it('rejects a message with no content type', () => {
    expect(rejection(message({ contentType: undefined })).reason).toMatch(/content type/);
  });

  it('accepts another content type only when it is listed in options.accept', () => {
    const msg = message({ contentType: 'application/x-custom' });
    expect(decodeTaskMessage(msg, { accept: ['application/x-custom'] }).id).toBe(ID);
  });

  it('rejects truncated JSON, naming the task id', () => {
    const err = rejection(message({ body: Buffer.from(GOOD_BODY.slice(0, 40)) }));
    expect(err.taskId).toBe(ID);
    expect(err.reason).toMatch(/not valid JSON/);
  });

  it('rejects a body that is not UTF-8', () => {
    const err = rejection(message({ body: Buffer.from([0x5b, 0x22, 0xff, 0xfe, 0x22, 0x5d]) }));
    expect(err.taskId).toBe(ID);
    expect(err.reason).toMatch(/UTF-8/);
  });

  it("accepts Python's NaN / Infinity tokens, which json.dumps writes for float args", () => {
    const body = '[[NaN, Infinity, -Infinity], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]';
    expect(decodeTaskMessage(message({ body: Buffer.from(body) })).args).toEqual([NaN, Infinity, -Infinity]);
  });

  it('reads back a message encodeTaskMessage wrote with a non-finite float argument', () => {
    const encoded = encode({ args: [NaN] });
    const decoded = decodeTaskMessage(message({ headers: encoded.headers, body: encoded.body }));
    expect(decoded.args).toEqual([NaN]);
  });
});

describe('decodeTaskMessage: content_encoding', () => {
  it.each(['utf-8', 'UTF-8', 'Utf-8', 'utf8', 'UTF8', 'utf_8', 'binary', 'BINARY', 'ascii-8bit', 'ASCII-8BIT', '', undefined])(
    'reads a JSON body sent with content_encoding %p as UTF-8',
    (contentEncoding) => {
      const body = '[["caf\u00e9", "na\u00efve"], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]';
      const decoded = decodeTaskMessage(message({ contentEncoding, body: Buffer.from(body, 'utf8') }));
      expect(decoded.args).toEqual(['café', 'naïve']);
    },
  );

  it('reads raw UTF-8 bytes (not escaped) under binary as under utf-8', () => {
    const body = Buffer.from('[["café ☃"], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]', 'utf8');
    expect(decodeTaskMessage(message({ contentEncoding: 'binary', body })).args).toEqual(['café ☃']);
  });

  it.each(['utf-16', 'UTF-16LE', 'utf-32', 'latin-1', 'iso-8859-1', 'rot13', 'x-foo', 'gzip', 'utf-8 ', 'base64'])(
    'rejects content_encoding %p with an error naming the encoding and the task id',
    (contentEncoding) => {
      const err = rejection(message({ contentEncoding }));
      expect(err.taskId).toBe(ID);
      expect(err.reason).toBe(`content encoding ${JSON.stringify(contentEncoding)} is not supported (accepted: utf-8, binary, ascii-8bit)`);
    },
  );

  it('rejects a UTF-16 body labelled utf-16 instead of misreading it as UTF-8', () => {
    const body = Buffer.from(GOOD_BODY, 'utf16le');
    expect(rejection(message({ contentEncoding: 'utf-16', body })).reason).toMatch(/content encoding "utf-16"/);
  });

  it('rejects an unknown encoding on a compressed message before decompressing it (async path)', async () => {
    const err = await decodeTaskMessageAsync(
      message({ contentEncoding: 'rot13', headers: plainHeaders({ compression: 'application/x-gzip' }), body: deflateSync(Buffer.from(GOOD_BODY)) }),
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidTaskMessageError);
    expect((err as InvalidTaskMessageError).taskId).toBe(ID);
    expect((err as InvalidTaskMessageError).reason).toMatch(/^content encoding "rot13" is not supported/);
  });

  it('accepts utf-8 on a compressed message read asynchronously', async () => {
    const decoded = await decodeTaskMessageAsync(
      message({ contentEncoding: 'UTF-8', headers: plainHeaders({ compression: 'application/x-gzip' }), body: deflateSync(Buffer.from(GOOD_BODY)) }),
    );
    expect(decoded.id).toBe(ID);
  });
});

describe('decodeTaskMessage: compression', () => {
  it('inflates a zlib (RFC 1950) body sent with compression application/x-gzip, as kombu does', () => {
    const decoded = decodeTaskMessage(
      message({ headers: plainHeaders({ compression: 'application/x-gzip' }), body: deflateSync(Buffer.from(GOOD_BODY)) }),
    );
    expect(decoded.args).toEqual(['storage yay my DB is powerful results Astra', false]);
  });

  it('rejects a gzip (RFC 1952) stream labelled application/x-gzip, which zlib.decompress refuses too', () => {
    const err = rejection(message({ headers: plainHeaders({ compression: 'application/x-gzip' }), body: gzipSync(Buffer.from(GOOD_BODY)) }));
    expect(err.taskId).toBe(ID);
    expect(err.reason).toMatch(/decompress/);
  });

  it('rejects an uncompressed body labelled application/x-gzip', () => {
    expect(rejection(message({ headers: plainHeaders({ compression: 'application/x-gzip' }) })).taskId).toBe(ID);
  });

  it('rejects an unsupported compression, naming it', () => {
    const err = rejection(message({ headers: plainHeaders({ compression: 'application/x-bz2' }) }));
    expect(err.taskId).toBe(ID);
    expect(err.reason).toContain('application/x-bz2');
  });
});

describe('decodeTaskMessage: shape of a protocol v2 message', () => {
  it('rejects a 2-item body, naming the task id', () => {
    const err = rejection(message({ body: Buffer.from('[[], {}]') }));
    expect(err.taskId).toBe(ID);
    expect(err.reason).toMatch(/\[args, kwargs, embed\]/);
  });

  it('rejects a 4-item body', () => {
    expect(rejection(message({ body: Buffer.from('[[], {}, {}, 1]') })).taskId).toBe(ID);
  });

  it('rejects an object body when the task header is present', () => {
    expect(rejection(message({ body: Buffer.from('{"args": [], "kwargs": {}}') })).taskId).toBe(ID);
  });

  it('rejects a message whose id header is missing', () => {
    const headers = plainHeaders();
    delete headers.id;
    const err = rejection(message({ headers, correlationId: undefined }));
    expect(err.reason).toMatch(/"id"/);
    expect(err.taskId).toBeNull();
  });

  it('rejects a non-string task header, naming the task id', () => {
    expect(rejection(message({ headers: plainHeaders({ task: 42 }) })).taskId).toBe(ID);
    expect(rejection(message({ headers: plainHeaders({ task: '' }) })).taskId).toBe(ID);
  });

  it('rejects kwargs that are not a mapping (Celery: "Task keyword arguments is not a mapping")', () => {
    for (const kwargs of ['[]', '"x"', 'null', '3']) {
      const err = rejection(message({ body: Buffer.from(`[[], ${kwargs}, {}]`) }));
      expect(err.taskId).toBe(ID);
      expect(err.reason).toMatch(/keyword arguments are not a mapping/);
    }
  });

  it('rejects args that are not a list', () => {
    expect(rejection(message({ body: Buffer.from('[{"a": 1}, {}, {}]') })).reason).toMatch(/args are not a list/);
  });

  it('rejects an embed that is not a mapping, or an embed.chain that is not a list', () => {
    expect(rejection(message({ body: Buffer.from('[[], {}, [1]]') })).taskId).toBe(ID);
    expect(rejection(message({ body: Buffer.from('[[], {}, {"chain": "x"}]') })).reason).toMatch(/embed.chain/);
  });

  it('tolerates embed: null, as Celery does (request.update(**embed or {}))', () => {
    expect(decodeTaskMessage(message({ body: Buffer.from('[[], {}, null]') })).embed).toEqual({
      callbacks: null,
      errbacks: null,
      chain: null,
      chord: null,
    });
  });

  it.each(['eta', 'expires'])('rejects an unparseable %s string, naming the field and the task id', (field) => {
    const err = rejection(message({ headers: plainHeaders({ [field]: 'tomorrow at noon' }) }));
    expect(err.taskId).toBe(ID);
    expect(err.reason).toContain(field);
  });

  it('rejects an eta that is not a string', () => {
    expect(rejection(message({ headers: plainHeaders({ eta: 1736942460 }) })).reason).toMatch(/eta/);
  });

  it('rejects a timelimit that is not a [hard, soft] pair', () => {
    expect(rejection(message({ headers: plainHeaders({ timelimit: [300] }) })).reason).toMatch(/timelimit/);
    expect(rejection(message({ headers: plainHeaders({ timelimit: ['300', null] }) })).reason).toMatch(/timelimit/);
  });

  it('rejects a non-integer retries header', () => {
    expect(rejection(message({ headers: plainHeaders({ retries: 'one' }) })).reason).toMatch(/retries/);
  });

  it('gives an InvalidTaskMessageError whose message starts with "Invalid task message <id>:"', () => {
    expect(rejection(message({ body: Buffer.from('[[], {}]') })).message).toMatch(new RegExp(`^Invalid task message ${ID}: `));
  });
});

describe('decodeTaskMessage: fields and defaults of a protocol v2 message', () => {
  it('treats a missing priority property as 0', () => {
    expect(decodeTaskMessage(message({ priority: undefined })).priority).toBe(0);
    expect(decodeTaskMessage(message({ priority: 7 })).priority).toBe(7);
  });

  it('reads ignore_result null (Celery 5.7) and a missing ignore_result as null: "not set"', () => {
    expect(decodeTaskMessage(message({ headers: plainHeaders({ ignore_result: null }) })).ignoreResult).toBeNull();
    const headers = plainHeaders();
    delete headers.ignore_result;
    expect(decodeTaskMessage(message({ headers })).ignoreResult).toBeNull();
    expect(decodeTaskMessage(message({ headers: plainHeaders({ ignore_result: true }) })).ignoreResult).toBe(true);
    expect(decodeTaskMessage(message()).ignoreResult).toBe(false);
  });

  it('replaces a missing or empty root_id with the task id', () => {
    expect(decodeTaskMessage(message({ headers: plainHeaders({ root_id: '' }) })).rootId).toBe(ID);
    expect(decodeTaskMessage(message({ headers: plainHeaders({ root_id: null }) })).rootId).toBe(ID);
    expect(decodeTaskMessage(message({ headers: plainHeaders({ root_id: 'root-1' }) })).rootId).toBe('root-1');
  });

  it('reads eta and expires as epoch microseconds and timelimit as [hard, soft]', () => {
    const decoded = decodeTaskMessage(
      message({
        headers: plainHeaders({ eta: '2025-01-15T12:01:00.123456+00:00', expires: '2025-01-15T13:00:00+00:00', timelimit: [300, 240] }),
      }),
    );
    expect(decoded.eta).toBe(CAPTURE_NOW_MICROS + 60_000_000);
    expect(decoded.expires).toBe(Date.UTC(2025, 0, 15, 13) * 1000);
    expect(decoded.timeLimit).toEqual([300, 240]);
  });

  it('falls back to defaults for the optional headers of a minimal message', () => {
    const decoded = decodeTaskMessage(message({ headers: { task: 'tasks.sortWords', id: ID }, replyTo: undefined }));
    expect(decoded).toMatchObject({
      protocol: 2,
      retries: 0,
      rootId: ID,
      parentId: null,
      group: null,
      groupIndex: null,
      timeLimit: [null, null],
      ignoreResult: null,
      shadow: null,
      origin: null,
      replyTo: null,
      eta: null,
      expires: null,
    });
  });

  it('keeps custom headers in decoded.headers', () => {
    expect(decodeTaskMessage(message({ headers: plainHeaders({ tenant: 'acme' }) })).headers.tenant).toBe('acme');
  });
});

describe('decodeTaskMessage: protocol v1 (wire spec §1.10)', () => {
  const v1Body = {
    task: 'tasks.sortWords',
    id: 'v1-task-id',
    args: ['a b', true],
    kwargs: { capitalize: true },
    group: null,
    group_index: null,
    retries: 2,
    eta: '2025-01-15T12:01:00.123456+00:00',
    expires: null,
    utc: true,
    callbacks: [{ task: 'tasks.next', args: [], kwargs: {}, options: {}, subtask_type: null, immutable: false }],
    errbacks: null,
    timelimit: [300, 240],
    taskset: 'group-1',
    chord: null,
  };

  it('accepts an object body when no task header is present', () => {
    const decoded = decodeTaskMessage(message({ headers: {}, correlationId: 'v1-task-id', body: Buffer.from(JSON.stringify(v1Body)) }));
    expect(decoded).toMatchObject({
      protocol: 1,
      task: 'tasks.sortWords',
      id: 'v1-task-id',
      args: ['a b', true],
      kwargs: { capitalize: true },
      retries: 2,
      eta: CAPTURE_NOW_MICROS + 60_000_000,
      expires: null,
      group: 'group-1',
      timeLimit: [300, 240],
      rootId: 'v1-task-id',
      ignoreResult: null,
    });
    expect(decoded.embed).toEqual({ callbacks: v1Body.callbacks, errbacks: null, chain: null, chord: null });
  });

  it('accepts a v1 message with headers undefined and defaults args / kwargs', () => {
    const decoded = decodeTaskMessage(message({ headers: undefined, body: Buffer.from('{"task": "tasks.x", "id": "v1"}') }));
    expect(decoded).toMatchObject({ protocol: 1, task: 'tasks.x', id: 'v1', args: [], kwargs: {} });
  });

  it('rejects an object body without "task", naming the id from correlation_id', () => {
    const err = rejection(message({ headers: {}, correlationId: 'corr-1', body: Buffer.from('{"id": "corr-1", "args": []}') }));
    expect(err.taskId).toBe('corr-1');
    expect(err.reason).toMatch(/"task"/);
  });

  it('rejects an array body with neither a task header nor a task key', () => {
    expect(rejection(message({ headers: {}, body: Buffer.from(GOOD_BODY) })).reason).toMatch(/protocol v1/);
  });

  it('rejects a v1 body without an id', () => {
    expect(rejection(message({ headers: {}, correlationId: undefined, body: Buffer.from('{"task": "tasks.x"}') })).reason).toMatch(/"id"/);
  });

  it('rejects v1 kwargs that are not a mapping, naming the v1 id', () => {
    const err = rejection(message({ headers: {}, body: Buffer.from('{"task": "tasks.x", "id": "v1", "kwargs": [1]}') }));
    expect(err.taskId).toBe('v1');
  });
});

describe('encodeTaskMessage: eta / countdown', () => {
  it('ignores countdown 0, as Celery does (no eta)', () => {
    expect(encode({ countdown: 0 }).headers.eta).toBeNull();
  });

  it('sets eta = now + countdown in Celery date format', () => {
    expect(encode({ countdown: 60 }).headers.eta).toBe('2025-01-15T12:01:00.123456+00:00');
    expect(encode({ countdown: 1.5 }).headers.eta).toBe('2025-01-15T12:00:01.623456+00:00');
  });

  it('writes a valid 6-digit eta and expires for sub-microsecond countdown / expires (1.0000005 s)', () => {
    const { headers } = encode({ countdown: 1.0000005, expires: 1.0000005 });
    expect(headers.eta).toBe('2025-01-15T12:00:01.123456+00:00');
    expect(headers.expires).toBe('2025-01-15T12:00:01.123456+00:00');
  });

  it('formats an eta Date without the fraction when it is on a whole second', () => {
    expect(encode({ eta: new Date(Date.UTC(2025, 0, 15, 12, 5, 0)) }).headers.eta).toBe('2025-01-15T12:05:00+00:00');
  });

  it('passes an ISO eta string through unchanged, as on retry', () => {
    expect(encode({ eta: '2025-01-15T12:00:10.123456+00:00' }).headers.eta).toBe('2025-01-15T12:00:10.123456+00:00');
  });
});

describe('encodeTaskMessage: expires and the AMQP expiration property', () => {
  it('turns numeric expires into header now + N and expiration str(int(N*1000))', () => {
    const encoded = encode({ expires: 3600 });
    expect(encoded.headers.expires).toBe('2025-01-15T13:00:00.123456+00:00');
    expect(encoded.properties.expiration).toBe('3600000');
  });

  it('turns an expires Date into an expiration relative to now', () => {
    const encoded = encode({ expires: new Date(Date.UTC(2025, 0, 15, 12, 1, 30)) }, { nowMicros: ROUND_NOW_MICROS });
    expect(encoded.headers.expires).toBe('2025-01-15T12:01:30+00:00');
    expect(encoded.properties.expiration).toBe('90000');
  });

  it('truncates the expiration to whole milliseconds like int(expires_s * 1000)', () => {
    // now = …00.123456, expires = …00.123 one hour later: 3599.999544 s → "3599999"
    const encoded = encode({ expires: new Date(Date.UTC(2025, 0, 15, 13, 0, 0, 123)) });
    expect(encoded.properties.expiration).toBe('3599999');
  });

  it('clamps the expiration of an expires Date in the past to "0"', () => {
    const encoded = encode({ expires: new Date(Date.UTC(2025, 0, 15, 11, 0, 0)) }, { nowMicros: ROUND_NOW_MICROS });
    expect(encoded.properties.expiration).toBe('0');
    expect(encoded.headers.expires).toBe('2025-01-15T11:00:00+00:00');
  });

  it('clamps a negative numeric expires to "0"', () => {
    expect(encode({ expires: -5 }).properties.expiration).toBe('0');
  });

  it('computes the expiration from an ISO expires string and passes the string through', () => {
    const encoded = encode({ expires: '2025-01-15T13:00:00.123456+00:00' });
    expect(encoded.headers.expires).toBe('2025-01-15T13:00:00.123456+00:00');
    expect(encoded.properties.expiration).toBe('3600000');
  });

  it('sets no expiration property without expires', () => {
    expect(encode({}).properties).not.toHaveProperty('expiration');
    expect(encode({ expires: null }).properties).not.toHaveProperty('expiration');
  });
});

describe('encodeTaskMessage: headers and properties', () => {
  it('omits replaced_task_nesting, stamped_headers and stamps for peer 5.2', () => {
    expect(Object.keys(encode({}, { peer: '5.2' }).headers)).toEqual(CELERY_52_HEADERS);
  });

  it('sends the 5.3+ headers by default and for peer 5.3', () => {
    for (const peer of [undefined, '5.3'] as const) {
      const { headers } = encode({}, { peer });
      expect(Object.keys(headers)).toEqual(CELERY_53_HEADERS);
      expect(headers).toMatchObject({ replaced_task_nesting: 0, stamped_headers: null, stamps: {} });
    }
  });

  it("merges extra headers after Celery's own, in the given order", () => {
    const { headers, amqpHeaders } = encode({ headers: { tenant: 'acme', attempt: 3 } });
    expect(Object.keys(headers)).toEqual([...CELERY_53_HEADERS, 'tenant', 'attempt']);
    expect(headers.tenant).toBe('acme');
    expect(amqpHeaders.attempt).toEqual({ '!': 'int', value: 3 });
  });

  it('writes timelimit as [hard, soft] and types both as int32', () => {
    const { headers, amqpHeaders } = encode({ timeLimit: 300, softTimeLimit: 240 });
    expect(headers.timelimit).toEqual([300, 240]);
    expect(amqpHeaders.timelimit).toEqual([
      { '!': 'int', value: 300 },
      { '!': 'int', value: 240 },
    ]);
  });

  it('defaults root_id to the task id and keeps an explicit one', () => {
    expect(encode({}).headers.root_id).toBe(ID);
    expect(encode({ rootId: 'root-1', parentId: 'parent-1' }).headers).toMatchObject({ root_id: 'root-1', parent_id: 'parent-1' });
  });

  it('sets priority 0 by default, the given priority, and no priority for null (chord_unlock)', () => {
    expect(encode({}).properties.priority).toBe(0);
    expect(encode({ priority: 5 }).properties.priority).toBe(5);
    expect(encode({ priority: null }).properties).not.toHaveProperty('priority');
  });

  it('sets the fixed properties: application/json, utf-8, persistent, correlation id = task id', () => {
    expect(encode({ replyTo: 'oid' }).properties).toEqual({
      contentType: 'application/json',
      contentEncoding: 'utf-8',
      deliveryMode: 2,
      priority: 0,
      correlationId: ID,
      replyTo: 'oid',
    });
  });

  it('rejects args that are not an array and kwargs that are not an object', () => {
    expect(() => encode({ args: 'x' as never })).toThrow(TypeError);
    expect(() => encode({ kwargs: [] as never })).toThrow(TypeError);
  });

  it('writes an empty args list and kwargs mapping by default', () => {
    const encoded = encodeTaskMessage({ task: 't', id: ID }, CTX);
    expect(encoded.body.toString()).toBe('[[], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]');
    expect(encoded.headers).toMatchObject({ argsrepr: '[]', kwargsrepr: '{}' });
  });

  it('decodes what it encodes', () => {
    const encoded = encode({
      args: ['é', 1.5],
      kwargs: { capitalize: true },
      countdown: 10,
      expires: 60,
      retries: 2,
      group: 'g-1',
      groupIndex: 200,
      timeLimit: 300,
      ignoreResult: true,
      embed: { chain: [{ task: 'tasks.next' }] },
    });
    const decoded = decodeTaskMessage({
      headers: encoded.headers,
      contentType: encoded.properties.contentType,
      correlationId: encoded.properties.correlationId,
      priority: encoded.properties.priority,
      body: encoded.body,
    });
    expect(decoded).toMatchObject({
      protocol: 2,
      task: 'tasks.sortWords',
      id: ID,
      args: ['é', 1.5],
      kwargs: { capitalize: true },
      eta: CAPTURE_NOW_MICROS + 10_000_000,
      expires: CAPTURE_NOW_MICROS + 60_000_000,
      retries: 2,
      group: 'g-1',
      groupIndex: 200,
      timeLimit: [300, null],
      ignoreResult: true,
      priority: 0,
    });
    expect(decoded.embed.chain).toEqual([{ task: 'tasks.next' }]);
  });
});
