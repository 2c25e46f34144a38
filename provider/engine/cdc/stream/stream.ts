/**
 * Change data capture, mode `stream`: pgferry reads the slot itself (./replication.ts, our own client of
 * the streaming replication protocol), decodes it with the migration's decoder (../decoders: pgoutput or
 * wal2json, both into pgferry's change type) and applies the changes with pg, for targets that cannot
 * host a subscription or reach the source.
 *
 * The rules that keep it exactly once (../shared/notes/cdc.md §2 lists the library traps they replace):
 *  - only what the target committed is acknowledged, and exactly that position (no +1, no timer ack of
 *    what was merely received);
 *  - every (re)start passes the stored applied LSN explicitly, on a new connection each time;
 *  - START_REPLICATION is sent without the `messages` option (PostgreSQL 13 rejects it);
 *  - values stay raw text (parsing loses microseconds, big jsonb numbers, JSON null…);
 *  - flow control: the socket pauses while we apply, so memory stays bounded whatever the
 *    transaction size; a failing handler stops the stream instead of skipping to the next message.
 * Exactly once: the applied position is written on the target in the same transaction as the
 * changes it covers; source transactions at or below it are skipped after a restart.
 */
import { Client, QueryResult } from "pg";
import { CONTROL_SCHEMA } from "../../catalog/catalog";
import {
  clientConfig, connect, DEFAULT_STALL_TIMEOUT_SEC, endClient, Endpoint, qualified, quoteIdent, quoteLiteral, stallError, watchStall,
} from "../../core/endpoint";
import { PgferryError } from "../../core/errors";
import { bigIntToLsn, lsnToBigInt } from "../../core/lsn";
import { decoderFor } from "../decoders";
import type { ChangeDelete, ChangeInsert, ChangeRelation, ChangeUpdate, Change, RowChange } from "../decoders/change";
import type { DecoderSession } from "../decoders/decoder";
import { readStreamSetup } from "../decoders/wal2json";
import { AfterBackfill, afterBackfillSql, beforeBackfillSql, DdlPayload, ddlToApply, parseLogRow } from "../ddl/statement";
import { ddlLogTableName } from "../ddl/capture";
import { applyOwners } from "../ddl/owners";
import { recordIdentitySetByCapture } from "../../state/sourceChanges";
import { ReplicationStream } from "./replication";
import { SLOT_LOST_PATTERN, slotLostError } from "../../copy/snapshot";
import { ensureControlSchema } from "../../state/controlSchema";
import { appliedPositionSql, readAppliedLsn, recordApplyError, storeAppliedQuery } from "../../state/applyProgress";
import type { ApplyError } from "../../state/state";
import { readMigration } from "../../state/state";
import { quotedTable } from "../../copy/distribution";

export interface ApplyCounters { inserts: number; updates: number; deletes: number; truncates: number }

export interface StreamOptions {
  migration: string;
  slot: string;
  publication: string;
  /** Stop once this LSN is applied (cutover drain); undefined = run until stop(). */
  until?: bigint;
  /** Most statements in one target transaction before it commits (several source transactions per target one). */
  batchStatements?: number;
  onApplied?: (lsn: bigint) => void;
  /**
   * The target is a database pgferry froze (the old server during a rollback window): this session lifts
   * read-only for itself. Only the reverse direction sets it; a forward target is never frozen.
   */
  writeThroughFreeze?: boolean;
  /**
   * Seconds without an answer after which a link counts as stalled (default DEFAULT_STALL_TIMEOUT_SEC): the
   * replication connection (pinged with reply-requested status updates, which a live walsender answers at
   * once) and the target connection while a statement runs. A stall ends the session with an error naming
   * the link; the agent reconnects.
   */
  stallTimeoutSec?: number;
}

type Relation = ChangeRelation;
/** A value as an SQL literal (text in pgferry's change type; NULL stays NULL). */
const lit = (v: unknown) => (v === null ? "NULL" : quoteLiteral(String(v)));
/** The quoted "schema"."name" of a relation, built once per relation message (per change it was a measured share of the drain's CPU). */
const quotedNames = new WeakMap<Relation, string>();
const tableOf = (r: Relation) => {
  let q = quotedNames.get(r);
  if (q === undefined) quotedNames.set(r, q = qualified(r.schema, r.name));
  return q;
};

/** The column the applier records its failure in (a control schema made by an older pgferry lacks it): the control schema brought up to date. */
export async function ensureApplyErrorColumn(c: Client): Promise<void> {
  await ensureControlSchema(c);
}

export { readAppliedLsn };

/**
 * How a REPLICA IDENTITY FULL row is found on the target, per column. `type` is format_type of the
 * target column (typmod included): the value pgoutput/wal2json sent is read back through that type's
 * own input function, then compared as the type's canonical text output in the same session
 * (`col::text = ('v'::type)::text`, byte-wise): exact for every type, including those without an
 * equality operator (json, xml, point), blank-padded char(n), numeric scale (1.0 vs 1.00), -0 vs 0,
 * NaN, arrays, domains, enums, and independent of the session's TimeZone/DateStyle. Where the base type
 * has a default btree opclass (`eq`), `col = 'v'::type` is added too, so an index on the column is used.
 */
export interface ColumnMeta { type: string; eq: boolean }

/** A change whose UPDATE or DELETE did not touch exactly the row(s) it should: the target no longer matches the source. */
export class DivergenceError extends PgferryError {
  constructor(readonly table: string, readonly keyText: string, readonly kind: "update" | "delete", readonly found: number, readonly want: number) {
    super("divergence", `divergence on ${table}: the source's ${kind.toUpperCase()} of the row ${keyText} ${found === 0 ? "found no such row" :
      `matched ${found} rows (expected ${want})`} on the target, so the target no longer equals the source. Nothing after it was applied or ` +
      `acknowledged (the change is retried from the slot). Fix: repair that row on the target (copy it from the source), then run the agent ` +
      `again: it retries the change and, once it applies, clears this record (cutover refuses while it is recorded); or run pgferry ` +
      `cleanup and start again`);
  }
}

/** The row a change identifies, as text for errors: key columns, or every column under REPLICA IDENTITY FULL. */
export function describeKey(ident: Record<string, unknown>, cols: string[]): string {
  const shown = cols.filter((k) => ident[k] !== undefined).map((k) => {
    const v = ident[k];
    if (v === null) return `${k}=NULL`;
    const t = String(v);
    return `${k}=${t.length > 60 ? JSON.stringify(t.slice(0, 60)) + "…" : JSON.stringify(t)}`;
  });
  return `(${shown.join(", ")})`;
}

/**
 * The values an UPDATE/DELETE identifies its row by. An UPDATE that kept its key carries neither old row nor
 * key: its new row is the identity (only its key columns are read, and they equal the old ones) — no copy per
 * change, which the drain's profile showed.
 */
