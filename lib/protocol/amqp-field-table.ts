/**
 * Header values typed the way py-amqp writes and reads them. amqplib tags a small integer as `b`
 * or `s` (int16), and py-amqp reads `s` as a short *string*, which corrupts the whole header table
 * (wire spec §1.4). So every integer is tagged explicitly: `I` (int32), or `l` beyond int32.
 */
export type AmqpFieldValue =
  | string
  | boolean
  | null
  | { '!': 'int' | 'long' | 'double'; value: number | bigint }
  | AmqpFieldValue[]
  | { [key: string]: AmqpFieldValue };

const INT32_MAX = 2147483647;

export function toAmqpFieldValue(value: unknown): AmqpFieldValue {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value;
    case 'number':
      if (!Number.isInteger(value)) return { '!': 'double', value };
      return Math.abs(value) <= INT32_MAX ? { '!': 'int', value } : { '!': 'long', value };
    case 'bigint':
      return value >= -INT32_MAX && value <= INT32_MAX
        ? { '!': 'int', value: Number(value) }
        : { '!': 'long', value };
    case 'object':
      if (value === null) return null;
      if (Array.isArray(value)) return value.map(toAmqpFieldValue);
      return toAmqpFieldTable(value as Record<string, unknown>);
    default:
      return null;
  }
}

export function toAmqpFieldTable(table: Record<string, unknown>): { [key: string]: AmqpFieldValue } {
  const out: { [key: string]: AmqpFieldValue } = {};
  for (const key of Object.keys(table)) {
    if (table[key] !== undefined) out[key] = toAmqpFieldValue(table[key]);
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
