/**
 * Cutover: stop writes on the source (pgferry freezes it, or the application has stopped), take the
 * fence LSN, wait until the target has applied everything up to it, sync every sequence, end CDC
 * (subscription, slot, publication), then apply what was held back: materialized view data and
 * foreign keys (NOT VALID, then VALIDATE). Each step is recorded, so a killed cutover re-runs to the
 * same result; a drain timeout rolls the freeze back and leaves the migration streaming.
 */
import { Client } from "pg";
import { listSequences, userSchemas } from "./catalog";
import { dropSubscription, subscriptionInfo } from "./cdc";
import { connect, Endpoint, qualified, quoteIdent } from "./endpoint";
import { PgferryError } from "./errors";
import { lsnToBigInt } from "./lsn";
import { objectNames } from "./options";
import { readAppliedLsn, StreamApplier } from "./stream";
import { applyEntries } from "./schema";
import { dropPublication, dropSlot, slotInfo } from "./snapshot";
import { MigrationRecord, readMigration, tryLockMigration, updateMigration } from "./state";

export interface CutoverOptions {
  name: string;
  /** Make the source database read-only for every role and end other sessions (else: the application must have stopped). */
  freezeWrites: boolean;
  /** Seconds to wait for the target to apply everything up to the fence. */
  timeoutSec: number;
  jobs: number;
  onProgress?: (message: string) => void;
}

export interface EndedSession { pid: number; user: string; application: string; clientAddr?: string }

export interface CutoverResult {
  name: string;
  phase: "Completed";
  alreadyCompleted: boolean;
  fenceLsn?: string;
  downtimeMs?: number;
  sequencesSynced: number;
  heldBackApplied: number;
  endedSessions: EndedSession[];
  /** The source stays read-only after a frozen cutover, so nothing writes to the old server by mistake. */
  sourceLeftReadOnly: boolean;
}

export async function cutoverMigration(source: Endpoint, target: Endpoint, o: CutoverOptions): Promise<CutoverResult> {
  const say = o.onProgress ?? (() => undefined);
  const names = objectNames(o.name);
  const tgt = await connect(target);
  let src: Client | undefined;
  try {
    const m = await readMigration(tgt, o.name);
    if (!m) throw new PgferryError("not_found", `no migration "${o.name}" on the ${target.label}; run pgferry start first`);
    if (m.phase === "Completed") {
      return { name: o.name, phase: "Completed", alreadyCompleted: true, fenceLsn: m.fenceLsn, downtimeMs: m.downtimeMs,
        sequencesSynced: 0, heldBackApplied: 0, endedSessions: [], sourceLeftReadOnly: m.sourceFrozen };
    }
    if (m.phase !== "ReadyToCutover" && m.phase !== "CuttingOver") {
      throw new PgferryError("not_ready", `migration "${o.name}" is in phase ${m.phase}; cutover needs ReadyToCutover (run pgferry start until it streams)`);
    }
    if (!(await tryLockMigration(tgt, o.name))) {
      throw new PgferryError("busy", `another pgferry process is working on migration "${o.name}"; wait for it or stop it`);
    }
    src = await connect(source);
    let endedSessions: EndedSession[] = [];
    let frozenAt = m.freezeStartedAt;
    const stream = m.mode === "stream";
    // Still replicating: the subscription exists (subscription mode) or the slot does (stream mode).
    const replicating = stream ? !!(await slotInfo(src, names.slot)) : (await subscriptionInfo(tgt, names.subscription)).exists;
    if (replicating) {
      await updateMigration(tgt, o.name, { phase: "CuttingOver" });
      if (!frozenAt) {
        frozenAt = new Date();
        if (o.freezeWrites) {
          say("freezing writes on the source");
          endedSessions = await freezeSource(src, source);
        }
        await updateMigration(tgt, o.name, { freezeStartedAt: frozenAt, sourceFrozen: o.freezeWrites });
      }
      const fence = (await src.query(`SELECT pg_current_wal_lsn()::text AS l`)).rows[0].l as string;
      await updateMigration(tgt, o.name, { fenceLsn: fence });
      say(`waiting for the target to apply everything up to ${fence}`);
      try {
        if (stream) await drainStream(source, target, src, tgt, o.name, fence, o.timeoutSec);
        else await waitForFence(src, tgt, names.slot, names.subscription, fence, o.timeoutSec);
      } catch (e) {
        // Roll back to streaming: unfreeze what we froze; the application may write again.
        if (o.freezeWrites || m.sourceFrozen) await unfreezeSource(src, source).catch(() => undefined);
        await updateMigration(tgt, o.name, { phase: "ReadyToCutover", freezeStartedAt: null, sourceFrozen: false, fenceLsn: null });
        throw e;
      }
      say("ending change data capture");
      await dropSubscription(tgt, names.subscription);
    }
    // Idempotent tail: also what a re-run after a kill past the subscription drop continues with.
    // Stream mode: everything up to the fence is applied, so an agent still holding the slot is ended now.
    await dropSlot(src, names.slot, stream ? 0 : 10000);
    await dropPublication(src, names.publication);
    say("syncing sequences");
    const sequencesSynced = await syncSequences(src, tgt, m);
    say("adding foreign keys and refreshing materialized views");
    const preamble = (await tgt.query(`SELECT sql FROM pgferry.schema_entry WHERE migration = $1 AND section = 'preamble'`, [o.name])).rows[0]?.sql ?? "";
    const heldBackApplied = await applyEntries(target, o.name, "cutover", preamble, o.jobs);
    const completedAt = new Date();
    const downtimeMs = frozenAt ? completedAt.getTime() - new Date(frozenAt).getTime() : undefined;
    await updateMigration(tgt, o.name, { phase: "Completed", completedAt, downtimeMs: downtimeMs ?? null });
    const after = (await readMigration(tgt, o.name))!;
    return { name: o.name, phase: "Completed", alreadyCompleted: false, fenceLsn: after.fenceLsn, downtimeMs, sequencesSynced,
      heldBackApplied, endedSessions, sourceLeftReadOnly: after.sourceFrozen };
  } finally {
    await tgt.end().catch(() => undefined);
    await src?.end().catch(() => undefined);
  }
}

