/**
 * Several databases of one server in one migration (`--database NAME`, repeatable, or `--all-databases`;
 * Pulumi `databases` / `allDatabases`). Each database is an ordinary single-database migration — its own
 * record in that target database's pgferry schema, its own slot, publication, load and CDC — composed here
 * from the single-database start, status, cutover, verify, cleanup and agent; nothing of those is rewritten.
 *
 *  - Names: slots are global to the source server, so each database's migration is named
 *    `<name>_<database>` (memberName), not `<name>`.
 *  - The umbrella record: each member's record carries the umbrella name and the full list of databases
 *    (options.group, written by start), so any member tells the whole set; no other database or table is used.
 *  - One cutover: every database runs the single-database cutover at once, meeting at two barriers (cutover.ts
 *    `barrier`): before anyone freezes, and after every gate has passed, before anyone ends replication. If one
 *    fails before the second, none is completed: every database that was frozen or paused is aborted
 *    (unfrozen exactly, replication resumed, phase ReadyToCutover), as `cutover --abort` does.
 *
 * docs/databases.md is the user's reference; docs/design.md ("Several databases") the reasons.
 */
import { createHash } from "crypto";
import { Client } from "pg";
import { parse } from "pg-connection-string";
import { copyableTables, listTables } from "./catalog/catalog";
import { connect, endClient, Endpoint, parseEndpoint, quoteIdent, quoteLiteral } from "./core/endpoint";
import { ErrorCode, PgferryError } from "./core/errors";
import { MigrationOptions } from "./core/options";
import { MigrationEvent, startMigration, StartResult } from "./start";
import { migrationStatus, MigrationStatus } from "./status";
import { AbortResult, abortCutover, cutoverMigration, CutoverOptions, CutoverResult } from "./cutover/cutover";
import { cleanupMigration, CleanupResult } from "./cleanup";
import { AgentResult, runAgent } from "./cdc/stream/agent";
import { verifyMigration, VerifyReport } from "./verify/verify";
import { mergeMigrationOptions, MigrationRecord, Phase, readMigration, updateMigration } from "./state/state";

/** --database (repeatable) and --all-databases, as given. */
export interface DatabaseSelection {
  databases?: string[];
  allDatabases?: boolean;
}

/** A database --all-databases left out, and why (printed by start, documented in docs/databases.md). */
export interface SkippedDatabase { database: string; reason: string }

/** The maintenance database an umbrella command connects to when the URI names none. */
export const MAINTENANCE_DATABASE = "postgres";

/** True when the command is about several databases (either flag given). */
export function wantsDatabases(sel: DatabaseSelection): boolean {
  return !!(sel.databases?.length || sel.allDatabases);
}

/**
 * The name of one database's migration: `<name>_<database>` when that is a valid migration name (a-z, 0-9, _,
 * at most 40, not ending in _rev), else `<name, cut to 31>_<8 hex of the database name's SHA-1>`. Deterministic,
 * so every command finds what start made; distinct per database, because slots are global to the source server.
 */
export function memberName(name: string, database: string): string {
  const plain = `${name}_${database}`;
  if (/^[a-z0-9_]{1,40}$/.test(plain) && !plain.endsWith("_rev")) return plain;
  return `${name.slice(0, 31)}_${createHash("sha1").update(database).digest("hex").slice(0, 8)}`;
}

/** The same server, another database. */
export function databaseEndpoint(ep: Endpoint, database: string): Endpoint {
  return { ...ep, database, label: `${ep.role} ${ep.user}@${ep.host}:${ep.port}/${database}` };
}

/**
 * The servers from --source/--target when databases are selected: a database in a URI must be postgres (the
 * maintenance database pgferry lists databases from) or one of those given with --database; anything else is a
 * contradiction refused here, before any connection. Returns endpoints on the URI's database, else postgres.
 */