function identOf(m: ChangeUpdate | ChangeDelete): Record<string, unknown> {
  return m.tag === "update" ? (m.old ?? m.key ?? m.new) : ((m.old ?? m.key) as Record<string, unknown>);
}

/** The condition on one REPLICA IDENTITY FULL column (NULL matches NULL: IS NOT DISTINCT FROM semantics). */
function fullMatch(col: string, v: unknown, meta: ColumnMeta | undefined, table: string): string {
  if (v === null) return `${quoteIdent(col)} IS NULL`;
  if (!meta) {
    throw new PgferryError("column_missing", `the target table ${table} has no column "${col}", which the source sent; DDL is not ` +
      `replicated: fix: apply the same DDL on the target, then run the agent (or cutover) again`);
  }
  const typed = `${lit(v)}::${meta.type}`;
  const text = `${quoteIdent(col)}::text COLLATE "C" = (${typed})::text COLLATE "C"`;
  return meta.eq ? `${quoteIdent(col)} = ${typed} AND ${text}` : text;
}

/**
 * SQL for one change. Keys use `=` (index usable); REPLICA IDENTITY FULL rows match exactly one
 * physical row (tableoid too: ctids repeat across the partitions of a root) by every column's value.
 * `columns` (target column types) is required for FULL identity.
 */
export function changeSql(c: Client, m: ChangeInsert | ChangeUpdate | ChangeDelete,
  alwaysIdentity: Set<string> = new Set(), columns?: Map<string, ColumnMeta>, moveOnChange: Set<string> = new Set()): string {
  const r = m.relation;
  if (m.tag === "insert") {
    const cols = Object.keys(m.new).filter((k) => m.new[k] !== undefined);
    // A table without columns (or with generated ones only, which pgoutput leaves out) still gains a row.
    if (!cols.length) return `INSERT INTO ${tableOf(r)} DEFAULT VALUES`;
    // The source's value for GENERATED ALWAYS identity columns wins, as in a native subscription.
    return `INSERT INTO ${tableOf(r)} (${cols.map(quoteIdent).join(", ")})${alwaysIdentity.size ? " OVERRIDING SYSTEM VALUE" : ""} ` +
      `VALUES (${cols.map((k) => lit(m.new[k])).join(", ")})`;
  }
  const full = r.replicaIdentity === "full";
  const ident = identOf(m);
  const keyCols = full ? Object.keys(ident).filter((k) => ident[k] !== undefined) : r.keyColumns;
  // A table without columns (or with generated ones only, which pgoutput leaves out) under FULL identity: every
  // row is alike, so any one row is the row.
  const columnless = full && r.columns.length === 0;
  if (!keyCols.length && !columnless) {
    throw new PgferryError("no_replica_identity", `the source sent an ${m.tag.toUpperCase()} of ${tableOf(r)} without any key column ` +
      `(replica identity ${r.replicaIdentity}${r.replicaIdentity === "default" ? " and no primary key" : ""}; for a partitioned table the root's ` +
      `replica identity counts, since changes are published through the root): fix: add a primary key on the source, or ALTER TABLE … ` +
      `REPLICA IDENTITY FULL on the table (on a partitioned table: on the root as well), then run pgferry cleanup and start again`);
  }
  const where = full
    ? `(tableoid, ctid) = (SELECT tableoid, ctid FROM ${tableOf(r)} WHERE ${keyCols.map((k) => fullMatch(k, ident[k], columns?.get(k), tableOf(r)))
        .join(" AND ") || "true"} LIMIT 1)`
    : keyCols.map((k) => `${quoteIdent(k)} = ${lit(ident[k])}`).join(" AND ");
  if (m.tag === "delete") return `DELETE FROM ${tableOf(r)} WHERE ${where}`;
  const keyChanged = (k: string) => keyCols.includes(k) && ident[k] !== undefined && String(ident[k]) !== String(m.new[k]);
  const changedAlways = [...alwaysIdentity].filter((k) => m.new[k] !== undefined && keyChanged(k));
  // A Citus distribution column (copy/distribution.ts): Citus refuses an UPDATE that changes its value (the row would
  // change shard), so such a row is moved the same way.
  const moved = [...moveOnChange].filter((k) => m.new[k] !== undefined && ident[k] !== undefined && String(ident[k]) !== String(m.new[k]));
  if (changedAlways.length || moved.length) {
    // A GENERATED ALWAYS identity column can only be SET to DEFAULT (UPDATE has no OVERRIDING clause): move the
    // row instead — delete it and insert it with its new values in one statement. Unchanged TOAST values
    // (undefined) are taken from the deleted row. No trigger or FK check fires (session_replication_role).
    // Every column the relation has (wal2json leaves unchanged TOAST columns out of the row entirely).
    const cols = [...new Set([...r.columns.map((x) => x.name), ...Object.keys(m.new)])];
    return `WITH d AS (DELETE FROM ${tableOf(r)} WHERE ${where} RETURNING *) INSERT INTO ${tableOf(r)} (${cols.map(quoteIdent).join(", ")}) ` +
      `${alwaysIdentity.size ? "OVERRIDING SYSTEM VALUE " : ""}SELECT ${cols.map((k) => m.new[k] === undefined ? `d.${quoteIdent(k)}` : lit(m.new[k])).join(", ")} FROM d`;
  }
  // undefined = unchanged TOAST value: leave it as it is, never write NULL. GENERATED ALWAYS identity
  // columns cannot be SET; they are left out unless they changed (handled above), and so are unchanged distribution columns.
  const set = Object.keys(m.new).filter((k) => m.new[k] !== undefined && !alwaysIdentity.has(k) && !moveOnChange.has(k));
  // A GENERATED ALWAYS identity column outside the key (`UPDATE t SET n = DEFAULT` on the source gives it a new value):
  // the old value is not in the message, so whether it changed is only known on the target. The row is updated where
  // the column already has the new value, and moved (deleted and inserted with OVERRIDING SYSTEM VALUE) where it has
  // not; exactly one of the two finds the row, and the statement returns one row per row it wrote (checked as one).
  const unkeyedAlways = [...alwaysIdentity].filter((k) => m.new[k] !== undefined && !keyCols.includes(k));
  if (unkeyedAlways.length) {
    const same = unkeyedAlways.map((k) => `${quoteIdent(k)} IS NOT DISTINCT FROM ${lit(m.new[k])}`).join(" AND ");
    const cols = [...new Set([...r.columns.map((x) => x.name), ...Object.keys(m.new)])];
    const kept = set.length
      ? `UPDATE ${tableOf(r)} SET ${set.map((k) => `${quoteIdent(k)} = ${lit(m.new[k])}`).join(", ")} WHERE ${where} AND ${same} RETURNING 1`
      : `SELECT 1 FROM ${tableOf(r)} WHERE ${where} AND ${same}`;
    return `WITH u AS (${kept}), d AS (DELETE FROM ${tableOf(r)} WHERE ${where} AND NOT (${same}) RETURNING *), ` +
      `i AS (INSERT INTO ${tableOf(r)} (${cols.map(quoteIdent).join(", ")}) OVERRIDING SYSTEM VALUE ` +
      `SELECT ${cols.map((k) => m.new[k] === undefined ? `d.${quoteIdent(k)}` : lit(m.new[k])).join(", ")} FROM d RETURNING 1) ` +
      `SELECT 1 FROM u UNION ALL SELECT 1 FROM i`;
  }
  if (!set.length) {
    // Nothing to write (only unchanged TOAST / identity columns): the row must still exist.
    return `SELECT 1 FROM ${tableOf(r)} WHERE ${where}`;
  }
  return `UPDATE ${tableOf(r)} SET ${set.map((k) => `${quoteIdent(k)} = ${lit(m.new[k])}`).join(", ")} WHERE ${where}`;
}


