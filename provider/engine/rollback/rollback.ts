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
import { migratedTables, publishedTables, copyableTables, CONTROL_SCHEMA } from "../catalog/catalog";
import { connectWritable, cutoverMigration, CutoverResult, unfreezeSource, VerifyMode } from "../cutover/cutover";
import { connect, Endpoint, quoteLiteral } from "../core/endpoint";
import { PgferryError } from "../core/errors";
import { bigIntToLsn, lsnDiff } from "../core/lsn";
import { objectNames } from "../core/options";
import { createPublication, dropPublication, dropSlot, slotInfo } from "../copy/snapshot";
import { controlSchemaExists, ensureControlSchema, insertMigration, MigrationRecord, readMigration, RollbackWindowState, tryLockMigration, updateMigration } from "../state/state";
import { readAppliedLsn } from "../cdc/stream/stream";
import { deleteMigration, dropControlSchemaIfEmpty } from "../state/state";
import { resetTableProgress } from "../state/tableProgress";

/** The reverse migration's name: its slot and publication are objectNames(reverseName(name)), pgferry_<name>_rev. */
export const reverseName = (name: string) => `${name}_rev`;

export interface RollbackWindowOpened { reverseMigration: string; slot: string; publication: string; consistentPoint: string }

/**
 * Opened by cutover (cutover.ts) after the gate, the end of forward replication, the sequence sync and the
 * held-back objects, and before phase Completed: the application does not write to the new server yet, so
 * the reverse slot's start precedes every change that must flow back, and the two servers are equal there
 * (the gate verified it). `oldSrv` is a writable session on the old server, `newSrv` one on the new server.
 */
export async function openRollbackWindow(oldSrv: Client, newSrv: Client, m: MigrationRecord): Promise<RollbackWindowOpened> {
  const rev = reverseName(m.name);
  const names = objectNames(rev);
  await updateMigration(newSrv, m.name, { rollbackWindow: "opening" }); // cleanup knows to look for reverse objects from here on
  const sel = m.options.selection ?? { schemas: [], include: [], exclude: [] };
  const tables = await migratedTables(newSrv, sel);
  // The publication must exist before the slot (pgoutput reads it through the slot's historic snapshot):
  // a re-run keeps an existing one, since recreating it under an existing slot would break decoding.
  const hasPub = (await newSrv.query(`SELECT 1 FROM pg_publication WHERE pubname = $1`, [names.publication])).rowCount;
  if (!hasPub) await createPublication(newSrv, names.publication, publishedTables(tables));
  let consistentPoint: string;
  const slot = await slotInfo(newSrv, names.slot);
  if (slot) consistentPoint = slot.confirmedFlushLsn!;
  else {
    // A plain SQL slot (no exported snapshot needed: nothing is copied, both sides are equal now).
    const r = await newSrv.query(`SELECT lsn::text AS l FROM pg_create_logical_replication_slot($1, 'pgoutput')`, [names.slot]);
    consistentPoint = r.rows[0].l;
  }
  // The reverse record lives on the old server: the reverse applier stores its position there, with the changes.
  await ensureControlSchema(oldSrv);
  if (!(await readMigration(oldSrv, rev))) {
    await oldSrv.query("BEGIN");
    await insertMigration(oldSrv, { name: rev, mode: "stream", ...names, subscription: "",
      options: { selection: sel, plugin: "pgoutput", reverseOf: m.name } });
    // What the reverse migration "loaded": every table; drift (at rollback) then also sees tables dropped on the new server.
    await resetTableProgress(oldSrv, rev, copyableTables(tables).map((t) => ({ schema: t.schema, name: t.name })), "copied");
    await updateMigration(oldSrv, rev, { phase: "ReadyToCutover", consistentPoint, streamingSince: new Date() });
    await oldSrv.query("COMMIT");
  }
  await updateMigration(newSrv, m.name, { rollbackWindow: "open", rollbackOpenedAt: m.rollbackOpenedAt ?? new Date() });
  return { reverseMigration: rev, slot: names.slot, publication: names.publication, consistentPoint };
}

/**
 * Checked by cutover before anything is frozen: everything the window needs on the new server, so that
 * opening it — after the point of no return — does not fail for a reason known in advance.
 */
