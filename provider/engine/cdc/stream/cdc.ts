/**
 * CDC mode `stream` (../cdc.ts): pgferry's own applier (./stream.ts) consumes the slot, run by
 * `pgferry agent` (./agent.ts) or inline by start and the cutover's drain. The slot admits one
 * consumer, which is the lock between them. Pausing records the intent (the caller) and ends the
 * agent's walsender; the agent then waits until the cutover resumes it or completes.
 */
import { Endpoint } from "../../core/endpoint";
import { PgferryError } from "../../core/errors";
import { bigIntToLsn, lsnToBigInt } from "../../core/lsn";
import { objectNames } from "../../core/options";
import { slotInfo } from "../../copy/snapshot";
import { readMigration } from "../../state/state";
import { readApplyStats } from "../../state/applyProgress";
import type { Cdc } from "../cdc";
import { sleep, waitForSlotInactive } from "../slotConsumer";
import { readAppliedLsn, StreamApplier } from "./stream";
import { Client } from "pg";

export const streamCdc: Cdc = {
  mode: "stream",
  requirements: {
    plugins: ["pgoutput", "wal2json"],
    // The applier writes with session_replication_role = replica (no user triggers, no FK checks, as a subscription's worker).
    replicaRole: "stream mode applies changes with",
  },
  startMessage: "applying the changes made during the load (stream mode), then adding and validating foreign keys",
  // Everything up to the fence is applied and checked when the slot is dropped: a consumer still holding it is ended now.
  slotDropWaitMs: 0,

  async create() {
    // Nothing on the target: the applier reads the slot itself.
  },

  async start(c) {
    // Apply what accumulated during the load; afterwards `pgferry agent` (or the cutover) keeps applying.
    const names = objectNames(c.name);
    const upTo = lsnToBigInt((await c.src.query(`SELECT pg_current_wal_lsn()::text AS l`)).rows[0].l);
    await new StreamApplier(c.source, c.target, { migration: c.name, slot: names.slot, publication: names.publication, until: upTo }).run();
  },

  async replicating(c) {
    return !!(await slotInfo(c.src, objectNames(c.name).slot));
  },

  async pause(c) {
    // The agent's walsender is ended at once; the agent sees the recorded pause and waits.
    await waitForSlotInactive(c, true);
  },

  async resume() {
    // The agent reads the recorded state: nothing to do here.
  },

  async drain(c, fence, o) {
    await drainStream(c.source, c.target, c.src, c.tgt, c.name, fence, o.timeoutSec, !!o.writeThroughFreeze, o.stallTimeoutSec);
  },

  async lag(tgt, name) {
    return {
      appliedLsn: bigIntToLsn(await readAppliedLsn(tgt, name)),
      applied: await readApplyStats(tgt, name),
    };
  },

  async end() {
    // No consumer object to remove: the slot is dropped by the caller.
  },
};

/**
 * Stream mode: when an agent holds the slot (its single active consumer), wait for it to apply up to
 * the fence; otherwise apply up to the fence here.
 */
async function drainStream(source: Endpoint, target: Endpoint, src: Client, tgt: Client, name: string, fence: string, timeoutSec: number,
  writeThroughFreeze = false, stallTimeoutSec?: number): Promise<void> {
  const names = objectNames(name);
  const want = lsnToBigInt(fence);
  const deadline = Date.now() + timeoutSec * 1000;
  const since = new Date().toISOString();
  const failures = new Set<string>();
  for (;;) {
    if ((await readAppliedLsn(tgt, name)) >= want) return;
    // The agent records every failure. Two since the drain began (it retries with backoff) mean it is stuck: say why
    // now instead of waiting out the timeout. One alone may be passing (its walsender ended by a previous fence round).
    const failure = (await readMigration(tgt, name))?.applyError;
    if (failure && failure.at >= since) failures.add(failure.at);
    if (failure && (failures.size >= 2 || failure.kind === "divergence") && failure.at >= since) {
      throw new PgferryError(failure.kind === "divergence" ? "divergence" : "apply_failed", `the stream applier (pgferry agent) is failing to apply ` +
        `the changes before the fence ${fence}: ${failure.message}. Writes were unfrozen and the migration keeps streaming (nothing after the failing ` +
        `change was applied); fix the cause, then run pgferry cutover again`);
    }
    const slot = await slotInfo(src, names.slot);
    if (!slot) throw new PgferryError("slot_missing", `the replication slot "${names.slot}" is gone from the source; run pgferry cleanup and start again`);
    if (!slot.active) {
      const applier = new StreamApplier(source, target, { migration: name, slot: names.slot, publication: names.publication, until: want, writeThroughFreeze, stallTimeoutSec });
      const timer = setTimeout(() => void applier.stop(), Math.max(0, deadline - Date.now()));
      try {
        await applier.run();
      } catch (e) {
        // An agent took the slot between our look and our START_REPLICATION (a restarted agent retrying): it is
        // the consumer now; wait for it like above instead of failing the cutover.
        if (!/replication slot .* is active for PID/.test((e as Error).message ?? "")) throw e;
      } finally { clearTimeout(timer); }
      if ((await readAppliedLsn(tgt, name)) >= want) return;
    } else {
      await sleep(25); // at the fence this wait is downtime
    }
    if (Date.now() > deadline) {
      throw new PgferryError("drain_timeout", `the target had not applied up to the fence ${fence} after ${timeoutSec}s` +
        `${slot.active ? ` (the slot is held by pid ${slot.activePid}: a pgferry agent that is not making progress?)` : ""}; writes were unfrozen ` +
        `and the migration keeps streaming; fix: retry cutover, with a larger --timeout if it was still catching up`);
    }
  }
}
