import { hostname } from 'node:os';
import { normalizeCeleryOptions, resolveHostname } from '../../../lib/config/normalize-options';
import { perConsumerQos, queueTableOf } from '../../../lib/config/queue-table';
import { CeleryConfigError } from '../../../lib/errors/celery.errors';
import type { CeleryOptionsInput } from '../../../lib/interfaces/celery-options.interface';

/** Normalizes and returns the CeleryConfigError it must throw. */
function configError(input: unknown): CeleryConfigError {
  try {
    normalizeCeleryOptions(input as CeleryOptionsInput);
  } catch (err) {
    expect(err).toBeInstanceOf(CeleryConfigError);
    return err as CeleryConfigError;
  }
  throw new Error('normalizeCeleryOptions accepted the options');
}

const SERVERS = { contactPoints: ['10.0.0.1', '10.0.0.2'], keyspace: 'celery_ks', localDataCenter: 'dc1' };

describe('normalizeCeleryOptions: defaults', () => {
  it('gives an in-process setup (memory broker and memory results) when called with nothing', () => {
    const expected = {
      brokerUrl: 'memory://',
      brokerKind: 'memory',
      brokerConnectionRetryOnStartup: true,
      brokerTls: null,
      resultBackend: 'memory',
      cassandra: null,
      defaultQueue: 'celery',
      queueArguments: null,
      routing: {
        defaultQueue: 'celery',
        defaultExchange: 'celery',
        defaultExchangeType: 'direct',
        defaultRoutingKey: 'celery',
        queueType: 'classic',
        createMissingQueueType: 'classic',
        queues: [],
        queueMaxPriority: null,
        queueArguments: null,
        routers: [],
        delayedDeliveryQueueType: 'quorum',
        extraQueues: ['celery'],
      },
      defaultPriority: null,
      worker: {
        enabled: true,
        queues: ['celery'],
        concurrency: 64,
        prefetch: 256,
        shutdownTimeoutMs: 30000,
        maxMessageBytes: 10485760,
        maxResultBytes: 8388608,
        successCheck: 'auto',
        etaTaskLimit: 10000,
        detectQuorumQueues: true,
        consumerTimeoutMs: 1800000,
        hostname: `nestjs-${process.pid}@${hostname()}`,
        taskContextStorage: null,
        isolatedThreads: null,
        enableRemoteControl: true,
        remoteControlRefuse: [],
        stateDb: null,
        mingle: false,
        mingleTimeoutMs: 1000,
      },
      tasks: { timeLimit: null, softTimeLimit: null, trackStarted: false, ignoreResult: false, storeErrorsEvenIfIgnored: false },
      accept: ['application/json'],
      peerCompat: '5.3',
      resultPollIntervalMs: 100,
      publishTimeoutMs: 30000,
      rateLimits: { disabled: false, table: 'celery_rate_limits', serialConsistency: 'SERIAL', reserveAheadMs: 500, maxLateMs: 25 },
      chords: { completion: 'unlock', table: 'celery_chords', serialConsistency: 'SERIAL' },
      resultExtended: false,
      scheduler: { enabled: null, timezone: 'UTC', entries: [], table: 'celery_periodic_ticks', claimTimeoutMs: 35000, catchUpMs: 60000, serialConsistency: 'SERIAL' },
      events: { sendTaskEvents: false, withoutHeartbeat: false, taskSendSentEvent: false },
      metrics: { enabled: false, registry: null, prefix: 'celery_' },
    };
    expect(normalizeCeleryOptions(undefined)).toEqual(expected);
    expect(normalizeCeleryOptions(null)).toEqual(expected);
    expect(normalizeCeleryOptions({})).toEqual(expected);
  });

  it('defaults to no result backend with an AMQP broker', () => {
    const config = normalizeCeleryOptions({ brokerUrl: 'amqp://guest:guest@localhost:5672//' });
    expect(config.brokerKind).toBe('amqp');
    expect(config.resultBackend).toBe('none');
  });

  it.each(['amqp://h', 'amqps://h', 'pyamqp://h', 'AMQP://h'])('accepts the broker scheme of %s as amqp', (url) => {
    expect(normalizeCeleryOptions({ brokerUrl: url }).brokerKind).toBe('amqp');
  });

  it('defaults prefetch to concurrency × 4 and the consumed queue to the default queue', () => {
    const config = normalizeCeleryOptions({ defaultQueue: 'sorting', worker: { concurrency: 3 } });
    expect(config.worker).toMatchObject({ concurrency: 3, prefetch: 12, queues: ['sorting'] });
  });

  it('fills in the Cassandra defaults: port 9042, table celery_taskmeta, LOCAL_QUORUM, no TTL, no credentials', () => {
    const config = normalizeCeleryOptions({ resultBackend: 'cassandra://', cassandra: SERVERS });
    expect(config.cassandra).toEqual({
      contactPoints: ['10.0.0.1', '10.0.0.2'],
      port: 9042,
      localDataCenter: 'dc1',
      keyspace: 'celery_ks',
      table: 'celery_taskmeta',
      readConsistency: 'LOCAL_QUORUM',
      writeConsistency: 'LOCAL_QUORUM',
      entryTtl: null,
      credentials: null,
      secureConnectBundle: null,
      createKeyspace: false,
      tls: null,
    });
  });

  it.each(['cassandra', 'cassandra://', 'CASSANDRA://anything'])('recognises the result backend %p as cassandra', (backend) => {
    expect(normalizeCeleryOptions({ resultBackend: backend, cassandra: SERVERS }).resultBackend).toBe('cassandra');
  });

  it('drops the cassandra settings when the result backend is not cassandra', () => {
    expect(normalizeCeleryOptions({ resultBackend: 'memory', cassandra: SERVERS }).cassandra).toBeNull();
  });

  it('upper-cases consistency level names', () => {
    const config = normalizeCeleryOptions({ resultBackend: 'cassandra', cassandra: { ...SERVERS, readConsistency: 'one', writeConsistency: 'each_quorum' } });
    expect(config.cassandra).toMatchObject({ readConsistency: 'ONE', writeConsistency: 'EACH_QUORUM' });
  });
});

