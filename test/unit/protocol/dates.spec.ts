import { dateToMicros, formatCeleryDate, microsToDate, parseCeleryDate } from '../../../lib/protocol/dates';
import { CAPTURE_NOW_MICROS, CaptureFile, loadVector } from '../../support/vectors';

// Epoch-microsecond expectations were computed with Python: dateutil.parser.isoparse (Celery ≥ 5.4's
// parser), naive values made aware as UTC (wire spec §1.6).

const NOW_STRING = '2025-01-15T12:00:00.123456+00:00';

describe('formatCeleryDate', () => {
  it('writes the capture clock as 2025-01-15T12:00:00.123456+00:00 (6 fraction digits, +00:00)', () => {
    expect(formatCeleryDate(CAPTURE_NOW_MICROS)).toBe(NOW_STRING);
  });

  it('writes the eta and expires strings of the countdown60_expires3600 vector', () => {
    expect(formatCeleryDate(CAPTURE_NOW_MICROS + 60_000_000)).toBe('2025-01-15T12:01:00.123456+00:00');
    expect(formatCeleryDate(CAPTURE_NOW_MICROS + 3600_000_000)).toBe('2025-01-15T13:00:00.123456+00:00');
  });

  it('leaves the fraction out entirely when the microseconds are 0, as datetime.isoformat() does', () => {
    expect(formatCeleryDate(Date.UTC(2025, 0, 15, 12, 1, 0) * 1000)).toBe('2025-01-15T12:01:00+00:00');
  });

  it('pads the fraction to 6 digits', () => {
    expect(formatCeleryDate(Date.UTC(2025, 0, 15, 12, 1, 0) * 1000 + 1)).toBe('2025-01-15T12:01:00.000001+00:00');
    expect(formatCeleryDate(Date.UTC(2025, 0, 15, 12, 1, 0) * 1000 + 120_000)).toBe('2025-01-15T12:01:00.120000+00:00');
  });

  it('never uses the Z suffix or a 3-digit fraction like toISOString()', () => {
    const text = formatCeleryDate(Date.UTC(2025, 5, 1, 8, 30, 15, 250) * 1000);
    expect(text).toBe('2025-06-01T08:30:15.250000+00:00');
    expect(text).not.toMatch(/Z$/);
  });

  it('formats instants before 1970 with a positive fraction, like Python', () => {
    expect(formatCeleryDate(-1)).toBe('1969-12-31T23:59:59.999999+00:00');
  });

  it('pads years below 1000 to 4 digits', () => {
    expect(formatCeleryDate(Date.UTC(999, 0, 1) * 1000)).toBe('0999-01-01T00:00:00+00:00');
  });

  it('floors fractional microseconds (a countdown of 1.0000005 s) to whole ones, keeping 6 digits', () => {
    const start = Date.UTC(2025, 0, 15, 12, 1, 0) * 1000;
    expect(formatCeleryDate(start + 1.0000005 * 1_000_000)).toBe('2025-01-15T12:01:01+00:00');
    expect(formatCeleryDate(start + 123456.5)).toBe('2025-01-15T12:01:00.123456+00:00');
    expect(formatCeleryDate(start + 999999.75)).toBe('2025-01-15T12:01:00.999999+00:00');
    expect(formatCeleryDate(CAPTURE_NOW_MICROS + 0.5)).toBe(NOW_STRING);
  });

  it('floors fractional microseconds before 1970 towards the earlier microsecond', () => {
    expect(formatCeleryDate(-0.5)).toBe('1969-12-31T23:59:59.999999+00:00');
    expect(formatCeleryDate(-1_000_000.25)).toBe('1969-12-31T23:59:58.999999+00:00');
  });

  it('writes only strings that parseCeleryDate reads back, for fractional inputs too', () => {
    for (const micros of [CAPTURE_NOW_MICROS + 1.0000005 * 1_000_000, CAPTURE_NOW_MICROS + 0.75, -12.75]) {
      const text = formatCeleryDate(micros);
      expect(text).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?\+00:00$/);
      expect(parseCeleryDate(text)).toBe(Math.floor(micros));
    }
  });

  it('refuses NaN and infinite instants instead of writing "NaN-NaN-..."', () => {
    expect(() => formatCeleryDate(NaN)).toThrow(RangeError);
    expect(() => formatCeleryDate(Infinity)).toThrow(RangeError);
  });
});

