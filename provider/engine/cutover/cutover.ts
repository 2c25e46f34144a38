/**
 * Cutover: stop writes on the source (pgferry freezes it, or the application has stopped), take the
 * fence LSN, wait until the target has applied everything up to it, pause the slot's consumer and check
 * that nothing committed after the fence, verify the target against the frozen source (the gate), and
 * only then end CDC (subscription, slot, publication), sync every sequence and apply what was held
 * back: materialized view data and foreign keys (NOT VALID, then VALIDATE).
 *
 * Every step is recorded on the target, so a killed cutover re-runs to the same result. Until the gate
 * passes nothing is dropped: a drain timeout or writes that keep arriving roll the freeze back and leave
 * the migration streaming; a failed gate leaves it frozen in phase VerifyFailed, from where `cutover`
 * re-verifies and `abortCutover` (`pgferry cutover --abort`) unfreezes and resumes streaming.
 *
 * The cutover is the list CUTOVER_STEPS, run by ../core/pipeline.ts (which also yields the downtime
 * breakdown, CutoverTimings); the CDC mode's part goes through ../cdc/cdc.ts.
 */
import { Client } from "pg";
import {
  copyableTables, displayName, migratedPopulatedMatviews, migratedSequences, migratedTables, TableInfo, TableSelection, userSchemas,
} from "../catalog/catalog";
import { runLoad } from "../copy/load";
import { largeObjectsAtCutover, LargeObjectSync } from "../copy/largeObjects";
import { Cdc, CdcContext, cdcFor } from "../cdc/cdc";
import {
  backendPid, connect, DEFAULT_STALL_TIMEOUT_SEC, endClient, Endpoint, qualified, quoteIdent, quoteLiteral, SESSION_GUCS, stallError, watchStall,
} from "../core/endpoint";
import { describeDifferences, schemaDifferences } from "../catalog/drift";
import { PgferryError } from "../core/errors";
import { objectNames } from "../core/options";
import { runPipeline, Step, StepClock, StepOutcome } from "../core/pipeline";
import { rollbackWindowPreflight, rollbackWindowStep, RollbackWindowOpened, RollbackWindowStepContext } from "../rollback/window";
import { applyEntries, applyForeignKeysWhileStreaming, matviewEntries } from "../copy/schema";
import { dropPublication, dropSlot, slotInfo, slotLostError } from "../copy/snapshot";
import { changesAfterFence } from "../cdc/decoders";
import {
  CutoverTimings, ensureControlSchema, MigrationRecord, readMigration, recordDdlJoinedTables, SavedSetting, tryLockMigration, updateMigration,
} from "../state/state";
import { touchedTables } from "../verify/touched";
import { PreCheck, preCheckFrom, readFingerprints, stillValid } from "../verify/precheck";
import { ByKeyOutcome, ByKeyResult, KeyCheck } from "../verify/byKey";
import { NewRowsCheck, NewRowsOutcome, NewRowsResult } from "../verify/newRows";
import { readAppliedLsn } from "../state/applyProgress";
import { lsnToBigInt } from "../core/lsn";
import { readFence } from "./fence";
import { rewrittenPartitions } from "../copy/partitionTruncates";
import { citusVersion } from "../preflight/citus";
import {
  batchedStatements, closeVerifySessions, openVerifySessions, preReadCatalogs, PreReadCatalogs, unionAlls, verifyMigration, VerifyReport,
  VerifySessionPair,
} from "../verify/verify";
import { describeSourceChanges, restoreSourceChanges, SourceChange } from "../state/sourceChanges";
import { dropTargetApply } from "../cdc/ddl/targetApply";
import { newTablesState, syncNewTables } from "../cdc/ddl/newTables";
import { readDdlRefusal } from "../cdc/ddl/refusal";
import { selectionWithJoined, tablesJoinedByDdl } from "../cdc/ddl/joined";
import { tablesLeftOutByDdl } from "../cdc/ddl/capture";
import { countUnappliedEntries, readPreamble, reconcileRefreshEntries, replaceNotCarried } from "../state/schemaEntries";

export type VerifyMode = "counts" | "hashes";
export const VERIFY_MODES: VerifyMode[] = ["counts", "hashes"];

export interface CutoverOptions {
  name: string;
  /** Make the source database read-only for every role and end other sessions (else: the application must have stopped). */
  freezeWrites: boolean;
  /** Seconds to wait for the target to apply everything up to the fence. */
  timeoutSec: number;
  jobs: number;
  /** The gate before Completed: row counts per table (default), or counts and content hashes. */
  verify?: VerifyMode;
  /**
   * Seconds (default 5). With freezeWrites: how long sessions in a transaction get to finish before they
   * are ended. Without: how long the application gets to stop writing before cutover refuses.
   */
  graceSec?: number;
  onProgress?: (message: string) => void;
  /**
   * Open the rollback window (./rollback.ts): before Completed, a reverse slot and publication on the
   * target and the reverse migration's record on the source, so the target's changes can flow back.
   */
  reverseReplication?: boolean;
  /**
   * This is the cutover of a reverse migration (`pgferry rollback`): its target is the old server, which the
   * forward cutover froze, so pgferry's sessions there (state, inline drain) lift read-only for themselves.
   */
  reverse?: boolean;
  /**
   * Unlogged tables (logical replication cannot see their changes): "copy" them again now, while writes are
   * stopped, or "skip" them in the gate (with a warning). Default: what start recorded, else copy.
   */
  unlogged?: "copy" | "skip";
  /** Seconds without an answer after which the source or target connection counts as stalled (--stall-timeout). */
  stallTimeoutSec?: number;
  /**
   * Several databases in one cutover (../databases.ts): awaited before the freeze ("freeze") and after the gate, before
   * replication ends ("gate-passed"); it throws when another database's cutover failed, so none freezes or completes alone.
   */
  barrier?: (point: "freeze" | "gate-passed") => Promise<void>;
  /** Called after each step that ran, with its name (tests inject what happens between two steps). */
  afterStep?: (step: string) => Promise<void>;
  /**
   * The gate reads only the rows changed since its pre-check for tables written until the freeze (default true;
   * ../verify/byKey.ts). false: such tables are hashed whole at the fence (tests compare both ways).
   */
  gateByKey?: boolean;
}

export interface SessionInfo {
  pid: number;
  user: string;
  application: string;
  clientAddr?: string;
  superuser: boolean;
  /** What it was doing: idle, in a transaction, active. */
  state?: string;
}
/** A session the freeze ended. */
export type EndedSession = SessionInfo;

export interface CutoverResult {
  name: string;
  phase: "Completed";
  alreadyCompleted: boolean;
  fenceLsn?: string;
  /** Writes stopped → Completed (the application's downtime), verification included. */
  downtimeMs?: number;
  timings?: CutoverTimings;
  sequencesSynced: number;
  heldBackApplied: number;
  endedSessions: EndedSession[];
  /** Sessions still connected to the source at the end (superusers can lift read-only; see README). */
  stillConnected: SessionInfo[];
  /** Roles whose own default_transaction_read_only setting would have overridden the freeze, made read-only in this database. */
  neutralisedRoles: string[];
  /** Fences taken: more than one when writes arrived after a fence and the cutover went round again. */
  fenceAttempts: number;
  /**
   * hashedTables: tables whose contents were hashed (all with hashes; with counts, those changed during replication).
   * preChecked: tables compared while streaming and unchanged on both sides since, so not read again during the freeze.
   */
  verification?: { mode: VerifyMode; tables: number; hashedTables: number; seconds: number; preChecked?: number; byKey?: ByKeyOutcome;
    /** Tables without a usable key compared at the fence by the row versions written since a snapshot before the freeze (../verify/newRows.ts). */
    newRows?: NewRowsOutcome };
  /** The source stays read-only after a frozen cutover, so nothing writes to the old server by mistake. */
  sourceLeftReadOnly: boolean;
  /** SQL that makes the source writable again, exactly as it was before the freeze. */
  undoFreezeSql: string[];
  /** With reverseReplication: the window this cutover opened (or found open). */
  rollbackWindow?: RollbackWindowOpened;
  /** Unlogged tables copied again during the freeze (unlogged copy), or left out of the gate (unlogged skip). */
  unlogged?: { action: "copied" | "skipped"; tables: string[]; rows?: number };
  /** Leaf partitions truncated alone (or rewritten) on the source during CDC, copied again during the freeze. */
  truncatedPartitions?: { tables: string[]; rows: number };
  /** What pgferry had changed on the source (REPLICA IDENTITY FULL), undone once replication ended. */
  restoredSourceChanges?: SourceChange[];
  /** Large objects compared during the freeze, and how many were copied or unlinked (absent with --no-large-objects). */
  largeObjects?: LargeObjectSync;
}

export interface AbortResult {
  name: string;
  phase: "ReadyToCutover";
  /** The phase the cutover was stopped in. */
  previousPhase: string;
  unfroze: boolean;
  resumedReplication: boolean;
}

const MAX_FENCES = 3;
/** The longest the warm-up waits for the target to apply (the gate by key's snapshot P, the catch-up before the freeze). */
const WARM_UP_DRAIN_SEC = 15;

/**
 * A source session that may write whatever the database's default says: pgferry's own DDL (DROP
 * PUBLICATION, unfreeze) must work on a frozen source, including in a re-run after a kill.
 */
export function connectWritable(source: Endpoint): Promise<Client> {
  return connect(source, { options: `${SESSION_GUCS} -c default_transaction_read_only=off` } as never);
}

