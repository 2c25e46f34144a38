/**
 * Many small tables per round trip: one simple-protocol Query of N `COPY … TO STDOUT` statements on the source
 * session, one Query of the N matching `COPY … FROM STDIN` statements on the target session, and the rows
 * forwarded between them as they arrive. A table's end on the source (its CommandComplete) becomes a CopyDone on
 * the target, which then runs the next COPY of its Query. Per table that saves the Query/CopyInResponse/ready round
 * trips on both links, the target's commit (the N COPYs share the Query's implicit transaction), and most socket
 * writes: rows go out in CopyData messages of up to 256 kB instead of one or two writes per incoming chunk. Nothing
 * is buffered beyond that: when the target's socket is full, reading from the source pauses.
 *
 * Errors still name their table: each statement that finishes sends its CommandComplete, so the count of those
 * received says which COPY failed. A failed batch leaves nothing behind on the target (its transaction rolls back);
 * the load then fails as a whole and its re-run reloads from a new snapshot, as for any load error.
 *
 * This drives the pg client's protocol hooks (submit/handle*), as pg-copy-streams does; the server accepts CopyData
 * following a Query and ignores CopyData/CopyDone that arrive after a COPY failed (protocol flow, COPY).
 */
import { Client } from "pg";

const MESSAGE_BYTES = 256 * 1024;
const COPY_DONE = Buffer.from([0x63, 0, 0, 0, 4]);

type Connection = { query(text: string): void; stream: import("net").Socket };

/** One simple Query whose COPY protocol messages go to the given hooks; settles at ReadyForQuery or the first error. */
class MultiCopyQuery {
  readonly done: Promise<void>;
  private resolve!: () => void;
  private reject!: (e: unknown) => void;
  private settled = false;
  constructor(readonly text: string, private hooks: { submitted?(c: Connection): void; copyData?(chunk: Buffer): void; commandComplete?(tag: string): void }) {
    this.done = new Promise<void>((res, rej) => { this.resolve = res; this.reject = rej; });
    this.done.catch(() => undefined); // observed by the caller; never an unhandled rejection
  }
  submit(connection: Connection): void {
    connection.query(this.text);
    this.hooks.submitted?.(connection);
  }
  /** pg overwrites it with its timeout mechanism when query_timeout is set. */
  callback(): void { /* settled through done */ }
  handleCopyInResponse(): void { /* data follows its Query without waiting for it */ }
  handleCopyData(msg: { chunk: Buffer }): void { this.hooks.copyData?.(msg.chunk); }
  handleCommandComplete(msg: { text?: string }): void { this.hooks.commandComplete?.(msg?.text ?? ""); }
  handleRowDescription(): void { /* none for COPY */ }
  handleDataRow(): void { /* none for COPY */ }
  handleEmptyQuery(): void { /* none */ }
  handlePortalSuspended(): void { /* none */ }
  handleReadyForQuery(): void { if (!this.settled) { this.settled = true; this.resolve(); } }
  handleError(e: unknown): void { if (!this.settled) { this.settled = true; this.reject(e); } }
}

/**
 * Writes CopyData messages (rows of the current table, packed) and CopyDone markers to the target's socket.
 * The parser's chunks are views into its own buffer, which it reuses: they are copied here at once.
 */
