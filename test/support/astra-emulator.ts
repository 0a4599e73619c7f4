import AdmZip from 'adm-zip';
import type { Client } from 'cassandra-driver';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, Server as HttpsServer } from 'node:https';
import { AddressInfo, connect as netConnect, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer, Server as TlsServer, TLSSocket } from 'node:tls';
import { CASSANDRA_HOST, CASSANDRA_PORT, KEYSPACE, rawCassandra } from './real-services';

/**
 * DataStax Astra DB's connection path, emulated in front of the real Cassandra node
 * (../shared/cassandra-test-node.md §6): a secure-connect bundle (config.json, ca.crt, cert, key)
 * → a metadata service over mutual TLS (`GET /metadata`) → TLS to an SNI proxy whose server name
 * is the node's host id. Certificates are made at setup with openssl; nothing is committed.
 * The node runs PasswordAuthenticator, and the emulator creates an Astra-shaped role: user
 * `token`, password `AstraCS:...`.
 */
export class AstraEmulator {
  readonly dir: string;
  readonly token: string;
  readonly bundlePath: string;
  hostId = '';
  private metadata: HttpsServer | null = null;
  private proxy: TlsServer | null = null;
  private readonly sockets = new Set<Socket>();
  metadataPort = 0;
  proxyPort = 0;
  /** Server names of the proxy connections routed to the node, and of those refused, in order. */
  readonly routed: string[] = [];
  readonly refused: string[] = [];

  private constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'astra-emulator-'));
    this.token = `AstraCS:${randomBytes(12).toString('hex')}:${randomBytes(32).toString('hex')}`;
    this.bundlePath = join(this.dir, 'secure-connect-celery.zip');
  }

  static async start(): Promise<AstraEmulator> {
    const emulator = new AstraEmulator();
    emulator.makeCertificates();
    await emulator.prepareNode();
    await emulator.startProxy();
    await emulator.startMetadataService();
    emulator.writeBundle(emulator.bundlePath);
    return emulator;
  }

  /** A bundle as Astra hands it out: config.json, the CA, and the client certificate and key. */
  writeBundle(path: string, config: Record<string, unknown> = {}): void {
    const zip = new AdmZip();
    zip.addFile('config.json', Buffer.from(JSON.stringify({ host: '127.0.0.1', port: this.metadataPort, keyspace: KEYSPACE, localDC: 'datacenter1', ...config })));
    zip.addFile('ca.crt', this.file('ca.crt'));
    zip.addFile('cert', this.file('client.crt'));
    zip.addFile('key', this.file('client.key'));
    zip.writeZip(path);
  }

  /** The client side of the bundle (its CA, client certificate and key), for tests that dial the emulator themselves. */
  clientTls(): { ca: Buffer; cert: Buffer; key: Buffer } {
    return { ca: this.file('ca.crt'), cert: this.file('client.crt'), key: this.file('client.key') };
  }

  /** Stops the metadata service only (the proxy stays), to test startup without it. */
  async stopMetadataService(): Promise<void> {
    await new Promise<void>((resolve) => (this.metadata ? this.metadata.close(() => resolve()) : resolve()));
    this.metadata = null;
  }

  async startMetadataService(): Promise<void> {
    const tlsOptions = this.serverTls();
    this.metadata = createHttpsServer(tlsOptions, (req, res) => {
      if (req.method !== 'GET' || req.url !== '/metadata') {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          version: 1,
          region: 'local',
          contact_info: { type: 'sni_proxy', local_dc: 'datacenter1', contact_points: [this.hostId], sni_proxy_address: `127.0.0.1:${this.proxyPort}` },
        }),
      );
    });
    await listen(this.metadata, this.metadataPort);
    this.metadataPort = (this.metadata.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await this.stopMetadataService();
    await new Promise<void>((resolve) => (this.proxy ? this.proxy.close(() => resolve()) : resolve()));
    await withSuperuser(async (c) => c.execute('DROP ROLE IF EXISTS "token"'));
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async startProxy(): Promise<void> {
    this.proxy = createTlsServer(this.serverTls(), (client: TLSSocket) => {
      this.sockets.add(client);
      client.on('close', () => this.sockets.delete(client));
      // Route by SNI: only the node's host id is known; anything else is refused.
      const name = typeof client.servername === 'string' ? client.servername : '';
      if (name !== this.hostId) {
        this.refused.push(name);
        client.destroy();
        return;
      }
      this.routed.push(name);
      const upstream = netConnect(CASSANDRA_PORT, CASSANDRA_HOST);
      this.sockets.add(upstream);
      upstream.on('close', () => this.sockets.delete(upstream));
      client.pipe(upstream).pipe(client);
      const close = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on('error', close);
      upstream.on('error', close);
    });
    await listen(this.proxy, 0);
    this.proxyPort = (this.proxy.address() as AddressInfo).port;
  }

  /** Reads the node's host id and creates the Astra-shaped `token` role. */
  private async prepareNode(): Promise<void> {
    await withSuperuser(async (c) => {
      this.hostId = String((await c.execute('SELECT host_id FROM system.local')).first().host_id);
      // A fresh role (not ALTER: Cassandra 5 rate-limits password changes).
      await c.execute('DROP ROLE IF EXISTS "token"');
      await c.execute(`CREATE ROLE "token" WITH LOGIN = true AND PASSWORD = '${this.token}'`);
      await c.execute(`GRANT ALL PERMISSIONS ON KEYSPACE ${KEYSPACE} TO "token"`);
    });
  }

  private serverTls() {
    return {
      key: this.file('server.key'),
      cert: this.file('server.crt'),
      ca: this.file('ca.crt'),
      requestCert: true,
      rejectUnauthorized: true,
    };
  }

  private file(name: string): Buffer {
    return readFileSync(join(this.dir, name));
  }

  /** A test CA, a server certificate for 127.0.0.1 (CN and SAN: the driver checks the CN) and a client certificate. */
  private makeCertificates(): void {
    const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: this.dir, stdio: 'pipe' });
    ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=Astra Emulator Test CA', '-keyout', 'ca.key', '-out', 'ca.crt');
    writeFileSync(join(this.dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', 'server.key', '-out', 'server.csr');
    ssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'server.ext', '-out', 'server.crt');
    writeFileSync(join(this.dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
    ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=astra-client', '-keyout', 'client.key', '-out', 'client.csr');
    ssl('x509', '-req', '-in', 'client.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'client.ext', '-out', 'client.crt');
  }
}

function listen(server: HttpsServer | TlsServer, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
}

async function withSuperuser<T>(fn: (client: Client) => Promise<T>): Promise<T> {
  const client = await rawCassandra();
  try {
    return await fn(client);
  } finally {
    await client.shutdown();
  }
}
