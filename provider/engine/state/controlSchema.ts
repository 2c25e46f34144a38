/**
 * The control schema `pgferry` on the target, evolved by numbered migrations (1..N, in order, each once).
 * `pgferry.schema_version` holds one row per migration applied. They run in one transaction under a
 * transaction-level advisory lock, so two pgferry processes upgrading the same target wait for each other
 * and the schema is never half-upgraded.
 *
 * Migrations 1..7 reproduce the shapes earlier pgferry releases made without a version table (their
 * `CREATE … IF NOT EXISTS` / `ADD COLUMN IF NOT EXISTS` spread over state.ts, stream.ts, sourceChanges.ts
 * and touched.ts): they keep IF NOT EXISTS so that on a control schema made by any earlier release (any
 * subset of them already there, no schema_version) they converge on the same shape. Migrations added
 * from 8 on run against a known version and need no IF NOT EXISTS.
 */
import { Client } from "pg";
import { CONTROL_SCHEMA } from "../catalog/catalog";

const S = CONTROL_SCHEMA;

export interface ControlSchemaMigration { version: number; description: string; sql: string }

export const CONTROL_SCHEMA_MIGRATIONS: readonly ControlSchemaMigration[] = [
  { version: 1, description: "migration record, per-table load progress, schema entries", sql: `
    COMMENT ON SCHEMA ${S} IS 'pgferry migration state; safe to drop once every migration here is Completed or Aborted';
    CREATE TABLE IF NOT EXISTS ${S}.migration (
      name text PRIMARY KEY, phase text NOT NULL, mode text NOT NULL, slot_name text NOT NULL,
      publication text NOT NULL, subscription text NOT NULL, consistent_point text, fence_lsn text, error text,
      options jsonb NOT NULL DEFAULT '{}', created_at timestamptz NOT NULL DEFAULT now(),
      load_started_at timestamptz, load_finished_at timestamptz, streaming_since timestamptz,
      freeze_started_at timestamptz, completed_at timestamptz, downtime_ms double precision,
      source_frozen boolean NOT NULL DEFAULT false, updated_at timestamptz NOT NULL DEFAULT now());
    CREATE TABLE IF NOT EXISTS ${S}.table_progress (
      migration text NOT NULL REFERENCES ${S}.migration ON DELETE CASCADE, schema_name text NOT NULL,
      table_name text NOT NULL, status text NOT NULL DEFAULT 'pending', rows bigint NOT NULL DEFAULT 0,
      bytes bigint NOT NULL DEFAULT 0, estimated_rows bigint NOT NULL DEFAULT 0, estimated_bytes bigint NOT NULL DEFAULT 0,
      seconds double precision NOT NULL DEFAULT 0, PRIMARY KEY (migration, schema_name, table_name));
    CREATE TABLE IF NOT EXISTS ${S}.schema_entry (
      migration text NOT NULL REFERENCES ${S}.migration ON DELETE CASCADE, section text NOT NULL, ordinal int NOT NULL,
      kind text NOT NULL, object text NOT NULL, sql text NOT NULL, parallel boolean NOT NULL DEFAULT false,
      applied boolean NOT NULL DEFAULT false, PRIMARY KEY (migration, section, ordinal))` },
  { version: 2, description: "stream mode: applied position (written with the changes it covers) and per-table counters", sql: `
    ALTER TABLE ${S}.migration ADD COLUMN IF NOT EXISTS applied_lsn text;
    CREATE TABLE IF NOT EXISTS ${S}.apply_stats (
      migration text NOT NULL REFERENCES ${S}.migration ON DELETE CASCADE, table_name text NOT NULL,
      inserts bigint NOT NULL DEFAULT 0, updates bigint NOT NULL DEFAULT 0, deletes bigint NOT NULL DEFAULT 0,
      truncates bigint NOT NULL DEFAULT 0, PRIMARY KEY (migration, table_name))` },
  { version: 3, description: "cutover: settings the freeze changed, consumer paused for the gate, timings", sql: `
    ALTER TABLE ${S}.migration ADD COLUMN IF NOT EXISTS freeze_saved jsonb;
    ALTER TABLE ${S}.migration ADD COLUMN IF NOT EXISTS replication_paused boolean NOT NULL DEFAULT false;
    ALTER TABLE ${S}.migration ADD COLUMN IF NOT EXISTS cutover_timings jsonb` },
  { version: 4, description: "rollback window state and times, on the forward record", sql: `
    ALTER TABLE ${S}.migration ADD COLUMN IF NOT EXISTS rollback_window text;
    ALTER TABLE ${S}.migration ADD COLUMN IF NOT EXISTS rollback_opened_at timestamptz;
    ALTER TABLE ${S}.migration ADD COLUMN IF NOT EXISTS rollback_closed_at timestamptz` },
  { version: 5, description: "stream mode: the applier's last failure, cleared by its next commit", sql: `
    ALTER TABLE ${S}.migration ADD COLUMN IF NOT EXISTS apply_error jsonb` },
  { version: 6, description: "changes pgferry made to the source's schema, with their undo", sql: `
    CREATE TABLE IF NOT EXISTS ${S}.source_change (
      migration text NOT NULL REFERENCES ${S}.migration ON DELETE CASCADE, object text NOT NULL, kind text NOT NULL,
      change text NOT NULL, undo_sql text NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (migration, kind, object))` },
  { version: 7, description: "the source's per-table write counters before the slot (cutover gate baseline)", sql: `
    CREATE TABLE IF NOT EXISTS ${S}.table_activity (
      migration text NOT NULL REFERENCES ${S}.migration ON DELETE CASCADE, table_name text NOT NULL,
      changes numeric NOT NULL, PRIMARY KEY (migration, table_name))` },
  { version: 8, description: "roles start --roles created on the target (cleanup names them; roles are global, never dropped by pgferry)", sql: `
    CREATE TABLE ${S}.created_role (
      migration text NOT NULL REFERENCES ${S}.migration ON DELETE CASCADE, role_name text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (migration, role_name))` },
  { version: 9, description: "the source's leaf partitions' file nodes at the load (a TRUNCATE of one leaf is not replicated: copied again at cutover)", sql: `
    CREATE TABLE ${S}.partition_file (
      migration text NOT NULL REFERENCES ${S}.migration ON DELETE CASCADE, table_name text NOT NULL,
      filenode oid NOT NULL, PRIMARY KEY (migration, table_name))` },
];

