import { Client } from 'cassandra-driver';
import { CeleryConnectionError } from '../errors/celery.errors';

/**
 * A guard around cassandra-driver's stream ids, so that no request resolves with another
 * request's reply whatever the server sends (issue 11 item 4).
 *
 * Apache Cassandra 5.0.8 answers a request it sheds after `native_transport_timeout` with an
 * OVERLOADED error on stream id 0 instead of the request's own stream (CASSANDRA-21508; 5.0.9
 * answers on the request's stream). cassandra-driver 4.10 frees whatever stream id a reply names,
 * owned or not (lib/connection.js `freeStreamId`): the request that owned stream 0 gets the error,
 * stream 0 is handed to the next request while the first one's real reply is still coming, and
 * from then on requests on stream 0 resolve with the previous one's reply: a read with another
 * task's row, a write with another write's Void (counted as stored although its own write may
 * have been shed). With nothing on stream 0, the stray frame puts id 0 into the free list twice,
 * and two requests share it.
 *
 * The guard, on the connections of the clients it is given (never on other clients of the
 * process):
 * - never hands out stream id 0, so a reply on stream 0 cannot belong to any request;
 * - drops every reply frame whose stream no request holds, without freeing that id.
 * The request the server shed gets no reply and fails by the driver's read timeout, like a
 * request to a node that does not answer; the store retries it. Cost: one stream id of 32768
 * per connection and a Map lookup per frame (measured: README, Reliability).
 *
 * It relies on these internals of cassandra-driver's `Connection` (lib/connection.js):
 * `_getStreamId()`, `handleResult(header, …)`, `handleRow(header, …)`, `freeStreamId(header)`,
 * `_operations` (Map of stream id → operation, filled before the request is written) and
 * `_streamIds.inUse` (lib/stream-id-stack.js `pop` counts it). `checkDriverInternals()` verifies them; on a driver version other than the
 * ones verified here it warns once, and it refuses to connect when they are not there.
 * The same change is offered upstream: patches/cassandra-driver-stream-id.patch.
 */

/** cassandra-driver versions whose Connection internals were read and tested with this guard. */
export const VERIFIED_DRIVER_VERSIONS: readonly string[] = ['4.10.0'];
/** The stream id a Cassandra 5.0.8 node uses for the errors of shed requests; never handed out. */
export const RETIRED_STREAM_ID = 0;

interface FrameHeader {
  streamId: number;
  opcode?: number;
}

interface GuardedConnection {
  options: object;
  endpointFriendlyName?: string;
  _operations: Map<number, unknown>;
  _streamIds: { inUse: number };
}

type ConnectionMethods = {
  _getStreamId(this: GuardedConnection): number | null;
  handleResult(this: GuardedConnection, header: FrameHeader, err: unknown, result: unknown): unknown;
  handleRow(this: GuardedConnection, header: FrameHeader, ...rest: unknown[]): unknown;
  freeStreamId(this: GuardedConnection, header: FrameHeader): unknown;
};

/** What the guard reports when it drops a frame. */
export interface DroppedFrame {
  endpoint: string;
  streamId: number;
  /** The error the frame carried, when it was an ERROR frame. */
  error: string | null;
  /** Frames dropped on this client so far, this one included. */
  count: number;
}

export type DroppedFrameReporter = (frame: DroppedFrame) => void;

/** The reporter of each guarded client, keyed by the client's options object (shared by its connections). */
const guarded = new WeakMap<object, { report: DroppedFrameReporter; count: number }>();
let installed = false;
let checked: { version: string; warning: string | null } | null = null;

function driverVersion(): string {
  return (require('cassandra-driver/package.json') as { version: string }).version;
}

/** The source text each patched method must contain: what the guard assumes it does. */
const EXPECTED: Record<keyof ConnectionMethods, string[]> = {
  _getStreamId: ['_streamIds.pop()'],
  handleResult: ['_operations.get(streamId)', 'setResult('],
  handleRow: ['_operations.get(streamId)', 'setResultRow('],
  freeStreamId: ['_operations.delete(streamId)', '_streamIds.push(streamId)'],
};

/** Set on each wrapped method (shared by every copy of this library in the process): the method it wraps. */
const WRAPPED = Symbol.for('nestjs-celery.cassandra-stream-guard.wraps');

/** The driver's own Connection methods the guard wraps, under any wrappers of this guard. */
export function driverConnectionMethods(): Partial<ConnectionMethods> {
  const proto = (require('cassandra-driver/lib/connection') as { prototype: Record<string, unknown> }).prototype;
  const own: Record<string, unknown> = {};
  for (const name of Object.keys(EXPECTED)) {
    let method = proto[name] as { [WRAPPED]?: unknown } | undefined;
    while (typeof method === 'function' && method[WRAPPED]) method = method[WRAPPED] as typeof method;
    own[name] = method;
  }
  return own as Partial<ConnectionMethods>;
}

/**
 * Checks that the installed cassandra-driver has the internals the guard relies on. Returns a
 * warning for a version not verified here whose internals still look as expected; throws
 * `CeleryConnectionError` naming what is missing when they do not.
 */
