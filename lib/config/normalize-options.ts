import { hostname as osHostname } from 'node:os';
import { CeleryConfigError } from '../errors/celery.errors';
import type { CassandraOptions, CeleryModuleOptions, CeleryOptionsInput, WorkerOptions } from '../interfaces/celery-options.interface';
import { DEFAULT_MAX_RESULT_BYTES } from '../results/store-errors';
import type { ResolvedCassandraConfig, ResolvedCeleryConfig, ResolvedChordConfig, ResolvedRateLimitConfig, ResolvedSchedulerConfig, ResolvedTls } from './resolved-config';
import { PeriodicEntryError, resolveBeatEntry } from '../scheduler/periodic-entry';
import { CronSchedule } from '../scheduler/schedule';
import { EXCHANGE_TYPES, prepareRouters, QueueTable, type QueueDefinition, type QueueType, type RoutingSettings, type TaskRoutesInput } from '../protocol/routing';

/**
 * Validates `forRoot` options and fills in defaults. Accepts camelCase options and a Python
 * celeryconfig's snake_case keys alike; any unknown key or bad value is a CeleryConfigError that
 * names the key, so a typo fails at startup rather than silently falling back.
 */
export function normalizeCeleryOptions(input: CeleryOptionsInput | undefined | null): ResolvedCeleryConfig {
  const options = fromPythonConfig(input ?? {});
  try {
    return resolve(options);
  } catch (err) {
    // Name the key as the user wrote it: `cassandra_port`, not the option it maps to.
    const written = err instanceof CeleryConfigError && !err.writtenAs ? options.writtenAs?.get(err.key) : undefined;
    throw written ? new CeleryConfigError((err as CeleryConfigError).key, (err as CeleryConfigError).detail, written) : err;
  }
}

// ---- rate limits (issue 12 item 4): worker.disableRateLimits and globalRateLimits; resolved at the end of this file ----
const RATE_LIMIT_KEYS = ['globalRateLimits'];
const RATE_LIMIT_WORKER_KEYS = ['disableRateLimits'];
const RATE_LIMIT_PYTHON_KEYS: Record<string, string> = { worker_disable_rate_limits: 'worker.disableRateLimits' };
const GLOBAL_RATE_LIMIT_KEYS = new Set(['table', 'serialConsistency', 'reserveAheadMs', 'maxLateMs']);
// ---- end rate limits ----
// ---- chords (issue 13 item 4): how chords complete; resolved at the end of this file ----
const CHORD_KEYS = new Set(['completion', 'table', 'serialConsistency']);
// ---- end chords ----

// ---- periodic tasks (issue 15 item 5): scheduler.*, Celery's beat_schedule and timezone; resolved at the end of this file ----
const SCHEDULER_PYTHON_KEYS: Record<string, string> = { beat_schedule: 'scheduler.schedule', timezone: 'scheduler.timezone' };
const SCHEDULER_KEYS = new Set(['enabled', 'schedule', 'timezone', 'table', 'claimTimeoutMs', 'catchUpMs', 'serialConsistency']);
// ---- end periodic tasks ----

const CAMEL_KEYS = new Set([
  'brokerUrl', 'brokerTls', 'resultBackend', 'queueArguments', 'cassandra', 'defaultQueue', 'worker', 'taskSerializer', 'resultSerializer',
  'acceptContent', 'brokerConnectionRetryOnStartup', 'enableUtc', 'peerCompat', 'resultPollIntervalMs', 'isGlobal', 'publishTimeoutMs',
  ...RATE_LIMIT_KEYS,
  'scheduler',
  'chords',
  // task defaults (issue 12)
  'taskTimeLimit', 'taskSoftTimeLimit', 'taskTrackStarted', 'taskIgnoreResult', 'taskStoreErrorsEvenIfIgnored',
  'taskRoutes', 'taskQueues', 'defaultExchange', 'defaultExchangeType', 'defaultRoutingKey', 'queueMaxPriority', 'queueType',
  'createMissingQueueType', 'delayedDeliveryQueueType', 'defaultPriority',
]);
const CASSANDRA_KEYS = new Set([
  'contactPoints', 'port', 'localDataCenter', 'keyspace', 'table', 'readConsistency', 'writeConsistency',
  'entryTtl', 'credentials', 'secureConnectBundle', 'token', 'createKeyspace', 'tls',
]);
/** Smallest `worker.maxResultBytes`: room for the FAILURE row that says a result was too large. */
const MIN_RESULT_BYTES = 4096;
const WORKER_KEYS = new Set([
  'enabled', 'queues', 'concurrency', 'prefetch', 'shutdownTimeoutMs', 'maxMessageBytes', 'maxResultBytes', 'successCheck', 'etaTaskLimit',
  'detectQuorumQueues', 'consumerTimeoutMs', 'hostname', 'taskContextStorage', 'isolatedThreads',
  'enableRemoteControl', 'remoteControl',
  ...RATE_LIMIT_WORKER_KEYS,
]);

/** celeryconfig key → the camelCase option it sets (`cassandra.port` = `cassandra: { port }`). */
const PYTHON_KEYS: Record<string, string> = {
  broker_url: 'brokerUrl',
  broker_use_ssl: 'pythonBrokerUseSsl',
  result_backend: 'resultBackend',
  cassandra_servers: 'cassandra.contactPoints',
  cassandra_port: 'cassandra.port',
  cassandra_keyspace: 'cassandra.keyspace',
  cassandra_table: 'cassandra.table',
  cassandra_read_consistency: 'cassandra.readConsistency',
  cassandra_write_consistency: 'cassandra.writeConsistency',
  cassandra_entry_ttl: 'cassandra.entryTtl',
  cassandra_auth_provider: 'pythonAuthProvider',
  cassandra_auth_kwargs: 'pythonAuthKwargs',
  cassandra_secure_bundle_path: 'cassandra.secureConnectBundle',
  task_serializer: 'taskSerializer',
  result_serializer: 'resultSerializer',
  accept_content: 'acceptContent',
  broker_connection_retry_on_startup: 'brokerConnectionRetryOnStartup',
  enable_utc: 'enableUtc',
  task_default_queue: 'defaultQueue',
  worker_concurrency: 'worker.concurrency',
  worker_prefetch_multiplier: 'prefetchMultiplier',
  worker_eta_task_limit: 'worker.etaTaskLimit',
  ...RATE_LIMIT_PYTHON_KEYS,
  ...SCHEDULER_PYTHON_KEYS,
  // task defaults (issue 12)
  task_time_limit: 'taskTimeLimit',
  task_soft_time_limit: 'taskSoftTimeLimit',
  task_track_started: 'taskTrackStarted',
  task_ignore_result: 'taskIgnoreResult',
  task_store_errors_even_if_ignored: 'taskStoreErrorsEvenIfIgnored',
  worker_detect_quorum_queues: 'worker.detectQuorumQueues',
  worker_enable_remote_control: 'worker.enableRemoteControl',
  task_routes: 'taskRoutes',
  task_queues: 'taskQueues',
  task_default_exchange: 'defaultExchange',
  task_default_exchange_type: 'defaultExchangeType',
  task_default_routing_key: 'defaultRoutingKey',
  task_queue_max_priority: 'queueMaxPriority',
  task_default_queue_type: 'queueType',
  task_create_missing_queue_type: 'createMissingQueueType',
  broker_native_delayed_delivery_queue_type: 'delayedDeliveryQueueType',
  task_default_priority: 'defaultPriority',
};