export function serverEndpoints(sourceUri: string | undefined, targetUri: string | undefined, sel: DatabaseSelection,
  { sourceOptional = false } = {}): { source?: Endpoint; target: Endpoint; databases: string[] } {
  const databases = checkSelection(sel);
  const server = (uri: string | undefined, role: "source" | "target"): Endpoint => {
    const ep = parseEndpoint(uri, role);
    let inUri: string | null | undefined;
    try { inUri = parse(uri!).database; } catch { inUri = undefined; }
    if (inUri && inUri !== MAINTENANCE_DATABASE && !databases.includes(inUri)) {
      throw new PgferryError("database_conflict", `--${role} names database "${inUri}", but ${sel.allDatabases ? "--all-databases was given"
        : `--database names ${databases.map((d) => `"${d}"`).join(", ")}`}: with --database/--all-databases the URIs name the servers. ` +
        `Fix: give --${role} without a database (postgresql://user@host:port/) or with /${MAINTENANCE_DATABASE}, or drop ` +
        `--database/--all-databases to migrate "${inUri}" alone`);
    }
    return databaseEndpoint(ep, inUri || MAINTENANCE_DATABASE);
  };
  const source = sourceOptional && !sourceUri ? undefined : server(sourceUri, "source");
  return { source, target: server(targetUri, "target"), databases };
}

/** The --database names, deduplicated in order; both flags at once is a contradiction. */
function checkSelection(sel: DatabaseSelection): string[] {
  const databases = [...new Set(sel.databases ?? [])];
  if (databases.length && sel.allDatabases) {
    throw new PgferryError("database_conflict", `--database and --all-databases were both given; fix: give either --database NAME ` +
      `(repeatable) or --all-databases`);
  }
  const empty = databases.find((d) => !d.trim());
  if (empty !== undefined) throw new PgferryError("database_conflict", `--database was given an empty name; fix: give --database NAME`);
  return databases;
}

interface ServerDatabase { name: string; template: boolean; allowConn: boolean; canConnect: boolean }

async function serverDatabases(ep: Endpoint): Promise<ServerDatabase[]> {
  const c = await connect(ep);
  try {
    return (await c.query(`SELECT datname, datistemplate, datallowconn, has_database_privilege(datname, 'CONNECT') AS can
      FROM pg_database ORDER BY datname`)).rows.map((r) => ({ name: r.datname, template: r.datistemplate, allowConn: r.datallowconn, canConnect: r.can }));
  } finally { await endClient(c); }
}

/** The database has a table to migrate (what start's preflight requires: no_tables otherwise). */
async function hasTables(ep: Endpoint): Promise<boolean> {
  const c = await connect(ep);
  try { return copyableTables(await listTables(c, { schemas: [], include: [], exclude: [] })).length > 0; } finally { await endClient(c); }
}

const connectable = (d: ServerDatabase) => !d.template && d.allowConn && d.canConnect;

function whyNot(d: ServerDatabase): string {
  return d.template ? "a template" : !d.allowConn ? "not accepting connections (datallowconn off)" : "the role may not connect to it (no CONNECT privilege)";
}

/**
 * The databases `start` migrates, checked on both servers before anything is changed: --all-databases takes every
 * database of the source the role may connect to except template0/template1 (templates) and postgres; a named one must
 * exist on the source and be connectable; every one must exist on the target (pgferry does not create databases:
 * the refusal gives the CREATE DATABASE to run, with the source's encoding and locale).
 */
