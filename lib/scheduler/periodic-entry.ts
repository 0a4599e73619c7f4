import type { SendTaskOptions } from '../producer/producer.service';
import { CRONTAB_FIELDS, CronSchedule, IntervalSchedule, parseEvery, type CrontabFields, type TickSchedule } from './schedule';

/** The send options a schedule may give (Celery beat's `options`, in camelCase or as Celery writes them). */
export type PeriodicSendOptions = Pick<
  SendTaskOptions,
  'queue' | 'exchange' | 'routingKey' | 'priority' | 'countdown' | 'headers' | 'ignoreResult' | 'timeLimit' | 'softTimeLimit' | 'compression'
> & {
  /** Seconds after the tick's send after which the task is not run (REVOKED `expired`). */
  expires?: number;
};

/** When a schedule fires, resolved: an interval, or a cron expression in a time zone. */
export type PeriodicTiming = { everyMs: number } | { cron: string; timezone: string; dayOfMonthAndWeek: boolean };

/** One periodic task, from a `@Periodic()` method or the `scheduler.schedule` (`beat_schedule`) config. */
export interface PeriodicEntry {
  name: string;
  task: string;
  timing: PeriodicTiming;
  args: unknown[];
  kwargs: Record<string, unknown>;
  options: PeriodicSendOptions;
}

/** A problem in a schedule, with the key it is about (`scheduler.schedule.cleanup.schedule`). */
export class PeriodicEntryError extends Error {
  constructor(
    readonly key: string,
    readonly detail: string,
  ) {
    super(`${key}: ${detail}`);
  }
}

/** Celery's `apply_async` option names (and ours) → our send option. */
const OPTION_KEYS: Record<string, keyof PeriodicSendOptions> = {
  queue: 'queue',
  exchange: 'exchange',
  routingKey: 'routingKey',
  routing_key: 'routingKey',
  priority: 'priority',
  countdown: 'countdown',
  expires: 'expires',
  headers: 'headers',
  ignoreResult: 'ignoreResult',
  ignore_result: 'ignoreResult',
  timeLimit: 'timeLimit',
  time_limit: 'timeLimit',
  softTimeLimit: 'softTimeLimit',
  soft_time_limit: 'softTimeLimit',
  compression: 'compression',
};

const ENTRY_KEYS = new Set(['task', 'schedule', 'args', 'kwargs', 'options', 'relative']);

/**
 * A `beat_schedule` entry as Celery's config writes it: `{ task, schedule, args, kwargs, options }`,
 * `schedule` in seconds, as crontab fields `{ minute, hour, day_of_week, day_of_month, month_of_year }`
 * (both day fields must match, as Celery's crontab), or a cron string.
 */
export function resolveBeatEntry(name: string, raw: unknown, where: string, timezone: string): PeriodicEntry {
  if (!name) throw new PeriodicEntryError(where, 'a schedule name must not be empty');
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new PeriodicEntryError(where, 'must be an object { task, schedule, args, kwargs, options }');
  const e = raw as Record<string, unknown>;
  for (const key of Object.keys(e)) {
    if (!ENTRY_KEYS.has(key)) throw new PeriodicEntryError(`${where}.${key}`, 'unknown option (use task, schedule, args, kwargs, options)');
  }
  if (typeof e.task !== 'string' || !e.task) throw new PeriodicEntryError(`${where}.task`, 'is required: the name of the task to send');
  if (e.relative !== undefined && e.relative !== false) {
    throw new PeriodicEntryError(`${where}.relative`, 'is not supported: ticks are aligned to the clock so that every replica computes the same ones');
  }
  return {
    name,
    task: e.task,
    timing: resolveTiming(e.schedule, `${where}.schedule`, timezone),
    ...resolveCall({ args: e.args, kwargs: e.kwargs, options: e.options }, where),
  };
}

/** `schedule`: seconds, crontab fields, or a cron string. */
function resolveTiming(value: unknown, key: string, timezone: string): PeriodicTiming {
  if (typeof value === 'number') {
    const everyMs = parseEvery(value);
    if (everyMs === null || everyMs < 1000) throw new PeriodicEntryError(key, `must be at least 1 second, got ${value}`);
    return checkTiming({ everyMs }, key);
  }
  if (typeof value === 'string') return checkTiming({ cron: value.trim(), timezone, dayOfMonthAndWeek: false }, key);
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const fields = value as Record<string, unknown>;
    for (const [field, v] of Object.entries(fields)) {
      if (!(CRONTAB_FIELDS as readonly string[]).includes(field)) throw new PeriodicEntryError(`${key}.${field}`, `unknown crontab field (use ${CRONTAB_FIELDS.join(', ')})`);
      if (typeof v !== 'string' && typeof v !== 'number') throw new PeriodicEntryError(`${key}.${field}`, `must be a string or a number, got ${JSON.stringify(v)}`);
    }
    return checkTiming({ cron: crontabExpression(fields as CrontabFields), timezone, dayOfMonthAndWeek: true }, key);
  }
  throw new PeriodicEntryError(key, `must be seconds, crontab fields { minute, hour, day_of_week, day_of_month, month_of_year } or a cron string, got ${JSON.stringify(value)}`);
}

