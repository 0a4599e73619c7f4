import { pythonFloatRepr, pythonJsonDumps, quoteAscii } from '../../../lib/protocol/python-json';
import { CaptureFile, loadVector } from '../../support/vectors';

// Every expected string below is what CPython 3.11 `json.dumps(value)` prints for the
// corresponding Python value (wire spec §1.5: kombu uses json.dumps with default arguments).

describe('pythonJsonDumps: separators and structure', () => {
  it('separates array items with ", " and object members with ", " and ": "', () => {
    expect(pythonJsonDumps([1, 'a', true])).toBe('[1, "a", true]');
    expect(pythonJsonDumps({ a: 1, b: 'x' })).toBe('{"a": 1, "b": "x"}');
  });

  it('writes empty containers without inner whitespace and no trailing newline', () => {
    expect(pythonJsonDumps([])).toBe('[]');
    expect(pythonJsonDumps({})).toBe('{}');
    expect(pythonJsonDumps([[]])).toBe('[[]]');
    expect(pythonJsonDumps({ '': '' })).toBe('{"": ""}');
  });

  it('formats nested arrays and objects like json.dumps({"a": [1, {"b": None}], "c": True})', () => {
    expect(pythonJsonDumps({ a: [1, { b: null }], c: true })).toBe('{"a": [1, {"b": null}], "c": true}');
  });

  it('keeps object keys in insertion order (Python dicts are ordered, sort_keys=False)', () => {
    expect(pythonJsonDumps({ zeta: 1, alpha: 2, mid: 3 })).toBe('{"zeta": 1, "alpha": 2, "mid": 3}');
  });

  it('writes null, true and false as JSON literals', () => {
    expect(pythonJsonDumps(null)).toBe('null');
    expect(pythonJsonDumps(true)).toBe('true');
    expect(pythonJsonDumps(false)).toBe('false');
  });

  it('skips object members whose value is undefined, a function or a symbol (like JSON.stringify)', () => {
    expect(pythonJsonDumps({ a: undefined, b: 1, c: () => 1, d: Symbol('s'), e: 2 })).toBe('{"b": 1, "e": 2}');
  });

  it('writes undefined array items as null (like JSON.stringify)', () => {
    expect(pythonJsonDumps([undefined, 1])).toBe('[null, 1]');
  });

  it('uses toJSON() when an object has one', () => {
    expect(pythonJsonDumps({ toJSON: () => ({ x: [1] }) })).toBe('{"x": [1]}');
  });

  it('throws its own "nested too deeply" RangeError instead of overflowing the stack on a circular structure', () => {
    const loop: unknown[] = [];
    loop.push(loop);
    expect(() => pythonJsonDumps(loop)).toThrow(new RangeError('value is nested too deeply to encode as JSON'));
  });

  it('encodes nesting well within the limit', () => {
    let deep: unknown = 1;
    for (let i = 0; i < 500; i++) deep = [deep];
    expect(pythonJsonDumps(deep)).toBe('['.repeat(500) + '1' + ']'.repeat(500));
  });

  it('reproduces the captured Celery 5.6.3 task bodies byte for byte', () => {
    const capture = loadVector<CaptureFile>('capture_new.json');
    for (const m of capture.messages) {
      expect(pythonJsonDumps(JSON.parse(m.body))).toBe(m.body);
    }
  });
});

