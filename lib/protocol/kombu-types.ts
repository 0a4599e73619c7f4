/**
 * Python values kombu ≥ 5.3 sends as JSON envelopes `{"__type__": ..., "__value__": ...}` that have
 * no JavaScript counterpart keep their exact text in these small classes, so they survive a round
 * trip: a task that returns what it received sends the same envelope back. `datetime` becomes a JS
 * `Date` (millisecond precision) and `bytes` a `Buffer`.
 */
abstract class PythonValue {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
  toJSON(): string {
    return this.value;
  }
}

/** Python `datetime.date`, as `YYYY-MM-DD`. */
export class PyDate extends PythonValue {}
/** Python `datetime.time`, as `HH:MM:SS[.ffffff][+HH:MM]`. */
export class PyTime extends PythonValue {}
/** Python `decimal.Decimal`, as its exact decimal text (a JS number would round it). */
export class PyDecimal extends PythonValue {}
/** Python `uuid.UUID`, as the canonical 8-4-4-4-12 text. */
export class PyUUID extends PythonValue {
  get hex(): string {
    return this.value.replace(/-/g, '');
  }
  static fromHex(hex: string): PyUUID {
    const h = hex.replace(/-/g, '').toLowerCase();
    if (!/^[0-9a-f]{32}$/.test(h)) throw new RangeError(`not a UUID: ${JSON.stringify(hex)}`);
    return new PyUUID(`${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`);
  }
}
