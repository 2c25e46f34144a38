/**
 * What the `Migration` dynamic resource does for each call of the Pulumi engine. Plain functions over
 * the engine; the serialized provider in state only `require`s this file by its published path
 * (pgferry/dist/provider/resources/…), so the code in users' state stays tiny and stable.
 */
import {
  cleanupMigration, cutoverMigration, finishRollbackWindow, migrationOptions, VERIFY_MODES, VerifyMode, migrationStatus, MigrationStatus, objectNames, parseEndpoint, PgferryError, startMigration,
} from "../engine";
import { formatFindings } from "../engine/core/errors";
import { defaultMode, type OutputPlugin } from "../engine/core/options";
import { addReplicationRuleFor } from "./hbaHandlers";
import { describeRollbackWindow } from "../engine/rollback/rollback";
import {
  AppliedOutput, inputDefaults, MIGRATION_INPUTS, MIGRATION_INPUTS as SPEC, MigrationInputValues, MigrationOutputValues, SettingSpec, TableOutput,
} from "../engine/core/optionSpec";

/** Inputs as the program declares them (source and target are secrets): generated from the spec's MIGRATION_INPUTS. */
export type MigrationInputs = MigrationInputValues;
export type { AppliedOutput, TableOutput };

/** Every input (so diff sees them, defaults filled in), plus the spec's MIGRATION_OUTPUTS; nothing secret except the inputs. */
export type MigrationOutputs = MigrationInputs & MigrationOutputValues;

/** Inputs whose change means another migration (new slot, new target data): replace, never update. */
export const REPLACE_ON: readonly string[] = Object.entries(MIGRATION_INPUTS as Record<string, SettingSpec>).filter(([, s]) => s.pulumi?.replaces).map(([k]) => k);
/** Every input the resource takes (the root program maps each from stack config: program/stack.ts). */
export const INPUT_KEYS: readonly string[] = Object.keys(MIGRATION_INPUTS);
/** What the Pulumi engine sends for a value not known yet (preview). */
export const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

import { parseDistributionInput } from "../engine/copy/distribution";
import {
  cleanupDatabases, combinedStatus, cutoverDatabases, databasesStatus, serverEndpoints, startDatabases, wantsDatabases,
} from "../engine/databases";

/** The databases input (several databases in one migration, ../engine/databases.ts); undefined when not given. */
const databaseSelection = (i: MigrationInputs) =>
  wantsDatabases({ databases: i.databases, allDatabases: i.allDatabases }) ? { databases: i.databases ?? [], allDatabases: !!i.allDatabases } : undefined;

/** Status of the migration: of its one database, or combined over its databases. */
async function statusOf(i: MigrationInputs): Promise<MigrationStatus> {
  const sel = databaseSelection(i);
  if (!sel) { const { source, target } = endpoints(i); return migrationStatus(source, target, nameOf(i)); }
  const { source, target } = serverEndpoints(i.source, i.target, sel);
  return combinedStatus(await databasesStatus(source, target, nameOf(i), sel));
}

const nameOf = (i: MigrationInputs): string => i.name ?? SPEC.name.default;
export const migrationId = (i: MigrationInputs) => `pgferry-migration-${nameOf(i)}`;

function options(i: MigrationInputs) {
  return migrationOptions({ name: i.name, mode: i.mode as "subscription" | "stream" | undefined,
    plugin: i.plugin as OutputPlugin | undefined, ddl: i.ddl as "detect" | "replicate" | undefined, jobs: i.jobs, schemas: i.schemas ?? [],
    include: i.include ?? [], exclude: i.exclude ?? [], replicaIdentityFull: !!i.replicaIdentityFull, sourceHostForTarget: i.sourceHostForTarget,
    unlogged: i.unlogged as "copy" | "skip" | undefined, largeObjects: i.largeObjects !== false, roles: !!i.roles,
    distribution: parseDistributionInput(isUnknown(i.distribution) ? undefined : i.distribution) });
}

function endpoints(i: MigrationInputs) {
  return { source: parseEndpoint(i.source, "source"), target: parseEndpoint(i.target, "target") };
}

/** Errors become one readable message with every finding and its fix (Pulumi prints only the message). */
function explain(e: unknown): Error {
  if (e instanceof PgferryError && e.findings.length) return new Error(`${e.message}\n${formatFindings(e.findings)}`);
  return e instanceof Error ? e : new Error(String(e));
}