describe('pythonJsonDumps: strings (ensure_ascii=True)', () => {
  it('leaves printable ASCII unescaped, including "/"', () => {
    expect(pythonJsonDumps('storage yay / ~')).toBe('"storage yay / ~"');
  });

  it('escapes quote and backslash', () => {
    expect(pythonJsonDumps('a"b\\c')).toBe('"a\\"b\\\\c"');
  });

  it('uses the short escapes \\n \\r \\t \\b \\f', () => {
    expect(pythonJsonDumps('\n\r\t\b\f')).toBe('"\\n\\r\\t\\b\\f"');
  });

  it('writes other control characters as lowercase \\u00XX', () => {
    expect(pythonJsonDumps('\x00\x01\x1f')).toBe('"\\u0000\\u0001\\u001f"');
  });

  it('escapes DEL (0x7f), which is outside 0x20-0x7e', () => {
    expect(pythonJsonDumps('\x7f')).toBe('"\\u007f"');
  });

  it('escapes non-ASCII BMP characters as \\uXXXX', () => {
    expect(pythonJsonDumps('é')).toBe('"\\u00e9"');
    expect(pythonJsonDumps('中文')).toBe('"\\u4e2d\\u6587"');
    expect(pythonJsonDumps('\u2028')).toBe('"\\u2028"');
  });

  it('escapes astral characters as a surrogate pair', () => {
    expect(pythonJsonDumps('😀')).toBe('"\\ud83d\\ude00"');
  });

  it('escapes a lone surrogate as Python does for "\\ud800"', () => {
    expect(pythonJsonDumps('\ud800')).toBe('"\\ud800"');
  });

  it('escapes non-ASCII object keys too', () => {
    expect(pythonJsonDumps({ 'clé': 'ü' })).toBe('{"cl\\u00e9": "\\u00fc"}');
  });

  it('produces text that JSON.parse reads back to the original string', () => {
    const text = 'mixed é 😀 "q" \\ \x7f \n end';
    expect(JSON.parse(pythonJsonDumps(text))).toBe(text);
  });

  it('quoteAscii returns pure ASCII output', () => {
    expect(quoteAscii('naïve 🚀 \u0000')).toMatch(/^[\x20-\x7e]*$/);
  });
});

describe('pythonJsonDumps: numbers (Python float repr)', () => {
  it.each([
    [1e-5, '1e-05'],
    [1e16, '1e+16'],
    [0.0001, '0.0001'],
    [1.5, '1.5'],
    [0.1, '0.1'],
    [0.1 + 0.2, '0.30000000000000004'],
    [-1.5e-7, '-1.5e-07'],
    [9.999e-5, '9.999e-05'],
    [12345.678, '12345.678'],
    [123456789012345.6, '123456789012345.6'],
    [2.5e20, '2.5e+20'],
    [1e21, '1e+21'],
    [1e22, '1e+22'],
    [1.7976931348623157e308, '1.7976931348623157e+308'],
    [5e-324, '5e-324'],
  ])('writes the float %p as %s', (value, expected) => {
    expect(pythonJsonDumps(value)).toBe(expected);
  });

  it('writes -0 as -0.0, as json.dumps(-0.0) does', () => {
    expect(pythonJsonDumps(-0)).toBe('-0.0');
  });

  it('writes integral JS numbers below 1e16 as Python ints (no ".0")', () => {
    expect(pythonJsonDumps(0)).toBe('0');
    expect(pythonJsonDumps(100)).toBe('100');
    expect(pythonJsonDumps(-42)).toBe('-42');
    expect(pythonJsonDumps(9007199254740991)).toBe('9007199254740991');
  });

  it('writes bigint values with all their digits', () => {
    expect(pythonJsonDumps(10n ** 30n)).toBe('1000000000000000000000000000000');
    expect(pythonJsonDumps(2n ** 53n + 1n)).toBe('9007199254740993');
    expect(pythonJsonDumps([-(2n ** 64n)])).toBe('[-18446744073709551616]');
  });

  it('writes NaN, Infinity and -Infinity as the bare tokens Python emits', () => {
    expect(pythonJsonDumps([NaN, Infinity, -Infinity])).toBe('[NaN, Infinity, -Infinity]');
  });
});

describe('pythonFloatRepr in repr mode', () => {
  it('spells non-finite values nan, inf, -inf like repr(float)', () => {
    expect(pythonFloatRepr(NaN, 'repr')).toBe('nan');
    expect(pythonFloatRepr(Infinity, 'repr')).toBe('inf');
    expect(pythonFloatRepr(-Infinity, 'repr')).toBe('-inf');
  });

  it('uses the same digits as JSON mode for finite values', () => {
    for (const v of [1e-5, 1e16, 0.0001, 1.5, -0, 3]) {
      expect(pythonFloatRepr(v, 'repr')).toBe(pythonFloatRepr(v, 'json'));
    }
  });
});
