/**
 * The rollback window's own objects (../rollback/rollback.ts says what the window is): opening it at the
 * end of a cutover (a step of the cutover's pipeline, `rollbackWindowStep`), the checks made before the
 * freeze, abandoning a window that began opening, and its status. Nothing here runs a cutover, so the
 * cutover imports this file and `pgferry rollback` (./rollback.ts, a cutover of the reverse migration)
 * imports the cutover: no import cycle.
 */
import { Client } from "pg";
import { migratedTables, publishedTables, copyableTables, TableSelection, CONTROL_SCHEMA } from "../catalog/catalog";
import { quoteIdent } from "../core/endpoint";
import { PgferryError } from "../core/errors";
import { bigIntToLsn, lsnDiff } from "../core/lsn";
import { objectNames } from "../core/options";
import { Step } from "../core/pipeline";
import { createPublication, dropPublication, dropSlot, slotInfo } from "../copy/snapshot";
import { controlSchemaExists, ensureControlSchema, insertMigration, MigrationRecord, readMigration, RollbackWindowState, updateMigration } from "../state/state";
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

/** Remove the reverse record from the old server, and the control schema when no other migration is recorded there. */
export async function removeReverseState(oldSrv: Client, rev: string): Promise<boolean> {
  if (!(await controlSchemaExists(oldSrv))) return false;
  const removed = await deleteMigration(oldSrv, rev);
  await dropControlSchemaIfEmpty(oldSrv);
  return removed;
}


/** What the cutover's step needs to know (the cutover's own context has these fields). */
export interface RollbackWindowStepContext {
  /** Writable session on the old server (the forward source) and the control session on the new one (the forward target). */
  src: Client;
  tgt: Client;
  name: string;
  reverseReplication?: boolean;
  /** The cutover of a reverse migration (pgferry rollback) opens no window. */
  reverse?: boolean;
  /** The forward record said the source was frozen when the cutover began (named in the error). */
  sourceFrozen: boolean;
  say: (message: string) => void;
  /** Set by the step: the window it opened (or found open). */
  rollbackWindow?: RollbackWindowOpened;
}

/**
 * The cutover's step after everything else and before Completed: nothing has written to the target yet
 * that the reverse slot would miss. Without --reverse-replication, a window a failed earlier attempt
 * began opening is removed instead.
 */
export const rollbackWindowStep: Step<RollbackWindowStepContext> = {
  name: "rollback-window",
  when: (c) => !c.reverse,
  async run(c) {
    if (c.reverseReplication) {
      c.say("opening the rollback window: reverse slot on the target, reverse migration record on the source");
      try {
        c.rollbackWindow = await openRollbackWindow(c.src, c.tgt, (await readMigration(c.tgt, c.name))!);
      } catch (e) {
        throw new PgferryError("rollback_window_failed", `replication has ended and the target is complete, but the rollback window could not ` +
          `be opened: ${(e as Error).message}. The migration is not Completed yet${c.sourceFrozen ? " and the source stays frozen" : ""}; fix that and ` +
          `run pgferry cutover --reverse-replication again, or finish without a window: pgferry cutover (without --reverse-replication)`);
      }
    } else if ((await readMigration(c.tgt, c.name))!.rollbackWindow === "opening") {
      await abandonRollbackWindow(c.src, c.tgt, c.name);
    } else {
      return "nothing";
    }
  },
};