describe('parseCeleryDate', () => {
  it.each([
    ['2025-01-15T12:01:00.123456+00:00', 1736942460123456],
    ['2025-01-15T13:00:00.123456+00:00', 1736946000123456],
    ['2025-01-15T12:00:01.123456+00:00', 1736942401123456],
  ])('reads the captured date %s', (text, micros) => {
    expect(parseCeleryDate(text)).toBe(micros);
  });

  it('reads a date without a fraction', () => {
    expect(parseCeleryDate('2025-01-15T12:01:00+00:00')).toBe(1736942460000000);
  });

  it('reads a 3-digit fraction as milliseconds (JS toISOString output)', () => {
    expect(parseCeleryDate('2025-01-15T12:01:00.123Z')).toBe(1736942460123000);
  });

  it('reads a 1-digit fraction as tenths of a second', () => {
    expect(parseCeleryDate('2025-01-15T12:01:00.5+00:00')).toBe(1736942460500000);
  });

  it('truncates a fraction of 7 or more digits to microseconds', () => {
    expect(parseCeleryDate('2025-01-15T12:01:00.1234567+00:00')).toBe(1736942460123456);
    expect(parseCeleryDate('2025-01-15T12:01:00.999999999+00:00')).toBe(1736942460999999);
  });

  it('accepts a comma as the decimal separator', () => {
    expect(parseCeleryDate('2025-01-15T12:01:00,5+00:00')).toBe(1736942460500000);
  });

  it('reads the Z suffix (upper and lower case) as UTC', () => {
    expect(parseCeleryDate('2025-01-15T12:01:00Z')).toBe(1736942460000000);
    expect(parseCeleryDate('2025-01-15T12:01:00z')).toBe(1736942460000000);
  });

  it('applies a positive offset: 12:01+01:00 is 11:01Z', () => {
    expect(parseCeleryDate('2025-01-15T12:01:00+01:00')).toBe(1736938860000000);
  });

  it('applies a negative offset with minutes: 12:01-05:30 is 17:31Z', () => {
    expect(parseCeleryDate('2025-01-15T12:01:00-05:30')).toBe(1736962260000000);
  });

  it('accepts offsets written +0130 and +01', () => {
    expect(parseCeleryDate('2025-01-15T12:01:00+0130')).toBe(1736937060000000);
    expect(parseCeleryDate('2025-01-15T12:01:00+01')).toBe(1736938860000000);
  });

  it('treats a naive date-time as UTC, as Celery does', () => {
    expect(parseCeleryDate('2025-01-15T12:01:00.123456')).toBe(1736942460123456);
  });

  it('accepts a space instead of T between date and time', () => {
    expect(parseCeleryDate('2025-01-15 12:01:00.5')).toBe(1736942460500000);
  });

  it('reads a bare date as midnight UTC', () => {
    expect(parseCeleryDate('2025-01-15')).toBe(1736899200000000);
  });

  it('accepts 29 February in a leap year', () => {
    expect(parseCeleryDate('2024-02-29T00:00:00')).toBe(1709164800000000);
  });

  it('reads back what formatCeleryDate writes, to the microsecond', () => {
    for (const micros of [CAPTURE_NOW_MICROS, CAPTURE_NOW_MICROS + 1, Date.UTC(2030, 11, 31, 23, 59, 59) * 1000, -1, 0]) {
      expect(parseCeleryDate(formatCeleryDate(micros))).toBe(micros);
    }
  });

  it('reads every eta / expires header of the captured messages (both Celery versions)', () => {
    for (const file of ['capture_new.json', 'capture_old.json']) {
      for (const m of loadVector<CaptureFile>(file).messages) {
        for (const key of ['eta', 'expires'] as const) {
          const text = m.headers[key];
          if (typeof text === 'string') expect(formatCeleryDate(parseCeleryDate(text))).toBe(text);
        }
      }
    }
  });

  it.each([
    ['an empty string', ''],
    ['a word', 'tomorrow'],
    ['a date with trailing garbage', '2025-01-15T12:01:00+00:00 garbage'],
    ['a lone dot without fraction digits', '2025-01-15T12:01:00.+00:00'],
    ['a US-style date', '01/15/2025 12:01:00'],
  ])('throws a RangeError naming the text for %s', (_what, text) => {
    expect(() => parseCeleryDate(text)).toThrow(RangeError);
    expect(() => parseCeleryDate(text)).toThrow(JSON.stringify(text));
  });

  it.each([
    ['month 13', '2025-13-01T00:00:00'],
    ['month 0', '2025-00-10T00:00:00'],
    ['day 0', '2025-01-00T00:00:00'],
    ['day 32', '2025-01-32T00:00:00'],
    ['30 February', '2025-02-30T00:00:00'],
    ['29 February in a common year', '2025-02-29T00:00:00'],
    ['31 April', '2025-04-31T00:00:00'],
    ['hour 25', '2025-01-15T25:00:00'],
    ['minute 60', '2025-01-15T12:60:00'],
    ['second 60', '2025-01-15T12:01:60'],
  ])('throws a RangeError for an out-of-range date (%s)', (_what, text) => {
    expect(() => parseCeleryDate(text)).toThrow(RangeError);
  });

  it.each([
    ['an offset of 25 hours', '2025-01-15T12:01:00+25:00'],
    ['an offset of 24 hours', '2025-01-15T12:01:00-24:00'],
    ['offset minutes of 99', '2025-01-15T12:01:00+01:99'],
  ])('throws a RangeError for %s, which Python rejects', (_what, text) => {
    expect(() => parseCeleryDate(text)).toThrow(RangeError);
  });
});

describe('dateToMicros / microsToDate', () => {
  it('converts a Date to epoch microseconds', () => {
    expect(dateToMicros(new Date(Date.UTC(2025, 0, 15, 12, 0, 0, 123)))).toBe(1736942400123000);
  });

  it('truncates microseconds to the millisecond when making a Date', () => {
    expect(microsToDate(CAPTURE_NOW_MICROS).toISOString()).toBe('2025-01-15T12:00:00.123Z');
    expect(microsToDate(-1).getTime()).toBe(-1);
  });
});
