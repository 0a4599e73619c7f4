import { createServer, Server, Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

/**
 * A small CQL native-protocol v4 server, enough for a cassandra-driver `Client` to connect
 * (OPTIONS, STARTUP, REGISTER, the control connection's system.local / system.peers / schema reads)
 * and to run QUERY, PREPARE and EXECUTE of simple statements on one made-up table. Every
 * application request (QUERY or EXECUTE not on a system keyspace) is handed to the test as a
 * `CqlRequest`, which the test answers when and how it likes, on the request's stream or on any
 * other: that is how a server that misroutes a reply (Cassandra 5.0.8's OVERLOADED on stream 0,
 * CASSANDRA-21508) is reproduced deterministically.
 *
 * Statements are matched by shape only: `SELECT a, b FROM ks.t WHERE k = ?` answers rows with
 * text columns a, b; anything else (INSERT, UPDATE) answers Void. Every bind marker is text.
 */

const RESPONSE_VERSION = 0x84;
const OP = { error: 0x00, startup: 0x01, ready: 0x02, options: 0x05, supported: 0x06, query: 0x07, result: 0x08, prepare: 0x09, execute: 0x0a, register: 0x0b } as const;
const TYPE = { uuid: 0x0c, varchar: 0x0d, inet: 0x10, set: 0x22 } as const;
/** CQL error codes the tests send. */
export const CQL_ERROR = { serverError: 0x0000, overloaded: 0x1001 } as const;

type Column = { name: string; type: number; sub?: number };
type Cell = Buffer | null;

/** One application request, held until the test answers it. */
export interface CqlRequest {
  /** The stream id the client sent it on. */
  readonly stream: number;
  readonly query: string;
  /** The bound values as UTF-8 text (null for a null value). */
  readonly values: (string | null)[];
  /** Which connection it came on (0 = the first the server accepted). */
  readonly connection: number;
  /** Rows for a SELECT (each row: one text per selected column), nothing (Void) for other statements. */
  answer(rows?: (string | null)[][], onStream?: number): void;
  /** An ERROR frame, on the request's stream or on another. */
  fail(code: number, message: string, onStream?: number): void;
  /** Whether answer/fail was called. */
  readonly answered: boolean;
}

export class FakeCqlServer {
  /** Application requests in arrival order. */
  readonly requests: CqlRequest[] = [];
  private readonly sockets: Socket[] = [];
  private readonly prepared = new Map<string, string>();
  private readonly waiters: { count: number; resolve: () => void }[] = [];
  /** Called for every application request; the default leaves it to the test (held). */
  onRequest: (request: CqlRequest) => void = () => undefined;

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(): Promise<FakeCqlServer> {
    let fake!: FakeCqlServer;
    const server = createServer((socket) => fake.accept(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    fake = new FakeCqlServer(server, (server.address() as AddressInfo).port);
    return fake;
  }

  /** Resolves once `count` application requests have arrived in all. */
  untilRequests(count: number): Promise<void> {
    if (this.requests.length >= count) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ count, resolve }));
  }

  /** A raw ERROR frame on `stream` of connection `connection`, answering nothing the client sent. */
  sendError(connection: number, stream: number, code: number, message: string): void {
    this.write(this.sockets[connection], stream, OP.error, errorBody(code, message));
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(socket: Socket): void {
    const connection = this.sockets.length;
    this.sockets.push(socket);
    socket.setNoDelay(true);
    socket.on('error', () => undefined);
    let pending = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 9) {
        const length = pending.readInt32BE(5);
        if (pending.length < 9 + length) break;
        const frame = pending.subarray(0, 9 + length);
        pending = pending.subarray(9 + length);
        this.handle(socket, connection, frame.readInt16BE(2), frame[4], frame.subarray(9));
      }
    });
  }

  private handle(socket: Socket, connection: number, stream: number, opcode: number, body: Buffer): void {
    switch (opcode) {
      case OP.options:
        return this.write(socket, stream, OP.supported, stringMultimap({ CQL_VERSION: ['3.4.7'], COMPRESSION: [], PROTOCOL_VERSIONS: ['3/v3', '4/v4', '5/v5'] }));
      case OP.startup:
      case OP.register:
        return this.write(socket, stream, OP.ready, Buffer.alloc(0));
      case OP.prepare: {
        const query = new Reader(body).longString();
        const id = Buffer.from(`q${this.prepared.size}`);
        this.prepared.set(id.toString(), query);
        return this.write(socket, stream, OP.result, preparedResult(id, query));
      }
      case OP.query: {
        const reader = new Reader(body);
        const query = reader.longString();
        return this.dispatch(socket, connection, stream, query, reader.queryValues());
      }
      case OP.execute: {
        const reader = new Reader(body);
        const id = reader.shortBytes().toString();
        const query = this.prepared.get(id);
        if (query === undefined) return this.write(socket, stream, OP.error, errorBody(0x2500, 'unknown prepared id'));
        return this.dispatch(socket, connection, stream, query, reader.queryValues());
      }
      default:
        return this.write(socket, stream, OP.error, errorBody(0x000a, `opcode ${opcode} not supported by the fake server`));
    }
  }

  private dispatch(socket: Socket, connection: number, stream: number, query: string, values: (string | null)[]): void {
    const system = systemAnswer(query);
    if (system) return this.write(socket, stream, OP.result, system);
    let answered = false;
    const once = (): void => {
      if (answered) throw new Error(`request on stream ${stream} (${query}) answered twice`);
      answered = true;
    };
    const request: CqlRequest = {
      stream,
      query,
      values,
      connection,
      answer: (rows = [], onStream = stream) => {
        once();
        const columns = selectedColumns(query);
        this.write(socket, onStream, OP.result, columns ? rowsResult(columns, rows.map((r) => r.map(text))) : voidResult());
      },
      fail: (code, message, onStream = stream) => {
        once();
        this.write(socket, onStream, OP.error, errorBody(code, message));
      },
      get answered() {
        return answered;
      },
    };
    this.requests.push(request);
    for (const waiter of this.waiters.filter((w) => this.requests.length >= w.count)) {
      this.waiters.splice(this.waiters.indexOf(waiter), 1);
      waiter.resolve();
    }
    this.onRequest(request);
  }

  private write(socket: Socket, stream: number, opcode: number, body: Buffer): void {
    const header = Buffer.alloc(9);
    header[0] = RESPONSE_VERSION;
    header.writeInt16BE(stream, 2);
    header[4] = opcode;
    header.writeInt32BE(body.length, 5);
    socket.write(Buffer.concat([header, body]));
  }
}

