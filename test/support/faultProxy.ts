/**
 * A TCP fault proxy for tests (loopback only): clients connect to `proxy.port`, it forwards to a server.
 * Faults, on every connection open now:
 *  - drop:  close both sides (FIN), as when a middlebox ends the flows;
 *  - reset: destroy both sides with RST (socket.resetAndDestroy());
 *  - stall: stop forwarding both ways without closing — packets vanish, no FIN, no RST (both sockets stop
 *           reading: the senders' windows fill, as behind a partition). New connections are accepted and
 *           stall too (nothing reaches the server) until heal();
 *  - heal:  forward again; what was held is delivered, as TCP retransmission does when a partition ends.
 * A stall at a userspace proxy is not visible to TCP keepalives (the proxy's own kernel answers them):
 * only application-level timeouts can detect it, which is what the tests measure.
 */
import * as net from "net";

interface Pair { client: net.Socket; server: net.Socket }

export class FaultProxy {
  private pairs = new Set<Pair>();
  private stalled = false;
  /** Connections accepted so far (a test can wait for a reconnect). */
  connections = 0;
  readonly faults: string[] = [];

  private constructor(private srv: net.Server, readonly port: number, readonly targetPort: number) {}

  static async start(targetPort: number, targetHost = "127.0.0.1"): Promise<FaultProxy> {
    let proxy: FaultProxy;
    const srv = net.createServer((client) => proxy.accept(client, targetHost));
    await new Promise<void>((resolve, reject) => { srv.once("error", reject); srv.listen(0, "127.0.0.1", () => resolve()); });
    proxy = new FaultProxy(srv, (srv.address() as net.AddressInfo).port, targetPort);
    return proxy;
  }

  /** The URI `uri` rewritten to go through this proxy (same credentials and database). */
  via(uri: string): string {
    return uri.replace(`:${this.targetPort}/`, `:${this.port}/`);
  }

  /** "127.0.0.1:port", for --source-host-for-target. */
  get hostPort(): string { return `127.0.0.1:${this.port}`; }

  get open(): number { return this.pairs.size; }

  private waiting: net.Socket[] = [];

  private accept(client: net.Socket, host: string): void {
    this.connections++;
    client.on("error", () => undefined);
    if (this.stalled) { client.pause(); this.waiting.push(client); return; }
    const server = net.connect(this.targetPort, host);
    const pair = { client, server };
    this.pairs.add(pair);
    client.pipe(server);
    server.pipe(client);
    const close = () => {
      this.pairs.delete(pair);
      if (!client.destroyed) client.destroy();
      if (!server.destroyed) server.destroy();
    };
    for (const s of [client, server]) { s.on("error", close); s.on("close", close); }
  }

  /** Close both sides of every open connection (FIN). */
  drop(): void {
    this.faults.push("drop");
    for (const p of [...this.pairs]) { p.client.destroySoon(); p.server.destroySoon(); this.pairs.delete(p); }
  }

  /** Reset every open connection (RST to both sides). */
  reset(): void {
    this.faults.push("reset");
    for (const p of [...this.pairs]) { p.client.resetAndDestroy(); p.server.resetAndDestroy(); this.pairs.delete(p); }
  }

  /** Stop forwarding, both ways, on open and new connections, without closing anything. */
  stall(): void {
    this.faults.push("stall");
    this.stalled = true;
    for (const p of this.pairs) { p.client.unpipe(p.server); p.server.unpipe(p.client); p.client.pause(); p.server.pause(); }
  }

  /** Forward again: held bytes flow on; connections that arrived during the stall reach the server now. */
  heal(): void {
    if (!this.stalled) return;
    this.stalled = false;
    for (const p of this.pairs) { p.client.pipe(p.server); p.server.pipe(p.client); }
    for (const c of this.waiting.splice(0)) if (!c.destroyed) this.accept(c, "127.0.0.1"), this.connections--;
  }

  async close(): Promise<void> {
    this.stalled = false;
    for (const c of this.waiting.splice(0)) c.destroy();
    for (const p of this.pairs) { p.client.destroy(); p.server.destroy(); }
    this.pairs.clear();
    await new Promise<void>((r) => this.srv.close(() => r()));
  }
}