/** Defaults made explicit (the spec's), so outputs show them and diff treats "unset" and "default" alike. */
const DEFAULTS = inputDefaults();

export function pickInputs(props: Record<string, unknown>): MigrationInputs {
  const out: Record<string, unknown> = {};
  for (const k of INPUT_KEYS) {
    const v = props[k];
    const value = v === undefined || v === null ? (k === "mode" ? modeDefault(props.distribution) : DEFAULTS[k]) : v;
    if (value !== undefined) out[k] = value;
  }
  return out as unknown as MigrationInputs;
}

/**
 * An unset mode shows the mode the engine runs (stream when `distribution` names tables), not the spec's default: the
 * output must say what happens. An unknown (preview) or invalid distribution keeps the spec's default (check reports the latter).
 */
function modeDefault(distribution: unknown): unknown {
  if (isUnknown(distribution)) return DEFAULTS.mode;
  try { return defaultMode(parseDistributionInput(distribution as MigrationInputs["distribution"])); } catch { return DEFAULTS.mode; }
}

/**
 * A streaming migration whose slot is gone from the source (dropped by hand, or invalidated): the changes
 * made since are lost, so it can never be cut over. Named in the outputs (refresh) and refused by up.
 */
function lostSlot(name: string, s: MigrationStatus): string | undefined {
  if (s.phase !== "ReadyToCutover" || s.slot) return undefined;
  return `the replication slot "${objectNames(name).slot}" is gone from the source: changes made since it was dropped are lost, ` +
    `so migration "${name}" cannot continue or be cut over. Fix: pulumi destroy (removes what is left of it), empty the target ` +
    `database (drop the migrated tables or recreate it), then pulumi up for a fresh copy`;
}

function summary(s: MigrationStatus, lost?: string): string {
  if (lost) return `ReadyToCutover: BROKEN, ${lost}`;
  switch (s.phase) {
    case "ReadyToCutover": return `ReadyToCutover: streaming, lag ${s.lagBytes ?? "?"} bytes${s.caughtUp ? ", caught up" : ""}`;
    case "Completed": return `Completed: downtime ${((s.downtimeMs ?? 0) / 1000).toFixed(2)} s`;
    case "VerifyFailed": return `VerifyFailed: ${s.error ?? "the target differs from the source"}`;
    case "Loading": return `Loading: ${s.rowsCopied} rows copied`;
    case "Failed": return `Failed: ${s.error ?? "see the error"}`;
    default: return s.phase;
  }
}

/** Outputs: every input (so diff sees them), plus live status; nothing secret except the inputs themselves. */
export function toOutputs(i: MigrationInputs, s: MigrationStatus): MigrationOutputs {
  const lost = lostSlot(nameOf(i), s);
  const inputs = pickInputs(i as unknown as Record<string, unknown>);
  return {
    ...inputs,
    // The mode the migration runs in, as recorded by the engine (an unset mode is the engine's choice: pickInputs).
    mode: (s.mode ?? inputs.mode) as MigrationInputs["mode"],
    migrationName: nameOf(i), status: summary(s, lost), phase: s.phase,
    lagBytes: s.lagBytes ?? null, lagSeconds: s.lagSeconds ?? null, pendingChanges: s.pendingChanges ?? null,
    caughtUp: s.caughtUp ?? null, confirmedLsn: s.confirmedLsn ?? null, appliedChanges: s.applied ?? null,
    rowsCopied: s.rowsCopied, bytesCopied: s.bytesCopied,
    tables: s.tables.map((t) => ({ table: `${t.schema}.${t.table}`, status: t.status, rows: t.rows, bytes: t.bytes, estimatedRows: t.estimatedRows })),
    downtimeMs: s.downtimeMs ?? null, fenceLsn: s.fenceLsn ?? null, error: lost ?? s.error ?? null,
    cutoverTimings: (s.cutoverTimings as Record<string, number> | undefined) ?? null,
    schemaDifferences: (s.schemaDifferences ?? []).map((d) => d.problem),
    notCarried: s.notCarried ?? [],
    rollbackWindowStatus: s.rollbackWindow ? describeRollbackWindow(s.rollbackWindow) : null,
  };
}