// --- metrics (issue 15 item 3) ---
CAMEL_KEYS.add('metrics');
const METRICS_KEYS = new Set(['enabled', 'registry', 'prefix']);

/** `metrics: { enabled, registry, prefix }`, checked (the registry is kept as given: prom-client is not loaded here). */
function resolveMetricsOptions(o: Mutable): Pick<ResolvedCeleryConfig, 'metrics'> {
  const m = o.metrics ?? {};
  if (typeof m !== 'object' || m === null || Array.isArray(m)) throw new CeleryConfigError('metrics', 'must be an object { enabled, registry, prefix }');
  for (const key of Object.keys(m)) if (!METRICS_KEYS.has(key)) throw new CeleryConfigError(`metrics.${key}`, `unknown option${suggest(key)}`);
  const registry = (m as Record<string, unknown>).registry;
  if (registry !== undefined && registry !== null && (typeof registry !== 'object' || typeof (registry as { registerMetric?: unknown }).registerMetric !== 'function')) {
    throw new CeleryConfigError('metrics.registry', 'must be a prom-client Registry');
  }
  const prefix = optString(m.prefix, 'metrics.prefix') ?? 'celery_';
  if (prefix !== '' && !/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(prefix)) throw new CeleryConfigError('metrics.prefix', `${JSON.stringify(prefix)} is not a valid start of a Prometheus metric name`);
  return { metrics: { enabled: optBool(m.enabled, 'metrics.enabled') ?? false, registry: (registry as object | undefined) ?? null, prefix } };
}
// --- end of metrics ---

// --- result states and options (Celery's result_extended) ---
CAMEL_KEYS.add('resultExtended');
PYTHON_KEYS.result_extended = 'resultExtended';

// --- events (issue 14 item 1) ---
CAMEL_KEYS.add('taskSendSentEvent');
WORKER_KEYS.add('sendTaskEvents');
WORKER_KEYS.add('withoutHeartbeat');
PYTHON_KEYS.worker_send_task_events = 'worker.sendTaskEvents';
PYTHON_KEYS.task_send_sent_event = 'taskSendSentEvent';

/** The event options, resolved: Celery's `worker_send_task_events`, `--without-heartbeat` and `task_send_sent_event`. */
function resolveEventOptions(o: Mutable, w: WorkerOptions): Pick<ResolvedCeleryConfig, 'events'> {
  return {
    events: {
      sendTaskEvents: optBool(w.sendTaskEvents, 'worker.sendTaskEvents') ?? false,
      withoutHeartbeat: optBool(w.withoutHeartbeat, 'worker.withoutHeartbeat') ?? false,
      taskSendSentEvent: optBool(o.taskSendSentEvent, 'taskSendSentEvent') ?? false,
    },
  };
}
// --- end of events ---

// --- revokes across restarts and mingle (issue 14 item 5) ---
WORKER_KEYS.add('stateDb');
WORKER_KEYS.add('mingle');
WORKER_KEYS.add('mingleTimeoutMs');
PYTHON_KEYS.worker_state_db = 'worker.stateDb';

/** `worker.stateDb` (Celery's `worker_state_db`): a file path, or `{ table }` in the Cassandra result keyspace. */
function resolveStateDb(value: unknown, resultBackend: string): ResolvedCeleryConfig['worker']['stateDb'] {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') {
    if (value.trim() === '') throw new CeleryConfigError('worker.stateDb', 'must be a file path or { table }, got an empty string');
    return { file: value };
  }
  if (typeof value === 'object' && !Array.isArray(value)) {
    for (const key of Object.keys(value)) if (key !== 'table') throw new CeleryConfigError(`worker.stateDb.${key}`, 'unknown option (only table)');
    const table = (value as { table?: unknown }).table;
    if (typeof table !== 'string' || !/^[A-Za-z][A-Za-z0-9_]{0,47}$/.test(table)) {
      throw new CeleryConfigError('worker.stateDb.table', `must be a CQL table name (letters, digits, _), got ${JSON.stringify(table)}`);
    }
    if (resultBackend !== 'cassandra') throw new CeleryConfigError('worker.stateDb.table', "a Cassandra table needs resultBackend 'cassandra' (use a file path otherwise)");
    return { table };
  }
  throw new CeleryConfigError('worker.stateDb', `must be a file path or { table }, got ${JSON.stringify(value)}`);
}

/** `worker.mingle` defaults to on with AMQP, off with the in-process memory broker (Celery mingles on amqp and redis only). */
function resolveMingle(w: WorkerOptions, resultBackend: string, broker: 'amqp' | 'memory'): Pick<ResolvedCeleryConfig['worker'], 'stateDb' | 'mingle' | 'mingleTimeoutMs'> {
  return {
    stateDb: resolveStateDb(w.stateDb, resultBackend),
    mingle: optBool(w.mingle, 'worker.mingle') ?? broker === 'amqp',
    mingleTimeoutMs: optInt(w.mingleTimeoutMs, 'worker.mingleTimeoutMs', 1) ?? 1000,
  };
}
// --- end of revokes across restarts ---