export async function startDatabaseSet(source: Endpoint, target: Endpoint, sel: DatabaseSelection): Promise<{ databases: string[]; skipped: SkippedDatabase[] }> {
  const named = checkSelection(sel);
  const onSource = await serverDatabases(source);
  const skipped: SkippedDatabase[] = [];
  let databases: string[];
  if (sel.allDatabases) {
    databases = [];
    for (const d of onSource) {
      if (d.name === MAINTENANCE_DATABASE) skipped.push({ database: d.name, reason: "the maintenance database (give --database postgres to migrate it)" });
      else if (!connectable(d)) skipped.push({ database: d.name, reason: whyNot(d) });
      else if (!(await hasTables(databaseEndpoint(source, d.name)))) {
        skipped.push({ database: d.name, reason: "no tables in its user schemas (nothing to migrate; start's preflight refuses such a database)" });
      } else databases.push(d.name);
    }
    if (!databases.length) {
      throw new PgferryError("no_databases", `--all-databases found no database to migrate on the ${source.label.replace(/\/[^/]*$/, "")} ` +
        `(skipped: ${skipped.map((s) => `${s.database}: ${s.reason}`).join("; ")}); fix: create the databases to migrate, or name them with --database`);
    }
  } else {
    databases = named;
    for (const db of named) {
      const d = onSource.find((x) => x.name === db);
      if (!d || !connectable(d)) {
        throw new PgferryError("database_not_found", `--database ${db}: ${d ? `the source's database "${db}" is ${whyNot(d)}` : `no database "${db}" on the source`}; ` +
          `nothing was changed. Fix: give one of the source's databases: ${onSource.filter(connectable).map((x) => x.name).join(", ") || "(none connectable)"}`);
      }
    }
  }
  const onTarget = new Set((await serverDatabases(target)).map((d) => d.name));
  const missing = databases.filter((d) => !onTarget.has(d));
  if (missing.length) {
    const c = await connect(source);
    try {
      const rows = (await c.query(`SELECT datname, pg_encoding_to_char(encoding) AS enc, datcollate, datctype FROM pg_database WHERE datname = ANY($1)
        ORDER BY datname`, [missing])).rows;
      throw new PgferryError("target_database_missing", `${missing.length} database(s) to migrate do not exist on the target: ${missing.join(", ")}; ` +
        `nothing was changed (pgferry does not create databases: their owner, encoding and locale are the target's to choose). Fix: create them on ` +
        `the target, e.g. ${rows.map((r) => `CREATE DATABASE ${quoteIdent(r.datname)} TEMPLATE template0 ENCODING ${quoteLiteral(r.enc)} ` +
          `LC_COLLATE ${quoteLiteral(r.datcollate)} LC_CTYPE ${quoteLiteral(r.datctype)};`).join(" ")} then run pgferry start again`);
    } finally { await endClient(c); }
  }
  return { databases, skipped };
}

/** Each database's record of the migration (undefined where the target database has none, or cannot be reached). */
async function memberRecords(target: Endpoint, name: string, databases: string[]): Promise<Map<string, MigrationRecord | undefined>> {
  const out = new Map<string, MigrationRecord | undefined>();
  for (const db of databases) {
    let c: Client | undefined;
    try {
      c = await connect(databaseEndpoint(target, db));
      out.set(db, await readMigration(c, memberName(name, db)));
    } catch (e) {
      if (e instanceof PgferryError && e.code === "state_corrupt") throw e;
      out.set(db, undefined);
    } finally { await endClient(c); }
  }
  return out;
}

/**
 * The databases a command after start works on: those named, or with --all-databases those the migration was started
 * with (found in the members' records on the target; where none is found, the source's databases as start would take
 * them, so cleanup still removes what a start that failed early left). `exact`: the databases named must be exactly
 * the recorded set (the cutover: one migration is cut over whole).
 */
export async function recordedDatabaseSet(source: Endpoint | undefined, target: Endpoint, name: string, sel: DatabaseSelection,
  { exact = false } = {}): Promise<string[]> {
  const named = checkSelection(sel);
  const candidates = sel.allDatabases ? (await serverDatabases(target)).filter(connectable).map((d) => d.name) : named;
  const records = await memberRecords(target, name, candidates);
  const recorded = new Set<string>();
  for (const m of records.values()) if (m?.options.group?.name === name) m.options.group.databases.forEach((d) => recorded.add(d));
  if (sel.allDatabases) {
    if (recorded.size) return [...recorded].sort();
    if (source) return (await startDatabaseSet(source, target, { allDatabases: true }).catch((e) => {
      if (e instanceof PgferryError && e.code === "target_database_missing") return { databases: [] as string[] };
      throw e;
    })).databases.filter((d) => candidates.includes(d));
    throw new PgferryError("no_databases", `no migration "${name}" of several databases on the ${target.label.replace(/\/[^/]*$/, "")}; ` +
      `fix: check --name and --target, give the databases with --database, or give --source too`);
  }
  if (exact && recorded.size && (recorded.size !== named.length || named.some((d) => !recorded.has(d)))) {
    throw new PgferryError("databases_mismatch", `migration "${name}" was started with the databases ${[...recorded].sort().join(", ")}, ` +
      `but ${named.join(", ")} were given: one cutover takes all of them. Fix: give ${[...recorded].sort().map((d) => `--database ${d}`).join(" ")} ` +
      `(or --all-databases)`);
  }
  return named;
}

