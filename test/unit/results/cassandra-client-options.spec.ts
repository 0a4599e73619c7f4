import { policies, types } from 'cassandra-driver';
import { normalizeCeleryOptions } from '../../../lib/config/normalize-options';
import type { ResolvedCassandraConfig } from '../../../lib/config/resolved-config';
import { cassandraClientOptions, driverConsistencyKey } from '../../../lib/results/cassandra-client-options';

function resolved(cassandra: Record<string, unknown>): ResolvedCassandraConfig {
  const config = normalizeCeleryOptions({ resultBackend: 'cassandra', cassandra: cassandra as never });
  if (!config.cassandra) throw new Error('no cassandra config');
  return config.cassandra;
}

describe('cassandraClientOptions: Astra mode (secure-connect bundle)', () => {
  const astra = resolved({ keyspace: 'celery_ks', secureConnectBundle: '/secrets/secure-connect-db.zip', token: 'AstraCS:abc:def' });

  it('maps the bundle onto cloud.secureConnectBundle', () => {
    expect(cassandraClientOptions(astra, null).cloud).toEqual({ secureConnectBundle: '/secrets/secure-connect-db.zip' });
  });

  it('sends the token as credentials token / AstraCS:…', () => {
    expect(cassandraClientOptions(astra, null).credentials).toEqual({ username: 'token', password: 'AstraCS:abc:def' });
  });

  it('sets no contactPoints, sslOptions, localDataCenter or port, which the driver forbids with a bundle', () => {
    const options = cassandraClientOptions(astra, 'dc-from-caller') as Record<string, unknown>;
    expect(options).not.toHaveProperty('contactPoints');
    expect(options).not.toHaveProperty('sslOptions');
    expect(options).not.toHaveProperty('localDataCenter');
    expect(options).not.toHaveProperty('protocolOptions');
  });

  it('uses client id / secret credentials when given instead of a token', () => {
    const withSecret = resolved({ keyspace: 'ks', secureConnectBundle: '/b.zip', credentials: { username: 'clientId', password: 'secret' } });
    expect(cassandraClientOptions(withSecret, null).credentials).toEqual({ username: 'clientId', password: 'secret' });
  });
});

describe('cassandraClientOptions: servers mode', () => {
  const servers = resolved({ contactPoints: ['10.0.0.1', '10.0.0.2:9043'], port: 9142, keyspace: 'ks', localDataCenter: 'dc1' });

  it('passes the contact points, the port and the local data center', () => {
    const options = cassandraClientOptions(servers, 'dc1');
    expect(options.contactPoints).toEqual(['10.0.0.1', '10.0.0.2:9043']);
    expect(options.protocolOptions).toEqual({ port: 9142, maxVersion: 4 });
    expect(options.localDataCenter).toBe('dc1');
    expect(options).not.toHaveProperty('cloud');
  });

  it('leaves localDataCenter out when none is known yet (the driver then learns it from the node)', () => {
    expect(cassandraClientOptions(servers, null)).not.toHaveProperty('localDataCenter');
  });

  it('sets no credentials when none are configured', () => {
    expect(cassandraClientOptions(servers, 'dc1')).not.toHaveProperty('credentials');
  });

  it('passes username / password credentials', () => {
    const withAuth = resolved({ contactPoints: ['h'], keyspace: 'ks', credentials: { username: 'cassandra', password: 'pw' } });
    expect(cassandraClientOptions(withAuth, 'dc1').credentials).toEqual({ username: 'cassandra', password: 'pw' });
  });

  it('copies the contact points and credentials instead of sharing the config objects', () => {
    const withAuth = resolved({ contactPoints: ['h'], keyspace: 'ks', credentials: { username: 'u', password: 'p' } });
    const options = cassandraClientOptions(withAuth, 'dc1');
    options.contactPoints?.push('mutated');
    if (options.credentials) options.credentials.password = 'mutated';
    expect(withAuth.contactPoints).toEqual(['h']);
    expect(withAuth.credentials).toEqual({ username: 'u', password: 'p' });
  });

  it('sets connect and read timeouts, and TCP_NODELAY', () => {
    expect(cassandraClientOptions(servers, 'dc1').socketOptions).toEqual({ connectTimeout: 5000, readTimeout: 12000, tcpNoDelay: true });
  });

  it('allows the 32768 concurrent requests per connection of protocol v4+', () => {
    expect(cassandraClientOptions(servers, 'dc1').pooling).toEqual({ maxRequestsPerConnection: 32768 });
  });

  it.each([
    ['servers', () => servers],
    ['Astra', () => resolved({ keyspace: 'k', secureConnectBundle: '/b.zip', token: 'AstraCS:a:b' })],
  ])('%s: reconnects to a lost node at least every 10 s (1 s, doubling, capped), not the driver default of up to 10 minutes', (_name, config) => {
    const policy = cassandraClientOptions(config(), 'dc1').policies?.reconnection;
    expect(policy).toBeInstanceOf(policies.reconnection.ExponentialReconnectionPolicy);
    const schedule = (policy as policies.reconnection.ReconnectionPolicy).newSchedule();
    const delays = Array.from({ length: 12 }, () => schedule.next().value as number);
    // the driver adds jitter: the first delay 1 s to 1.15 s, the capped ones 85 % to 100 % of 10 s
    expect(delays[0]).toBeGreaterThanOrEqual(1000);
    expect(delays[0]).toBeLessThanOrEqual(1150);
    expect(Math.max(...delays)).toBeLessThanOrEqual(10000);
    expect(delays[11]).toBeGreaterThanOrEqual(8500);
  });
});

describe('driverConsistencyKey', () => {
  it.each([
    ['LOCAL_QUORUM', 'localQuorum'],
    ['ONE', 'one'],
    ['EACH_QUORUM', 'eachQuorum'],
    ['LOCAL_ONE', 'localOne'],
    ['LOCAL_SERIAL', 'localSerial'],
    ['ALL', 'all'],
  ])('maps %s to the driver key %s', (name, key) => {
    expect(driverConsistencyKey(name)).toBe(key);
  });

  it('gives a key of cassandra-driver types.consistencies for every level the config accepts', () => {
    const consistencies = types.consistencies as unknown as Record<string, number>;
    for (const name of ['ANY', 'ONE', 'TWO', 'THREE', 'QUORUM', 'ALL', 'LOCAL_QUORUM', 'EACH_QUORUM', 'SERIAL', 'LOCAL_SERIAL', 'LOCAL_ONE']) {
      expect(consistencies[driverConsistencyKey(name)]).toEqual(expect.any(Number));
    }
    expect(consistencies[driverConsistencyKey('LOCAL_QUORUM')]).toBe(types.consistencies.localQuorum);
  });
});
