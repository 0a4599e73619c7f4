import { normalizeCeleryOptions } from '../../../lib/config/normalize-options';
import type { CeleryOptionsInput } from '../../../lib/interfaces/celery-options.interface';

describe('normalizeCeleryOptions: rate limits', () => {
  it('takes worker.disableRateLimits, and worker_disable_rate_limits as Celery writes it', () => {
    expect(normalizeCeleryOptions({}).rateLimits.disabled).toBe(false);
    expect(normalizeCeleryOptions({ worker: { disableRateLimits: true } }).rateLimits.disabled).toBe(true);
    expect(normalizeCeleryOptions({ worker_disable_rate_limits: true }).rateLimits.disabled).toBe(true);
    expect(() => normalizeCeleryOptions({ worker_disable_rate_limits: 'yes' } as unknown as CeleryOptionsInput)).toThrow(
      /worker_disable_rate_limits \(worker\.disableRateLimits\): must be true or false, got "yes"/,
    );
  });

  it('takes globalRateLimits and names a bad key or value', () => {
    const resolved = normalizeCeleryOptions({ globalRateLimits: { table: 'limits', serialConsistency: 'LOCAL_SERIAL', reserveAheadMs: 200, maxLateMs: 10 } });
    expect(resolved.rateLimits).toEqual({ disabled: false, table: 'limits', serialConsistency: 'LOCAL_SERIAL', reserveAheadMs: 200, maxLateMs: 10 });
    expect(() => normalizeCeleryOptions({ globalRateLimits: { tabel: 'x' } } as unknown as CeleryOptionsInput)).toThrow(/globalRateLimits\.tabel: unknown option/);
    expect(() => normalizeCeleryOptions({ globalRateLimits: { table: 'a-b' } })).toThrow(/globalRateLimits\.table: not a valid table name: "a-b"/);
    expect(() => normalizeCeleryOptions({ globalRateLimits: { serialConsistency: 'QUORUM' as 'SERIAL' } })).toThrow(/globalRateLimits\.serialConsistency: must be SERIAL or LOCAL_SERIAL/);
    expect(() => normalizeCeleryOptions({ globalRateLimits: { reserveAheadMs: 0 } })).toThrow(/globalRateLimits\.reserveAheadMs: must be an integer >= 1/);
    expect(() => normalizeCeleryOptions({ globalRateLimits: 5 } as unknown as CeleryOptionsInput)).toThrow(/globalRateLimits: must be an object/);
  });
});
