import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { saferepr } from '../../../lib/protocol/saferepr';
import { CaptureFile, loadVector } from '../../support/vectors';

/** Expected outputs were produced by Celery 5.7.0's own saferepr (the interop suite re-checks them live). */
const fixture = JSON.parse(readFileSync(join(__dirname, '..', '..', 'fixtures', 'saferepr-celery-5.7.json'), 'utf8')) as {
  cases: { value: unknown; saferepr: string }[];
};

describe("saferepr (Celery's argsrepr / kwargsrepr)", () => {
  it.each(fixture.cases.map((c, i) => [i, c] as const))('matches Celery 5.7 on case %i', (_i, c) => {
    expect(saferepr(c.value, 1024)).toBe(c.saferepr);
  });

  it('gives the argsrepr of the captured 5.6.3 and 5.2.6 plain messages', () => {
    for (const file of ['capture_new.json', 'capture_old.json']) {
      const plain = loadVector<CaptureFile>(file).messages[0];
      const [args, kwargs] = JSON.parse(plain.body);
      expect(saferepr(args)).toBe(plain.headers.argsrepr);
      expect(saferepr(kwargs)).toBe(plain.headers.kwargsrepr);
    }
  });

  it("quotes every string in single quotes, escaping only '", () => {
    expect(saferepr(["it's", 'say "hi"', 'a\nb'])).toBe("['it\\'s', 'say \"hi\"', 'a\nb']");
  });

  it('shows three levels of containers and elides deeper ones', () => {
    expect(saferepr([[[[['deep']]]]])).toBe('[[[[...]]]]');
  });

  it('writes Python scalars: True, False, None, float repr', () => {
    expect(saferepr([true, false, null, 1.5, 1e-5, 1e16])).toBe('[True, False, None, 1.5, 1e-05, 1e+16]');
  });
});