/** The result options, resolved: `resultExtended` (Celery's `result_extended`, default false). */
function resolveResultOptions(o: Mutable): Pick<ResolvedCeleryConfig, 'resultExtended'> {
  return { resultExtended: optBool(o.resultExtended, 'resultExtended') ?? false };
}
// --- end of result options ---

type Mutable = CeleryModuleOptions & {
  cassandra?: Partial<CassandraOptions>;
  pythonAuthProvider?: unknown;
  pythonAuthKwargs?: unknown;
  prefetchMultiplier?: unknown;
  pythonBrokerUseSsl?: unknown;
  /** option path → the celeryconfig key that set it */
  writtenAs?: Map<string, string>;
};

function cassandra(o: Mutable): Partial<CassandraOptions> {
  return (o.cassandra ??= {} as CassandraOptions);
}

function setPath(o: Mutable, path: string, value: unknown): void {
  const [head, tail] = path.split('.');
  const target = o as Record<string, unknown>;
  if (!tail) {
    target[head] = value;
    return;
  }
  const nested = (target[head] ??= {}) as Record<string, unknown>;
  nested[tail] = value;
}

function fromPythonConfig(input: object): Mutable {
  if (typeof input !== 'object' || Array.isArray(input)) {
    throw new CeleryConfigError('options', 'must be an object');
  }
  const out: Mutable = {};
  const source = input as Record<string, unknown>;
  for (const key of Object.keys(source)) {
    const value = source[key];
    if (value === undefined) continue;
    if (CAMEL_KEYS.has(key)) {
      if (key === 'cassandra' || key === 'worker' || key === 'globalRateLimits' || key === 'scheduler' || key === 'chords') {
        if (typeof value !== 'object' || value === null || Array.isArray(value)) {
          throw new CeleryConfigError(key, 'must be an object');
        }
        (out as Record<string, unknown>)[key] = { ...(out as Record<string, object>)[key], ...value };
      } else (out as Record<string, unknown>)[key] = value;
      continue;
    }
    const path = PYTHON_KEYS[key];
    if (!path) throw new CeleryConfigError(key, `unknown option${suggest(key)}`);
    setPath(out, path, value);
    if (path !== 'prefetchMultiplier') (out.writtenAs ??= new Map()).set(path, key);
  }
  applyPythonAuth(out);
  applyPythonBrokerSsl(out);
  return out;
}

/** kombu's `broker_use_ssl`: `True`, or `{ca_certs, certfile, keyfile, cert_reqs}`. */
function applyPythonBrokerSsl(out: Mutable): void {
  const ssl = out.pythonBrokerUseSsl;
  if (ssl === undefined || ssl === false || ssl === null) return;
  if (ssl === true) {
    out.brokerTls = {};
    return;
  }
  if (typeof ssl !== 'object' || Array.isArray(ssl)) throw new CeleryConfigError('broker_use_ssl', 'must be true or {ca_certs, certfile, keyfile, cert_reqs}');
  const s = ssl as Record<string, unknown>;
  for (const key of Object.keys(s)) {
    if (!['ca_certs', 'certfile', 'keyfile', 'cert_reqs', 'server_hostname'].includes(key)) throw new CeleryConfigError(`broker_use_ssl.${key}`, 'unknown option');
  }
  const reqs = s.cert_reqs;
  const none = reqs === 'CERT_NONE' || reqs === 0 || reqs === 'ssl.CERT_NONE';
  if (reqs !== undefined && !none && !['CERT_REQUIRED', 'ssl.CERT_REQUIRED', 2, 'CERT_OPTIONAL', 'ssl.CERT_OPTIONAL', 1].includes(reqs as string | number)) {
    throw new CeleryConfigError('broker_use_ssl.cert_reqs', `must be CERT_REQUIRED, CERT_OPTIONAL or CERT_NONE, got ${JSON.stringify(reqs)}`);
  }
  out.brokerTls = {
    ca: s.ca_certs as string | undefined,
    cert: s.certfile as string | undefined,
    key: s.keyfile as string | undefined,
    servername: s.server_hostname as string | undefined,
    rejectUnauthorized: !none,
  };
}

function resolveQueueArguments(value: unknown): Record<string, unknown> | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'object' || Array.isArray(value)) throw new CeleryConfigError('queueArguments', 'must be an object of x-arguments');
  return { ...(value as Record<string, unknown>) };
}

/** RabbitMQ's default `consumer_timeout` (3.8.17+): 30 minutes. */
const DEFAULT_CONSUMER_TIMEOUT_MS = 30 * 60 * 1000;

function resolveRouting(
  o: Mutable,
  defaultQueue: string,
  queueArguments: Record<string, unknown> | null,
  taskQueues: [string, QueueDefinition][],
  workerQueues: string[],
): RoutingSettings {
  const defaultExchange = optString(o.defaultExchange, 'defaultExchange') || defaultQueue;
  const maxPriority = o.queueMaxPriority;
  if (maxPriority !== undefined && maxPriority !== null && (typeof maxPriority !== 'number' || !Number.isInteger(maxPriority) || maxPriority < 1 || maxPriority > 255)) {
    throw new CeleryConfigError('queueMaxPriority', `must be an integer 1-255 (RabbitMQ's x-max-priority), got ${JSON.stringify(maxPriority)}`);
  }
  let routers;
  try {
    routers = prepareRouters(resolveRoutes(o.taskRoutes));
  } catch (err) {
    if (err instanceof CeleryConfigError) throw err;
    throw new CeleryConfigError('taskRoutes', (err as Error).message);
  }
  return {
    defaultQueue,
    defaultExchange,
    defaultExchangeType: optChoice(o.defaultExchangeType, 'defaultExchangeType', EXCHANGE_TYPES) ?? 'direct',
    defaultRoutingKey: optString(o.defaultRoutingKey, 'defaultRoutingKey') || defaultQueue,
    queueType: optChoice(o.queueType, 'queueType', QUEUE_TYPES) ?? 'classic',
    createMissingQueueType: optChoice(o.createMissingQueueType, 'createMissingQueueType', QUEUE_TYPES) ?? 'classic',
    queues: taskQueues,
    queueMaxPriority: (maxPriority as number | undefined) ?? null,
    queueArguments,
    routers,
    delayedDeliveryQueueType: optChoice(o.delayedDeliveryQueueType, 'delayedDeliveryQueueType', QUEUE_TYPES) ?? 'quorum',
    extraQueues: workerQueues,
  };
}

