import { InvalidTaskMessageError } from '../errors/celery.errors';
import { compressBody, compressionMime, decompressBody, DecompressedTooLargeError } from './compression';
import { toAmqpFieldTable, AmqpFieldValue } from './amqp-field-table';
import { formatCeleryDate, parseCeleryDate } from './dates';
import { parsePythonJson, pythonJsonDumps, UnknownJsonTypeError } from './python-json';
import { saferepr } from './saferepr';

/**
 * Celery task protocol v2 (wire spec §1), pure: no I/O. `encodeTaskMessage` builds exactly what
 * `celery/app/amqp.py::as_task_v2` and kombu publish; `decodeTaskMessage` reads v2 and v1 messages
 * and names what is wrong with a message it cannot read.
 */

/** Which Celery generation the receiving side is: 5.2 lacks the stamping headers of 5.3+. */
export type PeerCompat = '5.2' | '5.3';

/**
 * Set on a task message that may have been published before: the next chain step or callbacks of
 * a run that may be a second one, a message our Producer publishes again after its confirm was
 * lost, a held ETA message moved before the consumer timeout. The worker that receives one reads
 * the task's stored state first and does not run a task that already succeeded. Python Celery
 * ignores it (an unknown header).
 */
export const MAYBE_DUPLICATE_HEADER = 'nestjs_celery_maybe_duplicate';

/** The headers of a task message (protocol v2: with a `task` header) marked with {@link MAYBE_DUPLICATE_HEADER}; other headers as they are. */
export function markMaybeDuplicate<H extends Record<string, unknown>>(headers: H): H {
  if (typeof headers.task !== 'string' || headers[MAYBE_DUPLICATE_HEADER] === true) return headers;
  return { ...headers, [MAYBE_DUPLICATE_HEADER]: true };
}

export interface TaskEmbed {
  callbacks: unknown[] | null;
  errbacks: unknown[] | null;
  chain: unknown[] | null;
  chord: unknown | null;
}

export interface TaskMessageSpec {
  task: string;
  id: string;
  args?: unknown[];
  kwargs?: Record<string, unknown>;
  /** Seconds from now; `0` is ignored, as in Celery. */
  countdown?: number;
  /** Absolute time: a Date, epoch microseconds, or an ISO string passed through as Celery does on retry. */
  eta?: Date | number | string | null;
  /** Seconds from now (number) or an absolute Date / ISO string. */
  expires?: number | Date | string | null;
  priority?: number | null;
  shadow?: string | null;
  group?: string | null;
  groupIndex?: number | null;
  retries?: number;
  /** `[hard, soft]` seconds. */
  timeLimit?: number | null;
  softTimeLimit?: number | null;
  rootId?: string | null;
  parentId?: string | null;
  ignoreResult?: boolean;
  replyTo?: string;
  /** Canvas stamping (5.3+ peers only): the stamp names and their values; default none. */
  stampedHeaders?: string[] | null;
  stamps?: Record<string, unknown>;
  /** `Task.replace` depth (5.3+ peers only); default 0. */
  replacedTaskNesting?: number;
  /** Display forms of the arguments; default Celery's saferepr of args / kwargs (apply_async's argsrepr / kwargsrepr). */
  argsrepr?: string;
  kwargsrepr?: string;
  /** Extra application headers, merged after Celery's own (they end up in the task's request). */
  headers?: Record<string, unknown>;
  embed?: Partial<TaskEmbed>;
  /** Compress the body: `zlib` (kombu's "gzip") or `brotli`; adds the `compression` header. */
  compression?: string;
}

export interface EncodeContext {
  /** Current time in epoch microseconds. */
  nowMicros: number;
  /** `gen<pid>@<hostname>` of the sender. */
  origin: string;
  peer?: PeerCompat;
}

export interface MessageProperties {
  contentType: string;
  contentEncoding: string;
  deliveryMode: number;
  priority?: number;
  correlationId: string;
  replyTo?: string;
  expiration?: string;
}

