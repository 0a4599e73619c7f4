import { Client, types } from 'cassandra-driver';
import { normalizeCeleryOptions } from '../../../lib/config/normalize-options';
import type { ResolvedCassandraConfig } from '../../../lib/config/resolved-config';
import { cassandraClientOptions } from '../../../lib/results/cassandra-client-options';
import { checkDriverInternals, driverConnectionMethods, guardedClient, VERIFIED_DRIVER_VERSIONS } from '../../../lib/results/cassandra-stream-guard';
import { CeleryConnectionError } from '../../../lib/errors/celery.errors';
import { CassandraResultStore } from '../../../lib/results/cassandra.result-store';
import { Logger } from '@nestjs/common';
import { CQL_ERROR, CqlRequest, FakeCqlServer } from '../../support/fake-cql-server';

/**
 * Replies routed to the wrong request (issue 11 item 4). Apache Cassandra 5.0.8 answers a request
 * it sheds after native_transport_timeout with OVERLOADED on stream id 0, not on the request's own
 * stream (CASSANDRA-21508). cassandra-driver 4.10 frees whatever stream a reply names, owned or not,
 * so the request that owned stream 0 gets the error, stream 0 is reused, and the next request on it
 * resolves with the previous request's reply: a read with another task's row, a write with another
 * write's Void (counted as stored while the server never answered it). A fake CQL v4 server plays
 * the misbehaving node, deterministically; the client is made with the library's own options.
 */

const SELECT = 'SELECT k, v FROM ks.t WHERE k = ?';
const INSERT = 'INSERT INTO ks.t (k, v) VALUES (?, ?)';
/** Per-request read timeout: a request whose reply never comes fails after this. */
const READ_TIMEOUT_MS = 800;

let server: FakeCqlServer;
let client: Client;
let warnings: string[];

function optionsFor(port: number): ConstructorParameters<typeof Client>[0] {
  const config = normalizeCeleryOptions({
    resultBackend: 'cassandra://',
    cassandra: { contactPoints: ['127.0.0.1'], port, localDataCenter: 'datacenter1', keyspace: 'ks', table: 't' },
  }).cassandra as ResolvedCassandraConfig;
  return cassandraClientOptions(config, 'datacenter1') as ConstructorParameters<typeof Client>[0];
}

/** The client as the library makes it (CassandraResultStore.open). */
function libraryClient(port: number): Client {
  return guardedClient(optionsFor(port), { warn: (message) => warnings.push(message) });
}

type Outcome = { ok: true; rs: types.ResultSet } | { ok: false; error: string };

function settle(p: Promise<types.ResultSet>): Promise<Outcome> {
  return p.then(
    (rs) => ({ ok: true as const, rs }),
    (err: unknown) => ({ ok: false as const, error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) }),
  );
}

function select(key: string): Promise<Outcome> {
  return settle(client.execute(SELECT, [key], { prepare: true, readTimeout: READ_TIMEOUT_MS }));
}

function insert(key: string): Promise<Outcome> {
  return settle(client.execute(INSERT, [key, `value of ${key}`], { prepare: true, readTimeout: READ_TIMEOUT_MS }));
}

/** The key of the row a SELECT resolved with, or what went wrong. */
function keyOf(outcome: Outcome): string {
  if (!outcome.ok) return `failed (${outcome.error})`;
  return outcome.rs.rows?.length ? String(outcome.rs.rows[0].k) : 'no row';
}

function byKey(key: string): CqlRequest {
  const found = server.requests.find((r) => r.values[0] === key);
  if (!found) throw new Error(`the server never got the request for ${key}`);
  return found;
}

function answerOwnRow(request: CqlRequest): void {
  request.answer([[request.values[0], `value of ${request.values[0]}`]]);
}

function tick(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 20));
}

beforeEach(async () => {
  warnings = [];
  server = await FakeCqlServer.start();
  client = libraryClient(server.port);
  await client.connect();
});

afterEach(async () => {
  await client.shutdown();
  await server.close();
});

