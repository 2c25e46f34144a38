/**
 * Consistent full load: N workers, every one inside the snapshot the replication slot exported,
 * COPY source → target with explicit column lists (never generated columns). Large tables with a
 * single-column integer key are split into key ranges so one table does not serialise the load.
 * Target tables have no indexes, constraints or triggers yet (post-data comes after), which is what
 * makes COPY fast; whole-table copies use COPY FREEZE so the target needs no anti-wraparound rewrite.
 */
import { pipeline } from "stream/promises";
import { Transform } from "stream";
import { Client } from "pg";
import { from as copyFrom, to as copyTo } from "pg-copy-streams";
import { TableInfo } from "../catalog/catalog";
import { connect, connectionLost, DEFAULT_STALL_TIMEOUT_SEC, destroyClient, endClient, Endpoint, qualified, quoteIdent, quoteLiteral, socketOf, stallError } from "../core/endpoint";
import { PgferryError } from "../core/errors";
import { copyBatch } from "./copyBatch";

export interface CopyJob {
  table: TableInfo;
  /** Key range [lo, hi) for a split table; absent = the whole table. */
  range?: { key: string; lo: bigint; hi: bigint; last: boolean };
  estimatedBytes: number;
}

export interface TableLoadProgress {
  /** "schema.name", for display */
  table: string;
  schema: string;
  name: string;
  /** Seconds from the first to the last byte of this table. */
  seconds: number;
  rows: number;
  bytes: number;
  /** Bytes of the COPYs that have finished (`bytes` also counts running ones): what the load records for other processes. */
  copiedBytes: number;
  estimatedRows: number;
  estimatedBytes: number;
  done: boolean;
}

export interface LoadResult { rows: number; bytes: number; seconds: number; tables: TableLoadProgress[] }

function publicView(p: TableLoadProgress & { pending: number; startedAt: number }): TableLoadProgress {
  const { pending: _pending, startedAt: _startedAt, ...rest } = p;
  return { ...rest };
}

/** Tables above this size are split into key ranges (when they have a single integer key). */
export const SPLIT_BYTES = 64 * 1024 * 1024;

/**
 * Tables below this size are truncated up front with the others, many per statement, and copied without their own
 * transaction (BEGIN, TRUNCATE, COPY FREEZE, COMMIT: three round trips more per table, which dominated the load of
 * 2,000 small tables); FREEZE buys nothing measurable for them. Bigger whole tables keep COPY FREEZE.
 */
export const SMALL_TABLE_BYTES = 8 * 1024 * 1024;

/** Tables per up-front TRUNCATE statement: each one locks its tables (and TOAST tables) in one transaction. */
const TRUNCATE_CHUNK = 200;

/**
 * Small tables copied per round trip (copy/copyBatch.ts), up to this many and this many estimated bytes: enough to
 * make the per-table cost small, few enough that the workers still share the last tables evenly and that one
 * batch's transaction holds a bounded number of locks.
 */
export const BATCH_TABLES = 50, BATCH_BYTES = 16 * 1024 * 1024;

/**
 * Open a source session inside the exported snapshot (REPEATABLE READ, read-only). Without a snapshot
 * (the cutover's copy of unlogged tables, while the source is frozen) each session takes its own.
 */
export async function snapshotSession(source: Endpoint, snapshot: string | undefined): Promise<Client> {
  const c = await connect(source, { application_name: "pgferry load" });
  await c.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  if (snapshot !== undefined) await c.query(`SET TRANSACTION SNAPSHOT ${quoteLiteral(snapshot)}`);
  return c;
}

/** Split plan, biggest first so the last job to finish is a small one. */
export async function planJobs(snap: Client, tables: TableInfo[], jobs: number): Promise<CopyJob[]> {
  const out: CopyJob[] = [];
  for (const t of tables) {
    if (t.splitKey && t.bytes > SPLIT_BYTES && jobs > 1) {
      const r = (await snap.query(`SELECT min(${quoteIdent(t.splitKey)})::text AS lo, max(${quoteIdent(t.splitKey)})::text AS hi FROM ONLY ${qualified(t.schema, t.name)}`)).rows[0];
      if (r.lo !== null) {
        const lo = BigInt(r.lo), hi = BigInt(r.hi) + 1n;
        const parts = BigInt(Math.min(jobs * 4, Math.ceil(t.bytes / SPLIT_BYTES)));
        const step = (hi - lo + parts - 1n) / parts;
        for (let a = lo, i = 0n; a < hi; a += step, i++) {
          const b = a + step >= hi ? hi : a + step;
          out.push({ table: t, range: { key: t.splitKey, lo: a, hi: b, last: b >= hi }, estimatedBytes: t.bytes / Number(parts) });
        }
        continue;
      }
    }
    out.push({ table: t, estimatedBytes: t.bytes });
  }
  return out.sort((a, b) => b.estimatedBytes - a.estimatedBytes);
}

