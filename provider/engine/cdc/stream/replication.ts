/**
 * The streaming replication protocol's client side, for one logical slot ("Streaming Replication
 * Protocol" in the PostgreSQL docs): START_REPLICATION over a `replication=database` connection, then
 * CopyData messages both ways — XLogData ('w') and primary keepalives ('k') from the walsender,
 * standby status updates ('r') from us.
 *
 * Our own, so that the exactly-once and flow-control rules depend on no library's internals
 * (../shared/notes/cdc.md §2 lists the traps of pg-logical-replication this replaces):
 *  - a status update reports exactly the position it is given (no +1) and is sent only when asked
 *    (no automatic or timer acknowledgement of what was merely received);
 *  - flow control: XLogData payloads are handed to `onData` one at a time, in order; while a handler's promise
 *    is pending the socket is paused and what arrives meanwhile is queued, so TCP backpressure reaches the walsender and memory stays bounded;
 *  - a failing handler stops the stream (reported once through `onError`) instead of moving on.
 * It uses pg's Client for connecting and authentication, and its connection's CopyData events (the
 * same ones pg-copy-streams relies on); those are checked when the stream starts.
 */
import { Client, ClientConfig } from "pg";
import type { Socket } from "net";
import { PgferryError } from "../../core/errors";

/** Microseconds from the Unix epoch to PostgreSQL's (2000-01-01). */
const PG_EPOCH_MS = 946684800000;

export interface ReplicationHandlers {
  /** The replication stream started (the walsender answered START_REPLICATION). */
  onStart?(): void;
  /**
   * One XLogData payload (a plugin message). A returned promise is awaited (the socket paused) before the next
   * is handed over; a handler that finished synchronously returns nothing, and the next message follows at once
   * (an await per message was a measured share of the drain's CPU). The payload may be a view into the connection's
   * read buffer: valid until onData returns (its synchronous part); a handler reading it later must copy it.
   */
  onData(payload: Buffer, walStart: bigint): Promise<void> | void;
  /** A primary keepalive: the walsender's WAL end, and whether it asks for a reply now. Not queued behind data. */
  onKeepalive(walEnd: bigint, replyRequested: boolean): void | Promise<void>;
  /** The connection or a handler failed; the stream does nothing more after it. */
  onError(e: unknown): void;
}

interface PgConnection {
  stream?: Socket;
  on(event: "copyData", f: (msg: { chunk: Buffer }) => void): void;
  once(event: "replicationStart", f: () => void): void;
  sendCopyFromChunk(chunk: Buffer): void;
}

export class ReplicationStream {
  private client?: Client;
  private connection?: PgConnection;
  private queue: { walStart: bigint; payload: Buffer }[] = [];
  private draining = false;
  private started = false;
  private ended = false;
  /** A handler or the protocol failed: nothing more is handed over (the socket stays paused until close()). */
  private failed = false;

  constructor(private config: ClientConfig, private h: ReplicationHandlers) {}

  /** Payloads are being handed to onData (the socket is paused meanwhile). */
  get processing(): boolean { return this.draining; }

  /** Payloads received and not yet handed to onData. */
  get queued(): number { return this.queue.length; }

  /**
   * Connect and send `startSql` (START_REPLICATION …). Resolves when the stream ends (close(), or the
   * server ends it); rejects on a connection or server error — unless close() was called first.
   */
  async run(startSql: string): Promise<void> {
    const client = new Client({ ...this.config, replication: "database" } as ClientConfig);
    this.client = client;
    client.on("error", (e) => { if (!this.ended) this.h.onError(e); });
    await client.connect();
    const connection = (client as unknown as { connection?: PgConnection }).connection;
    if (!connection || typeof connection.on !== "function" || typeof connection.sendCopyFromChunk !== "function") {
      throw new PgferryError("pg_internals", "the installed pg client has no connection with CopyData events (sendCopyFromChunk): the " +
        "replication stream cannot run; fix: install the pg version pinned in package.json (npm ci)");
    }
    if (this.ended) { await this.close(); return; }
    this.connection = connection;
    connection.once("replicationStart", () => { this.started = true; this.h.onStart?.(); });
    connection.on("copyData", ({ chunk }) => this.receive(chunk));
    try {
      await client.query(startSql);
    } catch (e) {
      if (!this.ended) throw e;
    }
  }