describe('an OVERLOADED error on stream 0 for a request the server shed (Cassandra 5.0.8)', () => {
  /**
   * Sends `send(first)` and `send(second)`, sheds the second (its OVERLOADED on stream 0, 5.0.8's
   * way), then sends `send(third)` once that frame is in: the requests' outcomes in that order.
   */
  async function shedOnStreamZero(send: (key: string) => Promise<Outcome>, [first, second, third]: string[], answer: () => void): Promise<Outcome[]> {
    const sent = [send(first), send(second)];
    await server.untilRequests(2);
    server.sendError(byKey(second).connection, 0, CQL_ERROR.overloaded, 'Query timed out before it could start');
    await tick();
    sent.push(send(third));
    await server.untilRequests(3);
    answer();
    return Promise.all(sent);
  }

  it('does not give a later read the row of another read', async () => {
    const [ra, rb, rc] = await shedOnStreamZero(select, ['a', 'b', 'c'], () => {
      answerOwnRow(byKey('a'));
      answerOwnRow(byKey('c'));
    });
    // a may fail (it owned nothing the error named, yet a request may be retried) but never with another's row
    if (ra.ok) expect(keyOf(ra)).toBe('a');
    expect(rb.ok).toBe(false);
    expect(keyOf(rc)).toBe('c');
  });

  it('does not count a write as done with the Void reply of another write', async () => {
    // w3 is never answered: the server has not stored it
    const keys = ['w1', 'w2', 'w3'];
    const outcomes = await shedOnStreamZero(insert, keys, () => byKey('w1').answer());
    const resolvedWithoutAnAnswer = keys.filter((key, i) => outcomes[i].ok && !byKey(key).answered);
    expect(resolvedWithoutAnAnswer).toEqual([]);
  });
});

describe('an error frame on stream 0 while no request owns it', () => {
  it('does not put two requests on one stream', async () => {
    // one answered read first, so the pool's connection is known; then, with nothing in flight,
    // a stray error on stream 0 frees stream 0 a second time
    server.onRequest = answerOwnRow;
    expect(keyOf(await select('warm-up'))).toBe('warm-up');
    server.onRequest = () => undefined;
    server.sendError(byKey('warm-up').connection, 0, CQL_ERROR.overloaded, 'Query timed out before it could start');
    await tick();
    // the freed id comes back after the next ones: the third of three concurrent reads shares a stream
    const reads = ['x', 'y', 'z'].map(select);
    await server.untilRequests(4);
    for (const key of ['x', 'y', 'z']) answerOwnRow(byKey(key));
    expect(await Promise.all(reads.map(async (r) => keyOf(await r)))).toEqual(['x', 'y', 'z']);
  });
});

describe('a second reply on a stream whose request was already answered', () => {
  it('is dropped, and does not put two requests on one stream', async () => {
    server.onRequest = answerOwnRow;
    expect(keyOf(await select('first'))).toBe('first');
    server.onRequest = () => undefined;
    const first = byKey('first');
    server.sendError(first.connection, first.stream, CQL_ERROR.serverError, 'a late duplicate');
    await tick();
    const reads = ['p', 'q', 'r', 's'].map(select);
    await server.untilRequests(5);
    for (const key of ['p', 'q', 'r', 's']) answerOwnRow(byKey(key));
    expect(await Promise.all(reads.map(async (r) => keyOf(await r)))).toEqual(['p', 'q', 'r', 's']);
  });
});

