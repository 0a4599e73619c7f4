import { Logger } from '@nestjs/common';
import { errors, types } from 'cassandra-driver';
import { ResultStore } from '../../../lib';
import type { ResultToStore, TaskMeta } from '../../../lib/protocol/result-row';
import { MemoryResultStore } from '../../../lib/results/memory.result-store';
import { ResultWriter } from '../../../lib/results/result-writer';

const codes = types.responseErrorCodes;

/** A memory store whose writes fail as told: `failures(result, attempt)` returns the error to throw, or null. */
class ScriptedStore extends MemoryResultStore {
  readonly writes: ResultToStore[] = [];
  constructor(private readonly failures: (result: ResultToStore, attempt: number) => unknown) {
    super();
  }
  override async store(result: ResultToStore): Promise<void> {
    this.writes.push(result);
    const err = this.failures(result, this.writes.length);
    if (err) throw err;
    await super.store(result);
  }
}

function writerFor(store: ResultStore, stopping = () => false) {
  const logger = new Logger('test');
  const logs: string[] = [];
  for (const level of ['log', 'warn', 'error'] as const) {
    jest.spyOn(logger, level).mockImplementation((...args: unknown[]) => void logs.push(`${level}: ${String(args[0])}`));
  }
  return { writer: new ResultWriter(store, logger, stopping), logs };
}

const big: ResultToStore = { taskId: 't1', status: 'SUCCESS', result: 'x'.repeat(100), traceback: null, children: [] };

describe('ResultWriter', () => {
  it('stores a FAILURE (builtins.ValueError) in place of a result the database refuses as too large, after one try', async () => {
    const oversized = new errors.ResponseError(codes.invalid, 'Rejected an oversized mutation (17825857/16777216) for keyspace: celery_test. Top keys are: t.t1');
    const store = new ScriptedStore((r) => (r.status === 'SUCCESS' ? oversized : null));
    const { writer } = writerFor(store);
    const outcome = await writer.write(big, false);
    expect(store.writes.map((w) => w.status)).toEqual(['SUCCESS', 'FAILURE']);
    expect(outcome).toMatchObject({ kind: 'unstorable', stored: { status: 'FAILURE' } });
    const meta = await store.getTaskMeta('t1');
    expect(meta.status).toBe('FAILURE');
    expect(meta.result).toEqual({
      exc_type: 'ValueError',
      exc_module: 'builtins',
      exc_message: ['The SUCCESS result of task t1 was not stored: Rejected an oversized mutation (17825857/16777216) for keyspace: celery_test. Top keys are: t.t1'],
    });
  });

  it('stores a ValueError naming the size and the limit for a row over maxResultBytes, without writing it', async () => {
    const store = new MemoryResultStore({ maxResultBytes: 4096 });
    const { writer } = writerFor(store);
    const outcome = await writer.write({ ...big, result: 'x'.repeat(10_000) }, true);
    expect(outcome.kind).toBe('unstorable');
    const meta = await store.getTaskMeta('t1');
    expect(meta).toMatchObject({ status: 'FAILURE', result: { exc_type: 'ValueError', exc_module: 'builtins' } });
    expect((meta.result as { exc_message: string[] }).exc_message[0]).toMatch(/^The SUCCESS result of task t1 was not stored: The result row of task t1 is 100\d\d bytes, over worker\.maxResultBytes \(4096 bytes\)$/);
  });

  it('gives up without looping when even the FAILURE is refused (no permission), saying both reasons', async () => {
    const denied = new errors.ResponseError(codes.unauthorized, 'User ro has no MODIFY permission on <table celery_test.t> or any of its parents');
    const store = new ScriptedStore(() => denied);
    const { writer } = writerFor(store);
    const outcome = await writer.write(big, true);
    expect(store.writes).toHaveLength(2);
    expect(outcome).toEqual({
      kind: 'unstorable',
      stored: null,
      reason: expect.stringMatching(/no MODIFY permission .*\(ResponseError unauthorized \(0x2100\)\); the FAILURE in its place was refused too/),
    });
    expect(await store.getTaskMeta('t1')).toMatchObject({ status: 'PENDING' });
  });

  it('stores a RuntimeError FAILURE when a permanent error other than size refuses only the result', async () => {
    const invalid = new errors.ResponseError(codes.invalid, 'some column value is invalid');
    const store = new ScriptedStore((r) => (r.status === 'SUCCESS' ? invalid : null));
    const { writer } = writerFor(store);
    await writer.write(big, false);
    expect(await store.getTaskMeta('t1')).toMatchObject({ status: 'FAILURE', result: { exc_type: 'RuntimeError', exc_module: 'builtins' } });
  });

  it('never lets the FAILURE replace a stored SUCCESS', async () => {
    const store = new ScriptedStore((r) => (r.result === 'second run' ? new errors.ResponseError(codes.invalid, 'Rejected an oversized mutation (1/1)') : null));
    await store.store({ ...big, result: 'first run' });
    const { writer } = writerFor(store);
    const outcome = await writer.write({ ...big, result: 'second run' }, false);
    expect(outcome).toMatchObject({ kind: 'kept', meta: { status: 'SUCCESS', result: 'first run' } });
    expect((await store.getTaskMeta('t1')).result).toBe('first run');
  });

  it('retries transient errors with back-off until the store takes the result', async () => {
    const timeout = new errors.OperationTimedOutError('The host 127.0.0.1:9042 did not reply before timeout 12000 ms');
    const store = new ScriptedStore((_r, attempt) => (attempt < 3 ? timeout : null));
    const { writer, logs } = writerFor(store);
    await expect(writer.write(big, false)).resolves.toEqual({ kind: 'stored' });
    expect(store.writes).toHaveLength(3);
    expect(logs.some((l) => l.includes('attempt 1, OperationTimedOutError'))).toBe(true);
  });

  it('treats an unknown error as transient (nothing is lost) and logs its class', async () => {
    const store = new ScriptedStore((_r, attempt) => (attempt === 1 ? new RangeError('odd') : null));
    const { writer, logs } = writerFor(store);
    await expect(writer.write(big, false)).resolves.toEqual({ kind: 'stored' });
    expect(logs.find((l) => l.includes('attempt 1'))).toMatch(/RangeError \(an error not known to be transient or permanent: treated as transient\)/);
  });

  it('abandons a transient failure when the worker stops (the message goes back), never a permanent one', async () => {
    const down = new errors.NoHostAvailableError({});
    const store = new ScriptedStore(() => down);
    const { writer } = writerFor(store, () => true);
    await expect(writer.write(big, false)).resolves.toEqual({ kind: 'abandoned' });
    expect(store.writes).toHaveLength(1);
  });

  it('reports a kept SUCCESS instead of storing when the check finds one', async () => {
    const store = new MemoryResultStore();
    await store.store({ ...big, result: 'done' });
    const { writer } = writerFor(store);
    const outcome = await writer.write({ ...big, status: 'FAILURE', result: { exc_type: 'Exception', exc_message: ['late'], exc_module: 'builtins' } }, true);
    expect(outcome).toMatchObject({ kind: 'kept', meta: { result: 'done' } as Partial<TaskMeta> });
  });
});
