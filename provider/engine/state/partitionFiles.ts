/**
 * The source's leaf partitions' file nodes when the load's snapshot was taken (pgferry.partition_file):
 * a leaf whose file node changed since was truncated (or rewritten) on the source (../copy/partitionTruncates.ts).
 */
import { Client } from "pg";
import { CONTROL_SCHEMA } from "../catalog/catalog";
import { ensureControlSchema } from "./controlSchema";

const S = CONTROL_SCHEMA;

/** Replace the record ("schema.table" → relfilenode). */
export async function savePartitionFiles(c: Client, migration: string, files: Map<string, number>): Promise<void> {
  await ensureControlSchema(c);
  await c.query(`DELETE FROM ${S}.partition_file WHERE migration = $1`, [migration]);
  await c.query(`INSERT INTO ${S}.partition_file (migration, table_name, filenode) SELECT $1, t, f FROM unnest($2::text[], $3::oid[]) AS v(t, f)`,
    [migration, [...files.keys()], [...files.values()]]);
}

/** The record; empty when none was made (no partitions, or a migration started by an older pgferry). */
export async function readPartitionFiles(c: Client, migration: string): Promise<Map<string, number>> {
  const r = await c.query(`SELECT table_name, filenode::int8 AS f FROM ${S}.partition_file WHERE migration = $1`, [migration])
    .catch(() => ({ rows: [] as { table_name: string; f: string }[] }));
  return new Map(r.rows.map((x) => [x.table_name, Number(x.f)]));
}
