import { CeleryOptionsInput, normalizeCeleryOptions } from '../../../lib';

describe('chords options (how chords complete)', () => {
  it('defaults to chord_unlock; takes counter, a table and a serial consistency; names a bad key or value', () => {
    expect(normalizeCeleryOptions({}).chords).toEqual({ completion: 'unlock', table: 'celery_chords', serialConsistency: 'SERIAL' });
    expect(normalizeCeleryOptions({ chords: { completion: 'counter', table: 'my_chords', serialConsistency: 'LOCAL_SERIAL' } }).chords).toEqual({
      completion: 'counter',
      table: 'my_chords',
      serialConsistency: 'LOCAL_SERIAL',
    });
    expect(() => normalizeCeleryOptions({ chords: { completon: 'counter' } } as unknown as CeleryOptionsInput)).toThrow(/chords\.completon: unknown option/);
    expect(() => normalizeCeleryOptions({ chords: { completion: 'poll' as 'unlock' } })).toThrow(/chords\.completion: must be 'unlock' or 'counter', got "poll"/);
    expect(() => normalizeCeleryOptions({ chords: { table: 'a-b' } })).toThrow(/chords\.table: not a valid table name: "a-b"/);
    expect(() => normalizeCeleryOptions({ chords: { serialConsistency: 'QUORUM' as 'SERIAL' } })).toThrow(/chords\.serialConsistency: must be SERIAL or LOCAL_SERIAL/);
    expect(() => normalizeCeleryOptions({ chords: 'counter' } as unknown as CeleryOptionsInput)).toThrow(/chords: must be an object/);
  });
});