describe('normalizeCeleryOptions: a Python celeryconfig', () => {
  const python = {
    broker_url: 'amqp://guest:guest@rabbit:5672//',
    result_backend: 'cassandra://',
    cassandra_servers: ['cass1', 'cass2'],
    cassandra_port: 9142,
    cassandra_keyspace: 'celery_ks',
    cassandra_table: 'tasks',
    cassandra_read_consistency: 'ONE',
    cassandra_write_consistency: 'QUORUM',
    cassandra_entry_ttl: 86400,
    cassandra_auth_provider: 'PlainTextAuthProvider',
    cassandra_auth_kwargs: { username: 'cassandra', password: 'cassandra-pw' },
    task_serializer: 'json',
    result_serializer: 'json',
    accept_content: ['json'],
    broker_connection_retry_on_startup: false,
    enable_utc: true,
    task_default_queue: 'sorting',
    worker_concurrency: 2,
    worker_prefetch_multiplier: 3,
  };
  const camel: CeleryOptionsInput = {
    brokerUrl: 'amqp://guest:guest@rabbit:5672//',
    resultBackend: 'cassandra://',
    cassandra: {
      contactPoints: ['cass1', 'cass2'],
      port: 9142,
      keyspace: 'celery_ks',
      table: 'tasks',
      readConsistency: 'ONE',
      writeConsistency: 'QUORUM',
      entryTtl: 86400,
      credentials: { username: 'cassandra', password: 'cassandra-pw' },
    },
    taskSerializer: 'json',
    resultSerializer: 'json',
    acceptContent: ['application/json'],
    brokerConnectionRetryOnStartup: false,
    enableUtc: true,
    defaultQueue: 'sorting',
    worker: { concurrency: 2, prefetch: 6 },
  };

  it('maps every snake_case key onto the same result as the camelCase options', () => {
    expect(normalizeCeleryOptions(python)).toEqual(normalizeCeleryOptions(camel));
  });

  it('computes the prefetch from worker_prefetch_multiplier × worker_concurrency', () => {
    expect(normalizeCeleryOptions(python).worker.prefetch).toBe(6);
  });

  it('lets snake_case and camelCase keys be mixed, the cassandra ones landing in one object', () => {
    const config = normalizeCeleryOptions({ cassandra_keyspace: 'ks', cassandra: { contactPoints: ['h'] }, resultBackend: 'cassandra' } as CeleryOptionsInput);
    expect(config.cassandra).toMatchObject({ keyspace: 'ks', contactPoints: ['h'] });
  });

  it('maps cassandra_secure_bundle_path onto Astra mode', () => {
    const config = normalizeCeleryOptions({ result_backend: 'cassandra://', cassandra_keyspace: 'ks', cassandra_secure_bundle_path: '/secrets/scb.zip' });
    expect(config.cassandra).toMatchObject({ secureConnectBundle: '/secrets/scb.zip', contactPoints: null });
  });

  it('turns PlainTextAuthProvider + cassandra_auth_kwargs into credentials', () => {
    const config = normalizeCeleryOptions({
      result_backend: 'cassandra://',
      cassandra_servers: ['h'],
      cassandra_keyspace: 'ks',
      cassandra_auth_provider: 'PlainTextAuthProvider',
      cassandra_auth_kwargs: { username: 'clientId', password: 'secret' },
    });
    expect(config.cassandra?.credentials).toEqual({ username: 'clientId', password: 'secret' });
  });

  it('ignores cassandra_auth_provider without cassandra_auth_kwargs, as Celery does', () => {
    const config = normalizeCeleryOptions({
      result_backend: 'cassandra://',
      cassandra_servers: ['h'],
      cassandra_keyspace: 'ks',
      cassandra_auth_provider: 'PlainTextAuthProvider',
    });
    expect(config.cassandra?.credentials).toBeNull();
  });

  it('rejects an auth provider other than PlainTextAuthProvider, naming cassandra_auth_provider', () => {
    const err = configError({
      result_backend: 'cassandra://',
      cassandra_servers: ['h'],
      cassandra_keyspace: 'ks',
      cassandra_auth_provider: 'SaslAuthProvider',
      cassandra_auth_kwargs: { username: 'u', password: 'p' },
    });
    expect(err.key).toBe('cassandra_auth_provider');
  });

  it('rejects cassandra_auth_kwargs without a string username and password', () => {
    expect(configError({ cassandra_auth_kwargs: { username: 'u' } }).key).toBe('cassandra_auth_kwargs');
    expect(configError({ cassandra_auth_kwargs: 'u:p' }).key).toBe('cassandra_auth_kwargs');
  });
});

