/**
 * JSON text exactly as Python's `json.dumps` writes it with default arguments (what kombu sends):
 * `", "` and `": "` separators, `ensure_ascii` escapes, Python float repr. Byte-identical bodies
 * make golden tests against captured Celery messages possible; every JSON parser reads both forms.
 */
export function pythonJsonDumps(value: unknown): string {
  return dump(value, 0);
}

const MAX_DEPTH = 1000;

function dump(value: unknown, depth: number): string {
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
      const withJson = value as { toJSON?: () => unknown };
      if (typeof withJson.toJSON === 'function') return dump(withJson.toJSON(), depth + 1);
      if (Array.isArray(value)) {
        return '[' + value.map((item) => dump(item, depth + 1)).join(', ') + ']';
      }
      const parts: string[] = [];
      for (const key of Object.keys(value)) {
        const item = (value as Record<string, unknown>)[key];
        if (item === undefined || typeof item === 'function' || typeof item === 'symbol') continue;
        parts.push(quoteAscii(key) + ': ' + dump(item, depth + 1));
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

/**
 * `JSON.parse` that also reads the bare `NaN`, `Infinity` and `-Infinity` tokens Python's json
 * module writes for non-finite floats. Plain JSON takes the fast path; only text that fails to
 * parse and holds such a token is rescanned.
 */
export function parsePythonJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    if (!/NaN|Infinity/.test(text)) throw err;
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
  if (!replaced) return JSON.parse(text);
  return JSON.parse(out, (_key, value: unknown) =>
    typeof value === 'string' && value.startsWith(SENTINEL) ? NON_FINITE[value.slice(SENTINEL.length)] : value,
  );
}

function endOfString(text: string, start: number): number {
  for (let i = start + 1; i < text.length; i++) {
    if (text[i] === '\\') i++;
    else if (text[i] === '"') return i + 1;
  }
  return text.length;
}