/**
 * Read-only for every new session (database-level default), and end the sessions already open —
 * except walsenders (ours streams the last changes) and this one.
 */
export async function freezeSource(src: Client, source: Endpoint): Promise<EndedSession[]> {
  try {
    await src.query(`ALTER DATABASE ${quoteIdent(source.database)} SET default_transaction_read_only = on`);
  } catch (e) {
    throw new PgferryError("freeze_failed", `cannot make the source database read-only (${(e as Error).message}); ` +
      `fix: run cutover as the database owner or a superuser, or stop the application yourself and omit --freeze-writes`);
  }
  const r = await src.query(`SELECT pid, usename AS user, application_name AS app, client_addr::text AS addr,
      pg_terminate_backend(pid) AS ended
    FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`);
  return r.rows.filter((x) => x.ended).map((x) => ({ pid: x.pid, user: x.user, application: x.app, clientAddr: x.addr ?? undefined }));
}

export async function unfreezeSource(src: Client, source: Endpoint): Promise<void> {
  await src.query(`ALTER DATABASE ${quoteIdent(source.database)} RESET default_transaction_read_only`);
}

/**
 * Stream mode: when an agent holds the slot (its single active consumer), wait for it to apply up to
 * the fence; otherwise apply up to the fence here.
 */
async function drainStream(source: Endpoint, target: Endpoint, src: Client, tgt: Client, name: string, fence: string, timeoutSec: number): Promise<void> {
  const names = objectNames(name);
  const want = lsnToBigInt(fence);
  const deadline = Date.now() + timeoutSec * 1000;
  for (;;) {
    if ((await readAppliedLsn(tgt, name)) >= want) return;
    const slot = await slotInfo(src, names.slot);
    if (!slot) throw new PgferryError("slot_missing", `the replication slot "${names.slot}" is gone from the source; run pgferry cleanup and start again`);
    if (!slot.active) {
      const applier = new StreamApplier(source, target, { migration: name, slot: names.slot, publication: names.publication, until: want });
      const timer = setTimeout(() => void applier.stop(), Math.max(0, deadline - Date.now()));
      try { await applier.run(); } finally { clearTimeout(timer); }
      if ((await readAppliedLsn(tgt, name)) >= want) return;
    } else {
      await new Promise((r) => setTimeout(r, 100));
    }
    if (Date.now() > deadline) {
      throw new PgferryError("drain_timeout", `the target had not applied up to the fence ${fence} after ${timeoutSec}s; writes were unfrozen ` +
        `and the migration keeps streaming; fix: retry cutover, with a larger --timeout if it was still catching up`);
    }
  }
}

/** Wait until the slot's consumer has confirmed the fence (it confirms only what it applied and flushed). */
async function waitForFence(src: Client, tgt: Client, slot: string, subscription: string, fence: string, timeoutSec: number): Promise<void> {
  const deadline = Date.now() + timeoutSec * 1000;
  const want = lsnToBigInt(fence);
  for (;;) {
    const s = await slotInfo(src, slot);
    if (!s) throw new PgferryError("slot_missing", `the replication slot "${slot}" is gone from the source; the migration cannot be finished — run pgferry cleanup and start again`);
    if (s.confirmedFlushLsn && lsnToBigInt(s.confirmedFlushLsn) >= want) return;
    if (Date.now() > deadline) {
      const sub = await subscriptionInfo(tgt, subscription);
      throw new PgferryError("drain_timeout", `the target had not applied up to the fence ${fence} after ${timeoutSec}s ` +
        `(confirmed ${s.confirmedFlushLsn ?? "nothing"}${sub.workerPid ? "" : "; the subscription's apply worker is not running — see the target's log"}); ` +
        `writes were unfrozen and the migration keeps streaming; fix: retry cutover, with a larger --timeout if it was still catching up`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Every sequence of the migrated schemas, set on the target to the source's state (owned or not, identity, descending). */
async function syncSequences(src: Client, tgt: Client, m: MigrationRecord): Promise<number> {
  const sel = (m.options as { selection?: { schemas?: string[] } }).selection;
  const schemas = sel?.schemas?.length ? sel.schemas : await userSchemas(src);
  let n = 0;
  for (const s of await listSequences(src, schemas)) {
    const name = qualified(s.schema, s.name);
    const exists = (await tgt.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [name])).rows[0].ok;
    if (!exists) continue;
    const v = (await src.query(`SELECT last_value::text AS v, is_called FROM ${name}`)).rows[0];
    await tgt.query(`SELECT setval($1::regclass, $2::bigint, $3)`, [name, v.v, v.is_called]);
    n++;
  }
  return n;
}
