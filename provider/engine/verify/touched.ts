/**
 * Which tables changed during CDC: the cutover gate hashes exactly those (row counts cannot see a lost
 * UPDATE), so its cost follows what was written while streaming, not the size of the database.
 *
 * Two sources, united:
 *  - stream mode: the applier's own per-table counters (pgferry.apply_stats), written in the same
 *    target transaction as the changes: exact;
 *  - both modes: the source's cumulative statistics (pg_stat_user_tables n_tup_ins + n_tup_upd +
 *    n_tup_del, per leaf), against a baseline read before the slot was created. Any table whose counter
 *    moved (or went down: statistics reset, crash) counts as touched. The freeze ends every session,
 *    which flushes its pending statistics; without --freeze-writes, a session that stays connected may
 *    hold up to a second of counts (PostgreSQL 15+) — the gate waits for the source to be quiet that long.
 *    On PostgreSQL ≤ 14 the statistics travel over UDP and can be dropped under load: there the gate is
 *    best effort for subscription mode (--verify hashes is exact). No baseline (a migration started by
 *    an older pgferry): every table counts as touched.
 */
import { Client } from "pg";
import { TableInfo } from "../catalog/catalog";
import { readActivityBaseline, saveActivityBaseline } from "../state/activityBaseline";
import { tablesApplied } from "../state/applyProgress";

/** Per leaf/plain table "schema.name": inserted + updated + deleted tuples so far, from the source's statistics. */
async function sourceActivity(src: Client): Promise<Map<string, bigint>> {
  await src.query(`SELECT pg_stat_clear_snapshot()`);
  const r = await src.query(`SELECT schemaname || '.' || relname AS t, (n_tup_ins + n_tup_upd + n_tup_del)::text AS n FROM pg_stat_user_tables`);
  return new Map(r.rows.map((x) => [x.t as string, BigInt(x.n)]));
}

/** Record the source's counters before the slot exists (changes before it only make the gate hash more). */
export async function recordActivityBaseline(src: Client, tgt: Client, migration: string): Promise<void> {
  const now = await sourceActivity(src);
  await saveActivityBaseline(tgt, migration, now);
}

/**
 * The tables among `tables` (leaves and plain tables as listTables gives them, "schema.name") that changed
 * since the baseline, or were written by the stream applier. A partitioned root written by the applier
 * counts through its leaves.
 */
export async function touchedTables(src: Client, tgt: Client, migration: string, tables: TableInfo[]): Promise<Set<string>> {
  const out = new Set<string>();
  const leavesOf = (root: string) => tables.filter((t) => t.partitionRoot && `${t.partitionRoot.schema}.${t.partitionRoot.name}` === root)
    .map((t) => `${t.schema}.${t.name}`);
  const add = (name: string) => { out.add(name); for (const l of leavesOf(name)) out.add(l); };
  for (const x of await tablesApplied(tgt, migration)) add(x);
  const before = await readActivityBaseline(tgt, migration);
  if (!before.size) {
    for (const t of tables) out.add(`${t.schema}.${t.name}`);
    return out;
  }
  const now = await sourceActivity(src);
  for (const t of tables) {
    const name = `${t.schema}.${t.name}`;
    if (t.kind !== "r") continue;
    const a = before.get(name), b = now.get(name);
    if (a === undefined || b === undefined || a !== b) add(name);
  }
  return out;
}
