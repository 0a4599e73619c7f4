import type { PeerCompat } from '../protocol/task-message';
import type { RoutingSettings } from '../protocol/routing';

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
    successCheck: 'always' | 'redelivered';
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
  /** Celery's `result_extended`: rows also carry name, args, kwargs, worker, retries, queue. */
  resultExtended: boolean;
}