/**
 * Per target table: column types (for casts in merged statements and REPLICA IDENTITY FULL matching)
 * and GENERATED ALWAYS identity columns.
 */
export interface TableMeta {
  types: Map<string, string>; alwaysIdentity: Set<string>; columns?: Map<string, ColumnMeta>;
  /** The Citus distribution column of a distributed table (the migration's options): a change of its value moves the row. */
  moveOnChange?: Set<string>;
  /**
   * The table (or a partition of it) has a trigger or rule that fires under session_replication_role = replica
   * (ENABLE ALWAYS / ENABLE REPLICA): it can see the order of changes across tables, so a batch touching it is not
   * regrouped by table.
   */
  observesOrder?: boolean;
}

/**
 * One statement of a batch and how its result is checked. An UPDATE/DELETE must touch exactly one row
 * per change: `one` names the single change's row; a merged statement returns the keys it touched
 * (RETURNING the VALUES list's own key texts), each of which must come back exactly once.
 */
export interface BatchStatement {
  sql: string;
  /** rows an UPDATE/DELETE must touch; null for INSERT */
  expect: number | null;
  table?: string;
  kind?: "update" | "delete";
  /** A single change: its row, as text for the error. */
  one?: string;
  /** A merged statement: the key text of each change, in the order of its VALUES list (= RETURNING's columns joined by keyText). */
  keys?: string[];
}

/** An INSERT identifies no existing row (one shared empty object, not one per change). */
const NO_KEY: Record<string, unknown> = Object.freeze({});
const keyOf = (m: RowChange): Record<string, unknown> => m.tag === "insert" ? NO_KEY : identOf(m);

/**
 * The columns a row carries a value for (unchanged TOAST values, undefined, left out), remembering the last list
 * returned: the rows of one table nearly always carry the same columns, and then that same array comes back —
 * checked by walking the row's keys, without building a list per change (a measured share of the drain's CPU).
 * The caller may cache what it derives from a list by the list's identity.
 */
function definedColumns(): (row: Record<string, unknown>) => string[] {
  let last: string[] | undefined;
  return (row) => {
    if (last) {
      let n = 0, same = true;
      // for…in: the row's own keys in Object.keys order (its prototype has no properties, see newRowValues).
      for (const k in row) {
        if (row[k] === undefined) continue;
        if (last[n++] !== k) { same = false; break; }
      }
      if (same && n === last.length) return last;
    }
    return last = Object.keys(row).filter((k) => row[k] !== undefined);
  };
}

/**
 * Throws DivergenceError unless the statement touched exactly the rows it must. `rows` are the RETURNING
 * rows of a merged statement (their values are the key texts sent).
 */
export function checkStatement(b: BatchStatement, rowCount: number | null, rows: Record<string, unknown>[] = []): void {
  if (b.expect === null || !b.kind || !b.table) return;
  if (!b.keys) {
    if (rowCount !== b.expect) throw new DivergenceError(b.table, b.one ?? "?", b.kind, rowCount ?? 0, b.expect);
    return;
  }
  const seen = new Map<string, number>();
  for (const r of rows) {
    const vals = Object.values(r);
    const k = vals.length === 1 ? String(vals[0]) : JSON.stringify(vals);
    seen.set(k, (seen.get(k) ?? 0) + 1);
  }
  for (const k of b.keys) {
    const n = seen.get(k) ?? 0;
    if (n !== 1) throw new DivergenceError(b.table, `with key ${k}`, b.kind, n, 1);
  }
  if (rows.length !== b.keys.length) throw new DivergenceError(b.table, `of a batch of ${b.keys.length} keys`, b.kind, rows.length, b.keys.length);
}

/**
 * The SQL for a batch of row changes inside one target transaction. Changes are grouped by table
 * (each table's own order kept: with no triggers or FK checks during apply, changes to different
 * tables commute; not when a table of the batch has a trigger or rule that fires under the replica role,
 * TableMeta.observesOrder: then runs of consecutive changes of one table), and consecutive changes of one kind are merged: multi-row INSERT, and UPDATE/DELETE
 * joined to a VALUES list on the key. Consecutive updates of one key with the same columns collapse
 * to the last one (its new row is the row's final state). A run ends at a different kind or column
 * set, a repeated key in a DELETE run, a key change, or REPLICA IDENTITY FULL, which keep one
 * statement per change.
 */