describe('normalizeCeleryOptions: unknown keys', () => {
  it('rejects a misspelt celeryconfig key, naming it', () => {
    const err = configError({ cassandra_tabel: 'tasks' });
    expect(err.key).toBe('cassandra_tabel');
    expect(err.message).toContain('cassandra_tabel');
    expect(err.message).toMatch(/unknown option/);
  });

  it('rejects brokerURL, naming it and suggesting brokerUrl', () => {
    const err = configError({ brokerURL: 'amqp://h' });
    expect(err.key).toBe('brokerURL');
    expect(err.message).toContain('brokerURL');
    expect(err.message).toContain('did you mean "brokerUrl"');
  });

  it('rejects an unknown key inside cassandra, naming it with its path', () => {
    const err = configError({ resultBackend: 'cassandra', cassandra: { ...SERVERS, tabel: 'x' } });
    expect(err.key).toBe('cassandra.tabel');
  });

  it('rejects a differently-cased cassandra key (Keyspace), naming it with its path', () => {
    expect(configError({ resultBackend: 'cassandra', cassandra: { ...SERVERS, Keyspace: 'x' } }).message).toContain('cassandra.Keyspace');
  });

  it('rejects an unknown key inside worker, naming it with its path', () => {
    expect(configError({ worker: { concurency: 2 } }).key).toBe('worker.concurency');
  });

  it('rejects uppercase Celery 3 names that are not supported (CASSANDRA_SERVERS)', () => {
    expect(configError({ CASSANDRA_SERVERS: ['h'] }).key).toBe('CASSANDRA_SERVERS');
  });
});

describe('normalizeCeleryOptions: wrong types name the key', () => {
  it.each([
    [{ brokerUrl: 42 }, 'brokerUrl'],
    [{ resultBackend: ['cassandra'] }, 'resultBackend'],
    [{ defaultQueue: 5 }, 'defaultQueue'],
    [{ brokerConnectionRetryOnStartup: 'yes' }, 'brokerConnectionRetryOnStartup'],
    [{ isGlobal: 1 }, 'isGlobal'],
    [{ resultPollIntervalMs: 0 }, 'resultPollIntervalMs'],
    [{ resultPollIntervalMs: 1.5 }, 'resultPollIntervalMs'],
    [{ peerCompat: '5.4' }, 'peerCompat'],
    [{ acceptContent: 'json' }, 'acceptContent'],
    [{ acceptContent: [] }, 'acceptContent'],
    [{ cassandra: 'host' }, 'cassandra'],
    [{ worker: [] }, 'worker'],
    [{ worker: { concurrency: 0 } }, 'worker.concurrency'],
    [{ worker: { prefetch: '10' } }, 'worker.prefetch'],
    [{ worker: { enabled: 'no' } }, 'worker.enabled'],
    [{ worker: { queues: [] } }, 'worker.queues'],
    [{ worker: { queues: ['ok', ''] } }, 'worker.queues'],
    [{ worker: { shutdownTimeoutMs: -1 } }, 'worker.shutdownTimeoutMs'],
    [{ worker_prefetch_multiplier: 0 }, 'worker_prefetch_multiplier'],
    [{ resultBackend: 'cassandra', cassandra: { ...SERVERS, port: '9042' } }, 'cassandra.port'],
    [{ resultBackend: 'cassandra', cassandra: { ...SERVERS, entryTtl: 86400.5 } }, 'cassandra.entryTtl'],
    [{ resultBackend: 'cassandra', cassandra: { ...SERVERS, contactPoints: 'h1,h2' } }, 'cassandra.contactPoints'],
    [{ resultBackend: 'cassandra', cassandra: { ...SERVERS, keyspace: 7 } }, 'cassandra.keyspace'],
    [{ resultBackend: 'cassandra', cassandra: { ...SERVERS, readConsistency: 'MOSTLY' } }, 'cassandra.readConsistency'],
    [{ resultBackend: 'cassandra', cassandra: { ...SERVERS, credentials: { username: 'u' } } }, 'cassandra.credentials'],
    [{ resultBackend: 'cassandra', cassandra: { ...SERVERS, table: 'bad-name' } }, 'cassandra.table'],
    [{ resultBackend: 'cassandra', cassandra: { ...SERVERS, createKeyspace: 'true' } }, 'cassandra.createKeyspace'],
  ])('rejects %j, naming %s', (input, key) => {
    const err = configError(input);
    expect(err.key).toBe(key);
    expect(err.message).toContain(`${key}:`);
  });

  it('names the celeryconfig key the user wrote when its value has the wrong type (cassandra_port)', () => {
    const err = configError({ result_backend: 'cassandra://', cassandra_servers: ['h'], cassandra_keyspace: 'ks', cassandra_port: '9042' });
    expect(err.message).toContain('cassandra_port');
  });

  it('rejects a non-object options value', () => {
    expect(configError([]).key).toBe('options');
  });
});

