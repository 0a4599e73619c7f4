import { Inject, Injectable, Logger } from '@nestjs/common';
import { loadavg } from 'node:os';
import { Broker } from '../broker/broker.interface';
import { CELERY_CONFIG } from '../celery.constants';
import type { ResolvedCeleryConfig } from '../config/resolved-config';
import type { ExceptionInfo } from '../protocol/exceptions';
import {
  HEARTBEAT_FREQ,
  taskEndedEvent,
  platformSystem,
  taskFailedFields,
  taskReceivedFields,
  taskRejectedFields,
  taskRetriedFields,
  taskRevokedFields,
  taskStartedFields,
  taskSucceededFields,
  workerEventFields,
  type SoftwareInfo,
  type TaskMessageInfo,
  type WorkerEventType,
} from '../protocol/events';
import { CeleryClock } from './event-clock';
import { EventDispatcher } from './event-dispatcher';
import { SOFTWARE_IDENT, SOFTWARE_VERSION } from './software';

/**
 * Switches a worker's task events at run time: what remote control's `enable_events` /
 * `disable_events` call (Celery adds / removes the `task` group of its dispatcher). Worker events
 * (online, heartbeat, offline) are not affected.
 */
export interface WorkerEventsSwitch {
  /** Turns task events on; false when they already were. */
  enableTaskEvents(): boolean;
  /** Turns task events off; false when they already were. */
  disableTaskEvents(): boolean;
  readonly taskEventsEnabled: boolean;
}

/** The task events a request sends, called only while `taskEventsEnabled` (lib/worker/task-request.ts). */
export interface TaskEventHooks {
  readonly taskEventsEnabled: boolean;
  received(task: TaskMessageInfo): void;
  started(id: string): void;
  succeeded(id: string, result: unknown, runtimeSeconds: number): void;
  failed(id: string, exception: ExceptionInfo, traceback: string | null): void;
  retried(id: string, exception: ExceptionInfo | null, traceback: string | null): void;
  rejected(id: string, requeue: boolean): void;
  revoked(id: string, how: { terminated: boolean; signum: string | number | null; expired: boolean }): void;
  /** The event for the result a task ended with (SUCCESS, FAILURE or REVOKED; nothing for other states). */
  ended(id: string, result: { status: string; result: unknown; traceback?: string | null }, runtimeSeconds: number): void;
}

/** What the worker tells its events about itself, for the heartbeat's `active` and `processed`. */
export interface WorkerLoad {
  /** Tasks running now (Celery's `active_requests`). */
  active(): number;
  /** Tasks started since the worker started (Celery's `all_total_count`). */
  processed(): number;
}

/**
 * A worker's monitoring events, as a Celery worker sends them: `worker-online` at start,
 * `worker-heartbeat` every 2 s, `worker-offline` at shutdown (unless `worker.withoutHeartbeat`),
 * and, while task events are on (`worker.sendTaskEvents`, or `enable_events` by remote control),
 * the task events, batched as `task.multi` lists as a prefork Celery worker does. Published on the
 * broker's events channel (lib/broker): on the in-memory broker they go nowhere.
 */
@Injectable()
export class WorkerEvents implements WorkerEventsSwitch, TaskEventHooks {
  private readonly logger = new Logger('CeleryEvents');
  private readonly dispatcher: EventDispatcher;
  private taskEvents: boolean;
  private heartbeat: NodeJS.Timeout | null = null;
  private load: WorkerLoad | null = null;
  private readonly software: SoftwareInfo = { sw_ident: SOFTWARE_IDENT, sw_ver: SOFTWARE_VERSION, sw_sys: platformSystem(process.platform) };

  constructor(
    @Inject(CELERY_CONFIG) private readonly config: ResolvedCeleryConfig,
    broker: Broker,
    clock: CeleryClock,
  ) {
    this.taskEvents = config.events.sendTaskEvents;
    this.dispatcher = new EventDispatcher({ broker, hostname: config.worker.hostname, clock, bufferGroups: ['task'], logger: this.logger });
  }

  get taskEventsEnabled(): boolean {
    return this.taskEvents;
  }

  enableTaskEvents(): boolean {
    if (this.taskEvents) return false;
    this.taskEvents = true;
    this.logger.log('Task events enabled');
    return true;
  }

  disableTaskEvents(): boolean {
    if (!this.taskEvents) return false;
    this.taskEvents = false;
    this.dispatcher.flush();
    this.logger.log('Task events disabled');
    return true;
  }

  /** Sends `worker-online` and starts the heartbeat (called by the worker once it consumes). */
  start(load: WorkerLoad): void {
    this.load = load;
    this.dispatcher.enabled = true;
    if (this.config.events.withoutHeartbeat || this.heartbeat) return;
    this.sendWorkerEvent('worker-online');
    this.heartbeat = setInterval(() => this.sendWorkerEvent('worker-heartbeat'), HEARTBEAT_FREQ * 1000);
    this.heartbeat.unref();
  }

  /** Remote control's `heartbeat`: one `worker-heartbeat` now, with `freq` 5 as Celery sends it. */
  sendHeartbeatNow(): void {
    if (!this.dispatcher.enabled) return;
    this.sendWorkerEvent('worker-heartbeat', 5);
  }

  /** Flushes buffered task events, stops the heartbeat and sends `worker-offline` (the worker's shutdown). */
  stop(): void {
    this.dispatcher.flush();
    if (this.heartbeat) {
      clearInterval(this.heartbeat);
      this.heartbeat = null;
      this.sendWorkerEvent('worker-offline');
    }
    this.dispatcher.close();
  }

  private sendWorkerEvent(type: WorkerEventType, freq = HEARTBEAT_FREQ): void {
    const load = this.load;
    this.dispatcher.send(
      type,
      workerEventFields({ freq, active: load ? load.active() : 0, processed: load ? load.processed() : 0, loadavg: loadavg() }, this.software),
    );
  }

  private sendTask(type: string, fields: Record<string, unknown>): void {
    if (this.taskEvents) this.dispatcher.send(type, fields);
  }

  received(task: TaskMessageInfo): void {
    this.sendTask('task-received', taskReceivedFields(task));
  }

  started(id: string): void {
    this.sendTask('task-started', taskStartedFields(id));
  }

  succeeded(id: string, result: unknown, runtimeSeconds: number): void {
    this.sendTask('task-succeeded', taskSucceededFields(id, result, runtimeSeconds));
  }

  failed(id: string, exception: ExceptionInfo, traceback: string | null): void {
    this.sendTask('task-failed', taskFailedFields(id, exception, traceback));
  }

  retried(id: string, exception: ExceptionInfo | null, traceback: string | null): void {
    this.sendTask('task-retried', taskRetriedFields(id, exception, traceback));
  }

  rejected(id: string, requeue: boolean): void {
    this.sendTask('task-rejected', taskRejectedFields(id, requeue));
  }

  revoked(id: string, how: { terminated: boolean; signum: string | number | null; expired: boolean }): void {
    this.sendTask('task-revoked', taskRevokedFields(id, how));
  }

  ended(id: string, result: { status: string; result: unknown; traceback?: string | null }, runtimeSeconds: number): void {
    if (!this.taskEvents) return;
    const event = taskEndedEvent(id, result, runtimeSeconds);
    if (event) this.dispatcher.send(event.type, event.fields);
  }
}
