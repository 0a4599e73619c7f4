import { Inject, Injectable, Logger, OnApplicationBootstrap, BeforeApplicationShutdown } from '@nestjs/common';
import { DiscoveryService, MetadataScanner, Reflector } from '@nestjs/core';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { CELERY_CONFIG, PERIODIC_METADATA } from '../celery.constants';
import type { ResolvedCeleryConfig } from '../config/resolved-config';
import type { PeriodicMetadata } from '../decorators/periodic.decorator';
import { TaskMetadataAccessor, taskNameOf } from '../discovery/task-metadata.accessor';
import { TaskRegistrationError } from '../errors/celery.errors';
import { Producer } from '../producer/producer.service';
import { CassandraResultStore } from '../results/cassandra.result-store';
import { ResultStore } from '../results/result-store.interface';
import { CassandraTickClaimStore } from './cassandra-tick-claims';
import { PeriodicEntryError, resolveCall, resolveDecoratorTiming, tickScheduleOf, type PeriodicEntry } from './periodic-entry';
import { tickTaskId } from './schedule';
import { MemoryTickClaimStore, type TickClaimStore } from './tick-claims';
import { TickScheduler, type ScheduledEntry } from './tick-scheduler';

/** Headers each periodic send carries: the schedule's name (under django-celery-beat's name for it) and the tick. */
export const PERIODIC_TASK_NAME_HEADER = 'periodic_task_name';
export const PERIODIC_TICK_HEADER = 'periodic_tick';

/**
 * Periodic tasks: gathers the `@Periodic()` methods and the configured `scheduler.schedule`
 * (Celery's `beat_schedule`), and, when the scheduler is enabled, sends each tick through the
 * Producer once across every replica running it (tick claims in Cassandra; in this process with
 * the embedded store). Injectable, to list what is scheduled.
 */
@Injectable()
export class PeriodicScheduler implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger('CeleryScheduler');
  /** This replica's id in tick claims. */
  readonly replicaId = `${process.pid}@${hostname()}/${randomUUID().slice(0, 8)}`;
  private entries: PeriodicEntry[] = [];
  private scheduler: TickScheduler | null = null;

  constructor(
    @Inject(CELERY_CONFIG) private readonly config: ResolvedCeleryConfig,
    private readonly producer: Producer,
    private readonly store: ResultStore,
    private readonly discovery: DiscoveryService,
    private readonly scanner: MetadataScanner,
    private readonly reflector: Reflector,
    private readonly tasks: TaskMetadataAccessor,
  ) {}

  /** Every schedule of the app (configured and decorated), whether or not this process runs them. */
  schedules(): readonly PeriodicEntry[] {
    return this.entries;
  }

  /** Whether this process sends ticks. */
  get running(): boolean {
    return this.scheduler !== null;
  }

  async onApplicationBootstrap(): Promise<void> {
    this.entries = [...this.config.scheduler.entries, ...this.discover()];
    const names = new Set<string>();
    for (const entry of this.entries) {
      if (names.has(entry.name)) throw new TaskRegistrationError(`periodic task ${entry.name} is defined twice (schedule names are claim keys: give each its own name)`);
      names.add(entry.name);
    }
    const enabled = this.config.scheduler.enabled ?? this.entries.length > 0;
    if (!enabled || this.entries.length === 0) return;
    const claims = this.claimStore();
    await claims.prepare();
    if (!claims.shared && this.config.brokerKind === 'amqp') {
      this.logger.warn('Tick claims are kept in this process (no Cassandra result backend): every process running the scheduler sends every tick. Enable it in one process only (scheduler.enabled), or use the Cassandra result backend');
    }
    const byName = new Map(this.entries.map((e) => [e.name, e]));
    const { claimTimeoutMs, catchUpMs } = this.config.scheduler;
    this.scheduler = new TickScheduler(
      this.entries.map((e): ScheduledEntry => ({ name: e.name, schedule: tickScheduleOf(e.timing) })),
      { store: claims, send: (e, tick) => this.send(byName.get(e.name)!, tick), replicaId: this.replicaId, claimTimeoutMs, catchUpMs, logger: this.logger },
    );
    this.scheduler.start();
    this.logger.log(`Scheduler started (${this.entries.length} periodic task(s), claims in ${claims.describe()}): ${this.scheduler.entries.map((e) => `${e.name} ${e.schedule.describe()}`).join('; ')}`);
  }

  async beforeApplicationShutdown(): Promise<void> {
    const scheduler = this.scheduler;
    this.scheduler = null;
    await scheduler?.stop();
  }

  private async send(entry: PeriodicEntry, tickMs: number): Promise<void> {
    const { headers, ...options } = entry.options;
    await this.producer.sendTask(entry.task, {
      ...options,
      args: entry.args,
      kwargs: entry.kwargs,
      taskId: tickTaskId(entry.name, tickMs),
      headers: { ...headers, [PERIODIC_TASK_NAME_HEADER]: entry.name, [PERIODIC_TICK_HEADER]: new Date(tickMs).toISOString() },
    });
  }

  /** Shared claims in the Cassandra result keyspace; else claims in this process. */
  private claimStore(): TickClaimStore {
    const store = this.store;
    if (store instanceof CassandraResultStore && this.config.cassandra) {
      return new CassandraTickClaimStore(() => store.session(), {
        keyspace: this.config.cassandra.keyspace,
        table: this.config.scheduler.table,
        writeConsistency: this.config.cassandra.writeConsistency,
        serialConsistency: this.config.scheduler.serialConsistency,
      });
    }
    return new MemoryTickClaimStore();
  }

  /** The `@Periodic()` methods of every provider. */
  private discover(): PeriodicEntry[] {
    const found: PeriodicEntry[] = [];
    for (const wrapper of this.discovery.getProviders()) {
      const instance = wrapper.instance as Record<string, unknown> | undefined;
      if (!instance || typeof instance !== 'object' || !wrapper.isDependencyTreeStatic()) continue;
      const prototype = Object.getPrototypeOf(instance) as object | null;
      if (!prototype) continue;
      for (const methodName of this.scanner.getAllMethodNames(prototype)) {
        const method = instance[methodName];
        if (typeof method !== 'function') continue;
        const metadata = this.reflector.get<PeriodicMetadata | undefined>(PERIODIC_METADATA, method);
        if (metadata) found.push(this.entryOf(instance.constructor?.name ?? 'Anonymous', method, metadata));
      }
    }
    return found;
  }

  private entryOf(className: string, method: Function, metadata: PeriodicMetadata): PeriodicEntry {
    const target = `${className}.${metadata.methodName}`;
    const task = this.tasks.getTaskMetadata(method);
    const taskName = metadata.task ?? (task ? taskNameOf(className, task) : undefined);
    if (!taskName) throw new TaskRegistrationError(`${target}: @Periodic() needs a task to send: put it on a @Task() method, or name one with task: 'tasks.name'`);
    try {
      return {
        name: metadata.name ?? target,
        task: taskName,
        timing: resolveDecoratorTiming(metadata, 'timing', this.config.scheduler.timezone),
        ...resolveCall(metadata, 'call'), // the task's own @Task({ queue }) applies as to any send
      };
    } catch (err) {
      if (err instanceof PeriodicEntryError) throw new TaskRegistrationError(`${target}: @Periodic() option ${err.key.replace(/^(timing|call)\.?/, '') || 'every/cron'}: ${err.detail}`);
      throw err;
    }
  }
}
