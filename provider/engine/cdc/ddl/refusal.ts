/**
 * `--ddl replicate` in subscription mode: the refusal of a captured DDL, kept where status and cutover can read it.
 *
 * The target's trigger (./targetApply.ts) refuses a statement by raising inside the apply worker's transaction: the
 * worker stops before it and retries that transaction, and PostgreSQL keeps the error's text only in the target's
 * server log (pg_stat_subscription_stats counts errors, nothing more). The raise rolls back every table write of the
 * transaction, so the trigger records the refusal in a per-migration sequence instead: setval() is not transactional.
 * Its value encodes the log row's id, the refusal's code and the SQLSTATE of a statement the target refused:
 *   id × 2^32 + SQLSTATE (base 36, < 36^5) × 16 + code number.
 * status and cutover read it back, take the statement from the SOURCE's log row of that id (the target's copy never
 * got it) and name the code, the statement and the fix, as stream mode does with its recorded apply error.
 * A refusal is current while the target's log holds no row with that id or a later one: a statement the target
 * refused (ddl_failed) and accepts on a retry of the worker (once the user created what it lacked) clears it by itself.
 */
import { Client } from "pg";
import { CONTROL_SCHEMA } from "../../catalog/catalog";
import { quoteIdent, quoteLiteral } from "../../core/endpoint";
import { ERROR_CODES, ErrorCode, PgferryError } from "../../core/errors";
import { ddlLogTableName } from "./capture";
import { ownerProblemNow } from "./owners";
import { ddlToApply, parseDdlPayload } from "./statement";

/** Code numbers stored in the sequence (0: none). Anything else the trigger raises counts as the target refusing the statement. */
const CODES = ["", "ddl_multi_statement", "ddl_not_top_level", "ddl_unsupported", "ddl_volatile_default", "ddl_failed", "ddl_owner", "ddl_selection"] as const;
const ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

const S = quoteIdent(CONTROL_SCHEMA);
const info = (c: ErrorCode) => ERROR_CODES[c] as { meaning: string; fix?: string };

export function refusalSequence(migration: string): string { return `${S}.${quoteIdent(`ddl_refused_${migration}`)}`; }

/** The target's sequence (created with the target's log table; not called until a refusal). */
export function refusalSequenceSql(migration: string): string {
  return `CREATE SEQUENCE IF NOT EXISTS ${refusalSequence(migration)} MINVALUE 0 START 0`;
}

/**
 * The exception clause closing the target trigger function's body: records the refusal, then raises it again (the
 * worker's transaction aborts as before). Runs under search_path pg_catalog, pg_temp (the function's setting).
 */
export function refusalHandlerSql(migration: string): string {
  const seq = quoteLiteral(refusalSequence(migration));
  const codes = CODES.map((c, i) => ({ c, i })).filter(({ c }) => c && c !== "ddl_failed")
    .map(({ c, i }) => `WHEN SQLERRM LIKE ${quoteLiteral(`${c.replace(/_/g, "\\_")}:%`)} THEN ${i}`).join(" ");
  return `EXCEPTION WHEN OTHERS THEN
  -- Recorded outside the transaction the raise rolls back (setval is not transactional): status and cutover name it (./refusal.ts).
  IF to_regclass(${seq}) IS NOT NULL THEN
    PERFORM setval(${seq}, NEW.id * 4294967296
      + (SELECT sum((strpos(${quoteLiteral(ALPHABET)}, substr(SQLSTATE, k, 1)) - 1) * (36::numeric ^ (5 - k)))::bigint FROM generate_series(1, 5) k) * 16
      + CASE ${codes} ELSE 5 END, true);
  END IF;
  RAISE;`;
}

export interface DdlRefusal {
  code: ErrorCode;
  /** The source's DDL log row the subscription stopped at. */
  logId: string;
  /** For ddl_failed: the SQLSTATE of the target's error. */
  sqlstate?: string;
  /** The source's statement (when the source was readable). */
  statement?: string;
  /** Code, statement and fix, in the words stream mode uses. */
  message: string;
}

/**
 * The refusal the subscription is stopped at, or undefined (none recorded, one the worker has since got past, or no
 * sequence: stream mode, --ddl detect, a migration started by an older pgferry). `src` gives the statement's text.
 */
