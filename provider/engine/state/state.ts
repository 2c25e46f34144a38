/**
 * The control schema `pgferry` on the target: one row per migration, per-table load progress, the
 * schema entries already applied and the objects held back for cutover. Every step records its
 * result here in the same transaction as its effect, so a killed step re-runs to the same result.
 */
import { Client } from "pg";
import { CONTROL_SCHEMA } from "../catalog/catalog";

export type Phase =
  | "SchemaSync"      // pre-data being applied
  | "Loading"         // slot + snapshot exist, COPY running
  | "IndexBuild"      // post-data (indexes, PK/unique, triggers) being applied
  | "ReadyToCutover"  // CDC streaming
  | "CuttingOver"     // writes stopped (frozen or by the application), draining to the fence
  | "VerifyFailed"    // the verification gate found differences: source still frozen, replication paused, slot kept
  | "Completed"
  | "Failed"
  | "Aborted";

export interface MigrationRecord {
  name: string;
  phase: Phase;
  mode: string;
  slot: string;
  publication: string;
  subscription: string;
  consistentPoint?: string;
  fenceLsn?: string;
  error?: string;
  options: Record<string, unknown>;
  createdAt: Date;
  loadStartedAt?: Date;
  loadFinishedAt?: Date;
  streamingSince?: Date;
  freezeStartedAt?: Date;
  completedAt?: Date;
  downtimeMs?: number;
  sourceFrozen: boolean;
  /**
   * Settings the freeze changed on the source, with their previous values, so unfreezing restores exactly
   * them (recorded before anything is changed: a killed cutover's re-run or --abort finds them here).
   */
  freezeSaved?: SavedSetting[];
  /** Cutover paused the slot's consumer (subscription disabled / agent told to wait) for the post-fence checks and the gate. */
  replicationPaused: boolean;
  /** Where the cutover's time went (ms), recorded as each step finishes. */
  cutoverTimings?: CutoverTimings;
  /**
   * The rollback window (./rollback.ts), on the forward record: opening (cutover is creating the reverse
   * slot), open (new-server changes flow back to the old server), rollingBack, rolledBack, closed (finish).
   */
  rollbackWindow?: RollbackWindowState;
  rollbackOpenedAt?: Date;
  rollbackClosedAt?: Date;
  /** Stream mode: the applier's last failure; a divergence blocks cutover until a later commit clears it. */
  applyError?: ApplyError;
}

export interface ApplyError {
  /** divergence: an UPDATE/DELETE did not find exactly its row; error: anything else that stopped the applier. */
  kind: "divergence" | "error";
  code: string;
  message: string;
  at: string;
  /** The position applied before it (the failing change lies after it). */
  appliedLsn: string;
}

export type RollbackWindowState = "opening" | "open" | "rollingBack" | "rolledBack" | "closed";

/**
 * One default_transaction_read_only setting on the source as it was before the freeze: the database's own
 * (role null) or a role's setting in this database (pg_db_role_setting). `previous` null = not set then.
 */
export interface SavedSetting { role: string | null; previous: string | null }

export interface CutoverTimings {
  /** Freeze (settings, grace period, ending sessions) or, without --freeze-writes, waiting for writes to stop. */
  freezeMs?: number;
  /** Fence to everything applied, over all attempts. */
  drainMs?: number;
  /** Pausing replication and checking that nothing changed after the fence. */
  fenceCheckMs?: number;
  /** Copying unlogged tables again while writes are stopped (unlogged: copy). */
  unloggedCopyMs?: number;
  /** Comparing large objects and copying/unlinking those changed during CDC (they are not replicated). */
  largeObjectsMs?: number;
  verifyMs?: number;
  /** Ending replication: subscription, slot, publication. */
  endReplicationMs?: number;
  sequencesMs?: number;
  heldBackMs?: number;
}

export interface TableProgress {
  schema: string;
  table: string;
  status: "pending" | "copying" | "copied";
  rows: number;
  bytes: number;
  estimatedRows: number;
  estimatedBytes: number;
  seconds: number;
}

const S = CONTROL_SCHEMA;