describe('normalizeCeleryOptions: cassandra consistency rules', () => {
  it('rejects a secure-connect bundle together with contact points', () => {
    const err = configError({ resultBackend: 'cassandra', cassandra: { ...SERVERS, secureConnectBundle: '/scb.zip' } });
    expect(err.key).toBe('cassandra.secureConnectBundle');
    expect(err.message).toMatch(/not both/);
  });

  it('rejects cassandra_servers together with cassandra_secure_bundle_path', () => {
    const err = configError({ result_backend: 'cassandra://', cassandra_keyspace: 'ks', cassandra_servers: ['h'], cassandra_secure_bundle_path: '/scb.zip' });
    expect(err.key).toBe('cassandra.secureConnectBundle');
  });

  it('rejects createKeyspace together with a secure-connect bundle: Astra keyspaces are made in the Astra console', () => {
    const err = configError({ resultBackend: 'cassandra', cassandra: { keyspace: 'ks', secureConnectBundle: '/scb.zip', token: 'AstraCS:x', createKeyspace: true } });
    expect(err.key).toBe('cassandra.createKeyspace');
    expect(err.message).toContain('cassandra.createKeyspace');
    expect(err.message).toContain('cassandra.secureConnectBundle');
    expect(err.message).toContain('Astra console');
    expect(err.message).not.toContain('AstraCS:x');
  });

  it('rejects createKeyspace together with cassandra_secure_bundle_path, naming the celeryconfig key', () => {
    const err = configError({ result_backend: 'cassandra://', cassandra_keyspace: 'ks', cassandra_secure_bundle_path: '/scb.zip', cassandra: { createKeyspace: true } });
    expect(err).toMatchObject({ key: 'cassandra.createKeyspace' });
    expect(err.message).toContain('cassandra.createKeyspace');
    expect(err.message).toContain('cassandra_secure_bundle_path');
    expect(err.message).toContain('Astra console');
  });

  it('allows createKeyspace: false next to a bundle, and createKeyspace: true next to contact points', () => {
    expect(normalizeCeleryOptions({ resultBackend: 'cassandra', cassandra: { keyspace: 'ks', secureConnectBundle: '/scb.zip', createKeyspace: false } }).cassandra?.createKeyspace).toBe(false);
    expect(normalizeCeleryOptions({ resultBackend: 'cassandra', cassandra: { ...SERVERS, createKeyspace: true } }).cassandra?.createKeyspace).toBe(true);
  });

  it('rejects a missing keyspace', () => {
    const err = configError({ resultBackend: 'cassandra', cassandra: { contactPoints: ['h'] } });
    expect(err.key).toBe('cassandra.keyspace');
    expect(err.message).toContain('cassandra_keyspace');
  });

  it('rejects neither contact points nor bundle', () => {
    expect(configError({ resultBackend: 'cassandra', cassandra: { keyspace: 'ks' } }).key).toBe('cassandra.contactPoints');
    expect(configError({ resultBackend: 'cassandra', cassandra: { keyspace: 'ks', contactPoints: [] } }).key).toBe('cassandra.contactPoints');
  });

  it('rejects a cassandra result backend without any cassandra settings', () => {
    expect(configError({ resultBackend: 'cassandra://' }).key).toBe('cassandra');
  });

  it('turns an Astra token into credentials with username "token"', () => {
    const config = normalizeCeleryOptions({
      resultBackend: 'cassandra',
      cassandra: { keyspace: 'ks', secureConnectBundle: '/scb.zip', token: 'AstraCS:abc:123' },
    });
    expect(config.cassandra?.credentials).toEqual({ username: 'token', password: 'AstraCS:abc:123' });
  });

  it('rejects a token together with credentials', () => {
    const err = configError({
      resultBackend: 'cassandra',
      cassandra: { keyspace: 'ks', secureConnectBundle: '/scb.zip', token: 'AstraCS:x', credentials: { username: 'u', password: 'p' } },
    });
    expect(err.key).toBe('cassandra.token');
  });
});

