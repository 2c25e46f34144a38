/**
 * The consistent starting point: a publication naming the migrated tables, then a logical slot
 * created on a replication connection with an exported snapshot. Everything committed before the
 * slot's consistent point is in the snapshot (the load copies it); everything after is streamed
 * from the slot — no gap, no overlap. The publication comes first: pgoutput reads membership
 * through the historic snapshot at each change.
 */
import { Client } from "pg";
import { TableInfo } from "../catalog/catalog";
import { backendPid, connect, connectReplication, endClient, Endpoint, qualified, quoteIdent, quoteLiteral } from "../core/endpoint";
import { PgferryError } from "../core/errors";
import { decoderFor } from "../cdc/decoders";
import type { OutputPlugin } from "../core/options";

export interface SlotSnapshot {
  /** Replication connection that must stay open, and run nothing else, while the snapshot is in use. */
  connection: Client;
  consistentPoint: string;
  snapshotName: string;
}

export async function createPublication(src: Client, name: string, published: TableInfo[]): Promise<void> {
  await src.query(`DROP PUBLICATION IF EXISTS ${quoteIdent(name)}`);
  // ONLY for plain tables: without it an inheritance parent brings its children into the publication, even those
  // the selection leaves out (the target lacks them, and CREATE SUBSCRIPTION then fails on them).
  const list = published.map((t) => `${t.kind === "r" ? "ONLY " : ""}${qualified(t.schema, t.name)}`).join(", ");
  // Partitioned tables publish through their root, so target partitioning may differ from the source's.
  await src.query(`CREATE PUBLICATION ${quoteIdent(name)} FOR TABLE ${list} WITH (publish_via_partition_root = true)`);
}

export async function dropPublication(src: Client, name: string): Promise<boolean> {
  const r = await src.query(`SELECT 1 FROM pg_publication WHERE pubname = $1`, [name]);
  if (!r.rowCount) return false;
  await src.query(`DROP PUBLICATION IF EXISTS ${quoteIdent(name)}`);
  return true;
}

/** A transaction the consistent snapshot waits for (open on the source since before the slot was requested). */
export interface BlockingTransaction { pid: number; ageSec: number; user: string; database: string; state: string; query: string }

export interface SnapshotWait {
  /** Give up after this many seconds of waiting (0 or undefined: wait as long as it takes). */
  timeoutSec?: number;
  /** Called every few seconds while the slot waits, with the transactions it waits for. */
  onWait?: (blocking: BlockingTransaction[], waitedSec: number) => void;
}

export function describeBlocking(b: BlockingTransaction[]): string {
  return b.map((t) => `pid ${t.pid} (open ${t.ageSec} s, user ${t.user}, database ${t.database}, ${t.state}: ${JSON.stringify(t.query)})`).join("; ");
}

/**
 * Transactions with an xid (they wrote) that began before the wait (`waitedSec` ago, by the server's clock): logical decoding cannot
 * build its consistent snapshot until every such transaction, in any database of the cluster, has ended.
 */
async function blockingTransactions(c: Client, waitedSec: number, except: number): Promise<BlockingTransaction[]> {
  const r = await c.query(`SELECT pid, floor(extract(epoch FROM now() - xact_start))::int AS age, coalesce(usename, '') AS usr,
      coalesce(datname, '') AS db, coalesce(state, '') AS state, left(coalesce(query, ''), 200) AS query
    FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND xact_start <= now() - make_interval(secs => $1) AND pid <> pg_backend_pid() AND pid <> $2
      AND backend_type = 'client backend' ORDER BY xact_start`, [waitedSec, except]);
  return r.rows.map((x) => ({ pid: x.pid, ageSec: x.age, user: x.usr, database: x.db, state: x.state, query: x.query }));
}

