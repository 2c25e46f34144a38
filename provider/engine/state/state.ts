/**
 * The control schema `pgferry` on the target: one row per migration, per-table load progress, the
 * schema entries already applied and the objects held back for cutover. Every step records its
 * result here in the same transaction as its effect, so a killed step re-runs to the same result.
 *
 * This folder is the only code that queries `pgferry.*`: the migration record here (typed, its phase
 * changed only along PHASE_TRANSITIONS), the other records in files of their own, the control schema's
 * own shape in controlSchema.ts (numbered migrations).
 */
import { Client } from "pg";
import { CONTROL_SCHEMA, TableSelection } from "../catalog/catalog";
import { PgferryError } from "../core/errors";
import { parseDistributionInput } from "../copy/distribution";
import { CDC_MODES, CdcMode, MigrationOptions, OUTPUT_PLUGINS, UNLOGGED_HANDLING, DDL_HANDLING } from "../core/options";
import { controlSchemaExists } from "./controlSchema";
export { ensureControlSchema, controlSchemaExists, dropControlSchemaIfEmpty, CONTROL_SCHEMA_VERSION } from "./controlSchema";
export { readTableProgress, tableProgressRecorder } from "./tableProgress";
export type { TableProgress } from "./tableProgress";

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
  mode: CdcMode;
  slot: string;
  publication: string;
  subscription: string;
  consistentPoint?: string;
  fenceLsn?: string;
  error?: string;
  options: MigrationRecordOptions;
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
  /**
   * Ending replication: subscription, slot, publication. The slot and publication are dropped after the downtime (once
   * Completed) unless the cutover opens a rollback window or is a rollback's own, where they are still inside it.
   */
  endReplicationMs?: number;
  sequencesMs?: number;
  heldBackMs?: number;
}


/**
 * What a migration was started with, as its record keeps it (the `options` jsonb): what later steps (the
 * stream applier, the agent, cutover, drift, rollback, status) must read back rather than be told again.
 * Every field optional: records made by older releases (or by a SchemaSync resource) lack some.
 */
export type MigrationRecordOptions = Partial<Pick<MigrationOptions,
  "jobs" | "selection" | "replicaIdentityFull" | "sourceHostForTarget" | "plugin" | "unlogged" | "largeObjects" | "distribution" | "ddl">> & {
  /** wal2json: whether the source's wal2json quotes numbers (probed by start's preflight). */
  wal2jsonNumericAsString?: boolean;
  /** A reverse migration (rollback window): the forward migration it belongs to. */
  reverseOf?: string;
  /**
   * One database of a several-database migration (../databases.ts): the umbrella migration's name and every database
   * it was started with. Each member's record carries the whole list, so any one of them tells the set.
   */
  group?: { name: string; databases: string[]; /** The one cutover's downtime (first freeze → last completion), once cut over. */ downtimeMs?: number };
  /**
   * --ddl replicate with --include: tables created by replicated DDL that the selection does not name ("schema"."table"),
   * recorded by the cutover (final at the fence), so the gate and a later `verify` cover them (../cdc/ddl/joined.ts).
   */
  ddlJoinedTables?: string[];
};

/**
 * Which phase may follow which (a phase may always be recorded again: a re-run re-records where it is).
 * SchemaSync → ReadyToCutover: a rollback window's reverse record, which has nothing to load.
 * Aborted: a reverse record given up (finish, rollback). Completed and Aborted are final.
 */
export const PHASE_TRANSITIONS: Readonly<Record<Phase, readonly Phase[]>> = {
  SchemaSync: ["Loading", "ReadyToCutover", "Aborted"],
  Loading: ["IndexBuild", "Failed", "Aborted"],
  Failed: ["Loading", "Aborted"],
  IndexBuild: ["ReadyToCutover", "Aborted"],
  ReadyToCutover: ["CuttingOver", "Aborted"],
  CuttingOver: ["VerifyFailed", "Completed", "ReadyToCutover", "Aborted"],
  VerifyFailed: ["CuttingOver", "ReadyToCutover", "Aborted"],
  Completed: [],
  Aborted: [],
};

export const PHASES = Object.keys(PHASE_TRANSITIONS) as Phase[];

export function mayFollow(from: Phase, to: Phase): boolean {
  return from === to || PHASE_TRANSITIONS[from].includes(to);
}

/** The phases `to` may be written over (itself included). */
function phasesBefore(to: Phase): Phase[] {
  return PHASES.filter((from) => mayFollow(from, to));
}

const S = CONTROL_SCHEMA;

function corrupt(name: string, what: string, value: unknown): PgferryError {
  return new PgferryError("state_corrupt", `the record of migration "${name}" in ${S}.migration has ${what} ${JSON.stringify(value)}, ` +
    `which this pgferry does not know; fix: use the pgferry release that wrote it, or run pgferry cleanup and start again`);
}