describe('normalizeCeleryOptions: unsupported features', () => {
  it.each([
    [{ taskSerializer: 'pickle' }, 'taskSerializer'],
    [{ resultSerializer: 'msgpack' }, 'resultSerializer'],
    [{ task_serializer: 'yaml' }, 'taskSerializer'],
    [{ acceptContent: ['json', 'pickle'] }, 'acceptContent'],
    [{ accept_content: ['application/x-python-serialize'] }, 'acceptContent'],
    [{ resultBackend: 'redis://localhost:6379/0' }, 'resultBackend'],
    [{ result_backend: 'rpc://' }, 'resultBackend'],
    [{ brokerUrl: 'redis://localhost:6379/0' }, 'brokerUrl'],
    [{ enableUtc: false }, 'enableUtc'],
  ])('rejects %j, naming %s', (input, key) => {
    expect(configError(input).key).toBe(key);
  });

  it('normalizes accept_content json to application/json', () => {
    expect(normalizeCeleryOptions({ accept_content: ['json', 'application/json'] }).accept).toEqual(['application/json', 'application/json']);
  });

  it.each(['none', 'disabled', ''])('accepts %p as no result backend', (backend) => {
    expect(normalizeCeleryOptions({ resultBackend: backend }).resultBackend).toBe('none');
  });
});

describe('normalizeCeleryOptions: secrets never appear in error messages', () => {
  const SECRET = 's3cr3t-Pa55';

  it.each([
    ['a broker URL with an unsupported scheme', { brokerUrl: `redis://user:${SECRET}@localhost:6379/0` }],
    ['a broker URL without a scheme', { brokerUrl: `guest:${SECRET}@localhost:5672` }],
    ['a result backend URL with a password', { resultBackend: `redis://:${SECRET}@localhost:6379/0` }],
    ['a celeryconfig result_backend URL with a password', { result_backend: `db+postgresql://celery:${SECRET}@db/celery` }],
    ['credentials without a username', { resultBackend: 'cassandra', cassandra: { ...SERVERS, credentials: { password: SECRET } } }],
    ['credentials together with a token', { resultBackend: 'cassandra', cassandra: { keyspace: 'ks', secureConnectBundle: '/b.zip', token: SECRET, credentials: { username: 'u', password: SECRET } } }],
    ['auth kwargs with a non-PlainText provider', { cassandra_auth_provider: 'Other', cassandra_auth_kwargs: { username: 'u', password: SECRET } }],
    ['auth kwargs without a username', { cassandra_auth_kwargs: { password: SECRET } }],
    ['a bad keyspace next to credentials', { resultBackend: 'cassandra', cassandra: { ...SERVERS, keyspace: 'bad-ks', credentials: { username: 'u', password: SECRET } } }],
    ['a misspelt key next to a broker URL with a password', { brokerUrl: `amqp://u:${SECRET}@h//`, brokerURL: `amqp://u:${SECRET}@h//` }],
  ])('does not reveal the password for %s', (_what, input) => {
    // compared case-insensitively: a lower-cased password is still a leaked password
    expect(configError(input).message.toLowerCase()).not.toContain(SECRET.toLowerCase());
  });
});