export async function rollbackWindowPreflight(newSrv: Client, name: string): Promise<void> {
  const r = (await newSrv.query(`SELECT current_setting('wal_level') AS wal_level, current_setting('max_replication_slots')::int AS max_slots,
      (SELECT count(*)::int FROM pg_replication_slots) AS used_slots,
      (SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user) AS can_replicate,
      EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1) AS has_slot`, [objectNames(reverseName(name)).slot])).rows[0];
  const problems: string[] = [];
  if (r.wal_level !== "logical") problems.push(`wal_level is '${r.wal_level}' on the target; the reverse slot needs 'logical' (ALTER SYSTEM SET wal_level = logical, then restart the target)`);
  if (!r.has_slot && r.used_slots >= r.max_slots) problems.push(`no free replication slot on the target (max_replication_slots = ${r.max_slots}, all in use)`);
  if (!r.can_replicate) problems.push(`the target role may not create replication slots (ALTER ROLE … REPLICATION, or use a superuser)`);
  if (problems.length) {
    throw new PgferryError("rollback_window_unavailable", `a rollback window needs a logical replication slot on the target: ${problems.join("; ")}. ` +
      `Nothing was frozen or changed. Fix that and run pgferry cutover --reverse-replication again, or cut over without --reverse-replication`);
  }
}

/**
 * A window that began opening and is not wanted any more (cutover completed without --reverse-replication
 * after an opening failed): remove what was created, so no slot is left on the new server.
 */
export async function abandonRollbackWindow(oldSrv: Client, newSrv: Client, name: string): Promise<void> {
  const rev = reverseName(name);
  await dropSlot(newSrv, objectNames(rev).slot, 0);
  await dropPublication(newSrv, objectNames(rev).publication);
  await removeReverseState(oldSrv, rev);
  await updateMigration(newSrv, name, { rollbackWindow: null });
}

export interface RollbackWindowStatus {
  state: RollbackWindowState;
  openedAt?: Date;
  closedAt?: Date;
  /** The new server's WAL not yet applied on the old server (bytes); while open and the reverse slot exists. */
  lagBytes?: number;
  /** The new server's position applied on the old server (read there; needs the old server's URI). */
  appliedLsn?: string;
  /** A reverse agent is connected to the slot. */
  agentConnected?: boolean;
}

/** One line on the window (status, the Migration's rollbackWindowStatus output): its state and, while open, how far the old server is behind. */
export function describeRollbackWindow(w: RollbackWindowStatus): string {
  const open = w.state === "open" || w.state === "rollingBack";
  return `rollback window ${w.state}` + (open ? `: the old server is ${w.lagBytes ?? "?"} bytes behind` +
    `${w.appliedLsn ? ` (applied ${w.appliedLsn})` : ""}${w.agentConnected ? ", reverse agent connected" : ", no reverse agent (changes wait in the reverse slot)"}` : "");
}

/** The window as status shows it. `oldSrv` is optional (status may be run with the target only). */
export async function rollbackWindowStatus(newSrv: Client, oldSrv: Client | undefined, m: MigrationRecord): Promise<RollbackWindowStatus | undefined> {
  if (!m.rollbackWindow) return undefined;
  const st: RollbackWindowStatus = { state: m.rollbackWindow, openedAt: m.rollbackOpenedAt, closedAt: m.rollbackClosedAt };
  if (!["open", "opening", "rollingBack"].includes(m.rollbackWindow)) return st;
  const rev = reverseName(m.name);
  const slot = await slotInfo(newSrv, objectNames(rev).slot);
  if (!slot) return st;
  st.agentConnected = slot.active;
  const current = (await newSrv.query(`SELECT pg_current_wal_lsn()::text AS l`)).rows[0].l as string;
  let done = slot.confirmedFlushLsn ?? current;
  if (oldSrv && (await readMigration(oldSrv, rev))) {
    const applied = await readAppliedLsn(oldSrv, rev);
    st.appliedLsn = bigIntToLsn(applied);
    if (lsnDiff(st.appliedLsn, done) > 0) done = st.appliedLsn;
  }
  st.lagBytes = Math.max(0, lsnDiff(current, done));
  return st;
}

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

/** Remove the reverse record from the old server, and the control schema when no other migration is recorded there. */
export async function removeReverseState(oldSrv: Client, rev: string): Promise<boolean> {
  if (!(await controlSchemaExists(oldSrv))) return false;
  const removed = await deleteMigration(oldSrv, rev);
  await dropControlSchemaIfEmpty(oldSrv);
  return removed;
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