/**
 * What RabbitMQ refuses on quorum queues, found here rather than as a broker error at startup
 * (checked on RabbitMQ 3.10): `x-max-priority` (406 "invalid arg 'x-max-priority' ... of queue type
 * rabbit_quorum_queue"; Celery sends it all the same) and global QoS on a consumer (540
 * NOT_IMPLEMENTED "does not support global qos", which closes the whole connection).
 */
function checkQueueTypes(routing: RoutingSettings, detectQuorumQueues: boolean): void {
  const table = new QueueTable(routing);
  const quorum = table.all().filter((q) => q.arguments['x-queue-type'] === 'quorum');
  const prioritized = quorum.find((q) => q.arguments['x-max-priority'] !== undefined);
  if (prioritized) {
    const key = routing.queueMaxPriority !== null ? 'queueMaxPriority' : `taskQueues.${prioritized.name}.arguments`;
    throw new CeleryConfigError(
      key,
      `quorum queue ${prioritized.name} would be declared with x-max-priority, which RabbitMQ refuses on quorum queues (PRECONDITION_FAILED; Celery sends it and fails the same way): leave the priority out or make the queue classic`,
    );
  }
  if (quorum.length > 0 && !detectQuorumQueues) {
    throw new CeleryConfigError(
      'worker.detectQuorumQueues',
      `is false but ${quorum[0].name} is a quorum queue: RabbitMQ refuses global QoS on quorum queues (540 NOT_IMPLEMENTED closes the connection); leave it true`,
    );
  }
}

const QUEUE_TYPES: readonly QueueType[] = ['classic', 'quorum'];
/** Keys of a `taskQueues` entry: camelCase, or kombu's as a celeryconfig writes them. */
const QUEUE_DEFINITION_KEYS: Record<string, keyof QueueDefinition> = {
  exchange: 'exchange',
  exchangeType: 'exchangeType',
  exchange_type: 'exchangeType',
  routingKey: 'routingKey',
  routing_key: 'routingKey',
  bindingKey: 'routingKey',
  binding_key: 'routingKey',
  arguments: 'arguments',
  queueArguments: 'arguments',
  queue_arguments: 'arguments',
};

/** `taskQueues` / `task_queues`: `{ name: { exchange, exchangeType, routingKey, arguments } }`, or a list of `{ name, ... }`. */
function resolveTaskQueues(value: unknown): [string, QueueDefinition][] {
  if (value === undefined || value === null) return [];
  const entries: [string, unknown][] = Array.isArray(value)
    ? value.map((q, i) => {
        if (typeof q !== 'object' || q === null || typeof (q as { name?: unknown }).name !== 'string') throw new CeleryConfigError(`taskQueues[${i}]`, 'must be an object with a name');
        const { name, ...rest } = q as { name: string };
        return [name, rest];
      })
    : typeof value === 'object'
      ? Object.entries(value as Record<string, unknown>)
      : (() => {
          throw new CeleryConfigError('taskQueues', 'must be an object { queueName: { exchange, exchangeType, routingKey, arguments } }');
        })();
  return entries.map(([name, raw]) => {
    const where = `taskQueues.${name}`;
    if (!name) throw new CeleryConfigError('taskQueues', 'a queue name must not be empty');
    if (raw === null || raw === undefined) raw = {};
    if (typeof raw !== 'object' || Array.isArray(raw)) throw new CeleryConfigError(where, 'must be an object { exchange, exchangeType, routingKey, arguments }');
    const def: QueueDefinition = {};
    for (const [key, v] of Object.entries(raw as Record<string, unknown>)) {
      const target = QUEUE_DEFINITION_KEYS[key];
      if (!target) throw new CeleryConfigError(`${where}.${key}`, 'unknown option (use exchange, exchangeType, routingKey, arguments)');
      if (v === undefined || v === null) continue;
      if (target === 'arguments') {
        if (typeof v !== 'object' || Array.isArray(v)) throw new CeleryConfigError(`${where}.${key}`, 'must be an object of x-arguments');
        def.arguments = { ...(v as Record<string, unknown>) };
      } else if (target === 'exchangeType') def.exchangeType = optChoice(v, `${where}.${key}`, EXCHANGE_TYPES);
      else def[target] = optString(v, `${where}.${key}`);
    }
    const type = def.arguments?.['x-queue-type'];
    if (type !== undefined && type !== 'classic' && type !== 'quorum') throw new CeleryConfigError(`${where}.arguments`, `x-queue-type must be 'classic' or 'quorum', got ${JSON.stringify(type)}`);
    return [name, def];
  });
}

const ROUTE_TARGET_KEYS: Record<string, string> = { exchange_type: 'exchangeType', routing_key: 'routingKey' };

/** `taskRoutes` / `task_routes`: snake_case keys of route dicts become camelCase; functions stay as they are. */
function resolveRoutes(value: unknown): TaskRoutesInput | null {
  if (value === undefined || value === null) return null;
  const target = (t: unknown): unknown => {
    if (typeof t !== 'object' || t === null || Array.isArray(t)) return t;
    return Object.fromEntries(Object.entries(t as Record<string, unknown>).map(([k, v]) => [ROUTE_TARGET_KEYS[k] ?? k, v]));
  };
  const router = (r: unknown): unknown => {
    if (typeof r === 'function') return r;
    if (Array.isArray(r)) return r.map((pair) => (Array.isArray(pair) ? [pair[0], target(pair[1])] : pair));
    if (typeof r === 'object' && r !== null) return Object.fromEntries(Object.entries(r as Record<string, unknown>).map(([k, v]) => [k, target(v)]));
    throw new CeleryConfigError('taskRoutes', 'must be an object { taskNameOrGlob: queue | { queue, exchange, exchangeType, routingKey } }, a function, or a list of these');
  };
  if (Array.isArray(value) && !value.every((e) => Array.isArray(e) && e.length === 2 && (typeof e[0] === 'string' || e[0] instanceof RegExp))) {
    return value.map(router) as TaskRoutesInput;
  }
  return router(value) as TaskRoutesInput;
}

function optChoice<T extends string>(value: unknown, key: string, choices: readonly T[]): T | undefined {
  if (value === undefined || value === null) return undefined;
  if (!choices.includes(value as T)) throw new CeleryConfigError(key, `must be one of ${choices.map((c) => `'${c}'`).join(', ')}, got ${JSON.stringify(value)}`);
  return value as T;
}