describe('normalizeCeleryOptions: TLS', () => {
  it("maps kombu's broker_use_ssl onto brokerTls, verification on unless CERT_NONE", () => {
    expect(normalizeCeleryOptions({ broker_url: 'amqps://h', broker_use_ssl: { ca_certs: '/ca.pem', certfile: '/c.pem', keyfile: '/k.pem', cert_reqs: 'CERT_REQUIRED' } }).brokerTls).toEqual({
      ca: '/ca.pem', cert: '/c.pem', key: '/k.pem', rejectUnauthorized: true, servername: null,
    });
    expect(normalizeCeleryOptions({ broker_url: 'amqps://h', broker_use_ssl: { cert_reqs: 0 } }).brokerTls?.rejectUnauthorized).toBe(false);
    expect(normalizeCeleryOptions({ broker_url: 'amqps://h', broker_use_ssl: true }).brokerTls?.rejectUnauthorized).toBe(true);
  });

  it('verifies certificates by default', () => {
    expect(normalizeCeleryOptions({ brokerUrl: 'amqps://h', brokerTls: { ca: '/ca.pem' } }).brokerTls?.rejectUnauthorized).toBe(true);
    const c = normalizeCeleryOptions({ resultBackend: 'cassandra', cassandra: { contactPoints: ['h'], keyspace: 'ks', tls: { ca: '/ca.pem' } } });
    expect(c.cassandra?.tls?.rejectUnauthorized).toBe(true);
  });

  it('refuses TLS options next to a secure-connect bundle, and cert without key', () => {
    expect(() => normalizeCeleryOptions({ resultBackend: 'cassandra', cassandra: { secureConnectBundle: '/b.zip', keyspace: 'ks', tls: { ca: '/ca.pem' } } })).toThrow(/cassandra\.tls/);
    expect(() => normalizeCeleryOptions({ brokerUrl: 'amqps://h', brokerTls: { cert: '/c.pem' } })).toThrow(/brokerTls: give cert and key together/);
  });

  it('takes worker.etaTaskLimit (and worker_eta_task_limit as Celery writes it) as a count from 0, default 10000', () => {
    expect(normalizeCeleryOptions({ worker: { etaTaskLimit: 0 } }).worker.etaTaskLimit).toBe(0);
    expect(normalizeCeleryOptions({ worker_eta_task_limit: 500 }).worker.etaTaskLimit).toBe(500);
    expect(() => normalizeCeleryOptions({ worker: { etaTaskLimit: -1 } })).toThrow(/worker\.etaTaskLimit/);
    expect(() => normalizeCeleryOptions({ worker_eta_task_limit: 'many' as unknown as number })).toThrow(/worker_eta_task_limit/);
  });

  it("takes worker.successCheck 'auto' (default), 'always' or 'redelivered' and refuses anything else, naming the key", () => {
    expect(normalizeCeleryOptions({}).worker.successCheck).toBe('auto');
    expect(normalizeCeleryOptions({ worker: { successCheck: 'redelivered' } }).worker.successCheck).toBe('redelivered');
    expect(normalizeCeleryOptions({ worker: { successCheck: 'always' } }).worker.successCheck).toBe('always');
    expect(() => normalizeCeleryOptions({ worker: { successCheck: 'never' as 'always' } })).toThrow(/worker\.successCheck: must be 'auto', 'always' or 'redelivered'/);
  });

  it('takes worker.maxResultBytes of at least 4096 (room for the FAILURE that says a result is too large), naming the key otherwise', () => {
    expect(normalizeCeleryOptions({ worker: { maxResultBytes: 4096 } }).worker.maxResultBytes).toBe(4096);
    expect(normalizeCeleryOptions({ worker: { maxResultBytes: 64 * 1024 * 1024 } }).worker.maxResultBytes).toBe(64 * 1024 * 1024);
    expect(() => normalizeCeleryOptions({ worker: { maxResultBytes: 4095 } })).toThrow(/worker\.maxResultBytes: must be an integer >= 4096, got 4095/);
    expect(() => normalizeCeleryOptions({ worker: { maxResultBytes: 1.5e6 + 0.5 } })).toThrow(/worker\.maxResultBytes: must be an integer/);
    expect(() => normalizeCeleryOptions({ worker: { maxResultBytes: '8MB' as unknown as number } })).toThrow(/worker\.maxResultBytes: must be an integer >= 4096, got "8MB"/);
  });

  it('refuses cassandra settings without a cassandra result backend instead of ignoring them', () => {
    expect(() => normalizeCeleryOptions({ brokerUrl: 'amqp://h', cassandra: { contactPoints: ['h'], keyspace: 'ks' } })).toThrow(
      /resultBackend: cassandra settings are given but the result backend is none/,
    );
    expect(() => normalizeCeleryOptions({ broker_url: 'amqp://h', cassandra_servers: ['h'], cassandra_keyspace: 'ks' })).toThrow(/result_backend/);
  });
});

