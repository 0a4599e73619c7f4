import type { Delivery } from '../../broker/broker.interface';
import type { DecodedTask } from '../../protocol/task-message';
import type { RequestSnapshot } from '../../protocol/control';

/** Where a request is in the worker, as remote control's inspect sees it. */
export type RequestPhase = 'scheduled' | 'reserved' | 'active' | 'done';

/** A request as the worker holds it; its inspect snapshot is built only when asked for (inspect is rare, tasks are not). */
interface Tracked {
  phase: Exclude<RequestPhase, 'done'>;
  task: DecodedTask;
  /** When it became active (epoch seconds), null before. */
  timeStart: number | null;
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
    const tracked = this.byDelivery.get(delivery);
    if (!tracked) this.byDelivery.set(delivery, { phase, task, timeStart: phase === 'active' ? Date.now() / 1000 : null });
    else {
      tracked.phase = phase;
      if (phase === 'active') tracked.timeStart = Date.now() / 1000;
    }
    if (phase === 'active') this.totals[task.task] = (this.totals[task.task] ?? 0) + 1;
  }

  /** Requests in a phase, oldest first. */
  list(phase: Exclude<RequestPhase, 'done'>): RequestSnapshot[] {
    const out: RequestSnapshot[] = [];
    for (const [delivery, t] of this.byDelivery) if (t.phase === phase) out.push(this.snapshotOf(t, delivery));
    return out;
  }

  /** The requests of these ids held here, with Celery's query_task state (`active`, `reserved`; held ETA tasks are `reserved` too). */
  find(ids: readonly string[]): { state: 'active' | 'reserved'; request: RequestSnapshot }[] {
    const wanted = new Set(ids);
    const out: { state: 'active' | 'reserved'; request: RequestSnapshot }[] = [];
    for (const [delivery, t] of this.byDelivery) {
      if (wanted.has(t.task.id)) out.push({ state: t.phase === 'active' ? 'active' : 'reserved', request: this.snapshotOf(t, delivery) });
    }
    return out;
  }

  /** The message headers of a request held here (stamps, for revoke_by_stamped_headers). */
  headersOf(taskId: string): Record<string, unknown> | undefined {
    for (const t of this.byDelivery.values()) if (t.task.id === taskId) return t.task.headers;
    return undefined;
  }

  private snapshotOf(tracked: Tracked, delivery: Delivery): RequestSnapshot {
    const task = tracked.task;
    const h = task.headers as Record<string, unknown>;
    return {
      id: task.id,
      name: task.task,
      args: task.args,
      kwargs: task.kwargs,
      argsrepr: typeof h.argsrepr === 'string' ? h.argsrepr : null,
      kwargsrepr: typeof h.kwargsrepr === 'string' ? h.kwargsrepr : null,
      hostname: this.hostname,
      timeStart: tracked.timeStart,
      // acknowledged after its result is stored (Celery acknowledges on receipt unless acks_late)
      acknowledged: false,
      exchange: delivery.exchange,
      routingKey: delivery.routingKey,
      priority: task.priority ?? delivery.priority ?? null,
      redelivered: delivery.redelivered,
      workerPid: tracked.timeStart === null ? null : process.pid,
      etaMs: task.eta === null ? null : task.eta / 1000,
    };
  }
}
