/**
 * CDC mode `subscription` (../cdc.ts): the target's own logical replication worker consumes the slot
 * (./subscription.ts). Pausing disables the subscription; draining waits for the slot's confirmed
 * position, which the worker advances only for what it applied.
 */
import { Client } from "pg";
import { quoteIdent } from "../../core/endpoint";
import { PgferryError } from "../../core/errors";
import { lsnToBigInt } from "../../core/lsn";
import { objectNames } from "../../core/options";
import { slotInfo } from "../../copy/snapshot";
import type { Cdc } from "../cdc";
import { sleep, waitForSlotInactive } from "../slotConsumer";
import { diagnoseApplyFailure } from "./diagnose";
import { columnsWithoutEquality } from "../../catalog/catalog";
import { readDdlRefusal } from "../ddl/refusal";
import { createSubscription, dropSubscription, enableSubscription, subscriptionInfo, waitForWorker } from "./subscription";

const major = (v: number) => Math.floor(v / 10000);
const list = (xs: string[], n = 8) => (xs.length > n ? `${xs.slice(0, n).join(", ")} and ${xs.length - n} more` : xs.join(", "));

export const subscriptionCdc: Cdc = {
  mode: "subscription",
  requirements: {
    plugins: ["pgoutput"],
    pluginRefusal: "a subscription always decodes with pgoutput",
    async checkTables({ src, fullIdentity, add }) {
      // A subscription finds REPLICA IDENTITY FULL rows with each column's equality operator; a type without one
      // fails every UPDATE/DELETE of the table in the apply worker. (Stream mode compares such values exactly itself.)
      const noEq = await columnsWithoutEquality(src, fullIdentity);
      if (noEq.length) {
        add({ code: "full_identity_no_equality", server: "source", objects: noEq,
          message: `${noEq.length} column(s) of tables replicated with REPLICA IDENTITY FULL have a type without an equality operator, so a ` +
            `subscription cannot find their rows for UPDATE/DELETE (its apply worker would fail): ${list(noEq)}`,
          fix: "give those tables a primary key, or a unique index on NOT NULL columns and ALTER TABLE … REPLICA IDENTITY USING INDEX …; " +
            "or use --mode stream (it matches such values exactly); or --exclude them" });
      }
    },
    async checkTarget({ tgt, target, targetVersion, superuser, add }) {
      // The target's own apply worker consumes the slot: the role must create subscriptions, and a worker must be free.
      const t = (await tgt.query(`SELECT
          CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pg_create_subscription')  -- PG 16+
               THEN pg_has_role(current_user, 'pg_create_subscription', 'USAGE') ELSE false END AS can_subscribe,
          current_setting('max_logical_replication_workers')::int AS max_workers`)).rows[0];
      if (!superuser && !t.can_subscribe) {
        add({ code: "subscription_privilege", server: "target", message: `role "${target.user}" may not create subscriptions on the target` +
            (major(targetVersion) < 16 ? ` (PostgreSQL ${major(targetVersion)} requires a superuser)` : ""),
          fix: major(targetVersion) >= 16 ? `GRANT pg_create_subscription TO "${target.user}";` : "connect to the target as a superuser, or use --mode stream" });
      }
      if (t.max_workers < 1) {
        add({ code: "target_workers", server: "target", message: "max_logical_replication_workers is 0 on the target", fix: "ALTER SYSTEM SET max_logical_replication_workers = 4; then restart the target" });
      }
    },
    async checkNewTables({ src, tgt, slotName, add }) {
      // --ddl replicate: a table created while streaming joins by REFRESH PUBLICATION at cutover, and PostgreSQL copies it
      // with a tablesync worker on the target, which takes a replication slot and a WAL sender on the source next to the
      // apply worker's. A warning, not a refusal: only a migration that creates tables needs them, and the cutover's
      // new-tables step stops before the freeze naming the table (new_table_sync_timeout) when the worker cannot run.
      const s = (await src.query(`SELECT current_setting('max_replication_slots')::int AS max_slots,
          (SELECT count(*) FROM pg_replication_slots WHERE slot_name <> $1)::int AS other_slots,
          current_setting('max_wal_senders')::int AS max_senders,
          (SELECT count(*) FROM pg_stat_replication WHERE application_name <> $1)::int AS other_senders`, [slotName])).rows[0];
      const t = (await tgt.query(`SELECT current_setting('max_sync_workers_per_subscription')::int AS sync,
          current_setting('max_logical_replication_workers')::int AS workers,
          (SELECT count(*) FROM pg_stat_subscription w WHERE w.pid IS NOT NULL AND w.subname IS DISTINCT FROM $1)::int AS other_workers`, [slotName])).rows[0];
      const why = "a table created on the source while streaming (--ddl replicate) is copied by PostgreSQL's table synchronisation at cutover, " +
        "which needs";
      const short: string[] = [], fix: string[] = [];
      const server: ("source" | "target")[] = [];
      if (s.max_slots - s.other_slots < 2) {
        short.push(`a second replication slot on the source (max_replication_slots = ${s.max_slots}, ${s.other_slots} used by others)`);
        fix.push(`on the source: ALTER SYSTEM SET max_replication_slots = ${s.other_slots + 4}; then restart it`);
        server.push("source");
      }
      if (s.max_senders - s.other_senders < 2) {
        short.push(`a second WAL sender on the source (max_wal_senders = ${s.max_senders}, ${s.other_senders} used by others)`);
        fix.push(`on the source: ALTER SYSTEM SET max_wal_senders = ${s.other_senders + 4}; then restart it`);
        server.push("source");
      }
      if (t.sync < 1) {
        short.push(`a sync worker on the target (max_sync_workers_per_subscription = ${t.sync})`);
        fix.push(`on the target: ALTER SYSTEM SET max_sync_workers_per_subscription = 2; SELECT pg_reload_conf();`);
        server.push("target");
      }
      if (t.workers - t.other_workers < 2) {
        short.push(`a second logical replication worker on the target (max_logical_replication_workers = ${t.workers}, ${t.other_workers} used by others)`);
        fix.push(`on the target: ALTER SYSTEM SET max_logical_replication_workers = ${t.other_workers + 4}; then restart it`);
        server.push("target");
      }
      if (short.length) {
        add({ severity: "warning", code: "ddl_new_table_sync", server: server[0], objects: short,
          message: `${why} ${short.join(", and ")}; until then such a table's rows are not applied on the target and the cutover stops ` +
            `before the freeze (new_table_sync_timeout)`,
          fix: `${fix.join("; ")} — or create no table in the migrated schemas while migrating, or use --mode stream` });
      }
    },
  },
  startMessage: "starting change data capture (subscription on the target), then adding and validating foreign keys",
  slotDropWaitMs: 10000,

  async create(c, o) {
    const names = objectNames(c.name);
    await createSubscription(c.tgt, c.source, names.subscription, names.publication, names.slot, o.sourceHostForTarget);
  },

  async start(c) {
    const names = objectNames(c.name);
    await enableSubscription(c.tgt, names.subscription);
    if (!(await waitForWorker(c.tgt, names.subscription))) {
      throw new PgferryError("subscription_idle", `the subscription's apply worker did not start on the target; ` +
        `check max_logical_replication_workers/max_worker_processes there and the target's log`);
    }
  },

  async replicating(c) {
    return (await subscriptionInfo(c.tgt, objectNames(c.name).subscription)).exists;
  },

  async pause(c) {
    await c.tgt.query(`ALTER SUBSCRIPTION ${quoteIdent(objectNames(c.name).subscription)} DISABLE`);
    // A disabled subscription's walsender exits by itself within moments; ended only if it lingers.
    await waitForSlotInactive(c, false);
  },

  async resume(c) {
    const names = objectNames(c.name);
    if ((await subscriptionInfo(c.tgt, names.subscription)).exists) {
      await c.tgt.query(`ALTER SUBSCRIPTION ${quoteIdent(names.subscription)} ENABLE`);
    }
  },

  async drain(c, fence, o) {
    const names = objectNames(c.name);
    await waitForFence(c.src, c.tgt, names.slot, names.publication, names.subscription, fence, o.timeoutSec, async () => {
      // --ddl replicate: a DDL the target's trigger refused stops the worker for good; named now, not at the timeout.
      const refusal = await readDdlRefusal(c.tgt, c.src, c.name);
      if (refusal) throw new PgferryError(refusal.code, `${refusal.message}. Writes were unfrozen and the migration keeps streaming; cutover refuses while the subscription stops at it`);
    });
  },

  async lag(tgt, name) {
    return { subscription: await subscriptionInfo(tgt, objectNames(name).subscription) };
  },

  async end(c) {
    await dropSubscription(c.tgt, objectNames(c.name).subscription);
  },
};