/** The tables, of those given, whose main fork on the target has a page (those without one hold no row). */
async function nonEmptyTables(c: Client, tables: TableInfo[]): Promise<TableInfo[]> {
  const r = await c.query(`SELECT s, t FROM unnest($1::text[], $2::text[]) AS v(s, t)
    WHERE pg_relation_size(format('%I.%I', s, t)::regclass) > 0`, [tables.map((t) => t.schema), tables.map((t) => t.name)]);
  const keep = new Set(r.rows.map((x) => `${x.s}\u0000${x.t}`));
  return tables.filter((t) => keep.has(`${t.schema}\u0000${t.name}`));
}

/**
 * Binary for tables of built-in scalar types only (measured 25-45 % faster than text here); text for
 * the rest, since binary arrays embed element type OIDs and user types may differ between servers.
 */
function copySql(job: CopyJob, freeze = true): { out: string; inp: string } {
  const t = job.table;
  const cols = t.columns.map(quoteIdent).join(", ");
  // A table without columns (all dropped, or made so) still has rows: COPY takes no column list for it.
  const list = cols ? ` (${cols})` : "";
  const name = qualified(t.schema, t.name);
  const fmt = t.binaryCopySafe ? "FORMAT binary" : "FORMAT text";
  if (!job.range) return { out: `COPY ${name}${list} TO STDOUT WITH (${fmt})`, inp: `COPY ${name}${list} FROM STDIN WITH (${fmt}${freeze ? ", FREEZE" : ""})` };
  const k = quoteIdent(job.range.key);
  return {
    out: `COPY (SELECT ${cols} FROM ONLY ${name} WHERE ${k} >= ${job.range.lo} AND ${k} < ${job.range.hi}) TO STDOUT WITH (${fmt})`,
    inp: `COPY ${name}${list} FROM STDIN WITH (${fmt})`,
  };
}

/**
 * A table with no columns COPY can name — none at all, or only generated ones — still holds rows (a
 * zero-column table can hold any number of them), and `COPY t () …` is a syntax error. Its content is
 * exactly its row count: count in the snapshot, insert that many rows of defaults (generated columns
 * compute themselves).
 */
async function copyRowsWithoutColumns(src: Client, dst: Client, name: string): Promise<number> {
  const n = Number((await src.query(`SELECT count(*)::bigint AS n FROM ONLY ${name}`)).rows[0].n);
  if (n > 0) await dst.query(`INSERT INTO ${name} SELECT FROM generate_series(1, $1::bigint)`, [n]);
  return n;
}

/**
 * Copy every table with `jobs` workers. Each worker holds one source session in the snapshot and
 * one target session. Any failure stops all workers and destroys their connections (a COPY TO
 * cannot be cancelled in-band), then rejects.
 */