/** `@Periodic()` timing: `every` ('30s', seconds) or `cron` with an optional `timezone`. */
export function resolveDecoratorTiming(options: { every?: string | number; cron?: string; timezone?: string }, key: string, defaultTimezone: string): PeriodicTiming {
  if ((options.every === undefined) === (options.cron === undefined)) throw new PeriodicEntryError(key, 'give exactly one of every and cron');
  if (options.every !== undefined) {
    if (options.timezone !== undefined) throw new PeriodicEntryError(`${key}.timezone`, 'applies to cron only (intervals are aligned to UTC)');
    const everyMs = typeof options.every === 'string' || typeof options.every === 'number' ? parseEvery(options.every) : null;
    if (everyMs === null || everyMs < 1000) throw new PeriodicEntryError(`${key}.every`, `must be at least 1 second ('30s', '5m', '1h', '1d', or seconds), got ${JSON.stringify(options.every)}`);
    return checkTiming({ everyMs }, `${key}.every`);
  }
  if (typeof options.cron !== 'string') throw new PeriodicEntryError(`${key}.cron`, 'must be a cron expression string');
  if (options.timezone !== undefined && typeof options.timezone !== 'string') throw new PeriodicEntryError(`${key}.timezone`, 'must be an IANA time zone name');
  return checkTiming({ cron: options.cron.trim(), timezone: options.timezone ?? defaultTimezone, dayOfMonthAndWeek: false }, `${key}.cron`);
}

/** args, kwargs and send options of an entry, checked. */
export function resolveCall(call: { args?: unknown; kwargs?: unknown; options?: unknown }, where: string): Pick<PeriodicEntry, 'args' | 'kwargs' | 'options'> {
  if (call.args !== undefined && call.args !== null && !Array.isArray(call.args)) throw new PeriodicEntryError(`${where}.args`, 'must be a list');
  if (call.kwargs !== undefined && call.kwargs !== null && (typeof call.kwargs !== 'object' || Array.isArray(call.kwargs))) throw new PeriodicEntryError(`${where}.kwargs`, 'must be an object');
  if (call.options !== undefined && call.options !== null && (typeof call.options !== 'object' || Array.isArray(call.options))) throw new PeriodicEntryError(`${where}.options`, 'must be an object');
  const options: Record<string, unknown> = {};
  for (const [key, value] of Object.entries((call.options ?? {}) as Record<string, unknown>)) {
    const target = OPTION_KEYS[key];
    if (!target) throw new PeriodicEntryError(`${where}.options.${key}`, `unknown send option (use ${[...new Set(Object.values(OPTION_KEYS))].join(', ')})`);
    if (value === undefined || value === null) continue;
    if ((target === 'expires' || target === 'countdown' || target === 'timeLimit' || target === 'softTimeLimit') && (typeof value !== 'number' || !Number.isFinite(value) || value < 0)) {
      throw new PeriodicEntryError(`${where}.options.${key}`, `must be a number of seconds, got ${JSON.stringify(value)}`);
    }
    if (target === 'priority' && (!Number.isInteger(value) || (value as number) < 0 || (value as number) > 255)) throw new PeriodicEntryError(`${where}.options.${key}`, `must be an integer 0-255, got ${JSON.stringify(value)}`);
    options[target] = value;
  }
  return { args: [...((call.args as unknown[] | undefined) ?? [])], kwargs: { ...((call.kwargs as Record<string, unknown> | undefined) ?? {}) }, options: options as PeriodicSendOptions };
}

function crontabExpression(fields: CrontabFields): string {
  return CRONTAB_FIELDS.map((key) => String(fields[key] ?? '*').replace(/\s+/g, '')).join(' ');
}

/** Builds the schedule once, so a bad cron expression or time zone fails with the key named. */
function checkTiming(timing: PeriodicTiming, key: string): PeriodicTiming {
  try {
    tickScheduleOf(timing);
  } catch (err) {
    throw new PeriodicEntryError(key, (err as Error).message);
  }
  return timing;
}

export function tickScheduleOf(timing: PeriodicTiming): TickSchedule {
  return 'everyMs' in timing ? new IntervalSchedule(timing.everyMs) : new CronSchedule(timing.cron, timing.timezone, timing.dayOfMonthAndWeek);
}