describe('normalizeCeleryOptions: routing, priorities and queue types', () => {
  it('reads a celeryconfig\'s routing keys as they are written', () => {
    const config = normalizeCeleryOptions({
      task_default_queue: 'jobs',
      task_default_exchange: 'jobs_x',
      task_default_exchange_type: 'topic',
      task_default_routing_key: 'jobs.default',
      task_queue_max_priority: 10,
      task_default_queue_type: 'quorum',
      task_create_missing_queue_type: 'classic',
      broker_native_delayed_delivery_queue_type: 'classic',
      task_default_priority: 3,
      worker_detect_quorum_queues: false,
      task_queues: { reports: { exchange: 'reports_x', exchange_type: 'fanout', binding_key: 'r', queue_arguments: { 'x-max-priority': 4 } } },
      task_routes: { 'reports.*': { queue: 'reports', routing_key: 'r.daily' } },
    } as CeleryOptionsInput);
    expect(config.routing).toMatchObject({
      defaultQueue: 'jobs',
      defaultExchange: 'jobs_x',
      defaultExchangeType: 'topic',
      defaultRoutingKey: 'jobs.default',
      queueMaxPriority: 10,
      queueType: 'quorum',
      createMissingQueueType: 'classic',
      delayedDeliveryQueueType: 'classic',
      queues: [['reports', { exchange: 'reports_x', exchangeType: 'fanout', routingKey: 'r', arguments: { 'x-max-priority': 4 } }]],
    });
    expect(config.defaultPriority).toBe(3);
    expect(config.worker.detectQuorumQueues).toBe(false);
    expect(config.routing.routers).toHaveLength(1);
  });

  it('uses per-consumer QoS only when a configured queue is quorum and detection is on (Celery 5.7)', () => {
    expect(perConsumerQos(normalizeCeleryOptions({}))).toBe(false);
    expect(perConsumerQos(normalizeCeleryOptions({ queueType: 'quorum' }))).toBe(true);
    // task_default_queue_type applies only without task_queues, as in Celery
    expect(perConsumerQos(normalizeCeleryOptions({ queueType: 'quorum', taskQueues: { a: {} } }))).toBe(false);
    expect(perConsumerQos(normalizeCeleryOptions({ taskQueues: { a: { arguments: { 'x-queue-type': 'quorum' } } } }))).toBe(true);
    // a worker queue created as missing with task_create_missing_queue_type
    expect(perConsumerQos(normalizeCeleryOptions({ createMissingQueueType: 'quorum', worker: { queues: ['other'] } }))).toBe(true);
  });

  it('consumes every queue of taskQueues when worker.queues is not given, as a Celery worker without -Q', () => {
    expect(normalizeCeleryOptions({ taskQueues: { a: {}, b: {} } }).worker.queues).toEqual(['a', 'b']);
    expect(normalizeCeleryOptions({ taskQueues: { a: {} }, worker: { queues: ['b'] } }).worker.queues).toEqual(['b']);
    expect(normalizeCeleryOptions({}).worker.queues).toEqual(['celery']);
  });

  it('gives every module configuration its own queue table, shared by the broker, producer and worker', () => {
    const config = normalizeCeleryOptions({});
    expect(queueTableOf(config)).toBe(queueTableOf(config));
    expect(queueTableOf(normalizeCeleryOptions({}))).not.toBe(queueTableOf(config));
  });

  it.each([
    [{ queueMaxPriority: 0 }, 'queueMaxPriority', /1-255/],
    [{ task_queue_max_priority: 256 }, 'queueMaxPriority', /1-255/],
    [{ queueType: 'stream' }, 'queueType', /'classic', 'quorum'/],
    [{ defaultExchangeType: 'x-delayed-message' }, 'defaultExchangeType', /'direct', 'topic', 'fanout', 'headers'/],
    [{ taskQueues: { a: { exchnage: 'x' } } }, 'taskQueues.a.exchnage', /unknown option/],
    [{ taskQueues: { a: { arguments: { 'x-queue-type': 'stream' } } } }, 'taskQueues.a.arguments', /x-queue-type/],
    [{ taskQueues: 'a' }, 'taskQueues', /must be an object/],
    [{ taskRoutes: 5 }, 'taskRoutes', /must be an object/],
    [{ defaultPriority: 300 }, 'defaultPriority', /0-255/],
    [{ worker: { consumerTimeoutMs: -1 } }, 'worker.consumerTimeoutMs', />= 0/],
  ])('rejects %j, naming %s', (input, key, detail) => {
    const err = configError(input);
    expect(err.key).toBe(key);
    expect(err.message).toMatch(detail);
  });

  it('refuses worker.detectQuorumQueues false with a quorum queue: RabbitMQ closes the connection on global QoS there', () => {
    expect(configError({ queueType: 'quorum', worker: { detectQuorumQueues: false } }).message).toMatch(/worker\.detectQuorumQueues: is false but celery is a quorum queue.*540 NOT_IMPLEMENTED/);
    expect(normalizeCeleryOptions({ worker: { detectQuorumQueues: false } }).worker.detectQuorumQueues).toBe(false);
  });

  it('names the celeryconfig key the user wrote', () => {
    expect(configError({ task_default_queue_type: 'stream' }).message).toMatch(/^Invalid nestjs-celery configuration: task_default_queue_type \(queueType\)/);
  });
});

