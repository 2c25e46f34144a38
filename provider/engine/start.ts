/**
 * `start`: preflight → schema (pre-data) → publication + slot + snapshot → parallel load →
 * post-data → subscription streaming (phase ReadyToCutover). Every phase is recorded on the target;
 * a re-run continues from the recorded phase, and a re-run once streaming is a no-op.
 */
import { Client } from "pg";
import {
  copyableTables, exclusionNotCarried, listForeignKeys, listPopulatedMatviews, NotCarried, publishedTables, userSchemas,
} from "./catalog/catalog";
import { dropSubscription } from "./cdc/subscription/subscription";
import { Cdc, CdcContext, cdcFor } from "./cdc/cdc";
import { runPipeline, Step } from "./core/pipeline";
import { connect, DEFAULT_STALL_TIMEOUT_SEC, endClient, Endpoint, qualified, quoteIdent, quoteLiteral, settingAssignment, watchStall } from "./core/endpoint";
import { Finding, PgferryError, testFailpoint } from "./core/errors";
import { distributionStatements, hasDistribution } from "./copy/distribution";
import { LoadResult, runLoad, TableLoadProgress } from "./copy/load";
import { copyLargeObjects, LargeObjectCopy } from "./copy/largeObjects";
import { RoleSync, syncRoles } from "./copy/roles";
import { MigrationOptions, objectNames } from "./core/options";
import { decoderFor } from "./cdc/decoders";
import { installDdlCapture } from "./cdc/ddl/capture";
import { dropTargetApply, installTargetApply } from "./cdc/ddl/targetApply";
import { describeSourceChanges, listSourceChanges, restoreSourceChanges, setReplicaIdentityFull, SourceChange } from "./state/sourceChanges";
import { preflight, PreflightResult } from "./preflight/preflight";
import { recordActivityBaseline } from "./verify/touched";
import { recordPartitionFiles } from "./copy/partitionTruncates";
import { applyEntries, applyForeignKeysWhileStreaming, dumpSchema, foreignKeyEntries, ForeignKeysWhileStreaming, largeObjectFix, matviewEntries, readNotCarried, SchemaEntry, storeEntries } from "./copy/schema";
import {
  BlockingTransaction, createPublication, createSlotWithSnapshot, describeBlocking, dropPublication, dropSlot, slotInfo,
} from "./copy/snapshot";
import {
  ensureControlSchema, insertMigration, MigrationRecord, Phase, readMigration, tableProgressRecorder, tryLockMigration, updateMigration,
} from "./state/state";
import { mergeMigrationOptions } from "./state/state";
import { countAppliedEntries, readPreamble, replaceNotCarried } from "./state/schemaEntries";
import { markTablesCopied, resetTableProgress } from "./state/tableProgress";

export type MigrationEvent =
  | { type: "phase"; phase: Phase; message: string }
  | { type: "table"; progress: TableLoadProgress }
  | { type: "finding"; finding: Finding }
  | { type: "schema"; section: string; kind: string; object: string }
  /** Source schema changes pgferry made (recorded with their undo on the target) or undid. */
  | { type: "sourceChange"; action: "changed" | "restored"; changes: SourceChange[] }
  /** The consistent snapshot waits for transactions open on the source (they must end first). */
  | { type: "snapshotWait"; waitedSec: number; blocking: BlockingTransaction[]; message: string };

export interface StartResult {
  name: string;
  phase: Phase;
  /** True when the migration was already streaming (or further) and nothing was done. */
  alreadyRunning: boolean;
  findings: Finding[];
  load?: { rows: number; bytes: number; seconds: number; tables: TableLoadProgress[]; largeObjects?: LargeObjectCopy };
  schema?: { preData: number; postData: number; heldBack: number };
  /** What this run changed on the source, each with the SQL that undoes it (run by cleanup and a completed cutover). */
  sourceChanges?: SourceChange[];
  /** What the target will not have, each with the reason and the fix (also in status and the Migration's outputs). */
  notCarried: NotCarried[];
  /** Foreign keys added and validated while streaming (so the cutover's freeze holds none of it), and those left for the cutover. */
  foreignKeys?: ForeignKeysWhileStreaming;
  /** --roles: the roles created on the target (with memberships, settings, passwords) and those it had already. */
  roles?: RoleSync;
}

/**
 * `until: "SchemaSync"` stops once the schema is copied (what the SchemaSync resource does); the next
 * call continues from there.
 */
export async function startMigration(source: Endpoint, target: Endpoint, o: MigrationOptions,
  onEvent: (e: MigrationEvent) => void = () => undefined, until?: "SchemaSync"): Promise<StartResult> {
  const names = objectNames(o.name);
  const src = await connect(source);
  let tgt: Client | undefined;
  try {
    tgt = await connect(target);
    const m = await readMigration(tgt, o.name);
    if (m && (["ReadyToCutover", "CuttingOver", "VerifyFailed", "Completed"].includes(m.phase) || (until === "SchemaSync" && m.phase !== "SchemaSync"))) {
      if (until !== "SchemaSync" && m.mode !== o.mode) throw modeMismatch(o, m);
      // A run killed while adding the foreign keys (phase ReadyToCutover already) resumes them; if a cutover holds the lock, it applies them.
      const foreignKeys = m.phase === "ReadyToCutover" && until !== "SchemaSync" && await tryLockMigration(tgt, o.name)
        ? await foreignKeysWhileStreaming(target, o, onEvent) : undefined;
      return { name: o.name, phase: m.phase, alreadyRunning: true, findings: [], notCarried: await readNotCarried(tgt, o.name), foreignKeys };
    }
    if (!(await tryLockMigration(tgt, o.name))) {
      throw new PgferryError("busy", `another pgferry process is working on migration "${o.name}" on this target; wait for it or stop it`);
    }
    const run: StartRun = { o, until, source, target, src, tgt, name: o.name, names, onEvent, m, cdc: cdcFor(o.mode),
      // Past SchemaSync the target tables exist, created by this migration.
      resuming: !!m && m.phase !== "SchemaSync",
      result: { name: o.name, phase: m?.phase ?? "SchemaSync", alreadyRunning: false, findings: [], notCarried: [] }, cdcStarted: false };
    await runPipeline(START_STEPS, run);
    return until === "SchemaSync" ? { ...run.result, phase: run.m!.phase } : run.result;
  } finally {
    await endClient(src);
    await endClient(tgt);
  }
}

