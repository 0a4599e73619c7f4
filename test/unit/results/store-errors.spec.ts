import { errors, types } from 'cassandra-driver';
import { CeleryConnectionError, ResultTooLargeError } from '../../../lib';
import { encodeResultRow } from '../../../lib/protocol/result-row';
import { checkRowSize, classifyStoreError, encodedRowBytes } from '../../../lib/results/store-errors';

const codes = types.responseErrorCodes;
const response = (code: number, message: string) => new errors.ResponseError(code, message);
const socket = (code: string) => Object.assign(new Error(`connect ${code} 127.0.0.1:9042`), { code });

describe('classifyStoreError', () => {
  it.each([
    ['a write timeout', response(codes.writeTimeout, 'Operation timed out - received only 0 responses.')],
    ['unavailable replicas', response(codes.unavailableException, 'Cannot achieve consistency level LOCAL_QUORUM')],
    ['an overloaded node', response(codes.overloaded, 'Server is overloaded')],
    ['a bootstrapping node', response(codes.isBootstrapping, 'Cannot read from a bootstrapping node')],
    ['a write failure on replicas', response(codes.writeFailure, 'Operation failed - received 0 responses and 1 failures')],
    ['a server error', response(codes.serverError, 'java.lang.RuntimeException')],
    ['an unprepared statement', response(codes.unprepared, 'Prepared query with ID 00 not found')],
    ['no host available', new errors.NoHostAvailableError({ '127.0.0.1:9042': socket('ECONNREFUSED') })],
    ['a client-side timeout', new errors.OperationTimedOutError('The host 127.0.0.1:9042 did not reply before timeout 12000 ms', '127.0.0.1:9042')],
    ['busy connections', new errors.BusyConnectionError('127.0.0.1:9042', 2048, 1)],
    ['a reset socket', socket('ECONNRESET')],
    ['a broken pipe', socket('EPIPE')],
    ['a reply that does not fit its request', new CeleryConnectionError('answered the write of x with rows; not counted as stored')],
  ])('%s is transient', (_what, err) => {
    expect(classifyStoreError(err)).toMatchObject({ kind: 'transient', known: true, tooLarge: false });
  });

  it.each([
    // the messages below are Cassandra 5.0.8's, measured
    ['a missing permission', response(codes.unauthorized, 'User ro has no MODIFY permission on <table celery_test.t> or any of its parents')],
    ['an invalid row', response(codes.invalid, 'Some clustering keys are missing: date_done')],
    ['a missing table', response(codes.invalid, 'table nosuchtable does not exist')],
    ['a syntax error', response(codes.syntaxError, "line 1:0 no viable alternative at input 'SELEC' ([SELEC]...)")],
    ['a configuration error', response(codes.configError, 'Cannot add already existing table')],
    ['values the driver refuses', new errors.ArgumentError('Expected Buffer for a blob')],
  ])('%s is permanent', (_what, err) => {
    expect(classifyStoreError(err)).toMatchObject({ kind: 'permanent', known: true, tooLarge: false });
  });

  it.each([
    ['an oversized mutation (Cassandra 4.0+)', response(codes.invalid, 'Rejected an oversized mutation (17825857/16777216) for keyspace: celery_test. Top keys are: t.x')],
    // measured on Cassandra 5.0.8 (protocol v4) for a 17 MiB blob: the frame limit binds before the mutation limit
    ['a request frame over native_transport_max_frame_size', response(codes.invalid, 'Request is too big: length 17825884 exceeds maximum allowed length 16777216.')],
    ['a request frame over the maximum, sent as a protocol error', response(codes.protocolError, 'Request is too big: length 17825928 exceeds maximum allowed length 16777216.')],
    ['a mutation too large (Cassandra 3.x)', response(codes.serverError, 'Mutation of 17825857 bytes is too large for the maximum size of 16777216')],
    ['our own size limit', new ResultTooLargeError('t1', 9_000_000, 8_388_608)],
  ])('%s is permanent and too large', (_what, err) => {
    expect(classifyStoreError(err)).toMatchObject({ kind: 'permanent', tooLarge: true });
  });

  it('names the server error code in its label', () => {
    expect(classifyStoreError(response(codes.unauthorized, 'no')).label).toBe('ResponseError unauthorized (0x2100)');
  });

  it('treats an error it does not know as transient, and says it does not know it', () => {
    expect(classifyStoreError(new RangeError('odd'))).toEqual({ kind: 'transient', label: 'RangeError', tooLarge: false, known: false });
    expect(classifyStoreError(response(0x7777, 'new code'))).toMatchObject({ kind: 'transient', known: false });
    expect(classifyStoreError('a string')).toMatchObject({ kind: 'transient', known: false, label: 'string' });
  });
});

describe('checkRowSize', () => {
  const row = (value: string) => encodeResultRow({ taskId: 'id-1', status: 'SUCCESS', result: value, traceback: null, children: [] }, new Date());

  it('counts the blobs, the task id and the status', () => {
    // "x" x 10 → 12 bytes of JSON text; "null", "[]", "id-1", "SUCCESS"
    expect(encodedRowBytes(row('x'.repeat(10)))).toBe(12 + 4 + 2 + 4 + 7);
  });

  it('lets a row at the limit through and refuses one byte more, naming the size and the limit', () => {
    const r = row('x'.repeat(100));
    const size = encodedRowBytes(r);
    expect(() => checkRowSize(r, size)).not.toThrow();
    expect(() => checkRowSize(r, size - 1)).toThrow(ResultTooLargeError);
    expect(() => checkRowSize(r, size - 1)).toThrow(`The result row of task id-1 is ${size} bytes, over worker.maxResultBytes (${size - 1} bytes)`);
  });
});