const isUnknown = (v: unknown) => v === UNKNOWN;

export async function check(_olds: Record<string, unknown>, news: Record<string, unknown>) {
  const failures: { property: string; reason: string }[] = [];
  const i = news as unknown as MigrationInputs;
  for (const k of ["source", "target"] as const) {
    if (isUnknown(i[k])) continue;
    try { parseEndpoint(i[k], k); } catch (e) { failures.push({ property: k, reason: (e as Error).message.replace(/--(source|target)/, "$1") }); }
  }
  let distributionOk = true;
  if (!isUnknown(i.distribution)) {
    try { parseDistributionInput(i.distribution); } catch (e) { distributionOk = false; failures.push({ property: "distribution", reason: (e as Error).message }); }
  }
  if (distributionOk && ![i.name, i.mode, i.plugin, i.jobs].some(isUnknown)) {
    try { options(i); } catch (e) { failures.push({ property: "name", reason: (e as Error).message.replace(/--(\w+)/, "$1") }); }
  }
  if (![i.source, i.target, i.databases, i.allDatabases].some(isUnknown) && databaseSelection(i)) {
    try { serverEndpoints(i.source, i.target, databaseSelection(i)!); } catch (e) { failures.push({ property: "databases", reason: (e as Error).message }); }
  }
  if (i.verify !== undefined && !isUnknown(i.verify) && !(VERIFY_MODES as string[]).includes(i.verify)) {
    failures.push({ property: "verify", reason: `verify must be one of ${VERIFY_MODES.join(", ")}` });
  }
  if (i.cutover !== undefined && !isUnknown(i.cutover) && typeof i.cutover !== "boolean") {
    failures.push({ property: "cutover", reason: "cutover must be true or false" });
  }
  return { inputs: news, failures };
}

export async function diff(_id: string, olds: Record<string, unknown>, news: Record<string, unknown>) {
  if (olds.cutover === true && news.cutover !== true && !isUnknown(news.cutover)) {
    // Refused here, before anything runs: pulumi preview already shows it.
    throw new Error(`migration "${olds.migrationName ?? olds.name ?? "main"}" has been cut over; cutover cannot be set back to false. ` +
      `The application now writes to the target; to move back, use its rollback window if reverseReplication was set (pgferry rollback), ` +
      `or start a new migration in the other direction.`);
  }
  const o = pickInputs(olds) as unknown as Record<string, unknown>, n = pickInputs(news) as unknown as Record<string, unknown>;
  const name = olds.migrationName ?? olds.name ?? "main";
  if (o.cutover === true && o.reverseReplication !== true && n.reverseReplication === true && !isUnknown(news.reverseReplication)) {
    throw new Error(`migration "${name}" was cut over without reverseReplication; a rollback window can only be opened by the cutover itself, ` +
      `before the application writes to the target. To move back, start a new migration in the other direction.`);
  }
  if (o.cutover === true && o.reverseReplication === true && o.rollbackWindow === false && n.rollbackWindow === true && !isUnknown(news.rollbackWindow)) {
    throw new Error(`the rollback window of migration "${name}" was closed (its reverse slot is gone); it cannot be reopened. ` +
      `To move back, start a new migration in the other direction.`);
  }
  const same = (k: string) => JSON.stringify(o[k]) === JSON.stringify(n[k]);
  const replaces = REPLACE_ON.filter((k) => !same(k));
  // A refresh found the slot gone: the next up must not report "no changes" but run update, which refuses with the fix.
  const broken = typeof olds.status === "string" && olds.status.startsWith("ReadyToCutover: BROKEN") && !replaces.length;
  const changes = broken || INPUT_KEYS.some((k) => !same(k));
  return { changes, replaces, deleteBeforeReplace: true };
}

/** Start (or adopt: a re-run continues the recorded migration) and, if declared, cut over at once. */
export async function create(inputs: Record<string, unknown>) {
  const i = pickInputs(inputs);
  const { source, target } = endpoints(i);
  try {
    await startWithHbaRetry(i);
    refuseLostSlot(i, await statusOf(i));
    if (i.cutover) await cutover(i);
  } catch (e) {
    throw explain(e);
  }
  return { id: migrationId(i), outs: toOutputs(i, await statusOf(i)) };
}

