/**
 * The rollback window (`reverseReplication`): after a cutover, changes made on the new server (the
 * forward target) flow back to the old one (the forward source), so the application can return to it
 * without losing writes, until the user ends the window (`pgferry finish`).
 *
 * The reverse direction is a stream-mode migration of its own, named `<name>_rev`, with the roles
 * swapped: a publication and a pgoutput slot `pgferry_<name>_rev` on the new server, and its record —
 * with the applied position that makes apply exactly-once — in a control schema on the old server,
 * the database the reverse applier writes to, as for every stream migration. No subscription on the
 * old server: it may not reach the new one, and its database is read-only (the freeze); pgferry's
 * applier lifts read-only for its own session. So:
 *  - the reverse agent is `pgferry agent` on `<name>_rev` with the endpoints swapped;
 *  - `pgferry rollback` is the cutover of `<name>_rev` (freeze the new server, fence, drain, check,
 *    verify, sync sequences new → old), followed by unfreezing the old server exactly as it was;
 *  - `pgferry finish` drops the reverse slot and publication and the old server's control schema.
 *
 * The forward record (on the new server) says where the window is: opening → open → (rollingBack →
 * rolledBack) → closed. Every step is idempotent, so a killed cutover, rollback or finish re-runs.
 */
import { Client } from "pg";
import { CONTROL_SCHEMA } from "../catalog/catalog";
import { connectWritable, cutoverMigration, CutoverResult, unfreezeSource, VerifyMode } from "../cutover/cutover";
import { connect, Endpoint, quoteLiteral } from "../core/endpoint";
import { PgferryError } from "../core/errors";
import { bigIntToLsn, lsnDiff } from "../core/lsn";
import { objectNames } from "../core/options";
import { dropPublication, dropSlot, slotInfo } from "../copy/snapshot";
import { ensureControlSchema, readMigration, RollbackWindowState, tryLockMigration, updateMigration } from "../state/state";
import { readAppliedLsn } from "../cdc/stream/stream";
import { removeReverseState, reverseName } from "./window";

// The window's objects and its cutover step live in ./window.ts (imported by the cutover; this file imports the cutover).
export {
  abandonRollbackWindow, describeRollbackWindow, openRollbackWindow, removeReverseState, reverseName, rollbackWindowPreflight, rollbackWindowStatus,
} from "./window";
export type { RollbackWindowOpened, RollbackWindowStatus } from "./window";

export interface FinishResult {
  name: string;
  /** The window's state before finish (undefined: the migration never had one). */
  previousState?: RollbackWindowState;
  droppedSlot: boolean;
  droppedPublication: boolean;
  /** The reverse migration's record (and the control schema, once empty) removed from the old server. */
  removedReverseState: boolean;
  /** New-server WAL the reverse slot still held, not applied on the old server (bytes), now discarded. */
  discardedBytes?: number;
}

/**
 * `pgferry finish`: end the window. The new server is the only copy that matters from here: the reverse
 * slot and publication are dropped on it (a slot left behind would keep WAL until its disk fills), the
 * reverse record and the control schema are removed from the old server, and the window is marked
 * closed. Idempotent: a second finish (or one after a kill) drops what is left, nothing else.
 * `source`/`target` are the forward migration's (old/new server).
 */