export async function cutoverMigration(source: Endpoint, target: Endpoint, o: CutoverOptions): Promise<CutoverResult> {
  const say = o.onProgress ?? (() => undefined);
  const verifyMode = o.verify ?? "counts";
  if (!VERIFY_MODES.includes(verifyMode)) throw new PgferryError("bad_verify", `--verify must be one of ${VERIFY_MODES.join(", ")}`);
  const graceMs = Math.max(0, (o.graceSec ?? 5) * 1000);
  const tgt = o.reverse ? await connectWritable(target) : await connect(target);
  let src: Client | undefined;
  // A link that stops answering is cut (its query fails) and named: the cutover never hangs on it.
  const stallSec = o.stallTimeoutSec ?? DEFAULT_STALL_TIMEOUT_SEC;
  let stalled: PgferryError | undefined;
  const unwatch = [watchStall(tgt, stallSec * 1000, () => { stalled ??= stallError(target, "no answer to a statement", stallSec); })];
  let run: CutoverRun | undefined;
  try {
    return await admitAndRun();
  } catch (e) {
    if (!stalled) throw e;
    throw new PgferryError("stalled", `cutover stopped: ${stalled.message}. The migration is resumable: its record says how far the cutover got ` +
      `(a freeze of the source, if one was made, is recorded with the settings to restore). Once the link answers again, run pgferry cutover ` +
      `again to finish, or pgferry cutover --abort to unfreeze the source and go back to streaming (nothing is lost: the slot is kept)`);
  } finally {
    unwatch.forEach((f) => f());
    await closeVerifySessions(run?.verifySessions ?? []);
    await run?.keyCheck?.close();
    await endClient(tgt);
    await endClient(src);
  }

  /** What the record allows (done already, the wrong phase, another process), then the steps. */
  async function admitAndRun(): Promise<CutoverResult> {
    let m = await readMigration(tgt, o.name);
    if (!m) throw new PgferryError("not_found", `no migration "${o.name}" on the ${target.label}; run pgferry start first`);
    if (m.phase === "Completed" && o.reverseReplication && !m.rollbackWindow) {
      // Too late: the application may have written to the target since, and those writes are not in any slot.
      throw new PgferryError("rollback_window_too_late", `migration "${o.name}" was cut over without reverse replication; a rollback window can ` +
        `only be opened by the cutover itself, before the application writes to the target. To move back now, start a new migration in the other direction`);
    }
    const alreadyCompleted = (x: MigrationRecord, restored?: SourceChange[]): CutoverResult => ({ name: o.name, phase: "Completed",
      alreadyCompleted: true, fenceLsn: x.fenceLsn, downtimeMs: x.downtimeMs, timings: x.cutoverTimings,
      sequencesSynced: 0, heldBackApplied: 0, endedSessions: [], stillConnected: [], neutralisedRoles: [], fenceAttempts: 0,
      sourceLeftReadOnly: x.sourceFrozen, undoFreezeSql: x.sourceFrozen ? undoSql(source, x.freezeSaved) : [], restoredSourceChanges: restored });
    // Completed with replication still paused: ending it after the downtime was interrupted (RELEASE_STEPS); finished now.
    // Another process holding the lock is the cutover itself, finishing it.
    if (m.phase === "Completed" && !(m.replicationPaused && await tryLockMigration(tgt, o.name))) return alreadyCompleted(m);
    if (!["ReadyToCutover", "CuttingOver", "VerifyFailed", "Completed"].includes(m.phase)) {
      throw new PgferryError("not_ready", `migration "${o.name}" is in phase ${m.phase}; cutover needs ReadyToCutover (run pgferry start until it streams)`);
    }
    if (m.phase !== "Completed" && !(await tryLockMigration(tgt, o.name))) {
      throw new PgferryError("busy", `another pgferry process is working on migration "${o.name}"; wait for it or stop it`);
    }
    await ensureControlSchema(tgt); // adds the cutover columns to a control schema an older pgferry made
    m = (await readMigration(tgt, o.name))!;
    src = await connectWritable(source);
    unwatch.push(watchStall(src, stallSec * 1000, () => { stalled ??= stallError(source, "no answer to a statement", stallSec); }));
    const cdc = cdcFor(m.mode);
    const timings: CutoverTimings = { ...(m.cutoverTimings ?? {}) };
    // Hyperscale (Citus) target: the gate hashes every table (a change lost into a coordinator's local shell keeps the counts; docs/citus.md).
    const citus = o.reverse ? undefined : await citusVersion(tgt);
    if (citus && verifyMode === "counts") say(`the target runs Citus ${citus}: the gate compares row counts and content hashes of every table`);
    const r: CutoverRun = run = {
      o, src, tgt, source, target, name: o.name, say, verifyMode: citus ? "hashes" : verifyMode, graceMs, stallSec, m, cdc, timings,
      saveTimings: () => updateMigration(tgt, o.name, { cutoverTimings: timings }),
      reverseReplication: o.reverseReplication, reverse: o.reverse, sourceFrozen: m.sourceFrozen,
      // Still replicating: the slot still has its consumer. If not, a re-run continues after the point of no return.
      replicating: await cdc.replicating({ src, tgt, source, target, name: o.name }),
      freeze: false, endedSessions: [], neutralisedRoles: [], fenceAttempts: 0, verifySessions: [], selected: [], unloggedHow: "copy",
      largeObjectsCarried: false, sequencesSynced: 0, heldBackApplied: 0, preamble: "", restored: [],
    };
    const releaseOnly = m.phase === "Completed";
    if (releaseOnly) say("the cutover is complete; dropping the slot and publication on the source (interrupted after the downtime)");
    await runPipeline(releaseOnly ? RELEASE_STEPS : CUTOVER_STEPS, r, { timings: timings as Record<string, number | undefined>,
      afterStep: async (step, changed) => { if (changed) await r.saveTimings(); await o.afterStep?.(step.name); } });
    const after = (await readMigration(tgt, o.name))!;
    if (releaseOnly) return alreadyCompleted(after, r.restored);
    return { name: o.name, phase: "Completed", alreadyCompleted: false, fenceLsn: after.fenceLsn, downtimeMs: r.downtimeMs, timings,
      sequencesSynced: r.sequencesSynced, heldBackApplied: r.heldBackApplied, endedSessions: r.endedSessions, stillConnected: r.stillConnected ?? [],
      neutralisedRoles: r.neutralisedRoles, fenceAttempts: r.fenceAttempts, verification: r.verification, sourceLeftReadOnly: after.sourceFrozen,
      undoFreezeSql: after.sourceFrozen ? undoSql(source, after.freezeSaved) : [], rollbackWindow: r.rollbackWindow,
      restoredSourceChanges: r.restored, unlogged: r.unlogged, largeObjects: r.largeObjects,
      truncatedPartitions: r.truncatedPartitions };
  }
}

/** One cutover run: its sessions and options, and what its steps found and did (the result is made from it). */
interface CutoverRun extends Ctx, RollbackWindowStepContext {
  o: CutoverOptions;
  say: (message: string) => void;
  verifyMode: VerifyMode;
  graceMs: number;
  stallSec: number;
  /** The record as the cutover found it (after the lock). */
  m: MigrationRecord;
  timings: CutoverTimings;
  saveTimings: () => Promise<void>;
  replicating: boolean;
  endedSessions: EndedSession[];
  neutralisedRoles: string[];
  fenceAttempts: number;
  verifySessions: VerifySessionPair[];
  /** The migrated tables (read once writes are stopped). */
  selected: TableInfo[];
  unloggedHow: "copy" | "skip";
  unlogged?: CutoverResult["unlogged"];
  truncatedPartitions?: CutoverResult["truncatedPartitions"];
  largeObjectsCarried: boolean;
  largeObjects?: LargeObjectSync;
  report?: VerifyReport;
  verification?: CutoverResult["verification"];
  restored: SourceChange[];
  /** The gate's comparison made while streaming (the warm-up); at the fence only tables changed since are read again. */
  preCheck?: PreCheck;
  /** Tables written until the freeze, compared at the fence by the keys changed since the warm-up (../verify/byKey.ts). */
  keyCheck?: KeyCheck;
  byKey?: ByKeyResult;
  /** Tables written until the freeze that the check by key cannot take, compared at the fence by their new rows (../verify/newRows.ts). */
  newRows?: NewRowsCheck;
  newRowsResult?: NewRowsResult;
  /** The migrated tables as the warm-up listed them, with the fingerprint of the source's table set then (tableSetOf). */
  warmTables?: { tables: TableInfo[]; tableSet: string };
  preChecked?: number;
  /** The gate's catalogs, read by the warm-up (verify.ts preReadCatalogs). */
  catalogs?: PreReadCatalogs;
  /** The migrated sequences, listed while streaming (the warm-up) so the sync at the fence does not list them again. */
  sequences?: string[];
  sequencesSynced: number;
  preamble: string;
  /** The slot and publication are dropped after Completed (release-plan). */
  releaseAfter?: boolean;
  /** Entries not applied yet, by section ("cutover", "final"), counted by the held-back step. */
  unapplied?: Map<string, number>;
  heldBackApplied: number;
  stillConnected?: SessionInfo[];
  downtimeMs?: number;
}

/** Steps before the point of no return run while the slot still has its consumer; a re-run past it skips them. */
const pastPointOfNoReturn = (r: CutoverRun) => !r.replicating;

/** Ends the consumer for good (the subscription; stream mode: nothing) and, with --ddl replicate, the target's DDL log. */
const END_CDC: Step<CutoverRun> = {
  name: "end-cdc", done: pastPointOfNoReturn, timing: "endReplicationMs",
  async run(r) {
    r.say("ending change data capture");
    await r.cdc.end(r);
    if (r.m.options.ddl === "replicate") await dropTargetApply(r.tgt, r.name); // subscription mode's log table and trigger on the target
  },
};
/** Untimed: after Completed it is not downtime (the timings are "where the downtime went"); inside it, see the step list. */
const DROP_SLOT: Step<CutoverRun> = { name: "drop-slot", run: dropSlotAndRestore };

/**
 * Replication's end on the source (slot, publication, what pgferry changed there) after Completed, and what a re-run of
 * a Completed cutover whose record still says replication is paused continues with (admitAndRun). All idempotent; the
 * last step clears the mark.
 */
export const RELEASE_STEPS: Step<CutoverRun>[] = [
  DROP_SLOT,
  { name: "replication-ended", run: async (r) => { await updateMigration(r.tgt, r.name, { replicationPaused: false }); } },
];

/**
 * Whether the source's side of replication (slot, publication, what pgferry changed there) is ended after the downtime
 * instead of inside it. Sound because nothing can be applied to the target after Completed: the subscription is
 * already dropped (end-cdc, inside the downtime); a stream agent was told to wait and exits when it reads Completed,
 * without opening the slot; only rollbackToStreaming would resume a consumer, and nothing reaches it once the phase is
 * Completed (abort refuses, cutover only finishes the release). And the fence check found no change committed after
 * the fence on the frozen source, so a consumer would have nothing to send. Not with a rollback window (its reverse
 * slot is made with replication ended, as before) nor for a rollback's own cutover.
 */
