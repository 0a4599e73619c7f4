import * as path from 'node:path';
import { fromAmqpFieldValue, toAmqpFieldTable, toAmqpFieldValue } from '../../../lib/protocol/amqp-field-table';
import { encodeTaskMessage } from '../../../lib/protocol/task-message';
import { CAPTURE_NOW_MICROS, CAPTURE_ORIGIN } from '../../support/vectors';

// amqplib's field-table codec (its package exports hide lib/, so it is loaded by path).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const codec: {
  encodeTable(buffer: Buffer, value: unknown, offset: number): number;
  decodeFields(slice: Buffer): Record<string, unknown>;
} = require(path.join(__dirname, '../../../node_modules/amqplib/lib/codec.js'));

function encodeWithAmqplib(table: unknown): Buffer {
  const buffer = Buffer.alloc(64 * 1024);
  const size = codec.encodeTable(buffer, table, 0);
  return buffer.subarray(0, size);
}

/** Type tags of every value in an encoded table, depth first (keys are skipped). */
function tagsOf(encoded: Buffer): string[] {
  const tags: string[] = [];
  let offset = 0;
  const value = (): void => {
    const tag = String.fromCharCode(encoded[offset++]);
    tags.push(tag);
    switch (tag) {
      case 'S': offset += 4 + encoded.readUInt32BE(offset); break;
      case 'I': offset += 4; break;
      case 'l': case 'L': case 'd': offset += 8; break;
      case 't': case 'b': offset += 1; break;
      case 's': offset += 2; break;
      case 'V': break;
      case 'A': { const end = offset + 4 + encoded.readUInt32BE(offset); offset += 4; while (offset < end) value(); break; }
      case 'F': { const end = offset + 4 + encoded.readUInt32BE(offset); offset += 4; while (offset < end) { offset += 1 + encoded[offset]; value(); } break; }
      default: throw new Error(`unexpected tag ${tag} at ${offset - 1}`);
    }
  };
  const end = 4 + encoded.readUInt32BE(0);
  offset = 4;
  while (offset < end) { offset += 1 + encoded[offset]; value(); }
  return tags;
}

describe('toAmqpFieldValue: integers are always typed', () => {
  it.each([0, 1, -1, 127, 128, 200, 255, 300, 32767, 32768, -32768, -32769, 65535, 2147483647, -2147483647, -2147483648])(
    'types %p as int32 ({"!": "int"})',
    (n) => {
      expect(toAmqpFieldValue(n)).toEqual({ '!': 'int', value: n });
    },
  );

  it.each([2147483648, 2 ** 40, Number.MAX_SAFE_INTEGER, 2 ** 62])('types %p, above int32, as long', (n) => {
    expect(toAmqpFieldValue(n)).toEqual({ '!': 'long', value: n });
  });

  it('types a bigint within int32, its minimum included, as int with a plain number value', () => {
    expect(toAmqpFieldValue(300n)).toEqual({ '!': 'int', value: 300 });
    expect(toAmqpFieldValue(-2147483647n)).toEqual({ '!': 'int', value: -2147483647 });
    expect(toAmqpFieldValue(-2147483648n)).toEqual({ '!': 'int', value: -2147483648 });
  });

  it('types a bigint above int32 as long and keeps it a bigint, up to 2^63-1', () => {
    expect(toAmqpFieldValue(2n ** 40n)).toEqual({ '!': 'long', value: 2n ** 40n });
    expect(toAmqpFieldValue(2n ** 63n - 1n)).toEqual({ '!': 'long', value: 2n ** 63n - 1n });
  });

  // py-amqp reads tag l as unsigned (wire spec §1.4) and amqplib cannot write L: -2147483649 sent as l
  // would reach Python as 18446744071562067967. Refuse instead of changing the number.
  it.each([-2147483649, -(2 ** 40), Number.MIN_SAFE_INTEGER, -2147483649n, -(2n ** 63n)])(
    'refuses %p, below int32, with a RangeError naming the value and §1.4',
    (n) => {
      expect(() => toAmqpFieldValue(n)).toThrow(RangeError);
      expect(() => toAmqpFieldValue(n)).toThrow(/cannot be sent.*py-amqp reads as unsigned \(wire spec §1\.4\)/);
      expect(() => toAmqpFieldValue(n)).toThrow(String(n));
    },
  );

  it.each([2 ** 63, 2n ** 63n, 2n ** 64n])('refuses %p, beyond int64, with a RangeError', (n) => {
    expect(() => toAmqpFieldValue(n)).toThrow(/does not fit in 64 bits/);
  });

  it('names the header (and its path inside arrays and tables) that cannot be sent', () => {
    expect(() => toAmqpFieldTable({ retries: 0, stamps: { deep: [1, -(2 ** 40)] } })).toThrow(/header stamps\.deep\[1\] = -1099511627776/);
    expect(() => toAmqpFieldTable({ offset: -(2 ** 33) })).toThrow(/header offset = -8589934592/);
  });

  it('types a non-integral number as double', () => {
    expect(toAmqpFieldValue(1.5)).toEqual({ '!': 'double', value: 1.5 });
    expect(toAmqpFieldValue(-0.25)).toEqual({ '!': 'double', value: -0.25 });
  });

  it('types a JS 300.0 (which is the integer 300) as int, not double', () => {
    expect(toAmqpFieldValue(300.0)).toEqual({ '!': 'int', value: 300 });
  });
});

