import { PyDate, PyDecimal, PyTime, PyUUID } from '../../../lib/protocol/kombu-types';
import { parsePythonJson, pythonJsonDumps, UnknownJsonTypeError } from '../../../lib/protocol/python-json';
import { decodeTaskMessage, encodeTaskMessage } from '../../../lib/protocol/task-message';
import { InvalidTaskMessageError } from '../../../lib/errors/celery.errors';

/** kombu ≥ 5.3 JSON envelopes (wire spec §1.8), as kombu 5.6 writes them. */
const KOMBU_TEXT =
  '{"dt": {"__type__": "datetime", "__value__": "2025-01-15T12:00:00.123456+00:00"}, ' +
  '"naive": {"__type__": "datetime", "__value__": "2025-01-15T12:00:00"}, ' +
  '"d": {"__type__": "date", "__value__": "2025-01-15"}, ' +
  '"t": {"__type__": "time", "__value__": "12:00:00"}, ' +
  '"u": {"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678"}}, ' +
  '"dec": {"__type__": "decimal", "__value__": "1.10"}, ' +
  '"b": {"__type__": "bytes", "__value__": "abc"}, ' +
  '"b64": {"__type__": "base64", "__value__": "/wA="}}';

describe('kombu JSON envelopes', () => {
  it('decodes every envelope kombu writes into JS values', () => {
    const v = parsePythonJson(KOMBU_TEXT) as Record<string, unknown>;
    expect(v.dt).toEqual(new Date(Date.UTC(2025, 0, 15, 12, 0, 0, 123)));
    expect(v.naive).toEqual(new Date(Date.UTC(2025, 0, 15, 12, 0, 0)));
    expect(v.d).toEqual(new PyDate('2025-01-15'));
    expect(v.t).toEqual(new PyTime('12:00:00'));
    expect(v.u).toEqual(new PyUUID('12345678-1234-5678-1234-567812345678'));
    expect(v.dec).toEqual(new PyDecimal('1.10'));
    expect(v.b).toEqual(Buffer.from('abc'));
    expect(v.b64).toEqual(Buffer.from([0xff, 0x00]));
  });

  it('accepts the uuid envelope of kombu 5.3.0, which also sent "version"', () => {
    expect(parsePythonJson('{"__type__": "uuid", "__value__": {"hex": "12345678123456781234567812345678", "version": 4}}')).toEqual(
      new PyUUID('12345678-1234-5678-1234-567812345678'),
    );
  });

  it('encodes the values back into the same envelopes', () => {
    const v = parsePythonJson(KOMBU_TEXT) as Record<string, unknown>;
    delete v.naive; // a naive datetime comes back aware (UTC): the one value that does not round-trip exactly
    const text = pythonJsonDumps(v);
    expect(text).toBe(KOMBU_TEXT.replace('"2025-01-15T12:00:00.123456+00:00"', '"2025-01-15T12:00:00.123000+00:00"').replace(/"naive": \{[^}]*\}, /, ''));
  });

  it('writes plain values, as kombu 5.2 did, for Celery 5.2 peers', () => {
    const text = pythonJsonDumps(
      [new Date(Date.UTC(2025, 0, 15, 12, 0, 0, 123)), new PyDate('2025-01-15'), new PyUUID('12345678-1234-5678-1234-567812345678'), new PyDecimal('1.10'), Buffer.from('abc')],
      { envelopes: false },
    );
    expect(text).toBe('["2025-01-15T12:00:00.123000Z", "2025-01-15T00:00:00", "12345678-1234-5678-1234-567812345678", "1.10", "abc"]');
  });

  it('leaves objects with other keys alone', () => {
    expect(parsePythonJson('{"__type__": "datetime", "__value__": "x", "extra": 1}')).toEqual({ __type__: 'datetime', __value__: 'x', extra: 1 });
  });

  it('throws UnknownJsonTypeError for an unknown __type__', () => {
    expect(() => parsePythonJson('[{"__type__": "set", "__value__": [1]}]')).toThrow(UnknownJsonTypeError);
  });

  it('makes an unknown __type__ in a task message a per-message InvalidTaskMessageError naming the type', () => {
    const m = encodeTaskMessage({ task: 't', id: 'id-1', args: [] }, { nowMicros: 0, origin: 'o' });
    const body = Buffer.from('[[{"__type__": "pickle", "__value__": "x"}], {}, {}]');
    let error: unknown;
    try {
      decodeTaskMessage({ headers: m.headers, contentType: 'application/json', body });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(InvalidTaskMessageError);
    expect((error as InvalidTaskMessageError).taskId).toBe('id-1');
    expect((error as Error).message).toContain('"pickle"');
  });

  it('uses envelopes in task bodies for 5.3+ peers and plain values for 5.2 peers', () => {
    const when = new Date(Date.UTC(2025, 0, 15, 12, 0, 0));
    const now = encodeTaskMessage({ task: 't', id: 'i', args: [when] }, { nowMicros: 0, origin: 'o' });
    const old = encodeTaskMessage({ task: 't', id: 'i', args: [when] }, { nowMicros: 0, origin: 'o', peer: '5.2' });
    expect(now.body.toString()).toContain('[{"__type__": "datetime", "__value__": "2025-01-15T12:00:00+00:00"}]');
    expect(old.body.toString()).toContain('["2025-01-15T12:00:00Z"]');
  });
});