const endsAfterDowntime = (r: CutoverRun) => !r.reverseReplication && !r.reverse;

/**
 * The cutover, in order. Until the gate passes nothing is dropped: a failed freeze is undone (the runner
 * calls its undo); the fence round rolls back to streaming itself on a drain timeout or writes that keep
 * arriving; a failed gate leaves the source frozen in phase VerifyFailed. The timings keys are CutoverTimings'.
 */
export const CUTOVER_STEPS: Step<CutoverRun>[] = [
  { name: "rollback-window-preflight", when: (r) => !!r.reverseReplication && !r.reverse, run: (r) => rollbackWindowPreflight(r.tgt, r.name) },
  { name: "replication-checks", done: pastPointOfNoReturn, run: replicationChecks },
  {
    // Keys still held back (a migration started by an older pgferry, a start that left some): added while writes still flow.
    name: "foreign-keys", when: (r) => !r.reverse, done: (r) => !r.replicating || r.m.sourceFrozen,
    async run(r) {
      const fk = await applyForeignKeysWhileStreaming(r.target, r.name, r.o.jobs);
      if (fk.applied) r.say(`added and validated ${fk.applied} foreign-key step(s) while streaming`);
      if (fk.deferred.length) r.say(`${fk.deferred.length} foreign key(s) are applied after the freeze instead: ${fk.deferred.map((d) => `${d.object} (${d.error})`).join("; ")}`);
    },
  },
  // Not when a re-run finds the source frozen already: there the warm-up would itself be downtime.
  // --ddl replicate, subscription mode: tables created while streaming join the subscription (copied while streaming, not downtime).
  { name: "new-tables", when: newTablesJoin, done: (r) => !r.replicating || r.m.sourceFrozen, run: (r) => joinNewTables(r, false) },
  { name: "warm-up", done: (r) => !r.replicating || r.m.sourceFrozen, run: warmUp },
  { name: "databases-freeze", when: (r) => !!r.o.barrier, done: pastPointOfNoReturn, run: (r) => r.o.barrier!("freeze") },
  { name: "record-freeze", done: pastPointOfNoReturn, run: recordFreeze },
  {
    name: "freeze", done: pastPointOfNoReturn, timing: "freezeMs", undo: (r, e) => rollbackToStreaming(r, e), commits: true,
    async run(r, clock) {
      if (r.freeze) {
        r.say("freezing writes on the source");
        const f = await freezeSource(r.src, r.tgt, r.source, r.name, r.graceMs, r.say);
        r.endedSessions = f.ended;
        r.neutralisedRoles = f.neutralisedRoles;
      } else {
        r.say("waiting for writes on the source to stop");
        await waitForQuiet(r.src, r.graceMs);
      }
      clock.set("drainMs", 0);
      clock.set("fenceCheckMs", 0);
    },
  },
  { name: "fence", done: pastPointOfNoReturn, run: fenceRounds },
  // --ddl replicate with --include: tables replicated DDL created join the gate's selection (names final: the source is frozen).
  { name: "ddl-joined-tables", when: ddlJoinsInclude, done: pastPointOfNoReturn, run: recordJoinedTables },
  // --ddl replicate with --exclude/--include: tables created while streaming that the selection leaves out (named by
  // --exclude, partitions of a left-out table) were left out like at start: named, and recorded with what the migration
  // does not carry (status shows them after the cutover too).
  { name: "ddl-left-out-tables", when: (r) => r.m.options.ddl === "replicate" && !r.reverse &&
      !!(r.m.options.selection?.exclude.length || r.m.options.selection?.include.length),
    done: pastPointOfNoReturn, run: recordLeftOutTables },
  {
    // --ddl replicate: every DDL before the fence is applied now; the schemas must agree (else back to streaming, naming what differs).
    name: "schema-after-fence", when: (r) => r.m.options.ddl === "replicate", done: pastPointOfNoReturn,
    async run(r) {
      try { await schemaGate(r); } catch (e) { await rollbackToStreaming(r, e); throw e; }
      // A sequence created by replicated DDL after the warm-up listed them is synced too.
      r.sequences = await sequencesOf(r.src, r.m);
    },
  },
  {
    // A table created after the warm-up's refresh: joined now (its copy is downtime, but exact: the source is frozen).
    name: "new-tables-after-fence", when: newTablesJoin, done: pastPointOfNoReturn,
    async run(r) { try { await joinNewTables(r, true); } catch (e) { await rollbackToStreaming(r, e); throw e; } },
  },
  { name: "unlogged-tables", done: pastPointOfNoReturn, timing: "unloggedCopyMs", run: unloggedTables },
  // Leaf partitions truncated alone on the source (not replicated): copied again now that writes are stopped.
  { name: "truncated-partitions", done: pastPointOfNoReturn, run: truncatedPartitions },
  {
    // Large objects: no slot carries them; writes are stopped, so copying what differs makes them exact.
    name: "large-objects", done: pastPointOfNoReturn, timing: "largeObjectsMs",
    async run(r) {
      // None on either side (one look each, on the sessions at hand, both at once): nothing to compare or copy, and no
      // sessions of its own opened for it.
      if (r.m.options.largeObjects !== false && !r.m.options.reverseOf) {
        const none = `SELECT NOT EXISTS (SELECT 1 FROM pg_largeobject_metadata) AS none`;
        const [s, t] = await Promise.all([r.src.query(none), r.tgt.query(none)]);
        if (s.rows[0].none && t.rows[0].none) {
          r.largeObjectsCarried = true;
          r.largeObjects = { compared: 0, copied: 0, unlinked: 0, bytes: 0 };
          return;
        }
      }
      const lobs = await largeObjectsAtCutover(r.source, r.target, r.m.options, r.o.jobs, r.say);
      r.largeObjectsCarried = lobs.carried;
      if (!lobs.carried) return "nothing";
      r.largeObjects = lobs.sync;
    },
  },
  { name: "verify", done: pastPointOfNoReturn, timing: "verifyMs", run: verifyTarget },
  { name: "gate", done: pastPointOfNoReturn, run: gate },
  { name: "databases-gate", when: (r) => !!r.o.barrier, done: pastPointOfNoReturn, run: (r) => r.o.barrier!("gate-passed") },
  // Inside the downtime in every case: dropping a subscription is DDL on the target, which the source's event triggers,
  // created on the target at the end (event-triggers), must not see.
  END_CDC,
  {
    // Decided with the source frozen: an event trigger there would fire on pgferry's own DDL (DROP PUBLICATION, the
    // restored REPLICA IDENTITY) and may write or advance a sequence after the sequence sync, so then the drop stays first.
    name: "release-plan", done: pastPointOfNoReturn,
    async run(r) {
      r.releaseAfter = endsAfterDowntime(r) && !(await r.src.query(`SELECT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtenabled <> 'D') AS e`)).rows[0].e;
    },
  },
  // Idempotent tail: also what a re-run after a kill past the end of CDC continues with. With a rollback window (or
  // event triggers on the source) it runs before the window opens and before Completed, as it always did; else after Completed.
  { ...DROP_SLOT, timing: "endReplicationMs", accumulate: true, when: (r) => !r.releaseAfter },
  {
    name: "sequences", timing: "sequencesMs",
    async run(r) { r.say("syncing sequences"); r.sequencesSynced = await syncSequences(r.src, r.tgt, r.sequences ?? await sequencesOf(r.src, r.m)); },
  },
  {
    name: "held-back", timing: "heldBackMs",
    async run(r) {
      r.say("adding foreign keys and refreshing materialized views");
      // Counted on this session first (one statement for this step's section and the event triggers' one): applyEntries
      // opens a session of its own just to find there is nothing left, and reading the 4,000 applied key entries of
      // 2,000 tables only to see that is downtime.
      // Not in a rollback (reverse) cutover: the old server keeps its own views, and start stored no refresh for them.
      if (!r.reverse) await reconcileMatviewRefreshes(r);
      r.unapplied = await countUnappliedEntries(r.tgt, r.name, ["cutover", "final"]);
      if (r.unapplied.get("cutover")) {
        r.preamble = await readPreamble(r.tgt, r.name);
        r.heldBackApplied = await applyEntries(r.target, r.name, "cutover", r.preamble, r.o.jobs);
      }
    },
  },
  // After everything above, before Completed: nothing has written to the target yet that the reverse slot would miss.
  rollbackWindowStep,
  {
    // Last: the source's event triggers, created disabled with the held-back objects, start firing only now.
    name: "event-triggers",
    async run(r) {
      if (r.unapplied ? !r.unapplied.get("final") : !(await countUnappliedEntries(r.tgt, r.name, ["final"])).get("final")) return;
      await applyEntries(r.target, r.name, "final", r.preamble || await readPreamble(r.tgt, r.name), 1);
    },
  },
  { name: "complete", run: complete },
  // After the downtime (Completed: the target takes writes): the paused consumer, the slot and the publication are dropped.
  ...RELEASE_STEPS.map((s) => ({ ...s, when: (r: CutoverRun) => !!r.releaseAfter })),
];