/** One start run: its sessions and options, the record as it moves through the phases, and the result being built. */
interface StartRun extends CdcContext {
  o: MigrationOptions;
  until?: "SchemaSync";
  names: ReturnType<typeof objectNames>;
  onEvent: (e: MigrationEvent) => void;
  /** The migration's record; its phase is the resume point (each step records the next phase with its own work). */
  m?: MigrationRecord;
  cdc: Cdc;
  resuming: boolean;
  pf?: PreflightResult;
  result: StartResult;
  /** This run started CDC (the foreign keys follow only then). */
  cdcStarted: boolean;
}

/** done: the record is in none of these phases (past them, or stopped before: the admission above returns for those). */
const phaseNotIn = (...phases: Phase[]) => (r: StartRun) => !phases.includes(r.m!.phase);
const beyondSchemaSync = (r: StartRun) => r.until !== "SchemaSync";

/**
 * `start`, in order. A step whose phase the record is past is skipped, so a re-run continues from the
 * recorded phase: SchemaSync → Loading (or Failed: the load restarts from a new snapshot) → IndexBuild →
 * ReadyToCutover. `until: "SchemaSync"` stops after the schema.
 */
const START_STEPS: Step<StartRun>[] = [
  { name: "preflight", run: preflightStep },
  { name: "record", run: recordMigration },
  {
    // Before pre-data: pg_dump's OWNER TO, GRANT, ALTER DEFAULT PRIVILEGES and policies name these roles.
    name: "roles", when: (r) => !!r.o.roles, done: phaseNotIn("SchemaSync"),
    async run(r) {
      r.result.roles = await syncRoles(r.src, r.tgt, r.name, r.pf!.schemas);
      for (const finding of r.result.roles.findings) { r.onEvent({ type: "finding", finding }); r.result.findings.push(finding); }
    },
  },
  {
    name: "pre-data", done: phaseNotIn("SchemaSync"),
    async run(r) {
      r.onEvent({ type: "phase", phase: "SchemaSync", message: "copying the schema (pg_dump pre-data)" });
      r.result.schema = await syncPreData(r.src, r.source, r.target, r.o, r.pf!);
      r.m!.phase = "Loading";
    },
  },
  {
    // Hyperscale (Citus): reference tables, then distributed tables, into the still empty, key-less tables (copy/distribution.ts).
    // Each statement skips a table already done, so a killed run's re-run converges.
    name: "distribute", when: (r) => hasDistribution(r.o.distribution), done: phaseNotIn("Loading", "Failed"),
    async run(r) {
      for (const sql of distributionStatements(r.o.distribution)) await r.tgt.query(sql);
    },
  },
  {
    name: "not-carried",
    async run(r) {
      if (r.until !== "SchemaSync") await reconcileLargeObjectsNotCarried(r.src, r.tgt, r.o, r.pf!);
      r.result.notCarried = await readNotCarried(r.tgt, r.name);
    },
  },
  {
    name: "load", when: beyondSchemaSync, done: phaseNotIn("Loading", "Failed"),
    async run(r) {
      r.result.load = await loadPhase(r.src, r.tgt, r.source, r.target, r.o, r.pf!, r.onEvent);
      r.m!.phase = "IndexBuild";
    },
  },
  { name: "post-data", when: beyondSchemaSync, done: phaseNotIn("IndexBuild"), run: postData },
  {
    name: "cdc-start", when: beyondSchemaSync, done: phaseNotIn("IndexBuild"),
    async run(r) {
      await keepingLoad(r.tgt, r.name, r.names.slot, async () => {
        r.onEvent({ type: "phase", phase: "ReadyToCutover", message: r.cdc.startMessage });
        await r.cdc.start(r);
        testFailpoint("cdc-setup");
        await updateMigration(r.tgt, r.name, { phase: "ReadyToCutover", streamingSince: new Date(), error: null });
      });
      r.result.phase = "ReadyToCutover";
      r.cdcStarted = true;
    },
  },
  {
    name: "foreign-keys", when: beyondSchemaSync, done: (r) => !r.cdcStarted,
    async run(r) { r.result.foreignKeys = await foreignKeysWhileStreaming(r.target, r.o, r.onEvent); },
  },
  { name: "source-changes", when: beyondSchemaSync, async run(r) { r.result.sourceChanges = await listSourceChanges(r.tgt, r.name); } },
];

