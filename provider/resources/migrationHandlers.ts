/**
 * What the `Migration` dynamic resource does for each call of the Pulumi engine. Plain functions over
 * the engine; the serialized provider in state only `require`s this file by its published path
 * (pgferry/dist/provider/resources/…), so the code in users' state stays tiny and stable.
 */
import {
  cleanupMigration, cutoverMigration, finishRollbackWindow, migrationOptions, VERIFY_MODES, VerifyMode, migrationStatus, MigrationStatus, objectNames, parseEndpoint, PgferryError, startMigration,
} from "../engine";
import { formatFindings } from "../engine/core/errors";
import type { OutputPlugin } from "../engine/core/options";
import { addReplicationRuleFor } from "./hbaHandlers";
import { describeRollbackWindow } from "../engine/rollback/rollback";

/** Inputs as the program declares them (source and target are secrets). */
export interface MigrationInputs {
  source: string;
  target: string;
  name?: string;
  mode?: string;
  /** Stream mode's output plugin: pgoutput (default) or wal2json. */
  plugin?: string;
  jobs?: number;
  schemas?: string[];
  include?: string[];
  exclude?: string[];
  replicaIdentityFull?: boolean;
  /** Unlogged tables: "copy" (default) them again at cutover, or "skip" them in the cutover gate. */
  unlogged?: string;
  /** Large objects: carried (default true), or false: left out and listed as not carried. */
  largeObjects?: boolean;
  freezeWrites?: boolean;
  cutover?: boolean;
  cutoverTimeoutSec?: number;
  /** Cutover's gate before Completed: "counts" (default) or "hashes". */
  verify?: string;
  /** Seconds sessions get to finish at the freeze (or, without freezeWrites, for writes to stop); default 5. */
  cutoverGraceSec?: number;
  autoReplicationRule?: boolean;
  sourceHostForTarget?: string;
  /** At cutover, open a rollback window: the target's changes are replicated back to the source. */
  reverseReplication?: boolean;
  /** While reverseReplication is set: true (default) keeps the window open; true → false ends it (finish). */
  rollbackWindow?: boolean;
}

export interface TableOutput { table: string; status: string; rows: number; bytes: number; estimatedRows: number }
export interface AppliedOutput { table: string; inserts: number; updates: number; deletes: number; truncates: number }

export interface MigrationOutputs extends MigrationInputs {
  migrationName: string;
  /** One line for humans: phase and the figure that matters in it. */
  status: string;
  phase: string;
  lagBytes: number | null;
  lagSeconds: number | null;
  pendingChanges: number | null;
  /** True once the target has confirmed everything written on the source (null without a slot to measure). */
  caughtUp: boolean | null;
  confirmedLsn: string | null;
  /** Stream mode: changes applied per table (a native subscription does not count them: null). */
  appliedChanges: AppliedOutput[] | null;
  rowsCopied: number;
  bytesCopied: number;
  tables: TableOutput[];
  downtimeMs: number | null;
  /** Where the downtime went: freezeMs, drainMs, fenceCheckMs, unloggedCopyMs, largeObjectsMs, verifyMs, endReplicationMs, sequencesMs, heldBackMs. */
  cutoverTimings: Record<string, number> | null;
  /** DDL made on the source that the target lacks (one line each); cutover refuses while not empty. */
  schemaDifferences: string[];
  /** What the target does not get (kind, object, reason, fix), as start recorded it. */
  notCarried: { kind: string; object: string; reason: string; fix: string }[];
  fenceLsn: string | null;
  error: string | null;
  /** The rollback window in one line ("open: the old server is 0 B behind…", "closed"); null without one. */
  rollbackWindowStatus: string | null;
}

/** Inputs whose change means another migration (new slot, new target data): replace, never update. */
export const REPLACE_ON = ["source", "target", "name", "mode", "plugin", "schemas", "include", "exclude", "replicaIdentityFull", "sourceHostForTarget"] as const;
/** Every input the resource takes (the root program maps each from stack config: program/stack.ts). */
export const INPUT_KEYS = [...REPLACE_ON, "jobs", "unlogged", "largeObjects", "freezeWrites", "cutover", "cutoverTimeoutSec", "verify", "cutoverGraceSec", "autoReplicationRule",
  "reverseReplication", "rollbackWindow"] as const;
/** What the Pulumi engine sends for a value not known yet (preview). */
export const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

const nameOf = (i: MigrationInputs) => i.name ?? "main";
export const migrationId = (i: MigrationInputs) => `pgferry-migration-${nameOf(i)}`;

