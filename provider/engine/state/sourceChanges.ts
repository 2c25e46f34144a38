/**
 * Changes pgferry makes to the source's schema (today: REPLICA IDENTITY FULL on tables without a key),
 * each recorded on the target's control schema with the exact SQL that undoes it, BEFORE the source is
 * altered: a run killed between the two leaves a record of a change that may not have happened (its undo
 * is harmless), never a change without a record. The first record of an object wins, so a re-run (which
 * finds the table already FULL) keeps the original setting to restore.
 *
 * Restored (undo SQL run, record removed) when the source no longer needs them: a start that fails and
 * releases its publication, `cleanup`, and a completed cutover (the source is retired; a rollback window
 * replicates target → source, which needs no identity on the source).
 */
import { Client } from "pg";
import { CONTROL_SCHEMA } from "../catalog/catalog";
import { qualified, quoteIdent, quoteLiteral } from "../core/endpoint";
import { ensureControlSchema } from "./controlSchema";

export interface SourceChange {
  /** "schema.table" */
  object: string;
  /** What was done, e.g. "REPLICA IDENTITY FULL (was DEFAULT)". */
  change: string;
  /** Runs on the source to restore the previous state. */
  undoSql: string;
}

const S = CONTROL_SCHEMA;

/** The statements that put tables' replica identities back as they are now (read on the source in one query), by "schema.name". */
async function currentIdentityUndos(src: Client, tables: { schema: string; name: string }[]): Promise<Map<string, { was: string; undo: string }>> {
  const r = await src.query(`SELECT t.s, t.n, c.relreplident AS ri,
      (SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = c.oid AND x.indisreplident) AS idx
    FROM unnest($1::text[], $2::text[]) AS t(s, n)
    LEFT JOIN pg_namespace ns ON ns.nspname = t.s LEFT JOIN pg_class c ON c.relnamespace = ns.oid AND c.relname = t.n`,
  [tables.map((t) => t.schema), tables.map((t) => t.name)]);
  const out = new Map<string, { was: string; undo: string }>();
  for (const x of r.rows) {
    const t = qualified(x.s, x.n);
    out.set(`${x.s}.${x.n}`, ((): { was: string; undo: string } => {
      switch (x.ri) {
        case "f": return { was: "FULL", undo: `ALTER TABLE ${t} REPLICA IDENTITY FULL` };
        case "n": return { was: "NOTHING", undo: `ALTER TABLE ${t} REPLICA IDENTITY NOTHING` };
        // USING INDEX whose index is gone behaves as NOTHING: the closest state SQL can restore.
        case "i": return x.idx ? { was: `USING INDEX ${x.idx}`, undo: `ALTER TABLE ${t} REPLICA IDENTITY USING INDEX ${quoteIdent(x.idx)}` }
          : { was: "USING INDEX (index dropped)", undo: `ALTER TABLE ${t} REPLICA IDENTITY NOTHING` };
        default: return { was: "DEFAULT", undo: `ALTER TABLE ${t} REPLICA IDENTITY DEFAULT` };
      }
    })());
  }
  return out;
}

/**
 * Set REPLICA IDENTITY FULL on these source tables (plain tables, leaves or partitioned roots), recording
 * each one's previous setting and its undo on the target first. Returns what was recorded.
 */
export async function setReplicaIdentityFull(src: Client, tgt: Client, migration: string,
  tables: { schema: string; name: string }[]): Promise<SourceChange[]> {
  if (!tables.length) return [];
  await ensureControlSchema(tgt); // source_change: a load resumed on a control schema an older pgferry made
  const out: SourceChange[] = [];
  // Three round trips in all, not three per table (the regression database has hundreds of key-less tables): every
  // undo is recorded before any table is altered, so a kill in between leaves records whose undo is the current state.
  const undos = await currentIdentityUndos(src, tables);
  const objects = tables.map((t) => `${t.schema}.${t.name}`);
  await tgt.query(`INSERT INTO ${S}.source_change (migration, object, kind, change, undo_sql)
      SELECT $1, o, 'replica_identity', 'REPLICA IDENTITY FULL (was ' || w || ')', u FROM unnest($2::text[], $3::text[], $4::text[]) AS x(o, w, u)
    ON CONFLICT (migration, kind, object) DO NOTHING`,
  [migration, objects, objects.map((o) => undos.get(o)!.was), objects.map((o) => undos.get(o)!.undo)]);
  // One round trip, one transaction per table: a single transaction would hold every table's lock at once and can
  // deadlock with the application's own transactions (seen on the regression database under writes).
  await src.query(tables.map((t) => `BEGIN; ALTER TABLE ${qualified(t.schema, t.name)} REPLICA IDENTITY FULL; COMMIT;`).join("\n"));
  for (const c of await listSourceChanges(tgt, migration)) if (tables.some((t) => `${t.schema}.${t.name}` === c.object)) out.push(c);
  return out;
}