describe('worker node name (worker.hostname) and remote control options', () => {
  it('expands Celery\'s %h %n %d %i %I (and %p), appends @%h to a bare name, and defaults to a name unique per process', () => {
    expect(resolveHostname(undefined, 'box.example.com', 4242)).toBe('nestjs-4242@box.example.com');
    expect(resolveHostname('celery@%h', 'box.example.com', 1)).toBe('celery@box.example.com');
    expect(resolveHostname('w%i%I@%n.%d', 'box.example.com', 1)).toBe('w0@box.example.com');
    expect(resolveHostname('api-%p@%n', 'box.example.com', 77)).toBe('api-77@box');
    expect(resolveHostname('worker1', 'box', 1)).toBe('worker1@box');
    expect(resolveHostname('a%%b@%h', 'box', 1)).toBe('a%b@box');
  });

  it('names a bad node name or option', () => {
    expect(() => resolveHostname('x@%q', 'box', 1)).toThrow(/worker.hostname: unknown token %q/);
    expect(() => resolveHostname('@box', 'box', 1)).toThrow(/worker.hostname: must be "name@host"/);
    expect(() => normalizeCeleryOptions({ worker: { remoteControl: { refuse: 'all' } } } as never)).toThrow(/worker.remoteControl.refuse: must be 'reshaping' or a list of command names/);
    expect(() => normalizeCeleryOptions({ worker: { remoteControl: { deny: [] } } } as never)).toThrow(/worker.remoteControl.deny: unknown option/);
    expect(normalizeCeleryOptions({ worker: { remoteControl: { refuse: 'reshaping' } } }).worker.remoteControlRefuse).toEqual(['shutdown', 'add_consumer', 'cancel_consumer', 'time_limit', 'rate_limit']);
    expect(normalizeCeleryOptions({ worker_enable_remote_control: false } as never).worker.enableRemoteControl).toBe(false);
  });
});

describe('revokes across restarts (worker.stateDb) and mingle', () => {
  const amqp = { brokerUrl: 'amqp://localhost' };
  it('stateDb: a file path (also as worker_state_db) or { table } with the Cassandra backend; mingle on with AMQP, off with memory://', () => {
    expect(normalizeCeleryOptions({ worker: { stateDb: '/var/lib/w.revoked' } }).worker.stateDb).toEqual({ file: '/var/lib/w.revoked' });
    expect(normalizeCeleryOptions({ worker_state_db: 'w.db' } as never).worker.stateDb).toEqual({ file: 'w.db' });
    expect(normalizeCeleryOptions({ ...amqp, resultBackend: 'cassandra', cassandra: { keyspace: 'k', contactPoints: ['h'], localDataCenter: 'dc1' }, worker: { stateDb: { table: 'revoked_ids' } } }).worker.stateDb).toEqual({ table: 'revoked_ids' });
    expect(normalizeCeleryOptions(amqp).worker).toMatchObject({ stateDb: null, mingle: true, mingleTimeoutMs: 1000 });
    expect(normalizeCeleryOptions({ ...amqp, worker: { mingle: false, mingleTimeoutMs: 300 } }).worker).toMatchObject({ mingle: false, mingleTimeoutMs: 300 });
    expect(normalizeCeleryOptions({ worker: { mingle: true } }).worker.mingle).toBe(true);
  });

  it('names a bad stateDb or mingle option', () => {
    expect(() => normalizeCeleryOptions({ worker: { stateDb: '' } })).toThrow(/worker.stateDb: must be a file path or \{ table \}/);
    expect(() => normalizeCeleryOptions({ worker: { stateDb: 5 } } as never)).toThrow(/worker.stateDb: must be a file path or \{ table \}, got 5/);
    expect(() => normalizeCeleryOptions({ worker: { stateDb: { table: 'x' } } })).toThrow(/worker.stateDb.table: a Cassandra table needs resultBackend 'cassandra'/);
    expect(() => normalizeCeleryOptions({ ...amqp, resultBackend: 'cassandra', cassandra: { keyspace: 'k', contactPoints: ['h'], localDataCenter: 'dc1' }, worker: { stateDb: { table: 'x;y' } } })).toThrow(/worker.stateDb.table: must be a CQL table name/);
    expect(() => normalizeCeleryOptions({ ...amqp, resultBackend: 'cassandra', cassandra: { keyspace: 'k', contactPoints: ['h'], localDataCenter: 'dc1' }, worker: { stateDb: { table: 'x', keyspace: 'k' } } } as never)).toThrow(/worker.stateDb.keyspace: unknown option/);
    expect(() => normalizeCeleryOptions({ worker: { mingle: 'yes' } } as never)).toThrow(/worker.mingle/);
    expect(() => normalizeCeleryOptions({ worker: { withoutMingle: true } } as never)).toThrow(/worker.withoutMingle/);
  });
});
