/**
 * DDL made on the source during the migration. Logical replication does not carry DDL, so a column added
 * on the source breaks the apply (or, worse, a dropped one silently loses data on the way); cutover must
 * not declare the target ready while the two schemas differ. We compare the catalogs of the migrated
 * tables on both servers — tables present, columns with their types and nullability, indexes, and
 * PK/unique/check/exclusion/foreign-key constraints — and name every difference with the SQL that fixes
 * it where that is obvious. An event trigger would catch DDL as it happens, but needs a superuser on the
 * source; the catalog comparison needs nothing and also sees DDL made before pgferry looked.
 *
 * What pgferry itself keeps apart is accounted for: the control schema `pgferry` is not user schema,
 * foreign keys held back until cutover are not expected on the target yet, and partition clones of a
 * foreign key appear with their parent.
 */
import { Client } from "pg";
import { selectionWithJoined } from "../cdc/ddl/joined";
import { migratedSequences, migratedTables, TableInfo } from "./catalog";
import { qualified, quoteIdent } from "../core/endpoint";
import { readMigration } from "../state/state";
import { loadedTables } from "../state/tableProgress";
import { pendingHeldBackForeignKeys } from "../state/schemaEntries";

export interface SchemaDifference {
  /** schema.table (unquoted), the table the difference is on. */
  table: string;
  kind: "table" | "column" | "index" | "constraint" | "sequence";
  /** The column, index or constraint name; the table's name for kind "table". */
  object: string;
  problem: string;
  /** SQL to run on the target that removes the difference, where it is obvious. */
  fix?: string;
}

interface Shape {
  columns: Map<string, { type: string; notnull: boolean }>;
  indexes: Map<string, string>;
  constraints: Map<string, { type: string; def: string; refTable?: string }>;
}

const CONTYPES: Record<string, string> = { p: "primary key", u: "unique constraint", f: "foreign key", c: "check constraint", x: "exclusion constraint" };

/** Columns, indexes and constraints of the given tables, all names schema-qualified (empty search_path). */
async function shapes(c: Client, tables: string[]): Promise<Map<string, Shape>> {
  const out = new Map<string, Shape>();
  const get = (t: string) => out.get(t) ?? out.set(t, { columns: new Map(), indexes: new Map(), constraints: new Map() }).get(t)!;
  if (!tables.length) return out;
  await c.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  try {
    await c.query("SET LOCAL search_path = pg_catalog");
    const rel = `(SELECT to_regclass(x) FROM unnest($1::text[]) x)`;
    const name = `n.nspname || '.' || c.relname`;
    const cols = await c.query(`SELECT ${name} AS t, a.attname AS col, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS notnull
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.oid IN ${rel} AND a.attnum > 0 AND NOT a.attisdropped`, [tables]);
    for (const r of cols.rows) get(r.t).columns.set(r.col, { type: r.type, notnull: r.notnull });
    // Indexes that back a constraint are compared as that constraint.
    const idx = await c.query(`SELECT ${name} AS t, i.relname AS idx, pg_get_indexdef(i.oid) AS def
      FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.oid IN ${rel} AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid AND k.conrelid = x.indrelid
        AND k.contype IN ('p', 'u', 'x'))`, [tables]);
    for (const r of idx.rows) get(r.t).indexes.set(r.idx, r.def);
    // Foreign keys cloned onto partitions (conparentid <> 0) come with their parent's key.
    const cons = await c.query(`SELECT ${name} AS t, k.conname AS con, k.contype::text AS type,
        regexp_replace(pg_get_constraintdef(k.oid), ' NOT VALID$', '') AS def, rn.nspname || '.' || rc.relname AS ref
      FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_class rc ON rc.oid = k.confrelid LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
      WHERE c.oid IN ${rel} AND k.contype IN ('p', 'u', 'f', 'c', 'x') AND (k.contype <> 'f' OR k.conparentid = 0)`, [tables]);
    for (const r of cons.rows) get(r.t).constraints.set(r.con, { type: r.type, def: r.def, refTable: r.ref ?? undefined });
    await c.query("COMMIT");
  } catch (e) {
    await c.query("ROLLBACK").catch(() => undefined);
    throw e;
  }
  return out;
}