/**
 * Reproduce a failing apply worker's error (./diagnose.ts): the subscription is disabled while its slot is
 * peeked, then enabled again. Best effort: undefined when it cannot tell.
 */
async function diagnoseSubscription(src: Client, tgt: Client, slot: string, publication: string, subscription: string): Promise<string | undefined> {
  try {
    await tgt.query(`ALTER SUBSCRIPTION ${quoteIdent(subscription)} DISABLE`);
    try {
      for (let i = 0; i < 100 && (await slotInfo(src, slot))?.active; i++) await sleep(100);
      return await diagnoseApplyFailure(src, tgt, slot, publication, subscription);
    } finally {
      await tgt.query(`ALTER SUBSCRIPTION ${quoteIdent(subscription)} ENABLE`);
    }
  } catch {
    return undefined;
  }
}

/** Wait until the slot's consumer has confirmed the fence (it confirms only what it applied and flushed). */
async function waitForFence(src: Client, tgt: Client, slot: string, publication: string, subscription: string, fence: string,
  timeoutSec: number, check: () => Promise<void> = async () => undefined): Promise<void> {
  const deadline = Date.now() + timeoutSec * 1000;
  const want = lsnToBigInt(fence);
  // The apply worker's error count (PostgreSQL 15+): it retries a failing transaction every few seconds, so
  // two new errors while the fence is not reached mean it is stuck — say so now instead of waiting out the timeout.
  const errorsAtStart = (await subscriptionInfo(tgt, subscription)).applyErrors;
  let polls = 0;
  for (;;) {
    const s = await slotInfo(src, slot);
    if (!s) throw new PgferryError("slot_missing", `the replication slot "${slot}" is gone from the source; the migration cannot be finished — run pgferry cleanup and start again`);
    if (s.confirmedFlushLsn && lsnToBigInt(s.confirmedFlushLsn) >= want) return;
    const errors = (await subscriptionInfo(tgt, subscription)).applyErrors;
    if (errors !== errorsAtStart || ++polls % 80 === 0) await check(); // an error counted (15+), else every 2 s
    if (errorsAtStart !== undefined && errors !== undefined && errors >= errorsAtStart + 2) {
      const why = await diagnoseSubscription(src, tgt, slot, publication, subscription);
      throw new PgferryError("apply_failed", `the subscription's apply worker on the target keeps failing (${errors} apply errors in ` +
        `pg_stat_subscription_stats, ${errors - errorsAtStart} since this cutover began) before reaching the fence ${fence}, confirmed ` +
        `${s.confirmedFlushLsn ?? "nothing"}: ${why ?? `PostgreSQL reports its error text only in the target's server log (lines "logical ` +
        `replication" ... "ERROR")`}. Writes were unfrozen and the migration keeps streaming; fix the cause (e.g. a row or constraint on the ` +
        `target the source's change conflicts with), then run pgferry cutover again`);
    }
    if (Date.now() > deadline) {
      const sub = await subscriptionInfo(tgt, subscription);
      throw new PgferryError("drain_timeout", `the target had not applied up to the fence ${fence} after ${timeoutSec}s ` +
        `(confirmed ${s.confirmedFlushLsn ?? "nothing"}${sub.enabled ? "" : "; the subscription is disabled — ALTER SUBSCRIPTION … ENABLE on the target"}` +
        `${sub.enabled && !sub.workerPid ? "; the subscription's apply worker is not running — see the target's log" : ""}); ` +
        `writes were unfrozen and the migration keeps streaming; fix: retry cutover, with a larger --timeout if it was still catching up`);
    }
    // 25 ms: at the fence this wait is downtime, and the slot's confirmed position is all it reads.
    await sleep(25);
  }
}