class CopyForwarder {
  private buf = Buffer.allocUnsafe(MESSAGE_BYTES);
  private len = 0;
  /** Offset of the open CopyData message's header in buf, or -1. */
  private open = -1;
  constructor(private sock: import("net").Socket, private onFull: () => void) {}
  row(chunk: Buffer): void {
    if (this.open < 0) {
      if (this.len + 5 + Math.min(chunk.length, 1) > MESSAGE_BYTES) this.flush();
      this.open = this.len;
      this.len += 5;
    }
    if (this.len + chunk.length > MESSAGE_BYTES) {
      this.close();
      this.flush();
      if (chunk.length + 5 > MESSAGE_BYTES) {
        const header = Buffer.from([0x64, 0, 0, 0, 0]);
        header.writeUInt32BE(chunk.length + 4, 1);
        this.write(Buffer.concat([header, chunk]));
        return;
      }
      this.open = 0;
      this.len = 5;
    }
    chunk.copy(this.buf, this.len);
    this.len += chunk.length;
  }
  endTable(): void {
    this.close();
    if (this.len + COPY_DONE.length > MESSAGE_BYTES) this.flush();
    COPY_DONE.copy(this.buf, this.len);
    this.len += COPY_DONE.length;
  }
  flush(): void {
    this.close();
    if (!this.len) return;
    const out = this.buf.subarray(0, this.len);
    this.buf = Buffer.allocUnsafe(MESSAGE_BYTES);
    this.len = 0;
    this.write(out);
  }
  private close(): void {
    if (this.open < 0) return;
    if (this.len === this.open + 5) this.len = this.open;   // no row in it: dropped
    else { this.buf[this.open] = 0x64; this.buf.writeUInt32BE(this.len - this.open - 1, this.open + 1); }
    this.open = -1;
  }
  private write(b: Buffer): void { if (!this.sock.write(b)) this.onFull(); }
}

export interface CopyBatchTable {
  /** `COPY … TO STDOUT` on the source. */
  out: string;
  /** `COPY … FROM STDIN` on the target, same columns and format. */
  inp: string;
}

export interface CopyBatch {
  /** Settles when the target finished every table, or rejects with the first error (the server's, or a lost connection's). */
  done: Promise<void>;
  /** The table the batch is at: the one the failing side was copying, after a failure. */
  at(): number;
  /** The source has sent every table (a stall after it is the target's). */
  sourceDone(): boolean;
}

/**
 * Copy `tables` in one round trip per side; the target session must be idle. `onBytes(i, n)`: n bytes of table i
 * arrived from the source; `onDone(i, rows)`: the target finished table i, `rows` rows.
 */
export function copyBatch(src: Client, dst: Client, tables: CopyBatchTable[], onBytes: (i: number, n: number) => void,
  onDone: (i: number, rows: number) => void): CopyBatch {
  let sent = 0, finished = 0, failedSide: "source" | "target" | undefined, sourceFinished = false;
  let forwarder: CopyForwarder | undefined;
  let paused: import("net").Socket | undefined;
  const resume = () => { const s = paused; paused = undefined; s?.resume(); };
  const inQuery = new MultiCopyQuery(tables.map((t) => t.inp).join(";\n"), {
    submitted(c) {
      forwarder = new CopyForwarder(c.stream, () => {
        if (paused) return;
        paused = (src as unknown as { connection: Connection }).connection.stream;
        paused.pause();
        c.stream.once("drain", resume);
      });
    },
    commandComplete(tag) {
      const m = /^COPY (\d+)/.exec(tag);
      if (finished < tables.length) onDone(finished++, m ? Number(m[1]) : 0);
    },
  });
  const outQuery = new MultiCopyQuery(tables.map((t) => t.out).join(";\n"), {
    copyData(chunk) { onBytes(sent, chunk.length); forwarder!.row(chunk); },
    commandComplete() {
      sent++;
      forwarder!.endTable();
      // The target finishes this table's COPY only once it has the CopyDone: send it now, not with the next table's rows.
      forwarder!.flush();
    },
  });
  // The client is idle, so the target's Query is written at once (submit), before any row is forwarded.
  void dst.query(inQuery as never);
  const at = () => Math.min(failedSide === "source" ? sent : finished, tables.length - 1);
  if (!forwarder) {
    return { done: Promise.reject(new Error("the target session was busy when a batch copy started")), at, sourceDone: () => false };
  }
  void src.query(outQuery as never);
  const done = Promise.all([
    outQuery.done.then(() => { sourceFinished = true; }, (e) => { failedSide ??= "source"; throw e; }),
    inQuery.done.catch((e) => { failedSide ??= "target"; throw e; }),
  ]).then(() => {
    if (sent !== tables.length || finished !== tables.length) {
      throw new Error(`the source sent ${sent} and the target finished ${finished} of ${tables.length} tables of a batch`);
    }
  }).finally(resume);
  return { done, at, sourceDone: () => sourceFinished };
}
