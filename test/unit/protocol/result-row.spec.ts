import { decodeResultRow, encodeResultRow, pendingMeta } from '../../../lib/protocol/result-row';
import { TaskState } from '../../../lib/protocol/states';
import { loadVector } from '../../support/vectors';

// Fixtures: rows_*.json (the CQL the Cassandra backend executes for SUCCESS / FAILURE) and
// worker_*.json (every INSERT a real worker executed, parameters as Python reprs). Wire spec §4, §8.4-8.6.

interface RowVector {
  params_repr: Record<'task_id' | 'status' | 'result' | 'date_done' | 'traceback' | 'children', string>;
  blob_text: { result: string; traceback: string; children: string };
  cql_literal: string;
}
type RowsFile = { SUCCESS: RowVector; FAILURE: RowVector; create: string };
type CqlCall = [string, number, string[] | null];
type WorkerFile = Record<string, { cql?: CqlCall[] } | string>;

/** The bytes of a Python `bytes` repr such as b'{"a": \'x\'}' (the escapes Python's repr produces). */
function bytesFromPythonRepr(repr: string): Buffer {
  const m = /^b(['"])([\s\S]*)\1$/.exec(repr);
  if (!m) throw new Error(`not a bytes repr: ${repr}`);
  const body = m[2];
  const out: number[] = [];
  for (let i = 0; i < body.length; i++) {
    const ch = body[i];
    if (ch !== '\\') {
      out.push(ch.charCodeAt(0));
      continue;
    }
    const next = body[++i];
    const simple: Record<string, number> = { '\\': 0x5c, "'": 0x27, '"': 0x22, n: 0x0a, r: 0x0d, t: 0x09 };
    if (next in simple) out.push(simple[next]);
    else if (next === 'x') {
      out.push(parseInt(body.slice(i + 1, i + 3), 16));
      i += 2;
    } else throw new Error(`unhandled escape \\${next} in ${repr}`);
  }
  return Buffer.from(out);
}

function strFromPythonRepr(repr: string): string {
  const m = /^'(.*)'$/.exec(repr);
  if (!m) throw new Error(`not a plain str repr: ${repr}`);
  return m[1];
}

/** Blob hex literals of a client-side bound INSERT, in column order (result, traceback, children). */
function blobLiterals(cql: string): Buffer[] {
  return [...cql.matchAll(/0x([0-9a-f]+)/g)].map((m) => Buffer.from(m[1], 'hex'));
}

/** The value Python serialized into a blob, for re-encoding (the blob texts contain no NaN tokens). */
function valueOf(blob: Buffer): unknown {
  return JSON.parse(blob.toString('utf8'));
}

const DATE_DONE = new Date(Date.UTC(2025, 0, 15, 12, 0, 0, 123));

interface WorkerInsert {
  label: string;
  taskId: string;
  status: TaskState;
  result: Buffer;
  traceback: Buffer;
  children: Buffer;
}

function workerInserts(file: string): WorkerInsert[] {
  const data = loadVector<WorkerFile>(file);
  const inserts: WorkerInsert[] = [];
  for (const [label, entry] of Object.entries(data)) {
    if (typeof entry !== 'object' || !entry.cql) continue;
    for (const [query, , params] of entry.cql) {
      if (!query.includes('INSERT INTO') || !params) continue;
      inserts.push({
        label: `${file} ${label} ${strFromPythonRepr(params[1])} ${strFromPythonRepr(params[0])}`,
        taskId: strFromPythonRepr(params[0]),
        status: strFromPythonRepr(params[1]) as TaskState,
        result: bytesFromPythonRepr(params[2]),
        traceback: bytesFromPythonRepr(params[4]),
        children: bytesFromPythonRepr(params[5]),
      });
    }
  }
  return inserts;
}

describe.each(['rows_new.json', 'rows_old.json'])('encodeResultRow against %s', (file) => {
  const rows = loadVector<RowsFile>(file);

  it('writes the SUCCESS blob texts: the JSON string with quotes, traceback null, children []', () => {
    const row = encodeResultRow(
      { taskId: '6d3c1c9e-8c7a-4e0f-9a47-2a1b5e6f7d80', status: 'SUCCESS', result: 'Astra DB is my powerful results storage yay' },
      DATE_DONE,
    );
    expect(row.result.toString('utf8')).toBe(rows.SUCCESS.blob_text.result);
    expect(row.traceback.toString('utf8')).toBe(rows.SUCCESS.blob_text.traceback);
    expect(row.children.toString('utf8')).toBe(rows.SUCCESS.blob_text.children);
  });

  it('writes the SUCCESS blobs byte-identical to the hex literals of the bound CQL', () => {
    const [result, traceback, children] = blobLiterals(rows.SUCCESS.cql_literal);
    const row = encodeResultRow(
      { taskId: '6d3c1c9e-8c7a-4e0f-9a47-2a1b5e6f7d80', status: 'SUCCESS', result: 'Astra DB is my powerful results storage yay', traceback: null, children: [] },
      DATE_DONE,
    );
    expect(row.result.equals(result)).toBe(true);
    expect(row.traceback.equals(traceback)).toBe(true);
    expect(row.children.equals(children)).toBe(true);
  });

  it('writes the FAILURE blob texts: exception dict, traceback as a JSON string, children []', () => {
    const traceback = JSON.parse(rows.FAILURE.blob_text.traceback) as string;
    const row = encodeResultRow(
      {
        taskId: '6d3c1c9e-8c7a-4e0f-9a47-2a1b5e6f7d80',
        status: 'FAILURE',
        result: { exc_type: 'ValueError', exc_message: ['sortWords failed: DB unavailable'], exc_module: 'builtins' },
        traceback,
      },
      DATE_DONE,
    );
    expect(row.result.toString('utf8')).toBe(rows.FAILURE.blob_text.result);
    expect(row.traceback.toString('utf8')).toBe(rows.FAILURE.blob_text.traceback);
    expect(row.children.toString('utf8')).toBe(rows.FAILURE.blob_text.children);
  });

  it('writes the FAILURE blobs byte-identical to the hex literals of the bound CQL', () => {
    const [result, traceback, children] = blobLiterals(rows.FAILURE.cql_literal);
    const row = encodeResultRow(
      { taskId: 'x', status: 'FAILURE', result: valueOf(result), traceback: valueOf(traceback) as string, children: valueOf(children) },
      DATE_DONE,
    );
    expect(row.result.toString('hex')).toBe(result.toString('hex'));
    expect(row.traceback.toString('hex')).toBe(traceback.toString('hex'));
    expect(row.children.toString('hex')).toBe(children.toString('hex'));
  });

  it('carries task id, status and date_done through unchanged', () => {
    const row = encodeResultRow({ taskId: 't-1', status: 'SUCCESS', result: 1 }, DATE_DONE);
    expect(row.taskId).toBe('t-1');
    expect(row.status).toBe('SUCCESS');
    expect(row.dateDone).toBe(DATE_DONE);
  });
});

describe('encodeResultRow against every INSERT of worker_new.json / worker_old.json', () => {
  const inserts = [...workerInserts('worker_new.json'), ...workerInserts('worker_old.json')];

  it('finds the worker INSERTs (SUCCESS, FAILURE, chain step, RETRY, NotRegistered, REVOKED)', () => {
    const statuses = new Set(inserts.map((i) => i.status));
    expect([...statuses].sort()).toEqual(['FAILURE', 'RETRY', 'REVOKED', 'SUCCESS']);
    expect(inserts.length).toBeGreaterThanOrEqual(10);
  });

  it.each(inserts.map((i) => [i.label, i] as const))('re-encodes the blobs of %s byte for byte', (_label, insert) => {
    const row = encodeResultRow(
      {
        taskId: insert.taskId,
        status: insert.status,
        result: valueOf(insert.result),
        traceback: valueOf(insert.traceback) as string | null,
        children: valueOf(insert.children),
      },
      DATE_DONE,
    );
    expect(row.result.toString('utf8')).toBe(insert.result.toString('utf8'));
    expect(row.traceback.toString('utf8')).toBe(insert.traceback.toString('utf8'));
    expect(row.children.toString('utf8')).toBe(insert.children.toString('utf8'));
  });

  it.each(inserts.map((i) => [i.label, i] as const))('decodes the blobs of %s', (_label, insert) => {
    const meta = decodeResultRow({ ...insert, dateDone: DATE_DONE });
    expect(meta.taskId).toBe(insert.taskId);
    expect(meta.status).toBe(insert.status);
    expect(meta.result).toEqual(valueOf(insert.result));
    expect(meta.traceback).toEqual(valueOf(insert.traceback));
    expect(meta.children).toEqual(valueOf(insert.children));
    expect(meta.dateDone).toBe(DATE_DONE);
  });
});

describe('encodeResultRow: defaults and formatting', () => {
  it('writes children [] when none are given (a task run by a worker) and null when null is given (revoke command)', () => {
    expect(encodeResultRow({ taskId: 'a', status: 'SUCCESS', result: 1 }, DATE_DONE).children.toString()).toBe('[]');
    expect(encodeResultRow({ taskId: 'a', status: 'REVOKED', result: null, children: null }, DATE_DONE).children.toString()).toBe('null');
  });

  it('writes the 4 bytes null, never an empty blob, for an undefined result and traceback', () => {
    const row = encodeResultRow({ taskId: 'a', status: 'SUCCESS', result: undefined }, DATE_DONE);
    expect(row.result.toString()).toBe('null');
    expect(row.traceback.toString()).toBe('null');
  });

  it('writes the chain-step children tuple [[["<next id>", null], null]]', () => {
    const row = encodeResultRow(
      { taskId: 'a', status: 'SUCCESS', result: 'r', children: [[['a1b2c3d4-0000-4000-8000-000000000002', null], null]] },
      DATE_DONE,
    );
    expect(row.children.toString()).toBe('[[["a1b2c3d4-0000-4000-8000-000000000002", null], null]]');
  });

  it('writes the STARTED meta of wire spec §8.6 with Python separators', () => {
    const row = encodeResultRow({ taskId: 'a', status: 'STARTED', result: { pid: 4242, hostname: 'celery@worker-host' } }, DATE_DONE);
    expect(row.result.toString()).toBe('{"pid": 4242, "hostname": "celery@worker-host"}');
  });

  it('escapes non-ASCII results as kombu does (ensure_ascii)', () => {
    const row = encodeResultRow({ taskId: 'a', status: 'SUCCESS', result: 'café 😀' }, DATE_DONE);
    expect(row.result.toString()).toBe('"caf\\u00e9 \\ud83d\\ude00"');
  });
});

describe('decodeResultRow', () => {
  const base = { taskId: 't-1', dateDone: DATE_DONE };

  it('tolerates CQL NULL in every blob column, like Celery (decode(None) is None)', () => {
    expect(decodeResultRow({ ...base, status: 'SUCCESS', result: null, traceback: null, children: null })).toEqual({
      taskId: 't-1',
      status: 'SUCCESS',
      result: null,
      traceback: null,
      children: null,
      dateDone: DATE_DONE,
    });
  });

  it('tolerates a CQL NULL result on a FAILURE row', () => {
    expect(decodeResultRow({ ...base, status: 'FAILURE', result: null, traceback: null, children: null }).result).toBeNull();
  });

  it.each(['result', 'traceback', 'children'] as const)('throws naming the column and task when %s is not JSON text', (column) => {
    const row = {
      ...base,
      status: 'SUCCESS',
      result: Buffer.from('"ok"'),
      traceback: Buffer.from('null'),
      children: Buffer.from('[]'),
      [column]: Buffer.from("b''"),
    };
    expect(() => decodeResultRow(row)).toThrow(new RegExp(`t-1.*column ${column}`));
  });

  it('throws on an empty blob, which Celery cannot read either', () => {
    expect(() =>
      decodeResultRow({ ...base, status: 'SUCCESS', result: Buffer.alloc(0), traceback: Buffer.from('null'), children: Buffer.from('[]') }),
    ).toThrow(/column result/);
  });

  it('throws when a FAILURE row holds a result that is not an exception dict', () => {
    expect(() =>
      decodeResultRow({ ...base, status: 'FAILURE', result: Buffer.from('"just text"'), traceback: Buffer.from('null'), children: Buffer.from('[]') }),
    ).toThrow(/FAILURE row whose result is not an exception dict/);
  });

  it('reports a traceback that is not a string as null', () => {
    const meta = decodeResultRow({ ...base, status: 'SUCCESS', result: Buffer.from('1'), traceback: Buffer.from('[1]'), children: Buffer.from('[]') });
    expect(meta.traceback).toBeNull();
  });

  it('decodes UTF-8 and \\u escapes alike', () => {
    const meta = decodeResultRow({ ...base, status: 'SUCCESS', result: Buffer.from('["caf\\u00e9", "café"]'), traceback: null, children: null });
    expect(meta.result).toEqual(['café', 'café']);
  });

  it("reads Python's NaN / Infinity tokens, which json.dumps writes for float('nan') / float('inf') results", () => {
    const meta = decodeResultRow({ ...base, status: 'SUCCESS', result: Buffer.from('[NaN, Infinity, -Infinity, 1.5]'), traceback: null, children: null });
    expect(meta.result).toEqual([NaN, Infinity, -Infinity, 1.5]);
  });

  it('reads back what encodeResultRow wrote for a non-finite float', () => {
    const row = encodeResultRow({ taskId: 't-1', status: 'SUCCESS', result: { ratio: NaN } }, DATE_DONE);
    expect(decodeResultRow(row).result).toEqual({ ratio: NaN });
  });
});

describe('pendingMeta', () => {
  it('describes "no row" as PENDING with every other field null', () => {
    expect(pendingMeta('unknown-id')).toEqual({
      taskId: 'unknown-id',
      status: 'PENDING',
      result: null,
      traceback: null,
      children: null,
      dateDone: null,
    });
  });
});