describe('the guard', () => {
  it('never sends a request on stream 0', async () => {
    server.onRequest = answerOwnRow;
    await Promise.all(['a', 'b', 'c'].map(select));
    expect(server.requests.map((r) => r.stream)).not.toContain(0);
  });

  it('says when it drops a frame, naming the stream and the error', async () => {
    server.onRequest = answerOwnRow;
    await select('warm-up');
    server.sendError(byKey('warm-up').connection, 0, CQL_ERROR.overloaded, 'Query timed out before it could start');
    await tick();
    expect(warnings).toEqual([expect.stringMatching(/reply on stream 0 that no request is waiting for \(error 0x1001 Query timed out before it could start\); dropped \(1 so far/)]);
  });

  it('logs dropped frames at the 1st, 10th, 100th…, not each one', async () => {
    server.onRequest = answerOwnRow;
    await select('warm-up');
    for (let i = 0; i < 12; i++) server.sendError(byKey('warm-up').connection, 0, CQL_ERROR.overloaded, 'Query timed out before it could start');
    await tick();
    expect(warnings.map((w) => /\((\d+) so far/.exec(w)?.[1])).toEqual(['1', '10']);
  });

  it('leaves other clients of the process alone: a plain driver client still misroutes (remove the guard when this fails)', async () => {
    const plain = new Client(optionsFor(server.port));
    await plain.connect();
    try {
      const plainSelect = (key: string): Promise<Outcome> => settle(plain.execute(SELECT, [key], { prepare: true, readTimeout: READ_TIMEOUT_MS }));
      server.onRequest = answerOwnRow;
      await plainSelect('plain-warm-up');
      server.onRequest = () => undefined;
      server.sendError(byKey('plain-warm-up').connection, 0, CQL_ERROR.overloaded, 'Query timed out before it could start');
      await tick();
      const before = server.requests.length;
      const reads = ['x', 'y', 'z'].map(plainSelect);
      await server.untilRequests(before + 3);
      for (const key of ['x', 'y', 'z']) answerOwnRow(byKey(key));
      expect(await Promise.all(reads.map(async (r) => keyOf(await r)))).not.toEqual(['x', 'y', 'z']);
    } finally {
      await plain.shutdown();
    }
  });
});

describe('checkDriverInternals', () => {
  // the driver's own methods (the guard's wrappers are on the prototype once a guarded client exists)
  const prototype = driverConnectionMethods() as Record<string, unknown>;

  it('accepts the installed driver, a verified version', () => {
    expect(VERIFIED_DRIVER_VERSIONS).toContain(require('cassandra-driver/package.json').version);
    expect(checkDriverInternals()).toBeNull();
  });

  it('warns for a version not verified whose internals are as expected', () => {
    expect(checkDriverInternals('4.11.0', prototype as never)).toMatch(/cassandra-driver 4.11.0 has not been verified .*the guard is on/);
  });

  it('refuses a driver whose Connection lacks a method the guard wraps', () => {
    const { freeStreamId: _dropped, ...rest } = Object.fromEntries(['_getStreamId', 'handleResult', 'handleRow', 'freeStreamId'].map((k) => [k, prototype[k]]));
    void _dropped;
    expect(() => checkDriverInternals('5.0.0', rest as never)).toThrow(CeleryConnectionError);
    expect(() => checkDriverInternals('5.0.0', rest as never)).toThrow(/cassandra-driver 5.0.0 is not what .* expects \(Connection.prototype.freeStreamId is missing\)/);
  });

  it('refuses a driver whose stream-id pool no longer counts ids in use', () => {
    expect(() => checkDriverInternals('4.10.0', prototype as never, { pop: () => 0 })).toThrow(/StreamIdStack.prototype.pop no longer counts inUse/);
  });

  it('refuses a driver whose method no longer does what the guard assumes', () => {
    const changed = { _getStreamId: prototype._getStreamId, handleResult: prototype.handleResult, handleRow: prototype.handleRow, freeStreamId: function freeStreamId() { return undefined; } };
    expect(() => checkDriverInternals('4.10.0', changed as never)).toThrow(/freeStreamId no longer does _operations.delete\(streamId\), _streamIds.push\(streamId\)/);
  });
});

describe('the Cassandra result store', () => {
  it('connects through the guard: its requests never use stream 0 and a stray frame is dropped', async () => {
    const store = new CassandraResultStore(
      normalizeCeleryOptions({
        resultBackend: 'cassandra://',
        cassandra: { contactPoints: ['127.0.0.1'], port: server.port, localDataCenter: 'datacenter1', keyspace: 'ks', table: 't', createKeyspace: true },
      }).cassandra as ResolvedCassandraConfig,
    );
    const warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    server.onRequest = (request) => request.answer([[request.values[0] ?? null, null, null, null, null, null]]);
    try {
      await store.connect({ forWrites: false });
      const connection = server.requests[0].connection;
      server.sendError(connection, 0, CQL_ERROR.overloaded, 'Query timed out before it could start');
      await tick();
      expect(warn).toHaveBeenCalledWith(expect.stringMatching(/reply on stream 0 that no request is waiting for/));
      expect((await store.getTaskMeta('some-task')).taskId).toBe('some-task');
      expect(server.requests.map((r) => r.stream)).not.toContain(0);
    } finally {
      warn.mockRestore();
      await store.close();
    }
  });
});
