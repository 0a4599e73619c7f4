import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const SERVICES = resolve(__dirname, '../../scripts/services.sh');

/** The version scripts/services.sh runs by default (its CASSANDRA_VERSION). */
export const CASSANDRA_DEFAULT_VERSION = '5.0.9';
/** Versions users run that the compatibility suites start nodes of (scripts/services.sh fetches them on `up`). */
export const CASSANDRA_COMPAT_VERSIONS = ['5.0.8', CASSANDRA_DEFAULT_VERSION];

export interface PrivateNodeOptions {
  version: string;
  /** CQL port on 127.0.0.1; never the shared node's 9042. */
  port: number;
  /** Internode port; never the shared node's 7000. */
  storagePort: number;
  /** Lines appended to the node's cassandra.yaml. */
  extraYaml?: string;
  heap?: string;
  /** Keyspace created when the node is ready. */
  keyspace: string;
  /** false: the commit log is fsynced (CASSANDRA_SKIP_SYNC=0), true: it is not; unset: as the environment says. */
  skipSync?: boolean;
}

/**
 * A Cassandra node of one test, started and stopped by scripts/services.sh `node-up` / `node-down`
 * (the shared node's command line and yaml, its own directory and ports), never the shared node.
 */
export class PrivateCassandra {
  private constructor(
    readonly options: PrivateNodeOptions,
    private readonly dir: string,
  ) {}

  static async start(options: PrivateNodeOptions): Promise<PrivateCassandra> {
    const dir = mkdtempSync(join(tmpdir(), `nestjs-celery-cassandra-${options.version}-`));
    const node = new PrivateCassandra(options, dir);
    const extra = join(dir, 'extra.yaml');
    writeFileSync(extra, options.extraYaml ?? '');
    try {
      await run('bash', [SERVICES, 'node-up'], { env: node.env({ CASSANDRA_EXTRA_YAML: extra, CASSANDRA_KEYSPACE: options.keyspace }), maxBuffer: 1 << 24 });
    } catch (err) {
      await node.stop();
      const e = err as { stdout?: string; stderr?: string; message: string };
      throw new Error(`could not start Cassandra ${options.version} on port ${options.port}: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
    }
    return node;
  }

  /** Stops the node (TERM, KILL after 30 s) and removes its directory. */
  async stop(): Promise<void> {
    try {
      await run('bash', [SERVICES, 'node-down'], { env: this.env({}), maxBuffer: 1 << 24 });
    } finally {
      rmSync(this.run, { recursive: true, force: true });
      rmSync(this.dir, { recursive: true, force: true });
    }
  }

  /** The node's JVM process id (from its pid file). */
  pid(): number {
    return Number(readFileSync(join(this.run, 'cassandra.pid'), 'utf8').trim());
  }

  private get run(): string {
    return join(this.dir, 'run');
  }

  private env(extra: Record<string, string>): NodeJS.ProcessEnv {
    return {
      ...process.env,
      CASSANDRA_VERSION: this.options.version,
      CASSANDRA_RUN: this.run,
      CASSANDRA_PORT: String(this.options.port),
      CASSANDRA_STORAGE_PORT: String(this.options.storagePort),
      CASSANDRA_HEAP: this.options.heap ?? '256m',
      ...(this.options.skipSync === undefined ? {} : { CASSANDRA_SKIP_SYNC: this.options.skipSync ? '1' : '0' }),
      ...extra,
    };
  }
}
