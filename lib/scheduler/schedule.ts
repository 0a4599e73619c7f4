import { createHash } from 'node:crypto';
import { Cron } from 'croner';

/**
 * When a schedule fires. Every replica computes the same tick times from the wall clock alone, so
 * they can agree on "this tick" without talking: an interval is aligned to the Unix epoch (a
 * 30-second schedule fires at :00 and :30 of every minute, wherever and whenever a replica
 * started), a cron expression's times come from croner in the schedule's time zone.
 */
export interface TickSchedule {
  /** The latest tick at or before `atMs`, or null when there is none. */
  latestAtOrBefore(atMs: number): number | null;
  /** The first tick strictly after `afterMs`, or null when the schedule has no more. */
  nextAfter(afterMs: number): number | null;
  /** For logs: `every 30s`, `cron "*\/5 * * * *" (Europe/Paris)`. */
  describe(): string;
}

/** A fixed interval in milliseconds, ticks at whole multiples of it since the epoch. */
export class IntervalSchedule implements TickSchedule {
  constructor(readonly everyMs: number) {
    if (!Number.isInteger(everyMs) || everyMs < 1000) throw new RangeError(`an interval must be a whole number of milliseconds >= 1000 (1 s), got ${everyMs}`);
  }

  latestAtOrBefore(atMs: number): number {
    return Math.floor(atMs / this.everyMs) * this.everyMs;
  }

  nextAfter(afterMs: number): number {
    return (Math.floor(afterMs / this.everyMs) + 1) * this.everyMs;
  }

  describe(): string {
    return `every ${this.everyMs % 1000 === 0 ? `${this.everyMs / 1000}s` : `${this.everyMs}ms`}`;
  }
}

/** A cron expression (5 fields, or 6 with seconds) in a time zone, evaluated by croner. */
export class CronSchedule implements TickSchedule {
  private readonly cron: Cron;

  /** @param dayOfMonthAndWeek both day fields must match (Celery's crontab), instead of either (cron's). */
  constructor(
    readonly expression: string,
    readonly timezone: string,
    dayOfMonthAndWeek = false,
  ) {
    // paused: croner only computes times here; our own timer fires the ticks
    this.cron = new Cron(expression, { paused: true, timezone, domAndDow: dayOfMonthAndWeek });
    this.cron.nextRun(); // an unknown time zone throws here, at configuration time
  }

  latestAtOrBefore(atMs: number): number | null {
    // previousRuns is exclusive of its reference; a tick exactly at atMs is the next run after atMs - 1 s
    const exact = this.cron.nextRun(new Date(atMs - 1000));
    if (exact && exact.getTime() === Math.floor(atMs / 1000) * 1000 && exact.getTime() <= atMs) return exact.getTime();
    const [previous] = this.cron.previousRuns(1, new Date(atMs));
    return previous ? previous.getTime() : null;
  }

  nextAfter(afterMs: number): number | null {
    return this.cron.nextRun(new Date(afterMs))?.getTime() ?? null;
  }

  describe(): string {
    return `cron "${this.expression}" (${this.timezone})`;
  }
}

/** `'30s'`, `'5m'`, `'1h'`, `'1d'`, `'1500ms'`, or a number of seconds → milliseconds; null when unreadable. */
export function parseEvery(value: string | number): number | null {
  if (typeof value === 'number') return Number.isFinite(value) && value > 0 ? Math.round(value * 1000) : null;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(value);
  if (!m) return null;
  const unit = { ms: 1, s: 1000, m: 60000, h: 3600000, d: 86400000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h' | 'd'];
  return Math.round(Number(m[1]) * unit);
}

/** Celery's `crontab(minute, hour, day_of_week, day_of_month, month_of_year)` fields, each default `*`. */
export interface CrontabFields {
  minute?: string | number;
  hour?: string | number;
  day_of_week?: string | number;
  day_of_month?: string | number;
  month_of_year?: string | number;
}

export const CRONTAB_FIELDS = ['minute', 'hour', 'day_of_month', 'month_of_year', 'day_of_week'] as const;

/**
 * The task id of one tick of one schedule: a name-based UUID (SHA-1, version 5 layout) of the
 * schedule name and the tick time, so a tick sent twice (a takeover after a slow publish) carries
 * the same id and shows as one row in the result table.
 */
export function tickTaskId(scheduleName: string, tickMs: number): string {
  const hash = createHash('sha1').update(`nestjs-celery periodic\0${scheduleName}\0${new Date(tickMs).toISOString()}`).digest();
  hash[6] = (hash[6] & 0x0f) | 0x50;
  hash[8] = (hash[8] & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}
