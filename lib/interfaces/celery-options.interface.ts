import type { MetricsOptions } from '../metrics/task-metrics';
import type { PeerCompat } from '../protocol/task-message';
import type { ExchangeType, QueueDefinition, QueueType, TaskRoutesInput } from '../protocol/routing';

export type { ExchangeType, QueueDefinition, QueueType, RouteFunction, RouteTarget, TaskRoutesInput } from '../protocol/routing';

/**
 * TLS settings: file paths of PEM files. Server certificates are verified by default
 * (`rejectUnauthorized: true`); `ca` adds a private CA to the trusted ones.
 */
export interface TlsOptions {
  ca?: string;
  /** Client certificate and key, for servers that require one. */
  cert?: string;
  key?: string;
  /** Default true. false turns verification off (never in production). */
  rejectUnauthorized?: boolean;
  /** Server name to verify the certificate against, when it differs from the host connected to. */
  servername?: string;
}

/** Cassandra / Astra DB result store settings (Celery's `cassandra_*` keys). */
export interface CassandraOptions {
  /** Hosts, `host` or `host:port`. Exactly one of `contactPoints` and `secureConnectBundle`. */
  contactPoints?: string[];
  /** Native transport port; default 9042. */
  port?: number;
  /** The Node driver needs the local data center; when left out it is read from the node, as Python does. */
  localDataCenter?: string;
  /** Must exist: it is never created (Astra forbids it) unless `createKeyspace` is set for development. */
  keyspace: string;
  /** Result table; created as Celery does when missing. Default `celery_taskmeta`. */
  table?: string;
  /** Consistency level name (`LOCAL_QUORUM`, `ONE`, ...). Default `LOCAL_QUORUM`. */
  readConsistency?: string;
  writeConsistency?: string;
  /** Seconds a row lives (`USING TTL`); an integer. Default: rows never expire. */
  entryTtl?: number;
  /** Username and password; for Astra a client id and secret, or `token` and an `AstraCS:` token. */
  credentials?: { username: string; password: string };
  /** Path of an Astra DB secure-connect bundle zip. */
  secureConnectBundle?: string;
  /** Astra application token (`AstraCS:...`): shorthand for credentials `token` / token. */
  token?: string;
  /** Development only: create the keyspace (SimpleStrategy, RF 1) when it is missing. */
  createKeyspace?: boolean;
  /** TLS to the nodes (`client_encryption_options` on the server). Not with a secure-connect bundle, which carries its own. */
  tls?: TlsOptions;
}