export function batchSql(c: Client, changes: RowChange[], meta: (table: string) => TableMeta | undefined): BatchStatement[] {
  const tables = changes.map((m) => tableOf(m.relation));
  // Regrouping is invisible only while nothing on the target fires under the replica role: with an ALWAYS/REPLICA
  // trigger or rule on any table of the batch, keep the source's order (runs of consecutive changes of one table).
  const regroup = ![...new Set(tables)].some((t) => meta(t)?.observesOrder);
  const groups: [string, RowChange[]][] = [];
  if (regroup) {
    const byTable = new Map<string, RowChange[]>();
    changes.forEach((m, n) => { const t = tables[n]; (byTable.get(t) ?? byTable.set(t, []).get(t)!).push(m); });
    groups.push(...byTable);
  } else {
    changes.forEach((m, n) => {
      const last = groups[groups.length - 1];
      if (last && last[0] === tables[n]) last[1].push(m); else groups.push([tables[n], [m]]);
    });
  }
  const out: BatchStatement[] = [];
  for (const [table, list] of groups) {
    const info = meta(table);
    const keys = list[0].relation.keyColumns;
    // Derived once per list of carried columns (definedColumns returns the same array while the rows' columns stay the same).
    const insertColumns = definedColumns(), updateColumns = definedColumns();
    const insertSigs = new WeakMap<string[], string>();
    const updateSigs = new WeakMap<string[], { set: string[]; sig: string | undefined }>();
    const updateShape = (m: ChangeUpdate) => {
      const carried = updateColumns(m.new);
      let u = updateSigs.get(carried);
      if (!u) {
        const set = carried.filter((k) => !keys.includes(k) && !info?.alwaysIdentity.has(k) && !info?.moveOnChange?.has(k));
        // A GENERATED ALWAYS identity column outside the key may have changed: applied alone (changeSql).
        const unkeyedAlways = carried.some((k) => !keys.includes(k) && info?.alwaysIdentity.has(k));
        updateSigs.set(carried, u = { set, sig: !unkeyedAlways && set.length && set.every((k) => info?.types.has(k)) ? "u:" + set.join("\0") : undefined });
      }
      return u;
    };
    const setCols = (m: ChangeUpdate) => updateShape(m).set;
    // JSON.stringify of the key texts as RETURNING gives them back (null stays null: keys are NOT NULL anyway).
    const keyText = (key: Record<string, unknown>) => keys.length === 1 ? String(key[keys[0]]) : JSON.stringify(keys.map((k) => key[k]));
    /** The merge class of a change: undefined when it must be applied alone. */
    const signature = (m: RowChange, key: Record<string, unknown>): string | undefined => {
      if (m.tag === "insert") {
        const cols = insertColumns(m.new);
        let sig = insertSigs.get(cols);
        if (sig === undefined) insertSigs.set(cols, sig = "i:" + cols.join("\0"));
        return sig;
      }
      if (m.relation.replicaIdentity === "full" || !info || !keys.length) return undefined;
      if (m.tag === "delete") return "d";
      // An UPDATE that kept its key identifies its row by its new row (identOf): no key change to look for.
      if (key !== m.new && keys.some((k) => String(key[k]) !== String(m.new[k]))) return undefined; // key change
      if (info.moveOnChange?.size && [...info.moveOnChange].some((k) => m.new[k] !== undefined && key[k] !== undefined && String(key[k]) !== String(m.new[k]))) return undefined;
      return updateShape(m).sig;
    };
    const cast = (col: string, alias: string) => `v.${alias}::${info!.types.get(col) ?? "text"}`;
    const keyJoin = () => keys.map((k, n) => `t.${quoteIdent(k)} = ${cast(k, `k${n}`)}`).join(" AND ");
    const row = (values: unknown[]) => `(${values.map((v) => lit(v)).join(", ")})`;
    /** One VALUES row of a merged UPDATE: the key's values, then the new values of the SET columns (no arrays built per change). */
    const updateRow = (key: Record<string, unknown>, values: Record<string, unknown>, cols: string[]) => {
      let out = "(";
      for (let n = 0; n < keys.length; n++) out += (n ? ", " : "") + lit(key[keys[n]]);
      for (const k of cols) out += ", " + lit(values[k]);
      return out + ")";
    };
    // The VALUES list's key columns exactly as sent (untyped literals resolve to text): compared with keyText.
    const returning = () => keys.map((_, n) => `v.k${n} AS k${n}`).join(", ");
    const single = (m: RowChange): BatchStatement => m.tag === "insert"
      ? { sql: changeSql(c, m, info?.alwaysIdentity, info?.columns), expect: null }
      : { sql: changeSql(c, m, info?.alwaysIdentity, info?.columns, info?.moveOnChange), expect: 1, table, kind: m.tag,
          one: describeKey(keyOf(m), m.relation.replicaIdentity === "full" ? Object.keys(keyOf(m)) : m.relation.keyColumns) };

    let sig: string | undefined;
    let run: RowChange[] = [];
    // The run's keys: an update run keeps the latest change per key (a Map keeps first-seen order); a delete
    // run only looks for a repeat.
    const byKey = new Map<string, RowChange>();
    const emit = () => {
      if (!run.length) return;
      const first = run[0];
      if (run.length === 1 || !sig) {
        for (const m of run) out.push(single(m));
      } else if (first.tag === "insert") {
        const cols = Object.keys(first.new).filter((k) => first.new[k] !== undefined);
        if (!cols.length) out.push({ sql: `INSERT INTO ${table} SELECT FROM generate_series(1, ${run.length})`, expect: null });
        else out.push({ sql: `INSERT INTO ${table} (${cols.map(quoteIdent).join(", ")})${info?.alwaysIdentity.size ? " OVERRIDING SYSTEM VALUE" : ""} VALUES ` +
          run.map((m) => row(cols.map((k) => (m as ChangeInsert).new[k]))).join(", "), expect: null });
      } else if (first.tag === "delete") {
        out.push({ sql: `DELETE FROM ${table} t USING (VALUES ${run.map((m) => row(keys.map((k) => keyOf(m)[k]))).join(", ")}) ` +
          `AS v(${keys.map((_, n) => `k${n}`).join(", ")}) WHERE ${keyJoin()} RETURNING ${returning()}`, expect: run.length,
          table, kind: "delete", keys: run.map((m) => keyText(keyOf(m))) });
      } else {
        const cols = setCols(first as ChangeUpdate);
        const last = [...byKey.values()] as ChangeUpdate[];
        if (last.length === 1) out.push(single(last[0]));
        else out.push({ sql: `UPDATE ${table} t SET ${cols.map((k, n) => `${quoteIdent(k)} = ${cast(k, `s${n}`)}`).join(", ")} FROM (VALUES ` +
          `${last.map((u) => updateRow(keyOf(u), u.new, cols)).join(", ")}) ` +
          `AS v(${[...keys.map((_, n) => `k${n}`), ...cols.map((_, n) => `s${n}`)].join(", ")}) WHERE ${keyJoin()} RETURNING ${returning()}`,
          expect: last.length, table, kind: "update", keys: last.map((u) => keyText(keyOf(u))) });
      }
      run = [];
      byKey.clear();
    };
    for (const m of list) {
      const key = keyOf(m);
      const s = signature(m, key);
      const k = s && m.tag !== "insert" ? keyText(key) : undefined;
      if (!s || s !== sig || (m.tag === "delete" && byKey.has(k!))) { emit(); sig = s; }
      run.push(m);
      if (k !== undefined) { byKey.delete(k); byKey.set(k, m); }
      if (!s) emit(); // applied alone
    }
    emit();
  }
  return out;
}

/** Most target statements queued on the connection before decoding waits (backpressure: the socket pauses). */
const MAX_IN_FLIGHT = 4;

/**
 * One stream session: connect, stream from the stored position, apply, until `until` is applied,
 * stop() is called, or an error. Resolves with the last applied LSN.
 *
 * Decoding and applying overlap: statements are queued on the target connection without waiting
 * (pg sends them one after another, in order), so the target executes batch N while batch N+1 is
 * decoded. At most MAX_IN_FLIGHT are queued; then the data handler waits, which pauses the source
 * socket. Nothing is acknowledged before the COMMIT that contains it has returned "COMMIT".
 */