async function preflightStep(r: StartRun): Promise<void> {
  const { o } = r;
  const pf = await preflight(r.src, r.tgt, r.source, r.target, {
    selection: o.selection, replicaIdentityFull: o.replicaIdentityFull, resuming: r.resuming, slotName: r.names.slot, mode: o.mode, plugin: o.plugin,
    unlogged: o.unlogged, largeObjects: o.largeObjects, distribution: o.distribution, roles: o.roles, ddl: o.ddl,
  });
  pf.findings.forEach((finding) => r.onEvent({ type: "finding", finding }));
  testFailpoint("preflight");
  if (!pf.ok) {
    throw new PgferryError("preflight", `preflight found ${pf.findings.filter((f) => f.severity === "error").length} problem(s); nothing was changed`, pf.findings);
  }
  r.pf = pf;
  r.result.findings = pf.findings;
}

/** The migration's record: made on the first run; its mode and the options the applier reads back kept current. */
async function recordMigration(r: StartRun): Promise<void> {
  const { o, tgt, names } = r;
  if (!r.m) {
    await ensureControlSchema(tgt);
    await insertMigration(tgt, { name: o.name, mode: o.mode, ...names, options: { jobs: o.jobs, selection: o.selection, replicaIdentityFull: o.replicaIdentityFull, sourceHostForTarget: o.sourceHostForTarget } });
    r.m = (await readMigration(tgt, o.name))!;
  }
  const m = r.m;
  if (m.mode !== o.mode) {
    // A SchemaSync resource records the migration before the Migration resource says which CDC mode it
    // wants. Until the load has finished the mode is free: a (re)started load first drops whatever
    // replication objects an earlier run left, and makes its own.
    if (!["SchemaSync", "Loading", "Failed"].includes(m.phase)) throw modeMismatch(o, m);
    await updateMigration(tgt, o.name, { mode: o.mode });
    m.mode = o.mode;
  }
  // What the stream applier (start, agent, cutover) reads back: the output plugin and, for wal2json,
  // whether it quotes numbers. Also set when a SchemaSync made the record with default options.
  await mergeMigrationOptions(tgt, o.name,
    { plugin: o.plugin, wal2jsonNumericAsString: r.pf!.wal2json?.numericAsString ?? false, unlogged: o.unlogged, largeObjects: o.largeObjects, ddl: o.ddl,
      // A re-run without the flags keeps the recorded distribution (the applier moves rows of those tables).
      ...(hasDistribution(o.distribution) ? { distribution: o.distribution } : {}) });
  r.result.phase = m.phase;
}

/** Indexes, constraints and triggers (post-data), into the loaded tables; a failure keeps the load (keepingLoad). */
async function postData(r: StartRun): Promise<void> {
  const { o, src, tgt, names } = r;
  if (!r.result.load && !(await slotInfo(src, names.slot))) {
    throw new PgferryError("slot_missing", `migration "${o.name}" stopped after its load (phase IndexBuild), but its replication slot ` +
      `"${names.slot}" is gone from the source, so the changes made since the load cannot be streamed; the target's tables already have ` +
      `post-data objects (indexes, constraints, triggers), so they cannot simply be reloaded. Fix: run pgferry cleanup, empty the target ` +
      `(drop the migrated schemas, or use a new database), and start again`);
  }
  r.onEvent({ type: "phase", phase: "IndexBuild", message: "building indexes, keys and triggers (post-data)" });
  await keepingLoad(tgt, o.name, names.slot, async () => {
    await applyEntries(r.target, o.name, "post-data", (await preambleOf(tgt, o.name)), o.jobs,
      (e) => r.onEvent({ type: "schema", section: "post-data", kind: e.kind, object: e.object }));
    testFailpoint("post-data");
  });
}

/**
 * The held-back foreign keys, added and validated now that CDC streams (./schema.ts says why that is sound):
 * the cutover then has none of them to do. A key that cannot be applied now is named and left for the cutover.
 */
async function foreignKeysWhileStreaming(target: Endpoint, o: MigrationOptions, onEvent: (e: MigrationEvent) => void): Promise<ForeignKeysWhileStreaming> {
  const r = await applyForeignKeysWhileStreaming(target, o.name, o.jobs,
    (e) => { onEvent({ type: "schema", section: "cutover", kind: e.kind, object: e.object }); if (e.kind === "FK CONSTRAINT") testFailpoint("foreign-key-added"); },
    // No phase event of its own: the phase is ReadyToCutover already (its message says the keys follow).
    () => testFailpoint("foreign-keys"));
  if (r.deferred.length) {
    onEvent({ type: "finding", finding: { code: "foreign_keys_at_cutover", severity: "warning", server: "target",
      message: `${r.deferred.length} foreign key(s) could not be added or validated while streaming; the cutover applies them while writes are ` +
        `stopped (and fails naming them if they still fail): ${r.deferred.map((d) => `${d.object} (${d.error})`).join("; ")}`,
      fix: `fix the cause named, then run pgferry start again (it retries them while streaming), or leave them to the cutover`,
      objects: r.deferred.map((d) => d.object) } });
  }
  return r;
}

