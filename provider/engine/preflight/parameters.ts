/**
 * Server parameters on a self-managed server, through ALTER SYSTEM: what logical replication needs
 * (wal_level = logical, enough replication slots and WAL senders) plus any extra settings. Changes
 * that need a restart are reported as pending; a migration refuses until the server was restarted.
 */
import { Client } from "pg";
import { PgferryError } from "../core/errors";
import { quoteIdent, quoteLiteral } from "../core/endpoint";

export interface ParameterState {
  name: string;
  /** Value in force now. */
  value: string;
  /** Value requested (ALTER SYSTEM), possibly waiting for a restart. */
  wanted: string;
  pendingRestart: boolean;
  /** postmaster (restart), sighup (reload), user… */
  context: string;
}

export interface ParametersResult { parameters: ParameterState[]; pendingRestart: boolean; changed: string[] }

/**
 * Sizing for a migration: one slot and two WAL senders per concurrent migration (the snapshot
 * connection and the stream), on top of what the server already uses, plus headroom.
 */
export async function recommendedReplicationSettings(c: Client, migrations = 1): Promise<Record<string, string>> {
  const r = (await c.query(`SELECT current_setting('max_replication_slots')::int AS slots, current_setting('max_wal_senders')::int AS senders,
      (SELECT count(*) FROM pg_replication_slots)::int AS used_slots, (SELECT count(*) FROM pg_stat_replication)::int AS used_senders`)).rows[0];
  return {
    wal_level: "logical",
    max_replication_slots: String(Math.max(r.slots, r.used_slots + migrations + 2)),
    max_wal_senders: String(Math.max(r.senders, r.used_senders + 2 * migrations + 2)),
  };
}

async function readSettings(c: Client, names: string[]): Promise<Map<string, { setting: string; unit: string | null; context: string; pending: boolean }>> {
  const r = await c.query(`SELECT name, setting, unit, context, pending_restart FROM pg_settings WHERE name = ANY($1)`, [names]);
  return new Map(r.rows.map((x) => [x.name, { setting: x.setting, unit: x.unit, context: x.context, pending: x.pending_restart }]));
}

/** Values ALTER SYSTEM has written to postgresql.auto.conf (what the server uses after a restart). */
async function autoConf(c: Client, names: string[]): Promise<Map<string, string>> {
  try {
    const r = await c.query(`SELECT name, setting FROM pg_file_settings WHERE name = ANY($1) AND applied IS NOT NULL ORDER BY seqno`, [names]);
    return new Map(r.rows.map((x) => [x.name, x.setting])); // later files/lines win, as the server reads them
  } catch {
    return new Map();
  }
}

export async function ensureParameters(c: Client, wanted: Record<string, string>): Promise<ParametersResult> {
  const names = Object.keys(wanted);
  const known = await readSettings(c, names);
  const unknown = names.filter((n) => !known.has(n));
  if (unknown.length) throw new PgferryError("unknown_parameter", `unknown server parameter(s): ${unknown.join(", ")}`);
  const files = await autoConf(c, names);
  const changed: string[] = [];
  for (const [name, value] of Object.entries(wanted)) {
    const now = known.get(name)!;
    const configured = files.get(name) ?? now.setting;
    if (configured === value && now.setting === value) continue;
    if (configured === value) continue; // already requested; waiting for a restart
    try {
      await c.query(`ALTER SYSTEM SET ${quoteIdent(name)} = ${quoteLiteral(value)}`);
    } catch (e) {
      throw new PgferryError("alter_system", `cannot set ${name} (${(e as Error).message}); fix: run as a superuser, or ` +
        `GRANT ALTER SYSTEM ON PARAMETER ${name} (PostgreSQL 15+); on a managed service use its parameter API`);
    }
    changed.push(name);
  }
  if (changed.length) await c.query(`SELECT pg_reload_conf()`);
  return { ...(await readParameters(c, wanted)), changed };
}

export async function readParameters(c: Client, wanted: Record<string, string>): Promise<ParametersResult> {
  // pg_reload_conf is asynchronous: give the postmaster a moment before reading pending_restart.
  await new Promise((r) => setTimeout(r, 200));
  const names = Object.keys(wanted);
  const now = await readSettings(c, names);
  const files = await autoConf(c, names);
  const parameters = names.map((name) => {
    const s = now.get(name)!;
    return { name, value: s.setting, wanted: files.get(name) ?? s.setting, context: s.context,
      pendingRestart: s.pending || (s.context === "postmaster" && (files.get(name) ?? s.setting) !== s.setting) };
  });
  return { parameters, pendingRestart: parameters.some((p) => p.pendingRestart), changed: [] };
}
