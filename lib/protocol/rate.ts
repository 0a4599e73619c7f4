import { InvalidRateLimitError } from '../errors/celery.errors';

/**
 * Celery's rate limit strings, read as `celery.utils.time.rate` reads them: `'<n>/<unit>'` with
 * unit `s`, `m` or `h` (`'10/s'`, `'100/m'`, `'2/h'`, `'0.5/s'`), `'<n>'` or `'<n>/'` per second,
 * a number per second, and `0`, `''`, `null` or `undefined` for no limit. `<n>` is what Python's
 * `float()` accepts (surrounding whitespace, `+`, `1e3`, `1_000`); the unit is case-sensitive and
 * taken verbatim after the first `/`, so `'10 / s'` and `'10/sec'` are refused as Celery refuses them.
 *
 * Where Celery accepts a value and then misbehaves, this refuses it: a negative rate (kombu's
 * bucket never refills and the worker spins), NaN and infinity.
 */

/** Seconds per unit, as `celery.utils.time.RATE_MODIFIER_MAP` divides. */
const PER_UNIT: Readonly<Record<string, (n: number) => number>> = {
  s: (n) => n,
  m: (n) => n / 60.0,
  h: (n) => n / 60.0 / 60.0,
};

/** A decimal literal Python's `float()` reads (PEP 515 underscores between digits). */
const PY_DECIMAL = /^[+-]?(?:\d(?:_?\d)*(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)(?:[eE][+-]?\d(?:_?\d)*)?$/;
const PY_NON_FINITE = /^[+-]?(?:inf|infinity|nan)$/i;

/**
 * Tasks per second allowed by a rate limit; 0 means no limit. Throws InvalidRateLimitError naming
 * the value (and `taskName`, when given) for anything Celery would not read as a usable rate.
 */
export function parseRate(value: unknown, taskName?: string): number {
  const fail = (reason: string): never => {
    throw new InvalidRateLimitError(value, reason, taskName ?? null);
  };
  if (value === undefined || value === null || value === '' || value === 0) return 0;
  if (typeof value === 'number') return checked(value, fail);
  if (typeof value !== 'string') return fail(`must be a string or a number, got ${typeof value}`);
  const slash = value.indexOf('/');
  const count = slash < 0 ? value : value.slice(0, slash);
  const unit = slash < 0 ? 's' : value.slice(slash + 1) || 's';
  const perUnit = Object.prototype.hasOwnProperty.call(PER_UNIT, unit) ? PER_UNIT[unit] : undefined;
  if (!perUnit) return fail(`unknown unit ${JSON.stringify(unit)} (Celery knows s, m and h)`);
  const literal = count.trim();
  if (PY_NON_FINITE.test(literal)) return fail('must be a finite number');
  if (!PY_DECIMAL.test(literal)) return fail(`${JSON.stringify(count)} is not a number`);
  return checked(perUnit(Number(literal.replace(/_/g, ''))), fail);
}

function checked(perSecond: number, fail: (reason: string) => never): number {
  if (!Number.isFinite(perSecond)) return fail('must be a finite number');
  if (perSecond < 0) return fail('must not be negative');
  return perSecond === 0 ? 0 : perSecond; // Celery's `or 0`; also turns -0 into 0
}