/** A failure in one database, named: same code, same findings, and what state the others are in. */
function inDatabase(db: string, e: unknown, more = ""): unknown {
  if (!(e instanceof PgferryError)) return e;
  return new PgferryError(e.code, `database "${db}": ${e.message}${more}`, e.findings);
}

// ---- start ----

export interface DatabasesStartResult {
  name: string;
  databases: ({ database: string; migration: string } & StartResult)[];
  /** What --all-databases left out, and why. */
  skipped: SkippedDatabase[];
}

/**
 * Start every selected database's migration, one after another (each loads in parallel itself). The set is checked
 * on both servers first; a re-run continues (databases already streaming are a no-op). A failure names its database;
 * those started before it keep streaming, and running start again continues with the rest.
 */
export async function startDatabases(source: Endpoint, target: Endpoint, sel: DatabaseSelection, o: MigrationOptions,
  onEvent: (database: string, e: MigrationEvent) => void = () => undefined, until?: "SchemaSync"): Promise<DatabasesStartResult> {
  const { databases, skipped } = await startDatabaseSet(source, target, sel);
  const group = { name: o.name, databases: [...databases].sort() };
  for (const [db, m] of await memberRecords(target, o.name, databases)) {
    const was = m?.options.group;
    if (was && JSON.stringify(was.databases) !== JSON.stringify(group.databases)) {
      throw new PgferryError("databases_mismatch", `migration "${o.name}" was started with the databases ${was.databases.join(", ")} (recorded in "${db}"), ` +
        `not ${group.databases.join(", ")}; nothing was changed. Fix: run start with ${was.databases.map((d) => `--database ${d}`).join(" ")}, ` +
        `or pgferry cleanup the migration and start again with the new set`);
    }
  }
  const out: DatabasesStartResult = { name: o.name, databases: [], skipped };
  for (const db of databases) {
    const member = memberName(o.name, db);
    const tgtEp = databaseEndpoint(target, db);
    try {
      const r = await startMigration(databaseEndpoint(source, db), tgtEp, { ...o, name: member }, (e) => onEvent(db, e), until);
      out.databases.push({ database: db, migration: member, ...r });
    } catch (e) {
      const done = out.databases.map((d) => d.database);
      throw inDatabase(db, e, done.length ? ` (${done.join(", ")} ${done.length > 1 ? "were" : "was"} started and keep${done.length > 1 ? "" : "s"} ` +
        `streaming; run pgferry start again with the same databases to continue)` : "");
    } finally {
      // The umbrella record, in the member's own record (once start made it): also after a failure, so cleanup finds it.
      const c = await connect(tgtEp).catch(() => undefined);
      try {
        const m = c && await readMigration(c, member);
        // A re-run after the cutover keeps the recorded downtime.
        if (c && m) await mergeMigrationOptions(c, member, { group: { ...group, ...(m.options.group?.downtimeMs !== undefined ? { downtimeMs: m.options.group.downtimeMs } : {}) } });
      } finally { await endClient(c); }
    }
  }
  return out;
}

// ---- status ----

export interface DatabasesStatus {
  name: string;
  /** Every database's phase when they agree; else the least advanced (NotFound, Failed, VerifyFailed first). */
  phase: Phase | "NotFound";
  /** Once every database is Completed: first freeze → last completion of the one cutover (ms). */
  downtimeMs?: number;
  databases: { database: string; migration: string; status: MigrationStatus }[];
}

const PHASE_RANK: (Phase | "NotFound")[] = ["NotFound", "Failed", "Aborted", "VerifyFailed", "SchemaSync", "Loading", "IndexBuild", "ReadyToCutover",
  "CuttingOver", "Completed"];

