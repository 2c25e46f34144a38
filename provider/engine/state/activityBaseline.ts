/**
 * The source's per-table write counters read before the slot was created (pgferry.table_activity): the
 * cutover gate hashes the tables whose counters moved since (../verify/touched.ts).
 */
import { Client } from "pg";
import { CONTROL_SCHEMA } from "../catalog/catalog";
import { ensureControlSchema } from "./controlSchema";

const S = CONTROL_SCHEMA;

/** Replace the baseline ("schema.table" → inserted + updated + deleted tuples). */
export async function saveActivityBaseline(c: Client, migration: string, counters: Map<string, bigint>): Promise<void> {
  await ensureControlSchema(c); // a load resumed on a control schema an older pgferry made
  await c.query(`DELETE FROM ${S}.table_activity WHERE migration = $1`, [migration]);
  await c.query(`INSERT INTO ${S}.table_activity (migration, table_name, changes) SELECT $1, t, n::numeric FROM unnest($2::text[], $3::text[]) AS v(t, n)`,
    [migration, [...counters.keys()], [...counters.values()].map(String)]);
}

/** The baseline; empty when none was recorded (a migration started by an older pgferry). */
export async function readActivityBaseline(c: Client, migration: string): Promise<Map<string, bigint>> {
  const r = await c.query(`SELECT table_name, changes::text AS n FROM ${S}.table_activity WHERE migration = $1`, [migration])
    .catch(() => ({ rows: [] as { table_name: string; n: string }[] }));
  return new Map(r.rows.map((x) => [x.table_name, BigInt(x.n)]));
}
