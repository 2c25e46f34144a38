/**
 * `--ddl replicate` in subscription mode: tables created while streaming join the subscription.
 *
 * The source's capture adds a new table to the publication in its creating transaction, and the target's trigger
 * (./targetApply.ts) creates it inside the apply worker's transaction, at its place. The worker applies changes only
 * for relations of pg_subscription_rel in state ready (or synced up to the change), and skips the rest silently
 * (worker.c, should_apply_changes_for_rel), so the new table's rows are not applied until the subscription lists it.
 * `ALTER SUBSCRIPTION … REFRESH PUBLICATION WITH (copy_data = true)` lists it (state 'i') and starts a tablesync
 * worker: it copies the table at its own slot's snapshot, applies the changes after that snapshot until it meets the
 * apply worker (which then applies only changes committed after the sync's LSN), so rows the apply worker skipped
 * before the refresh are in the copy and none is applied twice — PostgreSQL's own initial sync of a table.
 * REFRESH cannot run in a transaction block (the worker's), so pgferry runs it from outside: the cutover's warm-up
 * (while streaming, so the copy is not downtime) and again after the fence for a table created later (docs/ddl.md).
 */
import { Client } from "pg";
import { quoteIdent } from "../../core/endpoint";
import { PgferryError } from "../../core/errors";

export interface NewTablesState {
  /** Published tables the subscription does not list yet: their rows are not applied until a refresh copies them. */
  unlisted: string[];
  /** Listed but not yet ready (the tablesync worker copies or catches up): name → state letter. */
  syncing: { table: string; state: string }[];
}

/** The source's published tables that the target's subscription does not list, or lists but has not synced yet. */
export async function newTablesState(src: Client, tgt: Client, publication: string, subscription: string): Promise<NewTablesState> {
  const published = (await src.query(`SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) AS t FROM pg_publication_tables
    WHERE pubname = $1`, [publication])).rows.map((x) => x.t as string);
  const listed = new Map((await tgt.query(`SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS t, r.srsubstate::text AS s
    FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid JOIN pg_class c ON c.oid = r.srrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE s.subname = $1 AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`, [subscription]))
    .rows.map((x) => [x.t as string, x.s as string]));
  return {
    unlisted: published.filter((t) => !listed.has(t)).sort(),
    syncing: published.filter((t) => listed.has(t) && listed.get(t) !== "r").map((t) => ({ table: t, state: listed.get(t)! })).sort((a, b) => a.table.localeCompare(b.table)),
  };
}

const STATES: Record<string, string> = { i: "init", d: "copying", f: "copied", s: "synchronized", r: "ready" };

/**
 * Refresh the subscription when the source publishes tables it does not list, then wait (bounded) until every
 * published table is ready. A table published on the source but not yet created on the target (the apply worker has
 * not reached its CREATE TABLE) makes REFRESH fail with undefined_table: retried until the deadline.
 */
export async function syncNewTables(src: Client, tgt: Client, publication: string, subscription: string, timeoutSec: number,
  say: (s: string) => void = () => undefined, frozen = false, check: () => Promise<void> = async () => undefined): Promise<string[]> {
  const nothing = frozen ? "Writes were unfrozen and the migration keeps streaming." : "Nothing was frozen.";
  const deadline = Date.now() + timeoutSec * 1000;
  let st = await newTablesState(src, tgt, publication, subscription);
  const joined = [...st.unlisted, ...st.syncing.map((x) => x.table)];
  let lastError = "";
  while (st.unlisted.length) {
    say(`tables created while streaming join the subscription (copied by PostgreSQL's table synchronisation): ${st.unlisted.join(", ")}`);
    try {
      await tgt.query(`ALTER SUBSCRIPTION ${quoteIdent(subscription)} REFRESH PUBLICATION WITH (copy_data = true)`);
    } catch (e) {
      if ((e as { code?: string }).code !== "42P01") throw e; // the target lacks a published table: the apply worker has not created it yet
      lastError = (e as Error).message;
    }
    st = await newTablesState(src, tgt, publication, subscription);
    if (!st.unlisted.length) break;
    await check(); // a DDL the target refused stops the apply worker before the CREATE TABLE: named now, not at the deadline
    if (Date.now() > deadline) {
      throw new PgferryError("new_table_sync_timeout", `tables created on the source while streaming are not in the subscription ${subscription} after ` +
        `${timeoutSec}s: ${st.unlisted.join(", ")} (${lastError || "REFRESH PUBLICATION did not list them"}); their rows are not applied on the target ` +
        `until it does. Nothing was frozen. Fix: let the subscription catch up (pgferry status shows its apply errors; the target's log names a refused DDL), ` +
        `then run pgferry cutover again, with a larger --timeout if it was still catching up`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  while (st.syncing.length) {
    if (Date.now() > deadline) {
      throw new PgferryError("new_table_sync_timeout", `tables created on the source while streaming are not synchronised by the subscription ${subscription} ` +
        `after ${timeoutSec}s: ${st.syncing.map((x) => `${x.table} (${STATES[x.state] ?? x.state})`).join(", ")}; their rows are not all on the target yet. ` +
        `${nothing} Fix: check the target's log for the tablesync worker's error (free slots and WAL senders on the source, ` +
        `max_sync_workers_per_subscription on the target), then run pgferry cutover again, with a larger --timeout for a big table`);
    }
    await new Promise((r) => setTimeout(r, 300));
    await check(); // the tablesync worker waits for the apply worker, which a refused DDL stops
    st = await newTablesState(src, tgt, publication, subscription);
  }
  return joined;
}
