import { REVOKE_EXPIRES_MS, type RevokedSet } from '../../lib/worker/revoked-persistence';

/** A stand-in for the worker's revoked set (the worker side owns the real one): id → expiry, in insertion order. */
export class MapRevokedSet implements RevokedSet {
  readonly entries = new Map<string, number>();

  add(id: string, expiresAt = Date.now() + REVOKE_EXPIRES_MS): void {
    this.entries.delete(id);
    this.entries.set(id, expiresAt);
  }

  has(id: string): boolean {
    const e = this.entries.get(id);
    return e !== undefined && e > Date.now();
  }

  ids(): string[] {
    return [...this.entries.keys()].filter((id) => this.has(id));
  }
}