export function checkDriverInternals(
  version = driverVersion(),
  prototype: Partial<ConnectionMethods> = driverConnectionMethods(),
  stack: { pop?: unknown } = (require('cassandra-driver/lib/stream-id-stack') as { prototype: { pop?: unknown } }).prototype,
): string | null {
  const problems: string[] = [];
  for (const [name, fragments] of Object.entries(EXPECTED) as [keyof ConnectionMethods, string[]][]) {
    const method = prototype[name];
    if (typeof method !== 'function') {
      problems.push(`Connection.prototype.${name} is missing`);
      continue;
    }
    const source = Function.prototype.toString.call(method);
    const absent = fragments.filter((f) => !source.includes(f));
    if (absent.length) problems.push(`Connection.prototype.${name} no longer does ${absent.join(', ')}`);
  }
  if (!Function.prototype.toString.call(stack.pop).includes('this.inUse++')) problems.push('StreamIdStack.prototype.pop no longer counts inUse');
  if (problems.length) {
    throw new CeleryConnectionError(
      `cassandra-driver ${version} is not what nestjs-celery's stream-id guard expects (${problems.join('; ')}). ` +
        `The guard keeps Cassandra replies from resolving the wrong request (Cassandra 5.0.8, CASSANDRA-21508); ` +
        `use cassandra-driver ${VERIFIED_DRIVER_VERSIONS.join(' or ')}, or a nestjs-celery release that supports ${version}.`,
    );
  }
  if (VERIFIED_DRIVER_VERSIONS.includes(version)) return null;
  return (
    `cassandra-driver ${version} has not been verified with nestjs-celery's stream-id guard (verified: ` +
    `${VERIFIED_DRIVER_VERSIONS.join(', ')}); its internals look as expected, so the guard is on`
  );
}

function isOwned(connection: GuardedConnection, header: FrameHeader): boolean {
  return header.streamId < 0 || connection._operations.has(header.streamId);
}

function describeError(err: unknown): string | null {
  if (!err) return null;
  const e = err as { code?: number; message?: string };
  return `${e.code !== undefined ? `0x${e.code.toString(16)} ` : ''}${e.message ?? String(err)}`;
}

function install(): void {
  if (installed) return;
  const proto = (require('cassandra-driver/lib/connection') as { prototype: ConnectionMethods }).prototype;
  // the methods as they are now (another copy of this library may have wrapped them already: fine, each copy guards its own clients)
  const original = {
    getStreamId: proto._getStreamId,
    handleResult: proto.handleResult,
    handleRow: proto.handleRow,
    freeStreamId: proto.freeStreamId,
  };
  proto._getStreamId = function guardedGetStreamId() {
    let id = original.getStreamId.call(this);
    if (id === RETIRED_STREAM_ID && guarded.has(this.options)) {
      // retired for the life of the connection: popped once, never pushed back, not in use
      this._streamIds.inUse--;
      id = original.getStreamId.call(this);
    }
    return id;
  };
  proto.handleResult = function guardedHandleResult(header, err, result) {
    const guard = guarded.get(this.options);
    if (guard && !isOwned(this, header)) {
      guard.count++;
      guard.report({ endpoint: this.endpointFriendlyName ?? 'unknown', streamId: header.streamId, error: describeError(err), count: guard.count });
      return undefined;
    }
    return original.handleResult.call(this, header, err, result);
  };
  proto.handleRow = function guardedHandleRow(header, ...rest) {
    if (guarded.has(this.options) && !isOwned(this, header)) return undefined;
    return original.handleRow.call(this, header, ...rest);
  };
  proto.freeStreamId = function guardedFreeStreamId(header) {
    // an id no request holds is not freed: freeing it would hand it out twice
    if (guarded.has(this.options) && !isOwned(this, header)) return undefined;
    return original.freeStreamId.call(this, header);
  };
  for (const [name, wraps] of [['_getStreamId', original.getStreamId], ['handleResult', original.handleResult], ['handleRow', original.handleRow], ['freeStreamId', original.freeStreamId]] as const) {
    Object.defineProperty(proto[name], WRAPPED, { value: wraps });
  }
  installed = true;
}

/**
 * Puts the guard on a client not yet connected: its connections never use stream id 0 and drop
 * replies on streams no request holds, telling `report`. Throws `CeleryConnectionError` when the
 * driver's internals are not what the guard relies on; `warn` gets the warning for an unverified
 * driver version (once per process).
 */
export function guardStreamIds(client: Client, report: DroppedFrameReporter, warn: (message: string) => void): Client {
  if (!checked) {
    const version = driverVersion();
    checked = { version, warning: checkDriverInternals(version) };
    if (checked.warning) warn(checked.warning);
  }
  install();
  const options = (client as unknown as { options?: object }).options;
  if (!options || typeof options !== 'object') {
    throw new CeleryConnectionError(`cassandra-driver ${checked.version}: Client has no options object; the stream-id guard cannot be put on it`);
  }
  guarded.set(options, { report, count: 0 });
  return client;
}

/**
 * A cassandra-driver `Client` with the guard on, for the library's stores. Dropped frames are
 * logged as warnings at the 1st, 10th, 100th… on the client, so an overloaded node cannot flood the log.
 */
export function guardedClient(options: ConstructorParameters<typeof Client>[0], logger: { warn(message: string): void }): Client {
  const report: DroppedFrameReporter = (frame) => {
    if (!isPowerOfTen(frame.count)) return;
    logger.warn(
      `Cassandra ${frame.endpoint} sent a reply on stream ${frame.streamId} that no request is waiting for` +
        `${frame.error ? ` (error ${frame.error})` : ''}; dropped (${frame.count} so far on this client). ` +
        `Apache Cassandra 5.0.8 answers requests it sheds under load this way (CASSANDRA-21508, fixed in 5.0.9): ` +
        `the shed request times out and is retried.`,
    );
  };
  return guardStreamIds(new Client(options), report, (message) => logger.warn(message));
}

function isPowerOfTen(n: number): boolean {
  while (n >= 10 && n % 10 === 0) n /= 10;
  return n === 1;
}
