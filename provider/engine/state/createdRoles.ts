/**
 * Roles `start --roles` created on the target (pgferry.created_role), recorded in the same transaction as
 * their CREATE ROLE: cleanup names exactly these (roles are global to the target server, shared by its
 * other databases, so pgferry never drops them itself; it prints the DROP statements).
 */
import { Client } from "pg";
import { CONTROL_SCHEMA } from "../catalog/catalog";

const S = CONTROL_SCHEMA;

/** Inside the caller's transaction (the one that creates the roles). */
export async function recordCreatedRoles(c: Client, migration: string, roles: string[]): Promise<void> {
  if (!roles.length) return;
  await c.query(`INSERT INTO ${S}.created_role (migration, role_name) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING`, [migration, roles]);
}

/** Roles this migration created, in creation order; [] when the control schema predates the table. */
export async function readCreatedRoles(c: Client, migration: string): Promise<string[]> {
  const ok = (await c.query(`SELECT to_regclass('${S}.created_role') IS NOT NULL AS ok`)).rows[0].ok;
  if (!ok) return [];
  return (await c.query(`SELECT role_name FROM ${S}.created_role WHERE migration = $1 ORDER BY created_at, role_name`, [migration])).rows.map((x) => x.role_name);
}