describe('toAmqpFieldValue: other values', () => {
  it('passes strings and booleans through untyped', () => {
    expect(toAmqpFieldValue('py')).toBe('py');
    expect(toAmqpFieldValue('')).toBe('');
    expect(toAmqpFieldValue(true)).toBe(true);
    expect(toAmqpFieldValue(false)).toBe(false);
  });

  it('maps null and undefined to null (AMQP void)', () => {
    expect(toAmqpFieldValue(null)).toBeNull();
    expect(toAmqpFieldValue(undefined)).toBeNull();
  });

  it('types the integers inside arrays, e.g. timelimit [300, 240]', () => {
    expect(toAmqpFieldValue([300, 240])).toEqual([
      { '!': 'int', value: 300 },
      { '!': 'int', value: 240 },
    ]);
    expect(toAmqpFieldValue([null, null])).toEqual([null, null]);
  });

  it('types the integers inside nested objects and arrays', () => {
    expect(toAmqpFieldValue({ stamps: { a: [1, { b: 2.5, c: 'x' }], d: null, e: true } })).toEqual({
      stamps: { a: [{ '!': 'int', value: 1 }, { b: { '!': 'double', value: 2.5 }, c: 'x' }], d: null, e: true },
    });
  });
});

describe('toAmqpFieldTable', () => {
  it('drops keys whose value is undefined and keeps key order', () => {
    const table = toAmqpFieldTable({ lang: 'py', skipped: undefined, retries: 0, shadow: null });
    expect(Object.keys(table)).toEqual(['lang', 'retries', 'shadow']);
    expect(table).toEqual({ lang: 'py', retries: { '!': 'int', value: 0 }, shadow: null });
  });
});

describe('fromAmqpFieldValue', () => {
  it('round-trips a header table to the original plain values', () => {
    const headers = {
      lang: 'py',
      retries: 200,
      timelimit: [300, 240],
      group_index: null,
      ignore_result: false,
      big: 2 ** 40,
      ratio: 0.5,
      stamps: { nested: [1, 'a', { deep: -1 }] },
    };
    expect(fromAmqpFieldValue(toAmqpFieldTable(headers))).toEqual(headers);
  });

  it('turns a bigint long within the safe integer range back into a number', () => {
    expect(fromAmqpFieldValue({ '!': 'long', value: 2n ** 40n })).toBe(2 ** 40);
  });

  it('keeps a bigint long beyond the safe integer range a bigint', () => {
    expect(fromAmqpFieldValue({ '!': 'long', value: 2n ** 60n })).toBe(2n ** 60n);
  });

  it('passes strings, booleans and null through', () => {
    expect(fromAmqpFieldValue('x')).toBe('x');
    expect(fromAmqpFieldValue(true)).toBe(true);
    expect(fromAmqpFieldValue(null)).toBeNull();
  });
});