export interface EncodedTaskMessage {
  /** Header values as JS values, in Celery's order. */
  headers: Record<string, unknown>;
  /** The same headers typed for amqplib (every integer as int32 `I`). */
  amqpHeaders: { [key: string]: AmqpFieldValue };
  properties: MessageProperties;
  body: Buffer;
}

export function encodeTaskMessage(spec: TaskMessageSpec, ctx: EncodeContext): EncodedTaskMessage {
  const args = spec.args ?? [];
  const kwargs = spec.kwargs ?? {};
  if (!Array.isArray(args)) throw new TypeError(`task ${spec.task}: args must be an array`);
  if (typeof kwargs !== 'object' || kwargs === null || Array.isArray(kwargs)) {
    throw new TypeError(`task ${spec.task}: kwargs must be an object`);
  }
  const eta = spec.countdown ? ctx.nowMicros + spec.countdown * 1_000_000 : spec.eta;
  const expires = typeof spec.expires === 'number' ? ctx.nowMicros + spec.expires * 1_000_000 : spec.expires;
  const headers: Record<string, unknown> = {
    lang: 'py',
    task: spec.task,
    id: spec.id,
    shadow: spec.shadow ?? null,
    eta: dateHeader(eta),
    expires: dateHeader(expires),
    group: spec.group ?? null,
    group_index: spec.groupIndex ?? null,
    retries: spec.retries ?? 0,
    timelimit: [spec.timeLimit ?? null, spec.softTimeLimit ?? null],
    root_id: spec.rootId || spec.id,
    parent_id: spec.parentId ?? null,
    argsrepr: spec.argsrepr ?? saferepr(args),
    kwargsrepr: spec.kwargsrepr ?? saferepr(kwargs),
    origin: ctx.origin,
    ignore_result: spec.ignoreResult ?? false,
  };
  if (ctx.peer !== '5.2') {
    headers.replaced_task_nesting = spec.replacedTaskNesting ?? 0;
    headers.stamped_headers = spec.stampedHeaders ?? null;
    headers.stamps = spec.stamps ?? {};
  }
  if (spec.headers) {
    for (const key of Object.keys(spec.headers)) {
      if (!(key in headers)) headers[key] = spec.headers[key];
    }
  }
  const properties: MessageProperties = {
    contentType: 'application/json',
    contentEncoding: 'utf-8',
    deliveryMode: 2,
    correlationId: spec.id,
  };
  if (spec.priority !== null) properties.priority = spec.priority ?? 0;
  if (spec.replyTo) properties.replyTo = spec.replyTo;
  if (expires !== undefined && expires !== null) {
    const expiresAt = typeof expires === 'string' ? parseCeleryDate(expires) : toMicros(expires);
    const seconds = Math.max(0, (expiresAt - ctx.nowMicros) / 1_000_000);
    properties.expiration = String(Math.trunc(seconds * 1000));
  }
  const embed: TaskEmbed = {
    callbacks: spec.embed?.callbacks ?? null,
    errbacks: spec.embed?.errbacks ?? null,
    chain: spec.embed?.chain ?? null,
    chord: spec.embed?.chord ?? null,
  };
  let body: Buffer = Buffer.from(pythonJsonDumps([args, kwargs, embed], { envelopes: ctx.peer !== '5.2' }), 'utf8');
  if (spec.compression) {
    const mime = compressionMime(spec.compression);
    body = compressBody(body, mime);
    headers.compression = mime;
  }
  return { headers, amqpHeaders: toAmqpFieldTable(headers), properties, body };
}

function toMicros(value: Date | number): number {
  return value instanceof Date ? value.getTime() * 1000 : value;
}

function dateHeader(value: Date | number | string | null | undefined): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return value;
  return formatCeleryDate(toMicros(value));
}

/** A task message as it arrives: AMQP properties, application headers and the raw body. */
export interface IncomingMessage {
  headers: Record<string, unknown> | undefined;
  contentType?: string;
  contentEncoding?: string;
  correlationId?: string;
  replyTo?: string;
  priority?: number;
  body: Buffer;
}

