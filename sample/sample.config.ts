import type { CeleryModuleOptions } from '../lib';

/**
 * The sample's configuration, from the environment. With nothing set it runs on the embedded
 * in-memory broker and result store; set CELERY_BROKER_URL and CASSANDRA_CONTACT_POINTS to run on
 * RabbitMQ and Cassandra.
 *
 * | variable                 | default          |
 * |--------------------------|------------------|
 * | CELERY_BROKER_URL        | memory://        |
 * | CELERY_QUEUE             | celery           |
 * | CASSANDRA_CONTACT_POINTS | (unset: results in memory) |
 * | CASSANDRA_PORT           | 9042             |
 * | CASSANDRA_LOCAL_DC       | detected from the node |
 * | CASSANDRA_KEYSPACE       | celery_test      |
 * | CASSANDRA_TABLE          | celery_taskmeta  |
 * | CASSANDRA_USERNAME / CASSANDRA_PASSWORD | no login |
 * | ASTRA_DB_SECURE_BUNDLE_PATH | unset; with ASTRA_DB_APPLICATION_TOKEN: results in Astra DB through the bundle |
 * | ASTRA_DB_APPLICATION_TOKEN  | the `AstraCS:...` token |
 * | CELERY_WORKER_STATE_DB   | unset: revoked ids in memory only; a file path: kept across restarts (Celery's --statedb) |
 * | SAMPLE_HTTP_PORT         | 3000: `sample:worker` serves GET /health and GET /metrics there (0: any free port, logged) |
 * | SAMPLE_SCHEDULER         | unset: no periodic tasks; `1`: workers send `tasks.add(2, 2)` every 30 s (once across workers with Cassandra) |
 * | SAMPLE_UNTRUSTED_ORIGINS | unset: every origin runs; else comma-separated origins (`gen<pid>@<host>`) or hosts whose tasks are refused |
 */
export function sampleOptions(env: NodeJS.ProcessEnv, workerEnabled: boolean, metrics = false): CeleryModuleOptions {
  const brokerUrl = env.CELERY_BROKER_URL || 'memory://';
  const contactPoints = env.CASSANDRA_CONTACT_POINTS?.split(',').map((p) => p.trim()).filter(Boolean);
  const options: CeleryModuleOptions = {
    brokerUrl,
    defaultQueue: env.CELERY_QUEUE || undefined,
    // the control plane on, as a Celery worker run with -E: remote control (on by default) and task events for Flower
    worker: { enabled: workerEnabled, sendTaskEvents: true, stateDb: env.CELERY_WORKER_STATE_DB || undefined },
    // the @Periodic() of TasksService.add runs in worker processes when asked for
    scheduler: { enabled: workerEnabled && env.SAMPLE_SCHEDULER === '1' },
    // the worker's GET /metrics: in prom-client's global registry (pass `registry` to use your own)
    ...(metrics ? { metrics: { enabled: true } } : {}),
  };
  if (env.ASTRA_DB_SECURE_BUNDLE_PATH) {
    if (!env.ASTRA_DB_APPLICATION_TOKEN) throw new Error('ASTRA_DB_SECURE_BUNDLE_PATH is set: set ASTRA_DB_APPLICATION_TOKEN (AstraCS:...) too');
    options.resultBackend = 'cassandra';
    options.cassandra = {
      secureConnectBundle: env.ASTRA_DB_SECURE_BUNDLE_PATH,
      token: env.ASTRA_DB_APPLICATION_TOKEN,
      keyspace: env.CASSANDRA_KEYSPACE || 'celery_test',
      table: env.CASSANDRA_TABLE || 'celery_taskmeta',
    };
  } else if (contactPoints?.length) {
    options.resultBackend = 'cassandra';
    options.cassandra = {
      contactPoints,
      port: env.CASSANDRA_PORT ? Number(env.CASSANDRA_PORT) : undefined,
      localDataCenter: env.CASSANDRA_LOCAL_DC || undefined,
      keyspace: env.CASSANDRA_KEYSPACE || 'celery_test',
      table: env.CASSANDRA_TABLE || 'celery_taskmeta',
      credentials: env.CASSANDRA_USERNAME ? { username: env.CASSANDRA_USERNAME, password: env.CASSANDRA_PASSWORD ?? '' } : undefined,
    };
  } else if (brokerUrl.startsWith('memory')) {
    options.resultBackend = 'memory';
  } else {
    throw new Error('CELERY_BROKER_URL points at a real broker: set CASSANDRA_CONTACT_POINTS too, so the client can read results');
  }
  return options;
}

/** Origins (`gen<pid>@<host>`) or hosts whose tasks the sample's TrustedOriginGuard refuses. */
export function untrustedOrigins(env: NodeJS.ProcessEnv): string[] {
  return (env.SAMPLE_UNTRUSTED_ORIGINS ?? '').split(',').map((o) => o.trim()).filter(Boolean);
}