export async function finishRollbackWindow(source: Endpoint, target: Endpoint, name: string): Promise<FinishResult> {
  const rev = reverseName(name);
  const names = objectNames(rev);
  // Writable: after a rollback the new server is frozen, and finish must still be able to write there.
  const newSrv = await connectWritable(target);
  let oldSrv: Client | undefined;
  try {
    const m = await readMigration(newSrv, name);
    if (!m) throw new PgferryError("not_found", `no migration "${name}" on the ${target.label}; check --name and --target`);
    if (!(await tryLockMigration(newSrv, name))) {
      throw new PgferryError("busy", `another pgferry process is working on migration "${name}" (a rollback in progress?); wait for it, then finish`);
    }
    await ensureControlSchema(newSrv);
    if (m.rollbackWindow === "rollingBack") {
      throw new PgferryError("rollback_in_progress", `a rollback of migration "${name}" started and did not finish; dropping the reverse slot now ` +
        `could lose the new server's last writes. Fix: run pgferry rollback again to complete it (or pgferry rollback --abort to stay on the new server), then finish`);
    }
    try {
      oldSrv = await connectWritable(source);
    } catch { /* the new server's slot is dropped anyway (it holds WAL there); the old server's state is reported below */ }
    // Tell a running reverse agent it is over before its slot goes: it then exits instead of retrying.
    // (A rolled-back reverse migration is Completed, which is final and tells the agent the same.)
    const revPhase = oldSrv && (await readMigration(oldSrv, rev))?.phase;
    if (oldSrv && revPhase && revPhase !== "Completed") await updateMigration(oldSrv, rev, { phase: "Aborted" });
    const slot = await slotInfo(newSrv, names.slot);
    let discardedBytes: number | undefined;
    if (slot) {
      const current = (await newSrv.query(`SELECT pg_current_wal_lsn()::text AS l`)).rows[0].l as string;
      let done = slot.confirmedFlushLsn ?? current;
      if (oldSrv && (await readMigration(oldSrv, rev))) {
        const applied = bigIntToLsn(await readAppliedLsn(oldSrv, rev));
        if (lsnDiff(applied, done) > 0) done = applied;
      }
      discardedBytes = Math.max(0, lsnDiff(current, done));
    }
    // waitMs 0: a reverse agent holding the slot is ended at once; its changes are no longer wanted.
    const droppedSlot = await dropSlot(newSrv, names.slot, 0);
    const droppedPublication = await dropPublication(newSrv, names.publication);
    if (!oldSrv) {
      if (m.rollbackWindow && m.rollbackWindow !== "rolledBack") await updateMigration(newSrv, name, { rollbackWindow: "closed", rollbackClosedAt: new Date() });
      throw new PgferryError("finish_incomplete", `the reverse slot and publication were dropped from the new server, but the old server ` +
        `(${source.label}) is unreachable, so its control schema "${CONTROL_SCHEMA}" (the reverse migration's record) remains; fix: run ` +
        `pgferry finish again when it is reachable, or there: DELETE FROM ${CONTROL_SCHEMA}.migration WHERE name = ${quoteLiteral(rev)}`);
    }
    const removedReverseState = await removeReverseState(oldSrv, rev);
    if (m.rollbackWindow && m.rollbackWindow !== "closed" && m.rollbackWindow !== "rolledBack") {
      await updateMigration(newSrv, name, { rollbackWindow: "closed", rollbackClosedAt: new Date() });
    }
    return { name, previousState: m.rollbackWindow, droppedSlot, droppedPublication, removedReverseState, discardedBytes };
  } finally {
    await newSrv.end().catch(() => undefined);
    await oldSrv?.end().catch(() => undefined);
  }
}

async function withOld<T>(source: Endpoint, f: (c: Client) => Promise<T>): Promise<T> {
  const c = await connect(source);
  try { return await f(c); } finally { await c.end().catch(() => undefined); }
}

export interface RollbackOptions {
  name: string;
  /** Seconds to wait for the old server to apply everything up to the fence. */
  timeoutSec: number;
  jobs: number;
  verify?: VerifyMode;
  /** Seconds sessions on the new server get to finish their transaction before they are ended. */
  graceSec?: number;
  onProgress?: (message: string) => void;
}

export interface RollbackResult {
  name: string;
  alreadyRolledBack: boolean;
  /** The reverse migration's cutover: fence, downtime and its breakdown, sessions ended on the new server (absent: rolled back and finished before). */
  cutover?: CutoverResult;
  /** The old server's freeze was undone (exactly the settings the forward cutover had saved). */
  oldServerWritable: boolean;
  /** The new server stays read-only, so nothing writes there by mistake; this SQL undoes that. */
  undoNewServerFreezeSql: string[];
}