/** Worker settings. */
export interface WorkerOptions {
  /** Consume and run tasks in this process. Default true. */
  enabled?: boolean;
  /** Queues to consume (Celery's `-Q`). Default: every queue of `taskQueues`, else `[defaultQueue]` (as Celery). */
  queues?: string[];
  /**
   * Tasks in progress at once (running or storing their result). Default 64: a Node worker is
   * mostly waiting on Cassandra, and the benchmark's throughput rises up to about this many.
   */
  concurrency?: number;
  /** Unacknowledged messages the broker may hand over (basic.qos). Default concurrency × 4. */
  prefetch?: number;
  /** On shutdown, how long in-flight tasks may take to finish before their messages go back unacknowledged. Default 30000 ms. */
  shutdownTimeoutMs?: number;
  /** Largest message body accepted (compressed and decompressed); larger ones are rejected without requeue. Default 10 MiB. */
  maxMessageBytes?: number;
  /**
   * Largest result row stored (result, traceback and children, JSON-encoded). A larger one is
   * never written: a FAILURE (Python `ValueError`) naming the size and this limit is stored instead
   * and the message is rejected without requeue. Default 8 MiB, half of what one Cassandra write
   * takes by default (16 MiB: half of `commitlog_segment_size`, and `native_transport_max_frame_size`).
   * At least 4096. Applies to the memory result store too.
   */
  maxResultBytes?: number;
  /**
   * When the worker reads a task's stored state before writing its result, so that a stored
   * SUCCESS is never replaced by a later FAILURE, REVOKED or RETRY row (Celery 5.7's "keep the
   * first SUCCESS"). `'auto'` (default): before every write that is not a SUCCESS, and before any
   * write for a message that may be a second copy (redelivered by RabbitMQ, or marked so by the
   * Producer or worker that published it again); a SUCCESS of a fresh message is written without a
   * read — a task id published twice by a client then stores its second SUCCESS after the first
   * (the newest row is what readers see; Celery 5.7 keeps the first value). `'always'`: before
   * every write, Celery 5.7's rule to the letter, one Cassandra read per task more.
   * `'redelivered'`: only for messages that may be second copies; a task id that is published
   * twice can then replace a stored SUCCESS with a FAILURE.
   */
  successCheck?: 'auto' | 'always' | 'redelivered';
  /**
   * Celery's `worker_eta_task_limit`: how many ETA/countdown tasks waiting for their time may each
   * raise the prefetch by one, so that they do not hold up the tasks behind them. Default 10000
   * (Celery: no limit). Beyond it, further ETA tasks wait in ordinary prefetch slots, and once
   * those are all taken by waiting tasks the queue waits too: the bound on the memory they hold.
   */
  etaTaskLimit?: number;
  /** Celery's `worker_disable_rate_limits`: ignore every task's `rateLimit` (shared ones too) in this worker. Default false. */
  disableRateLimits?: boolean;
  /**
   * This worker's node name, `name@host` (Celery's `-n`): its pidbox queue for remote control, STARTED
   * rows, the task context. Celery's tokens are expanded: `%h` hostname, `%n` its name part, `%d` its
   * domain, `%i` / `%I` pool process index (`0` / empty: one process), `%p` the pid. Default
   * `nestjs-<pid>@<hostname>`: unique per process, as each node needs a pidbox queue of its own.
   */
  hostname?: string;
  /** Celery's `worker_enable_remote_control`: answer `celery inspect` / `celery control` (the pidbox broadcast). Default true. */
  enableRemoteControl?: boolean;
  /**
   * Remote control: `refuse` lists commands this worker answers with an error instead of running
   * (anyone who can publish to the broker can send them): command names, or `'reshaping'` for
   * `shutdown`, `add_consumer`, `cancel_consumer`, `time_limit` and `rate_limit`.
   */
  remoteControl?: { refuse?: string[] | 'reshaping' };
  /**
   * Run tasks inside the AsyncLocalStorage behind `CeleryTaskContext` and `currentTask()`. Default:
   * on when a provider injects `CeleryTaskContext`, else off — on Node 20 a live AsyncLocalStorage
   * makes every promise of the process dearer. `@TaskContext()` parameters work either way.
   */
  taskContextStorage?: boolean;
  /** Worker threads for isolated tasks (`@Task({ isolate: 'thread' })`), started on first use. Default `os.availableParallelism()`. */
  isolatedThreads?: number;
  /**
   * Celery's `worker_send_task_events` (`-E`): send task events (`task-received`, `task-started`,
   * `task-succeeded`, ...) to the `celeryev` exchange for Flower and `celery events`. Switchable at
   * run time by remote control (`enable_events` / `disable_events`). Default false.
   */
  sendTaskEvents?: boolean;
  /**
   * Celery's `--statedb` (`worker_state_db`): keep revoked task ids across restarts, so a task
   * revoked before a restart is still not run when it is delivered after it. A file path (one
   * worker per file, JSON lines written as each revoke comes), or `{ table }`: a Cassandra table in
   * the result keyspace shared by every worker naming it (needs `resultBackend: 'cassandra'`).
   * Default none: revoked ids live in memory only.
   */
  stateDb?: string | { table: string };
  /**
   * Celery's Mingle at start (`--without-mingle` is `false`): `hello` to every node, merging the
   * revoked ids they answer with and their clock, before consuming. Default true with an AMQP
   * broker, false with `memory://` (Celery mingles on amqp and redis only).
   */
  mingle?: boolean;
  /** How long mingle waits for the next reply (Celery: 1 s); a worker alone waits this long at start. Default 1000. */
  mingleTimeoutMs?: number;
  /**
   * Celery's `--without-heartbeat`: send no `worker-online` / `worker-heartbeat` / `worker-offline`
   * events (monitors then never see this worker). Default false: they are sent, as by every Celery worker.
   */
  withoutHeartbeat?: boolean;
  /**
   * Celery's `worker_detect_quorum_queues`: when some configured queue is a quorum queue, set the
   * prefetch per consumer (`basic.qos` global=false; RabbitMQ refuses global QoS on quorum queues).
   * The prefetch is then static: held ETA tasks occupy prefetch slots. Default true.
   */
  detectQuorumQueues?: boolean;
  /**
   * RabbitMQ's `consumer_timeout` (default 30 minutes): a message held unacknowledged longer makes
   * RabbitMQ close the channel. An ETA task held in memory longer than half of this is published
   * again (confirmed) to its queue and its delivery acknowledged, so the channel is never closed.
   * 0: never (a broker with consumer_timeout disabled). Default 1800000.
   */
  consumerTimeoutMs?: number;
}

