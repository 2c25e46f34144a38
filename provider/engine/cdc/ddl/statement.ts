/**
 * `--ddl replicate`, the apply half's judgement: from a captured DDL statement (a row of ./capture.ts's log) to the one statement
 * the target runs, or a named refusal. The trigger captures current_query(), the client's whole query string;
 * it is replayed only when it is exactly one top-level DDL statement whose replay gives the target what the
 * source got. Everything else stops the stream BEFORE the statement is applied (nothing after it is applied or
 * acknowledged), with an error naming the command and the fix (docs/ddl.md lists the cases):
 *  - several statements in one query string (psql -c "ALTER …; UPDATE …", a migration tool's batch): replaying the
 *    string would also replay its DML, whose rows already arrive through the slot → ddl_multi_statement;
 *  - DDL run inside a function, DO block or procedure (the query string is the call): → ddl_not_top_level;
 *  - CREATE TABLE AS / SELECT INTO (its rows are not in the stream: the table is published after they were
 *    written) → ddl_unsupported;
 *  - ADD COLUMN with a default that is not immutable (now(), random(), nextval(), serial, identity) is carried when the
 *    capture backfilled it (its UPDATE of every row follows the statement in the stream, then an `after-backfill` row:
 *    ./capture.ts); the target first computes its own values, which the backfill overwrites. When the capture could not
 *    backfill (a table without a key, …) the statement is refused → ddl_volatile_default, with the capture's reason.
 * CONCURRENTLY is dropped from CREATE/DROP INDEX and REINDEX: it cannot run inside the transaction the applier
 * keeps the statement in (exactly once), and the target has no other writers to spare from a lock.
 */
import { quoteIdent, quoteLiteral } from "../../core/endpoint";
import { PgferryError } from "../../core/errors";
import { DdlOwner } from "./owners";

export interface DdlPayload {
  v: number;
  /** current_query() on the source: the client's whole query string. */
  sql: string;
  /** The commands the statement ran on objects of the migrated schemas (empty for a pure DROP). */
  commands: { tag: string; type: string; identity: string }[];
  /** The source session's search_path when it ran (unqualified names resolve the same on the target). */
  searchPath: string;
  /** Columns added in the transaction whose default is not immutable. */
  nonConstantDefaults: string[];
  dropped?: boolean;
  /** Tables the statement created without a key, which the trigger gave REPLICA IDENTITY FULL (not replayed on the target). */
  identityFull?: { schema: string; name: string }[];
  /**
   * Per table, the columns with a non-immutable default or identity this statement added, and whether the capture
   * backfilled them (reason null: their source values follow as row changes) or why not. Absent from older captures.
   */
  volatile?: VolatileColumns[];
  /** The source owners of the objects the statement listed, when the migration keeps ownership (./owners.ts). Absent from older captures. */
  owners?: DdlOwner[];
  /** Why the capture could not record them (the target refuses the statement: ddl_owner). */
  ownersError?: string | null;
  /**
   * Start's --include/--exclude applied by the capture to the tables the statement touches (./capture.ts): "skip" when
   * they are all tables the migration leaves out (the target has none of them: nothing to run; `created` lists new ones),
   * "refuse" when the statement moves a table across the selection (the reason names it). Absent: carried as usual.
   */
  selection?: { action: "skip"; tables: string[]; created: { oid: string; table: string }[] } | { action: "refuse"; reason: string };
}

export interface VolatileColumns {
  /** The table, schema-qualified and quoted (regclass text on the source). */
  table: string;
  columns: string[];
  /** Those that are GENERATED ALWAYS AS IDENTITY: BY DEFAULT on the target until the backfill's values are in. */
  always: string[];
  /** Why the capture did not backfill (the statement is refused), or null. */
  reason: string | null;
}

/**
 * The capture's second row for a backfilled table, after the backfill's row changes: what the target puts in place
 * once the source's values are in (GENERATED ALWAYS back, the owned sequences' position), or the backfill's error.
 */
export interface AfterBackfill {
  v: number;
  kind: "after-backfill";
  table: string;
  columns: string[];
  always: string[];
  sequences: { column: string; lastValue: string; isCalled: boolean }[];
  error: string | null;
}

