/**
 * What Celery workers answer to remote-control requests (celery/worker/control.py), as TypeScript
 * types. Python and NestJS workers answer in the same shapes; fields a worker may leave out are
 * optional, and everything is read as sent (no conversion): times are epoch seconds as floats,
 * `args` / `kwargs` what the task got (or their repr with `safe`).
 */

/** Replies keyed by node name (`celery@host`), as Python's `inspect()` returns them after `flatten_reply`. */
export type ByNode<R> = Record<string, R>;

/** A control command's answer: `{ok: message}` on success, `{error: message}` when refused or unknown. */
export type CommandReply = { ok: string } | { error: string };

/** `ping`: `{ok: 'pong'}`. */
export type PingReply = { ok: 'pong' } | { error: string };

/** Where a task message came from (`Request.delivery_info`). */
export interface DeliveryInfoReply {
  exchange: string | null;
  routing_key: string | null;
  priority: number | null;
  redelivered: boolean | null;
}

/** `Request.info()`: one task a worker holds (`active`, `reserved`, `scheduled[].request`, `query_task`). */
export interface TaskRequestInfo {
  id: string;
  name: string;
  args: unknown;
  kwargs: unknown;
  /** The task's name again (Celery's `type`). */
  type: string;
  hostname: string;
  /** When the task started, epoch seconds; null while not started. */
  time_start: number | null;
  acknowledged: boolean;
  delivery_info: DeliveryInfoReply;
  /** The process running it; null while not started. */
  worker_pid: number | null;
  [extra: string]: unknown;
}

/** `scheduled`: an ETA / countdown task held by the worker. */
export interface ScheduledTaskInfo {
  /** ISO 8601 time it runs at. */
  eta: string | null;
  priority: number | null;
  request: TaskRequestInfo;
}

/** `active_queues`: kombu's `Queue.as_dict(recurse=True)` of each consumed queue. */
export interface ActiveQueueInfo {
  name: string;
  exchange: { name: string; type: string; durable?: boolean; auto_delete?: boolean; [extra: string]: unknown };
  routing_key: string | null;
  durable?: boolean;
  exclusive?: boolean;
  auto_delete?: boolean;
  no_ack?: boolean;
  queue_arguments?: Record<string, unknown> | null;
  [extra: string]: unknown;
}

/** `stats`: Celery's `Worker.stats()`; pool and broker details differ between pools and languages. */
export interface WorkerStatsReply {
  /** Tasks run since start, by task name. */
  total: Record<string, number>;
  pid: number;
  /** The worker's Lamport clock, as a string. */
  clock: string;
  uptime: number;
  pool?: Record<string, unknown>;
  broker?: Record<string, unknown>;
  prefetch_count?: number;
  rusage?: Record<string, unknown> | string;
  [extra: string]: unknown;
}

/** `query_task`: by task id, `[state, request info]` (`'active'`, `'reserved'` or `'ready'`). */
export type QueryTaskReply = Record<string, [string, TaskRequestInfo]>;
