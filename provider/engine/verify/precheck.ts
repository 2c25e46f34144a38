/**
 * The cutover gate's pre-check: most of the verification, done while streaming, so the freeze re-reads only
 * the tables that changed since.
 *
 * Before the freeze the gate's comparison (row counts, and content hashes of the tables changed during CDC)
 * runs once on every migrated table, between two readings of each table's change fingerprint on both servers.
 * At the fence the fingerprints are read a third time; a table whose pre-check matched and whose fingerprints
 * are the same in all three readings, on both sides, has not changed since it was compared, so its result stands
 * (its structure is still compared at the fence). Every other table is compared at the fence, as before.
 *
 * A table's fingerprint: its relfilenode (a TRUNCATE, a rewrite or a non-concurrent REFRESH changes it) and the
 * cumulative counters of the server's statistics (inserted + updated + deleted tuples), and in stream mode on the
 * target the applier's own per-table counters (exact: written in the same transaction as the changes).
 *
 * Why a lost change still fails the gate: a change the source committed after the pre-check moves the source's
 * counters (the freeze ends every session, which flushes its statistics — the same ground touched.ts stands on),
 * so that table is compared at the fence and the loss shows there. A change committed before the pre-check that
 * the target has not applied (or lost) makes the pre-check differ (counted or hashed, since touched.ts then
 * counts the table as changed), or, if its statistics were flushed only later, moves the counters between the
 * readings. Writes made on the target by anything but the applier are seen through the target's statistics,
 * which a session still connected may hold back for up to a second (PostgreSQL 15+): the gate is there for lost
 * changes; `pgferry verify` after the cutover compares everything again.
 */
import { Client } from "pg";
import { TableInfo } from "../catalog/catalog";
import { readApplyStats } from "../state/applyProgress";
import { KnownContents, VerifyReport } from "./verify";

/** "schema.name" (unquoted) → fingerprint text; a relation without statistics has none (never reused). */
export type Fingerprints = Map<string, string>;

export interface FingerprintPair { source: Fingerprints; target: Fingerprints }

const FINGERPRINT_SQL = `SELECT n.nspname || '.' || c.relname AS t,
    c.relfilenode::text || ':' || (s.n_tup_ins + s.n_tup_upd + s.n_tup_del)::text AS f
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_stat_user_tables s ON s.relid = c.oid
  WHERE c.relkind = 'r' AND n.nspname <> 'pgferry'`;

async function fingerprintsOf(c: Client): Promise<Fingerprints> {
  // Cleared first: within one transaction the statistics snapshot is cached, and a stale one would hide a change.
  const r = (await c.query(`SELECT pg_stat_clear_snapshot(); ${FINGERPRINT_SQL}`)) as unknown as { rows: { t: string; f: string }[] }[];
  return new Map(r[1].rows.map((x) => [x.t, x.f]));
}

/**
 * Both servers' fingerprints; in stream mode the target's include the applier's counters for the migration (a
 * partitioned root's, which the applier may record when the source publishes through the root, on each of its leaves).
 */
export async function readFingerprints(src: Client, tgt: Client, migration: string, stream: boolean, tables: TableInfo[]): Promise<FingerprintPair> {
  const [source, target] = await Promise.all([fingerprintsOf(src), fingerprintsOf(tgt)]);
  if (stream) {
    const applied = await readApplyStats(tgt, migration).catch(() => undefined);
    if (!applied) return { source, target: new Map() }; // no counters to read: nothing on the target counts as unchanged
    const counters = new Map(applied.map((a) => [a.table, `${a.inserts}:${a.updates}:${a.deletes}:${a.truncates}`]));
    for (const t of tables) {
      const name = `${t.schema}.${t.name}`;
      const root = t.partitionRoot ? counters.get(`${t.partitionRoot.schema}.${t.partitionRoot.name}`) : undefined;
      if (target.has(name)) target.set(name, `${target.get(name)}/${counters.get(name) ?? "-"}/${root ?? "-"}`);
    }
  }
  return { source, target };
}

export interface PreCheck {
  /** The fingerprints read after the pre-check's comparison (those before it were equal for every table kept). */
  fingerprints: FingerprintPair;
  /** Tables whose contents matched, with what was compared. */
  matched: Map<string, KnownContents>;
  /** Tables compared (matched or not). */
  compared: number;
}

/**
 * The pre-check's verdicts that still hold: matched then, fingerprints unchanged on both sides in all three
 * readings (before, after, now).
 */
export function stillValid(pre: PreCheck | undefined, now: FingerprintPair): Map<string, KnownContents> {
  const out = new Map<string, KnownContents>();
  if (!pre) return out;
  for (const [table, known] of pre.matched) {
    const s = pre.fingerprints.source.get(table), t = pre.fingerprints.target.get(table);
    if (s !== undefined && t !== undefined && s === now.source.get(table) && t === now.target.get(table)) out.set(table, known);
  }
  return out;
}

/**
 * From a comparison run between two fingerprint readings: the tables that matched and did not change during it.
 * `tables` maps each compared relation's name as the report shows it to its "schema.name".
 */
export function preCheckFrom(report: VerifyReport, tables: Map<string, string>, before: FingerprintPair, after: FingerprintPair): PreCheck {
  const matched = new Map<string, KnownContents>();
  for (const t of report.tables) {
    const raw = tables.get(t.table);
    if (!raw || !t.ok) continue;
    const s = after.source.get(raw), g = after.target.get(raw);
    if (s === undefined || g === undefined || s !== before.source.get(raw) || g !== before.target.get(raw)) continue;
    matched.set(raw, { sourceRows: t.sourceRows, targetRows: t.targetRows, sourceHash: t.sourceHash, targetHash: t.targetHash });
  }
  return { fingerprints: after, matched, compared: report.tables.length };
}