function optPriority(value: unknown, key: string): number | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string' && /^\d+$/.test(value)) value = Number(value); // Celery's option type is 'string'
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 255) throw new CeleryConfigError(key, `must be an integer 0-255, got ${JSON.stringify(value)}`);
  return value;
}

function resolveTls(value: unknown, key: string): ResolvedTls | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'object' || Array.isArray(value)) throw new CeleryConfigError(key, 'must be an object {ca, cert, key, rejectUnauthorized, servername}');
  const t = value as Record<string, unknown>;
  for (const k of Object.keys(t)) {
    if (!['ca', 'cert', 'key', 'rejectUnauthorized', 'servername'].includes(k)) throw new CeleryConfigError(`${key}.${k}`, 'unknown option');
  }
  if ((t.cert === undefined) !== (t.key === undefined)) throw new CeleryConfigError(key, 'give cert and key together');
  return {
    ca: optString(t.ca, `${key}.ca`) ?? null,
    cert: optString(t.cert, `${key}.cert`) ?? null,
    key: optString(t.key, `${key}.key`) ?? null,
    rejectUnauthorized: optBool(t.rejectUnauthorized, `${key}.rejectUnauthorized`) ?? true,
    servername: optString(t.servername, `${key}.servername`) ?? null,
  };
}

function suggest(key: string): string {
  const lower = key.toLowerCase().replace(/_/g, '');
  const all = [...CAMEL_KEYS, ...Object.keys(PYTHON_KEYS)];
  const hit = all.find((k) => k.toLowerCase().replace(/_/g, '') === lower);
  return hit ? ` (did you mean "${hit}"?)` : '';
}

function applyPythonAuth(out: Mutable): void {
  if (out.pythonAuthKwargs === undefined) return; // Celery uses the provider only together with kwargs.
  const provider = out.pythonAuthProvider ?? 'PlainTextAuthProvider';
  if (provider !== 'PlainTextAuthProvider') {
    throw new CeleryConfigError('cassandra_auth_provider', `only PlainTextAuthProvider is supported, got ${JSON.stringify(provider)}`);
  }
  const kwargs = out.pythonAuthKwargs as { username?: unknown; password?: unknown };
  if (typeof kwargs !== 'object' || kwargs === null || typeof kwargs.username !== 'string' || typeof kwargs.password !== 'string') {
    throw new CeleryConfigError('cassandra_auth_kwargs', 'must be {username: string, password: string}');
  }
  cassandra(out).credentials = { username: kwargs.username, password: kwargs.password };
}

function resolve(o: Mutable): ResolvedCeleryConfig {
  const brokerUrl = optString(o.brokerUrl, 'brokerUrl') ?? 'memory://';
  const brokerKind = brokerKindOf(brokerUrl);
  const resultBackend = backendKindOf(o.resultBackend, brokerKind);
  for (const key of ['taskSerializer', 'resultSerializer'] as const) {
    const value = optString(o[key], key);
    if (value !== undefined && value !== 'json') {
      throw new CeleryConfigError(key, `only "json" is supported, got ${JSON.stringify(value)}`);
    }
  }
  const accept = resolveAccept(o.acceptContent);
  if (o.enableUtc === false) throw new CeleryConfigError('enableUtc', 'only true (UTC) is supported');
  optBool(o.enableUtc, 'enableUtc');
  optBool(o.isGlobal, 'isGlobal');
  const peerCompat = o.peerCompat ?? '5.3';
  if (peerCompat !== '5.2' && peerCompat !== '5.3') throw new CeleryConfigError('peerCompat', 'must be "5.2" or "5.3"');
  const defaultQueue = optString(o.defaultQueue, 'defaultQueue') ?? 'celery';
  if (!defaultQueue) throw new CeleryConfigError('defaultQueue', 'must not be empty');
  const w = o.worker ?? {};
  for (const key of Object.keys(w)) if (!WORKER_KEYS.has(key)) throw new CeleryConfigError(`worker.${key}`, 'unknown option');
  const concurrency = optInt(w.concurrency, 'worker.concurrency', 1) ?? 64;
  const multiplier = optInt(o.prefetchMultiplier, 'worker_prefetch_multiplier', 1) ?? 4;
  const prefetch = optInt(w.prefetch, 'worker.prefetch', 1) ?? concurrency * multiplier;
  const taskQueues = resolveTaskQueues(o.taskQueues);
  // Celery's worker without -Q consumes every queue of task_queues, else the default queue.
  const queues = w.queues ?? (taskQueues.length > 0 ? taskQueues.map(([name]) => name) : [defaultQueue]);
  if (!Array.isArray(queues) || queues.length === 0 || queues.some((q) => typeof q !== 'string' || !q)) {
    throw new CeleryConfigError('worker.queues', 'must be a non-empty list of queue names');
  }
  const cassandraConfig = o.cassandra ? resolveCassandra(o.cassandra, o.writtenAs) : null;
  const queueArguments = resolveQueueArguments(o.queueArguments);
  const routing = resolveRouting(o, defaultQueue, queueArguments, taskQueues, queues as string[]);
  const detectQuorumQueues = optBool(w.detectQuorumQueues, 'worker.detectQuorumQueues') ?? true;
  checkQueueTypes(routing, detectQuorumQueues);
  if (o.cassandra && o.resultBackend === undefined && resultBackend !== 'cassandra') {
    // Celery ignores cassandra_* keys without result_backend = 'cassandra://'; say so instead of storing elsewhere.
    // (An explicit other backend keeps the settings unused, for switching back and forth.)
    throw new CeleryConfigError(
      'resultBackend',
      `cassandra settings are given but the result backend is ${resultBackend}: set resultBackend to 'cassandra' (result_backend = 'cassandra://'), or drop the cassandra settings`,
    );
  }
  if (resultBackend === 'cassandra' && !cassandraConfig) {
    throw new CeleryConfigError('cassandra', 'resultBackend is cassandra but no cassandra settings (keyspace, contactPoints or secureConnectBundle) are given');
  }
  return {
    brokerUrl,
    brokerKind,
    brokerConnectionRetryOnStartup: optBool(o.brokerConnectionRetryOnStartup, 'brokerConnectionRetryOnStartup') ?? true,
    brokerTls: resolveTls(o.brokerTls, 'brokerTls'),
    resultBackend,
    cassandra: resultBackend === 'cassandra' ? cassandraConfig : null,
    defaultQueue,
    queueArguments,
    routing,
    defaultPriority: optPriority(o.defaultPriority, 'defaultPriority'),
    worker: {
      enabled: optBool(w.enabled, 'worker.enabled') ?? true,
      queues: [...queues],
      concurrency,
      prefetch,
      shutdownTimeoutMs: optInt(w.shutdownTimeoutMs, 'worker.shutdownTimeoutMs', 0) ?? 30000,
      maxMessageBytes: optInt(w.maxMessageBytes, 'worker.maxMessageBytes', 1) ?? 10 * 1024 * 1024,
      maxResultBytes: optInt(w.maxResultBytes, 'worker.maxResultBytes', MIN_RESULT_BYTES) ?? DEFAULT_MAX_RESULT_BYTES,
      successCheck: resolveSuccessCheck(w.successCheck),
      etaTaskLimit: optInt(w.etaTaskLimit, 'worker.etaTaskLimit', 0) ?? 10000,
      detectQuorumQueues,
      consumerTimeoutMs: optInt(w.consumerTimeoutMs, 'worker.consumerTimeoutMs', 0) ?? DEFAULT_CONSUMER_TIMEOUT_MS,
      hostname: resolveHostname(w.hostname),
      taskContextStorage: optBool(w.taskContextStorage, 'worker.taskContextStorage') ?? null,
      isolatedThreads: optInt(w.isolatedThreads, 'worker.isolatedThreads', 1) ?? null,
      enableRemoteControl: optBool(w.enableRemoteControl, 'worker.enableRemoteControl') ?? true,
      remoteControlRefuse: resolveRefuse(w.remoteControl),
      ...resolveMingle(w, resultBackend, brokerKind),
    },
    tasks: {
      timeLimit: optSeconds(o.taskTimeLimit, 'taskTimeLimit') ?? null,
      softTimeLimit: optSeconds(o.taskSoftTimeLimit, 'taskSoftTimeLimit') ?? null,
      trackStarted: optBool(o.taskTrackStarted, 'taskTrackStarted') ?? false,
      ignoreResult: optBool(o.taskIgnoreResult, 'taskIgnoreResult') ?? false,
      storeErrorsEvenIfIgnored: optBool(o.taskStoreErrorsEvenIfIgnored, 'taskStoreErrorsEvenIfIgnored') ?? false,
    },
    publishTimeoutMs: optInt(o.publishTimeoutMs, 'publishTimeoutMs', 0) ?? 30000,
    accept,
    peerCompat,
    resultPollIntervalMs: optInt(o.resultPollIntervalMs, 'resultPollIntervalMs', 1) ?? 100,
    rateLimits: resolveRateLimits(o, w),
    scheduler: resolveScheduler(o),
    chords: resolveChords(o),
    ...resolveResultOptions(o),
    ...resolveEventOptions(o, w),
    ...resolveMetricsOptions(o),
  };
}

