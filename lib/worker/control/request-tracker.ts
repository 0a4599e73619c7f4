import type { Delivery } from '../../broker/broker.interface';
import type { DecodedTask } from '../../protocol/task-message';
import type { RequestSnapshot } from '../../protocol/control';

/** Where a request is in the worker, as remote control's inspect sees it. */
export type RequestPhase = 'scheduled' | 'reserved' | 'active' | 'done';

interface Tracked {
  phase: Exclude<RequestPhase, 'done'>;
  snapshot: RequestSnapshot;
  headers: Record<string, unknown>;
}

/**
 * The requests this worker holds, for `inspect active / reserved / scheduled / query_task` and the
 * per-task totals of `inspect stats` (Celery's worker/state.py `active_requests`,
 * `reserved_requests`, `total_count`). Told of each phase by the requests themselves.
 */
export class RequestTracker {
  private readonly byDelivery = new Map<Delivery, Tracked>();
  /** Tasks started in this worker, per name (Celery's `total_count`, counted on accept). */
  readonly totals: Record<string, number> = {};

  constructor(private readonly hostname: string) {}

  phase(phase: RequestPhase, task: DecodedTask, delivery: Delivery): void {
    if (phase === 'done') {
      this.byDelivery.delete(delivery);
      return;
    }
    let tracked = this.byDelivery.get(delivery);
    if (!tracked) {
      tracked = { phase, snapshot: this.snapshotOf(task, delivery), headers: task.headers };
      this.byDelivery.set(delivery, tracked);
    }
    tracked.phase = phase;
    if (phase === 'active') {
      tracked.snapshot.timeStart = Date.now() / 1000;
      tracked.snapshot.workerPid = process.pid;
      this.totals[task.task] = (this.totals[task.task] ?? 0) + 1;
    }
  }

  /** Requests in a phase, oldest first. */
  list(phase: Exclude<RequestPhase, 'done'>): RequestSnapshot[] {
    return [...this.byDelivery.values()].filter((t) => t.phase === phase).map((t) => t.snapshot);
  }

  /** The requests of these ids held here, with Celery's query_task state (`active`, `reserved`; held ETA tasks are `reserved` too). */
  find(ids: readonly string[]): { state: 'active' | 'reserved'; request: RequestSnapshot }[] {
    const wanted = new Set(ids);
    return [...this.byDelivery.values()]
      .filter((t) => wanted.has(t.snapshot.id))
      .map((t) => ({ state: t.phase === 'active' ? 'active' : 'reserved', request: t.snapshot }));
  }

  /** The message headers of a request held here (stamps, for revoke_by_stamped_headers). */
  headersOf(taskId: string): Record<string, unknown> | undefined {
    for (const t of this.byDelivery.values()) if (t.snapshot.id === taskId) return t.headers;
    return undefined;
  }

  private snapshotOf(task: DecodedTask, delivery: Delivery): RequestSnapshot {
    const h = task.headers as Record<string, unknown>;
    return {
      id: task.id,
      name: task.task,
      args: task.args,
      kwargs: task.kwargs,
      argsrepr: typeof h.argsrepr === 'string' ? h.argsrepr : null,
      kwargsrepr: typeof h.kwargsrepr === 'string' ? h.kwargsrepr : null,
      hostname: this.hostname,
      timeStart: null,
      // acknowledged after its result is stored (Celery acknowledges on receipt unless acks_late)
      acknowledged: false,
      exchange: delivery.exchange,
      routingKey: delivery.routingKey,
      priority: task.priority ?? delivery.priority ?? null,
      redelivered: delivery.redelivered,
      workerPid: null,
      etaMs: task.eta === null ? null : task.eta / 1000,
    };
  }
}