/** The cutover: of the one database, or the one cutover of all the databases. */
async function cutover(i: MigrationInputs) {
  const sel = databaseSelection(i);
  if (!sel) { const { source, target } = endpoints(i); return cutoverMigration(source, target, cutoverOptions(i)); }
  if (i.reverseReplication) throw new PgferryError("database_conflict", `reverseReplication cannot be used with databases: a rollback window serves one ` +
    `database's migration; fix: set reverseReplication false, or declare one Migration per database`);
  const { source, target } = serverEndpoints(i.source, i.target, sel);
  return cutoverDatabases(source!, target, sel, cutoverOptions(i));
}

async function startWithHbaRetry(i: MigrationInputs) {
  const sel = databaseSelection(i);
  if (sel) { const { source, target } = serverEndpoints(i.source, i.target, sel); return startDatabases(source!, target, sel, options(i)); }
  const { source, target } = endpoints(i);
  try {
    return await startMigration(source, target, options(i));
  } catch (e) {
    const hba = e instanceof PgferryError && (e.code === "pg_hba" ? e.message : e.findings.find((f) => f.code === "pg_hba")?.message);
    if (!hba || !i.autoReplicationRule) throw e;
    await addReplicationRuleFor(i.source, hba, nameOf(i));
    return startMigration(source, target, options(i));
  }
}

function refuseLostSlot(i: MigrationInputs, s: MigrationStatus) {
  const lost = lostSlot(nameOf(i), s);
  if (lost) throw new PgferryError("slot_missing", lost);
}

function cutoverOptions(i: MigrationInputs) {
  return { name: nameOf(i), freezeWrites: !!i.freezeWrites, timeoutSec: i.cutoverTimeoutSec ?? SPEC.cutoverTimeoutSec.default, jobs: i.jobs ?? SPEC.jobs.default,
    verify: (i.verify ?? SPEC.verify.default) as VerifyMode, graceSec: i.cutoverGraceSec ?? SPEC.cutoverGraceSec.default,
    // Declared closed already (rollbackWindow false) at cutover: no window is opened at all.
    reverseReplication: !!i.reverseReplication && i.rollbackWindow !== false, unlogged: i.unlogged ?? SPEC.unlogged.default };
}

/** refresh: live status. A migration whose record is gone (cleaned up outside Pulumi) is reported deleted. */
export async function read(id: string, props: Record<string, unknown>) {
  const i = pickInputs(props);
  const s = await statusOf(i);
  if (s.phase === "NotFound") return { id: "", props: {} };
  // No `inputs`: the engine keeps the program's own on refresh. Returned inputs (with defaults filled in) became the
  // state's inputs, and the next update showed every default the program leaves unset as removed ("- plugin").
  return { id, props: toOutputs(i, s) };
}

/**
 * cutover false → true runs the cutover; rollbackWindow true → false (with reverseReplication) ends the
 * window (finish); anything else re-checks that the migration streams.
 */
export async function update(_id: string, olds: Record<string, unknown>, news: Record<string, unknown>) {
  const i = pickInputs(news);
  const { source, target } = endpoints(i);
  try {
    const before = await statusOf(i);
    refuseLostSlot(i, before);
    if (before.phase !== "Completed") await startWithHbaRetry(i);
    if (i.cutover && !olds.cutover || i.cutover && ["CuttingOver", "VerifyFailed"].includes(before.phase)) await cutover(i);
    // Idempotent: an open window (or one a killed finish left half-closed) is closed; a closed one is left alone.
    const w = before.rollbackWindow?.state;
    if (i.cutover && i.rollbackWindow === false && w && w !== "closed" && w !== "rolledBack") await finishRollbackWindow(source, target, nameOf(i));
  } catch (e) {
    throw explain(e);
  }
  return { outs: toOutputs(i, await statusOf(i)) };
}

/** destroy: remove slot, publication, subscription and state (a rollback window's too); target data stays. */
export async function remove(_id: string, props: Record<string, unknown>) {
  const i = pickInputs(props);
  const { source, target } = endpoints(i);
  const sel = databaseSelection(i);
  try {
    if (sel) { const servers = serverEndpoints(i.source, i.target, sel); await cleanupDatabases(servers.source!, servers.target, nameOf(i), sel); return; }
    await cleanupMigration(source, target, nameOf(i));
  } catch (e) {
    throw explain(e);
  }
}