/** `plugin`: pgoutput (with the publication), or wal2json for stream mode on sources without one. */
export async function createSlotWithSnapshot(source: Endpoint, slot: string, plugin: OutputPlugin = "pgoutput",
  wait: SnapshotWait = {}): Promise<SlotSnapshot> {
  const connection = await connectReplication(source);
  const pid = backendPid(connection)!;
  let timedOut: BlockingTransaction[] | undefined;
  let watcher: Client | undefined;
  let done = false;
  let wake = () => undefined as void;
  const nap = (ms: number) => new Promise<void>((r) => { const t = setTimeout(r, ms); wake = () => { clearTimeout(t); r(); }; });
  // While CREATE_REPLICATION_SLOT waits for older transactions, say which; past the timeout, cancel it
  // (a slot that never became consistent is dropped by the server with the failed command).
  const watch = (async () => {
    const t0 = Date.now();
    await nap(2000);
    if (done) return;
    watcher = await connect(source, { application_name: "pgferry snapshot watch" });
    while (!done) {
      const blocking = await blockingTransactions(watcher, (Date.now() - t0) / 1000, pid);
      const waited = Math.round((Date.now() - t0) / 1000);
      if (done) return;
      if (blocking.length) wait.onWait?.(blocking, waited);
      if (wait.timeoutSec && Date.now() - t0 >= wait.timeoutSec * 1000) {
        timedOut = blocking;
        await watcher.query(`SELECT pg_cancel_backend($1)`, [pid]);
        return;
      }
      await nap(Math.min(5000, Math.max(500, (wait.timeoutSec ?? 10) * 250)));
    }
  })().catch(() => undefined);
  try {
    // The pre-15 syntax: PG 13/14 do not accept the (SNAPSHOT 'export') option list.
    const r = await connection.query(decoderFor(plugin).createSlotCommand(slot));
    const row = r.rows[0];
    return { connection, consistentPoint: row.consistent_point, snapshotName: row.snapshot_name };
  } catch (e) {
    await connection.end().catch(() => undefined);
    if (timedOut) {
      // Nothing left behind: the server drops a slot whose creation failed; make sure of it.
      const c = watcher ?? await connect(source);
      await dropSlot(c, slot).catch(() => undefined);
      if (!watcher) await endClient(c);
      throw new PgferryError("snapshot_timeout", `the consistent snapshot was not reached within ${wait.timeoutSec} s (--snapshot-timeout): ` +
        `logical decoding waits for every transaction open on the source when the slot was requested to end, and ` +
        `${timedOut.length ? `these are still open: ${describeBlocking(timedOut)}` : "older transactions were still open"}. Nothing was left ` +
        `behind (no slot). Fix: let ${timedOut.length === 1 ? "it" : "them"} finish, or end ${timedOut.length === 1 ? "it" : "them"} on the source ` +
        `(${timedOut.map((t) => `SELECT pg_terminate_backend(${t.pid})`).join("; ") || "SELECT pg_terminate_backend(pid)"}), then run ` +
        `pgferry start again; or raise --snapshot-timeout`);
    }
    throw e;
  } finally {
    done = true;
    wake();
    await watch;
    await endClient(watcher);
  }
}

/** The server's words for decoding from an invalidated slot (PostgreSQL 13+). */
export const SLOT_LOST_PATTERN = /can no longer get changes from replication slot|cannot read from logical replication slot|has been invalidated/;

/** The slot was invalidated (wal_status lost): what happened, and the documented way back. */
export function slotLostError(migration: string, slot: string): PgferryError {
  return new PgferryError("slot_lost", `the replication slot "${slot}" on the source was invalidated (wal_status lost): the source removed WAL ` +
    `the slot still needed, because more than max_slot_wal_keep_size accumulated while nothing consumed it (agent stopped, subscription ` +
    `disabled or unable to connect). The changes since can no longer be replicated, so the target cannot be completed from it. Fix (the ` +
    `way back): pgferry cleanup --name ${migration}, drop the migrated tables on the target (start loads into an empty target; its ` +
    `preflight lists any left), then pgferry start again (a new consistent load); ` +
    `to keep it from recurring, keep the consumer running, or raise max_slot_wal_keep_size on the source (-1: no limit)`);
}

export interface SlotInfo { active: boolean; activePid?: number; confirmedFlushLsn?: string; walStatus?: string; restartLsn?: string }

export async function slotInfo(src: Client, slot: string): Promise<SlotInfo | undefined> {
  const r = await src.query(`SELECT active, active_pid, confirmed_flush_lsn::text AS confirmed, restart_lsn::text AS restart, wal_status
    FROM pg_replication_slots WHERE slot_name = $1`, [slot]);
  const x = r.rows[0];
  return x ? { active: x.active, activePid: x.active_pid ?? undefined, confirmedFlushLsn: x.confirmed ?? undefined, walStatus: x.wal_status ?? undefined, restartLsn: x.restart ?? undefined } : undefined;
}

/**
 * Drop the slot, waiting for (then ending) a consumer that still holds it: a walsender of a just
 * dropped subscription can take a moment to exit. Returns false when there was no slot.
 */
export async function dropSlot(src: Client, slot: string, waitMs = 10000): Promise<boolean> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const info = await slotInfo(src, slot);
    if (!info) return false;
    if (info.active && info.activePid) {
      if (Date.now() > deadline) await src.query(`SELECT pg_terminate_backend($1)`, [info.activePid]);
      await new Promise((r) => setTimeout(r, 200));
      continue;
    }
    try {
      await src.query(`SELECT pg_drop_replication_slot(${quoteLiteral(slot)})`);
      return true;
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === "42704") return false;            // already gone
      if (code === "55006" && Date.now() < deadline + 5000) { await new Promise((r) => setTimeout(r, 200)); continue; } // became active
      throw e;
    }
  }
}