export function groupPhase(phases: (Phase | "NotFound")[]): Phase | "NotFound" {
  if (!phases.length) return "NotFound";
  return phases.reduce((a, b) => (PHASE_RANK.indexOf(b) < PHASE_RANK.indexOf(a) ? b : a));
}

export async function databasesStatus(source: Endpoint | undefined, target: Endpoint, name: string, sel: DatabaseSelection,
  o: { countPending?: boolean } = {}): Promise<DatabasesStatus> {
  const databases = await recordedDatabaseSet(source, target, name, sel);
  const out: DatabasesStatus = { name, phase: "NotFound", databases: [] };
  for (const db of databases) {
    const member = memberName(name, db);
    const status = await migrationStatus(source && databaseEndpoint(source, db), databaseEndpoint(target, db), member, o);
    out.databases.push({ database: db, migration: member, status });
  }
  out.phase = groupPhase(out.databases.map((d) => d.status.phase));
  if (out.phase === "Completed") {
    out.downtimeMs = (await memberRecords(target, name, databases.slice(0, 1))).get(databases[0])?.options.group?.downtimeMs;
  }
  return out;
}

// ---- cutover ----

export interface DatabasesCutoverResult {
  name: string;
  phase: "Completed";
  alreadyCompleted: boolean;
  /** The one downtime: the first database's freeze → the last one's completion (ms). */
  downtimeMs?: number;
  databases: ({ database: string; migration: string } & CutoverResult)[];
}

/**
 * Several cutovers that meet: nobody freezes until every database has passed its checks before the freeze, and
 * nobody ends replication until every gate has passed. Settles the waits of those still running when one fails.
 */
class Barrier {
  private arrived = new Map<string, Set<number>>();
  private waiting = new Map<string, { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void }>();
  failure?: { index: number; error: unknown };
  constructor(private size: number, private points: string[]) {
    for (const p of points) {
      let resolve!: () => void, reject!: (e: unknown) => void;
      const promise = new Promise<void>((res, rej) => { resolve = res; reject = rej; });
      promise.catch(() => undefined);
      this.waiting.set(p, { promise, resolve, reject });
      this.arrived.set(p, new Set());
    }
  }
  arrive(index: number, point: string): Promise<void> {
    this.arrived.get(point)!.add(index);
    this.check(point);
    return this.waiting.get(point)!.promise;
  }
  /** A cutover that finished (or was done already) waits for no one and holds no one up. */
  finished(index: number): void {
    for (const p of this.points) { this.arrived.get(p)!.add(index); this.check(p); }
  }
  fail(index: number, error: unknown, stopped: (error: unknown) => unknown): void {
    if (this.failure) return;
    this.failure = { index, error };
    for (const w of this.waiting.values()) w.reject(stopped(error));
  }
  private check(point: string): void {
    if (this.arrived.get(point)!.size >= this.size) this.waiting.get(point)!.resolve();
  }
}