// ---- rate limits (issue 12 item 4) ----
/**
 * Where and how rate limits shared by all workers (`@Task({ rateLimit: { global } })`) are kept:
 * a Cassandra table in the result keyspace, claimed by lightweight transactions (README, Rate limits).
 */
export interface GlobalRateLimitOptions {
  /** Table name, created when missing (never the keyspace). Default `celery_rate_limits`. */
  table?: string;
  /** Paxos consistency of the claims: `SERIAL` (default; every data center agrees) or `LOCAL_SERIAL` (workers of one data center share a limit). */
  serialConsistency?: 'SERIAL' | 'LOCAL_SERIAL';
  /** How far ahead a worker reserves start times, ms; more means fewer claims and coarser sharing between workers. Default 500. */
  reserveAheadMs?: number;
  /** A reserved start missed by more than this (a slow claim, a busy event loop) is given up rather than used late, ms. Default 25. */
  maxLateMs?: number;
}
// ---- end rate limits ----

// ---- chords (issue 13 item 4) ----
/** How chords sent by `Producer.chord()` complete, and where counter-mode chords keep their rows. */
export interface ChordOptions {
  /**
   * `unlock` (default, as Celery on Cassandra): `celery.chord_unlock` polls the header results
   * every `interval`; works whoever runs the header tasks. `counter`: no chord_unlock; each header
   * task records itself in the chord's row once its result is stored and the last one publishes
   * the body — only when every header task runs on a NestJS worker. `Producer.chord(..., { completion })` wins.
   */
  completion?: 'unlock' | 'counter';
  /** The per-chord table of counter mode, in the result keyspace, created when missing. Default `celery_chords`. */
  table?: string;
  /** Paxos consistency of the claim that lets one header task publish the body. Default `SERIAL`. */
  serialConsistency?: 'SERIAL' | 'LOCAL_SERIAL';
}
// ---- end chords ----

/**
 * `CeleryModule.forRoot()` options, camelCase. A Python `celeryconfig` with its snake_case keys
 * (`broker_url`, `result_backend`, `cassandra_servers`, ...) is accepted too, see {@link PythonCeleryConfig}.
 */