function options(i: MigrationInputs) {
  return migrationOptions({ name: i.name, mode: i.mode as "subscription" | "stream" | undefined,
    plugin: i.plugin as OutputPlugin | undefined, jobs: i.jobs, schemas: i.schemas ?? [],
    include: i.include ?? [], exclude: i.exclude ?? [], replicaIdentityFull: !!i.replicaIdentityFull, sourceHostForTarget: i.sourceHostForTarget,
    unlogged: i.unlogged as "copy" | "skip" | undefined, largeObjects: i.largeObjects !== false });
}

function endpoints(i: MigrationInputs) {
  return { source: parseEndpoint(i.source, "source"), target: parseEndpoint(i.target, "target") };
}

/** Errors become one readable message with every finding and its fix (Pulumi prints only the message). */
function explain(e: unknown): Error {
  if (e instanceof PgferryError && e.findings.length) return new Error(`${e.message}\n${formatFindings(e.findings)}`);
  return e instanceof Error ? e : new Error(String(e));
}

/** Defaults made explicit, so outputs show them and diff treats "unset" and "default" alike. */
const DEFAULTS: Omit<Required<MigrationInputs>, "source" | "target" | "sourceHostForTarget"> = {
  name: "main", mode: "subscription", plugin: "pgoutput", jobs: 4, schemas: [], include: [], exclude: [], replicaIdentityFull: false, unlogged: "copy", largeObjects: true,
  freezeWrites: false, cutover: false, cutoverTimeoutSec: 300, verify: "counts", cutoverGraceSec: 5, autoReplicationRule: false,
  reverseReplication: false, rollbackWindow: true,
};

export function pickInputs(props: Record<string, unknown>): MigrationInputs {
  const out: Record<string, unknown> = {};
  for (const k of INPUT_KEYS) {
    const v = props[k];
    const value = v === undefined || v === null ? (DEFAULTS as Record<string, unknown>)[k] : v;
    if (value !== undefined) out[k] = value;
  }
  return out as unknown as MigrationInputs;
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
  return {
    ...pickInputs(i as unknown as Record<string, unknown>),
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
  if (![i.name, i.mode, i.plugin, i.jobs].some(isUnknown)) {
    try { options(i); } catch (e) { failures.push({ property: "name", reason: (e as Error).message.replace(/--(\w+)/, "$1") }); }
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
    refuseLostSlot(i, await migrationStatus(source, target, nameOf(i)));
    if (i.cutover) await cutoverMigration(source, target, cutoverOptions(i));
  } catch (e) {
    throw explain(e);
  }
  return { id: migrationId(i), outs: toOutputs(i, await migrationStatus(source, target, nameOf(i))) };
}

async function startWithHbaRetry(i: MigrationInputs) {
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
  return { name: nameOf(i), freezeWrites: !!i.freezeWrites, timeoutSec: i.cutoverTimeoutSec ?? 300, jobs: i.jobs ?? 4,
    verify: (i.verify ?? "counts") as VerifyMode, graceSec: i.cutoverGraceSec ?? 5,
    // Declared closed already (rollbackWindow false) at cutover: no window is opened at all.
    reverseReplication: !!i.reverseReplication && i.rollbackWindow !== false, unlogged: (i.unlogged ?? "copy") as "copy" | "skip" };
}

/** refresh: live status. A migration whose record is gone (cleaned up outside Pulumi) is reported deleted. */
export async function read(id: string, props: Record<string, unknown>) {
  const i = pickInputs(props);
  const { source, target } = endpoints(i);
  const s = await migrationStatus(source, target, nameOf(i));
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
    const before = await migrationStatus(source, target, nameOf(i));
    refuseLostSlot(i, before);
    if (before.phase !== "Completed") await startWithHbaRetry(i);
    if (i.cutover && !olds.cutover || i.cutover && ["CuttingOver", "VerifyFailed"].includes(before.phase)) await cutoverMigration(source, target, cutoverOptions(i));
    // Idempotent: an open window (or one a killed finish left half-closed) is closed; a closed one is left alone.
    const w = before.rollbackWindow?.state;
    if (i.cutover && i.rollbackWindow === false && w && w !== "closed" && w !== "rolledBack") await finishRollbackWindow(source, target, nameOf(i));
  } catch (e) {
    throw explain(e);
  }
  return { outs: toOutputs(i, await migrationStatus(source, target, nameOf(i))) };
}

/** destroy: remove slot, publication, subscription and state (a rollback window's too); target data stays. */
export async function remove(_id: string, props: Record<string, unknown>) {
  const i = pickInputs(props);
  const { source, target } = endpoints(i);
  try {
    await cleanupMigration(source, target, nameOf(i));
  } catch (e) {
    throw explain(e);
  }
}
