/** Shared by the CDC modes: waiting for the slot's consumer to let go. */
import { PgferryError } from "../core/errors";
import { objectNames } from "../core/options";
import { slotInfo } from "../copy/snapshot";
import type { CdcContext } from "./cdc";

/**
 * Wait until the slot has no consumer (two checks in a row), ending its walsender when `endAtOnce` (an
 * agent's) or, for a consumer that should exit by itself, after 10 s. Fails after 30 s naming the pid.
 */
export async function waitForSlotInactive(c: CdcContext, endAtOnce: boolean): Promise<void> {
  const names = objectNames(c.name);
  const deadline = Date.now() + 30000;
  for (let inactiveChecks = 0; inactiveChecks < 2;) {
    const s = await slotInfo(c.src, names.slot);
    if (!s) throw new PgferryError("slot_missing", `the replication slot "${names.slot}" is gone from the source; run pgferry cleanup and start again`);
    // Inactive twice, 150 ms apart (a consumer reconnecting in between is caught); no wait after the second look.
    if (!s.active) { if (++inactiveChecks < 2) await sleep(150); continue; }
    inactiveChecks = 0;
    if ((endAtOnce || Date.now() > deadline - 20000) && s.activePid) await c.src.query(`SELECT pg_terminate_backend($1)`, [s.activePid]);
    if (Date.now() > deadline) throw new PgferryError("slot_busy", `the slot "${names.slot}" is still in use by pid ${s.activePid}; stop that consumer and run pgferry cutover again`);
    // Short: this wait is inside the cutover's downtime, and an ended walsender (or a disabled subscription's) goes within moments.
    await sleep(20);
  }
}

export function sleep(msec: number): Promise<void> {
  return new Promise((r) => setTimeout(r, msec));
}