/** Pre-data in one target transaction, together with the entries for later phases and the phase change. */
async function syncPreData(src: Client, source: Endpoint, target: Endpoint, o: MigrationOptions, pf: PreflightResult) {
  const selected = new Set(pf.tables.map((t) => `${t.schema}.${t.name}`));
  const fks = await listForeignKeys(src, pf.tables);
  const dump = await dumpSchema(source, {
    excludeSchemas: (await userSchemas(src)).filter((x) => !pf.schemas.includes(x)),
    excludeTables: pf.exclusion.relations,
    excludeObjects: [...pf.exclusion.objects, ...await ownReplicationObjects(src)],
    foreignKeys: fks.map((f) => ({ schema: f.schema, quotedTable: f.quotedTable, quotedName: f.quotedName })),
    keepOwnership: pf.keepOwnership,
  });
  const c = await connect(target);
  try {
    const extensions = await extensionStatements(src, c);
    const preData = dump.preData.map((e) => (e.kind === "EXTENSION" && extensions.has(e.object) ? { ...e, sql: extensions.get(e.object)! } : e));
    const database = await databaseProperties(src, c, target);
    const triggers = await eventTriggerEntries(src, dump.atCutover);
    const heldBack = [...matviewEntries(await listPopulatedMatviews(src, pf.schemas, pf.exclusion.relations)),
      ...foreignKeyEntries(fks, selected), ...triggers.create, ...database.entries];
    const notCarried = [...exclusionNotCarried(pf.exclusion, o.selection), ...database.notCarried, ...await otherNotCarried(src, c, pf, o.largeObjects)];
    await c.query("BEGIN");
    if (dump.preamble) await c.query(dump.preamble);
    // public (and any schema that exists already) is not re-created; everything else must be new.
    const existing = new Set((await c.query(`SELECT nspname FROM pg_namespace`)).rows.map((x) => x.nspname));
    await applyPreData(c, preData.filter((e) => !(e.kind === "SCHEMA" && existing.has(e.object))));
    // What waits for the cutover and only the target can refuse (event triggers need a superuser, a setting may not
    // exist in the target's version): tried now and rolled back, so a refusal is listed here instead of failing the cutover.
    const refused = await tryOnTarget(c, [...triggers.create.filter((e) => e.kind !== "MATERIALIZED VIEW DATA"), ...database.entries, ...triggers.enable]);
    const keep = (e: SchemaEntry) => !refused.has(e);
    for (const [e, msg] of refused) {
      notCarried.push({ kind: e.kind.toLowerCase(), object: e.object, reason: `the target refused it: ${msg}`,
        fix: `after the cutover, run on the target as a role that may (a superuser, the database's owner), with what the target accepts: ${e.sql}` });
    }
    testFailpoint("pre-data");
    await storeEntries(c, o.name, "post-data", dump.postData);
    await storeEntries(c, o.name, "cutover", heldBack.filter(keep));
    await storeEntries(c, o.name, "final", triggers.enable.filter(keep));
    await storeEntries(c, o.name, "preamble", [{ kind: "PREAMBLE", object: "-", sql: dump.preamble }]);
    await storeEntries(c, o.name, "not-carried", notCarried.map((x) => ({ kind: x.kind, object: x.object, sql: JSON.stringify({ reason: x.reason, fix: x.fix }) })));
    await updateMigration(c, o.name, { phase: "Loading" });
    await c.query("COMMIT");
    return { preData: preData.length, postData: dump.postData.length, heldBack: heldBack.length };
  } catch (e) {
    await c.query("ROLLBACK").catch(() => undefined);
    throw e;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** Pre-data entries sent per round trip, up to this many bytes of SQL. */
const PRE_DATA_BATCH = 200, PRE_DATA_BATCH_BYTES = 1 << 20;

/**
 * Pre-data entries in dump order, inside the caller's transaction: many per round trip (a round trip per object was
 * most of the schema's time on schema-heavy databases). A batch that fails is rolled back to its savepoint and run
 * again entry by entry, so the error names the entry that fails, as before.
 */
async function applyPreData(c: Client, entries: SchemaEntry[]): Promise<void> {
  for (let i = 0; i < entries.length;) {
    const batch: SchemaEntry[] = [];
    for (let bytes = 0; i < entries.length && batch.length < PRE_DATA_BATCH && (!batch.length || bytes + entries[i].sql.length <= PRE_DATA_BATCH_BYTES); i++) {
      bytes += entries[i].sql.length;
      batch.push(entries[i]);
    }
    if (batch.length > 1) {
      try {
        // "\n;\n" between entries: a newline first ends a line comment an entry may end with.
        await c.query(`SAVEPOINT pgferry_batch;\n${batch.map((e) => e.sql).join("\n;\n")}\n;\nRELEASE SAVEPOINT pgferry_batch`);
        continue;
      } catch {
        await c.query("ROLLBACK TO SAVEPOINT pgferry_batch");
        await c.query("RELEASE SAVEPOINT pgferry_batch");
      }
    }
    for (const e of batch) {
      try {
        await c.query(e.sql);
      } catch (err) {
        throw new PgferryError("schema_apply_failed", `creating ${e.kind} ${e.object} on the target failed: ${(err as Error).message}`);
      }
    }
  }
}

/** Run each entry in a savepoint and roll everything back: the entries the target refuses, with its message. */
async function tryOnTarget(c: Client, entries: SchemaEntry[]): Promise<Map<SchemaEntry, string>> {
  const refused = new Map<SchemaEntry, string>();
  if (!entries.length) return refused;
  await c.query("SAVEPOINT pgferry_trial");
  for (const e of entries) {
    await c.query("SAVEPOINT pgferry_entry");
    try {
      await c.query(e.sql);
      await c.query("RELEASE SAVEPOINT pgferry_entry");
    } catch (err) {
      await c.query("ROLLBACK TO SAVEPOINT pgferry_entry");
      refused.set(e, (err as Error).message);
    }
  }
  await c.query("ROLLBACK TO SAVEPOINT pgferry_trial");
  return refused;
}

async function preambleOf(tgt: Client, name: string): Promise<string> {
  return readPreamble(tgt, name);
}

/**
 * pgferry's own publications on the source (pgferry_<name>, those of other migrations and rollback
 * windows included): they belong to the source's replication, never to the target's schema.
 */
async function ownReplicationObjects(src: Client): Promise<{ classid: number; objid: number }[]> {
  const r = await src.query(`SELECT 'pg_publication'::regclass::int AS classid, oid::int AS objid FROM pg_publication WHERE pubname ~ '^pgferry_[a-z0-9_]+$'
    UNION ALL SELECT 'pg_publication_rel'::regclass::int, pr.oid::int FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
      WHERE p.pubname ~ '^pgferry_[a-z0-9_]+$'`);
  return r.rows;
}

/**
 * CREATE EXTENSION as the source has it: in its schema (made if the migration does not create it) and
 * at the source's version when the target offers that version; an extension the target already has
 * is updated to it when an update path exists (preflight reports the versions it cannot match).
 */
async function extensionStatements(src: Client, tgt: Client): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const s = await src.query(`SELECT e.extname, n.nspname, e.extversion FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace`);
  for (const x of s.rows) {
    const t = (await tgt.query(`SELECT (SELECT extversion FROM pg_extension WHERE extname = $1) AS installed,
        EXISTS (SELECT 1 FROM pg_available_extension_versions WHERE name = $1 AND version = $2) AS has_version`, [x.extname, x.extversion])).rows[0];
    const sql = [`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(x.nspname)};`,
      `CREATE EXTENSION IF NOT EXISTS ${quoteIdent(x.extname)} WITH SCHEMA ${quoteIdent(x.nspname)}${t.has_version ? ` VERSION ${quoteLiteral(x.extversion)}` : ""};`];
    if (t.installed && t.installed !== x.extversion && t.has_version) {
      const path = (await tgt.query(`SELECT 1 FROM pg_extension_update_paths($1) WHERE source = $2 AND target = $3 AND path IS NOT NULL`,
        [x.extname, t.installed, x.extversion])).rowCount;
      if (path) sql.push(`ALTER EXTENSION ${quoteIdent(x.extname)} UPDATE TO ${quoteLiteral(x.extversion)};`);
    }
    out.set(x.extname, sql.join("\n"));
  }
  return out;
}

/**
 * Event triggers are created disabled during the cutover (with their comments) and enabled as the source
 * has them in its very last step, so that none fires on pgferry's own DDL on the target.
 */
async function eventTriggerEntries(src: Client, held: SchemaEntry[]): Promise<{ create: SchemaEntry[]; enable: SchemaEntry[] }> {
  const states = new Map((await src.query(`SELECT evtname, evtenabled FROM pg_event_trigger`)).rows.map((x) => [x.evtname as string, x.evtenabled as string]));
  const create = held.map((e) => (e.kind === "EVENT TRIGGER" ? { ...e, sql: `${e.sql}\nALTER EVENT TRIGGER ${quoteIdent(e.object)} DISABLE;` } : e));
  const how: Record<string, string> = { O: "ENABLE", R: "ENABLE REPLICA", A: "ENABLE ALWAYS" };
  const enable = held.filter((e) => e.kind === "EVENT TRIGGER" && how[states.get(e.object) ?? "D"])
    .map((e) => ({ kind: "EVENT TRIGGER ENABLE", object: e.object, sql: `ALTER EVENT TRIGGER ${quoteIdent(e.object)} ${how[states.get(e.object)!]};` }));
  return { create, enable };
}


/**
 * ALTER DATABASE … SET and the database's comment (outside any schema; pg_dump writes them only with
 * --create), applied at the end of the cutover so that no migration session runs under them. Settings
 * for a role in this database travel when that role exists on the target.
 */
async function databaseProperties(src: Client, tgt: Client, target: Endpoint): Promise<{ entries: SchemaEntry[]; notCarried: NotCarried[] }> {
  const db = quoteIdent(target.database);
  const entries: SchemaEntry[] = [], notCarried: NotCarried[] = [];
  const r = await src.query(`SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END AS role, c.setting
      FROM pg_db_role_setting s, unnest(s.setconfig) WITH ORDINALITY c(setting, n)
     WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY s.setrole, c.n`);
  const roles = new Set((await tgt.query(`SELECT rolname FROM pg_roles`)).rows.map((x) => x.rolname));
  for (const x of r.rows) {
    const eq = (x.setting as string).indexOf("=");
    const name = x.setting.slice(0, eq), value = x.setting.slice(eq + 1);
    const set = `SET ${settingAssignment(name, value)}`;
    if (name === "default_transaction_read_only") {
      // the freeze's own setting (a source frozen by an earlier cutover has it): carried, it would make the new primary read-only
      notCarried.push({ kind: "database setting", object: `${x.role === null ? "" : `ALTER ROLE ${quoteIdent(x.role)} IN DATABASE … `}default_transaction_read_only = ${value}`,
        reason: "the cutover's freeze sets it on the source; carried, it would make the target read-only once the application moves there",
        fix: `if the target should be read-only, run there after the cutover: ${x.role === null ? `ALTER DATABASE ${db}` : `ALTER ROLE ${quoteIdent(x.role)} IN DATABASE ${db}`} ${set};` });
    } else if (x.role === null) entries.push({ kind: "DATABASE SETTING", object: name, sql: `ALTER DATABASE ${db} ${set};` });
    else if (roles.has(x.role)) entries.push({ kind: "DATABASE SETTING", object: `${x.role}: ${name}`, sql: `ALTER ROLE ${quoteIdent(x.role)} IN DATABASE ${db} ${set};` });
    else notCarried.push({ kind: "database setting", object: `ALTER ROLE ${quoteIdent(x.role)} IN DATABASE … SET ${name}`,
      reason: `role ${quoteIdent(x.role)} does not exist on the target`, fix: `create the role on the target, then run ALTER ROLE ${quoteIdent(x.role)} IN DATABASE ${db} ${set};` });
  }
  const d = (await src.query(`SELECT shobj_description(oid, 'pg_database') AS comment, datacl::text[] AS acl FROM pg_database WHERE datname = current_database()`)).rows[0];
  if (d.comment !== null) entries.push({ kind: "DATABASE COMMENT", object: target.database, sql: `COMMENT ON DATABASE ${db} IS ${quoteLiteral(d.comment)};` });
  if (d.acl) {
    notCarried.push({ kind: "database privileges", object: d.acl.join(", "),
      reason: "privileges on the database itself are the target server's (its roles and the target database's own grants)",
      fix: `GRANT the database privileges on the target as needed (GRANT CONNECT, CREATE, TEMP ON DATABASE ${db} TO …)` });
  }
  return { entries, notCarried };
}

/**
 * The not-carried entries about large objects follow the option this run has: a SchemaSync resource records
 * pre-data (and its list) before the Migration resource says largeObjects: false, and a re-run may change it.
 */
async function reconcileLargeObjectsNotCarried(src: Client, tgt: Client, o: MigrationOptions, pf: PreflightResult): Promise<void> {
  const kinds = ["large objects", "large object owners and grants"];
  const fresh = (await otherNotCarried(src, tgt, pf, o.largeObjects)).filter((x) => kinds.includes(x.kind));
  await replaceNotCarried(tgt, o.name, kinds, fresh);
}

/** Objects of the source the target will not get at all: large objects, and ownership/grants when their roles are missing. */
async function otherNotCarried(src: Client, tgt: Client, pf: PreflightResult, largeObjects: boolean): Promise<NotCarried[]> {
  const out: NotCarried[] = [];
  const lo = Number((await src.query(`SELECT count(*) AS n FROM pg_largeobject_metadata`)).rows[0].n);
  if (lo > 0 && !largeObjects) {
    out.push({ kind: "large objects", object: `${lo} large object(s) with their owners, grants and comments`,
      reason: "started with --no-large-objects (logical replication does not carry large objects, and a schema dump does not include them)",
      fix: `start without --no-large-objects, or copy them after writes stop: ${largeObjectFix(pf.pgDumpMajor)}` });
  } else if (lo > 0) {
    // Carried, but owner and grants only where the role exists on the target (the copy leaves the others out).
    const roles = (await tgt.query(`SELECT rolname FROM pg_roles`)).rows.map((x) => x.rolname as string);
    const missing = (await src.query(`SELECT r AS role, count(DISTINCT oid)::int AS n FROM (
        SELECT m.oid, pg_get_userbyid(m.lomowner) AS r FROM pg_largeobject_metadata m
        UNION ALL SELECT m.oid, pg_get_userbyid(a.grantee) FROM pg_largeobject_metadata m, aclexplode(m.lomacl) a WHERE a.grantee <> 0) x
      WHERE r <> ALL ($1::text[]) GROUP BY r ORDER BY r`, [roles])).rows;
    if (missing.length) {
      out.push({ kind: "large object owners and grants", object: missing.map((x) => `${x.role} (${x.n} large object(s))`).join(", "),
        reason: "these roles own or hold grants on large objects but do not exist on the target: the large objects are copied, owned by the target user, without those grants",
        fix: "create the roles on the target (pg_dumpall --roles-only on the source, applied to the target) before start, or afterwards ALTER LARGE OBJECT … OWNER TO / GRANT … ON LARGE OBJECT there" });
    }
  }
  const labels = (await src.query(`SELECT provider, count(*)::int AS n FROM pg_seclabel GROUP BY 1 ORDER BY 1`)).rows;
  if (labels.length) {
    out.push({ kind: "security labels", object: labels.map((x) => `${x.n} of provider ${x.provider}`).join(", "),
      reason: "a security label needs its provider module loaded on the target, which pgferry cannot check",
      fix: "load the provider on the target (shared_preload_libraries), then apply the SECURITY LABEL statements of pg_dump --schema-only of the source there" });
  }
  // Rows of extension configuration tables (pg_extension_config_dump): pg_dump copies them as data; the load copies no extension member.
  const configs = (await src.query(`SELECT e.extname, c.oid::regclass::text AS tbl, u.cond FROM pg_extension e,
      unnest(e.extconfig, e.extcondition) AS u(cfg, cond) JOIN pg_class c ON c.oid = u.cfg WHERE c.relkind = 'r'`)).rows;
  for (const x of configs) {
    const n = Number((await src.query(`SELECT count(*) AS n FROM ${x.tbl} ${x.cond ?? ""}`)).rows[0].n);
    if (n > 0) {
      out.push({ kind: "extension configuration data", object: `${n} row(s) of ${x.tbl} (extension ${x.extname})`,
        reason: "rows users add to an extension's configuration table belong to the extension's data, which the load does not copy",
        fix: `copy them after the migration: pg_dump --data-only --table=${x.tbl} <source> | psql <target>` });
    }
  }
  if (!pf.keepOwnership) {
    out.push({ kind: "ownership and privileges", object: "owners, GRANTs and default privileges (ALTER DEFAULT PRIVILEGES) of the migrated objects",
      reason: "some roles they name do not exist on the target (see the roles finding); the objects are owned by the target user",
      fix: "create the roles on the target first (pg_dumpall --roles-only on the source, applied to the target), then start again" });
  }
  return out;
}


function modeMismatch(o: MigrationOptions, m: MigrationRecord): PgferryError {
  return new PgferryError("mode_mismatch", `migration "${o.name}" was started in mode ${m.mode} and is in phase ${m.phase}; ` +
    `it cannot continue in mode ${o.mode}. Fix: keep mode ${m.mode}, or run pgferry cleanup and start again in mode ${o.mode}`);
}

async function loadPhase(src: Client, tgt: Client, source: Endpoint, target: Endpoint, o: MigrationOptions, pf: PreflightResult,
  onEvent: (e: MigrationEvent) => void) {
  const names = objectNames(o.name);
  const copyable = copyableTables(pf.tables);
  // A load goes into tables without post-data objects: once some were built (a run that failed after its
  // load, recorded by an older pgferry as Failed), reloading would meet their constraints and triggers.
  const built = await countAppliedEntries(tgt, o.name, "post-data");
  if (built > 0) {
    throw new PgferryError("reload_after_post_data", `migration "${o.name}" must reload its tables, but ${built} post-data object(s) (indexes, ` +
      `constraints, triggers) were already built on the target, and a reload into them can fail or fire triggers. Fix: run pgferry cleanup, ` +
      `empty the target (drop the migrated schemas, or use a new database), and start again`);
  }
  return guarded(src, tgt, o.name, onEvent, o.stallTimeoutSec ?? DEFAULT_STALL_TIMEOUT_SEC, async () => {
    onEvent({ type: "phase", phase: "Loading", message: `loading ${copyable.length} tables with ${o.jobs} workers` });
    // Leftovers of a killed run: its slot and publication, and rows it copied (tables we created, verified empty then).
    await dropSubscription(tgt, names.subscription);
    await dropSlot(src, names.slot);
    await dropPublication(src, names.publication);
    await resetTableProgress(tgt, o.name, []);
    const changed = await setReplicaIdentityFull(src, tgt, o.name, pf.needReplicaIdentityFull);
    if (changed.length) onEvent({ type: "sourceChange", action: "changed", changes: changed });
    await resetTableProgress(tgt, o.name, copyable);
    // Hold ACCESS SHARE locks, like pg_dump, for the whole load: TRUNCATE and DDL on the source wait
    // instead of breaking the snapshot copy. Taken before the slot (no xid, so slot creation does not wait on it).
    const guard = await connect(source, { application_name: "pgferry load guard" });
    let snap: Awaited<ReturnType<typeof createSlotWithSnapshot>> | undefined;
    try {
      await guard.query("BEGIN");
      const lockable = pf.tables.filter((t) => !t.partitionRoot).map((t) => qualified(t.schema, t.name));
      await guard.query(`LOCK TABLE ${lockable.join(", ")} IN ACCESS SHARE MODE`);
      // Before the slot: the cutover gate hashes the tables whose source counters moved since (./touched.ts).
      await recordActivityBaseline(src, tgt, o.name);
      // Under the same locks: the leaves' file nodes, so a TRUNCATE of one leaf (not replicated) is seen (copy/partitionTruncates.ts).
      await recordPartitionFiles(src, tgt, o.name, pf.tables);
      // wal2json decodes every table of the database (filtered by add-tables): no publication.
      if (decoderFor(o.plugin).needsPublication) await createPublication(src, names.publication, publishedTables(pf.tables));
      // --ddl replicate: the capture exists before the slot, so every DDL committed after its consistent point is in the stream
      // (recorded with its undo first: a failed load, cleanup and cutover remove it; cdc/ddl/capture.ts).
      if (o.ddl === "replicate") {
        const capture = await installDdlCapture(src, tgt, o.name, pf.schemas, names.publication,
          { selection: o.selection, keepOwnership: pf.keepOwnership }, pf.exclusion.relations);
        onEvent({ type: "sourceChange", action: "changed", changes: [capture] });
        // Subscription mode: the target's copy of the log table (CREATE SUBSCRIPTION needs it) and the trigger that runs its rows.
        if (o.mode === "subscription") await installTargetApply(tgt, o.name);
      }
      // Subscription mode: the subscription, disabled (the target reaching the source is proven before the slot exists).
      await cdcFor(o.mode).create({ src, tgt, source, target, name: o.name }, { sourceHostForTarget: o.sourceHostForTarget });
      snap = await createSlotWithSnapshot(source, names.slot, o.plugin, { timeoutSec: o.snapshotTimeoutSec,
        onWait: (blocking, waitedSec) => onEvent({ type: "snapshotWait", waitedSec, blocking, message: `waiting ${waitedSec} s for the ` +
          `consistent snapshot: ${blocking.length} transaction(s) open on the source since before it must end first: ${describeBlocking(blocking)}` +
          `${o.snapshotTimeoutSec ? ` (start gives up after ${o.snapshotTimeoutSec} s, --snapshot-timeout)` : ""}` }) });
      await updateMigration(tgt, o.name, { consistentPoint: snap.consistentPoint, loadStartedAt: new Date(), error: null, phase: "Loading" });
      const recorder = tableProgressRecorder(tgt, o.name);
      testFailpoint("load");
      // The progress rows go over the control connection to the target: a stalled target must not hang their write.
      const unwatchProgress = watchStall(tgt, (o.stallTimeoutSec ?? DEFAULT_STALL_TIMEOUT_SEC) * 1000, () => undefined);
      const load: LoadResult & { largeObjects?: LargeObjectCopy } = await runLoad(source, target, snap.snapshotName, copyable, o.jobs,
        (p) => { recorder.note(p); onEvent({ type: "table", progress: p }); }, o.stallTimeoutSec)
        .finally(() => recorder.close()).finally(unwatchProgress);
      if (o.largeObjects) {
        // No phase event of its own (the phases are a contract); status shows the count copied so far.
        load.largeObjects = await copyLargeObjects(source, target, snap.snapshotName, o.jobs);
      }
      await markTablesCopied(tgt, o.name, load.tables);
      await updateMigration(tgt, o.name, { phase: "IndexBuild", loadFinishedAt: new Date() });
      return load;
    } finally {
      // Bounded: after a stall these links may not answer (endClient cuts them then; the re-run drops the slot).
      const unwatch = watchStall(guard, 3000, () => undefined);
      await Promise.all([endClient(snap?.connection), guard.query("COMMIT").catch(() => undefined)]);
      unwatch();
      await endClient(guard);
    }
  });
}

/**
 * Run the load; if it fails, release the slot and publication (a slot nobody consumes keeps WAL on
 * the source until its disk fills), undo what pgferry changed on the source (nothing needs it without
 * the publication) and record the failure. A re-run restarts the load into the still index-less tables.
 */
async function guarded<T>(src: Client, tgt: Client, name: string, onEvent: (e: MigrationEvent) => void, stallSec: number,
  fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    // After a stalled link the clean-up must not hang on it either: a statement unanswered for the stall
    // timeout cuts that connection, its clean-up steps fail fast, and the message says what was left.
    const unwatch = [watchStall(src, stallSec * 1000, () => undefined), watchStall(tgt, stallSec * 1000, () => undefined)];
    try {
      return await cleanUpFailedLoad(src, tgt, name, onEvent, e);
    } finally { unwatch.forEach((u) => u()); }
  }
}

