/**
 * Stream mode's applied position and per-table counters (pgferry.migration.applied_lsn, pgferry.apply_stats),
 * written in the same target transaction as the changes they cover, and the applier's last failure
 * (pgferry.migration.apply_error). The applier pipelines its commit as SQL text, so the statements it sends
 * with a transaction's COMMIT are built here (appliedPositionSql).
 */
import { Client } from "pg";
import { CONTROL_SCHEMA } from "../catalog/catalog";
import { bigIntToLsn, lsnToBigInt } from "../core/lsn";
import type { ApplyError } from "./state";

const S = CONTROL_SCHEMA;

export interface ApplyCounts { inserts: number; updates: number; deletes: number; truncates: number }

/** The applied position; before the first commit, the load's consistent point (0/0 if none). */
export async function readAppliedLsn(c: Client, migration: string): Promise<bigint> {
  const r = await c.query(`SELECT applied_lsn, consistent_point FROM ${S}.migration WHERE name = $1`, [migration]);
  const row = r.rows[0];
  return lsnToBigInt(row?.applied_lsn ?? row?.consistent_point ?? "0/0");
}

/**
 * The statements that record, inside the applier's open target transaction, the position it applied up to
 * and what it applied per table; they clear a failure an earlier session recorded (the change it stopped
 * at is applied now). `lit` is the connection's own literal escaper (statements pipelined as text).
 */
export function appliedPositionSql(lit: (v: unknown) => string, migration: string, lsn: bigint, stats: [string, ApplyCounts][]): string[] {
  const sql = [`UPDATE ${S}.migration SET applied_lsn = ${lit(bigIntToLsn(lsn))}, apply_error = NULL, updated_at = now() ` +
    `WHERE name = ${lit(migration)}`];
  if (stats.length) {
    sql.push(`INSERT INTO ${S}.apply_stats AS a (migration, table_name, inserts, updates, deletes, truncates) VALUES ` +
      stats.map(([t, s]) => `(${lit(migration)}, ${lit(t)}, ${s.inserts}, ${s.updates}, ${s.deletes}, ${s.truncates})`).join(", ") +
      ` ON CONFLICT (migration, table_name) DO UPDATE SET inserts = a.inserts + excluded.inserts, updates = a.updates + excluded.updates,
        deletes = a.deletes + excluded.deletes, truncates = a.truncates + excluded.truncates`);
  }
  return sql;
}

/** The applied position alone (nothing else in the transaction), as a parameterised statement. */
export function storeAppliedQuery(migration: string, lsn: bigint): { text: string; values: string[] } {
  return { text: `UPDATE ${S}.migration SET applied_lsn = $2, apply_error = NULL, updated_at = now() WHERE name = $1`,
    values: [migration, bigIntToLsn(lsn)] };
}

/** Record the applier's failure on the migration's record (outside any change transaction). */
export async function recordApplyError(c: Client, migration: string, error: ApplyError): Promise<void> {
  await c.query(`UPDATE ${S}.migration SET apply_error = $2 WHERE name = $1`, [migration, JSON.stringify(error)]);
}

/** What the applier applied, per table, in table order. */
export async function readApplyStats(c: Client, migration: string): Promise<({ table: string } & ApplyCounts)[]> {
  const r = await c.query(`SELECT table_name AS table, inserts::float8, updates::float8, deletes::float8, truncates::float8
    FROM ${S}.apply_stats WHERE migration = $1 ORDER BY 1`, [migration]);
  return r.rows;
}

/** The tables the applier changed at least once; [] where there are no counters (a control schema of an older pgferry). */
export async function tablesApplied(c: Client, migration: string): Promise<string[]> {
  const r = await c.query(`SELECT table_name FROM ${S}.apply_stats WHERE migration = $1
    AND inserts + updates + deletes + truncates > 0`, [migration]).catch(() => ({ rows: [] as { table_name: string }[] }));
  return r.rows.map((x) => x.table_name);
}
