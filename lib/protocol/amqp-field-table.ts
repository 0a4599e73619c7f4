/**
 * Header values typed the way py-amqp writes and reads them. amqplib tags a small integer as `b`
 * or `s` (int16), and py-amqp reads `s` as a short *string*, which corrupts the whole header table
 * (wire spec §1.4). So every integer is tagged explicitly: `I` (int32) for the whole int32 range,
 * or `l` above it. py-amqp reads `l` as *unsigned* 64-bit and amqplib cannot write py-amqp's signed
 * `L`, so an integer below int32 (or beyond int64) has no faithful encoding: it is refused with a
 * RangeError instead of arriving as a different number.
 */
export type AmqpFieldValue =
  | string
  | boolean
  | null
  | { '!': 'int' | 'long' | 'double'; value: number | bigint }
  | AmqpFieldValue[]
  | { [key: string]: AmqpFieldValue };

const INT32_MIN = -2147483648;
const INT32_MAX = 2147483647;
const INT64_MAX = 2n ** 63n - 1n;

export function toAmqpFieldValue(value: unknown): AmqpFieldValue {
  return fieldValue(value, 'value');
}

function fieldValue(value: unknown, where: string): AmqpFieldValue {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value;
    case 'number':
      if (!Number.isInteger(value)) return { '!': 'double', value };
      if (value >= INT32_MIN && value <= INT32_MAX) return { '!': 'int', value };
      checkLong(BigInt(value), where);
      return { '!': 'long', value };
    case 'bigint':
      if (value >= BigInt(INT32_MIN) && value <= BigInt(INT32_MAX)) return { '!': 'int', value: Number(value) };
      checkLong(value, where);
      return { '!': 'long', value };
    case 'object':
      if (value === null) return null;
      if (Array.isArray(value)) return value.map((item, i) => fieldValue(item, `${where}[${i}]`));
      return fieldTable(value as Record<string, unknown>, where);
    default:
      return null;
  }
}

/** An integer beyond int32 goes as `l`, which py-amqp reads as uint64: only 2^31 … 2^63−1 survive that. */
function checkLong(value: bigint, where: string): void {
  if (value < 0n) {
    throw new RangeError(
      `header ${where} = ${value} cannot be sent: an integer below -2147483648 needs tag 'l', which py-amqp ` +
        `reads as unsigned (wire spec §1.4); send it as a string or a float`,
    );
  }
  if (value > INT64_MAX) {
    throw new RangeError(`header ${where} = ${value} cannot be sent: it does not fit in 64 bits; send it as a string`);
  }
}

export function toAmqpFieldTable(table: Record<string, unknown>): { [key: string]: AmqpFieldValue } {
  return fieldTable(table, null);
}

function fieldTable(table: Record<string, unknown>, where: string | null): { [key: string]: AmqpFieldValue } {
  const out: { [key: string]: AmqpFieldValue } = {};
  for (const key of Object.keys(table)) {
    if (table[key] !== undefined) out[key] = fieldValue(table[key], where === null ? key : `${where}.${key}`);
  }
  return out;
}

/** The plain values of a typed header table (what a receiving client decodes). */
export function fromAmqpFieldValue(value: AmqpFieldValue): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map(fromAmqpFieldValue);
  if (Object.hasOwn(value, '!')) {
    const v = (value as { value: number | bigint }).value;
    return typeof v === 'bigint' && v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value)) out[key] = fromAmqpFieldValue((value as Record<string, AmqpFieldValue>)[key]);
  return out;
}