export interface DecodedTask {
  protocol: 1 | 2;
  task: string;
  id: string;
  args: unknown[];
  kwargs: Record<string, unknown>;
  embed: TaskEmbed;
  /** Epoch microseconds, or null. */
  eta: number | null;
  expires: number | null;
  retries: number;
  rootId: string;
  parentId: string | null;
  group: string | null;
  groupIndex: number | null;
  timeLimit: [number | null, number | null];
  /** null when the sender did not say (Celery 5.7 sends null): use the task's own setting. */
  ignoreResult: boolean | null;
  shadow: string | null;
  origin: string | null;
  replyTo: string | null;
  priority: number;
  headers: Record<string, unknown>;
}

export interface DecodeOptions {
  /** Content types accepted; Celery's default is JSON only. */
  accept: readonly string[];
  /**
   * Largest body accepted, before and after decompression; decompression stops as soon as the
   * output passes it. Default: no limit.
   */
  maxBytes?: number;
}

export const DEFAULT_ACCEPT: readonly string[] = ['application/json'];

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Reads a task message. Throws InvalidTaskMessageError naming the task id (when known) and the
 * reason; never returns a half-read task.
 */
export function decodeTaskMessage(msg: IncomingMessage, options: DecodeOptions = { accept: DEFAULT_ACCEPT }): DecodedTask {
  const headers = msg.headers ?? {};
  if (typeof headers !== 'object' || Array.isArray(headers)) throw new InvalidTaskMessageError('headers are not a table');
  const headerId = typeof headers.id === 'string' ? headers.id : (msg.correlationId ?? null);
  const fail = (reason: string, id: string | null = headerId): never => {
    throw new InvalidTaskMessageError(reason, id);
  };
  const contentType = msg.contentType ?? '';
  if (!options.accept.includes(contentType)) {
    fail(`content type ${JSON.stringify(contentType)} is not accepted (accepted: ${options.accept.join(', ')})`);
  }
  checkContentEncoding(msg.contentEncoding, fail);
  checkSize(msg.body, options.maxBytes, fail);
  const payload = decompress(msg.body, headers.compression, options.maxBytes, fail);
  if (payload !== msg.body) checkSize(payload, options.maxBytes, fail, 'decompressed ');
  let text: string;
  try {
    text = utf8.decode(payload);
  } catch {
    return fail('body is not valid UTF-8');
  }
  let body: unknown;
  try {
    body = parsePythonJson(text);
  } catch (err) {
    if (err instanceof UnknownJsonTypeError) return fail(`body: ${err.message}`);
    return fail(`body is not valid JSON (${(err as Error).message})`);
  }
  if (headers.task !== undefined) return decodeV2(headers, body, msg, fail);
  return decodeV1(headers, body, msg, fail);
}

type Fail = (reason: string, id?: string | null) => never;

/**
 * kombu reads a body with its `content_encoding`: `utf-8` is what it writes for JSON, and `binary` /
 * `ascii-8bit` (its SKIP_DECODE set) mean the bytes are taken as they are, which for JSON is UTF-8
 * again. Python's codec names are case-insensitive and `utf8` / `utf_8` are aliases of `utf-8`; a
 * missing or empty encoding is read as UTF-8 too. Anything else (`utf-16`, `latin-1`, `x-foo`) would
 * be misread as UTF-8, so the message is refused instead.
 */
const UTF8_ENCODINGS = new Set(['utf-8', 'utf8', 'utf_8', 'binary', 'ascii-8bit']);

function checkContentEncoding(encoding: unknown, fail: Fail): void {
  if (encoding === undefined || encoding === null || encoding === '') return;
  if (typeof encoding === 'string' && UTF8_ENCODINGS.has(encoding.toLowerCase())) return;
  fail(`content encoding ${JSON.stringify(encoding)} is not supported (accepted: utf-8, binary, ascii-8bit)`);
}

function checkSize(body: Buffer, maxBytes: number | undefined, fail: Fail, what = ''): void {
  if (maxBytes !== undefined && body.length > maxBytes) {
    fail(`${what}body of ${body.length} bytes is larger than the ${maxBytes} bytes accepted (worker.maxMessageBytes)`);
  }
}