export async function readDdlRefusal(tgt: Client, src: Client | undefined, migration: string,
  { reproduce = false }: { reproduce?: boolean } = {}): Promise<DdlRefusal | undefined> {
  const seq = refusalSequence(migration);
  const exists = await tgt.query(`SELECT to_regclass($1) IS NOT NULL AS e, to_regclass($2) IS NOT NULL AS l`,
    [seq, `${S}.${quoteIdent(ddlLogTableName(migration))}`]);
  if (!exists.rows[0].e || !exists.rows[0].l) return undefined;
  const v = (await tgt.query(`SELECT last_value::text AS v, is_called FROM ${seq}`)).rows[0];
  if (!v?.is_called) return undefined;
  const value = BigInt(v.v);
  const id = value >> 32n;
  const low = Number(value & 0xffffffffn);
  const code = CODES[low % 16] || "ddl_failed";
  let state = Math.floor(low / 16);
  let sqlstate = "";
  for (let k = 0; k < 5; k++) { sqlstate = ALPHABET[state % 36] + sqlstate; state = Math.floor(state / 36); }
  const passed = await tgt.query(`SELECT EXISTS (SELECT 1 FROM ${S}.${quoteIdent(ddlLogTableName(migration))} WHERE id >= $1) AS p`, [id.toString()]);
  if (passed.rows[0].p) return undefined;
  let payload: string | undefined;
  if (src) {
    payload = await src.query(`SELECT payload FROM ${S}.${quoteIdent(ddlLogTableName(migration))} WHERE id = $1`, [id.toString()])
      .then((r) => r.rows[0]?.payload as string | undefined, () => undefined);
  }
  const refusal = describe(code, id.toString(), code === "ddl_failed" ? sqlstate : undefined, payload);
  if (code === "ddl_owner" && payload) {
    // The role, the object and the fix, as the trigger raised them (its text is only in the target's server log).
    let p: ReturnType<typeof parseDdlPayload> | undefined;
    try { p = parseDdlPayload(payload); } catch { p = undefined; }
    const now = p && await ownerProblemNow(tgt, p.owners, p.sql.replace(/\s+/g, " ").trim().slice(0, 200), p.ownersError);
    if (now) refusal.message = `${now} ${WHERE}`;
  }
  if (reproduce && code === "ddl_failed" && payload) {
    const why = await targetErrorNow(tgt, payload);
    if (why) refusal.message = refusal.message.replace("its message is in the target's server log, lines \"logical replication\" … \"ERROR\"",
      `the target says now: ${why}`);
  }
  return refusal;
}

/**
 * The target's error for a statement it refused, by running it again in a transaction that is always rolled back (the
 * cutover's check, before anything is frozen; status stays read-only). Bounded by lock and statement timeouts; undefined
 * when the target accepts it now (the apply worker's next retry applies it) or it cannot be judged.
 */
async function targetErrorNow(tgt: Client, payloadText: string): Promise<string | undefined> {
  let stmt: ReturnType<typeof ddlToApply>;
  try { stmt = ddlToApply(parseDdlPayload(payloadText)); } catch { return undefined; }
  if (stmt.leftOut) return undefined;
  await tgt.query("BEGIN");
  try {
    await tgt.query(`SET LOCAL lock_timeout = '2s'; SET LOCAL statement_timeout = '10s'`);
    await tgt.query(`SELECT pg_catalog.set_config('search_path', $1, true)`, [stmt.searchPath]);
    await tgt.query(stmt.sql);
    return undefined;
  } catch (e) {
    return (e as Error).message;
  } finally {
    await tgt.query("ROLLBACK").catch(() => undefined);
  }
}

const WHERE = `(the subscription's apply worker stops before it and retries that transaction; PostgreSQL keeps the error's text only ` +
  `in the target's server log)`;

function describe(code: ErrorCode, logId: string, sqlstate: string | undefined, payloadText: string | undefined): DdlRefusal {
  const where = WHERE;
  if (!payloadText) {
    return { code, logId, sqlstate, message: `DDL replication stopped before the source's DDL log row ${logId} (${code}: ${info(code).meaning}` +
      `${sqlstate ? `; the target's error has SQLSTATE ${sqlstate}` : ""}) ${where}; the statement is in the source's log (pgferry status with ` +
      `the source names it). Fix: ${info(code).fix}` };
  }
  let statement: string;
  let p: ReturnType<typeof parseDdlPayload>;
  try { p = parseDdlPayload(payloadText); statement = p.sql; } catch (e) {
    return { code, logId, sqlstate, message: `${(e as Error).message} (source DDL log row ${logId})` };
  }
  const summary = statement.replace(/\s+/g, " ").trim().slice(0, 200);
  if (code !== "ddl_failed") {
    // The same judgement as stream mode's (./statement.ts), so the same words; the trigger's port decided the same.
    try { ddlToApply(p); } catch (e) {
      if (e instanceof PgferryError && e.code === code) return { code, logId, statement, message: `${e.message} ${where}` };
    }
  }
  if (code === "ddl_unsupported") {
    // Judged on the target only: a key-less new table (REPLICA IDENTITY FULL) with a column type without equality.
    const tables = (p.identityFull ?? []).map((t) => `${t.schema}.${t.name}`).join(", ");
    return { code, logId, statement, message: `DDL replication stopped before the source's query "${summary}": it creates a table without a ` +
      `key${tables ? ` (${tables}, REPLICA IDENTITY FULL on the source)` : ""} with column(s) whose type has no equality, which the subscription ` +
      `cannot match rows by; nothing from it or after it was applied ${where}. Fix: run pgferry cleanup and start again; give the table a ` +
      `primary key, or use --mode stream` };
  }
  if (code === "ddl_failed") {
    return { code, logId, sqlstate, statement, message: `DDL replication stopped: the target refused the source's statement "${summary}" ` +
      `(SQLSTATE ${sqlstate}; its message is in the target's server log, lines "logical replication" … "ERROR") ${where}. Nothing from its ` +
      `source transaction or after it was applied. Fix: make the target accept it (e.g. create the role or object it names as missing); the ` +
      `apply worker retries it by itself and goes on; or run pgferry cleanup and start again` };
  }
  return { code, logId, statement, message: `DDL replication stopped before the source's query "${summary}" (${code}: ${info(code).meaning}) ` +
    `${where}. Fix: ${info(code).fix}` };
}