  private receive(chunk: Buffer): void {
    if (this.ended || this.failed) return;
    const kind = chunk[0];
    if (kind === 0x77 /* w: XLogData */) {
      if (chunk.length < 25) { this.stopWith(new PgferryError("replication_protocol", `an XLogData message of ${chunk.length} bytes (the header alone is 25)`)); return; }
      const walStart = chunk.readBigUInt64BE(1);
      // Queued: copied, since the chunk may be a view into pg's read buffer, which later reads reuse.
      if (this.draining || this.queue.length) { this.queue.push({ walStart, payload: Buffer.from(chunk.subarray(25)) }); return; }
      // Nothing waits before it: hand it over now, as a view (onData reads it before returning; see ReplicationHandlers);
      // only a handler that returns a promise pauses the stream.
      this.deliver({ walStart, payload: chunk.subarray(25) });
    } else if (kind === 0x6b /* k: primary keepalive */) {
      if (chunk.length < 18) { this.stopWith(new PgferryError("replication_protocol", `a keepalive message of ${chunk.length} bytes (18 expected)`)); return; }
      void this.h.onKeepalive(chunk.readBigUInt64BE(1), chunk[17] === 1);
    }
    // Anything else is not part of the logical streaming protocol: ignored, as the walsender sends none.
  }

  /** Hand one payload to onData; if it returns a promise, pause and drain what queues up meanwhile, in order. */
  private deliver(m: { walStart: bigint; payload: Buffer }): void {
    let pending: Promise<void> | void;
    try {
      pending = this.h.onData(m.payload, m.walStart);
    } catch (e) {
      this.stopWith(e);
      return;
    }
    if (pending) this.drain(pending);
  }

  /** Wait for `first` (a handler in progress), then hand queued payloads to onData one at a time, the socket paused meanwhile (backpressure). */
  private drain(first: Promise<void>): void {
    this.draining = true;
    this.connection?.stream?.pause();
    void (async () => {
      try {
        await first;
      } catch (e) {
        this.stopWith(e);
      }
      while (this.queue.length && !this.ended && !this.failed) {
        const m = this.queue.shift()!;
        try {
          const pending = this.h.onData(m.payload, m.walStart);
          if (pending) await pending;
        } catch (e) {
          this.stopWith(e);
        }
      }
      this.draining = false;
      if (!this.ended && !this.failed) this.connection?.stream?.resume();
    })();
  }

  private stopWith(e: unknown): void {
    if (this.ended || this.failed) return;
    this.failed = true;
    this.queue = [];
    this.connection?.stream?.pause();
    this.h.onError(e);
  }

  /**
   * Standby status update: `lsn` is reported as written, flushed and applied (exactly: the next byte
   * the walsender may discard up to). `ping` asks the walsender to answer at once with a keepalive.
   * Sent only while streaming.
   */
  sendStatus(lsn: bigint, ping = false): void {
    if (!this.started || this.ended || !this.connection) return;
    const b = Buffer.alloc(34);
    b[0] = 0x72; // 'r'
    b.writeBigUInt64BE(lsn, 1);
    b.writeBigUInt64BE(lsn, 9);
    b.writeBigUInt64BE(lsn, 17);
    b.writeBigInt64BE(BigInt(Date.now() - PG_EPOCH_MS) * 1000n, 25);
    b[33] = ping ? 1 : 0;
    this.connection.sendCopyFromChunk(b);
  }

  /** Cut the socket now (a stalled peer would never acknowledge a polite end). */
  destroySocket(): void {
    this.connection?.stream?.destroy();
  }

  /** End the stream: a polite end, bounded; then the socket is cut. */
  async close(): Promise<void> {
    this.ended = true;
    this.queue = [];
    const c = this.client;
    if (!c) return;
    this.connection?.stream?.resume(); // a paused socket would never see the server's end
    const ended = c.end().catch(() => undefined);
    await Promise.race([ended, new Promise((r) => setTimeout(r, 3000).unref())]);
    this.destroySocket();
  }
}