/**
 * The statement to run on the target, with the search_path to run it under; `leftOut`: nothing to run, the statement
 * touches only tables the migration's selection leaves out (they are not on the target).
 */
export interface DdlToApply { sql: string; searchPath: string; summary: string; leftOut?: string[] }

/** A row of the capture's log: a DDL statement, or what follows a backfill. */
export function parseLogRow(text: string): DdlPayload | AfterBackfill {
  let p: { kind?: unknown };
  try {
    p = JSON.parse(text);
  } catch {
    return parseDdlPayload(text); // names the problem
  }
  if (p?.kind === "after-backfill") return parseAfterBackfill(p);
  return parseDdlPayload(text);
}

function parseAfterBackfill(p: Record<string, unknown>): AfterBackfill {
  const strings = (x: unknown) => Array.isArray(x) && x.every((e) => typeof e === "string");
  const seqs = p.sequences;
  if (typeof p.table !== "string" || !strings(p.columns) || !strings(p.always) || !Array.isArray(seqs)
    || !seqs.every((q) => typeof q?.column === "string" && typeof q?.lastValue === "string" && /^-?\d+$/.test(q.lastValue) && typeof q?.isCalled === "boolean")) {
    throw new PgferryError("ddl_failed", `a captured backfill row lacks table, columns, always or sequences; nothing from it was applied. Fix: ` +
      `run pgferry cleanup and start again (the capture is re-installed), and report the row`);
  }
  return { v: 1, kind: "after-backfill", table: p.table, columns: p.columns as string[], always: p.always as string[],
    sequences: seqs as AfterBackfill["sequences"], error: typeof p.error === "string" ? p.error : null };
}

/**
 * What the target runs once the backfill's values are in, or the refusal when the source's backfill failed (its
 * statement and rows are in the same open transaction: the refusal rolls them back, nothing of it is applied).
 */
export function afterBackfillSql(a: AfterBackfill): string[] {
  if (a.error !== null) {
    throw new PgferryError("ddl_volatile_default", `DDL replication stopped: the source could not backfill ${a.table} (column(s) ` +
      `${a.columns.join(", ")}, added with a default that is not immutable): ${a.error}. Nothing from its source transaction or after it was ` +
      `applied. Fix: run pgferry cleanup and start again (the load copies the column's values)`);
  }
  return [
    ...a.always.map((c) => `ALTER TABLE ${a.table} ALTER COLUMN ${quoteIdent(c)} SET GENERATED ALWAYS`),
    ...a.sequences.map((q) => `SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence(${quoteLiteral(a.table)}, ${quoteLiteral(q.column)}), ` +
      `${q.lastValue}, ${q.isCalled})`),
  ];
}

/** The target's columns GENERATED ALWAYS AS IDENTITY that a backfill must be able to set: BY DEFAULT until its after-backfill row. */
export function beforeBackfillSql(p: DdlPayload): string[] {
  return (p.volatile ?? []).filter((v) => v.reason === null)
    .flatMap((v) => v.always.map((c) => `ALTER TABLE ${v.table} ALTER COLUMN ${quoteIdent(c)} SET GENERATED BY DEFAULT`));
}

export function parseDdlPayload(text: string): DdlPayload {
  let p: DdlPayload;
  try {
    p = JSON.parse(text);
  } catch (e) {
    throw new PgferryError("ddl_failed", `a captured DDL message is not JSON (${(e as Error).message}); nothing from it was applied. Fix: run ` +
      `pgferry cleanup and start again, and report the message`);
  }
  if (typeof p?.sql !== "string" || !Array.isArray(p.commands) || typeof p.searchPath !== "string") {
    throw new PgferryError("ddl_failed", `a captured DDL message lacks sql, commands or searchPath; nothing from it was applied. Fix: run ` +
      `pgferry cleanup and start again (the capture is re-installed), and report the message`);
  }
  return { ...p, nonConstantDefaults: Array.isArray(p.nonConstantDefaults) ? p.nonConstantDefaults : [] };
}

/**
 * The statements of a query string, split at top-level semicolons (quotes, E'' strings, quoted identifiers,
 * dollar quotes, line and nested block comments respected), each without its comments' leading whitespace;
 * empty ones (a trailing semicolon) left out. `code` is the statement with comments blanked (for keyword checks).
 */