async function cleanUpFailedLoad(src: Client, tgt: Client, name: string, onEvent: (e: MigrationEvent) => void, e: unknown): Promise<never> {
  {
    const names = objectNames(name);
    let msg = e instanceof Error ? e.message : String(e);
    await dropSubscription(tgt, names.subscription).catch(() => undefined);
    await dropTargetApply(tgt, name).catch(() => undefined);
    const slotKept = await dropSlot(src, names.slot).then(() => false, () => true);
    await dropPublication(src, names.publication).catch(() => undefined);
    if (slotKept) {
      msg += `; the replication slot "${names.slot}" could not be dropped (the source did not answer) and may still hold WAL there: ` +
        `the re-run of pgferry start drops it, or run pgferry cleanup`;
    }
    const undo = await restoreSourceChanges(src, tgt, name).catch((x) => ({ restored: [], failed: [], error: (x as Error).message }));
    if (undo.restored.length) {
      onEvent({ type: "sourceChange", action: "restored", changes: undo.restored });
      msg += `; the source was restored as it was: ${describeSourceChanges(undo.restored, 5)}`;
    }
    if (undo.failed.length || "error" in undo) {
      msg += `; pgferry could not restore everything it changed on the source${"error" in undo ? ` (${undo.error})` : ""}: ` +
        `${describeSourceChanges(undo.failed)} fix: run pgferry cleanup, or that undo SQL on the source`;
    }
    await updateMigration(tgt, name, { phase: "Failed", error: msg }).catch(() => undefined);
    if (e instanceof PgferryError) throw new PgferryError(e.code, msg, e.findings);
    throw new PgferryError("load_failed", msg);
  }
}