/** The options jsonb as written by start, SchemaSync or the rollback window, checked field by field. */
export function parseRecordedOptions(name: string, raw: unknown): MigrationRecordOptions {
  const o = (raw ?? {}) as Record<string, unknown>;
  if (typeof o !== "object" || Array.isArray(o)) throw corrupt(name, "options", raw);
  const out: MigrationRecordOptions = {};
  const bool = (k: "replicaIdentityFull" | "largeObjects" | "wal2jsonNumericAsString") => {
    if (o[k] === undefined || o[k] === null) return;
    if (typeof o[k] !== "boolean") throw corrupt(name, `options.${k}`, o[k]);
    out[k] = o[k] as boolean;
  };
  const str = (k: "sourceHostForTarget" | "reverseOf") => {
    if (o[k] === undefined || o[k] === null) return;
    if (typeof o[k] !== "string") throw corrupt(name, `options.${k}`, o[k]);
    out[k] = o[k] as string;
  };
  const oneOf = <T extends string>(k: "plugin" | "unlogged" | "ddl", allowed: readonly T[]): T | undefined => {
    if (o[k] === undefined || o[k] === null) return undefined;
    if (!allowed.includes(o[k] as T)) throw corrupt(name, `options.${k}`, o[k]);
    return o[k] as T;
  };
  if (o.jobs !== undefined && o.jobs !== null) {
    if (typeof o.jobs !== "number") throw corrupt(name, "options.jobs", o.jobs);
    out.jobs = o.jobs;
  }
  if (o.selection !== undefined && o.selection !== null) {
    const sel = o.selection as Record<string, unknown>;
    const list = (k: keyof TableSelection): string[] => {
      const v = sel[k] ?? [];
      if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) throw corrupt(name, `options.selection.${k}`, v);
      return v as string[];
    };
    if (typeof sel !== "object" || Array.isArray(sel)) throw corrupt(name, "options.selection", sel);
    out.selection = { schemas: list("schemas"), include: list("include"), exclude: list("exclude") };
  }
  bool("replicaIdentityFull"); bool("largeObjects"); bool("wal2jsonNumericAsString");
  str("sourceHostForTarget"); str("reverseOf");
  const plugin = oneOf("plugin", OUTPUT_PLUGINS);
  if (plugin) out.plugin = plugin;
  const unlogged = oneOf("unlogged", UNLOGGED_HANDLING);
  if (unlogged) out.unlogged = unlogged;
  if (o.group !== undefined && o.group !== null) {
    const g = o.group as Record<string, unknown>;
    if (typeof g !== "object" || typeof g.name !== "string" || !Array.isArray(g.databases) || g.databases.some((d) => typeof d !== "string")) {
      throw corrupt(name, "options.group", o.group);
    }
    if (g.downtimeMs !== undefined && g.downtimeMs !== null && typeof g.downtimeMs !== "number") throw corrupt(name, "options.group.downtimeMs", g.downtimeMs);
    out.group = { name: g.name, databases: [...g.databases] as string[], ...(typeof g.downtimeMs === "number" ? { downtimeMs: g.downtimeMs } : {}) };
  }
  const ddl = oneOf("ddl", DDL_HANDLING);
  if (ddl) out.ddl = ddl;
  if (o.ddlJoinedTables !== undefined && o.ddlJoinedTables !== null) {
    if (!Array.isArray(o.ddlJoinedTables) || o.ddlJoinedTables.some((x) => typeof x !== "string")) throw corrupt(name, "options.ddlJoinedTables", o.ddlJoinedTables);
    out.ddlJoinedTables = [...o.ddlJoinedTables] as string[];
  }
  if (o.distribution !== undefined && o.distribution !== null) {
    try { out.distribution = parseDistributionInput(o.distribution); } catch { throw corrupt(name, "options.distribution", o.distribution); }
  }
  return out;
}