export class StreamApplier {
  private svc?: ReplicationStream;
  private target?: Client;
  /** Highest source position whose target transaction has committed (and been acknowledged). */
  private applied = 0n;
  /** End LSN of the last source transaction added to the open target transaction. */
  private pendingLsnText: string | null = null;
  /** Converted when a target transaction commits, not per source transaction (a measured share of the drain's CPU). */
  private get pendingLsn(): bigint { return lsnToBigInt(this.pendingLsnText ?? "0/0"); }
  /**
   * A source transaction at or above the applied position was seen: every later one is too (the stream sends
   * transactions in commit order), so BEGIN no longer needs its position converted and compared.
   */
  private beyondApplied = false;
  /** A target transaction is open (BEGIN queued) and holds source transactions not yet committed. */
  private inTarget = false;
  /** The last source message handled was a COMMIT: the open target transaction may be committed now. */
  private atBoundary = true;
  private skipping = false;
  private pending: RowChange[] = [];
  private statements = 0;
  private stats = new Map<string, ApplyCounters>();
  private statsKeys = new WeakMap<Relation, string>();
  /** Column types and GENERATED ALWAYS identity columns per target table, read when the relation is announced. */
  private meta = new Map<string, TableMeta>();
  /** Citus: distributed table ("s"."t") → its distribution column, from the migration's options (recorded by start). */
  private distributionColumns = new Map<string, string>();
  /** Target queries sent and not yet settled, oldest first (they settle in order). */
  private inFlight: Promise<unknown>[] = [];
  private broken?: unknown;
  private done!: Promise<bigint>;
  private resolveDone!: (l: bigint) => void;
  private rejectDone!: (e: unknown) => void;
  private stopped = false;
  /** stop() was called mid-transaction: finish at the next source COMMIT. */
  private stopRequested = false;
  private finishing = false;
  private timer?: NodeJS.Timeout;
  private watchdog?: NodeJS.Timeout;
  private unwatchTarget?: () => void;
  /** Last time the walsender sent anything (data or keepalive). */
  private lastHeard = Date.now();
  /** The migration's decoder session (pgoutput or wal2json): slot bytes into pgferry changes. */
  private decoder?: DecoderSession;
  changes = 0;

  constructor(private source: Endpoint, private targetEp: Endpoint, private o: StreamOptions) {
    this.done = new Promise((res, rej) => { this.resolveDone = res; this.rejectDone = rej; });
  }

  get appliedLsn(): bigint { return this.applied; }

  private get stallMs(): number { return (this.o.stallTimeoutSec ?? DEFAULT_STALL_TIMEOUT_SEC) * 1000; }

  async run(): Promise<bigint> {
    this.target = await connect(this.targetEp, { application_name: "pgferry stream" });
    // A target that stops answering mid-statement: cut the connection and fail naming it (never hang).
    const stallSec = this.stallMs / 1000;
    this.unwatchTarget = watchStall(this.target, this.stallMs, () => {
      this.broken ??= stallError(this.targetEp, "no answer to a statement", stallSec);
      void this.fail(this.broken);
    });
    try {
      await this.target.query(`SET session_replication_role = replica`);
    } catch (e) {
      throw new PgferryError("replica_role", `stream mode applies changes with session_replication_role = replica (no user triggers, ` +
        `no FK checks), which the target refused (${(e as Error).message}); fix: use a superuser on the target, or ` +
        `GRANT SET ON PARAMETER session_replication_role TO "${this.targetEp.user}" (PostgreSQL 15+)`);
    }
    await this.target.query(`SET synchronous_commit = on`);
    if (this.o.writeThroughFreeze) await this.target.query(`SET default_transaction_read_only = off`);
    this.applied = await readAppliedLsn(this.target, this.o.migration);
    const distribution = (await readMigration(this.target, this.o.migration))?.options.distribution;
    this.distributionColumns = new Map(Object.entries(distribution?.distribute ?? {}).map(([t, col]) => [quotedTable(t), col]));
    // Tables distributed by hand (start --until schema, then create_distributed_table) are in Citus's own catalog.
    const citus = await this.target.query(`SELECT 1 FROM pg_extension WHERE extname = 'citus'`);
    if (citus.rowCount) {
      const byHand = await this.target.query(`SELECT n.nspname AS schema, c.relname AS name, t.distribution_column AS col FROM citus_tables t
          JOIN pg_class c ON c.oid = t.table_name JOIN pg_namespace n ON n.oid = c.relnamespace WHERE t.citus_table_type = 'distributed'`);
      for (const x of byHand.rows) this.distributionColumns.set(qualified(x.schema, x.name), x.col);
    }
    await ensureApplyErrorColumn(this.target);
    // stop() may have come while connecting: it found nothing to close, so close here (an open
    // connection would keep the process alive, and a stream started now would hold the slot).
    if ((this.o.until !== undefined && this.applied >= this.o.until) || this.stopped || this.finishing) {
      await this.close();
      return this.stopped || this.finishing ? this.done : this.applied;
    }

    try {
      const setup = await readStreamSetup(this.target, this.o.migration);
      this.decoder = await decoderFor(setup.plugin).open(this.source, setup, this.o.publication);
    } catch (e) {
      await this.close();
      throw e;
    }
    // stop() may also have come while the decoder opened: finish() then closed what existed, so nothing may start
    // now — a stream begun here would never be consumed nor stopped, and its ping and watchdog timers would keep the
    // process alive for good (the rare hang after a whole test run, issue 15).
    if (this.stopped || this.finishing) {
      await this.close();
      return this.done;
    }
    const decoder = this.decoder;
    const svc = new ReplicationStream(
      clientConfig(this.source, { application_name: `pgferry_${this.o.migration}`, options: decoder.connectionOptions }), {
        onStart: () => { this.lastHeard = Date.now(); },
        onData: (payload: Buffer): Promise<void> | void => {
          this.lastHeard = Date.now();
          if (this.stopped || this.finishing) return;
          // A synchronous decoder (pgoutput) and handler: a promise only when something must be awaited (a full batch,
          // a commit that must wait for the target, a relation or DDL message) — an await per message, and per
          // change before that, was a measured share of the drain's CPU.
          if (decoder.decodeSync) {
            let changes: Change[];
            try { changes = decoder.decodeSync(payload); } catch (e) { return this.fail(e); }
            return this.applyChanges(changes, 0);
          }
          // An asynchronous decoder may read the payload after onData returned: a copy (the stream's may be a view, see onData).
          return decoder.decode(Buffer.from(payload)).then((changes) => this.applyChanges(changes, 0), (e) => this.fail(e));
        },
        onKeepalive: async (sent: bigint, reply: boolean) => {
          this.lastHeard = Date.now();
          if (this.stopped) return;
          try {
            // A keepalive carries the position the walsender has decoded and sent up to. Idle here means
            // every change before it is applied: record that position, so the fence check and status see
            // "caught up" even when the last WAL records are not ours (e.g. the freeze itself). (The
            // walsender pings only while our confirmed position is behind what it sent, so this is one
            // small UPDATE per idle period, not one per keepalive.)
            if (this.idle() && sent > this.applied) await this.storeApplied(sent);
            if (reply || this.idle()) await this.ack(this.applied);
            if (this.o.until !== undefined && this.applied >= this.o.until && this.idle()) await this.finish();
          } catch (e) { await this.fail(e); }
        },
        onError: (e: unknown) => { void this.fail(e); },
      });
    this.svc = svc;
    // Status updates request a reply: a live walsender answers at once (a keepalive), so silence on the
    // replication connection longer than the stall timeout means the link (or the walsender) is gone.
    this.timer = setInterval(() => { if (!this.stopped) void this.ack(this.applied, true).catch(() => undefined); },
      Math.min(5000, this.stallMs / 3));
    this.lastHeard = Date.now();
    this.watchdog = setInterval(() => {
      // While we apply, the stream is paused on purpose (flow control): then the target's watch applies.
      if (this.stopped || svc.processing || Date.now() - this.lastHeard <= this.stallMs) return;
      svc.destroySocket(); // cut it: a polite end would wait for the stalled peer
      void this.fail(stallError(this.source, "nothing received on the replication connection (a live walsender answers a ping at once)", stallSec));
    }, Math.max(50, Math.min(1000, this.stallMs / 10)));
    svc.run(decoder.startReplication(this.o.slot, bigIntToLsn(this.applied))).catch((e) => this.fail(e));
    return this.done;
  }

