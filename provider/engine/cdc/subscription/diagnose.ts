/**
 * Why a subscription's apply worker keeps failing. PostgreSQL reports the error text only in the target's
 * server log (pg_stat_subscription_stats has counts), so pgferry reproduces it: the changes waiting in the
 * slot are peeked (never consumed, nothing acknowledged) and applied on the target with the stream
 * applier's SQL, the way the apply worker would (session_replication_role = replica), inside one
 * transaction that is always rolled back. The first statement that fails gives the error and the change.
 * The slot must not be in use (the subscription disabled) while it is peeked.
 */
import { Client, QueryResult } from "pg";
import { qualified } from "../../core/endpoint";
import { lsnToBigInt } from "../../core/lsn";
import { ColumnMeta, changeSql, describeKey } from "../stream/stream";
import { PgoutputParser } from "../decoders/pgoutput";

/** Most slot messages decoded for the diagnosis. */
const PEEK_LIMIT = 20000;

export async function diagnoseApplyFailure(src: Client, tgt: Client, slot: string, publication: string, subscription: string): Promise<string | undefined> {
  // Where the subscription's commits on the target got to (its replication origin, committed with each transaction):
  // transactions at or before it are applied already, however far the slot's confirmed position lags.
  const origin = await tgt.query(`SELECT pg_replication_origin_progress('pg_' || oid, true)::text AS l FROM pg_subscription WHERE subname = $1`,
    [subscription]);
  const applied = lsnToBigInt(origin.rows[0]?.l ?? "0/0");
  let skipping = false;
  const r = await src.query(`SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, $3::int, 'proto_version', '1', 'publication_names', $2)`,
    [slot, publication, PEEK_LIMIT]);
  const parser = new PgoutputParser(); // raw text, as the applier
  const meta = new Map<string, { always: Set<string>; columns: Map<string, ColumnMeta> }>();
  await tgt.query("BEGIN");
  try {
    await tgt.query("SET LOCAL session_replication_role = replica");
    for (const row of r.rows) for (const m of parser.parse(row.data as Buffer)) {
      if (m.tag === "begin") { skipping = lsnToBigInt(m.commitLsn ?? "0/0") < applied; continue; }
      if (skipping && m.tag !== "relation") continue;
      const table = "relation" in m ? qualified(m.relation.schema, m.relation.name) : m.tag === "relation" ? qualified(m.schema, m.name) : "";
      if (m.tag === "relation") {
        const q = await tgt.query(`SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attidentity = 'a' AS always
          FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`, [table]);
        meta.set(table, { always: new Set(q.rows.filter((x) => x.always).map((x) => x.attname)),
          columns: new Map(q.rows.map((x) => [x.attname, { type: x.type, eq: false }])) });
        continue;
      }
      if (m.tag !== "insert" && m.tag !== "update" && m.tag !== "delete" && m.tag !== "truncate") continue;
      const what = m.tag === "truncate" ? `TRUNCATE of ${m.relations.map((x) => qualified(x.schema, x.name)).join(", ")}`
        : `${m.tag.toUpperCase()} on ${table}${m.tag === "insert" ? ` of ${describeKey(m.new, m.relation.keyColumns.length ? m.relation.keyColumns : Object.keys(m.new))}` :
          ` of ${describeKey((m.tag === "update" ? m.old ?? m.key ?? m.new : m.old ?? m.key) as Record<string, unknown>,
            m.relation.keyColumns.length ? m.relation.keyColumns : Object.keys((m.tag === "update" ? m.old ?? m.new : m.old) ?? {}))}`}`;
      await tgt.query("SAVEPOINT pgferry_diagnose");
      try {
        const sql = m.tag === "truncate" ? `TRUNCATE ${m.relations.map((x) => qualified(x.schema, x.name)).join(", ")}`
          : changeSql(tgt, m, meta.get(table)?.always, meta.get(table)?.columns);
        const res = await tgt.query(sql) as QueryResult;
        if (m.tag !== "insert" && m.tag !== "truncate" && res.rowCount !== 1) {
          return `the source's ${what} finds ${res.rowCount ?? 0} rows on the target (the subscription skips such a change silently)`;
        }
        await tgt.query("RELEASE SAVEPOINT pgferry_diagnose");
      } catch (e) {
        return `applying the source's ${what} fails on the target: ${(e as Error).message}`;
      }
    }
    return undefined;
  } finally {
    await tgt.query("ROLLBACK").catch(() => undefined);
  }
}