describe('bytes amqplib puts on the wire for typed values', () => {
  it('control: amqplib alone tags 200 as b and 300 as s (int16), which py-amqp misreads', () => {
    expect(tagsOf(encodeWithAmqplib({ retries: 200, timelimit: [300, 240] }))).toEqual(['s', 'A', 's', 's']);
  });

  it('encodes retries: 200 and timelimit: [300, 240] with tag I (0x49) only, never s or b', () => {
    const encoded = encodeWithAmqplib(toAmqpFieldTable({ retries: 200, timelimit: [300, 240] }));
    expect(encoded.toString('hex')).toBe(
      '00000026' + // table length 38
        '07' + Buffer.from('retries').toString('hex') + '49' + '000000c8' +
        '09' + Buffer.from('timelimit').toString('hex') + '41' + '0000000a' + '49' + '0000012c' + '49' + '000000f0',
    );
    expect(tagsOf(encoded)).toEqual(['I', 'A', 'I', 'I']);
  });

  it('encodes -1 and 32767 as int32 I', () => {
    const encoded = encodeWithAmqplib(toAmqpFieldTable({ a: -1, b: 32767 }));
    expect(encoded.toString('hex')).toBe('0000000e' + '0161' + '49ffffffff' + '0162' + '4900007fff');
  });

  it('encodes a value beyond int32 with an 8-byte long tag', () => {
    expect(tagsOf(encodeWithAmqplib(toAmqpFieldTable({ big: 2 ** 40 })))).toEqual(['l']);
  });

  it('encodes the int32 boundaries -2147483648 and 2147483647 as 4-byte I, never l', () => {
    const encoded = encodeWithAmqplib(toAmqpFieldTable({ a: -2147483648, b: 2147483647, c: -2147483648n }));
    expect(encoded.toString('hex')).toBe('00000015' + '0161' + '4980000000' + '0162' + '497fffffff' + '0163' + '4980000000');
  });

  it('encodes 2147483648, the first value above int32, as l with the bytes py-amqp reads back as 2147483648', () => {
    const encoded = encodeWithAmqplib(toAmqpFieldTable({ a: 2147483648 }));
    expect(encoded.toString('hex')).toBe('0000000b' + '0161' + '6c' + '0000000080000000');
    // py-amqp: unpack('>Q') of the 8 bytes after l
    expect(encoded.readBigUInt64BE(7)).toBe(2147483648n);
  });

  it('encodes null as V, booleans as t, strings as S (never short string s), non-integral numbers as d', () => {
    const encoded = encodeWithAmqplib(toAmqpFieldTable({ n: null, t: true, s: 'x', d: 1.5, o: { i: 7 } }));
    expect(tagsOf(encoded)).toEqual(['V', 't', 'S', 'd', 'F', 'I']);
  });

  it('leaves no b or s tag anywhere in the headers of a message with large integer headers', () => {
    const { amqpHeaders } = encodeTaskMessage(
      { task: 'tasks.sortWords', id: 'id-1', args: [1], retries: 200, timeLimit: 300, softTimeLimit: 240, groupIndex: 200, group: 'g' },
      { nowMicros: CAPTURE_NOW_MICROS, origin: CAPTURE_ORIGIN },
    );
    const tags = tagsOf(encodeWithAmqplib(amqpHeaders));
    expect(tags).not.toContain('s');
    expect(tags).not.toContain('b');
    // group_index, retries, timelimit hard and soft, replaced_task_nesting
    expect(tags.filter((t) => t === 'I')).toHaveLength(5);
  });

  it('decodes (with amqplib) back to the plain values it was given', () => {
    const plain = { retries: 200, timelimit: [300, 240], neg: -1, s: 'py', n: null, t: false, f: 2.5 };
    expect(codec.decodeFields(encodeWithAmqplib(toAmqpFieldTable(plain)).subarray(4))).toEqual(plain);
  });
});