export function splitStatements(sql: string): { text: string; code: string }[] {
  const out: { text: string; code: string }[] = [];
  let start = 0;
  let code = "";
  const push = (end: number) => {
    const text = sql.slice(start, end).trim();
    if (code.trim()) out.push({ text, code: code.trim() });
    code = "";
  };
  let i = 0;
  while (i < sql.length) {
    const ch = sql[i];
    const next = sql[i + 1];
    if (ch === "-" && next === "-") {
      const e = sql.indexOf("\n", i);
      const end = e < 0 ? sql.length : e;
      code += " ";
      i = end;
    } else if (ch === "/" && next === "*") {
      let depth = 1;
      i += 2;
      while (i < sql.length && depth > 0) {
        if (sql[i] === "/" && sql[i + 1] === "*") { depth++; i += 2; } else if (sql[i] === "*" && sql[i + 1] === "/") { depth--; i += 2; } else i++;
      }
      code += " ";
    } else if (ch === "'") {
      const escapes = /[eE]$/.test(sql.slice(Math.max(0, i - 1), i)) && !/[A-Za-z0-9_$]/.test(sql[i - 2] ?? " ");
      let j = i + 1;
      for (; j < sql.length; j++) {
        if (escapes && sql[j] === "\\") { j++; continue; }
        if (sql[j] === "'") { if (sql[j + 1] === "'") { j++; continue; } break; }
      }
      code += sql.slice(i, j + 1);
      i = j + 1;
    } else if (ch === '"') {
      let j = i + 1;
      for (; j < sql.length; j++) if (sql[j] === '"') { if (sql[j + 1] === '"') { j++; continue; } break; }
      code += sql.slice(i, j + 1);
      i = j + 1;
    } else if (ch === "$" && !/[A-Za-z0-9_]/.test(sql[i - 1] ?? " ")) {
      const m = /^\$([A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$/.exec(sql.slice(i));
      if (m) {
        const close = sql.indexOf(m[0], i + m[0].length);
        const end = close < 0 ? sql.length : close + m[0].length;
        code += sql.slice(i, end);
        i = end;
      } else { code += ch; i++; }
    } else if (ch === ";") {
      push(i);
      start = i + 1;
      i++;
    } else { code += ch; i++; }
  }
  push(sql.length);
  return out;
}

/** What to do when a DDL moved a table across start's --include/--exclude (ddl_selection). */
export const SELECTION_FIX = `run pgferry cleanup and start again: the selection is judged anew on the source as it is then (name the ` +
  `table in --exclude, or not, as you want it migrated; a partition follows its partitioned table: exclude that to leave it out); ` +
  `while a migration streams, keep such renames and partitions for after the cutover`;

const DDL_VERBS = new Set(["CREATE", "ALTER", "DROP", "COMMENT", "GRANT", "REVOKE", "REFRESH", "REINDEX", "SECURITY", "IMPORT"]);

const one = (s: string) => s.replace(/\s+/g, " ").trim();
const shortened = (s: string) => { const t = one(s); return t.length > 200 ? `${t.slice(0, 200)}…` : t; };

/** The column named in an ADD [COLUMN] [IF NOT EXISTS] clause of this statement's code. */
function addsColumn(code: string, column: string): boolean {
  const esc = (x: string) => x.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const quoted = `"${esc(column.replace(/"/g, '""'))}"`;
  const bare = /^[a-z_][a-z0-9_$]*$/.test(column) ? `|${esc(column)}(?![A-Za-z0-9_$])` : "";
  return new RegExp(`\\bADD\\s+(?:COLUMN\\s+)?(?:IF\\s+NOT\\s+EXISTS\\s+)?(?:${quoted}${bare})`, "i").test(code);
}

/** What the target runs for a captured message, or the named refusal (a PgferryError) that stops the stream before it. */
export function ddlToApply(p: DdlPayload): DdlToApply {
  const stmts = splitStatements(p.sql);
  const summary = shortened(p.sql);
  const tags = [...new Set(p.commands.map((c) => c.tag))];
  const what = tags.length ? tags.join(", ") : "DROP";
  // The table selection first: a statement on left-out tables only is not the target's, whatever its shape.
  if (p.selection?.action === "skip") return { sql: "", searchPath: p.searchPath, summary, leftOut: p.selection.tables };
  if (p.selection?.action === "refuse") {
    throw new PgferryError("ddl_selection", `DDL replication stopped before the source's query "${summary}" (${what}): ${p.selection.reason}. ` +
      `Nothing from it or after it was applied. Fix: ${SELECTION_FIX}`);
  }
  if (stmts.length !== 1) {
    throw new PgferryError("ddl_multi_statement", `DDL replication stopped before the source's query "${summary}" (${what}): it holds ` +
      `${stmts.length} statements in one query string, and replaying it on the target would also repeat its other statements (their row ` +
      `changes already arrive through replication); nothing from it or after it was applied. Fix: run pgferry cleanup and start again ` +
      `(the load copies the source as it is then); from then on, send DDL on migrated schemas as a statement of its own (one statement per ` +
      `query string: psql -f, or one -c per statement)`);
  }
  const s = stmts[0];
  const verb = (/^[A-Za-z]+/.exec(s.code)?.[0] ?? "").toUpperCase();
  if (!DDL_VERBS.has(verb)) {
    throw new PgferryError("ddl_not_top_level", `DDL replication stopped before the source's query "${summary}" (${what}): the DDL ran ` +
      `inside it (a function, DO block, procedure or a statement that is not DDL itself), so replaying the query would run more than the DDL; ` +
      `nothing from it or after it was applied. Fix: run pgferry cleanup and start again; from then on, run DDL on migrated schemas as ` +
      `plain top-level statements while the migration streams`);
  }
  if (tags.includes("CREATE TABLE AS") || tags.includes("SELECT INTO")) {
    throw new PgferryError("ddl_unsupported", `DDL replication stopped before the source's query "${summary}" (${what}): the rows it ` +
      `wrote are not in the stream (the table joins the publication after them) and computing them again on the target may differ; ` +
      `nothing from it or after it was applied. Fix: run pgferry cleanup and start again; from then on, use CREATE TABLE and then ` +
      `INSERT … SELECT (the rows replicate)`);
  }
  // Columns added with a non-immutable default: carried only when the capture backfilled them (their source values follow).
  const backfilled = new Set((p.volatile ?? []).filter((v) => v.reason === null).flatMap((v) => v.columns));
  const volatile = p.nonConstantDefaults.filter((c) => addsColumn(s.code, c) && !backfilled.has(c));
  if (volatile.length) {
    const reasons = [...new Set((p.volatile ?? []).filter((v) => v.reason !== null && v.columns.some((c) => volatile.includes(c))).map((v) => v.reason))];
    throw new PgferryError("ddl_volatile_default", `DDL replication stopped before the source's query "${summary}": it adds column(s) ` +
      `${volatile.join(", ")} with a default that is not immutable (now(), random(), nextval()/serial/identity…), and the source could not ` +
      `send their values as row changes (${reasons.length ? reasons.join("; ") : "the capture found no backfill for them"}); the target ` +
      `would compute other values, so the two would differ silently. Nothing from it or after it was applied. ` +
      `Fix: run pgferry cleanup and start again (the load copies the column's values); from then on, give such a table a primary key ` +
      `before adding such a column, add a unique constraint on it in a statement of its own after it, or add the column without a ` +
      `default, then ALTER COLUMN … SET DEFAULT, and fill the existing rows with UPDATE (those replicate)`);
  }
  // CONCURRENTLY cannot run in a transaction block; the applier keeps the statement in its transaction.
  const lead = s.text.length - s.text.trimStart().length;
  let sql = s.text;
  const conc = /^(\s*(?:CREATE\s+(?:UNIQUE\s+)?INDEX|DROP\s+INDEX|REINDEX\s+(?:\(\s*[^)]*\)\s*)?[A-Za-z]+))\s+CONCURRENTLY\b/i;
  if (conc.test(s.code)) {
    // The statement's text may start with comments: find the keyword in the text itself (comments cannot hold it at this place).
    const at = s.text.search(/\bCONCURRENTLY\b/i);
    if (at >= lead) sql = s.text.slice(0, at) + s.text.slice(at + "CONCURRENTLY".length);
  }
  return { sql, searchPath: p.searchPath, summary };
}