export const CONTROL_SCHEMA_VERSION = CONTROL_SCHEMA_MIGRATIONS[CONTROL_SCHEMA_MIGRATIONS.length - 1].version;

/** The version of the control schema on this database: 0 = none (or made by a release before versions). */
export async function controlSchemaVersion(c: Client): Promise<number> {
  const r = await c.query(`SELECT to_regclass('${S}.schema_version') IS NOT NULL AS ok`);
  if (!r.rows[0].ok) return 0;
  return (await c.query(`SELECT coalesce(max(version), 0)::int AS v FROM ${S}.schema_version`)).rows[0].v;
}

/**
 * Bring the control schema to CONTROL_SCHEMA_VERSION (creating it if absent). Cheap when it is current
 * (one read, no lock, no DDL: the stream applier calls it at each session). Must not be called inside a
 * transaction of the caller's: it commits its own.
 */
export async function ensureControlSchema(c: Client): Promise<void> {
  if ((await controlSchemaVersion(c)) >= CONTROL_SCHEMA_VERSION) return;
  await c.query("BEGIN");
  try {
    // Transaction-level: released by COMMIT/ROLLBACK. Keys differ from tryLockMigration's (hashtext('pgferry'), name).
    await c.query(`SELECT pg_advisory_xact_lock(hashtext('pgferry control schema'), 0)`);
    await c.query(`CREATE SCHEMA IF NOT EXISTS ${S};
      CREATE TABLE IF NOT EXISTS ${S}.schema_version (version int PRIMARY KEY, description text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now())`);
    const current = await controlSchemaVersion(c); // re-read under the lock: another process may have upgraded meanwhile
    for (const m of CONTROL_SCHEMA_MIGRATIONS) {
      if (m.version <= current) continue;
      await c.query(m.sql);
      await c.query(`INSERT INTO ${S}.schema_version (version, description) VALUES ($1, $2)`, [m.version, m.description]);
    }
    await c.query("COMMIT");
  } catch (e) {
    await c.query("ROLLBACK").catch(() => undefined);
    throw e;
  }
}

export async function controlSchemaExists(c: Client): Promise<boolean> {
  const r = await c.query(`SELECT to_regclass('${S}.migration') IS NOT NULL AS ok`);
  return r.rows[0].ok;
}

/** Drop the control schema when no migration is recorded in it any more; true if dropped. */
export async function dropControlSchemaIfEmpty(c: Client): Promise<boolean> {
  if (!(await controlSchemaExists(c))) return false;
  const left = (await c.query(`SELECT count(*)::int AS n FROM ${S}.migration`)).rows[0].n;
  if (left > 0) return false;
  await c.query(`DROP SCHEMA ${S} CASCADE`);
  return true;
}
