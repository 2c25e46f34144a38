/**
 * A TRUNCATE of a single leaf partition is not replicated: the publication publishes through the root
 * (publish_via_partition_root), and PostgreSQL then sends no TRUNCATE for a leaf truncated alone — in both
 * CDC modes, with no error anywhere. Left alone the target keeps the leaf's old rows, and only the cutover
 * gate's row counts would notice, inside the downtime.
 *
 * A TRUNCATE gives the table a new file node, so the leaves' file nodes are recorded when the load's
 * snapshot is taken (under the load's ACCESS SHARE locks: no TRUNCATE can slip in between), and a leaf
 * whose file node changed since was truncated, or rewritten (VACUUM FULL, CLUSTER, ALTER TABLE that
 * rewrites). Status names such leaves while streaming; the cutover copies them again while writes are
 * stopped (like unlogged tables), which makes them exact either way — a rewrite only costs that copy.
 */
import { Client } from "pg";
import { TableInfo } from "../catalog/catalog";
import { readPartitionFiles, savePartitionFiles } from "../state/partitionFiles";

const leaves = (tables: TableInfo[]) => tables.filter((t) => t.partitionRoot && t.kind === "r" && !t.unlogged);

/** "schema.name" (as the source's statistics name tables, ../verify/touched.ts) → the table's file node now. */
async function fileNodes(src: Client, names: string[]): Promise<Map<string, number>> {
  if (!names.length) return new Map();
  const r = await src.query(`SELECT n.nspname || '.' || c.relname AS t, pg_relation_filenode(c.oid)::int8 AS f
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname || '.' || c.relname = ANY($1) AND c.relkind = 'r'`, [names]);
  return new Map(r.rows.filter((x) => x.f !== null).map((x) => [x.t as string, Number(x.f)]));
}

/** Record the migrated leaf partitions' file nodes (start, with the load's locks held, before the slot). */
export async function recordPartitionFiles(src: Client, tgt: Client, migration: string, tables: TableInfo[]): Promise<void> {
  await savePartitionFiles(tgt, migration, await fileNodes(src, leaves(tables).map((t) => `${t.schema}.${t.name}`)));
}

/** The recorded leaf partitions ("schema.name") truncated or rewritten on the source since the load. */
export async function rewrittenPartitions(src: Client, tgt: Client, migration: string): Promise<string[]> {
  const before = await readPartitionFiles(tgt, migration);
  if (!before.size) return [];
  const now = await fileNodes(src, [...before.keys()]);
  return [...before].filter(([t, f]) => now.has(t) && now.get(t) !== f).map(([t]) => t).sort();
}