/** The scheme of a URL for an error message; never more of the URL, which may hold a password. */
function schemeOf(url: string): string {
  const m = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url);
  return m ? JSON.stringify(m[1].toLowerCase() + '://') : 'a URL without a scheme';
}

function brokerKindOf(url: string): 'amqp' | 'memory' {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1].toLowerCase();
  if (scheme === 'memory') return 'memory';
  if (scheme === 'amqp' || scheme === 'amqps' || scheme === 'pyamqp') return 'amqp';
  throw new CeleryConfigError('brokerUrl', `unsupported broker: ${schemeOf(url)} (use amqp://, amqps:// or memory://)`);
}

function backendKindOf(value: unknown, broker: 'amqp' | 'memory'): 'cassandra' | 'memory' | 'none' {
  if (value === undefined || value === null) return broker === 'memory' ? 'memory' : 'none';
  if (typeof value !== 'string') throw new CeleryConfigError('resultBackend', 'must be a string');
  const v = value.toLowerCase();
  if (v === 'cassandra' || v.startsWith('cassandra://')) return 'cassandra';
  if (v === 'memory' || v === 'memory://' || v === 'cache+memory://') return 'memory';
  if (v === 'none' || v === 'disabled' || v === '') return 'none';
  throw new CeleryConfigError('resultBackend', `unsupported result backend: ${schemeOf(value)} (use cassandra://, memory:// or none)`);
}

function resolveAccept(value: unknown): string[] {
  if (value === undefined) return ['application/json'];
  if (!Array.isArray(value) || value.length === 0) throw new CeleryConfigError('acceptContent', 'must be a non-empty list');
  return value.map((item) => {
    if (item === 'json' || item === 'application/json') return 'application/json';
    throw new CeleryConfigError('acceptContent', `only json is supported, got ${JSON.stringify(item)}`);
  });
}

const CONSISTENCIES = new Set([
  'ANY', 'ONE', 'TWO', 'THREE', 'QUORUM', 'ALL', 'LOCAL_QUORUM', 'EACH_QUORUM', 'SERIAL', 'LOCAL_SERIAL', 'LOCAL_ONE',
]);

