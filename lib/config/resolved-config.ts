import type { PeerCompat } from '../protocol/task-message';

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
  };
  publishTimeoutMs: number;
  accept: string[];
  peerCompat: PeerCompat;
  resultPollIntervalMs: number;
  /** Rate limits (issue 12 item 4). */
  rateLimits: ResolvedRateLimitConfig;
}

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
