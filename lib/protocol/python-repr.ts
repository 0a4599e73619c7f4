import { pythonFloatRepr } from './python-json';

/**
 * Python `repr()` of a JSON-like value, as Celery writes `argsrepr` / `kwargsrepr`:
 * `['storage yay', False]`, `{'capitalize': True}`. Display only; truncated to `maxLength`
 * characters like `celery.utils.saferepr` (Celery uses 1024).
 */
export function pythonRepr(value: unknown, maxLength = 1024): string {
  const text = repr(value, 0);
  return text.length > maxLength ? text.slice(0, maxLength - 3) + '...' : text;
}

function repr(value: unknown, depth: number): string {
  if (depth > 100) return '...';
  switch (typeof value) {
    case 'string':
      return pythonStrRepr(value);
    case 'number':
      return pythonFloatRepr(value, 'repr');
    case 'bigint':
      return value.toString();
    case 'boolean':
      return value ? 'True' : 'False';
    case 'undefined':
      return 'None';
    case 'object': {
      if (value === null) return 'None';
      if (Array.isArray(value)) return '[' + value.map((v) => repr(v, depth + 1)).join(', ') + ']';
      if (value instanceof Date) return pythonStrRepr(value.toISOString());
      const entries = Object.keys(value).map(
        (key) => pythonStrRepr(key) + ': ' + repr((value as Record<string, unknown>)[key], depth + 1),
      );
      return '{' + entries.join(', ') + '}';
    }
    default:
      return 'None';
  }
}

const NON_PRINTABLE = /[\p{C}\p{Z}]/u;

/** Python 3 `repr(str)`: single quotes unless the text has a `'` and no `"`; non-printables escaped. */
export function pythonStrRepr(text: string): string {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of text) {
    if (ch === quote || ch === '\\') out += '\\' + ch;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (ch !== ' ' && NON_PRINTABLE.test(ch)) {
      const code = ch.codePointAt(0) as number;
      if (code <= 0xff) out += '\\x' + code.toString(16).padStart(2, '0');
      else if (code <= 0xffff) out += '\\u' + code.toString(16).padStart(4, '0');
      else out += '\\U' + code.toString(16).padStart(8, '0');
    } else out += ch;
  }
  return out + quote;
}
