import { InvalidRateLimitError } from '../../../lib/errors/celery.errors';
import { parseRate } from '../../../lib/protocol/rate';
import vectors from '../../fixtures/celery-rate-5.7.json';

interface Vector {
  input: string | number | null;
  celery?: number | string;
  celeryRaises?: string;
}

const all = (vectors as { vectors: Vector[] }).vectors;

describe('parseRate reads rate limits as celery.utils.time.rate (vectors captured from Celery 5.7)', () => {
  const read = all.filter((v) => typeof v.celery === 'number' && v.celery >= 0);
  const refused = all.filter((v) => v.celeryRaises);
  const misbehaving = all.filter((v) => typeof v.celery === 'string' || (typeof v.celery === 'number' && v.celery < 0));

  it.each(read.map((v) => [JSON.stringify(v.input), v] as const))('%s gives the same tasks per second as Celery', (_label, v) => {
    expect(parseRate(v.input)).toBe(v.celery);
  });

  it.each(refused.map((v) => [JSON.stringify(v.input), v.celeryRaises, v] as const))('%s is refused, as Celery raises %s', (_label, _raises, v) => {
    expect(() => parseRate(v.input)).toThrow(InvalidRateLimitError);
  });

  it.each(misbehaving.map((v) => [JSON.stringify(v.input), String(v.celery), v] as const))(
    '%s is refused here, where Celery accepts %s (a negative, NaN or infinite rate)',
    (_label, _celery, v) => {
      expect(() => parseRate(v.input)).toThrow(InvalidRateLimitError);
    },
  );

  it('covers each kind of vector', () => {
    expect(read.length).toBeGreaterThan(10);
    expect(refused.length).toBeGreaterThan(5);
    expect(misbehaving.length).toBe(4);
  });

  it('reads undefined as no limit, and refuses other types', () => {
    expect(parseRate(undefined)).toBe(0);
    expect(() => parseRate(true)).toThrow(/must be a string or a number, got boolean/);
    expect(() => parseRate({ global: '1/s' })).toThrow(InvalidRateLimitError);
  });

  it('names the value, the task and what is wrong', () => {
    expect(() => parseRate('10/d', 'tasks.add')).toThrow(
      `Invalid rate limit "10/d" for task "tasks.add": unknown unit "d" (Celery knows s, m and h) (use '10/s', '100/m', '2/h', a number of tasks per second, or 0 / null for no limit)`,
    );
    expect(() => parseRate('ten/s', 'tasks.add')).toThrow(/"ten" is not a number/);
    expect(() => parseRate(-1, 'tasks.add')).toThrow(/Invalid rate limit -1 for task "tasks.add": must not be negative/);
  });
});
