/** Celery's `CELERY_WORKER_REVOKES_MAX` and `CELERY_WORKER_REVOKE_EXPIRES` (celery/worker/state.py). */
export const REVOKES_MAX = 50000;
export const REVOKE_EXPIRES_MS = 10800 * 1000;

/**
 * Celery's `LimitedSet` as its worker keeps revoked ids (`maxlen` 50000, `expires` 3 h): ids in
 * the order they were added (adding one again moves it to the end). Like Celery's, it is purged
 * only when an add reaches `maxlen` (or on `purge()`): the oldest beyond `maxlen` go, and every
 * entry older than `expiresMs`. An id stays revoked until then, however old.
 */
export class LimitedSet {
  private readonly data = new Map<string, number>();

  constructor(
    readonly maxlen: number = REVOKES_MAX,
    readonly expiresMs: number = REVOKE_EXPIRES_MS,
    private readonly now: () => number = () => performance.now(),
  ) {}

  add(item: string): void {
    this.data.delete(item);
    this.data.set(item, this.now());
    if (this.maxlen > 0 && this.data.size >= this.maxlen) this.purge();
  }

  has(item: string): boolean {
    return this.data.has(item);
  }

  get size(): number {
    return this.data.size;
  }

  purge(): void {
    const it = this.data.keys();
    while (this.maxlen > 0 && this.data.size > this.maxlen) this.data.delete(it.next().value as string);
    if (this.expiresMs <= 0) return;
    const now = this.now();
    for (const [item, at] of this.data) {
      if (at + this.expiresMs > now) break;
      this.data.delete(item);
    }
  }

  /** The ids with when they were added (the clock's ms), oldest first. */
  entries(): [string, number][] {
    return [...this.data.entries()];
  }

  /** The ids, oldest first (inspect revoked). */
  values(): string[] {
    return [...this.data.keys()];
  }
}