// ------------------------------------------------------------------------------------------- encoding

function int(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
}

function short(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

function string(s: string): Buffer {
  const bytes = Buffer.from(s);
  return Buffer.concat([short(bytes.length), bytes]);
}

function bytes(value: Cell): Buffer {
  return value === null ? int(-1) : Buffer.concat([int(value.length), value]);
}

function text(value: string | null): Cell {
  return value === null ? null : Buffer.from(value);
}

function stringMultimap(map: Record<string, string[]>): Buffer {
  const parts = [short(Object.keys(map).length)];
  for (const [key, list] of Object.entries(map)) parts.push(string(key), short(list.length), ...list.map(string));
  return Buffer.concat(parts);
}

function errorBody(code: number, message: string): Buffer {
  return Buffer.concat([int(code), string(message)]);
}

function voidResult(): Buffer {
  return int(0x0001);
}

function columnSpecs(columns: Column[]): Buffer[] {
  return columns.map((c) => Buffer.concat([string(c.name), short(c.type), ...(c.sub === undefined ? [] : [short(c.sub)])]));
}

/** Rows metadata with the global table spec `ks.t` (flag 0x0001). */
function rowsMetadata(columns: Column[]): Buffer {
  return Buffer.concat([int(0x0001), int(columns.length), string('ks'), string('t'), ...columnSpecs(columns)]);
}

function rowsResult(columns: Column[], rows: Cell[][]): Buffer {
  return Buffer.concat([int(0x0002), rowsMetadata(columns), int(rows.length), ...rows.flatMap((row) => row.map(bytes))]);
}

function preparedResult(id: Buffer, query: string): Buffer {
  const markers = (query.match(/\?/g) ?? []).length;
  const binds: Column[] = Array.from({ length: markers }, (_v, i) => ({ name: `p${i}`, type: TYPE.varchar }));
  // prepared metadata (v4): flags, column count, partition-key count and indexes, global table spec, columns
  const bindMetadata = Buffer.concat([int(0x0001), int(binds.length), int(markers > 0 ? 1 : 0), ...(markers > 0 ? [short(0)] : []), string('ks'), string('t'), ...columnSpecs(binds)]);
  const columns = selectedColumns(query);
  const resultMetadata = columns ? rowsMetadata(columns) : Buffer.concat([int(0x0004), int(0)]);
  return Buffer.concat([int(0x0004), short(id.length), id, bindMetadata, resultMetadata]);
}

/** The text columns a `SELECT a, b FROM …` returns; null for other statements. */
function selectedColumns(query: string): Column[] | null {
  const match = /^\s*select\s+(.+?)\s+from\s/i.exec(query);
  if (!match) return null;
  return match[1].split(',').map((name) => ({ name: name.trim(), type: TYPE.varchar }));
}

const LOCAL_COLUMNS: Column[] = [
  { name: 'key', type: TYPE.varchar },
  { name: 'data_center', type: TYPE.varchar },
  { name: 'rack', type: TYPE.varchar },
  { name: 'tokens', type: TYPE.set, sub: TYPE.varchar },
  { name: 'release_version', type: TYPE.varchar },
  { name: 'partitioner', type: TYPE.varchar },
  { name: 'host_id', type: TYPE.uuid },
  { name: 'rpc_address', type: TYPE.inet },
  { name: 'cluster_name', type: TYPE.varchar },
];

/** Answers of the driver's own reads of system tables: one local host, no peers, no schema. */
function systemAnswer(query: string): Buffer | null {
  if (/from\s+system\.local/i.test(query)) {
    const tokens = Buffer.concat([int(1), bytes(Buffer.from('0'))]);
    const hostId = Buffer.from('7a1c1e9e0d8a4c5e9f3b2a1d0c9e8f70', 'hex');
    const row: Cell[] = [text('local'), text('datacenter1'), text('rack1'), tokens, text('5.0.8'), text('org.apache.cassandra.dht.Murmur3Partitioner'), hostId, Buffer.from([127, 0, 0, 1]), text('Fake Cluster')];
    return rowsResult(LOCAL_COLUMNS, [row]);
  }
  if (/from\s+system(_schema|_virtual_schema)?\.\w+/i.test(query)) return rowsResult([], []);
  return null;
}

class Reader {
  private at = 0;
  constructor(private readonly buf: Buffer) {}

  private take(n: number): Buffer {
    const out = this.buf.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }

  longString(): string {
    const length = this.buf.readInt32BE(this.at);
    this.at += 4;
    return this.take(length).toString();
  }

  shortBytes(): Buffer {
    const length = this.buf.readUInt16BE(this.at);
    this.at += 2;
    return this.take(length);
  }

  /** The bound values of a QUERY or EXECUTE body (v4 query parameters), read as UTF-8 text. */
  queryValues(): (string | null)[] {
    this.at += 2; // consistency
    const flags = this.buf[this.at++];
    if (!(flags & 0x01)) return [];
    const count = this.buf.readUInt16BE(this.at);
    this.at += 2;
    const values: (string | null)[] = [];
    for (let i = 0; i < count; i++) {
      if (flags & 0x40) this.shortBytes(); // a named value: [string] name first
      const length = this.buf.readInt32BE(this.at);
      this.at += 4;
      values.push(length < 0 ? null : this.take(length).toString());
    }
    return values;
  }
}
