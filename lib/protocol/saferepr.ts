import { pythonFloatRepr } from './python-json';

/**
 * Celery's `saferepr` (celery/utils/saferepr.py), which writes the `argsrepr` / `kwargsrepr`
 * headers: strings always in single quotes with `'` escaped and nothing else escaped, containers
 * shown to `maxLevels` deep (`[...]` below), and the whole cut at `maxLength` characters with
 * `, ...` followed by the brackets still open. Display only, but Flower and logs show it.
 */
export function saferepr(value: unknown, maxLength = 1024, maxLevels = 3): string {
  const out: string[] = [];
  let remaining = maxLength;
  const stream = tokens(value, 0, maxLevels);
  for (let next = stream.next(); !next.done; next = stream.next()) {
    const token = next.value;
    if (remaining <= 0) {
      // The value cut last was the last of its container: just close it (closers are not counted).
      if (token.kind === 'literal' && token.direction < 0) {
        out.push(token.text);
        continue;
      }
      out.push(', ...');
      // Close what is still open; a container opened after the cut is not shown, nor its closer.
      let depth = 0;
      for (const rest of [token, ...stream]) {
        if (rest.kind !== 'literal' || rest.cuttable) continue;
        depth += rest.direction;
        if (depth < 0) {
          depth = 0;
          out.push(rest.text);
        }
      }
      break;
    }
    let text: string;
    if (token.kind === 'literal') text = token.text;
    else if (token.kind === 'key') text = saferepr(token.text, remaining, maxLevels);
    else if (token.kind === 'quoted') text = `'${truncate(token.text, remaining).replace(/'/g, "\\'")}'`;
    else text = truncate(token.text, remaining);
    out.push(text);
    remaining -= text.length;
  }
  return out.join('');
}

type Token =
  | { kind: 'literal'; text: string; cuttable: boolean; direction: -1 | 0 | 1 }
  | { kind: 'key' | 'quoted' | 'text'; text: string };

const literal = (text: string, cuttable: boolean, direction: -1 | 0 | 1): Token => ({ kind: 'literal', text, cuttable, direction });
const SEPARATOR = literal(', ', true, 0);
const KEY_SEPARATOR = literal(': ', true, 0);

/**
 * A Python tuple, for display only: saferepr writes it `('a', False)` (`(x,)` with one item) where
 * a list is `['a', False]`. Celery's signatures keep their args as tuples, so the argsrepr of a
 * canvas message shows them that way. JSON has no tuple: never put one in a message body.
 */
export class PyTuple {
  constructor(readonly items: readonly unknown[]) {}
}

/** The token stream of a value; `level` is how many containers are open around it. */
function* tokens(value: unknown, level: number, maxLevels: number): Generator<Token> {
  if (typeof value === 'string') {
    yield { kind: 'quoted', text: value };
    return;
  }
  let start: string;
  let end: string;
  let entries: [string | null, unknown][];
  if (Array.isArray(value)) {
    [start, end, entries] = ['[', ']', value.map((v) => [null, v])];
  } else if (value instanceof PyTuple) {
    // Python writes a 1-tuple as `(x,)`
    [start, end, entries] = ['(', value.items.length === 1 ? ',)' : ')', value.items.map((v) => [null, v])];
  } else if (isPlainObject(value)) {
    [start, end, entries] = ['{', '}', Object.keys(value).map((k) => [k, value[k]])];
  } else {
    yield { kind: 'text', text: scalarRepr(value) };
    return;
  }
  if (maxLevels && level >= maxLevels) {
    yield literal(`${start}...${end}`, false, 0);
    return;
  }
  yield literal(start, false, 1);
  for (let i = 0; i < entries.length; i++) {
    const [key, item] = entries[i];
    if (key !== null) {
      yield { kind: 'key', text: key };
      yield KEY_SEPARATOR;
    }
    yield* tokens(item, level + 1, maxLevels);
    if (i < entries.length - 1) yield SEPARATOR;
  }
  yield literal(end, false, -1);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** `celery.utils.text.truncate`: cut at a word boundary and add `...`. */
function truncate(text: string, maxLength: number): string {
  if (maxLength && text.length >= maxLength) {
    const head = text.slice(0, maxLength);
    const space = head.lastIndexOf(' ');
    return (space >= 0 ? head.slice(0, space) : head) + '...';
  }
  return text;
}

function scalarRepr(value: unknown): string {
  switch (typeof value) {
    case 'number':
      return pythonFloatRepr(value, 'repr');
    case 'bigint':
      return value.toString();
    case 'boolean':
      return value ? 'True' : 'False';
    case 'object':
      if (value instanceof Date) return datetimeRepr(value);
      if (value instanceof Uint8Array) return bytesRepr(Buffer.from(value.buffer, value.byteOffset, value.byteLength));
      if (value !== null) return `'${String(value)}'`;
      return 'None';
    default:
      return 'None';
  }
}

function datetimeRepr(d: Date): string {
  const parts = [d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds()];
  if (d.getUTCMilliseconds()) parts.push(d.getUTCMilliseconds() * 1000);
  return `datetime.datetime(${parts.join(', ')}, tzinfo=datetime.timezone.utc)`;
}

function bytesRepr(buffer: Buffer): string {
  try {
    return `b'${new TextDecoder('utf-8', { fatal: true }).decode(buffer)}'`;
  } catch {
    return `b'${buffer.toString('hex')}'`;
  }
}

/**
 * Python's repr of a tuple, `(1, 'two')` / `(1,)` / `()`: a retry is sent from a signature, which
 * holds its args as a tuple, so Celery's retry message says `argsrepr: "(1, 'two')"` where the
 * first message said `[1, 'two']`.
 */
export function tupleRepr(values: readonly unknown[]): string {
  const list = saferepr(values);
  return `(${list.slice(1, -1)}${values.length === 1 ? ',' : ''})`;
}