export interface CeleryModuleOptions {
  /** `amqp://`, `amqps://` (also kombu's `pyamqp://`), or `memory://` (default) for an in-process broker. */
  brokerUrl?: string;
  /** TLS settings for an `amqps://` broker (Celery's `broker_use_ssl`). */
  brokerTls?: TlsOptions;
  /**
   * `cassandra` (`cassandra://`), `memory` (`memory://`), or `none` (`disabled`).
   * Default: `memory` with the memory broker, otherwise `none`.
   */
  resultBackend?: string;
  cassandra?: CassandraOptions;
  /** Queue for tasks sent without one. Default `celery`. */
  defaultQueue?: string;
  /**
   * Arguments every queue is declared with, e.g. `{ 'x-dead-letter-exchange': 'celery.dlx' }` so
   * rejected messages are dead-lettered. They must match how the queue was declared before (Python
   * side: `Queue(..., queue_arguments=...)`), or RabbitMQ refuses the declaration.
   */
  queueArguments?: Record<string, unknown>;
  /**
   * Celery's `task_routes`: task name or glob (`'reports.*'`) → queue name, or
   * `{ queue, exchange, exchangeType, routingKey, priority }`; also a function
   * `(name, args, kwargs, options) => target | null`, or a list of maps and functions (first match wins).
   */
  taskRoutes?: TaskRoutesInput;
  /**
   * Celery's `task_queues` (as a dict): queue name → `{ exchange, exchangeType, routingKey, arguments }`.
   * Default: only `defaultQueue`.
   */
  taskQueues?: Record<string, QueueDefinition>;
  /** Celery's `task_default_exchange`. Default: the default queue's name. */
  defaultExchange?: string;
  /** Celery's `task_default_exchange_type`: `direct` (default), `topic`, `fanout` or `headers`. */
  defaultExchangeType?: ExchangeType;
  /** Celery's `task_default_routing_key`. Default: the default queue's name. */
  defaultRoutingKey?: string;
  /** Celery's `task_queue_max_priority`: `x-max-priority` on every queue that does not set its own. */
  queueMaxPriority?: number;
  /** Celery's `task_default_queue_type` (5.5+): the default queue's type, when `taskQueues` is not given. Default `classic`. */
  queueType?: QueueType;
  /** Celery's `task_create_missing_queue_type` (5.6+): type of queues not in `taskQueues`. Default `classic`. */
  createMissingQueueType?: QueueType;
  /** Celery's `broker_native_delayed_delivery_queue_type`: type of the `celery_delayed_*` queues. Default `quorum`. */
  delayedDeliveryQueueType?: QueueType;
  /** Celery's `task_default_priority`: the priority of sends that give none. */
  defaultPriority?: number;
  worker?: WorkerOptions;
  /** Only `json` is supported, as with Celery's Cassandra backend. */
  taskSerializer?: string;
  resultSerializer?: string;
  /** Content types the worker accepts; only `json` / `application/json`. */
  acceptContent?: string[];
  /** Retry the first broker connection instead of failing at startup. Default true. */
  brokerConnectionRetryOnStartup?: boolean;
  /** Celery's `enable_utc`; only `true` is supported (all times travel as UTC). */
  enableUtc?: boolean;
  /** Celery version of the peers: `5.2` leaves out the 5.3+ stamping headers. Default `5.3`. */
  peerCompat?: PeerCompat;
  /** How long `Producer` waits for a lost broker connection to come back before a send rejects. Default 30000 ms. */
  publishTimeoutMs?: number;
  /** How often `AsyncResult.get()` polls a store that cannot notify. Default 100 ms, backing off to 500 ms. */
  resultPollIntervalMs?: number;
  /** Make the module global. Default true. */
  isGlobal?: boolean;
  /** Limits shared by all workers (rate limits, issue 12 item 4). */
  globalRateLimits?: GlobalRateLimitOptions;
  /** Periodic tasks: `@Periodic()` methods and a Celery `beat_schedule`, sent once per tick across replicas. */
  scheduler?: SchedulerOptions;
  /** How chords complete (README, Workflows: "How a chord completes"). */
  chords?: ChordOptions;
  /** Prometheus metrics through the optional peer prom-client (README, "Metrics"). Default off. */
  metrics?: MetricsOptions;

  // --- task defaults (Celery's task_* settings); a task's own @Task() options win ---
  /** Hard time limit in seconds of every task (`task_time_limit`). Default none. */
  taskTimeLimit?: number;
  /** Soft time limit in seconds of every task (`task_soft_time_limit`). Default none. */
  taskSoftTimeLimit?: number;
  /** Store a STARTED row before a task runs (`task_track_started`). Default false. */
  taskTrackStarted?: boolean;
  /** Store no results (`task_ignore_result`). Default false. */
  taskIgnoreResult?: boolean;
  /** With ignored results, still store FAILURE and RETRY rows (`task_store_errors_even_if_ignored`). Default false. */
  taskStoreErrorsEvenIfIgnored?: boolean;

  // --- result options ---
  /**
   * Celery's `result_extended`: each stored state also records the task's name, args, kwargs,
   * worker, retries and queue (and parent and group ids), read back with `AsyncResult.extended()`.
   * On Cassandra they go to extra nullable columns a worker adds to Celery's table (ALTER TABLE
   * ADD); Python's readers and writers keep working on it. Default false.
   */
  resultExtended?: boolean;

  // --- events ---
  /** Celery's `task_send_sent_event`: the Producer sends a `task-sent` event for each task it publishes. Default false. */
  taskSendSentEvent?: boolean;
}