  /**
   * Stop at the end of the source transaction in hand (its changes share the open target
   * transaction): commit what is complete, then end. If that transaction does not end within
   * `graceMs` (a huge one still streaming), the open target transaction is rolled back instead:
   * nothing partial is ever committed, and a restart resumes from the last committed position.
   */
  async stop(graceMs = 10000): Promise<void> {
    if (this.stopped) return;
    if (this.atBoundary) return this.finish();
    this.stopRequested = true;
    const timer = setTimeout(() => void this.abandon(), graceMs);
    await this.done.catch(() => undefined).finally(() => clearTimeout(timer));
  }

  /** End now without committing the open target transaction (it holds part of a source transaction). */
  private async abandon(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.rollback();
    await this.close();
    this.resolveDone(this.applied);
  }

  /** No received message waits behind the one in hand (inside a data handler the stream is always "processing"). */
  private nothingQueued(): boolean {
    return !this.svc || this.svc.queued === 0;
  }

  /** Nothing decoded waits to be applied, no target transaction is open and no target query is running. */
  private idle(): boolean {
    return !this.inTarget && !this.inFlight.length && !this.svc?.processing && this.nothingQueued();
  }

  /** Report `lsn` (what the target committed) to the walsender as written, flushed and applied. */
  private async ack(lsn: bigint, ping = false): Promise<void> {
    if (lsn > 0n && this.svc) this.svc.sendStatus(lsn, ping);
  }

  private count(r: Relation, kind: keyof ApplyCounters) {
    // Per change: the "schema.name" key is built once per relation message, not once per change (a measured share of the drain's CPU).
    let key = this.statsKeys.get(r);
    if (key === undefined) this.statsKeys.set(r, key = `${r.schema}.${r.name}`);
    let s = this.stats.get(key);
    if (!s) this.stats.set(key, s = { inserts: 0, updates: 0, deletes: 0, truncates: 0 });
    s[kind]++;
  }

  /**
   * Queue a simple-protocol query on the target without waiting for it. A failure marks the session
   * broken (checked before anything is acknowledged) and stops it.
   */
  private send(sql: string, params?: unknown[], check?: (res: QueryResult | QueryResult[]) => void): Promise<QueryResult | QueryResult[]> {
    // Chained rather than handed to pg's own queue (deprecated in pg 8, gone in 9); same order, same effect.
    const c = this.target!;
    const prev = this.inFlight[this.inFlight.length - 1];
    // Once a query failed or a result check found a divergence, nothing more is sent (above all not the
    // COMMIT queued behind it): the session rolls back and stops. The check runs before the next query starts.
    const run = async () => {
      if (this.broken) throw this.broken;
      const res = await (c.query(sql, params) as unknown as Promise<QueryResult | QueryResult[]>);
      try { check?.(res); } catch (e) { this.broken ??= e; throw e; }
      return res;
    };
    const p = prev ? prev.then(run, run) : run();
    this.inFlight.push(p);
    p.then(() => undefined, (e) => { this.broken ??= e; void this.fail(e); })
      .finally(() => { this.inFlight.shift(); this.maybeCommitIdle(); });
    return p;
  }

  /** Wait until at most `max` target queries are queued; throw if one of them failed. */
  private async settle(max: number): Promise<void> {
    while (this.inFlight.length > max) await this.inFlight[this.inFlight.length - max - 1].catch(() => undefined);
    if (this.broken) throw this.broken;
  }

  /**
   * The target went idle at a transaction boundary with nothing more decoded: commit now instead of
   * waiting for more source transactions (keeps lag low when the stream is quiet).
   */
  private maybeCommitIdle(): void {
    if (this.stopped || this.finishing || this.inFlight.length || !this.inTarget || !this.atBoundary || !this.nothingQueued()) return;
    this.commitTarget();
  }

  /** Add a row change to the open batch; a promise (to await) only when the batch was full and went to the target. */
  private queueRow(m: RowChange): Promise<void> | undefined {
    if (this.skipping) return;
    // --ddl replicate: a row of the migration's DDL log is a DDL statement captured at this place (../ddl/capture.ts).
    if (m.relation.schema === CONTROL_SCHEMA && m.relation.name === ddlLogTableName(this.o.migration)) {
      if (m.tag !== "insert") return undefined;
      const row = parseLogRow(m.new.payload ?? "");
      return "kind" in row && row.kind === "after-backfill" ? this.applyAfterBackfill(row) : this.applyDdl(row as DdlPayload);
    }
    this.pending.push(m);
    this.count(m.relation, m.tag === "insert" ? "inserts" : m.tag === "update" ? "updates" : "deletes");
    this.changes++;
    if (this.pending.length >= 2000) {
      this.flush();
      if (this.broken || this.inFlight.length > MAX_IN_FLIGHT) return this.settle(MAX_IN_FLIGHT);
    }
    return;
  }

  /** Handle decoded changes from `from` on, in order; a promise only once one of them must be awaited. Errors end the session (fail). */
  private applyChanges(changes: Change[], from: number): Promise<void> | void {
    for (let n = from; n < changes.length; n++) {
      let wait: Promise<void> | void;
      try { wait = this.handle(changes[n]); } catch (e) { return this.fail(e); }
      if (wait) return wait.then(() => this.applyChanges(changes, n + 1), (e) => this.fail(e));
    }
  }

