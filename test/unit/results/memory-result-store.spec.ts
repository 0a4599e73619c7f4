import { ResultTooLargeError } from '../../../lib';
import { MemoryResultStore } from '../../../lib/results/memory.result-store';

const MB = 1024 * 1024;
const success = (taskId: string, result: unknown) => ({ taskId, status: 'SUCCESS' as const, result, traceback: null, children: [] });

describe('MemoryResultStore: bounded by bytes', () => {
  it('keeps 1,000 results of 1 MB each within its byte budget, forgetting the oldest first', async () => {
    const store = new MemoryResultStore({ maxBytes: 64 * MB });
    const value = 'x'.repeat(MB);
    for (let i = 0; i < 1000; i++) await store.store(success(`t${i}`, value));
    expect(store.bytes).toBeLessThanOrEqual(64 * MB);
    expect(store.allRows().length).toBeGreaterThanOrEqual(60);
    expect(store.allRows().length).toBeLessThan(64);
    expect(await store.getTaskMeta('t999')).toMatchObject({ status: 'SUCCESS', result: value });
    // forgotten like an expired Celery cache entry: PENDING again
    expect(await store.getTaskMeta('t0')).toMatchObject({ status: 'PENDING', result: null });
  });

  it('has a default budget of 128 MiB', async () => {
    const store = new MemoryResultStore();
    const value = 'x'.repeat(MB);
    for (let i = 0; i < 200; i++) await store.store(success(`t${i}`, value));
    expect(store.bytes).toBeLessThanOrEqual(128 * MB);
    expect(store.bytes).toBeGreaterThan(120 * MB);
  });

  it('counts a task stored twice once, at its newest size', async () => {
    const store = new MemoryResultStore();
    await store.store(success('t', 'x'.repeat(1000)));
    const first = store.bytes;
    await store.store(success('t', 'x'.repeat(10)));
    expect(store.bytes).toBe(first - 990);
    expect(store.allRows()).toHaveLength(1);
  });

  it('keeps many small results too: each row counts its overhead, so the count is bounded as well', async () => {
    const store = new MemoryResultStore({ maxBytes: MB });
    for (let i = 0; i < 10_000; i++) await store.store(success(`t${i}`, i));
    expect(store.bytes).toBeLessThanOrEqual(MB);
    expect(store.allRows().length).toBeLessThan(2100);
  });

  it('refuses a row over maxResultBytes before keeping anything, naming the size and the limit', async () => {
    const store = new MemoryResultStore({ maxResultBytes: 4096 });
    await expect(store.store(success('big', 'x'.repeat(5000)))).rejects.toThrow(ResultTooLargeError);
    await expect(store.store(success('big', 'x'.repeat(5000)))).rejects.toThrow(/is 5\d{3} bytes, over worker\.maxResultBytes \(4096 bytes\)/);
    expect(store.bytes).toBe(0);
    expect(await store.getTaskMeta('big')).toMatchObject({ status: 'PENDING' });
  });

  it('refuses rows over the default maxResultBytes (8 MiB)', async () => {
    const store = new MemoryResultStore();
    await expect(store.store(success('big', 'x'.repeat(8 * MB)))).rejects.toThrow(ResultTooLargeError);
    await expect(store.store(success('fits', 'x'.repeat(8 * MB - 100)))).resolves.toBeUndefined();
  });
});