/**
 * Run post-data and the start of CDC; if they fail, keep the load: the slot, publication and subscription
 * stay (the slot holds every change since the load's snapshot), the phase stays IndexBuild with the error,
 * and a re-run continues with the post-data entries not yet built, then CDC. Reloading instead would copy
 * into tables that already have some of their constraints and triggers. The slot retains WAL on the
 * source until then, which the error says.
 */
async function keepingLoad<T>(tgt: Client, name: string, slot: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    const kept = await listSourceChanges(tgt, name).catch(() => []);
    const msg = `${e instanceof Error ? e.message : String(e)}. The load is kept: the replication slot "${slot}" stays on the source ` +
      `with every change since the load (it retains WAL there until used)` +
      `${kept.length ? `, and so does what pgferry changed there while it is published (${kept.map((c) => `${c.object}: ${c.change}`).join(", ")})` : ""}. ` +
      `Fix the cause, then run pgferry start again: it continues where this run stopped (post-data, then change data capture); ` +
      `or run pgferry cleanup to give the migration up${kept.length ? " (it restores those source changes)" : ""}`;
    await updateMigration(tgt, name, { phase: "IndexBuild", error: msg }).catch(() => undefined);
    throw e instanceof PgferryError ? new PgferryError(e.code, msg, e.findings) : new PgferryError("post_data_failed", msg);
  }
}

export type { MigrationRecord };
