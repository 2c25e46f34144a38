/**
 * The consistent starting point: a publication naming the migrated tables, then a logical slot
 * created on a replication connection with an exported snapshot. Everything committed before the
 * slot's consistent point is in the snapshot (the load copies it); everything after is streamed
 * from the slot — no gap, no overlap. The publication comes first: pgoutput reads membership
 * through the historic snapshot at each change.
 */
import { Client } from "pg";
import { copyableTables, migratedTables, TableInfo } from "./catalog";
import { connectReplication, Endpoint, qualified, quoteIdent, quoteLiteral } from "./endpoint";
import { readStreamSetup, wal2jsonOptions } from "./wal2json";

export interface SlotSnapshot {
  /** Replication connection that must stay open, and run nothing else, while the snapshot is in use. */
  connection: Client;
  consistentPoint: string;
  snapshotName: string;
}

export async function createPublication(src: Client, name: string, published: TableInfo[]): Promise<void> {
  await src.query(`DROP PUBLICATION IF EXISTS ${quoteIdent(name)}`);
  const list = published.map((t) => qualified(t.schema, t.name)).join(", ");
  // Partitioned tables publish through their root, so target partitioning may differ from the source's.
  await src.query(`CREATE PUBLICATION ${quoteIdent(name)} FOR TABLE ${list} WITH (publish_via_partition_root = true)`);
}

export async function dropPublication(src: Client, name: string): Promise<boolean> {
  const r = await src.query(`SELECT 1 FROM pg_publication WHERE pubname = $1`, [name]);
  if (!r.rowCount) return false;
  await src.query(`DROP PUBLICATION IF EXISTS ${quoteIdent(name)}`);
  return true;
}

/** `plugin`: pgoutput (with the publication), or wal2json for stream mode on sources without one. */
export async function createSlotWithSnapshot(source: Endpoint, slot: string, plugin: "pgoutput" | "wal2json" = "pgoutput"): Promise<SlotSnapshot> {
  const connection = await connectReplication(source);
  try {
    // The pre-15 syntax: PG 13/14 do not accept the (SNAPSHOT 'export') option list.
    const r = await connection.query(`CREATE_REPLICATION_SLOT ${quoteIdent(slot)} LOGICAL ${plugin === "wal2json" ? "wal2json" : "pgoutput"} EXPORT_SNAPSHOT`);
    const row = r.rows[0];
    return { connection, consistentPoint: row.consistent_point, snapshotName: row.snapshot_name };
  } catch (e) {
    await connection.end().catch(() => undefined);
    throw e;
  }
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

/**
 * Changes to migrated tables that committed at or after the fence and were not applied: read from the
 * slot itself (peeked, not consumed), so only changes that would be replicated count — our own records,
 * autovacuum and checkpoints do not. Empty = the fence held.
 */
export async function changesAfterFence(src: Client, slot: string, publication: string, fence: string,
  wal2json?: string[], uptoChanges?: number): Promise<{ table: string; changes: number }[]> {
  if (wal2json) {
    // wal2json format-version 2: one JSON object per row; B/C carry the transaction, I/U/D/T name the table.
    const r = await src.query(`
      WITH c AS (SELECT lsn, xid, data::json AS j FROM pg_logical_slot_peek_changes($1, NULL, $4::int, VARIADIC $2::text[])),
      late AS (SELECT DISTINCT xid FROM c WHERE j->>'action' = 'C' AND lsn >= $3::pg_lsn)
      SELECT (j->>'schema') || '.' || (j->>'table') AS table, count(*)::int AS changes
      FROM c WHERE j->>'action' IN ('I', 'U', 'D', 'T') AND xid IN (SELECT xid FROM late) GROUP BY 1 ORDER BY 1`, [slot, wal2json, fence, uptoChanges ?? null]);
    return r.rows;
  }
  // pgoutput messages: B(egin) C(ommit) I U D (relation oid in bytes 2-5) T(runcate: first oid in bytes 7-10).
  const r = await src.query(`
    WITH c AS (SELECT lsn, xid, data FROM pg_logical_slot_peek_binary_changes($1, NULL, $4::int, 'proto_version', '1', 'publication_names', $2)),
    late AS (SELECT DISTINCT xid FROM c WHERE get_byte(data, 0) = 67 AND lsn >= $3::pg_lsn),
    ch AS (SELECT CASE WHEN get_byte(data, 0) = 84 THEN substring(data FROM 7 FOR 4) ELSE substring(data FROM 2 FOR 4) END AS rel
      FROM c WHERE get_byte(data, 0) IN (73, 85, 68, 84) AND xid IN (SELECT xid FROM late))
    SELECT coalesce(n.nspname || '.' || k.relname, 'relation ' || x.oid) AS table, count(*)::int AS changes
    FROM (SELECT ('x' || lpad(encode(rel, 'hex'), 16, '0'))::bit(64)::bigint::oid AS oid FROM ch) x
    LEFT JOIN pg_class k ON k.oid = x.oid LEFT JOIN pg_namespace n ON n.oid = k.relnamespace
    GROUP BY 1 ORDER BY 1`, [slot, publication, fence, uptoChanges ?? null]);
  return r.rows;
}

/** The slot's wal2json options (as the applier streams with them), or undefined for pgoutput. */
export async function wal2jsonPeekOptions(src: Client, tgt: Client, name: string): Promise<string[] | undefined> {
  const setup = await readStreamSetup(tgt, name);
  if (setup.plugin !== "wal2json") return undefined;
  const tables = copyableTables(await migratedTables(src, setup.selection)).map((t) => ({ schema: t.schema, name: t.name }));
  return wal2jsonOptions(tables, setup.numericAsString).flat();
}
