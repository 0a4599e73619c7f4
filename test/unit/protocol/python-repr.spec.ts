import { pythonRepr, pythonStrRepr } from '../../../lib/protocol/python-repr';
import { CaptureFile, loadVector } from '../../support/vectors';

// Expected strings are CPython 3.11 `repr(value)` output for the corresponding Python value.

describe('pythonStrRepr: quote choice', () => {
  it('uses single quotes by default', () => {
    expect(pythonStrRepr('storage yay')).toBe("'storage yay'");
    expect(pythonStrRepr('')).toBe("''");
  });

  it('switches to double quotes when the text has a single quote and no double quote', () => {
    expect(pythonStrRepr("it's")).toBe('"it\'s"');
    expect(pythonStrRepr("'")).toBe('"\'"');
  });

  it('keeps single quotes when the text has only double quotes, leaving them unescaped', () => {
    expect(pythonStrRepr('say "hi"')).toBe('\'say "hi"\'');
    expect(pythonStrRepr('"')).toBe("'\"'");
  });

  it("keeps single quotes and escapes ' when the text has both kinds of quote", () => {
    expect(pythonStrRepr('both \' and "')).toBe("'both \\' and \"'");
    expect(pythonStrRepr('\'"')).toBe("'\\'\"'");
  });
});

describe('pythonStrRepr: escapes', () => {
  it('doubles backslashes', () => {
    expect(pythonStrRepr('back\\slash')).toBe("'back\\\\slash'");
  });

  it('writes newline, tab and carriage return as \\n \\t \\r', () => {
    expect(pythonStrRepr('a\nb\tc\rd')).toBe("'a\\nb\\tc\\rd'");
  });

  it('writes other C0 controls, DEL and C1 controls as \\xNN', () => {
    expect(pythonStrRepr('\x00\x07\x1f\x7f\x80\x9f')).toBe("'\\x00\\x07\\x1f\\x7f\\x80\\x9f'");
  });

  it('writes non-printable Latin-1 characters (NBSP, soft hyphen) as \\xNN', () => {
    expect(pythonStrRepr('\xa0\xad')).toBe("'\\xa0\\xad'");
  });

  it('writes non-printable BMP characters as \\uXXXX', () => {
    expect(pythonStrRepr('\u2028\u2029')).toBe("'\\u2028\\u2029'");
    expect(pythonStrRepr('\u200b')).toBe("'\\u200b'");
    expect(pythonStrRepr('\ufeff')).toBe("'\\ufeff'");
    expect(pythonStrRepr('\u3000')).toBe("'\\u3000'");
  });

  it('writes non-printable astral characters as \\UXXXXXXXX', () => {
    expect(pythonStrRepr('\u{e0001}')).toBe("'\\U000e0001'");
    expect(pythonStrRepr('\u{10ffff}')).toBe("'\\U0010ffff'");
  });

  it('writes a lone surrogate as \\udXXX', () => {
    expect(pythonStrRepr('\ud800')).toBe("'\\ud800'");
  });

  it('keeps a plain space unescaped although it is in category Zs', () => {
    expect(pythonStrRepr(' ')).toBe("' '");
  });

  it('keeps printable non-ASCII text, including astral emoji, as is', () => {
    expect(pythonStrRepr('é中文😀')).toBe("'é中文😀'");
  });
});

describe('pythonRepr: values and containers', () => {
  it('writes booleans as True / False and null / undefined as None', () => {
    expect(pythonRepr([null, true, false, undefined])).toBe('[None, True, False, None]');
  });

  it('writes numbers with Python float repr, non-finite as nan / inf', () => {
    expect(pythonRepr([1, 1.5, -0, 1e-5, 1e16, NaN, Infinity, -Infinity])).toBe(
      '[1, 1.5, -0.0, 1e-05, 1e+16, nan, inf, -inf]',
    );
  });

  it('writes bigint values with all their digits', () => {
    expect(pythonRepr(10n ** 30n)).toBe('1000000000000000000000000000000');
  });

  it('writes a list as [a, b] with ", " separators', () => {
    expect(pythonRepr(['storage yay', false])).toBe("['storage yay', False]");
    expect(pythonRepr([])).toBe('[]');
    expect(pythonRepr([[]])).toBe('[[]]');
  });

  it("writes a dict as {'k': v} with quoted keys in insertion order", () => {
    expect(pythonRepr({ capitalize: true })).toBe("{'capitalize': True}");
    expect(pythonRepr({ capitalize: true, n: null, f: 1.5, l: [1, 'two', false] })).toBe(
      "{'capitalize': True, 'n': None, 'f': 1.5, 'l': [1, 'two', False]}",
    );
    expect(pythonRepr({})).toBe('{}');
  });

  it('nests lists and dicts', () => {
    expect(pythonRepr({ a: { b: [1, 'x'] } })).toBe("{'a': {'b': [1, 'x']}}");
  });

  it('applies the string quoting rules to nested strings and keys', () => {
    expect(pythonRepr({ "it's": ['say "hi"', 'a\nb'] })).toBe('{"it\'s": [\'say "hi"\', \'a\\nb\']}');
  });

  it('gives the argsrepr / kwargsrepr of the captured 5.6.3 plain message', () => {
    const plain = loadVector<CaptureFile>('capture_new.json').messages.find((m) => m.label === 'plain');
    if (!plain) throw new Error('vector "plain" missing');
    const [args, kwargs] = JSON.parse(plain.body) as [unknown[], Record<string, unknown>];
    expect(pythonRepr(args)).toBe(plain.headers.argsrepr);
    expect(pythonRepr(kwargs)).toBe(plain.headers.kwargsrepr);
  });
});

describe('pythonRepr: truncation (Celery argsrepr_maxsize = 1024)', () => {
  it('keeps a repr of exactly 1024 characters whole', () => {
    const value = ['a'.repeat(1020)]; // ['…'] = 1020 + 4
    const text = pythonRepr(value);
    expect(text).toHaveLength(1024);
    expect(text.endsWith("']")).toBe(true);
  });

  it('cuts a longer repr to 1024 characters ending in "..."', () => {
    const full = `['${'x'.repeat(2000)}']`;
    const text = pythonRepr(['x'.repeat(2000)]);
    expect(text).toHaveLength(1024);
    expect(text.endsWith('...')).toBe(true);
    expect(text.slice(0, 1021)).toBe(full.slice(0, 1021));
  });

  it('honours a custom maximum length', () => {
    expect(pythonRepr(['abcdefghij'], 10)).toBe("['abcde...");
    expect(pythonRepr(['abc'], 10)).toBe("['abc']");
  });
});