/** Before anything is frozen: a lost slot, a recorded divergence or schema drift would fail the gate anyway. */
async function replicationChecks(r: CutoverRun): Promise<void> {
  const { src, tgt, m, name } = r;
  const names = objectNames(name);
  if ((await slotInfo(src, names.slot))?.walStatus === "lost") {
    throw new PgferryError("slot_lost", `${slotLostError(name, names.slot).message}. Nothing was ${m.sourceFrozen ? "changed" : "frozen"}`);
  }
  if (m.applyError?.kind === "divergence") {
    // The target lost a change: no gate would pass, and the freeze would only cost the application downtime.
    throw new PgferryError("divergence", `the stream applier stopped at a divergence (recorded ${m.applyError.at}): ${m.applyError.message}. ` +
      `Nothing was ${m.sourceFrozen ? "changed (the source stays frozen)" : "frozen"}. Cutover refuses while it is recorded; once the row is ` +
      `repaired, run the agent (pgferry agent --name ${name}) until it applies past it (pgferry status no longer shows it), then cutover again`);
  }
  if (m.options.ddl === "replicate" && m.applyError?.code?.startsWith("ddl_")) {
    // --ddl replicate stopped at a DDL it cannot carry (or the target refused): the target's schema cannot catch up.
    throw new PgferryError(m.applyError.code as "ddl_failed", `DDL replication stopped (recorded ${m.applyError.at}): ${m.applyError.message}. ` +
      `Nothing was ${m.sourceFrozen ? "changed (the source stays frozen)" : "frozen"}; cutover refuses while it is recorded`);
  }
  if (m.options.ddl === "replicate") {
    // Subscription mode: the target's trigger refused a DDL and the apply worker stops before it (../cdc/ddl/refusal.ts).
    const refusal = await readDdlRefusal(tgt, src, name, { reproduce: true });
    if (refusal) {
      throw new PgferryError(refusal.code, `${refusal.message}. Nothing was ${m.sourceFrozen ? "changed (the source stays frozen)" : "frozen"}; ` +
        `cutover refuses while the subscription stops at it (pgferry status shows it)`);
    }
  }
  // --ddl replicate: DDL still in flight is applied by the drain; the schemas are compared after the fence instead (schema-after-fence).
  if (m.options.ddl === "replicate") return;
  // DDL gate, before anything is frozen: replication does not carry DDL.
  await schemaGate(r);
}

/** The source's and the target's schemas of the migrated tables must agree (drift.ts). */
async function schemaGate(r: CutoverRun): Promise<void> {
  const { src, tgt, m, name } = r;
  const drift = await schemaDifferences(src, tgt, name);
  if (drift.length) {
    throw new PgferryError("schema_drift", `the source's schema changed during the migration and the target does not match ` +
      `(${drift.length} difference(s)): ${describeDifferences(drift)}. Nothing was ${m.sourceFrozen ? "changed (the source stays frozen)" : "frozen"}; ` +
      `apply the same DDL on the target, then run pgferry cutover again (pgferry status lists what still differs)`);
  }
}

function ddlJoinsInclude(r: CutoverRun): boolean { return r.m.options.ddl === "replicate" && !!r.m.options.selection?.include.length; }

/** Record the tables replicated DDL joined to the --include selection (../cdc/ddl/joined.ts); the gate and verify select them. */
async function recordJoinedTables(r: CutoverRun): Promise<void> {
  const joined = await tablesJoinedByDdl(r.src, objectNames(r.name).publication, r.m.options.selection!);
  if (joined.length) r.say(`tables created by replicated DDL join the verification of the --include selection: ${joined.join(", ")}`);
  if (JSON.stringify(joined) === JSON.stringify(r.m.options.ddlJoinedTables ?? [])) return;
  await recordDdlJoinedTables(r.tgt, r.name, joined);
  r.m.options.ddlJoinedTables = joined;
}

/** Tables created while streaming that --exclude names (../cdc/ddl/capture.ts): said, and recorded as not carried. */
async function recordLeftOutTables(r: CutoverRun): Promise<void> {
  const leftOut = await tablesLeftOutByDdl(r.src, r.name);
  if (leftOut.length) {
    r.say(`tables created on the source while streaming that the selection leaves out (--exclude names them, or a partition of a ` +
      `left-out table) were left out like at start (not on the target, not compared): ${leftOut.join(", ")}`);
  }
  await replaceNotCarried(r.tgt, r.name, [LEFT_OUT_KIND], leftOut.map((t) => ({ kind: LEFT_OUT_KIND, object: t,
    reason: "created on the source while streaming, and --exclude names it (or it is a partition of a left-out table): left out like at start " +
      "(not on the target, not replicated, not compared)",
    fix: "migrate it separately if it is wanted, or start again with a selection that takes it" })));
}

const LEFT_OUT_KIND = "table created while streaming";

function newTablesJoin(r: CutoverRun): boolean { return r.m.mode === "subscription" && r.m.options.ddl === "replicate" && !r.reverse; }

/** Refresh the subscription for tables the source publishes and it does not list, and wait until they are ready (../cdc/ddl/newTables.ts). */
async function joinNewTables(r: CutoverRun, frozen: boolean): Promise<void> {
  const names = objectNames(r.name);
  const check = async () => {
    const refusal = await readDdlRefusal(r.tgt, r.src, r.name);
    if (refusal) throw new PgferryError(refusal.code, `${refusal.message}. ${frozen ? "Writes were unfrozen and the migration keeps streaming" : "Nothing was frozen"}; ` +
      `cutover refuses while the subscription stops at it`);
  };
  if (!frozen) {
    await syncNewTables(r.src, r.tgt, names.publication, names.subscription, r.o.timeoutSec, r.say, frozen, check);
    return;
  }
  // After the fence the subscription is paused (disabled), and REFRESH needs it enabled: resumed for the sync only
  // (nothing was committed after the fence, checked by the fence step; the source is frozen), then paused again.
  const st = await newTablesState(r.src, r.tgt, names.publication, names.subscription);
  if (!st.unlisted.length && !st.syncing.length) return;
  await resumeReplication(r);
  await syncNewTables(r.src, r.tgt, names.publication, names.subscription, r.o.timeoutSec, r.say, frozen, check);
  await pauseReplication(r);
}

/**
 * Warm-up while streaming: the gate's sessions (kept open, and not ended by the freeze) open every table now, and
 * this session every sequence, so at the fence they do not pay a cold session's first open of each relation. The
 * tables are opened by the gate's own comparison, the pre-check (../verify/precheck.ts): at the fence only the
 * tables changed since on either side are read again.
 */
async function warmUp(r: CutoverRun): Promise<void> {
  r.say("comparing the target with the source while streaming (the gate's pre-check)");
  if (ddlJoinsInclude(r)) await recordJoinedTables(r);
  const warmSel = selectionWithJoined(r.m.options);
  const tableSet = await tableSetOf(r.src, warmSel);
  const tables = await migratedTables(r.src, warmSel);
  r.warmTables = { tables, tableSet };
  const stream = r.m.mode === "stream";
  const early = await readFingerprints(r.src, r.tgt, r.name, stream, tables);
  const since = Date.now();
  const touched = r.verifyMode === "hashes" ? [] : [...await touchedTables(r.src, r.tgt, r.name, tables)];
  // The tables the gate will hash, when they have a key: compared by key at the fence (../verify/byKey.ts).
  const hashed = new Set(r.verifyMode === "hashes" ? tables.map((t) => `${t.schema}.${t.name}`) : touched);
  if (r.o.gateByKey !== false && r.m.options.ddl !== "replicate" && !r.reverse) {
    const names = objectNames(r.name);
    r.keyCheck = await KeyCheck.open({ src: r.src, source: r.source, target: r.target, slot: names.slot, publication: names.publication, say: r.say,
      // Bounded: a consumer that is stuck (or stopped) must not hold the cutover up before the freeze; the table is then hashed whole.
      drainTo: (lsn) => r.cdc.drain(r, lsn, { timeoutSec: Math.min(r.o.timeoutSec, WARM_UP_DRAIN_SEC), stallTimeoutSec: r.stallSec }),
      // Stream mode: the applier's position, committed with its changes (read in the target's snapshot). Subscription: what the
      // apply worker confirmed to the slot (it confirms only what it committed), read before the target's snapshot.
      targetApplied: stream ? { inside: (c) => readAppliedLsn(c, r.name) }
        : { before: async () => lsnToBigInt((await slotInfo(r.src, names.slot))?.confirmedFlushLsn ?? "0/0") } },
    tables.filter((t) => t.kind === "r" && !t.unlogged && hashed.has(`${t.schema}.${t.name}`)).map((t) => `${t.schema}.${t.name}`));
  }
  const keyed = new Set(r.keyCheck?.keyed ?? []);
  r.verifySessions = await openVerifySessions(r.source, r.target, Math.max(1, r.o.jobs));
  ownSourceSessions.set(r.src, new Set([...r.verifySessions.map((p) => p.sourcePid), ...(r.keyCheck?.heldSourcePid ? [r.keyCheck.heldSourcePid] : [])]));
  // The gate's catalog read (2,000 tables: tens of ms per side), done now; at the fence one fingerprint per side stands
  // for it, and a difference (DDL since) reads it again. Best effort: without it the fence reads it as before.
  r.catalogs = await preReadCatalogs(r.verifySessions[0]).catch(() => undefined);
  // A table whose fingerprint moves within a second (statistics are flushed about once a second) is being written
  // now and will have changed again by the freeze: comparing it now (a hash of a big busy table) would be wasted,
  // the fence compares it. Unlogged tables are copied again during the freeze: always compared at the fence.
  await sleep(Math.max(0, 1100 - (Date.now() - since)));
  const before = await readFingerprints(r.src, r.tgt, r.name, stream, tables);
  const busy = (t: TableInfo) => { const k = `${t.schema}.${t.name}`; return early.source.get(k) !== before.source.get(k) || early.target.get(k) !== before.target.get(k); };
  // Tables checked by key are compared by the key check's own whole-table pass (on its held snapshots), beside this one.
  const compared = tables.filter((t) => !t.unlogged && !busy(t) && !keyed.has(`${t.schema}.${t.name}`));
  const byKeyBaseline = r.keyCheck?.baseline();
  if (compared.length) {
    const report = await verifyMigration(r.source, r.target, { onlyTables: compared.map((t) => `${t.schema}.${t.name}`), hashes: r.verifyMode === "hashes",
      hashTables: touched, jobs: r.o.jobs, sessions: r.verifySessions, largeObjects: false });
    const after = await readFingerprints(r.src, r.tgt, r.name, stream, tables);
    r.preCheck = preCheckFrom(report, new Map(compared.map((t) => [displayName(t.schema, t.name), `${t.schema}.${t.name}`])), before, after);
  } else {
    r.preCheck = { fingerprints: before, matched: new Map(), compared: 0 };
  }
  async function openNewRows() {
    if (r.o.gateByKey === false || r.m.options.ddl === "replicate" || r.reverse) return;
    // Written until now and not taken by key (no usable key): their rows older than a snapshot taken now are summed now; the
    // fence hashes only the rows written since (../verify/newRows.ts). Before the catch-up below (a whole-table hash on both
    // servers: apply would fall behind during it), so the rows since are the catch-up's seconds and what follows. Best effort.
    const keyedNow = new Set(r.keyCheck?.keyed ?? []);
    // With --verify hashes every table is hashed: then only the busy ones (the others' pre-check stands unless written again).
    const unkeyed = tables.filter((t) => { const k = `${t.schema}.${t.name}`;
      return t.kind === "r" && !t.unlogged && hashed.has(k) && !keyedNow.has(k) && (busy(t) || r.verifyMode !== "hashes"); });
    r.newRows = await NewRowsCheck.open(r.verifySessions[r.verifySessions.length - 1], unkeyed.map((t) => `${t.schema}.${t.name}`)).catch(() => undefined);
  }
  // The held snapshots moved forward after the whole-table pass and again after the catch-up (byKey.ts rebase): vacuum
  // and pruning on both servers are then held back from there, not from the witness's creation (the subscription's
  // apply worker fell behind behind a held snapshot). Its new source session is pgferry's own: the freeze spares it.
  const rebase = async () => {
    const before = r.keyCheck!.heldSourcePid, pid = await r.keyCheck!.rebase();
    const own = ownSourceSessions.get(r.src);
    if (pid && own) { if (before) own.delete(before); own.add(pid); }
  };
  await byKeyBaseline;
  if (r.keyCheck) {
    await rebase();
    // The keys changed so far, and their rows in the held snapshots, read now rather than during the freeze; every key's
    // row read in fresh snapshots T1 (the fence reads only the keys changed after T1); then the target catches up — last,
    // so the freeze's drain is only what arrived since (the reads above take seconds, during which apply may fall
    // behind) — and the keys changed meanwhile are read in the held snapshots.
    await r.keyCheck.collect();
    await r.keyCheck.readOld();
    await r.keyCheck.preRead(r.verifySessions[0]);
  }
  await openNewRows();
  if (r.keyCheck) {
    const now = (await r.src.query(`SELECT pg_current_wal_lsn()::text AS l`)).rows[0].l as string;
    await r.cdc.drain(r, now, { timeoutSec: Math.min(r.o.timeoutSec, WARM_UP_DRAIN_SEC), stallTimeoutSec: r.stallSec })
      .catch(() => undefined); // the fence drains what is left
    await rebase(); // also reads the keys changed meanwhile in the held snapshots
  }
  r.sequences = await sequencesOf(r.src, r.m);
  await warmSequences(r.src, r.tgt, r.sequences);
  if (r.keyCheck) {
    // Last before the freeze: the keys changed since their first look (during the reads and the catch-up above: seconds
    // of writes) looked at again in fresh snapshots, while each pass shrinks what is left (a pass reads what changed
    // during the one before), so the fence reads only the keys changed in the last moments.
    for (let pass = 0, before = Infinity; pass < 3; pass++) {
      await r.keyCheck.collect();
      const looked = await r.keyCheck.preRead(r.verifySessions[0], true);
      if (looked < 200 || looked > before / 2) break;
      before = looked;
    }
  }
}