/**
 * `pgferry rollback`: move the application back to the old server. The reverse migration is cut over
 * (the new server is frozen for every role, fenced, the old server drained to the fence by the running
 * reverse agent or inline, checked, verified, sequences synced new → old), then the old server's freeze
 * is undone. The new server stays read-only. Killed anywhere, it re-runs to the same result.
 */
export async function rollbackMigration(source: Endpoint, target: Endpoint, o: RollbackOptions): Promise<RollbackResult> {
  const say = o.onProgress ?? (() => undefined);
  const rev = reverseName(o.name);
  let newSrv = await connectWritable(target);
  let oldSrv: Client | undefined;
  try {
    const m = await readMigration(newSrv, o.name);
    if (!m) throw new PgferryError("not_found", `no migration "${o.name}" on the ${target.label}; check --name and --target`);
    if (!m.rollbackWindow || m.rollbackWindow === "opening") {
      throw new PgferryError("no_rollback_window", `migration "${o.name}" has no rollback window (the cutover ran without --reverse-replication` +
        `${m.rollbackWindow === "opening" ? ", or stopped while opening it: run pgferry cutover --reverse-replication again" : ""}); the old server ` +
        `has not received the new server's writes, so pgferry cannot move the application back without losing them`);
    }
    if (m.rollbackWindow === "closed") {
      throw new PgferryError("rollback_window_closed", `the rollback window of migration "${o.name}" was closed (pgferry finish): the old server ` +
        `no longer receives the new server's writes; to move back, start a new migration in the other direction`);
    }
    if (!(await tryLockMigration(newSrv, o.name))) {
      throw new PgferryError("busy", `another pgferry process is working on migration "${o.name}"; wait for it or stop it`);
    }
    await ensureControlSchema(newSrv);
    // Recorded first: finish refuses from here on (its slot drop would lose the writes being drained).
    if (m.rollbackWindow === "open") await updateMigration(newSrv, o.name, { rollbackWindow: "rollingBack" });
    if (m.rollbackWindow === "rolledBack" && !(await withOld(source, (c) => readMigration(c, rev)))) {
      // Rolled back, then finished: nothing left to do.
      return { name: o.name, alreadyRolledBack: true, oldServerWritable: !m.sourceFrozen, undoNewServerFreezeSql: [] };
    }
    // This session ends here: the freeze of the new server ends every other session of its database, ours
    // included. From now on "rollingBack" keeps finish away, and the reverse cutover locks its own record.
    await newSrv.end();
    const cut = await cutoverMigration(target, source, { name: rev, freezeWrites: true, timeoutSec: o.timeoutSec, jobs: o.jobs,
      verify: o.verify, graceSec: o.graceSec, onProgress: say, reverse: true });
    newSrv = await connectWritable(target);
    // The old server back as it was before the forward freeze (settings recorded on the forward record).
    oldSrv = await connectWritable(source);
    const fwd = (await readMigration(newSrv, o.name))!;
    if (fwd.sourceFrozen) {
      say("making the old server writable again");
      await unfreezeSource(oldSrv, source, fwd.freezeSaved);
    }
    await updateMigration(newSrv, o.name, { sourceFrozen: false, rollbackWindow: "rolledBack", rollbackClosedAt: new Date() });
    return { name: o.name, alreadyRolledBack: m.rollbackWindow === "rolledBack", cutover: cut, oldServerWritable: true,
      undoNewServerFreezeSql: cut.undoFreezeSql };
  } finally {
    await newSrv.end().catch(() => undefined);
    await oldSrv?.end().catch(() => undefined);
  }
}

/** Set the forward record's window state (rollback --abort puts a stopped rollback's window back to open). */
export async function updateRollbackState(target: Endpoint, name: string, state: RollbackWindowState): Promise<void> {
  const c = await connectWritable(target);
  try {
    const m = await readMigration(c, name);
    if (m?.rollbackWindow === "rollingBack") await updateMigration(c, name, { rollbackWindow: state });
  } finally {
    await c.end().catch(() => undefined);
  }
}