export async function ensureControlSchema(c: Client): Promise<void> {
  await c.query(`
    CREATE SCHEMA IF NOT EXISTS ${S};
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
      applied boolean NOT NULL DEFAULT false, PRIMARY KEY (migration, section, ordinal));
    -- stream mode: the applied position, written in the same transaction as the changes it covers
    ALTER TABLE ${S}.migration ADD COLUMN IF NOT EXISTS applied_lsn text;
    CREATE TABLE IF NOT EXISTS ${S}.apply_stats (
      migration text NOT NULL REFERENCES ${S}.migration ON DELETE CASCADE, table_name text NOT NULL,
      inserts bigint NOT NULL DEFAULT 0, updates bigint NOT NULL DEFAULT 0, deletes bigint NOT NULL DEFAULT 0,
      truncates bigint NOT NULL DEFAULT 0, PRIMARY KEY (migration, table_name));
    -- cutover: settings the freeze changed (restored exactly by unfreeze), the consumer paused for the gate, timings
    ALTER TABLE ${S}.migration ADD COLUMN IF NOT EXISTS freeze_saved jsonb;
    ALTER TABLE ${S}.migration ADD COLUMN IF NOT EXISTS replication_paused boolean NOT NULL DEFAULT false;
    ALTER TABLE ${S}.migration ADD COLUMN IF NOT EXISTS cutover_timings jsonb;
    -- rollback window: state and times, on the forward migration's record
    ALTER TABLE ${S}.migration ADD COLUMN IF NOT EXISTS rollback_window text;
    ALTER TABLE ${S}.migration ADD COLUMN IF NOT EXISTS rollback_opened_at timestamptz;
    ALTER TABLE ${S}.migration ADD COLUMN IF NOT EXISTS rollback_closed_at timestamptz;
    -- stream mode: the applier's last failure (a divergence, or an error it keeps retrying); cleared by its next commit
    ALTER TABLE ${S}.migration ADD COLUMN IF NOT EXISTS apply_error jsonb;`);
}

export async function controlSchemaExists(c: Client): Promise<boolean> {
  const r = await c.query(`SELECT to_regclass('${S}.migration') IS NOT NULL AS ok`);
  return r.rows[0].ok;
}

function toRecord(x: any): MigrationRecord {
  return {
    name: x.name, phase: x.phase, mode: x.mode, slot: x.slot_name, publication: x.publication,
    subscription: x.subscription, consistentPoint: x.consistent_point ?? undefined, fenceLsn: x.fence_lsn ?? undefined,
    error: x.error ?? undefined, options: x.options, createdAt: x.created_at, loadStartedAt: x.load_started_at ?? undefined,
    loadFinishedAt: x.load_finished_at ?? undefined, streamingSince: x.streaming_since ?? undefined,
    freezeStartedAt: x.freeze_started_at ?? undefined, completedAt: x.completed_at ?? undefined,
    downtimeMs: x.downtime_ms ?? undefined, sourceFrozen: x.source_frozen,
    // Absent on a control schema made by an older pgferry until cutover adds the columns.
    freezeSaved: x.freeze_saved ?? undefined, replicationPaused: x.replication_paused ?? false,
    cutoverTimings: x.cutover_timings ?? undefined, rollbackWindow: x.rollback_window ?? undefined,
    rollbackOpenedAt: x.rollback_opened_at ?? undefined, rollbackClosedAt: x.rollback_closed_at ?? undefined,
    applyError: x.apply_error ?? undefined,
  };
}

export async function readMigration(c: Client, name: string): Promise<MigrationRecord | undefined> {
  if (!(await controlSchemaExists(c))) return undefined;
  const r = await c.query(`SELECT * FROM ${S}.migration WHERE name = $1`, [name]);
  return r.rows[0] ? toRecord(r.rows[0]) : undefined;
}

export async function insertMigration(c: Client, m: Pick<MigrationRecord, "name" | "mode" | "slot" | "publication" | "subscription" | "options">): Promise<void> {
  await c.query(`INSERT INTO ${S}.migration (name, phase, mode, slot_name, publication, subscription, options)
                 VALUES ($1, 'SchemaSync', $2, $3, $4, $5, $6)`,
    [m.name, m.mode, m.slot, m.publication, m.subscription, JSON.stringify(m.options)]);
}