/** A Python celeryconfig, as written (snake_case keys). */
export interface PythonCeleryConfig {
  broker_url?: string;
  /** `{ca_certs, certfile, keyfile, cert_reqs}` as kombu takes them; cert_reqs `CERT_REQUIRED` (default), `CERT_NONE`, or ssl's numbers. */
  broker_use_ssl?: { ca_certs?: string; certfile?: string; keyfile?: string; cert_reqs?: string | number; server_hostname?: string } | boolean;
  result_backend?: string;
  cassandra_servers?: string[];
  cassandra_port?: number;
  cassandra_keyspace?: string;
  cassandra_table?: string;
  cassandra_read_consistency?: string;
  cassandra_write_consistency?: string;
  cassandra_entry_ttl?: number;
  cassandra_auth_provider?: string;
  cassandra_auth_kwargs?: { username?: string; password?: string };
  cassandra_secure_bundle_path?: string;
  task_serializer?: string;
  result_serializer?: string;
  accept_content?: string[];
  broker_connection_retry_on_startup?: boolean;
  enable_utc?: boolean;
  task_default_queue?: string;
  worker_concurrency?: number;
  worker_prefetch_multiplier?: number;
  worker_eta_task_limit?: number;
  worker_disable_rate_limits?: boolean;
  worker_enable_remote_control?: boolean;
  task_time_limit?: number;
  task_soft_time_limit?: number;
  task_track_started?: boolean;
  task_ignore_result?: boolean;
  task_store_errors_even_if_ignored?: boolean;
  /** Celery's `result_extended` (see `resultExtended`). */
  result_extended?: boolean;
  /** Celery's `beat_schedule`, as written (see `scheduler.schedule`). */
  beat_schedule?: Record<string, BeatScheduleEntry>;
  /** Celery's `timezone`: the time zone of crontab schedules (see `scheduler.timezone`). */
  timezone?: string;
  /** Celery's `worker_send_task_events` (see `worker.sendTaskEvents`). */
  worker_send_task_events?: boolean;
  /** Celery's `task_send_sent_event` (see `taskSendSentEvent`). */
  task_send_sent_event?: boolean;
  worker_detect_quorum_queues?: boolean;
  /** `{ 'tasks.add': 'math', 'reports.*': { queue: 'reports', routing_key: 'reports.daily' } }` (snake_case or camelCase keys). */
  task_routes?: TaskRoutesInput | Record<string, string | Record<string, unknown>>;
  /** `{ name: { exchange, exchange_type, routing_key / binding_key, queue_arguments } }` */
  task_queues?: Record<string, Record<string, unknown>>;
  task_default_exchange?: string;
  task_default_exchange_type?: ExchangeType;
  task_default_routing_key?: string;
  task_queue_max_priority?: number;
  task_default_queue_type?: QueueType;
  task_create_missing_queue_type?: QueueType;
  broker_native_delayed_delivery_queue_type?: QueueType;
  task_default_priority?: number;
}

export type CeleryOptionsInput = CeleryModuleOptions | PythonCeleryConfig | (CeleryModuleOptions & PythonCeleryConfig);

/** One entry of Celery's `beat_schedule`, as written in a celeryconfig. */
export interface BeatScheduleEntry {
  /** The task's name (any language). */
  task: string;
  /**
   * Seconds between ticks (aligned to the clock), Celery's `crontab()` fields
   * `{ minute, hour, day_of_week, day_of_month, month_of_year }` (each default `*`; both day fields
   * must match, as Celery's), or a cron string (5 fields, or 6 with seconds).
   */
  schedule: number | string | { minute?: string | number; hour?: string | number; day_of_week?: string | number; day_of_month?: string | number; month_of_year?: string | number };
  args?: unknown[];
  kwargs?: Record<string, unknown>;
  /** `apply_async` options: queue, exchange, routing_key, priority, expires (seconds), countdown, headers, ignore_result, time_limit, soft_time_limit, compression (snake_case or camelCase). */
  options?: Record<string, unknown>;
}

/** Periodic tasks (`scheduler`). */
export interface SchedulerOptions {
  /**
   * Run the scheduler in this process. Default: on when there is a schedule (`@Periodic()` or
   * `schedule`). Safe in every replica with the Cassandra result backend (claims are shared); without
   * Cassandra, claims live in the process, so turn it on in one process only.
   */
  enabled?: boolean;
  /** Celery's `beat_schedule`: name → `{ task, schedule, args, kwargs, options }`. */
  schedule?: Record<string, BeatScheduleEntry>;
  /** Time zone of cron schedules that give none (Celery's `timezone`). Default `UTC`. */
  timezone?: string;
  /** The Cassandra table of tick claims, beside Celery's in the result keyspace. Default `celery_periodic_ticks`. */
  table?: string;
  /**
   * A tick claimed but not marked sent this long is taken over by another replica: the bound on
   * the delay of a tick whose sender died. A sender still publishing after it may see its tick sent
   * twice (same task id). Default `publishTimeoutMs` + 5000 (35000 ms): a sender has given up or
   * been confirmed before its claim is taken over.
   */
  claimTimeoutMs?: number;
  /** Oldest missed tick sent on start or after a gap (one per schedule); older ones are skipped. Default 60000 ms. */
  catchUpMs?: number;
  /** Paxos consistency of the claims: `SERIAL` (default) or `LOCAL_SERIAL` (one data center). */
  serialConsistency?: 'SERIAL' | 'LOCAL_SERIAL';
}
