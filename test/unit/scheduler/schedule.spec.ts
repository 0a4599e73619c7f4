import { CronSchedule, IntervalSchedule, parseEvery, tickTaskId } from '../../../lib/scheduler/schedule';
import { resolveBeatEntry, resolveDecoratorTiming, tickScheduleOf } from '../../../lib/scheduler/periodic-entry';

const at = (iso: string) => Date.parse(iso);
const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

describe('tick times (what every replica computes alike)', () => {
  it('an interval ticks at whole multiples of itself since the epoch, whenever the replica started', () => {
    const s = new IntervalSchedule(30000);
    expect(iso(s.latestAtOrBefore(at('2026-05-01T10:00:29.999Z')))).toBe('2026-05-01T10:00:00.000Z');
    expect(iso(s.latestAtOrBefore(at('2026-05-01T10:00:30.000Z')))).toBe('2026-05-01T10:00:30.000Z');
    expect(iso(s.nextAfter(at('2026-05-01T10:00:30.000Z')))).toBe('2026-05-01T10:01:00.000Z');
    expect(iso(s.nextAfter(at('2026-05-01T10:00:12.345Z')))).toBe('2026-05-01T10:00:30.000Z');
    expect(() => new IntervalSchedule(999)).toThrow(/>= 1000/);
  });

  it('a cron expression ticks in its time zone, across a daylight-saving change (croner)', () => {
    const s = new CronSchedule('0 9 * * *', 'Europe/Paris');
    // 09:00 Paris is 08:00Z in winter, 07:00Z in summer; DST began 2026-03-29
    expect(iso(s.nextAfter(at('2026-03-28T12:00:00Z')))).toBe('2026-03-29T07:00:00.000Z');
    expect(iso(s.nextAfter(at('2026-03-27T12:00:00Z')))).toBe('2026-03-28T08:00:00.000Z');
    expect(iso(s.latestAtOrBefore(at('2026-03-29T07:00:00Z')))).toBe('2026-03-29T07:00:00.000Z');
    expect(iso(s.latestAtOrBefore(at('2026-03-29T06:59:59Z')))).toBe('2026-03-28T08:00:00.000Z');
    expect(iso(new CronSchedule('*/5 * * * *', 'UTC').latestAtOrBefore(at('2026-01-01T00:07:30.500Z')))).toBe('2026-01-01T00:05:00.000Z');
    expect(iso(new CronSchedule('*/2 * * * * *', 'UTC').nextAfter(at('2026-01-01T00:00:00Z')))).toBe('2026-01-01T00:00:02.000Z');
  });

  it('reads every as a duration or seconds', () => {
    expect([parseEvery('30s'), parseEvery('5m'), parseEvery('1h'), parseEvery('1d'), parseEvery('1500ms'), parseEvery(2.5), parseEvery('10')]).toEqual([30000, 300000, 3600000, 86400000, 1500, 2500, 10000]);
    expect(parseEvery('every minute')).toBeNull();
    expect(parseEvery(-1)).toBeNull();
  });

  it('gives one tick of one schedule the same task id everywhere (a UUID, version 5 layout)', () => {
    const id = tickTaskId('add-every-30s', at('2026-05-01T10:00:30Z'));
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(tickTaskId('add-every-30s', at('2026-05-01T10:00:30Z'))).toBe(id);
    expect(tickTaskId('add-every-30s', at('2026-05-01T10:01:00Z'))).not.toBe(id);
    expect(tickTaskId('other', at('2026-05-01T10:00:30Z'))).not.toBe(id);
  });
});

describe("Celery's beat_schedule entries, as written", () => {
  it('takes seconds, crontab fields (both day fields must match, as Celery) and send options in snake_case', () => {
    const entry = resolveBeatEntry(
      'weekly',
      { task: 'reports.weekly', schedule: { minute: 0, hour: '7', day_of_week: 'mon', day_of_month: '1-7' }, args: [1], kwargs: { a: 2 }, options: { queue: 'reports', expires: 60, routing_key: 'r', ignore_result: true } },
      'beat_schedule.weekly',
      'Europe/Paris',
    );
    expect(entry).toEqual({
      name: 'weekly',
      task: 'reports.weekly',
      timing: { cron: '0 7 1-7 * mon', timezone: 'Europe/Paris', dayOfMonthAndWeek: true },
      args: [1],
      kwargs: { a: 2 },
      options: { queue: 'reports', expires: 60, routingKey: 'r', ignoreResult: true },
    });
    // the first Monday of the month only (2026-06-01, then 2026-07-06); cron's OR rule would fire on days 1-7 and every Monday
    const s = tickScheduleOf(entry.timing);
    expect(iso(s.nextAfter(at('2026-05-20T00:00:00Z')))).toBe('2026-06-01T05:00:00.000Z');
    expect(iso(s.nextAfter(at('2026-06-01T06:00:00Z')))).toBe('2026-07-06T05:00:00.000Z');
    expect(resolveBeatEntry('fast', { task: 't', schedule: 1.5 }, 'x', 'UTC').timing).toEqual({ everyMs: 1500 });
  });

  it('names the key of what is wrong', () => {
    expect(() => resolveBeatEntry('a', { task: 't', schedule: 10, option: {} }, 'beat_schedule.a', 'UTC')).toThrow('beat_schedule.a.option: unknown option');
    expect(() => resolveBeatEntry('a', { schedule: 10 }, 'beat_schedule.a', 'UTC')).toThrow('beat_schedule.a.task: is required');
    expect(() => resolveBeatEntry('a', { task: 't', schedule: 0.5 }, 'beat_schedule.a', 'UTC')).toThrow('beat_schedule.a.schedule: must be at least 1 second');
    expect(() => resolveBeatEntry('a', { task: 't', schedule: { minutes: '*' } }, 'beat_schedule.a', 'UTC')).toThrow('beat_schedule.a.schedule.minutes: unknown crontab field');
    expect(() => resolveBeatEntry('a', { task: 't', schedule: '61 * * * *' }, 'beat_schedule.a', 'UTC')).toThrow(/beat_schedule\.a\.schedule: .*/);
    expect(() => resolveBeatEntry('a', { task: 't', schedule: 10, options: { queeu: 'q' } }, 'beat_schedule.a', 'UTC')).toThrow('beat_schedule.a.options.queeu: unknown send option');
    expect(() => resolveBeatEntry('a', { task: 't', schedule: 10, relative: true }, 'beat_schedule.a', 'UTC')).toThrow('beat_schedule.a.relative: is not supported');
    expect(() => resolveDecoratorTiming({ cron: '* * * * *', timezone: 'Mars/Olympus' }, 'p', 'UTC')).toThrow(/p\.cron: .*Mars\/Olympus/);
    expect(() => resolveDecoratorTiming({ every: '30s', cron: '* * * * *' }, 'p', 'UTC')).toThrow('p: give exactly one of every and cron');
    expect(() => resolveDecoratorTiming({ every: 'often' }, 'p', 'UTC')).toThrow("p.every: must be at least 1 second ('30s'");
  });
});
