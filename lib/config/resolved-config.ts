import type { ResolvedMetricsConfig } from '../metrics/task-metrics';
import type { PeerCompat } from '../protocol/task-message';
import type { RoutingSettings } from '../protocol/routing';
import type { PeriodicEntry } from '../scheduler/periodic-entry';

/** Options after validation and defaults; what the rest of the library reads. */
export interface ResolvedTls {
  ca: string | null;
  cert: string | null;
  key: string | null;
  rejectUnauthorized: boolean;
  servername: string | null;
}

export interface ResolvedCassandraConfig {
  contactPoints: string[] | null;
  port: number;
  localDataCenter: string | null;
  keyspace: string;
  table: string;
  readConsistency: string;
  writeConsistency: string;
  entryTtl: number | null;
  credentials: { username: string; password: string } | null;
  secureConnectBundle: string | null;
  createKeyspace: boolean;
  tls: ResolvedTls | null;
}

export interface ResolvedCeleryConfig {
  brokerUrl: string;
  brokerKind: 'amqp' | 'memory';
  brokerConnectionRetryOnStartup: boolean;
  brokerTls: ResolvedTls | null;
  resultBackend: 'cassandra' | 'memory' | 'none';
  cassandra: ResolvedCassandraConfig | null;
  defaultQueue: string;
  queueArguments: Record<string, unknown> | null;
  /** Queues, exchanges and routes (task_queues, task_routes, task_default_exchange_type, ...). */
  routing: RoutingSettings;
  /** `task_default_priority`: the priority of sends that give none. */
  defaultPriority: number | null;
  worker: {
    enabled: boolean;
    queues: string[];
    concurrency: number;
    prefetch: number;
    shutdownTimeoutMs: number;
    maxMessageBytes: number;
    maxResultBytes: number;
    successCheck: 'auto' | 'always' | 'redelivered';
    etaTaskLimit: number;
    /** `worker_detect_quorum_queues`: per-consumer QoS when a quorum queue is configured. */
    detectQuorumQueues: boolean;
    /** RabbitMQ's consumer_timeout the worker plans for: a held ETA message is moved before it (0: never). */
    consumerTimeoutMs: number;
    /** This worker's node name (`name@host`): STARTED rows, the task context, events. */
    hostname: string;
    /** Run tasks in the AsyncLocalStorage behind CeleryTaskContext; null = when a provider injects it. */
    taskContextStorage: boolean | null;
    /** Threads of the isolated-task pool; null = os.availableParallelism(). */
    isolatedThreads: number | null;
    /** Celery's `worker_enable_remote_control`: answer the pidbox broadcast (ping, inspect, control). */
    enableRemoteControl: boolean;
    /** Remote-control commands this worker refuses (`worker.remoteControl.refuse`), answered with an error. */
    remoteControlRefuse: string[];
    /** Celery's `--statedb`: where revoked ids outlive the worker (a file, or a Cassandra table in the result keyspace); null: memory only. */
    stateDb: { file: string } | { table: string } | null;
    /** Celery's Mingle: `hello` to every node at start (false: `--without-mingle`). */
    mingle: boolean;
    /** How long mingle waits for the next reply. */
    mingleTimeoutMs: number;
  };
  /** Defaults of every task (Celery's `task_*` settings); a task's own `@Task()` options win. */
  tasks: {
    timeLimit: number | null;
    softTimeLimit: number | null;
    trackStarted: boolean;
    ignoreResult: boolean;
    storeErrorsEvenIfIgnored: boolean;
  };
  publishTimeoutMs: number;
  accept: string[];
  peerCompat: PeerCompat;
  resultPollIntervalMs: number;
  /** Rate limits (issue 12 item 4). */
  rateLimits: ResolvedRateLimitConfig;
  /** How chords complete (issue 13 item 4). */
  chords: ResolvedChordConfig;
  /** Celery's `result_extended`: rows also carry name, args, kwargs, worker, retries, queue. */
  resultExtended: boolean;
  /** Periodic tasks (issue 15 item 5). */
  scheduler: ResolvedSchedulerConfig;
  /** Prometheus metrics (README, "Metrics"); off by default. */
  metrics: ResolvedMetricsConfig;
  /** Monitoring events (Celery's `celeryev`). */
  events: {
    /** `worker.sendTaskEvents` (`worker_send_task_events`, `-E`): the worker's initial setting; remote control can switch it. */
    sendTaskEvents: boolean;
    /** `worker.withoutHeartbeat`: no worker-online / heartbeat / offline events. */
    withoutHeartbeat: boolean;
    /** `taskSendSentEvent` (`task_send_sent_event`): the Producer sends `task-sent`. */
    taskSendSentEvent: boolean;
  };
}

// ---- periodic tasks (issue 15 item 5) ----
export interface ResolvedSchedulerConfig {
  /** null: on when there is a schedule (config or `@Periodic()`), decided at bootstrap. */
  enabled: boolean | null;
  timezone: string;
  /** `scheduler.schedule` / `beat_schedule`, checked. */
  entries: PeriodicEntry[];
  table: string;
  claimTimeoutMs: number;
  catchUpMs: number;
  serialConsistency: 'SERIAL' | 'LOCAL_SERIAL';
}
// ---- end periodic tasks ----

// ---- rate limits (issue 12 item 4) ----
export interface ResolvedRateLimitConfig {
  /** `worker.disableRateLimits` (`worker_disable_rate_limits`). */
  disabled: boolean;
  /** `globalRateLimits.*`: where and how limits shared by all workers are kept. */
  table: string;
  serialConsistency: 'SERIAL' | 'LOCAL_SERIAL';
  reserveAheadMs: number;
  maxLateMs: number;
}
// ---- end rate limits ----

// ---- chords (issue 13 item 4) ----
export interface ResolvedChordConfig {
  /** `chords.completion`: how `Producer.chord()` chords complete unless the call says. */
  completion: 'unlock' | 'counter';
  /** `chords.table`: the per-chord rows of counter-mode chords, in the result keyspace. */
  table: string;
  serialConsistency: 'SERIAL' | 'LOCAL_SERIAL';
}
// ---- end chords ----
