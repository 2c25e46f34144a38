/**
 * `pgferry agent`: the long-lived stream-mode applier. Applies changes from the slot as they come,
 * reconnects with backoff when either server goes away, stops cleanly (after committing what it
 * holds) when asked, and exits once the migration is cut over. The slot admits one consumer at a
 * time, which is the lock: a second agent (or a cutover draining inline) waits its turn.
 */
import { connect, DEFAULT_STALL_TIMEOUT_SEC, endClient, Endpoint, watchStall } from "../../core/endpoint";
import { PgferryError } from "../../core/errors";
import { objectNames } from "../../core/options";
import { readMigration } from "../../state/state";
import { StreamApplier } from "./stream";

export interface AgentOptions {
  name: string;
  /** Aborting stops the agent after the transaction in hand is committed. */
  signal?: AbortSignal;
  log?: (message: string) => void;
  /** Longest pause between reconnect attempts (ms). */
  maxBackoffMs?: number;
  /** Passed to the applier: the target is frozen by pgferry (the reverse direction of a rollback window). */
  writeThroughFreeze?: boolean;
  /** What to say when the target has no record of the migration (the reverse agent names the flag that opens the window). */
  notFound?: string;
  /** Seconds without an answer after which a connection counts as stalled and is reconnected (--stall-timeout). */
  stallTimeoutSec?: number;
}

export interface AgentResult { reason: "stopped" | "completed"; appliedChanges: number }

export async function runAgent(source: Endpoint, target: Endpoint, o: AgentOptions): Promise<AgentResult> {
  const log = o.log ?? (() => undefined);
  const names = objectNames(o.name);
  let backoff = 500, changes = 0, saidPaused = false, seen = false;
  let current: StreamApplier | undefined;
  const onAbort = () => { void current?.stop(); };
  o.signal?.addEventListener("abort", onAbort);
  try {
    while (!o.signal?.aborted) {
      let phase: string | undefined, paused = false;
      try {
        const c = await connect(target);
        const unwatch = watchStall(c, (o.stallTimeoutSec ?? DEFAULT_STALL_TIMEOUT_SEC) * 1000, () => undefined);
        try { const m = await readMigration(c, o.name); phase = m?.phase; paused = !!m?.replicationPaused; if (m && m.mode !== "stream") {
          throw new PgferryError("not_stream", `migration "${o.name}" runs in mode ${m.mode}; the agent serves mode stream only`);
        } } finally { unwatch(); await endClient(c); }
      } catch (e) {
        if (e instanceof PgferryError && e.code === "not_stream") throw e;
        log(`target unavailable (${(e as Error).message}); retrying in ${backoff} ms`);
        await sleep(backoff, o.signal); backoff = Math.min(backoff * 2, o.maxBackoffMs ?? 30000);
        continue;
      }
      // The record vanished while we served it: cleanup (or, for a reverse agent, finish) removed the migration.
      if (!phase && seen) { log("the migration's record was removed (cleanup or finish); nothing left to apply"); return { reason: "completed", appliedChanges: changes }; }
      if (!phase) throw new PgferryError("not_found", o.notFound ?? `no migration "${o.name}" on the ${target.label}; run pgferry start --mode stream first`);
      seen = true;
      if (phase === "Completed" || phase === "Aborted") return { reason: "completed", appliedChanges: changes };
      if (paused || phase === "VerifyFailed") {
        // Cutover holds the slot still (post-fence check, verification gate); it resumes us or completes.
        if (!saidPaused) log(`replication paused by cutover (${phase}); waiting`);
        saidPaused = true;
        await sleep(1000, o.signal);
        continue;
      }
      saidPaused = false;
      if (!["ReadyToCutover", "CuttingOver"].includes(phase)) {
        log(`migration is ${phase}; waiting for start to finish the load`);
        await sleep(2000, o.signal);
        continue;
      }
      // Stopped while reading the record (onAbort found no applier to stop): start none.
      if (o.signal?.aborted) break;
      current = new StreamApplier(source, target, { migration: o.name, slot: names.slot, publication: names.publication,
        writeThroughFreeze: o.writeThroughFreeze, stallTimeoutSec: o.stallTimeoutSec });
      const started = Date.now();
      try {
        log("streaming");
        await current.run();
      } catch (e) {
        // A divergence, a slot the source invalidated, or DDL that --ddl replicate cannot carry (cdc/ddl/statement.ts) does not go
        // away by retrying: stop, with the error (recorded for status and cutover). A DDL the target refused (ddl_failed) is retried:
        // the user can make the target accept it.
        if (e instanceof PgferryError && (e.code === "divergence" || e.code === "slot_lost" || DDL_REFUSALS.has(e.code))) throw e;
        log(`stream interrupted: ${(e as Error).message}; reconnecting in ${backoff} ms`);
        if (Date.now() - started > 10000) backoff = 500; // it ran a while: start the backoff over
        await sleep(backoff, o.signal); backoff = Math.min(backoff * 2, o.maxBackoffMs ?? 30000);
      } finally {
        changes += current.changes;
      }
    }
    return { reason: "stopped", appliedChanges: changes };
  } finally {
    o.signal?.removeEventListener("abort", onAbort);
  }
}

const DDL_REFUSALS = new Set<string>(["ddl_multi_statement", "ddl_not_top_level", "ddl_unsupported", "ddl_volatile_default", "ddl_selection"]);

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) { resolve(); return; } // an aborted signal fires no more events: waiting would ignore the stop
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}