function decompress(body: Buffer, compression: unknown, maxBytes: number | undefined, fail: Fail): Buffer {
  if (compression === undefined || compression === null) return body;
  try {
    const out = decompressBody(body, compression, maxBytes);
    if (out instanceof Promise) {
      out.catch(() => undefined);
      return fail(`compression ${JSON.stringify(compression)} must be read with decodeTaskMessageAsync`);
    }
    return out;
  } catch (err) {
    return fail(decompressionFailure(err));
  }
}

/** The reason for a body that did not decompress: too large (the codec stopped at the limit), or corrupt. */
function decompressionFailure(err: unknown): string {
  if (err instanceof DecompressedTooLargeError) return `${err.message} (worker.maxMessageBytes)`;
  return (err as Error).message;
}

/**
 * `decodeTaskMessage` for every compression, including those read asynchronously (lzma / xz).
 * The worker uses this one.
 */
export async function decodeTaskMessageAsync(msg: IncomingMessage, options: DecodeOptions = { accept: DEFAULT_ACCEPT }): Promise<DecodedTask> {
  const compression = msg.headers?.compression;
  if (compression === undefined || compression === null) return decodeTaskMessage(msg, options);
  const headerId = typeof msg.headers?.id === 'string' ? msg.headers.id : (msg.correlationId ?? null);
  const contentType = msg.contentType ?? '';
  if (!options.accept.includes(contentType)) return decodeTaskMessage(msg, options); // names the content type
  checkContentEncoding(msg.contentEncoding, (reason) => {
    throw new InvalidTaskMessageError(reason, headerId);
  });
  if (options.maxBytes !== undefined && msg.body.length > options.maxBytes) return decodeTaskMessage(msg, options); // names the size
  let body: Buffer;
  try {
    body = await decompressBody(msg.body, compression, options.maxBytes);
  } catch (err) {
    throw new InvalidTaskMessageError(decompressionFailure(err), headerId);
  }
  const headers = { ...msg.headers };
  delete headers.compression;
  return decodeTaskMessage({ ...msg, headers, body }, options);
}

function decodeV2(headers: Record<string, unknown>, body: unknown, msg: IncomingMessage, fail: Fail): DecodedTask {
  const task = headers.task;
  if (typeof task !== 'string' || task === '') fail('header "task" is not a non-empty string');
  const id = headers.id;
  if (typeof id !== 'string' || id === '') fail('header "id" is missing or not a string', null);
  const taskId = id as string;
  if (!Array.isArray(body) || body.length !== 3) fail('body is not a JSON array [args, kwargs, embed]', taskId);
  const [args, kwargs, embed] = body as unknown[];
  return {
    protocol: 2,
    task: task as string,
    id: taskId,
    args: checkArgs(args, fail, taskId),
    kwargs: checkKwargs(kwargs, fail, taskId),
    embed: checkEmbed(embed, fail, taskId),
    eta: dateField(headers.eta, 'eta', fail, taskId),
    expires: dateField(headers.expires, 'expires', fail, taskId),
    retries: intField(headers.retries, 'retries', fail, taskId) ?? 0,
    rootId: stringField(headers.root_id, 'root_id', fail, taskId) || taskId,
    parentId: stringField(headers.parent_id, 'parent_id', fail, taskId),
    group: stringField(headers.group, 'group', fail, taskId),
    groupIndex: intField(headers.group_index, 'group_index', fail, taskId),
    timeLimit: timeLimitField(headers.timelimit, fail, taskId),
    ignoreResult: boolField(headers.ignore_result, 'ignore_result', fail, taskId),
    shadow: stringField(headers.shadow, 'shadow', fail, taskId),
    origin: stringField(headers.origin, 'origin', fail, taskId),
    replyTo: msg.replyTo ?? null,
    priority: typeof msg.priority === 'number' ? msg.priority : 0,
    headers,
  };
}