/**
 * Record another kind of source change (e.g. --ddl replicate's event triggers) with its undo, before the caller
 * makes it; the first record of an object wins (a re-run keeps it). Returns the record as stored.
 */
export async function recordSourceChange(tgt: Client, migration: string, c: SourceChange & { kind: string }): Promise<SourceChange> {
  await ensureControlSchema(tgt);
  await tgt.query(`INSERT INTO ${S}.source_change (migration, object, kind, change, undo_sql) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (migration, kind, object) DO NOTHING`, [migration, c.object, c.kind, c.change, c.undoSql]);
  return (await listSourceChanges(tgt, migration)).find((x) => x.object === c.object)!;
}

/**
 * --ddl replicate: the capture trigger gave these tables, created on the source while streaming without a primary key,
 * REPLICA IDENTITY FULL (else the source refuses their UPDATEs/DELETEs). Recorded by the applier in its target
 * transaction, with the DDL; the undo puts DEFAULT back only if the table still exists and is still FULL. (The
 * capture's own undo does the same from the source's log, for a row the applier never reached.)
 */
export async function recordIdentitySetByCapture(tgt: Client, migration: string, tables: { schema: string; name: string }[]): Promise<void> {
  for (const t of tables) {
    const undo = `DO $pgferry$ BEGIN IF EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ` +
      `WHERE n.nspname = ${quoteLiteral(t.schema)} AND c.relname = ${quoteLiteral(t.name)} AND c.relreplident = 'f') THEN ` +
      `ALTER TABLE ${qualified(t.schema, t.name)} REPLICA IDENTITY DEFAULT; END IF; END $pgferry$`;
    await tgt.query(`INSERT INTO ${S}.source_change (migration, object, kind, change, undo_sql) VALUES ($1, $2, 'replica_identity', $3, $4)
      ON CONFLICT (migration, kind, object) DO NOTHING`, [migration, `${t.schema}.${t.name}`,
      identityWarning(`${t.schema}.${t.name}`), undo]);
  }
}

/** The warning for a table created without a key while streaming (--ddl replicate set FULL on it). */
export function identityWarning(table: string): string {
  return `REPLICA IDENTITY FULL (was DEFAULT), set by --ddl replicate: ${table} was created on the source without a primary key while ` +
    `streaming; FULL writes whole old rows to the WAL and makes each UPDATE/DELETE slower to apply. Fix: add a primary key to ${table}`;
}

export async function listSourceChanges(tgt: Client, migration: string): Promise<SourceChange[]> {
  const exists = (await tgt.query(`SELECT to_regclass('${S}.source_change') IS NOT NULL AS ok`)).rows[0].ok;
  if (!exists) return [];
  const r = await tgt.query(`SELECT object, change, undo_sql FROM ${S}.source_change WHERE migration = $1 ORDER BY object`, [migration]);
  return r.rows.map((x) => ({ object: x.object, change: x.change, undoSql: x.undo_sql }));
}

/**
 * Undo every recorded change on the source, each record removed once its undo ran. A table dropped
 * since counts as restored. Failures are collected, not thrown, so one does not keep the rest altered;
 * the caller reports them with their SQL.
 */
export async function restoreSourceChanges(src: Client, tgt: Client, migration: string):
  Promise<{ restored: SourceChange[]; failed: (SourceChange & { error: string })[] }> {
  const restored: SourceChange[] = [], failed: (SourceChange & { error: string })[] = [];
  for (const c of await listSourceChanges(tgt, migration)) {
    try {
      await src.query(c.undoSql);
    } catch (e) {
      if ((e as { code?: string }).code !== "42P01") { failed.push({ ...c, error: (e as Error).message }); continue; }
    }
    await tgt.query(`DELETE FROM ${S}.source_change WHERE migration = $1 AND object = $2`, [migration, c.object]);
    restored.push(c);
  }
  return { restored, failed };
}

export function describeSourceChanges(changes: SourceChange[], most = Infinity): string {
  const shown = changes.slice(0, most).map((c) => `${c.object}: ${c.change}; undo: ${c.undoSql};`).join(" ");
  return changes.length > most ? `${shown} … and ${changes.length - most} more of the same kind` : shown;
}
