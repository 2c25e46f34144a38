/** Per-table load progress (pgferry.table_progress): what start copied, table by table. */
import { Client } from "pg";
import { CONTROL_SCHEMA } from "../catalog/catalog";

const S = CONTROL_SCHEMA;

export interface TableProgress {
  schema: string;
  table: string;
  status: "pending" | "copying" | "copied";
  rows: number;
  bytes: number;
  estimatedRows: number;
  estimatedBytes: number;
  seconds: number;
}

export async function readTableProgress(c: Client, name: string): Promise<TableProgress[]> {
  const r = await c.query(`SELECT * FROM ${S}.table_progress WHERE migration = $1 ORDER BY schema_name, table_name`, [name]);
  return r.rows.map((x) => ({ schema: x.schema_name, table: x.table_name, status: x.status, rows: Number(x.rows),
    bytes: Number(x.bytes), estimatedRows: Number(x.estimated_rows), estimatedBytes: Number(x.estimated_bytes), seconds: x.seconds }));
}

/**
 * Records the load's finished work in table_progress as it happens (each finished COPY: its table's rows
 * and bytes so far, status copying, or copied with its last COPY), so another process (`pgferry status
 * --watch`, `--serve`) sees tables move during the load; the COPYs still running are read from the
 * target's pg_stat_progress_copy by status. Only finished COPYs are recorded, so the two never count
 * the same rows. Reports arriving together go out as one UPDATE, one write in flight at a time.
 * Recording is advisory: a failed write is ignored, since a broken target connection fails the load
 * on its own.
 */
export function tableProgressRecorder(c: Client, name: string) {
  type Row = { schema: string; name: string; rows: number; copiedBytes: number; seconds: number; done: boolean };
  const latest = new Map<string, Row>();
  const recorded = new Map<string, string>();
  let writing: Promise<void> | undefined;
  const write = async () => {
    while (latest.size) {
      const rows = [...latest.values()];
      latest.clear();
      await c.query(`UPDATE ${S}.table_progress p SET status = v.status, rows = v.rows, bytes = v.bytes, seconds = v.seconds
        FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::float8[]) AS v(s, t, status, rows, bytes, seconds)
        WHERE p.migration = $1 AND p.schema_name = v.s AND p.table_name = v.t`,
        [name, rows.map((r) => r.schema), rows.map((r) => r.name), rows.map((r) => (r.done ? "copied" : "copying")),
          rows.map((r) => r.rows), rows.map((r) => r.copiedBytes), rows.map((r) => r.seconds)]).catch(() => undefined);
    }
    writing = undefined;
  };
  return {
    note(p: Row) {
      const key = `${p.schema}.${p.name}`, finished = `${p.rows}/${p.copiedBytes}/${p.done}`;
      if (recorded.get(key) === finished) return;   // a periodic report of running COPYs: nothing finished since
      recorded.set(key, finished);
      latest.set(key, { schema: p.schema, name: p.name, rows: p.rows, copiedBytes: p.copiedBytes, seconds: p.seconds, done: p.done });
      // setImmediate: reports of the same moment are collected before the write starts.
      writing ??= new Promise<void>((r) => setImmediate(r)).then(write);
    },
    async close() { await writing; },
  };
}

/**
 * A (re)started load: the rows of an earlier run go, one pending row per table to copy comes. `status`
 * copied: a rollback window's reverse record, whose tables need no load (drift then sees tables dropped).
 */
export async function resetTableProgress(c: Client, name: string, tables: { schema: string; name: string; estimatedRows?: number; bytes?: number }[],
  status: "pending" | "copied" = "pending"): Promise<void> {
  await c.query(`DELETE FROM ${S}.table_progress WHERE migration = $1`, [name]);
  if (!tables.length) return;
  // One statement for every table (a row per round trip cost a commit per table on schema-heavy databases).
  await c.query(`INSERT INTO ${S}.table_progress (migration, schema_name, table_name, status, estimated_rows, estimated_bytes)
    SELECT $1, v.s, v.t, $4, v.r, v.b FROM unnest($2::text[], $3::text[], $5::bigint[], $6::bigint[]) AS v(s, t, r, b)`,
    [name, tables.map((t) => t.schema), tables.map((t) => t.name), status, tables.map((t) => Math.trunc(t.estimatedRows ?? 0)),
      tables.map((t) => Math.trunc(t.bytes ?? 0))]);
}

/** The load's final figures of each table copied (their rows made by resetTableProgress). */
export async function markTablesCopied(c: Client, name: string, tables: { schema: string; name: string; rows: number; bytes: number; seconds: number }[]): Promise<void> {
  if (!tables.length) return;
  await c.query(`UPDATE ${S}.table_progress p SET status = 'copied', rows = v.rows, bytes = v.bytes, seconds = v.seconds
    FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::float8[]) AS v(s, t, rows, bytes, seconds)
    WHERE p.migration = $1 AND p.schema_name = v.s AND p.table_name = v.t`,
    [name, tables.map((t) => t.schema), tables.map((t) => t.name), tables.map((t) => t.rows), tables.map((t) => t.bytes), tables.map((t) => t.seconds)]);
}

/** The tables the load took ("schema.table"). */
export async function loadedTables(c: Client, name: string): Promise<string[]> {
  const r = await c.query(`SELECT schema_name || '.' || table_name AS t FROM ${S}.table_progress WHERE migration = $1`, [name]);
  return r.rows.map((x) => x.t as string);
}