function toRecord(x: any): MigrationRecord {
  if (!PHASES.includes(x.phase)) throw corrupt(x.name, "phase", x.phase);
  if (!CDC_MODES.includes(x.mode)) throw corrupt(x.name, "mode", x.mode);
  return {
    name: x.name, phase: x.phase, mode: x.mode, slot: x.slot_name, publication: x.publication,
    subscription: x.subscription, consistentPoint: x.consistent_point ?? undefined, fenceLsn: x.fence_lsn ?? undefined,
    error: x.error ?? undefined, options: parseRecordedOptions(x.name, x.options), createdAt: x.created_at, loadStartedAt: x.load_started_at ?? undefined,
    loadFinishedAt: x.load_finished_at ?? undefined, streamingSince: x.streaming_since ?? undefined,
    freezeStartedAt: x.freeze_started_at ?? undefined, completedAt: x.completed_at ?? undefined,
    downtimeMs: x.downtime_ms ?? undefined, sourceFrozen: x.source_frozen,
    // Absent on a control schema made by an older pgferry until a writer upgrades it (controlSchema.ts):
    // readers (status) do not upgrade.
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

/** A new record, in phase SchemaSync. */
export async function insertMigration(c: Client, m: Pick<MigrationRecord, "name" | "mode" | "slot" | "publication" | "subscription" | "options">): Promise<void> {
  await c.query(`INSERT INTO ${S}.migration (name, phase, mode, slot_name, publication, subscription, options)
                 VALUES ($1, 'SchemaSync', $2, $3, $4, $5, $6)`,
    [m.name, m.mode, m.slot, m.publication, m.subscription, JSON.stringify(m.options)]);
}

/** Add to (or overwrite some of) the recorded options, keeping the others. */
export async function mergeMigrationOptions(c: Client, name: string, options: MigrationRecordOptions): Promise<void> {
  const r = await c.query(`UPDATE ${S}.migration SET options = options || $2::jsonb WHERE name = $1`, [name, JSON.stringify(options)]);
  if (!r.rowCount) throw notFound(name);
}

/** Remove a migration's record (and, by cascade, all its other records); true if there was one. */
export async function deleteMigration(c: Client, name: string): Promise<boolean> {
  const r = await c.query(`DELETE FROM ${S}.migration WHERE name = $1`, [name]);
  return (r.rowCount ?? 0) > 0;
}

function notFound(name: string): PgferryError {
  return new PgferryError("not_found", `no record of migration "${name}" in ${S}.migration (removed meanwhile by pgferry cleanup?); ` +
    `fix: run pgferry status to see what is recorded, and pgferry start to begin again`);
}

const COLUMNS: Record<string, string> = {
  phase: "phase", mode: "mode", consistentPoint: "consistent_point", fenceLsn: "fence_lsn", error: "error",
  loadStartedAt: "load_started_at", loadFinishedAt: "load_finished_at", streamingSince: "streaming_since",
  freezeStartedAt: "freeze_started_at", completedAt: "completed_at", downtimeMs: "downtime_ms", sourceFrozen: "source_frozen",
  options: "options", freezeSaved: "freeze_saved", replicationPaused: "replication_paused", cutoverTimings: "cutover_timings",
  rollbackWindow: "rollback_window", rollbackOpenedAt: "rollback_opened_at", rollbackClosedAt: "rollback_closed_at",
};
const JSON_COLUMNS = new Set(["options", "freezeSaved", "cutoverTimings"]);

/**
 * Update some fields of a migration row; `null` clears a field. The only writer of the phase: a new phase
 * is written only over one it may follow (PHASE_TRANSITIONS), checked in the UPDATE itself, so two
 * processes cannot slip an illegal transition between a read and the write.
 */
export async function updateMigration(c: Client, name: string, fields: Partial<{ [K in keyof MigrationRecord]: MigrationRecord[K] | null }>): Promise<void> {
  const keys = Object.keys(fields).filter((k) => COLUMNS[k]);
  if (!keys.length) return;
  const sets = keys.map((k, i) => `${COLUMNS[k]} = $${i + 2}`);
  const vals = keys.map((k) => {
    const v = (fields as Record<string, unknown>)[k];
    return JSON_COLUMNS.has(k) && v !== null ? JSON.stringify(v) : v;
  });
  const to = fields.phase;
  if (to !== undefined && (to === null || !PHASES.includes(to))) throw new PgferryError("illegal_phase", `no such phase: ${to}`);
  const guard = to ? ` AND phase = ANY ($${keys.length + 2}::text[])` : "";
  const r = await c.query(`UPDATE ${S}.migration SET ${sets.join(", ")}, updated_at = now() WHERE name = $1${guard}`,
    [name, ...vals, ...(to ? [phasesBefore(to)] : [])]);
  if (r.rowCount) return;
  const now = (await c.query(`SELECT phase FROM ${S}.migration WHERE name = $1`, [name])).rows[0]?.phase as Phase | undefined;
  if (!now) throw notFound(name);
  throw new PgferryError("illegal_phase_transition", `migration "${name}" is in phase ${now}; phase ${to} may not follow it ` +
    `(after ${now}: ${PHASE_TRANSITIONS[now]?.join(", ") || "nothing, it is final"}). Nothing was recorded; fix: run pgferry status, ` +
    `and the command its phase calls for`);
}

/** Record the tables replicated DDL joined to an --include selection (options.ddlJoinedTables; the other options untouched). */
export async function recordDdlJoinedTables(c: Client, name: string, tables: string[]): Promise<void> {
  await c.query(`UPDATE ${S}.migration SET options = coalesce(options, '{}'::jsonb) || jsonb_build_object('ddlJoinedTables', $2::jsonb), updated_at = now()
    WHERE name = $1`, [name, JSON.stringify(tables)]);
}

/** Serialises pgferry processes working on the same migration (session-level advisory lock on the target). */
export async function tryLockMigration(c: Client, name: string): Promise<boolean> {
  const r = await c.query(`SELECT pg_try_advisory_lock(hashtext('pgferry'), hashtext($1)) AS ok`, [name]);
  return r.rows[0].ok;
}
