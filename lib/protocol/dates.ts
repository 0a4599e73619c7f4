/**
 * Celery's date strings. Times travel as epoch microseconds (a JS number holds them exactly until
 * the year 2255), because Celery writes 6 fraction digits and golden tests compare them exactly.
 */

/** Epoch microseconds of a JS Date. */
export function dateToMicros(date: Date): number {
  return date.getTime() * 1000;
}

/** A JS Date (millisecond precision) from epoch microseconds. */
export function microsToDate(micros: number): Date {
  return new Date(Math.floor(micros / 1000));
}

/**
 * `YYYY-MM-DDTHH:MM:SS.ffffff+00:00`, the form every Celery version parses (what Python's
 * `datetime.isoformat()` writes for an aware UTC datetime: the fraction is left out when it is 0).
 * Never `toISOString()`: its 3-digit `.123Z` is mis-scaled by Celery 5.2 and refused by 5.3 on Python ≤ 3.10.
 */
export function formatCeleryDate(micros: number): string {
  // A fractional countdown (1.0000005 s) gives fractional microseconds; Celery's format has exactly
  // 6 digits, so drop what is below a microsecond (floor, so an instant never moves later).
  const wholeMicros = Math.floor(micros);
  if (!Number.isFinite(wholeMicros)) throw new RangeError(`not a date: ${micros} epoch microseconds`);
  const fraction = ((wholeMicros % 1_000_000) + 1_000_000) % 1_000_000;
  const whole = new Date((wholeMicros - fraction) / 1000);
  const pad = (n: number, width = 2) => String(n).padStart(width, '0');
  const base =
    `${pad(whole.getUTCFullYear(), 4)}-${pad(whole.getUTCMonth() + 1)}-${pad(whole.getUTCDate())}` +
    `T${pad(whole.getUTCHours())}:${pad(whole.getUTCMinutes())}:${pad(whole.getUTCSeconds())}`;
  return base + (fraction ? '.' + pad(fraction, 6) : '') + '+00:00';
}

const ISO_DATE =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?$/;

/**
 * Parses every form Celery emits for `eta` / `expires`: with or without a fraction (any number of
 * digits, truncated to microseconds), `Z` or a `±HH:MM` offset, or naive (taken as UTC, as Celery does).
 * Returns epoch microseconds; throws a RangeError naming the text when it is not a date.
 */
export function parseCeleryDate(text: string): number {
  const m = ISO_DATE.exec(text.trim());
  if (!m) throw new RangeError(`not an ISO-8601 date: ${JSON.stringify(text)}`);
  const [, y, mo, d, h = '0', mi = '0', s = '0', frac = '', zone] = m;
  const year = Number(y);
  const month = Number(mo);
  const day = Number(d);
  const hour = Number(h);
  const minute = Number(mi);
  const second = Number(s);
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 59) {
    throw new RangeError(`date out of range: ${JSON.stringify(text)}`);
  }
  const millis = Date.UTC(year, month - 1, day, hour, minute, second);
  const check = new Date(millis);
  if (check.getUTCDate() !== day) throw new RangeError(`date out of range: ${JSON.stringify(text)}`);
  const micros = Number((frac + '000000').slice(0, 6));
  let offsetMinutes = 0;
  if (zone && zone !== 'Z' && zone !== 'z') {
    const sign = zone[0] === '-' ? -1 : 1;
    const digits = zone.slice(1).replace(':', '');
    const hours = Number(digits.slice(0, 2));
    const minutes = Number(digits.slice(2, 4) || '0');
    if (hours > 23 || minutes > 59) throw new RangeError(`UTC offset out of range: ${JSON.stringify(text)}`);
    offsetMinutes = sign * (hours * 60 + minutes);
  }
  return millis * 1000 + micros - offsetMinutes * 60_000_000;
}