export async function cutoverDatabases(source: Endpoint, target: Endpoint, sel: DatabaseSelection, o: CutoverOptions,
  say: (database: string, message: string) => void = () => undefined): Promise<DatabasesCutoverResult> {
  const databases = await recordedDatabaseSet(source, target, o.name, sel, { exact: true });
  const barrier = new Barrier(databases.length, ["freeze", "gate-passed"]);
  const settled = await Promise.allSettled(databases.map((db, i) => {
    const member = memberName(o.name, db);
    return cutoverMigration(databaseEndpoint(source, db), databaseEndpoint(target, db), {
      ...o, name: member, onProgress: (m) => say(db, m), barrier: (point) => barrier.arrive(i, point),
    }).then((r) => { barrier.finished(i); return r; }, (e) => {
      barrier.fail(i, e, (err) => new PgferryError("internal", `stopped because the cutover of database "${db}" failed: ${(err as Error).message ?? err}`));
      throw e;
    });
  }));
  if (barrier.failure) {
    const { index, error } = barrier.failure;
    const failedDb = databases[index];
    const undone = await rollBackAll(source, target, o.name, databases);
    await recordError(target, o.name, failedDb, error);
    const code: ErrorCode = error instanceof PgferryError ? error.code : "internal";
    const message = (error as Error).message ?? String(error);
    // Its own "fix" and "Nothing was …" (the single database's state) give way to what is true of all of them now.
    const body = message.replace(/[\s.;,(—-]+fix:[\s\S]*$/i, "").replace(/\.\s*Nothing was[\s\S]*$/, "");
    const originalFix = error instanceof PgferryError ? error.fix : undefined;
    const fix = code === "verify_failed" ? `repair the target database "${failedDb}" (the differences are named above), then run pgferry cutover again ` +
      `with the same databases` : `${originalFix ? `${originalFix.replace(/\.$/, "")}; then ` : ""}run pgferry cutover again with the same databases`;
    throw new PgferryError(code, `cutover of database "${failedDb}" failed: ${body}. ${undone.summary}. Fix: ${fix}`,
      error instanceof PgferryError ? error.findings : []);
  }
  const results = settled.map((s) => (s as PromiseFulfilledResult<CutoverResult>).value);
  const records = await memberRecords(target, o.name, databases);
  const alreadyCompleted = results.every((r) => r.alreadyCompleted);
  let downtimeMs: number | undefined;
  if (alreadyCompleted) {
    downtimeMs = records.get(databases[0])?.options.group?.downtimeMs;
  } else {
    const starts = [...records.values()].map((m) => m?.freezeStartedAt).filter((d): d is Date => !!d).map((d) => new Date(d).getTime());
    const ends = [...records.values()].map((m) => m?.completedAt).filter((d): d is Date => !!d).map((d) => new Date(d).getTime());
    downtimeMs = starts.length && ends.length ? Math.max(...ends) - Math.min(...starts) : undefined;
    const group = { name: o.name, databases: [...databases].sort(), downtimeMs };
    for (const db of databases) {
      const c = await connect(databaseEndpoint(target, db));
      try { await mergeMigrationOptions(c, memberName(o.name, db), { group }); } finally { await endClient(c); }
    }
  }
  return { name: o.name, phase: "Completed", alreadyCompleted, downtimeMs,
    databases: results.map((r, i) => ({ database: databases[i], migration: memberName(o.name, databases[i]), ...r })) };
}

/**
 * `cutover --abort` with several databases: every database's cutover aborted (unfrozen exactly, replication resumed,
 * ReadyToCutover); one that cannot be (Completed, past the point of no return) does not stop the others, and the
 * failures are raised together at the end, each named.
 */
export async function abortDatabases(source: Endpoint, target: Endpoint, name: string, sel: DatabaseSelection): Promise<{ name: string;
  databases: ({ database: string; migration: string } & AbortResult)[] }> {
  const databases = await recordedDatabaseSet(source, target, name, sel);
  const out: ({ database: string; migration: string } & AbortResult)[] = [];
  const failed: PgferryError[] = [];
  for (const db of databases) {
    const member = memberName(name, db);
    try {
      out.push({ database: db, migration: member, ...await abortCutover(databaseEndpoint(source, db), databaseEndpoint(target, db), member) });
    } catch (e) {
      if (!(e instanceof PgferryError)) throw e;
      failed.push(inDatabase(db, e) as PgferryError);
    }
  }
  if (failed.length) {
    throw new PgferryError(failed[0].code, `${out.length ? `aborted ${out.map((d) => d.database).join(", ")}; ` : ""}not aborted: ` +
      `${failed.map((f) => f.message).join("; ")}`);
  }
  return { name, databases: out };
}

/**
 * After a failed several-database cutover: every database that was frozen, paused or stopped at its gate is aborted
 * (unfrozen exactly as it was, replication resumed, phase ReadyToCutover); those the failure found streaming are left so.
 */
async function rollBackAll(source: Endpoint, target: Endpoint, name: string, databases: string[]): Promise<{ summary: string }> {
  const records = await memberRecords(target, name, databases);
  const aborted: string[] = [], failed: string[] = [], completed: string[] = [];
  for (const db of databases) {
    const m = records.get(db);
    if (!m) continue;
    if (m.phase === "Completed") { completed.push(db); continue; }
    if (!(m.phase === "CuttingOver" || m.phase === "VerifyFailed" || m.sourceFrozen || m.replicationPaused)) continue;
    try {
      // The cutover that just failed held the migration's lock in a session that is closing: "busy" is retried briefly.
      for (let attempt = 1; ; attempt++) {
        try {
          await abortCutover(databaseEndpoint(source, db), databaseEndpoint(target, db), memberName(name, db));
          break;
        } catch (e) {
          if (!(e instanceof PgferryError && e.code === "busy") || attempt >= 20) throw e;
          await new Promise((r) => setTimeout(r, 250));
        }
      }
      aborted.push(db);
    } catch (e) {
      failed.push(`${db} (${(e as Error).message})`);
    }
  }
  if (completed.length || failed.length) {
    return { summary: `${completed.length ? `Already completed: ${completed.join(", ")}. ` : ""}` +
      `${failed.length ? `Could not be rolled back: ${failed.join("; ")}. ` : ""}${aborted.length ? `Rolled back to streaming: ${aborted.join(", ")}` : ""}`.trim() };
  }
  return { summary: `None of the ${databases.length} databases was completed: ${aborted.length ? `${aborted.join(", ")} ${aborted.length > 1 ? "were" : "was"} ` +
    `unfrozen and ${aborted.length > 1 ? "resume" : "resumes"} streaming, ` : ""}every database keeps streaming (phase ReadyToCutover, slots kept, nothing lost)` };
}

async function recordError(target: Endpoint, name: string, db: string, error: unknown): Promise<void> {
  const c = await connect(databaseEndpoint(target, db)).catch(() => undefined);
  try {
    if (c && await readMigration(c, memberName(name, db))) {
      await updateMigration(c, memberName(name, db), { error: `last cutover attempt (several databases): ${(error as Error).message ?? error}` });
    }
  } catch { /* the record keeps the cutover's own error */ } finally { await endClient(c); }
}

// ---- verify ----

export interface DatabasesVerifyReport { ok: boolean; databases: { database: string; report: VerifyReport }[] }

/** verifyMigration per database, with what each database's migration was started with (unlogged skip, large objects). */
export async function verifyDatabases(source: Endpoint, target: Endpoint, name: string, sel: DatabaseSelection,
  o: { schemas?: string[]; include?: string[]; exclude?: string[]; hashes: boolean; jobs: number; unlogged?: string }): Promise<DatabasesVerifyReport> {
  const databases = await recordedDatabaseSet(source, target, name, sel);
  const records = await memberRecords(target, name, databases);
  const out: DatabasesVerifyReport = { ok: true, databases: [] };
  for (const db of databases) {
    const started = records.get(db)?.options;
    const largeObjects = started?.largeObjects !== false;
    const report = await verifyMigration(databaseEndpoint(source, db), databaseEndpoint(target, db), { schemas: o.schemas?.length ? o.schemas : undefined,
      include: o.include, exclude: o.exclude, hashes: o.hashes, jobs: o.jobs, skipUnlogged: (o.unlogged ?? started?.unlogged) === "skip", largeObjects });
    if (!largeObjects) report.warnings.push(`not compared: large objects (database ${db} was started with --no-large-objects)`);
    out.databases.push({ database: db, report });
    out.ok &&= report.ok;
  }
  return out;
}

// ---- cleanup ----

export interface DatabasesCleanupResult { name: string; databases: ({ database: string; migration: string } & CleanupResult)[] }

/** cleanupMigration in every database; one that fails does not stop the others, and the failures are raised together at the end. */
export async function cleanupDatabases(source: Endpoint, target: Endpoint, name: string, sel: DatabaseSelection): Promise<DatabasesCleanupResult> {
  const databases = await recordedDatabaseSet(source, target, name, sel);
  const out: DatabasesCleanupResult = { name, databases: [] };
  const failed: string[] = [];
  for (const db of databases) {
    const member = memberName(name, db);
    try {
      out.databases.push({ database: db, migration: member, ...await cleanupMigration(databaseEndpoint(source, db), databaseEndpoint(target, db), member) });
    } catch (e) {
      failed.push(`database "${db}": ${(e as Error).message}`);
    }
  }
  if (failed.length) {
    throw new PgferryError("cleanup_incomplete", `cleanup removed ${out.databases.map((d) => d.database).join(", ") || "nothing"}, but not everything of ` +
      `${failed.length} database(s): ${failed.join("; ")}; fix: run pgferry cleanup again with the same databases when both servers answer`);
  }
  return out;
}

// ---- agent ----

/**
 * The stream-mode agent for every database, in one process: one applier (one replication connection) per database.
 * A database whose agent fails stops the others (after their current transaction), and the failure is raised, named.
 */
export async function agentDatabases(source: Endpoint, target: Endpoint, name: string, sel: DatabaseSelection,
  o: { signal?: AbortSignal; log?: (m: string) => void; stallTimeoutSec?: number }): Promise<AgentResult & { databases: { database: string; result: AgentResult }[] }> {
  const databases = await recordedDatabaseSet(source, target, name, sel);
  const stop = new AbortController();
  const onAbort = () => stop.abort();
  o.signal?.addEventListener("abort", onAbort);
  if (o.signal?.aborted) stop.abort();
  try {
    let firstError: unknown;
    const settled = await Promise.allSettled(databases.map((db) => runAgent(databaseEndpoint(source, db), databaseEndpoint(target, db), {
      name: memberName(name, db), signal: stop.signal, stallTimeoutSec: o.stallTimeoutSec, log: (m) => o.log?.(`[${db}] ${m}`),
    }).catch((e) => { firstError ??= inDatabase(db, e); stop.abort(); throw e; })));
    if (firstError) throw firstError;
    const results = settled.map((s) => (s as PromiseFulfilledResult<AgentResult>).value);
    return { reason: results.every((r) => r.reason === "completed") ? "completed" : "stopped", appliedChanges: results.reduce((a, r) => a + r.appliedChanges, 0),
      databases: results.map((result, i) => ({ database: databases[i], result })) };
  } finally {
    o.signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * One MigrationStatus for a several-database migration (the Pulumi resource's outputs): the group phase and downtime,
 * sums of rows, bytes and lag, and the per-database lists with the database in front (`shop/public.orders`).
 */
export function combinedStatus(st: DatabasesStatus): MigrationStatus {
  const all = st.databases;
  const sum = (f: (s: MigrationStatus) => number | undefined) => all.some((d) => f(d.status) !== undefined)
    ? all.reduce((a, d) => a + (f(d.status) ?? 0), 0) : undefined;
  const firstError = all.find((d) => d.status.error);
  return {
    name: st.name, phase: st.phase, mode: all[0]?.status.mode,
    error: firstError ? `database ${firstError.database}: ${firstError.status.error}` : undefined,
    tables: all.flatMap((d) => d.status.tables.map((t) => ({ ...t, schema: `${d.database}/${t.schema}` }))),
    rowsCopied: sum((s) => s.rowsCopied) ?? 0, bytesCopied: sum((s) => s.bytesCopied) ?? 0,
    lagBytes: sum((s) => s.lagBytes), pendingChanges: all.every((d) => d.status.pendingChanges !== undefined) ? sum((s) => s.pendingChanges) : undefined,
    caughtUp: all.length ? all.every((d) => d.status.caughtUp) : undefined,
    // A streaming database without its slot makes the whole migration broken (the resource names it).
    slot: all.every((d) => d.status.phase !== "ReadyToCutover" || d.status.slot) ? all.find((d) => d.status.slot)?.status.slot : undefined,
    downtimeMs: st.downtimeMs,
    schemaDifferences: all.flatMap((d) => (d.status.schemaDifferences ?? []).map((x) => ({ ...x, problem: `${d.database}: ${x.problem}` }))),
    notCarried: all.flatMap((d) => (d.status.notCarried ?? []).map((x) => ({ ...x, object: `${d.database}/${x.object}` }))),
    timestamps: all[0]?.status.timestamps ?? { createdAt: new Date(0) },
  };
}
