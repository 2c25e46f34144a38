/**
 * The consistent starting point: a publication naming the migrated tables, then a logical slot
 * created on a replication connection with an exported snapshot. Everything committed before the
 * slot's consistent point is in the snapshot (the load copies it); everything after is streamed
 * from the slot — no gap, no overlap. The publication comes first: pgoutput reads membership
 * through the historic snapshot at each change.
 */
import { Client } from "pg";
import { TableInfo } from "./catalog";
import { connectReplication, Endpoint, qualified, quoteIdent, quoteLiteral } from "./endpoint";

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