/**
 * What the migrated-table list depends on, in one value: every table and partitioned table of the selected schemas
 * (oid, name, kind, persistence, partition or not, replica identity) — a table created, dropped, renamed or made
 * unlogged since changes it.
 */
async function tableSetOf(src: Client, sel: TableSelection): Promise<string> {
  const schemas = sel.schemas.length ? sel.schemas : await userSchemas(src);
  return (await src.query(`SELECT md5(coalesce(string_agg(c.oid::text || ' ' || n.nspname || '.' || c.relname || ' ' || c.relkind::text || c.relpersistence::text ||
      c.relispartition::text || c.relreplident::text || c.relnatts::text, ',' ORDER BY c.oid), '')) AS h
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY($1)`, [schemas])).rows[0].h;
}

/**
 * Recorded before the freeze itself, so an interrupted freeze is known to a re-run, --abort and cleanup.
 * The previous settings are recorded with sourceFrozen, before anything changes on the source.
 */
async function recordFreeze(r: CutoverRun): Promise<void> {
  r.freeze = r.o.freezeWrites || r.m.sourceFrozen;
  const frozenAt = r.m.freezeStartedAt ?? new Date();
  const freezeSaved = r.freeze ? r.m.freezeSaved ?? await readFreezeSettings(r.src) : null;
  await updateMigration(r.tgt, r.name, { phase: "CuttingOver", error: null, freezeStartedAt: frozenAt, sourceFrozen: r.freeze, freezeSaved });
}

/** Fence → drain → pause the consumer → nothing committed after the fence? Else round again (at most MAX_FENCES). */
async function fenceRounds(r: CutoverRun, clock: StepClock): Promise<void> {
  const { src, tgt, o, name, freeze } = r;
  const names = objectNames(name);
  // Writes are stopped: the gate's check by key decodes the witness and reads the held rows meanwhile (its own connections).
  r.keyCheck?.prefetch();
  for (;;) {
    r.fenceAttempts++;
    if ((await readMigration(tgt, name))!.replicationPaused) await resumeReplication(r);
    const fence = await readFence(src); // ./fence.ts: every commit the source shows ends at or before it
    await updateMigration(tgt, name, { fenceLsn: fence });
    r.say(`waiting for the target to apply everything up to ${fence}`);
    try {
      await clock.add("drainMs", () => r.cdc.drain(r, fence, { timeoutSec: o.timeoutSec, writeThroughFreeze: !!o.reverse, stallTimeoutSec: r.stallSec }));
    } catch (e) {
      await rollbackToStreaming(r, e);
      throw e;
    }
    const late = await clock.add("fenceCheckMs", async () => {
      r.say("pausing replication and checking that nothing was written after the fence");
      await pauseReplication(r);
      return changesAfterFence(src, tgt, name, names.slot, names.publication, fence);
    });
    await r.saveTimings();
    if (!late.length) return;
    const who = await otherSessions(src);
    const detail = `${late.map((l) => `${l.changes} change(s) to ${l.table}`).join(", ")} committed after the fence ${fence}` +
      (who.length ? `; sessions connected to the source: ${describeSessions(who)}` : "");
    if (r.fenceAttempts >= MAX_FENCES) {
      const err = new PgferryError("writes_after_fence", `writes kept arriving on the source after ${r.fenceAttempts} fences: ${detail}. ` +
        `${freeze ? "A session lifted read-only itself (SET default_transaction_read_only = off, BEGIN READ WRITE) or is a superuser's" :
          "The application has not stopped writing"}; the freeze was rolled back and the migration keeps streaming, nothing is lost. ` +
        `Fix: stop that writer (the sessions above), then run pgferry cutover again${freeze ? "" : ", or use --freeze-writes"}`);
      await rollbackToStreaming(r, err);
      throw err;
    }
    r.say(`writes arrived after the fence (${detail}); ${freeze ? "ending sessions again" : "waiting for writes to stop"} and taking a new fence`);
    try {
      if (freeze) r.endedSessions.push(...(await endSessions(src)).ended);
      else await waitForQuiet(src, r.graceMs);
    } catch (e) {
      await rollbackToStreaming(r, e);
      throw e;
    }
  }
}

/**
 * Leaf partitions truncated (or rewritten) on the source since the load: a TRUNCATE of one leaf is not replicated
 * (publish_via_partition_root), so the target may still hold its old rows. Writes are stopped: a copy is exact.
 */
async function truncatedPartitions(r: CutoverRun): Promise<StepOutcome> {
  const rewritten = new Set(await rewrittenPartitions(r.src, r.tgt, r.name));
  const leaves = r.selected.filter((t) => rewritten.has(`${t.schema}.${t.name}`));
  if (!leaves.length) return "nothing";
  const list = leaves.map((t) => `${t.schema}.${t.name}`);
  r.say(`copying ${list.length} partition(s) again: truncated or rewritten on the source since the load, and a TRUNCATE of a single ` +
    `partition is not replicated: ${list.join(", ")}`);
  const copied = await runLoad(r.source, r.target, undefined, leaves, r.o.jobs, undefined, r.stallSec);
  r.truncatedPartitions = { tables: list, rows: copied.rows };
}

/** Unlogged tables: no slot sees their changes, but writes are stopped now, so a copy is exact. */
async function unloggedTables(r: CutoverRun): Promise<StepOutcome> {
  const sel = selectionWithJoined(r.m.options);
  // The warm-up's list when the source's set of tables is the same as then (listing them costs a file size per table);
  // listed again when there are unlogged tables, which are copied now with their columns as they are now.
  const warm = r.warmTables && !r.warmTables.tables.some((t) => t.unlogged) ? r.warmTables : undefined;
  r.selected = warm && warm.tableSet === await tableSetOf(r.src, sel) ? warm.tables : await migratedTables(r.src, sel);
  const unloggedTables = copyableTables(r.selected).filter((t) => t.unlogged);
  r.unloggedHow = r.o.unlogged ?? r.m.options.unlogged ?? "copy";
  if (!unloggedTables.length) return "nothing";
  const list = unloggedTables.map((t) => `${t.schema}.${t.name}`);
  if (r.unloggedHow === "skip") {
    r.say(`warning: ${list.length} unlogged table(s) are not carried and not verified (unlogged: skip): ${list.join(", ")}`);
    r.unlogged = { action: "skipped", tables: list };
    return "nothing";
  }
  r.say(`copying ${list.length} unlogged table(s) again (logical replication cannot see their changes): ${list.join(", ")}`);
  const copied = await runLoad(r.source, r.target, undefined, unloggedTables, r.o.jobs, undefined, r.stallSec);
  r.unlogged = { action: "copied", tables: list, rows: copied.rows };
}

