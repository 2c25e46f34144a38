/**
 * Preflight checks for a Hyperscale (Citus) target (issue #17; docs/citus.md). Appended to PREFLIGHT_CHECKS; they read
 * the selected tables the "tables" check found.
 *
 * - With --distribute/--reference: Citus must be on the target (pg_extension), every named table must be migrated,
 *   every primary key, unique and exclusion constraint or unique index of a distributed table must include its
 *   distribution column, and a distributed table may have no identity column (create_distributed_table refuses them).
 *   The key and identity checks read the SOURCE catalog: the target has no keys yet when the tables are distributed.
 * - On a Citus target: subscription mode is refused for distributed and reference tables. PostgreSQL's apply worker
 *   writes into the coordinator's local shell of a distributed table, which Citus queries never read: UPDATEs and
 *   DELETEs find nothing and vanish without an error.
 */
import { Client } from "pg";
import { distributionTables, hasDistribution, quotedTable } from "../copy/distribution";
import type { PreflightCheck } from "./preflight";

/** The Citus extension's version on the target, or undefined. */
export async function citusVersion(tgt: Client): Promise<string | undefined> {
  return (await tgt.query(`SELECT extversion FROM pg_extension WHERE extname = 'citus'`)).rows[0]?.extversion;
}

export const CITUS_CHECKS: PreflightCheck[] = [
  {
    /** Citus on the target when tables are to be distributed; no native subscription into distributed or reference tables. */
    name: "citus-target",
    async run(r) {
      const { tgt, o, add } = r;
      const d = o.distribution;
      const version = await citusVersion(tgt);
      if (hasDistribution(d) && !version) {
        add({ code: "citus_missing", server: "target", objects: distributionTables(d),
          message: `--distribute/--reference need a Hyperscale (Citus) target, but the Citus extension is not installed in the target database`,
          fix: "point --target at the Citus coordinator's database and run CREATE EXTENSION citus there (on Azure: a Hyperscale (Citus) " +
            "server group), or start without --distribute/--reference/--colocate" });
      }
      if (!version || o.mode !== "subscription") return;
      // Tables already distributed by hand (start --until schema, then create_distributed_table) count too.
      const migrated = new Set((r.tables ?? []).map((t) => `${t.schema}.${t.name}`));
      const byHand = (await tgt.query(`SELECT n.nspname AS schema, c.relname AS name FROM pg_dist_partition p
          JOIN pg_class c ON c.oid = p.logicalrelid JOIN pg_namespace n ON n.oid = c.relnamespace`)).rows
        .map((x) => `${x.schema}.${x.name}`).filter((t) => migrated.has(t));
      const citusTables = [...new Set([...(hasDistribution(d) ? distributionTables(d) : []), ...byHand])];
      if (citusTables.length) {
        add({ code: "subscription_on_citus", server: "target", objects: citusTables,
          message: `mode subscription into distributed or reference tables loses changes silently: PostgreSQL's apply worker writes into ` +
            `the coordinator's local shell of each table, which Citus queries never read (tables: ${citusTables.join(", ")})`,
          fix: "use --mode stream (pgferry applies the changes through the coordinator)" });
      }
    },
  },
  {
    /** Every table named by --distribute/--reference/--colocate is migrated; keys include the distribution column; no identity columns. */
    name: "citus-distribution",
    async run(r) {
      const { src, o, add } = r;
      const d = o.distribution;
      if (!hasDistribution(d)) return;
      const migrated = new Set((r.tables ?? []).filter((t) => !t.partitionRoot).map((t) => `${t.schema}.${t.name}`));
      const missing = distributionTables(d).filter((t) => !migrated.has(t));
      if (missing.length) {
        add({ code: "distribution_table_missing", server: "source", objects: missing,
          message: `--distribute/--reference name table(s) that are not among the migrated tables: ${missing.join(", ")}`,
          fix: "correct the name (schema.table, as on the source), or migrate the table (--schema/--include/--exclude)" });
      }
      for (const [table, column] of Object.entries(d.distribute)) {
        if (!migrated.has(table)) continue;
        const rel = quotedTable(table);
        const col = (await src.query(`SELECT attnum, attidentity FROM pg_attribute WHERE attrelid = $1::regclass AND attname = $2
            AND attnum > 0 AND NOT attisdropped`, [rel, column])).rows[0];
        if (!col) {
          add({ code: "distribution_column_missing", server: "source", objects: [table],
            message: `--distribute ${table}=${column}: ${table} has no column "${column}" on the source`,
            fix: `give --distribute ${table}=COLUMN with one of its columns` });
          continue;
        }
        // Primary keys, unique and exclusion constraints, unique indexes: Citus can enforce them only within one shard.
        const keys = (await src.query(`SELECT coalesce(con.conname, ic.relname) AS name,
              coalesce(pg_get_constraintdef(con.oid), pg_get_indexdef(i.indexrelid)) AS def
            FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
            LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid
           WHERE i.indrelid = $1::regclass AND (i.indisunique OR con.contype = 'x') AND NOT ($2::int2 = ANY (i.indkey::int2[]))
           ORDER BY 1`, [rel, col.attnum])).rows;
        if (keys.length) {
          add({ code: "distribution_key", server: "source", objects: keys.map((k) => `${table}.${k.name}`),
            message: `${table} is distributed by "${column}", but its key(s) ${keys.map((k) => `${k.name} (${k.def})`).join(", ")} do not ` +
              `include that column; Citus enforces a key only within one shard, so it refuses them`,
            fix: `add "${column}" to those keys on the source (e.g. PRIMARY KEY (id, ${column})), distribute ${table} by a column they ` +
              `include, or make it a reference table (--reference ${table})` });
        }
        const identity = (await src.query(`SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attidentity <> ''
            AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, [rel])).rows.map((x) => x.attname as string);
        if (identity.length) {
          add({ code: "distribution_identity", server: "source", objects: identity.map((c) => `${table}.${c}`),
            message: `${table} has identity column(s) ${identity.join(", ")}, which block create_distributed_table on the target`,
            fix: `start with --until schema, then on the target ALTER TABLE ${rel} ALTER COLUMN … DROP IDENTITY (keep a sequence default if ` +
              `needed) and run create_distributed_table by hand; then run pgferry start again without --distribute ${table}=${column} ` +
              `(in --mode stream)` });
        }
      }
    },
  },
];