export async function runLoad(source: Endpoint, target: Endpoint, snapshot: string | undefined, tables: TableInfo[], jobs: number,
  onProgress?: (p: TableLoadProgress) => void, stallTimeoutSec = DEFAULT_STALL_TIMEOUT_SEC): Promise<LoadResult> {
  const t0 = Date.now();
  const progress = new Map<string, TableLoadProgress & { pending: number; startedAt: number }>();
  const key = (t: TableInfo) => `${t.schema}.${t.name}`;
  const plan = await (async () => {
    const c = await snapshotSession(source, snapshot);
    try { return await planJobs(c, tables, jobs); } finally { await c.end().catch(() => undefined); }
  })();
  for (const j of plan) {
    const k = key(j.table);
    const p = progress.get(k) ?? { table: k, schema: j.table.schema, name: j.table.name, seconds: 0, rows: 0, bytes: 0, copiedBytes: 0,
      estimatedRows: j.table.estimatedRows, estimatedBytes: j.table.bytes, done: false, pending: 0, startedAt: 0 };
    p.pending++;
    progress.set(k, p);
  }
  const openTarget = async () => {
    const c = await connect(target, { application_name: "pgferry load" });
    // The cutover's copy (no snapshot): post-data exists, so user and TRUNCATE triggers must not fire; and a
    // rollback's target is the frozen old server, which pgferry's own sessions write through.
    if (snapshot === undefined) await c.query("SET session_replication_role = replica; SET default_transaction_read_only = off").catch(async (e) => { await c.end(); throw e; });
    return c;
  };
  // Big whole tables truncate inside the COPY's transaction (needed for FREEZE); split and small tables once, up front.
  // The cutover's copy truncates all its tables up front, in one statement: unlogged tables may reference
  // each other by foreign keys (on a rollback's target they exist already), which a one-table TRUNCATE refuses.
  const recopy = snapshot === undefined;
  const ownTransaction = (j: CopyJob) => !j.range && !recopy && j.table.bytes >= SMALL_TABLE_BYTES;
  const upFront = recopy ? tables : [...new Set(plan.filter((j) => !ownTransaction(j)).map((j) => j.table))];
  if (upFront.length) {
    const c = await openTarget();
    try {
      // The cutover's copy keeps one statement (its tables may reference each other); the load's tables have no foreign keys yet.
      // The load truncates only tables that hold something: a table whose main fork has no page has no row (any row
      // written, even by a COPY that was cut off or rolled back, extended it), and TRUNCATE of hundreds of just-created
      // empty tables was ~0.3 s of the regression database's load.
      const toTruncate = recopy ? upFront : await nonEmptyTables(c, upFront);
      const chunk = recopy ? upFront.length : TRUNCATE_CHUNK;
      for (let i = 0; i < toTruncate.length; i += chunk) {
        await c.query(`TRUNCATE ${toTruncate.slice(i, i + chunk).map((t) => `ONLY ${qualified(t.schema, t.name)}`).join(", ")}`);
      }
    } finally { await c.end(); }
  }

  const queue = [...plan];
  const clients = new Set<Client>();
  let failure: unknown;
  /** Set when a COPY pipe stalled (watchCopy): the error names that link instead of the cut it caused. */
  let stalled: PgferryError | undefined;
  const worker = async () => {
    const src = await snapshotSession(source, snapshot);
    clients.add(src);
    const dst = await openTarget();
    clients.add(dst);
    // A crash mid-load restarts the load from a new snapshot, so durability per COPY buys nothing.
    await dst.query("SET synchronous_commit = off");
    for (let job; !failure && (job = queue.shift());) {
      if (batchable(job)) {
        const batch = [job];
        for (let bytes = job.estimatedBytes; batch.length < BATCH_TABLES && queue.length && batchable(queue[0]) &&
          bytes + queue[0].estimatedBytes <= BATCH_BYTES;) {
          const next = queue.shift()!;
          bytes += next.estimatedBytes;
          batch.push(next);
        }
        await copyTables(src, dst, batch);
        continue;
      }
      const p = progress.get(key(job.table))!;
      const ownTruncate = ownTransaction(job);
      const sql = copySql(job, ownTruncate);
      p.startedAt ||= Date.now();
      let jobBytes = 0;
      const counter = new Transform({
        transform(chunk: Buffer, _enc, cb) { p.bytes += chunk.length; jobBytes += chunk.length; cb(null, chunk); },
      });
      const name = qualified(job.table.schema, job.table.name);
      let rows: number;
      try {
        if (ownTruncate) { await dst.query("BEGIN"); await dst.query(`TRUNCATE ONLY ${name}`); }
        if (!job.table.columns.length) {
          rows = await copyRowsWithoutColumns(src, dst, name);
        } else {
          const inp = dst.query(copyFrom(sql.inp));
          const out = src.query(copyTo(sql.out));
          let sourceDone = false;
          out.on("end", () => { sourceDone = true; });
          const unwatch = watchCopy(src, dst, () => sourceDone, () => inp.writableLength, stallTimeoutSec * 1000, (side) => {
            stalled ??= stallError(side === "source" ? source : target, side === "source"
              ? "no COPY data came from it" : "it accepted no COPY data", stallTimeoutSec);
          });
          try {
            await pipeline(out, counter, inp);
          } finally { unwatch(); }
          rows = Number(inp.rowCount ?? 0);
        }
        if (ownTruncate) await dst.query("COMMIT");
      } catch (e) {
        throw loadError(job.table, src, dst, e);
      }
      finished(p, rows, jobBytes);
    }
    await src.query("COMMIT");
  };
  const finished = (p: TableLoadProgress & { pending: number; startedAt: number }, rows: number, bytes: number) => {
    p.rows += rows;
    p.copiedBytes += bytes;
    p.seconds = (Date.now() - p.startedAt) / 1000;
    if (--p.pending === 0) p.done = true;
    onProgress?.(publicView(p));
  };
  /** Every load error names its table: which one broke is the first thing the user needs. */
  const loadError = (table: TableInfo, src: Client, dst: Client, e: unknown): PgferryError => {
    if (stalled) {
      return new PgferryError("stalled", `loading table ${table.schema}.${table.name} stopped: ${stalled.message}; ` +
        `run pgferry start again once the link answers: it reloads from a new snapshot`);
    }
    // A broken connection names its link (a reset on the target's side surfaces as an error of the COPY from the source).
    const lost = connectionLost(src) ? source : connectionLost(dst) ? target : undefined;
    const link = lost ? ` (the connection to the ${lost.role} ${lost.host}:${lost.port} was lost; fix: check the network to the ` +
      `${lost.role} and that it is up, then run pgferry start again: it reloads from a new snapshot)` : "";
    const full = (e as { code?: string }).code === "53100" ? ` (the target's disk is full; fix: free or add space on the target, then run ` +
      `pgferry start again: it reloads; the replication slot is released meanwhile, so the source keeps no WAL for it)` : "";
    return new PgferryError("load_failed", `loading table ${table.schema}.${table.name} failed: ${(e as Error).message ?? e}${link}${full}`);
  };
  /** Whole small tables with columns to name: copied many per round trip (copy/copyBatch.ts). */
  const batchable = (j: CopyJob) => !j.range && !ownTransaction(j) && j.table.columns.length > 0;
  const copyTables = async (src: Client, dst: Client, batch: CopyJob[]) => {
    const ps = batch.map((j) => progress.get(key(j.table))!);
    const bytes = batch.map(() => 0);
    // A table of the batch starts with its first byte (the periodic report shows only tables under way).
    const b = copyBatch(src, dst, batch.map((j) => copySql(j, false)),
      (i, n) => { ps[i].startedAt ||= Date.now(); ps[i].bytes += n; bytes[i] += n; },
      (i, rows) => { ps[i].startedAt ||= Date.now(); finished(ps[i], rows, bytes[i]); });
    const unwatch = watchCopy(src, dst, b.sourceDone, () => 0, stallTimeoutSec * 1000, (side) => {
      stalled ??= stallError(side === "source" ? source : target, side === "source"
        ? "no COPY data came from it" : "it accepted no COPY data", stallTimeoutSec);
    });
    try {
      await b.done;
    } catch (e) {
      throw loadError(batch[b.at()].table, src, dst, e);
    } finally { unwatch(); }
  };
  const workers = Array.from({ length: Math.max(1, Math.min(jobs, plan.length)) }, () => worker().catch((e) => {
    failure ??= e;
    for (const c of clients) destroyClient(c);
  }));
  const ticker = onProgress ? setInterval(() => { for (const p of progress.values()) if (!p.done && p.startedAt) onProgress(publicView(p)); }, 500) : undefined;
  try {
    await Promise.all(workers);
  } finally {
    if (ticker) clearInterval(ticker);
    await Promise.all([...clients].map((c) => endClient(c)));
  }
  if (failure) {
    if (failure instanceof PgferryError) throw failure;
    const msg = failure instanceof Error ? failure.message : String(failure);
    throw new PgferryError("load_failed", `the full load failed: ${msg}`);
  }
  const tablesOut = [...progress.values()].map(publicView);
  return { rows: tablesOut.reduce((a, b) => a + b.rows, 0), bytes: tablesOut.reduce((a, b) => a + b.bytes, 0), seconds: (Date.now() - t0) / 1000, tables: tablesOut };
}

