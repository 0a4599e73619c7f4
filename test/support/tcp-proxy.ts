import { createServer, Server, Socket, connect } from 'node:net';
import type { AddressInfo } from 'node:net';

/**
 * A TCP proxy on 127.0.0.1 in front of a real service, to cut or freeze the network under a
 * client while the service itself keeps running: `cut()` drops every connection and refuses new
 * ones (the broker "away"), `freeze()` keeps the connections open but passes no bytes (a hung
 * connection), `restore()` accepts and forwards again.
 */
export class TcpProxy {
  private readonly pairs = new Set<[Socket, Socket]>();
  private readonly flushes = new Set<() => void>();
  private mode: 'open' | 'cut' | 'frozen' = 'open';

  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async start(targetHost: string, targetPort: number): Promise<TcpProxy> {
    let proxy!: TcpProxy;
    const server = createServer((client) => proxy.accept(client, targetHost, targetPort));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    proxy = new TcpProxy(server, (server.address() as AddressInfo).port);
    return proxy;
  }

  /** Drops every connection and refuses new ones until `restore()`. */
  cut(): void {
    this.mode = 'cut';
    for (const [a, b] of this.pairs) {
      a.destroy();
      b.destroy();
    }
    this.pairs.clear();
    this.flushes.clear();
  }

  /** Keeps the connections but forwards nothing, in either direction, until `restore()` (bytes are held back). */
  freeze(): void {
    this.mode = 'frozen';
  }

  restore(): void {
    this.mode = 'open';
    for (const flush of this.flushes) flush();
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket, host: string, port: number): void {
    if (this.mode === 'cut') {
      client.destroy();
      return;
    }
    const upstream = connect(port, host);
    const pair: [Socket, Socket] = [client, upstream];
    const held: [Socket, Buffer][] = [];
    const flush = () => {
      for (const [to, chunk] of held.splice(0)) to.write(chunk);
    };
    this.pairs.add(pair);
    this.flushes.add(flush);
    const drop = () => {
      this.pairs.delete(pair);
      this.flushes.delete(flush);
      client.destroy();
      upstream.destroy();
    };
    const forward = (to: Socket) => (chunk: Buffer) => {
      if (this.mode === 'open') to.write(chunk);
      else held.push([to, chunk]);
    };
    client.on('data', forward(upstream)).on('error', drop).on('close', drop);
    upstream.on('data', forward(client)).on('error', drop).on('close', drop);
  }
}
