import { formatCeleryDate, parseCeleryDate } from './dates';
import { PyDate, PyDecimal, PyTime, PyUUID } from './kombu-types';

/**
 * JSON text exactly as Python's `json.dumps` writes it with default arguments (what kombu sends):
 * `", "` and `": "` separators, `ensure_ascii` escapes, Python float repr. Byte-identical bodies
 * make golden tests against captured Celery messages possible; every JSON parser reads both forms.
 */
export function pythonJsonDumps(value: unknown, options: JsonOptions = DEFAULT_JSON_OPTIONS): string {
  return dump(value, 0, options.envelopes);
}

export interface JsonOptions {
  /**
   * Write Date, Buffer, PyDate, PyTime, PyDecimal and PyUUID as kombu ≥ 5.3 envelopes
   * (`{"__type__": "datetime", "__value__": ...}`). Off for Celery 5.2 peers, which get plain strings
   * as kombu 5.2 wrote them.
   */
  envelopes: boolean;
}

export const DEFAULT_JSON_OPTIONS: JsonOptions = { envelopes: true };

const MAX_DEPTH = 1000;

function envelope(type: string, value: unknown): Record<string, unknown> {
  return { __type__: type, __value__: value };
}

/** The JSON form of the values kombu has envelopes for; undefined for everything else. */
function special(value: object, envelopes: boolean): unknown {
  if (value instanceof Date) {
    const text = formatCeleryDate(value.getTime() * 1000);
    return envelopes ? envelope('datetime', text) : text.replace(/\+00:00$/, 'Z');
  }
  if (value instanceof Uint8Array) {
    const buffer = Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    const text = utf8Strict(buffer);
    if (!envelopes) return text ?? buffer.toString('base64');
    return text !== null ? envelope('bytes', text) : envelope('base64', buffer.toString('base64'));
  }
  if (value instanceof PyDate) return envelopes ? envelope('date', value.value) : `${value.value}T00:00:00`;
  if (value instanceof PyTime) return envelopes ? envelope('time', value.value) : value.value;
  if (value instanceof PyDecimal) return envelopes ? envelope('decimal', value.value) : value.value;
  if (value instanceof PyUUID) return envelopes ? envelope('uuid', { hex: value.hex }) : value.value;
  return undefined;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
function utf8Strict(buffer: Buffer): string | null {
  try {
    return strictUtf8.decode(buffer);
  } catch {
    return null;
  }
}

function dump(value: unknown, depth: number, envelopes: boolean): string {
  if (depth > MAX_DEPTH) throw new RangeError('value is nested too deeply to encode as JSON');
  switch (typeof value) {
    case 'string':
      return quoteAscii(value);
    case 'number':
      return pythonFloatRepr(value, 'json');
    case 'bigint':
      return value.toString();
    case 'boolean':
      return value ? 'true' : 'false';
    case 'undefined':
    case 'function':
    case 'symbol':
      return 'null';
    case 'object': {
      if (value === null) return 'null';
      const converted = special(value, envelopes);
      if (converted !== undefined) return dump(converted, depth + 1, envelopes);
      const withJson = value as { toJSON?: () => unknown };
      if (typeof withJson.toJSON === 'function') return dump(withJson.toJSON(), depth + 1, envelopes);
      if (Array.isArray(value)) {
        return '[' + value.map((item) => dump(item, depth + 1, envelopes)).join(', ') + ']';
      }
      const parts: string[] = [];
      for (const key of Object.keys(value)) {
        const item = (value as Record<string, unknown>)[key];
        if (item === undefined || typeof item === 'function' || typeof item === 'symbol') continue;
        parts.push(quoteAscii(key) + ': ' + dump(item, depth + 1, envelopes));
      }
      return '{' + parts.join(', ') + '}';
    }
  }
}

const NEEDS_ESCAPE = /[^\x20-\x7e]|["\\]/;
const ESCAPES: Record<string, string> = {
  '"': '\\"',
  '\\': '\\\\',
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
  '\b': '\\b',
  '\f': '\\f',
};

/** A JSON string literal with every character outside 0x20–0x7E escaped as `\uXXXX` (Python's ensure_ascii). */
export function quoteAscii(text: string): string {
  if (!NEEDS_ESCAPE.test(text)) return '"' + text + '"';
  let out = '"';
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    const code = text.charCodeAt(i);
    const named = ESCAPES[ch];
    if (named !== undefined) out += named;
    else if (code < 0x20 || code > 0x7e) out += '\\u' + code.toString(16).padStart(4, '0');
    else out += ch;
  }
  return out + '"';
}

/**
 * Python's `repr(float)`: shortest round-trip digits, fixed notation for exponents -4..15 and
 * scientific (`1e-05`, `1e+16`) outside. JS numbers that are integers print as Python ints.
 * `mode` picks the spelling of non-finite values: JSON tokens (`NaN`, `Infinity`) or repr (`nan`, `inf`).
 */
export function pythonFloatRepr(value: number, mode: 'json' | 'repr'): string {
  if (Number.isNaN(value)) return mode === 'json' ? 'NaN' : 'nan';
  if (!Number.isFinite(value)) {
    if (mode === 'json') return value > 0 ? 'Infinity' : '-Infinity';
    return value > 0 ? 'inf' : '-inf';
  }
  if (Number.isInteger(value) && Math.abs(value) < 1e16) return Object.is(value, -0) ? '-0.0' : String(value);
  const [mantissa, expText] = value.toExponential().split('e');
  const exponent = Number(expText);
  const negative = mantissa.startsWith('-');
  const digits = mantissa.replace('-', '').replace('.', '');
  let body: string;
  if (exponent < -4 || exponent >= 16) {
    const mant = digits.length > 1 ? digits[0] + '.' + digits.slice(1) : digits;
    const sign = exponent < 0 ? '-' : '+';
    body = mant + 'e' + sign + String(Math.abs(exponent)).padStart(2, '0');
  } else if (exponent < 0) {
    body = '0.' + '0'.repeat(-exponent - 1) + digits;
  } else if (digits.length <= exponent + 1) {
    body = digits + '0'.repeat(exponent + 1 - digits.length) + '.0';
  } else {
    body = digits.slice(0, exponent + 1) + '.' + digits.slice(exponent + 1);
  }
  return negative ? '-' + body : body;
}

const NON_FINITE: Record<string, number> = { NaN: NaN, Infinity: Infinity, '-Infinity': -Infinity };
const SENTINEL = '\u0000nestjs-celery:';

/** An envelope whose `__type__` kombu does not know either: the message cannot be read. */
export class UnknownJsonTypeError extends TypeError {}

/**
 * `JSON.parse` for what kombu writes: the bare `NaN`, `Infinity` and `-Infinity` tokens of
 * Python's json module, and kombu ≥ 5.3's `{"__type__", "__value__"}` envelopes, decoded into JS
 * values (datetime → Date, bytes / base64 → Buffer, date / time / decimal / uuid → PyDate, PyTime,
 * PyDecimal, PyUUID). An unknown `__type__` throws UnknownJsonTypeError. Plain JSON takes the fast path.
 */
export function parsePythonJson(text: string): unknown {
  const reviver = text.includes('"__type__"') ? reviveEnvelope : undefined;
  try {
    return JSON.parse(text, reviver);
  } catch (err) {
    if (err instanceof UnknownJsonTypeError || !/NaN|Infinity/.test(text)) throw err;
  }
  let out = '';
  let i = 0;
  let replaced = false;
  while (i < text.length) {
    const ch = text[i];
    if (ch === '"') {
      const end = endOfString(text, i);
      out += text.slice(i, end);
      i = end;
      continue;
    }
    const token = /^(-Infinity|Infinity|NaN)/.exec(text.slice(i, i + 9));
    if (token) {
      out += JSON.stringify(SENTINEL + token[1]);
      i += token[1].length;
      replaced = true;
      continue;
    }
    out += ch;
    i++;
  }
  if (!replaced) return JSON.parse(text, reviver);
  return JSON.parse(out, (key, value: unknown) => {
    if (typeof value === 'string' && value.startsWith(SENTINEL)) return NON_FINITE[value.slice(SENTINEL.length)];
    return reviver ? reviver(key, value) : value;
  });
}

function reviveEnvelope(_key: string, value: unknown): unknown {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return value;
  const keys = Object.keys(value);
  if (keys.length !== 2 || !('__type__' in value) || !('__value__' in value)) return value;
  const { __type__: type, __value__: v } = value as { __type__: unknown; __value__: unknown };
  const text = typeof v === 'string' ? v : null;
  const bad = (): never => {
    throw new UnknownJsonTypeError(`JSON envelope {"__type__": ${JSON.stringify(type)}} has an invalid __value__`);
  };
  switch (type) {
    case 'datetime':
      if (text === null) return bad();
      try {
        return new Date(Math.floor(parseCeleryDate(text) / 1000));
      } catch {
        return bad();
      }
    case 'date':
      return text !== null && /^\d{4}-\d{2}-\d{2}$/.test(text) ? new PyDate(text) : bad();
    case 'time':
      return text !== null ? new PyTime(text) : bad();
    case 'decimal':
      return text !== null ? new PyDecimal(text) : bad();
    case 'uuid': {
      const hex = typeof v === 'object' && v !== null ? (v as { hex?: unknown }).hex : undefined;
      if (typeof hex !== 'string') return bad();
      try {
        return PyUUID.fromHex(hex);
      } catch {
        return bad();
      }
    }
    case 'bytes':
      return text !== null ? Buffer.from(text, 'utf8') : bad();
    case 'base64':
      return text !== null ? Buffer.from(text, 'base64') : bad();
    default:
      throw new UnknownJsonTypeError(`unknown JSON envelope type ${JSON.stringify(type)} (kombu knows datetime, date, time, uuid, decimal, bytes, base64)`);
  }
}

function endOfString(text: string, start: number): number {
  for (let i = start + 1; i < text.length; i++) {
    if (text[i] === '\\') i++;
    else if (text[i] === '"') return i + 1;
  }
  return text.length;
}