/** The gate's comparison: the target against the (frozen) source, before anything is dropped. */
async function verifyTarget(r: CutoverRun): Promise<void> {
  const tables = r.selected.filter((t) => !(r.unloggedHow === "skip" && t.unlogged && t.kind === "r")).map((t) => `${t.schema}.${t.name}`);
  // counts: row counts of every table, and content hashes of the tables changed during CDC (a lost UPDATE keeps the count).
  const sessions = await healthy(r.verifySessions) ? r.verifySessions : undefined;
  // The pre-check's verdicts on tables unchanged on both sides since it ran: not read again (their structure is). The
  // fingerprints are read on a gate session pair while this pair reads what changed during CDC.
  const fingerprintsOn = sessions?.[0] ?? { source: r.src, target: r.tgt };
  // The source's fingerprints stand on its statistics, which a session flushes at exit, or at most 10 s after going
  // idle (PGSTAT_IDLE_INTERVAL), and not while it is busy or in a transaction: a session that may still hold a
  // change's counts makes every pre-check verdict unsafe, so then every table is compared now. Read BEFORE the
  // fingerprints: a session gone by then flushed its counts before it left, so they are in what is read after; one
  // that leaves between the two reads (an application shutting down during the cutover) is a holder here — read
  // after them, it was in neither, and a table it changed kept its pre-check verdict.
  const holders = r.preCheck ? await statisticsHolders(fingerprintsOn.source, r.src) : [];
  const [touched, now] = await Promise.all([
    r.verifyMode === "hashes" ? [] : touchedTables(r.src, r.tgt, r.name, r.selected).then((t) => [...t]),
    r.preCheck ? readFingerprints(fingerprintsOn.source, fingerprintsOn.target, r.name, r.m.mode === "stream", r.selected) : undefined,
  ]);
  if (holders.length) r.say(`comparing every table at the fence: ${describeSessions(holders)} may still hold unflushed statistics ` +
    `(the pre-check's verdicts stand only when the source's sessions were ended by --freeze-writes or idle for ${STATS_FLUSHED_AFTER_S} s); ` +
    `the tables they wrote last may also be missing from those hashed as changed during CDC${r.verifyMode === "hashes" ? "" : " (--verify hashes hashes every table)"}`);
  const preChecked = now && !holders.length ? stillValid(r.preCheck, now) : undefined;
  // Tables checked by key stand on the witness slot's changes, not on statistics: used whatever the holders above.
  if (r.keyCheck || r.newRows) {
    const t0 = Date.now();
    const pairs = sessions ?? await openVerifySessions(r.source, r.target, 1);
    // The check by key on the first pair; the new-rows check beside it on the last (after it when there is one pair).
    const byKey = async () => {
      if (!r.keyCheck) return;
      r.byKey = await r.keyCheck.finish(pairs[0]);
      r.byKey.seconds = (Date.now() - t0) / 1000;
    };
    const newRows = async () => { if (r.newRows) r.newRowsResult = await r.newRows.finish(pairs[pairs.length - 1]); };
    try {
      if (pairs.length > 1) await Promise.all([byKey(), newRows()]);
      else { await byKey(); await newRows(); }
    } finally { if (!sessions) await closeVerifySessions(pairs); }
    await r.keyCheck?.close();
    const by = r.byKey, nr = r.newRowsResult;
    // A table the new-rows check compared is no fallback of the check by key.
    if (by && nr) by.fallback = by.fallback.filter((f) => !nr.known.has(f.table));
    if (by?.tables.length) r.say(`compared ${by.tables.length} table(s) by the keys changed since the pre-check: ` +
      by.tables.map((t) => `${t.table} (${t.keys} key(s))`).join(", ") + `; ${r.keyCheck!.reread} key(s) changed after the last look before the freeze read again (${by.seconds!.toFixed(2)} s: ${r.keyCheck!.phases})`);
    if (by?.fallback.length) r.say(`hashing ${by.fallback.length} table(s) whole at the fence instead of by key: ` +
      by.fallback.map((f) => `${f.table} (${f.reason})`).join(", "));
    if (nr?.tables.length) r.say(`compared ${nr.tables.length} table(s) without a usable key by the rows written since the snapshot before the freeze: ` +
      nr.tables.map((t) => `${t.table} (${t.sourceNewRows} new row(s) on the source, ${t.targetNewRows} on the target)`).join(", ") +
      ` (${((Date.now() - t0) / 1000).toFixed(2)} s with the check by key)`);
    if (nr?.fallback.length) r.say(`hashing ${nr.fallback.length} table(s) whole at the fence instead of by their new rows: ` +
      nr.fallback.map((f) => `${f.table} (${f.reason})`).join(", "));
  }
  const known = preChecked || r.byKey?.known.size || r.newRowsResult?.known.size
    ? new Map([...(preChecked ?? []), ...(r.byKey?.known ?? []), ...(r.newRowsResult?.known ?? [])]) : undefined;
  const unchangedByKey = r.byKey?.tables.filter((t) => t.keys === 0).length ?? 0;
  r.preChecked = preChecked || unchangedByKey ? (preChecked?.size ?? 0) + unchangedByKey : undefined;
  r.say(`verifying the target against the source (${r.verifyMode === "hashes" ? "row counts and content hashes" :
    `row counts, and content hashes of the ${touched.length} table(s) changed during replication`}` +
    `${r.preChecked !== undefined ? `; ${r.preChecked} of ${tables.length} table(s) compared while streaming and unchanged since` : ""})`);
  r.report = await verifyMigration(r.source, r.target, { onlyTables: tables, hashes: r.verifyMode === "hashes", hashTables: touched, jobs: r.o.jobs,
    // Large objects: compared again after the step that carried them, unless it found none on either side moments ago.
    largeObjects: r.largeObjectsCarried && !(r.largeObjects && r.largeObjects.compared === 0 && r.largeObjects.unlinked === 0), sessions, known,
    catalogs: r.catalogs });
}

/** The gate's verdict: a difference leaves the source frozen, replication paused and the slot kept (phase VerifyFailed). */
async function gate(r: CutoverRun): Promise<void> {
  const report = r.report!;
  if (!report.ok) {
    const bad = report.tables.filter((t) => !t.ok).map((t) => t.table);
    const msg = `verification before completing the cutover found ${report.problems.length} difference(s) in ${bad.length ? bad.join(", ") : "the migrated tables"}: ` +
      `${report.problems.join("; ")}. Nothing was dropped: ${r.freeze ? "the source stays frozen" : "writes must stay stopped"}, replication is paused ` +
      `and the slot kept (phase VerifyFailed). Fix: repair the target (e.g. copy the differing rows from the source) and run pgferry cutover ` +
      `again, which re-verifies; or run pgferry cutover --abort to ${r.freeze ? "unfreeze the source and " : ""}go back to streaming`;
    await updateMigration(r.tgt, r.name, { phase: "VerifyFailed", error: msg });
    throw new PgferryError("verify_failed", msg);
  }
  r.verification = { mode: r.verifyMode, tables: report.tables.length, hashedTables: report.tables.filter((t) => t.sourceHash !== undefined).length,
    seconds: report.seconds, preChecked: r.preChecked,
    byKey: r.byKey && (r.byKey.tables.length || r.byKey.fallback.length) ? { tables: r.byKey.tables, fallback: r.byKey.fallback, seconds: r.byKey.seconds } : undefined,
    newRows: r.newRowsResult && (r.newRowsResult.tables.length || r.newRowsResult.fallback.length)
      ? { tables: r.newRowsResult.tables, fallback: r.newRowsResult.fallback } : undefined };
}

/** The slot and publication dropped; without the publication the source needs none of what pgferry changed there (REPLICA IDENTITY FULL): undone now. */
async function dropSlotAndRestore(r: CutoverRun): Promise<void> {
  const names = objectNames(r.name);
  await dropSlot(r.src, names.slot, r.cdc.slotDropWaitMs);
  await dropPublication(r.src, names.publication);
  const undo = await restoreSourceChanges(r.src, r.tgt, r.name);
  if (undo.failed.length) {
    throw new PgferryError("restore_failed", `replication has ended, but pgferry could not restore what it changed on the source: ` +
      `${undo.failed.map((f) => `${f.object} (${f.error})`).join(", ")}; fix: run pgferry cutover again as the tables' owner or a superuser, ` +
      `or run on the source: ${describeSourceChanges(undo.failed)}`);
  }
  if (undo.restored.length) r.say(`restored on the source (${undo.restored.length}): ${describeSourceChanges(undo.restored, 10)}`);
  r.restored = undo.restored;
}

/** Phase Completed, with the downtime (writes stopped → now) and its breakdown. */
async function complete(r: CutoverRun): Promise<void> {
  r.stillConnected = await otherSessions(r.src);
  const completedAt = new Date();
  const frozenAt = (await readMigration(r.tgt, r.name))!.freezeStartedAt;
  r.downtimeMs = frozenAt ? completedAt.getTime() - new Date(frozenAt).getTime() : undefined;
  // Releasing after the downtime: the record keeps saying replication is paused until it has ended (RELEASE_STEPS), so a
  // re-run after a kill in between finishes it.
  const releasing = !!r.releaseAfter;
  await updateMigration(r.tgt, r.name, { phase: "Completed", completedAt, downtimeMs: r.downtimeMs ?? null, cutoverTimings: r.timings, error: null,
    replicationPaused: releasing });
  if (releasing) r.say(`cutover complete (downtime ${((r.downtimeMs ?? 0) / 1000).toFixed(2)} s): the target takes writes; dropping the slot and publication on the source now`);
}

/**
 * pgferry's own source sessions of a cutover in progress (its verification sessions), by that cutover's source
 * session: the freeze does not end them. Keyed per cutover, so another server's session with the same pid is not spared.
 */
const ownSourceSessions = new WeakMap<Client, Set<number>>();

/** Every pre-opened verification session still answers (else the gate opens new ones). */
async function healthy(pairs: VerifySessionPair[]): Promise<boolean> {
  try {
    await Promise.all(pairs.flatMap((p) => [p.source.query("SELECT 1"), p.target.query("SELECT 1")]));
    return pairs.length > 0;
  } catch {
    return false;
  }
}

/**
 * `pgferry cutover --abort`: give up this cutover attempt before the point of no return — unfreeze the
 * source (restoring exactly the settings the freeze changed), resume replication, back to ReadyToCutover.
 * Once replication has ended (the gate passed and the slot is dropped) there is nothing to go back to.
 */