function resolveCassandra(c: Partial<CassandraOptions>, writtenAs?: Map<string, string>): ResolvedCassandraConfig {
  for (const key of Object.keys(c)) {
    if (!CASSANDRA_KEYS.has(key)) throw new CeleryConfigError(`cassandra.${key}`, `unknown option${suggest(key)}`);
  }
  const keyspace = optString(c.keyspace, 'cassandra.keyspace');
  if (!keyspace) throw new CeleryConfigError('cassandra.keyspace', 'is required (cassandra_keyspace)');
  const bundle = optString(c.secureConnectBundle, 'cassandra.secureConnectBundle') ?? null;
  const contactPoints = c.contactPoints ?? null;
  if (contactPoints !== null && (!Array.isArray(contactPoints) || contactPoints.some((p) => typeof p !== 'string'))) {
    throw new CeleryConfigError('cassandra.contactPoints', 'must be a list of host names');
  }
  if (bundle && contactPoints) {
    throw new CeleryConfigError('cassandra.secureConnectBundle', 'give either a secure-connect bundle (Astra) or contactPoints, not both');
  }
  const createKeyspace = optBool(c.createKeyspace, 'cassandra.createKeyspace') ?? false;
  if (bundle && createKeyspace) {
    const bundleKey = writtenAs?.get('cassandra.secureConnectBundle');
    throw new CeleryConfigError(
      'cassandra.createKeyspace',
      `cannot be true together with ${bundleKey ? `${bundleKey} (cassandra.secureConnectBundle)` : 'cassandra.secureConnectBundle'}: ` +
        'Astra DB keyspaces are created in the Astra console, not by the driver; create the keyspace there and leave createKeyspace out',
    );
  }
  if (!bundle && (!contactPoints || contactPoints.length === 0)) {
    throw new CeleryConfigError('cassandra.contactPoints', 'is required unless secureConnectBundle is given (cassandra_servers)');
  }
  const consistency = (value: unknown, key: string): string => {
    const name = (optString(value, key) ?? 'LOCAL_QUORUM').toUpperCase();
    if (!CONSISTENCIES.has(name)) throw new CeleryConfigError(key, `unknown consistency level ${JSON.stringify(value)}`);
    return name;
  };
  const token = optString(c.token, 'cassandra.token');
  let credentials = c.credentials ?? null;
  if (credentials !== null) {
    if (typeof credentials.username !== 'string' || typeof credentials.password !== 'string') {
      throw new CeleryConfigError('cassandra.credentials', 'must be {username: string, password: string}');
    }
  }
  if (token) {
    if (credentials) throw new CeleryConfigError('cassandra.token', 'give either token or credentials, not both');
    credentials = { username: 'token', password: token };
  }
  const tls = resolveTls(c.tls, 'cassandra.tls');
  if (tls && bundle) throw new CeleryConfigError('cassandra.tls', 'a secure-connect bundle carries its own TLS settings; leave tls out');
  const table = optString(c.table, 'cassandra.table') ?? 'celery_taskmeta';
  if (!/^[A-Za-z][A-Za-z0-9_]{0,47}$/.test(table)) throw new CeleryConfigError('cassandra.table', `not a valid table name: ${JSON.stringify(table)}`);
  if (!/^[A-Za-z][A-Za-z0-9_]{0,47}$/.test(keyspace)) throw new CeleryConfigError('cassandra.keyspace', `not a valid keyspace name: ${JSON.stringify(keyspace)}`);
  return {
    contactPoints,
    port: optInt(c.port, 'cassandra.port', 1) ?? 9042,
    localDataCenter: optString(c.localDataCenter, 'cassandra.localDataCenter') ?? null,
    keyspace,
    table,
    readConsistency: consistency(c.readConsistency, 'cassandra.readConsistency'),
    writeConsistency: consistency(c.writeConsistency, 'cassandra.writeConsistency'),
    entryTtl: optInt(c.entryTtl, 'cassandra.entryTtl', 1) ?? null,
    credentials,
    secureConnectBundle: bundle,
    createKeyspace,
    tls,
  };
}

function resolveSuccessCheck(value: unknown): 'auto' | 'always' | 'redelivered' {
  if (value === undefined) return 'auto';
  if (value === 'auto' || value === 'always' || value === 'redelivered') return value;
  throw new CeleryConfigError('worker.successCheck', `must be 'auto', 'always' or 'redelivered', got ${JSON.stringify(value)}`);
}

/**
 * The worker's node name, `name@host` as Celery's `-n`, with Celery's `%` tokens expanded
 * (celery/utils/nodenames.py): `%h` the full hostname, `%n` its name part (before the first dot),
 * `%d` its domain part, `%i` the pool process index (always 0: one process), `%I` the same with a
 * separator (always empty), `%p` this process's pid (ours: Celery has no node-name `%p`), `%%` a `%`.
 * A name without `@` gets `@%h` appended, as Celery's `default_nodename`.
 *
 * The default, `nestjs-<pid>@<hostname>`, is unique per process: each node has its own pidbox queue
 * `<name>.celery.pidbox` (exclusive), so two workers on one host with one name would answer remote
 * control as one (the second cannot even declare it). Python's default `celery@%h` is unique per
 * host only because `celery multi` numbers its workers.
 */
export function resolveHostname(value: unknown, host: string = osHostname(), pid: number = process.pid): string {
  const raw = optString(value, 'worker.hostname') ?? `nestjs-${pid}@%h`;
  const name = expandNodename(raw.includes('@') ? raw : `${raw}@%h`, host, pid);
  if (name.startsWith('@') || name.endsWith('@')) {
    throw new CeleryConfigError('worker.hostname', `must be "name@host" as Celery's node names, got ${JSON.stringify(raw)}`);
  }
  return name;
}

function expandNodename(template: string, host: string, pid: number): string {
  const dot = host.indexOf('.');
  const tokens: Record<string, string> = {
    h: host,
    n: dot < 0 ? host : host.slice(0, dot),
    d: dot < 0 ? '' : host.slice(dot + 1),
    i: '0',
    I: '',
    p: String(pid),
    '%': '%',
  };
  return template.replace(/%(.)/g, (whole, key: string) => {
    if (!(key in tokens)) throw new CeleryConfigError('worker.hostname', `unknown token ${whole} in ${JSON.stringify(template)} (use %h, %n, %d, %i, %I, %p, %%)`);
    return tokens[key];
  });
}

/** Remote-control commands that stop or reshape a worker: the ones `worker.remoteControl.refuse` may name. */
export const RESHAPING_CONTROL_COMMANDS = ['shutdown', 'add_consumer', 'cancel_consumer', 'time_limit', 'rate_limit'] as const;

function resolveRefuse(value: unknown): string[] {
  if (value === undefined || value === null) return [];
  if (typeof value !== 'object' || Array.isArray(value)) throw new CeleryConfigError('worker.remoteControl', `must be an object { refuse }, got ${JSON.stringify(value)}`);
  for (const key of Object.keys(value)) if (key !== 'refuse') throw new CeleryConfigError(`worker.remoteControl.${key}`, 'unknown option (refuse is the only one)');
  const refuse = (value as { refuse?: unknown }).refuse;
  if (refuse === undefined) return [];
  if (refuse === 'reshaping') return [...RESHAPING_CONTROL_COMMANDS];
  if (!Array.isArray(refuse) || !refuse.every((c) => typeof c === 'string')) {
    throw new CeleryConfigError('worker.remoteControl.refuse', `must be 'reshaping' or a list of command names, got ${JSON.stringify(refuse)}`);
  }
  for (const c of refuse) {
    if (!/^[a-z_]+$/.test(c)) throw new CeleryConfigError('worker.remoteControl.refuse', `${JSON.stringify(c)} is not a command name`);
  }
  return [...new Set(refuse as string[])];
}

