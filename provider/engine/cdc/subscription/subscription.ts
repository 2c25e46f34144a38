/**
 * Change data capture, mode `subscription`: the target's own logical replication worker consumes
 * our slot from its consistent point (create_slot = false, copy_data = false). Applying inside
 * PostgreSQL is exactly-once (the replication origin advances in the same transaction as the
 * change), fast, runs with session_replication_role = replica (no user triggers, no FK checks),
 * and survives pgferry exiting: `start` returns while the server keeps streaming.
 */
import { Client } from "pg";
import { conninfo, Endpoint, quoteIdent, quoteLiteral, redact } from "../../core/endpoint";
import { PgferryError } from "../../core/errors";

export interface SubscriptionInfo {
  exists: boolean;
  enabled: boolean;
  workerPid?: number;
  receivedLsn?: string;
  latestEndLsn?: string;
  lastMessageAt?: Date;
  /** Replication origin progress: the source commit LSN applied last. */
  appliedLsn?: string;
  applyErrors?: number;
}

/**
 * Create the subscription disabled, before the slot and the load: CREATE SUBSCRIPTION connects from
 * the target to the source, so a target that cannot reach the source (pg_hba, firewall, DNS) is
 * found before anything expensive happens. `enableSubscription` starts it after the load.
 */
export async function createSubscription(tgt: Client, source: Endpoint, name: string, publication: string, slot: string,
  hostForTarget?: string): Promise<void> {
  const exists = await tgt.query(`SELECT 1 FROM pg_subscription WHERE subname = $1
    AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`, [name]);
  if (exists.rowCount) return;
  try {
    // The connection string (with its password) is stored in pg_subscription, readable only by superusers.
    await tgt.query(`CREATE SUBSCRIPTION ${quoteIdent(name)} CONNECTION ${quoteLiteral(conninfo(source, hostForTarget))}
      PUBLICATION ${quoteIdent(publication)}
      WITH (create_slot = false, slot_name = ${quoteLiteral(slot)}, copy_data = false, enabled = false)`);
  } catch (e) {
    throw subscriptionError(e, source, hostForTarget);
  }
}

export async function enableSubscription(tgt: Client, name: string): Promise<void> {
  await tgt.query(`ALTER SUBSCRIPTION ${quoteIdent(name)} ENABLE`);
}

/** The target's view of the source: what failed when the target connected, and the fix. */
function subscriptionError(e: unknown, source: Endpoint, hostForTarget?: string): PgferryError {
  const text = redact((e as Error).message ?? String(e), source);
  const hba = /no pg_hba\.conf entry for (?:replication connection from )?host "([^"]+)", user "([^"]+)"/.exec(text);
  const where = hostForTarget ?? `${source.host}:${source.port}`;
  if (hba) {
    const [, host, user] = hba;
    const cidr = host.includes(":") ? `${host}/128` : `${host}/32`;
    return new PgferryError("pg_hba", `the source refuses the target's replication connection: no pg_hba.conf entry for a ` +
      `replication connection from host "${host}", user "${user}" (database "${source.database}"); fix: on the source add ` +
      `"host ${source.database} ${user} ${cidr} scram-sha-256" to pg_hba.conf and reload; with Pulumi: new pgferry.FirewallRule(` +
      `"source_replrule", { server: <source admin URI>, address: "${cidr}", user: "${user}", database: "${source.database}", replication: true }) ` +
      `or autoReplicationRule: true on the Migration; on Azure a firewall rule named "<name>_replrule" for ${host}`);
  }
  if ((e as { code?: string }).code === "42501") {
    return new PgferryError("subscription_privilege", `the target refused CREATE SUBSCRIPTION (${text}); fix: GRANT pg_create_subscription (16+) or use a superuser`);
  }
  const code = (e as { code?: string }).code ?? "";
  if (!code.startsWith("08") && !/could not connect|connection to server|timeout|timed out/i.test(text)) {
    // The target reached the source, and something else failed: say what, not "unreachable".
    return new PgferryError("subscription_failed", `the target could not create its subscription to the source (${text}); fix: ` +
      `correct the cause named there, then run pgferry start again (pgferry cleanup first to start over)`);
  }
  return new PgferryError("target_cannot_reach_source", `the target could not connect to the source at ${where} for replication (${text}); ` +
    `fix: make the source reachable from the target server (firewall, pg_hba, DNS), or pass the address the target should use ` +
    `with --source-host-for-target`);
}

export async function subscriptionInfo(tgt: Client, name: string): Promise<SubscriptionInfo> {
  const s = await tgt.query(`SELECT s.oid, s.subenabled, w.pid, w.received_lsn::text AS received, w.latest_end_lsn::text AS latest_end,
      w.last_msg_receipt_time, pg_replication_origin_progress('pg_' || s.oid, false)::text AS applied
    FROM pg_subscription s LEFT JOIN pg_stat_subscription w ON w.subid = s.oid AND w.relid IS NULL
    WHERE s.subname = $1 AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`, [name]);
  const x = s.rows[0];
  if (!x) return { exists: false, enabled: false };
  let applyErrors: number | undefined;
  try {
    applyErrors = Number((await tgt.query(`SELECT apply_error_count FROM pg_stat_subscription_stats WHERE subid = $1`, [x.oid])).rows[0]?.apply_error_count ?? 0);
  } catch { /* PG < 15 has no pg_stat_subscription_stats */ }
  return { exists: true, enabled: x.subenabled, workerPid: x.pid ?? undefined, receivedLsn: x.received ?? undefined,
    latestEndLsn: x.latest_end ?? undefined, lastMessageAt: x.last_msg_receipt_time ?? undefined, appliedLsn: x.applied ?? undefined, applyErrors };
}

/** Wait until the apply worker runs (it starts asynchronously after CREATE SUBSCRIPTION). */
export async function waitForWorker(tgt: Client, name: string, timeoutMs = 30000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await subscriptionInfo(tgt, name)).workerPid) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

/**
 * Drop the subscription but not the slot through it: detaching first (slot_name = NONE) lets us
 * drop the slot ourselves on the source even when the target cannot reach it any more.
 */
export async function dropSubscription(tgt: Client, name: string): Promise<boolean> {
  // pg_subscription is shared by every database of the server: only ours (another database may have a migration of the same name).
  const r = await tgt.query(`SELECT subenabled, subslotname FROM pg_subscription WHERE subname = $1
    AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`, [name]);
  if (!r.rowCount) return false;
  const q = quoteIdent(name);
  await tgt.query(`ALTER SUBSCRIPTION ${q} DISABLE`);
  await tgt.query(`ALTER SUBSCRIPTION ${q} SET (slot_name = NONE)`);
  await tgt.query(`DROP SUBSCRIPTION ${q}`);
  return true;
}
