/**
 * How task arguments, results and errors cross between the worker's main thread and an isolated
 * thread. `postMessage` uses the structured clone algorithm, which keeps Date, Uint8Array, bigint,
 * NaN and nested objects, but drops prototypes (a PyDecimal would arrive as a plain object and be
 * stored as `{"value": ...}`) and throws on functions. So values are first reduced to what
 * `pythonJsonDumps` would write (toJSON applied, functions and undefined left out as it leaves
 * them out), with kombu's Python types tagged and rebuilt on the other side; errors travel as
 * plain records that keep their name, message, stack and Python class fields.
 */
import { types } from 'node:util';
import { PyDate, PyDecimal, PyTime, PyUUID } from '../../protocol/kombu-types';

/** Key of the tag object that carries a kombu Python value across. */
const TAG = '\u0000nestjs-celery:py';
const PY_TYPES = { PyDate, PyTime, PyDecimal, PyUUID } as const;
type PyTypeName = keyof typeof PY_TYPES;

/** `value` in a form `postMessage` carries without loss (for the JSON the result row will hold). */
export function toTransferable(value: unknown, depth = 0): unknown {
  if (depth > 1000) throw new RangeError('value is nested too deeply to encode as JSON');
  if (typeof value === 'function' || typeof value === 'symbol') return undefined;
  if (typeof value !== 'object' || value === null) return value;
  if (types.isDate(value) || types.isUint8Array(value)) return value;
  for (const name of Object.keys(PY_TYPES) as PyTypeName[]) {
    if (value instanceof PY_TYPES[name]) return { [TAG]: name, value: (value as PyDate).value };
  }
  const withJson = value as { toJSON?: () => unknown };
  if (typeof withJson.toJSON === 'function') return toTransferable(withJson.toJSON(), depth + 1);
  if (Array.isArray(value)) return value.map((item) => toTransferable(item, depth + 1) ?? null);
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value)) {
    const item = toTransferable((value as Record<string, unknown>)[key], depth + 1);
    if (item !== undefined) out[key] = item;
  }
  return out;
}

/** The value `toTransferable` was given, as the task or the result store expects it. */
export function fromTransferable(value: unknown): unknown {
  if (typeof value !== 'object' || value === null) return value;
  // checked across realms: what postMessage delivers is built in Node's main realm (not a test sandbox's)
  if (types.isDate(value)) return new Date((value as Date).getTime());
  // structured clone turns a Buffer into a plain Uint8Array; decoded bytes arguments are Buffers
  if (types.isUint8Array(value)) return Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  if (Array.isArray(value)) return value.map(fromTransferable);
  const tag = (value as Record<string, unknown>)[TAG];
  if (typeof tag === 'string' && tag in PY_TYPES) return new PY_TYPES[tag as PyTypeName]((value as { value: string }).value);
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value)) out[key] = fromTransferable((value as Record<string, unknown>)[key]);
  return out;
}

/** An error (or any thrown value) as it crosses a thread boundary. */
export interface TransferredError {
  /** False when something other than an Error was thrown; then `thrown` holds it. */
  isError: boolean;
  thrown?: unknown;
  name: string;
  message: string;
  stack?: string;
  /** Python class fields an error may carry (see toExceptionInfo). */
  excType?: string;
  excModule?: string;
  excMessage?: unknown[];
  code?: string;
  cause?: TransferredError;
}

export function toTransferredError(thrown: unknown, depth = 0): TransferredError {
  if (!(thrown instanceof Error)) {
    let value: unknown;
    try {
      value = structuredClone(thrown);
    } catch {
      value = String(thrown);
    }
    return { isError: false, thrown: value, name: 'Error', message: String(value) };
  }
  const fields = thrown as Error & { excType?: unknown; excModule?: unknown; excMessage?: unknown; code?: unknown };
  const out: TransferredError = { isError: true, name: thrown.name, message: thrown.message, stack: thrown.stack };
  if (typeof fields.excType === 'string') out.excType = fields.excType;
  if (typeof fields.excModule === 'string') out.excModule = fields.excModule;
  if (Array.isArray(fields.excMessage)) {
    try {
      out.excMessage = toTransferable(fields.excMessage) as unknown[];
    } catch {
      out.excMessage = fields.excMessage.map(String);
    }
  }
  if (typeof fields.code === 'string') out.code = fields.code;
  if (thrown.cause !== undefined && depth < 5) out.cause = toTransferredError(thrown.cause, depth + 1);
  return out;
}

const BUILTIN_ERRORS: Record<string, ErrorConstructor> = {
  Error,
  TypeError,
  RangeError,
  SyntaxError,
  ReferenceError,
  EvalError,
  URIError,
};

/**
 * The error rebuilt on this side: a builtin class when its name is one (so `instanceof TypeError`
 * still holds), else an Error carrying the original name; the stack is the one from the thread.
 */
export function fromTransferredError(t: TransferredError): unknown {
  if (!t.isError) return t.thrown;
  const Ctor = BUILTIN_ERRORS[t.name] ?? Error;
  const err = new Ctor(t.message) as Error & Record<string, unknown>;
  if (err.name !== t.name) Object.defineProperty(err, 'name', { value: t.name, writable: true, configurable: true, enumerable: false });
  if (t.stack !== undefined) err.stack = t.stack;
  if (t.excType !== undefined) err.excType = t.excType;
  if (t.excModule !== undefined) err.excModule = t.excModule;
  if (t.excMessage !== undefined) err.excMessage = fromTransferable(t.excMessage);
  if (t.code !== undefined) err.code = t.code;
  if (t.cause !== undefined) err.cause = fromTransferredError(t.cause);
  return err;
}