export async function abortCutover(source: Endpoint, target: Endpoint, name: string, o: { reverse?: boolean } = {}): Promise<AbortResult> {
  const tgt = o.reverse ? await connectWritable(target) : await connect(target);
  let src: Client | undefined;
  try {
    const m = await readMigration(tgt, name);
    if (!m) throw new PgferryError("not_found", `no migration "${name}" on the ${target.label}`);
    if (m.phase === "Completed") {
      throw new PgferryError("already_completed", `migration "${name}" is Completed: the cutover cannot be aborted any more; ` +
        `to move back, use the rollback window if the cutover opened one (pgferry rollback), or migrate in the other direction`);
    }
    if (!["ReadyToCutover", "CuttingOver", "VerifyFailed"].includes(m.phase)) {
      throw new PgferryError("not_cutting_over", `migration "${name}" is in phase ${m.phase}; there is no cutover to abort`);
    }
    if (!(await tryLockMigration(tgt, name))) {
      throw new PgferryError("busy", `another pgferry process is working on migration "${name}" (a cutover in progress?); stop it first, then abort`);
    }
    await ensureControlSchema(tgt);
    src = await connectWritable(source);
    const cdc = cdcFor(m.mode);
    const replicating = await cdc.replicating({ src, tgt, source, target, name });
    if (!replicating && m.phase !== "ReadyToCutover") {
      throw new PgferryError("past_point_of_no_return", `replication of migration "${name}" has already ended (the verification passed and the ` +
        `slot was dropped); the cutover can only be finished: run pgferry cutover`);
    }
    const unfroze = m.sourceFrozen;
    const resumed = m.replicationPaused;
    const full = (await readMigration(tgt, name))!;
    await rollbackToStreaming({ src, tgt, source, target, name, cdc, freeze: full.sourceFrozen }, undefined);
    return { name, phase: "ReadyToCutover", previousPhase: m.phase, unfroze, resumedReplication: resumed };
  } finally {
    await tgt.end().catch(() => undefined);
    await src?.end().catch(() => undefined);
  }
}

interface Ctx extends CdcContext { cdc: Cdc; freeze: boolean }

/** Back to streaming: consumer resumed, source unfrozen exactly as it was, phase ReadyToCutover. Nothing is lost: the slot was kept. */
async function rollbackToStreaming(c: Ctx, why: unknown): Promise<void> {
  const m = (await readMigration(c.tgt, c.name))!;
  if (m.replicationPaused) await resumeReplication(c);
  if (m.sourceFrozen) await unfreezeSource(c.src, c.source, m.freezeSaved);
  await updateMigration(c.tgt, c.name, { phase: "ReadyToCutover", freezeStartedAt: null, sourceFrozen: false, freezeSaved: null, fenceLsn: null,
    error: why ? `last cutover attempt: ${(why as Error).message ?? why}` : null });
}

/**
 * The default_transaction_read_only settings the freeze will change, with their current values: the
 * database's own, and each role whose own setting (ALTER ROLE r SET, or r IN DATABASE d SET) would
 * override the database's default with something other than on. ALTER ROLE ALL SET ranks below the
 * database's setting and needs nothing.
 */
export async function readFreezeSettings(src: Client): Promise<SavedSetting[]> {
  const r = await src.query(`SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END AS role, s.setdatabase <> 0 AS in_db,
      (SELECT substr(x, length('default_transaction_read_only=') + 1) FROM unnest(s.setconfig) x
        WHERE x LIKE 'default\\_transaction\\_read\\_only=%') AS value
    FROM pg_db_role_setting s
    WHERE s.setdatabase IN (0, (SELECT oid FROM pg_database WHERE datname = current_database())) AND NOT (s.setrole = 0 AND s.setdatabase = 0)`);
  const dbLevel = r.rows.find((x) => x.role === null && x.in_db);
  const saved: SavedSetting[] = [{ role: null, previous: dbLevel?.value ?? null }];
  const roles = new Set(r.rows.filter((x) => x.role !== null && x.value !== null).map((x) => x.role as string));
  for (const role of [...roles].sort()) {
    const inDb = r.rows.find((x) => x.role === role && x.in_db && x.value !== null);
    const global = r.rows.find((x) => x.role === role && !x.in_db && x.value !== null);
    if (truthy(inDb ? inDb.value : global.value)) continue; // already read-only here
    saved.push({ role, previous: inDb ? inDb.value : null });
  }
  return saved;
}

const truthy = (v: string | null | undefined) => !!v && /^(on|true|yes|1|t|y)$/i.test(v.trim());

/**
 * Read-only for every new session of the database — including roles whose own setting (ALTER ROLE r
 * SET …, ALTER ROLE r IN DATABASE d SET … = off) would override the database default: those get a
 * role-in-this-database setting, the most specific level, so other databases of the server are not
 * touched. The previous values are recorded on the target before anything changes, and all settings
 * change in one source transaction. Then sessions get the grace period to finish their transaction,
 * and every other client session is ended (existing sessions keep the settings they started with).
 */
export async function freezeSource(src: Client, tgt: Client, source: Endpoint, name: string, graceMs: number,
  say: (m: string) => void = () => undefined): Promise<{ ended: EndedSession[]; neutralisedRoles: string[]; notEnded: SessionInfo[] }> {
  const db = quoteIdent(source.database);
  const saved = (await readMigration(tgt, name))!.freezeSaved ?? [];
  const neutralisedRoles = saved.filter((s) => s.role !== null).map((s) => s.role!);
  try {
    await src.query("BEGIN");
    for (const s of saved) {
      if (s.role !== null) await src.query(`ALTER ROLE ${quoteIdent(s.role)} IN DATABASE ${db} SET default_transaction_read_only = on`);
    }
    await src.query(`ALTER DATABASE ${db} SET default_transaction_read_only = on`);
    await src.query("COMMIT");
  } catch (e) {
    await src.query("ROLLBACK").catch(() => undefined);
    await updateMigration(tgt, name, { freezeSaved: null, sourceFrozen: false }); // nothing was changed: nothing to undo
    const roles = neutralisedRoles.length ? ` (and the roles ${neutralisedRoles.join(", ")}, whose own default_transaction_read_only setting overrides the database's)` : "";
    throw new PgferryError("freeze_failed", `cannot make the source database read-only${roles}: ${(e as Error).message}; ` +
      `fix: run cutover as the database owner with CREATEROLE, or a superuser; or remove the role overrides (ALTER ROLE … RESET default_transaction_read_only); ` +
      `or stop the application yourself and omit --freeze-writes`);
  }
  if (neutralisedRoles.length) say(`made ${neutralisedRoles.join(", ")} read-only in this database (their own setting overrode the database's)`);
  // Grace: the transactions open now may finish (up to graceMs); then every session is ended. Only those
  // transactions are waited for — an application that keeps starting short ones does not hold the freeze up,
  // and idle sessions lose nothing by being ended.
  const deadline = Date.now() + graceMs;
  // pgferry's own sessions (the gate's, one of which holds a snapshot open until the fence) are not waited for.
  const own = ownSourceSessions.get(src) ?? new Set<number>();
  const openXacts = async () => new Map((await src.query(`SELECT pid, xact_start::text AS x FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND xact_start IS NOT NULL`)).rows
    .filter((r) => !own.has(r.pid)).map((r) => [r.pid as number, r.x as string]));
  const atFreeze = await openXacts();
  while (Date.now() < deadline) {
    const now = await openXacts();
    if (![...atFreeze].some(([pid, x]) => now.get(pid) === x)) break;
    await sleep(50);
  }
  const { ended, notEnded } = await endSessions(src);
  return { ended, neutralisedRoles, notEnded };
}

/** Undo a freeze: the database's and each neutralised role's previous setting, in one transaction. */
export async function unfreezeSource(src: Client, source: Endpoint, saved?: SavedSetting[] | null): Promise<void> {
  const sql = undoSql(source, saved);
  try {
    for (const q of sql) await src.query(q);
  } catch (e) {
    await src.query("ROLLBACK").catch(() => undefined);
    throw new PgferryError("unfreeze_failed", `could not make the source writable again: ${(e as Error).message}; fix: run as a superuser: ` +
      `${sql.join(" ")}`);
  }
}

/**
 * The statements that restore exactly the settings recorded before the freeze, as one transaction. It is
 * begun READ WRITE: on the frozen database every new transaction is read-only, and ALTER DATABASE in a
 * read-only transaction is refused.
 */
export function undoSql(source: Endpoint, saved?: SavedSetting[] | null): string[] {
  const db = quoteIdent(source.database);
  const list = saved?.length ? saved : [{ role: null, previous: null }];
  return ["BEGIN READ WRITE;", ...list.map((s) => {
    const on = s.role === null ? `ALTER DATABASE ${db}` : `ALTER ROLE ${quoteIdent(s.role)} IN DATABASE ${db}`;
    return s.previous === null ? `${on} RESET default_transaction_read_only;` : `${on} SET default_transaction_read_only = ${quoteLiteral(s.previous)};`;
  }), "COMMIT;"];
}

const SESSIONS_SQL = `SELECT a.pid, a.usename AS user, a.application_name AS app, a.client_addr::text AS addr, coalesce(r.rolsuper, false) AS superuser,
    a.state, a.backend_xid IS NOT NULL AS writing, left(a.query, 80) AS query
  FROM pg_stat_activity a LEFT JOIN pg_roles r ON r.oid = a.usesysid
  WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'`;

const toSession = (x: any): SessionInfo => ({ pid: x.pid, user: x.user, application: x.app, clientAddr: x.addr ?? undefined, superuser: x.superuser,
  state: x.state ?? undefined });

/** Seconds after which an idle session has flushed its statistics: PostgreSQL's PGSTAT_IDLE_INTERVAL (10 s) and a margin. */
const STATS_FLUSHED_AFTER_S = 12;

/**
 * Sessions of the source database, other than pgferry's, whose statistics may not be flushed yet: any that is not
 * idle, or went idle less than STATS_FLUSHED_AFTER_S ago (client backends and background workers that run user code;
 * walsenders and autovacuum change no user rows).
 */
async function statisticsHolders(on: Client, src: Client): Promise<SessionInfo[]> {
  const own = ownSourceSessions.get(src) ?? new Set<number>();
  const rows = (await on.query(`SELECT a.pid, a.usename AS user, a.application_name AS app, a.client_addr::text AS addr, false AS superuser, a.state
    FROM pg_stat_activity a WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.pid <> ALL($1::int[])
      AND a.backend_type NOT IN ('walsender', 'autovacuum worker', 'logical replication worker', 'parallel worker')
      AND NOT (a.state = 'idle' AND a.state_change < clock_timestamp() - make_interval(secs => $2))`,
    [[...own, backendPid(src) ?? 0], STATS_FLUSHED_AFTER_S])).rows;
  return rows.map(toSession);
}

