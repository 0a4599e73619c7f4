import { Logger } from '@nestjs/common';
import type { CeleryControl } from '../control/celery-control';
import { REVOKE_EXPIRES_MS, type RevokedSet } from './control/limited-set';

/**
 * Celery's Mingle bootstep (celery/worker/consumer/mingle.py): a starting worker sends `hello`
 * (`{from_node, revoked: [ids]}`) to every node, merges the revoked ids they answer with into its
 * own set and moves its clock past theirs; every worker answers `hello` with its revoked ids and
 * merges the starter's. Ids received are stamped with the local clock (Celery 5.7's
 * `merge_revoked`): they count for REVOKE_EXPIRES from now.
 */

/**
 * The revoked ids of a `hello` request or reply, in either form Celery sends: a list of ids
 * (5.7) or LimitedSet `_data`, a mapping id → stamp (5.2.6). Anything else gives none.
 */
export function revokedIdsOf(value: unknown): string[] {
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === 'string' && v.length > 0);
  if (value && typeof value === 'object') return Object.keys(value).filter((k) => k.length > 0);
  return [];
}

/**
 * Merges ids from another node into `set`, each new one kept REVOKE_EXPIRES from `now`. An id
 * already here keeps its own expiry (Celery 5.7 stamps it again; not doing so means a persisted
 * set is not rewritten on every hello, and ids passed around between nodes still expire).
 */
export function mergeRevoked(set: RevokedSet, ids: readonly string[], now = Date.now()): number {
  let added = 0;
  for (const id of ids) {
    if (set.has(id)) continue;
    added++;
    set.add(id, now + REVOKE_EXPIRES_MS);
  }
  return added;
}

/**
 * The worker's answer to `hello` (celery/worker/control.py `hello`): from another node, merge its
 * ids and answer ours with a forwarded clock; from ourselves, no answer (null: send nothing).
 */
export function answerHello(
  args: { from_node?: unknown; revoked?: unknown },
  self: { hostname: string; revoked: RevokedSet; forwardClock: () => number },
  now = Date.now(),
): { revoked: string[]; clock: number } | null {
  if (args.from_node === self.hostname) return null;
  mergeRevoked(self.revoked, revokedIdsOf(args.revoked), now);
  return { revoked: self.revoked.ids(), clock: self.forwardClock() };
}

export interface MingleResult {
  /** The nodes that answered (ourselves left out). */
  nodes: string[];
  /** Ids that were new to our set. */
  added: number;
  /** The highest clock the nodes sent (adjust the worker's clock by it), or null. */
  clock: number | null;
}

/**
 * The starting worker's side: `hello` to every node through CeleryControl (timeout 1 s, as
 * Celery), merging their revoked ids into `revoked`. A failure is logged and gives an empty
 * result: a worker starts without its neighbours, as Celery's does ("all alone").
 */
export async function mingle(control: CeleryControl, hostname: string, revoked: RevokedSet, options: { timeout?: number } = {}): Promise<MingleResult> {
  const logger = new Logger('CeleryMingle');
  logger.log('mingle: searching for neighbors');
  let replies: Record<string, unknown>;
  try {
    replies = await control.inspect({ timeout: options.timeout ?? 1000 }).hello(hostname, revoked.ids());
  } catch (err) {
    logger.warn(`mingle: hello failed (${err instanceof Error ? err.message : String(err)}); starting without neighbors`);
    return { nodes: [], added: 0, clock: null };
  }
  delete replies[hostname];
  const nodes = Object.keys(replies).filter((n) => replies[n]);
  if (nodes.length === 0) {
    logger.log('mingle: all alone');
    return { nodes: [], added: 0, clock: null };
  }
  let added = 0;
  let clock: number | null = null;
  for (const node of nodes) {
    const reply = replies[node] as { revoked?: unknown; clock?: unknown };
    if (!reply || typeof reply !== 'object') continue;
    added += mergeRevoked(revoked, revokedIdsOf(reply.revoked));
    if (typeof reply.clock === 'number' && Number.isFinite(reply.clock)) clock = Math.max(clock ?? 0, reply.clock);
  }
  logger.log(`mingle: sync with ${nodes.length} node${nodes.length === 1 ? '' : 's'} complete (${added} revoked id${added === 1 ? '' : 's'} new)`);
  return { nodes, added, clock };
}