  /** One change; a promise only when it must be awaited (synchronous otherwise: see onData). */
  private handle(m: Change): Promise<void> | void {
    switch (m.tag) {
      case "insert": case "update": case "delete":
        return this.queueRow(m);
      case "begin":
        // Already applied before a restart (crash between target COMMIT and ack): skip the whole transaction.
        this.skipping = !this.beyondApplied && lsnToBigInt(m.commitLsn ?? "0/0") < this.applied;
        if (!this.skipping) this.beyondApplied = true;
        this.atBoundary = false;
        if (!this.skipping && !this.inTarget) { this.send("BEGIN"); this.inTarget = true; }
        return;
      case "truncate":
        if (this.skipping) return;
        this.flush();
        // The message already lists every table the source's CASCADE reached: no CASCADE here.
        this.send(`TRUNCATE ${m.relations.map(tableOf).join(", ")}${m.restartIdentity ? " RESTART IDENTITY" : ""}`);
        m.relations.forEach((r) => this.count(r, "truncates"));
        this.changes++;
        return;
      case "commit": {
        this.atBoundary = true;
        if (this.skipping) { this.skipping = false; return; }
        this.pendingLsnText = m.commitEndLsn;
        const atFence = (this.o.until !== undefined && this.pendingLsn >= this.o.until) || this.stopRequested;
        // Several source transactions share a target transaction while the target is busy or more are
        // decoded; commit when the batch is big, at the fence, or when the target has nothing to do.
        if (this.statements + this.pending.length >= (this.o.batchStatements ?? 5000) || atFence) {
          this.commitTarget();
          if (atFence) return this.settle(MAX_IN_FLIGHT).then(() => this.finish());
          if (this.broken || this.inFlight.length > MAX_IN_FLIGHT) return this.settle(MAX_IN_FLIGHT);
        } else if (!this.inFlight.length) {
          // Messages are handled synchronously as they are parsed, so the rest of the socket's read is not queued yet:
          // decide once it is handled (a microtask runs after it), committing only if nothing more came.
          this.scheduleIdleCommit();
        }
        return;
      }
      case "relation":
        return this.onRelation(m);
      default:
        return;
    }
  }

  /** At most one pending idle-commit check (see handle: commit). */
  private idleCheck = false;
  private scheduleIdleCommit(): void {
    if (this.idleCheck) return;
    this.idleCheck = true;
    queueMicrotask(() => { this.idleCheck = false; this.maybeCommitIdle(); });
  }

  private async onRelation(m: ChangeRelation): Promise<void> {
    this.flush(); // a changed relation (new columns, new replica identity) applies to what follows
    await this.readMeta(tableOf(m));
    if (this.broken) throw this.broken;
  }

  /** Column types, identity columns and the distribution column of a target table, read now; returns how many columns it has. */
  private async readMeta(table: string): Promise<number> {
    // eq: the column's type (a domain's base type) has a default btree opclass of its own, so `=` exists and an
    // index can serve REPLICA IDENTITY FULL lookups (arrays are left to the text comparison: their `=` needs the element's).
    const r = await this.send(`SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attidentity = 'a' AS always,
        EXISTS (SELECT 1 FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod JOIN pg_type bt ON bt.oid = b.base
          WHERE am.amname = 'btree' AND oc.opcdefault AND (oc.opcintype = b.base OR (oc.opcintype = 'anyenum'::regtype AND bt.typtype = 'e')
            OR EXISTS (SELECT 1 FROM pg_cast ca WHERE ca.castsource = b.base AND ca.casttarget = oc.opcintype AND ca.castmethod = 'b'))) AS eq
      FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
      CROSS JOIN LATERAL (SELECT CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END AS base) b
      WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`, [table]) as QueryResult;
    this.meta.set(table, { types: new Map(r.rows.map((x) => [x.attname, x.type])),
      alwaysIdentity: new Set(r.rows.filter((x) => x.always).map((x) => x.attname)),
      columns: new Map(r.rows.map((x) => [x.attname, { type: x.type, eq: x.eq }])),
      moveOnChange: new Set(this.distributionColumns.has(table) ? [this.distributionColumns.get(table)!] : []) });
    // Triggers and rules that fire under session_replication_role = replica, on the table or (written through a
    // partitioned root) any of its partitions: their tables keep the source's order of changes (batchSql).
    // Its ancestors too: before PostgreSQL 15 a partition's clone of its parent's trigger is marked internal. (Both functions
    // list nothing for a table outside a partition tree: the table itself is added.)
    const order = await this.send(`WITH rels AS (SELECT to_regclass($1) AS relid UNION SELECT relid FROM pg_partition_tree(to_regclass($1))
        UNION SELECT relid FROM pg_partition_ancestors(to_regclass($1)))
      SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid IN (SELECT relid FROM rels) AND NOT tgisinternal AND tgenabled IN ('A', 'R'))
        OR EXISTS (SELECT 1 FROM pg_rewrite WHERE ev_class IN (SELECT relid FROM rels) AND rulename <> '_RETURN' AND ev_enabled IN ('A', 'R'))
        AS observes`, [table]) as QueryResult;
    this.meta.get(table)!.observesOrder = order.rows[0]?.observes === true;
    return r.rows.length;
  }

  /**
   * A DDL command captured on the source (--ddl replicate), at its place: a barrier. Every change before it is
   * sent and has executed (in the open target transaction, in order) before it runs, and nothing after it is
   * decoded until it has: the stream stays paused meanwhile (flow control). It runs in the same target transaction
   * as the changes around it, so a crash before the COMMIT replays the whole source transaction, DDL included
   * (exactly once). A statement that cannot be carried (../ddl/statement.ts) or that the target refuses stops the
   * session before it, with a named error (status shows it; cutover refuses while it is recorded).
   */
  private async applyDdl(parsed: DdlPayload): Promise<void> {
    const stmt = ddlToApply(parsed);
    if (stmt.leftOut) return; // on tables the selection leaves out: not on the target (status and cutover name new ones)
    await this.barrier(async (c) => {
      // The source session's search_path: the text may name objects unqualified. Transaction-local, reset right after.
      await c.query(`SELECT pg_catalog.set_config('search_path', $1, true)`, [stmt.searchPath]);
      await c.query(stmt.sql);
      await c.query(`RESET search_path`);
      // The objects it made get their source owners, in this transaction (../ddl/owners.ts); a role the target lacks stops here (ddl_owner).
      await applyOwners(c, parsed.owners, stmt.summary, parsed.ownersError);
      // A column added with a non-immutable default: its source values follow as the backfill's UPDATEs, which must be able
      // to set an identity GENERATED ALWAYS column (UPDATE has no OVERRIDING clause): BY DEFAULT until the after-backfill row.
      for (const sql of beforeBackfillSql(parsed)) await c.query(sql);
      // The source's undo of the FULL identity the trigger set on a new key-less table, in this transaction (exactly once).
      if (Array.isArray(parsed.identityFull) && parsed.identityFull.length) {
        await recordIdentitySetByCapture(c, this.o.migration, parsed.identityFull);
      }
    }, (e) => `DDL replication stopped: the target refused the source's statement "${stmt.summary}": ` +
      `${e.message}. Nothing from its source transaction or after it was applied or acknowledged. Fix: make the target accept ` +
      `it (e.g. create what it names as missing, or repair what it conflicts with), then run the agent again (it retries the statement); ` +
      `or run pgferry cleanup and start again`);
  }