/** Client sessions of the source database other than ours (walsenders and background workers excepted). */
async function otherSessions(src: Client): Promise<SessionInfo[]> {
  const own = ownSourceSessions.get(src);
  return (await src.query(SESSIONS_SQL)).rows.map(toSession).filter((x) => !own?.has(x.pid));
}

export function describeSessions(s: SessionInfo[]): string {
  return s.map((x) => `${x.user}${x.superuser ? " (superuser)" : ""}/${x.application || "-"} pid ${x.pid}${x.clientAddr ? ` from ${x.clientAddr}` : ""}` +
    `${x.state ? `, ${x.state}` : ""}`).join(", ");
}

/**
 * End every other client session, one by one: a role without superuser may not end a superuser's
 * session (nor, without pg_signal_backend, another role's); those are returned as not ended.
 */
async function endSessions(src: Client): Promise<{ ended: EndedSession[]; notEnded: SessionInfo[] }> {
  const ended: EndedSession[] = [], notEnded: SessionInfo[] = [];
  for (const s of await otherSessions(src)) {
    try {
      const r = await src.query(`SELECT pg_terminate_backend($1) AS ok`, [s.pid]);
      (r.rows[0].ok ? ended : notEnded).push(s);
    } catch {
      notEnded.push(s);
    }
  }
  return { ended, notEnded };
}

/**
 * Without --freeze-writes: wait (up to graceMs) until the source database has been quiet for a second,
 * else refuse, naming the sessions that write. Polled every 100 ms: a session of this database is writing
 * when it holds a transaction id (an open transaction that wrote), or when it ran a statement since the
 * previous poll while a transaction that wrote completed in between (the xid horizon moved). Transaction
 * ids are cluster-wide, so writes in other databases of the server move the horizon too; they count only
 * together with activity in this database, and readers alone never count. Commits that slip between polls
 * are caught exactly by the slot check after the fence.
 */
async function waitForQuiet(src: Client, graceMs: number, settleMs = 1000): Promise<void> {
  const deadline = Date.now() + Math.max(graceMs, settleMs);
  const poll = async (since: string | null) => {
    const r = await src.query(`SELECT pg_snapshot_xmax(pg_current_snapshot())::text AS xmax, clock_timestamp()::text AS at`);
    const sessions = (await src.query(SESSIONS_SQL.replace("a.state,", "a.state, a.state = 'active' OR a.state_change > $1::timestamptz AS busy,"),
      [since ?? "infinity"])).rows;
    return { xmax: r.rows[0].xmax as string, at: r.rows[0].at as string, sessions };
  };
  let prev = await poll(null);
  let quietSince = Date.now();
  const writers = new Map<number, SessionInfo & { query?: string }>();
  for (;;) {
    await sleep(100);
    const now = await poll(prev.at);
    const moved = now.xmax !== prev.xmax;
    const busy = now.sessions.filter((x) => x.writing || (moved && x.busy));
    if (busy.length) {
      quietSince = Date.now();
      for (const x of busy) writers.set(x.pid, { ...toSession(x), query: x.query });
    }
    prev = now;
    if (Date.now() - quietSince >= settleMs) return;
    if (Date.now() > deadline) {
      const list = [...writers.values()];
      throw new PgferryError("writes_active", `the source is still being written to after waiting ${(graceMs / 1000).toFixed(0)} s; ` +
        `writing sessions: ${list.map((w) => `${describeSessions([w])}${w.query ? ` running "${w.query.replace(/\s+/g, " ")}"` : ""}`).join("; ")}. ` +
        `Nothing was changed and the migration keeps streaming. Fix: stop the application (or those sessions), or let pgferry freeze the ` +
        `source with --freeze-writes, then run pgferry cutover again`);
    }
  }
}

/**
 * Pause the slot's consumer so the slot can be inspected and the target compared with a still source:
 * the subscription is disabled; a stream agent is told to wait (recorded state) and its walsender ended.
 * The intent is recorded first, so a re-run or --abort resumes it.
 */
async function pauseReplication(c: Ctx): Promise<void> {
  await updateMigration(c.tgt, c.name, { replicationPaused: true });
  await c.cdc.pause(c);
}

async function resumeReplication(c: Ctx): Promise<void> {
  await c.cdc.resume(c);
  await updateMigration(c.tgt, c.name, { replicationPaused: false });
}

/**
 * The refreshes the cutover runs, made to match the source now (writes stopped, DDL applied): start recorded one per
 * materialized view populated then; one created while streaming (replayed by --ddl replicate, or repeated on the target
 * by the user under detect) gets one too, and one dropped or emptied (REFRESH … WITH NO DATA) on the source since loses
 * its own — else the first would keep the contents of its creation while its source definition moves on (verify then
 * finds it different), and the second would fail the cutover or fill a view the source leaves empty. Only views the
 * target has are refreshed; a populated source view the target lacks is named.
 */
async function reconcileMatviewRefreshes(r: CutoverRun): Promise<void> {
  const populated = await migratedPopulatedMatviews(r.src, selectionWithJoined(r.m.options));
  const onTarget = new Set((await r.tgt.query(`SELECT n.nspname || '.' || c.relname AS v FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'm'`)).rows.map((x) => x.v as string));
  const missing = populated.filter((v) => !onTarget.has(`${v.schema}.${v.name}`));
  const { added, removed } = await reconcileRefreshEntries(r.tgt, r.name, "cutover",
    matviewEntries(populated.filter((v) => onTarget.has(`${v.schema}.${v.name}`))));
  if (added.length) r.say(`refreshing ${added.length} materialized view(s) created since start too: ${added.join(", ")}`);
  if (removed.length) r.say(`not refreshing ${removed.length} materialized view(s) dropped or emptied on the source since start: ${removed.join(", ")}`);
  if (missing.length) r.say(`${missing.length} populated materialized view(s) of the source have no copy on the target and are not carried: ` +
    `${missing.map((v) => displayName(v.schema, v.name)).join(", ")} (created outside what the migration replicates; create and refresh them on the target)`);
}

async function sequencesOf(src: Client, m: MigrationRecord): Promise<string[]> {
  return (await migratedSequences(src, selectionWithJoined(m.options))).map((s) => qualified(s.schema, s.name));
}

const readSequencesSql = (seqs: string[]) => unionAlls(seqs.map((q) => `SELECT ${quoteLiteral(q)} AS n, last_value::text AS v, is_called AS c FROM ${q}`));

/**
 * Every sequence's state in one statement: pg_sequence_last_value() for all (one plan, where SELECTs from 2,000
 * sequences in UNION ALLs spend a fifth of a second planning), and the relation itself read for those it gives NULL
 * (never called: their last_value is still needed for setval(…, false)).
 */
async function readSequenceStates(c: Client, seqs: string[]): Promise<SequenceState[]> {
  const r = await c.query(`SELECT n, pg_sequence_last_value(n::regclass)::text AS v FROM unnest($1::text[]) AS x(n)`, [seqs]);
  const uncalled = r.rows.filter((x) => x.v === null).map((x) => x.n as string);
  const read = uncalled.length ? (await batchedStatements(c, readSequencesSql(uncalled))).flat() : [];
  return [...r.rows.filter((x) => x.v !== null).map((x) => ({ n: x.n as string, v: x.v as string, c: true })), ...read];
}

/**
 * Before the freeze: every sequence set on the target to the source's state now (the target's sequences are not used
 * until Completed, and apply never advances them), so at the fence only those that moved since are set. Best effort:
 * the sync at the fence compares them all again.
 */
async function warmSequences(src: Client, tgt: Client, seqs: string[]): Promise<void> {
  await syncSequences(src, tgt, seqs).catch(() => undefined);
}

type SequenceState = { n: string; v: string; c: boolean };

/**
 * Every sequence of the migrated schemas, set on the target to the source's state (owned or not, identity,
 * descending): all values read in one statement per side, both sides at once, and those that differ set in one
 * target statement, so the freeze does not grow with the number of sequences. Returns how many the target now
 * holds at the source's state: all of them.
 */
async function syncSequences(src: Client, tgt: Client, seqs: string[]): Promise<number> {
  if (!seqs.length) return 0;
  const [read, onTarget] = await Promise.allSettled([readSequenceStates(src, seqs), readSequenceStates(tgt, seqs)]);
  if (read.status === "rejected") {
    throw new PgferryError("sequence_read_failed", `cannot read the source's sequences: ${(read.reason as Error).message}; fix: GRANT SELECT ON ALL SEQUENCES ` +
      `IN SCHEMA … TO the migration's source role (or run cutover as their owner), then run pgferry cutover again`);
  }
  const values = read.value;
  if (onTarget.status === "rejected") {
    // A migrated sequence missing on the target is never skipped: the drift check before the freeze names it, and one
    // created on the source since (it needs DDL through the freeze) stops the sync here, naming it, before any is set.
    const missing = (await tgt.query(`SELECT n FROM unnest($1::text[]) n WHERE to_regclass(n) IS NULL`, [values.map((x) => x.n)])).rows.map((x) => x.n as string);
    if (missing.length) {
      throw new PgferryError("sequence_missing", `${missing.length} migrated sequence(s) do not exist on the target: ${missing.join(", ")}. Replication ` +
        `has ended and no sequence was set; fix: create them on the target (pg_dump --schema-only -t <sequence> on the source | psql on the target), ` +
        `then run pgferry cutover again, which continues with the sequence sync`);
    }
  }
  const now = new Map((onTarget.status === "fulfilled" ? onTarget.value : []).map((x) => [x.n, `${x.v}/${x.c}`]));
  const differ = values.filter((x) => now.get(x.n) !== `${x.v}/${x.c}`);
  if (differ.length) {
    await tgt.query(`SELECT count(setval(n::regclass, v::bigint, c)) FROM unnest($1::text[], $2::text[], $3::bool[]) AS x(n, v, c)`,
      [differ.map((x) => x.n), differ.map((x) => x.v), differ.map((x) => x.c)]);
  }
  return values.length;
}

function sleep(msec: number): Promise<void> {
  return new Promise((r) => setTimeout(r, msec));
}