const key = (t: { schema: string; name: string }) => `${t.schema}.${t.name}`;

/**
 * Differences between the source's and the target's schema of the migration's tables; empty when they
 * agree. `src` and `tgt` are sessions on the two databases; the migration's selection and held-back
 * foreign keys are read from the target's control schema.
 */
export async function schemaDifferences(src: Client, tgt: Client, name: string): Promise<SchemaDifference[]> {
  const m = await readMigration(tgt, name);
  if (!m) return [];
  const sel = selectionWithJoined(m.options); // with the tables replicated DDL joined to an --include (../cdc/ddl/joined.ts)
  const srcTables = await migratedTables(src, sel);
  const migrated = new Set(srcTables.map(key));
  // What start copied: a table in it that the source no longer has was dropped or renamed there.
  const loaded = await loadedTables(tgt, name);
  // Foreign keys held back for cutover, not applied yet: expected on the source only.
  const heldBack = new Set(await pendingHeldBackForeignKeys(tgt, name));

  const names = srcTables.map((t) => qualified(t.schema, t.name));
  const [s, t] = await Promise.all([shapes(src, names), shapes(tgt, names)]);
  const out: SchemaDifference[] = [];
  const byName = new Map<string, TableInfo>(srcTables.map((x) => [key(x), x]));
  for (const table of [...byName.keys()].sort()) {
    const info = byName.get(table)!;
    const q = qualified(info.schema, info.name);
    const ss = s.get(table), ts = t.get(table);
    if (!ss) continue; // dropped between the two reads
    if (!ts) {
      out.push({ table, kind: "table", object: table, problem: `${table}: table exists on the source only (created after start: it is not ` +
        `migrated and its rows are not replicated)`, fix: `create it on the target with the same definition and copy its rows ` +
        `(pg_dump -t ${q} … | psql), or drop it on the source` });
      continue;
    }
    for (const [col, sc] of ss.columns) {
      const tc = ts.columns.get(col);
      if (!tc) {
        out.push({ table, kind: "column", object: col, problem: `${table}: column ${col} (${sc.type}) exists on the source only`,
          fix: `ALTER TABLE ${q} ADD COLUMN ${quoteIdent(col)} ${sc.type}${sc.notnull ? " NOT NULL" : ""}; (with the source's DEFAULT, if any)` });
      } else if (sc.type !== tc.type) {
        out.push({ table, kind: "column", object: col, problem: `${table}: column ${col} is ${sc.type} on the source, ${tc.type} on the target`,
          fix: `ALTER TABLE ${q} ALTER COLUMN ${quoteIdent(col)} TYPE ${sc.type};` });
      } else if (sc.notnull !== tc.notnull) {
        out.push({ table, kind: "column", object: col, problem: `${table}: column ${col} is ${sc.notnull ? "NOT NULL" : "nullable"} on the source, ` +
          `${tc.notnull ? "NOT NULL" : "nullable"} on the target`, fix: `ALTER TABLE ${q} ALTER COLUMN ${quoteIdent(col)} ${sc.notnull ? "SET" : "DROP"} NOT NULL;` });
      }
    }
    for (const [col, tc] of ts.columns) {
      if (!ss.columns.has(col)) {
        out.push({ table, kind: "column", object: col, problem: `${table}: column ${col} (${tc.type}) exists on the target only (dropped or renamed on the source)`,
          fix: `ALTER TABLE ${q} DROP COLUMN ${quoteIdent(col)}; (or the same RENAME as on the source)` });
      }
    }
    for (const [idx, def] of ss.indexes) {
      const td = ts.indexes.get(idx);
      if (td === undefined) out.push({ table, kind: "index", object: idx, problem: `${table}: index ${idx} exists on the source only`, fix: `${def};` });
      else if (td !== def) out.push({ table, kind: "index", object: idx, problem: `${table}: index ${idx} differs (source: ${def}; target: ${td})`,
        fix: `DROP INDEX ${quoteIdent(info.schema)}.${quoteIdent(idx)}; ${def};` });
    }
    for (const idx of ts.indexes.keys()) {
      if (!ss.indexes.has(idx)) out.push({ table, kind: "index", object: idx, problem: `${table}: index ${idx} exists on the target only`,
        fix: `DROP INDEX ${quoteIdent(info.schema)}.${quoteIdent(idx)};` });
    }
    for (const [con, sc] of ss.constraints) {
      const what = `${CONTYPES[sc.type] ?? "constraint"} ${con}`;
      const tc = ts.constraints.get(con);
      if (sc.type === "f" && !tc) {
        // Keys to tables outside the migration are never added; held-back keys are added at cutover.
        if (!sc.refTable || !migrated.has(sc.refTable) || heldBack.has(`${table}.${con}`)) continue;
      }
      if (!tc) out.push({ table, kind: "constraint", object: con, problem: `${table}: ${what} exists on the source only`,
        fix: `ALTER TABLE ${q} ADD CONSTRAINT ${quoteIdent(con)} ${sc.def};` });
      else if (tc.def !== sc.def) out.push({ table, kind: "constraint", object: con, problem: `${table}: ${what} differs (source: ${sc.def}; target: ${tc.def})`,
        fix: `ALTER TABLE ${q} DROP CONSTRAINT ${quoteIdent(con)}, ADD CONSTRAINT ${quoteIdent(con)} ${sc.def};` });
    }
    for (const [con, tc] of ts.constraints) {
      if (!ss.constraints.has(con)) out.push({ table, kind: "constraint", object: con, problem: `${table}: ${CONTYPES[tc.type] ?? "constraint"} ${con} exists on the target only`,
        fix: `ALTER TABLE ${q} DROP CONSTRAINT ${quoteIdent(con)};` });
    }
  }
  // Sequences: the cutover sets every migrated one on the target, so each must exist there (one created on the source
  // after start is not migrated; nothing would set it).
  const seqs = await migratedSequences(src, sel);
  const absent = new Set((await tgt.query(`SELECT n FROM unnest($1::text[]) n WHERE to_regclass(n) IS NULL`,
    [seqs.map((x) => qualified(x.schema, x.name))])).rows.map((x) => x.n as string));
  for (const q of seqs.filter((x) => absent.has(qualified(x.schema, x.name))).map(key)) {
    out.push({ table: q, kind: "sequence", object: q, problem: `${q}: sequence exists on the source only (created after start: the cutover ` +
      `cannot set it)`, fix: `create it on the target with the source's definition (pg_dump --schema-only -t ${q} on the source | psql on the target)` });
  }
  // A loaded table gone from the source and from the target too was dropped (or renamed) on both: nothing differs.
  const gone = loaded.filter((x) => !migrated.has(x));
  const onTarget = new Set((await tgt.query(`SELECT x FROM unnest($1::text[]) x WHERE to_regclass(x) IS NOT NULL`,
    [gone.map((x) => { const i = x.indexOf("."); return qualified(x.slice(0, i), x.slice(i + 1)); })])).rows.map((r) => r.x as string));
  for (const table of gone.sort()) {
    const i = table.indexOf(".");
    if (!onTarget.has(qualified(table.slice(0, i), table.slice(i + 1)))) continue;
    {
      out.push({ table, kind: "table", object: table, problem: `${table}: table was migrated but no longer exists on the source (dropped or renamed there)`,
        fix: `make the target match: the same DROP or RENAME on the target` });
    }
  }
  return out;
}

/** One message for a refusal: every difference and its fix. */
export function describeDifferences(diffs: SchemaDifference[]): string {
  return diffs.map((d) => `${d.problem}${d.fix ? ` — fix on the target: ${d.fix}` : ""}`).join("; ");
}
