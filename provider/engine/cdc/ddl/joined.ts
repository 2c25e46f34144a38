/**
 * `--ddl replicate` with `--include`: a table created by replicated DDL in a migrated schema joins the migration (the
 * capture publishes it, the target gets it and its rows), but the selection does not name it. The gate and `verify`
 * list tables by the selection, so they would leave it out: its rows would be carried without ever being compared.
 * The tables the source's publication holds that the selection does not name are the ones replicated DDL added (start
 * publishes exactly the selection); the cutover records them in the migration's options (`ddlJoinedTables`, final at the
 * fence: the source is frozen, so the names no longer move), and the gate and `verify` select them with the selection's.
 */
import { Client } from "pg";
import { CONTROL_SCHEMA, splitQualified, TableSelection } from "../../catalog/catalog";
import { connect, Endpoint } from "../../core/endpoint";
import { objectNames } from "../../core/options";
import type { MigrationRecord, MigrationRecordOptions } from "../../state/state";

const pattern = (schema: string, name: string) => `"${schema.replace(/"/g, '""')}"."${name.replace(/"/g, '""')}"`;

function named(patterns: string[], t: { schema: string; name: string }): boolean {
  return patterns.some((p) => {
    const q = splitQualified(p);
    return q.schema === undefined ? q.name === t.name : q.schema === t.schema && q.name === t.name;
  });
}

/** The published tables (by their partition root) that an --include selection does not name: joined by replicated DDL. */
export async function tablesJoinedByDdl(src: Client, publication: string, sel: TableSelection): Promise<string[]> {
  if (!sel.include.length) return [];
  const r = await src.query(`SELECT schemaname AS schema, tablename AS name FROM pg_publication_tables WHERE pubname = $1 AND schemaname <> $2
    ORDER BY 1, 2`, [publication, CONTROL_SCHEMA]);
  return (r.rows as { schema: string; name: string }[]).filter((t) => !named(sel.include, t) && !named(sel.exclude, t)).map((t) => pattern(t.schema, t.name));
}

/** The selection the gate and verify compare: the recorded one, with the tables replicated DDL joined to an --include. */
export function selectionWithJoined(o: MigrationRecordOptions): TableSelection {
  const sel = o.selection ?? { schemas: [], include: [], exclude: [] };
  if (o.ddl !== "replicate" || !sel.include.length || !o.ddlJoinedTables?.length) return sel;
  return { ...sel, include: [...sel.include, ...o.ddlJoinedTables.filter((x) => !sel.include.includes(x))] };
}

/**
 * `verify --include …` of a migration with --ddl replicate: the --include given, with the tables replicated DDL joined —
 * read from the source's publication while the migration streams, from the record once the cutover has ended it.
 */
export async function verifyIncludeWithJoined(source: Endpoint, m: MigrationRecord | undefined, include: string[]): Promise<{ include: string[]; joined: string[] }> {
  if (!m || m.options.ddl !== "replicate" || !include.length) return { include, joined: [] };
  let joined = m.options.ddlJoinedTables ?? [];
  if (m.phase !== "Completed" && m.phase !== "Aborted") {
    const src = await connect(source);
    try {
      const sel = m.options.selection ?? { schemas: [], include: [], exclude: [] };
      joined = await tablesJoinedByDdl(src, objectNames(m.name).publication, { ...sel, include: sel.include.length ? sel.include : include });
    } finally { await src.end().catch(() => undefined); }
  }
  joined = joined.filter((x) => !include.includes(x));
  return { include: [...include, ...joined], joined };
}