const COLUMNS: Record<string, string> = {
  phase: "phase", mode: "mode", consistentPoint: "consistent_point", fenceLsn: "fence_lsn", error: "error",
  loadStartedAt: "load_started_at", loadFinishedAt: "load_finished_at", streamingSince: "streaming_since",
  freezeStartedAt: "freeze_started_at", completedAt: "completed_at", downtimeMs: "downtime_ms", sourceFrozen: "source_frozen",
  options: "options", freezeSaved: "freeze_saved", replicationPaused: "replication_paused", cutoverTimings: "cutover_timings",
  rollbackWindow: "rollback_window", rollbackOpenedAt: "rollback_opened_at", rollbackClosedAt: "rollback_closed_at",
};
const JSON_COLUMNS = new Set(["options", "freezeSaved", "cutoverTimings"]);

/** Update some fields of a migration row; `null` clears a field. */
export async function updateMigration(c: Client, name: string, fields: Partial<{ [K in keyof MigrationRecord]: MigrationRecord[K] | null }>): Promise<void> {
  const keys = Object.keys(fields).filter((k) => COLUMNS[k]);
  if (!keys.length) return;
  const sets = keys.map((k, i) => `${COLUMNS[k]} = $${i + 2}`);
  const vals = keys.map((k) => {
    const v = (fields as Record<string, unknown>)[k];
    return JSON_COLUMNS.has(k) && v !== null ? JSON.stringify(v) : v;
  });
  await c.query(`UPDATE ${S}.migration SET ${sets.join(", ")}, updated_at = now() WHERE name = $1`, [name, ...vals]);
}

export async function readTableProgress(c: Client, name: string): Promise<TableProgress[]> {
  const r = await c.query(`SELECT * FROM ${S}.table_progress WHERE migration = $1 ORDER BY schema_name, table_name`, [name]);
  return r.rows.map((x) => ({ schema: x.schema_name, table: x.table_name, status: x.status, rows: Number(x.rows),
    bytes: Number(x.bytes), estimatedRows: Number(x.estimated_rows), estimatedBytes: Number(x.estimated_bytes), seconds: x.seconds }));
}

/**
 * Records the load's finished work in table_progress as it happens (each finished COPY: its table's rows
 * and bytes so far, status copying, or copied with its last COPY), so another process (`pgferry status
 * --watch`, `--serve`) sees tables move during the load; the COPYs still running are read from the
 * target's pg_stat_progress_copy by status. Only finished COPYs are recorded, so the two never count
 * the same rows. Reports arriving together go out as one UPDATE, one write in flight at a time.
 * Recording is advisory: a failed write is ignored, since a broken target connection fails the load
 * on its own.
 */
export function tableProgressRecorder(c: Client, name: string) {
  type Row = { schema: string; name: string; rows: number; copiedBytes: number; seconds: number; done: boolean };
  const latest = new Map<string, Row>();
  const recorded = new Map<string, string>();
  let writing: Promise<void> | undefined;
  const write = async () => {
    while (latest.size) {
      const rows = [...latest.values()];
      latest.clear();
      await c.query(`UPDATE ${S}.table_progress p SET status = v.status, rows = v.rows, bytes = v.bytes, seconds = v.seconds
        FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::float8[]) AS v(s, t, status, rows, bytes, seconds)
        WHERE p.migration = $1 AND p.schema_name = v.s AND p.table_name = v.t`,
        [name, rows.map((r) => r.schema), rows.map((r) => r.name), rows.map((r) => (r.done ? "copied" : "copying")),
          rows.map((r) => r.rows), rows.map((r) => r.copiedBytes), rows.map((r) => r.seconds)]).catch(() => undefined);
    }
    writing = undefined;
  };
  return {
    note(p: Row) {
      const key = `${p.schema}.${p.name}`, finished = `${p.rows}/${p.copiedBytes}/${p.done}`;
      if (recorded.get(key) === finished) return;   // a periodic report of running COPYs: nothing finished since
      recorded.set(key, finished);
      latest.set(key, { schema: p.schema, name: p.name, rows: p.rows, copiedBytes: p.copiedBytes, seconds: p.seconds, done: p.done });
      // setImmediate: reports of the same moment are collected before the write starts.
      writing ??= new Promise<void>((r) => setImmediate(r)).then(write);
    },
    async close() { await writing; },
  };
}

/** Serialises pgferry processes working on the same migration (session-level advisory lock on the target). */
export async function tryLockMigration(c: Client, name: string): Promise<boolean> {
  const r = await c.query(`SELECT pg_try_advisory_lock(hashtext('pgferry'), hashtext($1)) AS ok`, [name]);
  return r.rows[0].ok;
}