/**
 * Watch one COPY pipe (source COPY OUT → target COPY IN) for a stalled link. Progress is a byte from the
 * source or a byte the target's socket took; a busy server does not stop either while a COPY runs (the
 * source streams rows, the target consumes them), so `ms` without any means a link stopped forwarding —
 * packets vanishing at a middlebox, which TCP keepalives cannot see. Which link: the target's, when
 * writes to it are pending (its socket or the COPY IN stream hold unsent bytes) or the source already
 * sent all its data (the pipe waits for the target's answer); otherwise the source's. On a stall,
 * onStall names it and both connections are cut, so the pipeline fails instead of waiting forever.
 */
function watchCopy(src: Client, dst: Client, sourceDone: () => boolean, inputPending: () => number, ms: number,
  onStall: (side: "source" | "target") => void): () => void {
  let last = Date.now();
  const srcSock = socketOf(src), dstSock = socketOf(dst);
  const seen = () => { last = Date.now(); };
  srcSock?.on("data", seen);
  let written = dstSock?.bytesWritten ?? 0, pending = dstSock?.writableLength ?? 0;
  const timer = setInterval(() => {
    // bytesWritten counts bytes handed to the socket (some may still be queued); sent = written - queued.
    const w = dstSock?.bytesWritten ?? 0, q = dstSock?.writableLength ?? 0;
    if (w - q !== written - pending) seen();
    written = w; pending = q;
    if (Date.now() - last <= ms) return;
    clearInterval(timer);
    const blocked = sourceDone() || q > 0 || inputPending() > 0;
    onStall(blocked ? "target" : "source");
    destroyClient(src); destroyClient(dst);
  }, Math.max(50, Math.min(1000, ms / 10)));
  timer.unref();
  return () => { clearInterval(timer); srcSock?.off("data", seen); };
}
