import { policies, types } from 'cassandra-driver';
import type { ResolvedCassandraConfig } from '../config/resolved-config';
import type { TlsMaterial } from '../config/tls-files';

/**
 * The cassandra-driver `ClientOptions` for our settings (pure, unit-tested). Astra mode maps the
 * secure-connect bundle onto `cloud.secureConnectBundle` with no contact points or TLS options,
 * which the driver forbids together; servers mode needs the local data center.
 */
export interface DriverClientOptions {
  cloud?: { secureConnectBundle: string };
  contactPoints?: string[];
  localDataCenter?: string;
  protocolOptions?: { port: number; maxVersion?: number };
  credentials?: { username: string; password: string };
  socketOptions?: { connectTimeout: number; readTimeout: number; tcpNoDelay?: boolean };
  pooling?: { maxRequestsPerConnection: number };
  policies?: { reconnection?: policies.reconnection.ReconnectionPolicy; loadBalancing?: policies.loadBalancing.LoadBalancingPolicy };
  sslOptions?: TlsMaterial;
}

/** First delay between attempts to reconnect to a lost Cassandra node; doubles up to the maximum. */
export const RECONNECT_BASE_DELAY_MS = 1000;
/** Longest delay between attempts to reconnect to a lost Cassandra node. */
export const RECONNECT_MAX_DELAY_MS = 10000;

export function cassandraClientOptions(config: ResolvedCassandraConfig, localDataCenter: string | null, tls: TlsMaterial | null = null): DriverClientOptions {
  const options: DriverClientOptions = {
    socketOptions: { connectTimeout: 5000, readTimeout: 12000, tcpNoDelay: true },
    // Protocol v4+ has 32768 stream ids per connection; the driver's default of 2048 made many
    // concurrent AsyncResult.get() calls fail with BusyConnectionError.
    pooling: { maxRequestsPerConnection: 32768 },
    // The driver's default waits up to 10 minutes between reconnection attempts (1 s doubling),
    // so a worker holding unacknowledged messages could sit idle for minutes after Cassandra is
    // back; capped at RECONNECT_MAX_DELAY_MS it resumes within seconds.
    policies: { reconnection: new policies.reconnection.ExponentialReconnectionPolicy(RECONNECT_BASE_DELAY_MS, RECONNECT_MAX_DELAY_MS, false) },
  };
  if (config.credentials) options.credentials = { ...config.credentials };
  if (config.secureConnectBundle) {
    options.cloud = { secureConnectBundle: config.secureConnectBundle };
    return options;
  }
  options.contactPoints = [...(config.contactPoints ?? [])];
  if (tls) options.sslOptions = tls;
  // Protocol v4, the newest this driver speaks: left to negotiate, it opens every connection with
  // DSE v2, is refused by Apache Cassandra, closes and opens again (two connects per connection),
  // and a client shut down in that window leaves the second socket open.
  options.protocolOptions = { port: config.port, maxVersion: types.protocolVersion.v4 };
  if (localDataCenter) options.localDataCenter = localDataCenter;
  return options;
}

/** `LOCAL_QUORUM` → the driver's `localQuorum` key of `types.consistencies`. */
export function driverConsistencyKey(name: string): string {
  return name.toLowerCase().replace(/_([a-z])/g, (_m, c: string) => c.toUpperCase());
}
