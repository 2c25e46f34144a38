/**
 * Cleanup / abort, at any phase: remove every replication object the migration made — subscription
 * on the target, slot and publication on the source — undo a freeze left by an interrupted cutover,
 * and forget the migration's state. A rollback window's objects go too: the reverse slot and
 * publication on the target (a slot left there would keep the new server's WAL until its disk fills)
 * and the reverse record on the source. Never drops or truncates target tables.
 */
import { Client } from "pg";
import { dropSubscription } from "./cdc/subscription/subscription";
import { dropTargetApply } from "./cdc/ddl/targetApply";
import { Endpoint, quoteLiteral } from "./core/endpoint";
import { removeReverseState, reverseName } from "./rollback/rollback";
import { PgferryError } from "./core/errors";
import { objectNames } from "./core/options";
import { dropPublication, dropSlot } from "./copy/snapshot";
import { readMigration } from "./state/state";
import { deleteMigration, dropControlSchemaIfEmpty } from "./state/state";
import { connectWritable, unfreezeSource } from "./cutover/cutover";
import { describeSourceChanges, restoreSourceChanges, SourceChange } from "./state/sourceChanges";
import { readCreatedRoles } from "./state/createdRoles";
import { dropRoleStatements } from "./copy/roles";

export interface CleanupResult {
  name: string;
  droppedSubscription: boolean;
  droppedSlot: boolean;
  droppedPublication: boolean;
  /** The rollback window's slot / publication on the target (./rollback.ts). */
  droppedReverseSlot: boolean;
  droppedReversePublication: boolean;
  unfrozeSource: boolean;
  removedState: boolean;
  /** Source schema changes pgferry had made (REPLICA IDENTITY FULL), undone now: each with the SQL that was run. */
  restoredSourceChanges: SourceChange[];
  /**
   * Roles `start --roles` created on the target, and the statements that would drop them: roles are global to the
   * target server (its other databases may use them), so cleanup never drops them; run these if they should go.
   */
  createdRoles: string[];
  dropRoleStatements: string[];
  /** Phase the migration was in (NotFound when the target had no record). */
  previousPhase: string;
}

export async function cleanupMigration(source: Endpoint, target: Endpoint, name: string): Promise<CleanupResult> {
  const names = objectNames(name);
  const rev = objectNames(reverseName(name));
  // Writable: after a rollback (./rollback.ts) the target is the frozen side.
  const tgt = await connectWritable(target);
  let src: Client | undefined;
  try {
    const m = await readMigration(tgt, name);
    const droppedSubscription = await dropSubscription(tgt, names.subscription);
    await dropTargetApply(tgt, name); // --ddl replicate in subscription mode: its log table and trigger on the target
    const droppedReverseSlot = await dropSlot(tgt, rev.slot, 0);
    const droppedReversePublication = await dropPublication(tgt, rev.publication);
    try {
      src = await connectWritable(source); // a frozen source is read-only for new sessions; DROP PUBLICATION must still work
    } catch (e) {
      throw new PgferryError("cleanup_incomplete", `the subscription was removed from the target, but the source is unreachable ` +
        `(${(e as Error).message}); its replication slot keeps WAL until dropped — fix: rerun pgferry cleanup when the source is back, ` +
        `or run there: SELECT pg_drop_replication_slot(${quoteLiteral(names.slot)}); DROP PUBLICATION IF EXISTS ${names.publication};`);
    }
    const droppedSlot = await dropSlot(src, names.slot);
    const droppedPublication = await dropPublication(src, names.publication);
    await removeReverseState(src, reverseName(name));
    let unfrozeSource = false;
    // A cutover that stopped half-way leaves the source frozen; a completed one keeps it read-only on purpose.
    if (m && m.sourceFrozen && m.phase !== "Completed") {
      await unfreezeSource(src, source, m.freezeSaved);
      unfrozeSource = true;
    }
    // Before the state goes: the records of what pgferry changed on the source are in it.
    const undo = await restoreSourceChanges(src, tgt, name);
    if (undo.failed.length) {
      throw new PgferryError("cleanup_incomplete", `the replication objects were removed, but pgferry could not restore what it changed on the ` +
        `source: ${undo.failed.map((f) => `${f.object} (${f.error})`).join(", ")}; the records are kept. Fix: run as the tables' owner or a ` +
        `superuser and rerun pgferry cleanup, or run on the source: ${describeSourceChanges(undo.failed)}`);
    }
    const createdRoles = m ? await readCreatedRoles(tgt, name) : [];
    let removedState = false;
    if (m) {
      await deleteMigration(tgt, name);
      removedState = true;
    }
    await dropControlSchemaIfEmpty(tgt);
    return { name, droppedSubscription, droppedSlot, droppedPublication, droppedReverseSlot, droppedReversePublication, unfrozeSource, removedState,
      restoredSourceChanges: undo.restored, createdRoles, dropRoleStatements: dropRoleStatements(createdRoles), previousPhase: m?.phase ?? "NotFound" };
  } finally {
    await tgt.end().catch(() => undefined);
    await src?.end().catch(() => undefined);
  }
}