  /**
   * The capture's row after a backfill (../ddl/capture.ts): the source's values of the new columns are in (the backfill's
   * UPDATEs, sent and executed before it, in this transaction); put back GENERATED ALWAYS and the owned sequences'
   * position. A barrier like a DDL; a backfill the source could not run stops the session here (ddl_volatile_default),
   * so nothing of its source transaction is committed.
   */
  private async applyAfterBackfill(row: AfterBackfill): Promise<void> {
    const statements = afterBackfillSql(row);
    await this.barrier(async (c) => { for (const sql of statements) await c.query(sql); },
      (e) => `DDL replication stopped: the target refused to complete the backfill of ${row.table} ` +
        `(${row.columns.join(", ")}): ${e.message}. Nothing from its source transaction or after it was applied or acknowledged. ` +
        `Fix: make the target accept it, then run the agent again (it retries); or run pgferry cleanup and start again`);
  }

  /**
   * Run schema statements at their place in the open target transaction: every change before them sent and executed
   * first, nothing after them decoded meanwhile (flow control). A refusal stops the session (ddl_failed, `why`). The
   * cached column metadata of every table is read again afterwards (not every DDL re-announces the relations it changed).
   */
  private async barrier(run: (c: Client) => Promise<void>, why: (e: Error) => string): Promise<void> {
    this.flush();
    await this.settle(0);
    try {
      await run(this.target!);
    } catch (e) {
      // A refusal named by its own code (ddl_owner) keeps it; anything else the target said is ddl_failed.
      const err = e instanceof PgferryError && e.code === "ddl_owner" ? e : new PgferryError("ddl_failed", why(e as Error));
      this.broken ??= err;
      throw err;
    }
    for (const table of [...this.meta.keys()]) if (!(await this.readMeta(table))) this.meta.delete(table); // dropped or renamed
    await this.settle(0);
    this.changes++;
  }

  /** Queue the pending row changes as merged statements (one simple query). */
  private flush(): void {
    if (!this.pending.length) return;
    const batch = batchSql(this.target!, this.pending, (t) => this.meta.get(t));
    this.statements += this.pending.length;
    this.pending = [];
    // Every UPDATE/DELETE must touch exactly its row(s); anything else stops the session (DivergenceError),
    // checked before the transaction's COMMIT can be sent.
    this.send(batch.map((b) => b.sql).join(";\n"), undefined, (res) => {
      const results = Array.isArray(res) ? res : [res];
      results.forEach((r, n) => { if (batch[n]) checkStatement(batch[n], r.rowCount, r.rows); });
    }).catch(() => undefined);
  }

  /**
   * Queue the commit of the open target transaction, with the applied position and counters in it;
   * once the target answers COMMIT (not ROLLBACK: a transaction aborted by an earlier error answers
   * COMMIT with ROLLBACK), the position counts as applied and is acknowledged.
   */
  private commitTarget(): void {
    if (!this.inTarget) return;
    this.flush();
    const lsn = this.pendingLsn;
    const stats = [...this.stats];
    // A commit clears the failure recorded by an earlier session (the change it stopped at applied now).
    const sql = appliedPositionSql(lit, this.o.migration, lsn, stats);
    sql.push("COMMIT");
    this.stats.clear();
    this.inTarget = false;
    this.statements = 0;
    this.send(sql.join(";\n")).then((res) => {
      const last = Array.isArray(res) ? res[res.length - 1] : res;
      if (last.command !== "COMMIT") {
        this.broken ??= new Error("the target rolled back a transaction of changes (an earlier statement in it failed)");
        void this.fail(this.broken);
        return;
      }
      if (this.broken || lsn <= this.applied) return;
      this.applied = lsn;
      this.o.onApplied?.(lsn);
      void this.ack(lsn);
    }, () => undefined);
  }

  private async storeApplied(lsn: bigint): Promise<void> {
    const q = storeAppliedQuery(this.o.migration, lsn);
    await this.send(q.text, q.values);
    this.applied = lsn;
    this.beyondApplied = false; // compared again from the next BEGIN (only our own commits are known to lie behind what follows)
  }

  /** Commit what is open, wait for every queued statement, then end the session. */
  private async finish(): Promise<void> {
    if (this.stopped || this.finishing) return;
    this.finishing = true; // messages decoded from here on are neither applied nor acknowledged
    try {
      this.commitTarget();
      await this.settle(0);
    } catch (e) {
      await this.fail(e);
      return;
    }
    if (this.stopped) return;
    this.stopped = true;
    await this.close();
    this.resolveDone(this.applied);
  }

  private async fail(e: unknown): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.rollback();
    const err = e instanceof PgferryError ? e : SLOT_LOST_PATTERN.test((e as Error).message ?? "") ? slotLostError(this.o.migration, this.o.slot)
      : (e as { code?: string }).code === "53100" ? new PgferryError("disk_full", `the target's disk is full: ${(e as Error).message}. Nothing ` +
        `after the last committed change was applied or acknowledged; the slot is kept, so the source retains WAL meanwhile (up to ` +
        `max_slot_wal_keep_size). Fix: free or add space on the target; the agent retries and resumes where it stopped`)
      : new PgferryError("apply_failed", `stream apply stopped: ${(e as Error).message ?? e}`);
    // A slot still held (55006: our previous walsender is still ending, or another consumer has it) is no apply
    // error: recording it would hide the error that made the agent reconnect, which status and cutover must show.
    const slotBusy = (e as { code?: string }).code === "55006" || /replication slot .* is active for PID/.test(err.message);
    if (!slotBusy) await this.recordError(err);
    await this.close();
    this.rejectDone(err);
  }

  /**
   * The failure, on the target's record (after the rollback, outside any change transaction), so `status`
   * and `cutover` show it — whoever ran the applier. The next target commit clears it. Best effort: the
   * target may be the thing that failed.
   */
  private async recordError(err: PgferryError): Promise<void> {
    const c = this.target;
    if (!c) return;
    const value: ApplyError = { kind: err instanceof DivergenceError ? "divergence" : "error", code: err.code, message: err.message,
      at: new Date().toISOString(), appliedLsn: bigIntToLsn(this.applied) };
    await recordApplyError(c, this.o.migration, value).catch(() => undefined);
  }

  /** Roll back the open target transaction once every queued statement has settled. */
  private async rollback(): Promise<void> {
    if (!this.target) return;
    await Promise.all(this.inFlight.map((p) => p.catch(() => undefined)));
    await this.target.query("ROLLBACK").catch(() => undefined);
  }

  private async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.watchdog) clearInterval(this.watchdog);
    this.unwatchTarget?.();
    // Bounded: a stalled peer never acknowledges a polite end; then the socket is cut.
    await this.svc?.close();
    await endClient(this.target);
    await this.decoder?.close();
  }
}