function decodeV1(headers: Record<string, unknown>, body: unknown, msg: IncomingMessage, fail: Fail): DecodedTask {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return fail('no "task" header and the body is not a protocol v1 task object');
  }
  const b = body as Record<string, unknown>;
  if (typeof b.task !== 'string' || b.task === '') fail('no "task" header and no "task" in the body');
  if (typeof b.id !== 'string' || b.id === '') fail('protocol v1 body has no "id"', null);
  const taskId = b.id as string;
  const embed: TaskEmbed = {
    callbacks: Array.isArray(b.callbacks) ? b.callbacks : null,
    errbacks: Array.isArray(b.errbacks) ? b.errbacks : null,
    chain: null,
    chord: b.chord ?? null,
  };
  return {
    protocol: 1,
    task: b.task as string,
    id: taskId,
    args: checkArgs(b.args ?? [], fail, taskId),
    kwargs: checkKwargs(b.kwargs ?? {}, fail, taskId),
    embed,
    eta: dateField(b.eta, 'eta', fail, taskId),
    expires: dateField(b.expires, 'expires', fail, taskId),
    retries: intField(b.retries, 'retries', fail, taskId) ?? 0,
    rootId: taskId,
    parentId: null,
    group: stringField(b.taskset ?? b.group, 'group', fail, taskId),
    groupIndex: null,
    timeLimit: timeLimitField(b.timelimit, fail, taskId),
    ignoreResult: null,
    shadow: null,
    origin: null,
    replyTo: msg.replyTo ?? null,
    priority: typeof msg.priority === 'number' ? msg.priority : 0,
    headers,
  };
}

function checkArgs(value: unknown, fail: Fail, id: string): unknown[] {
  if (!Array.isArray(value)) fail('task args are not a list', id);
  return value as unknown[];
}

function checkKwargs(value: unknown, fail: Fail, id: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    fail('task keyword arguments are not a mapping', id);
  }
  return value as Record<string, unknown>;
}

function checkEmbed(value: unknown, fail: Fail, id: string): TaskEmbed {
  if (value === null || value === undefined) return { callbacks: null, errbacks: null, chain: null, chord: null };
  if (typeof value !== 'object' || Array.isArray(value)) fail('embed (third body item) is not a mapping', id);
  const e = value as Record<string, unknown>;
  const list = (key: string): unknown[] | null => {
    const v = e[key];
    if (v === null || v === undefined) return null;
    if (!Array.isArray(v)) fail(`embed.${key} is not a list`, id);
    return v as unknown[];
  };
  return { callbacks: list('callbacks'), errbacks: list('errbacks'), chain: list('chain'), chord: e.chord ?? null };
}

function dateField(value: unknown, name: string, fail: Fail, id: string): number | null {
  if (value === null || value === undefined) return null;
  if (typeof value !== 'string') fail(`${name} is not a date string`, id);
  try {
    return parseCeleryDate(value as string);
  } catch (err) {
    return fail(`${name}: ${(err as Error).message}`, id);
  }
}

function intField(value: unknown, name: string, fail: Fail, id: string): number | null {
  if (value === null || value === undefined) return null;
  if (typeof value === 'bigint') return Number(value);
  if (typeof value !== 'number' || !Number.isInteger(value)) fail(`header ${name} is not an integer`, id);
  return value as number;
}

function stringField(value: unknown, name: string, fail: Fail, id: string): string | null {
  if (value === null || value === undefined) return null;
  if (typeof value !== 'string') fail(`header ${name} is not a string`, id);
  return value as string;
}

function boolField(value: unknown, name: string, fail: Fail, id: string): boolean | null {
  if (value === null || value === undefined) return null;
  if (typeof value !== 'boolean') fail(`header ${name} is not a boolean`, id);
  return value as boolean;
}

function timeLimitField(value: unknown, fail: Fail, id: string): [number | null, number | null] {
  if (value === null || value === undefined) return [null, null];
  if (!Array.isArray(value) || value.length !== 2) fail('header timelimit is not [hard, soft]', id);
  const [hard, soft] = value as unknown[];
  const num = (v: unknown): number | null => {
    if (v === null || v === undefined) return null;
    if (typeof v !== 'number') fail('header timelimit holds a non-number', id);
    return v as number;
  };
  return [num(hard), num(soft)];
}