/** A positive number of seconds (fractions allowed), as Celery's time limits. */
export function optSeconds(value: unknown, key: string): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw new CeleryConfigError(key, `must be a number of seconds > 0, got ${JSON.stringify(value)}`);
  }
  return value;
}

function optString(value: unknown, key: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new CeleryConfigError(key, `must be a string, got ${typeof value}`);
  return value;
}

function optBool(value: unknown, key: string): boolean | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'boolean') throw new CeleryConfigError(key, `must be true or false, got ${JSON.stringify(value)}`);
  return value;
}

function optInt(value: unknown, key: string, min: number): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new CeleryConfigError(key, `must be an integer >= ${min}, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** A table of ours beside Celery's (rate limits, periodic ticks, chords): `<section>.table`, checked as a CQL name. */
function optTableName(section: { table?: unknown }, where: string, fallback: string): string {
  const table = optString(section.table, `${where}.table`) ?? fallback;
  if (!/^[A-Za-z][A-Za-z0-9_]{0,47}$/.test(table)) throw new CeleryConfigError(`${where}.table`, `not a valid table name: ${JSON.stringify(table)}`);
  return table;
}

/** The serial consistency of our lightweight transactions: `<section>.serialConsistency`, SERIAL (default) or LOCAL_SERIAL. */
function optSerialConsistency(section: { serialConsistency?: unknown }, where: string): 'SERIAL' | 'LOCAL_SERIAL' {
  const serial = (optString(section.serialConsistency, `${where}.serialConsistency`) ?? 'SERIAL').toUpperCase();
  if (serial !== 'SERIAL' && serial !== 'LOCAL_SERIAL') throw new CeleryConfigError(`${where}.serialConsistency`, `must be SERIAL or LOCAL_SERIAL, got ${JSON.stringify(section.serialConsistency)}`);
  return serial;
}

// ---- rate limits (issue 12 item 4) ----
function resolveRateLimits(o: Mutable, w: WorkerOptions): ResolvedRateLimitConfig {
  const g = o.globalRateLimits ?? {};
  for (const key of Object.keys(g)) if (!GLOBAL_RATE_LIMIT_KEYS.has(key)) throw new CeleryConfigError(`globalRateLimits.${key}`, `unknown option${suggest(key)}`);
  const table = optTableName(g, 'globalRateLimits', 'celery_rate_limits');
  const serial = optSerialConsistency(g, 'globalRateLimits');
  return {
    disabled: optBool(w.disableRateLimits, 'worker.disableRateLimits') ?? false,
    table,
    serialConsistency: serial,
    reserveAheadMs: optInt(g.reserveAheadMs, 'globalRateLimits.reserveAheadMs', 1) ?? 500,
    maxLateMs: optInt(g.maxLateMs, 'globalRateLimits.maxLateMs', 0) ?? 25,
  };
}
// ---- end rate limits ----

// ---- periodic tasks (issue 15 item 5) ----
function resolveScheduler(o: Mutable): ResolvedSchedulerConfig {
  const s = (o.scheduler ?? {}) as Record<string, unknown>;
  for (const key of Object.keys(s)) if (!SCHEDULER_KEYS.has(key)) throw new CeleryConfigError(`scheduler.${key}`, `unknown option${suggest(key)}`);
  const timezone = optString(s.timezone, 'scheduler.timezone') ?? 'UTC';
  try {
    new CronSchedule('0 0 * * *', timezone);
  } catch {
    throw new CeleryConfigError('scheduler.timezone', `unknown time zone ${JSON.stringify(timezone)} (an IANA name such as 'Europe/Paris', or 'UTC')`);
  }
  const table = optTableName(s, 'scheduler', 'celery_periodic_ticks');
  const serial = optSerialConsistency(s, 'scheduler');
  const schedule = s.schedule ?? {};
  if (typeof schedule !== 'object' || schedule === null || Array.isArray(schedule)) {
    throw new CeleryConfigError('scheduler.schedule', 'must be an object { name: { task, schedule, args, kwargs, options } } (Celery\'s beat_schedule)');
  }
  // errors name the entry as written: beat_schedule.cleanup.schedule
  const prefix = o.writtenAs?.get('scheduler.schedule') ?? 'scheduler.schedule';
  const entries = Object.entries(schedule as Record<string, unknown>).map(([name, raw]) => {
    try {
      return resolveBeatEntry(name, raw, `${prefix}.${name}`, timezone);
    } catch (err) {
      if (err instanceof PeriodicEntryError) throw new CeleryConfigError(err.key, err.detail);
      throw err;
    }
  });
  return {
    enabled: optBool(s.enabled, 'scheduler.enabled') ?? null,
    timezone,
    entries,
    table,
    // by default a sender has given up or been confirmed before its claim is taken over: late rather than twice
    claimTimeoutMs: optInt(s.claimTimeoutMs, 'scheduler.claimTimeoutMs', 100) ?? (optInt(o.publishTimeoutMs, 'publishTimeoutMs', 0) ?? 30000) + 5000,
    catchUpMs: optInt(s.catchUpMs, 'scheduler.catchUpMs', 0) ?? 60000,
    serialConsistency: serial,
  };
}
// ---- end periodic tasks ----
// ---- chords (issue 13 item 4) ----
function resolveChords(o: Mutable): ResolvedChordConfig {
  const c = o.chords ?? {};
  if (typeof c !== 'object' || c === null || Array.isArray(c)) throw new CeleryConfigError('chords', 'must be an object');
  for (const key of Object.keys(c)) if (!CHORD_KEYS.has(key)) throw new CeleryConfigError(`chords.${key}`, `unknown option${suggest(key)}`);
  const completion = optString(c.completion, 'chords.completion') ?? 'unlock';
  if (completion !== 'unlock' && completion !== 'counter') throw new CeleryConfigError('chords.completion', `must be 'unlock' or 'counter', got ${JSON.stringify(c.completion)}`);
  const table = optTableName(c, 'chords', 'celery_chords');
  const serial = optSerialConsistency(c, 'chords');
  return { completion, table, serialConsistency: serial };
}
// ---- end chords ----
