/**
 * The conformance corpus: PostgreSQL's regression database (built by scripts/build-regress-db.sh from
 * Debian's postgresql-15 source package; ~620 tables, casts, operators, policies, publications, large
 * objects…) migrated by pgferry in both CDC modes, 15 → 15 (Debian's server on both sides, so the suite's
 * regress.so loads) and 15 → 17 (the embedded 17; the source copy first adjusted as PostgreSQL's own
 * cross-version upgrade test adjusts it), with writes during CDC, then a frozen cutover. Then:
 *  - the content hash of every table equal (the engine's verifier, the same hashes as verify.sh);
 *  - a catalog inventory (test/support/catalogInventory.ts) of the source before the migration and the
 *    target after it equal, and the source after it equal to before — except the differences
 *    test/conformance/allowed-differences.json lists, each with its reason. Anything else fails, listed.
 * A reference run of `pg_dump -Fc | pg_restore` checks the inventory itself (15 → 15 must be equal) and
 * gives the time pgferry's start is measured against.
 */
import { spawnSync } from "child_process";
import { Client } from "pg";
import { LocalServer } from "../provider/embedded/localServer";
import {
  cleanupMigration, cutoverMigration, Endpoint, formatFindings, migrationOptions, parseEndpoint, PgferryError, startMigration, verifyMigration,
} from "../provider/engine";
import { ensureBuilt } from "./support/build";
import { catalogInventory, diffInventories, formatDifferences, Inventory, InventoryDifference } from "./support/catalogInventory";
import { killAgents, spawnAgent, exited, until } from "./support/agents";
import {
  AllowedFile, applyAllowed, createRegressRoles, differenceId, loadAllowed, regressCorpusMissing, restoreRegressDb,
} from "./support/regressDb";
import { leftovers, moreWrites, SYSTEM_PG15, Writer } from "./support/servers";

const missing = regressCorpusMissing();
if (missing) console.warn(`skipping test/conformance.regress.test.ts: ${missing}`);
const group = missing ? describe.skip : describe;

let src: LocalServer, tgt15: LocalServer, tgt17: LocalServer;
let allowed: AllowedFile;

async function inventoryOf(server: LocalServer, db: string): Promise<Inventory> {
  const c: Client = await server.client(db);
  try { return await catalogInventory(c); } finally { await c.end(); }
}

/** Make a source copy of the regression database for one migration, adjusted for the target major. */
async function sourceCopy(db: string, targetMajor: number): Promise<void> {
  await restoreRegressDb(src, db);
  for (const a of allowed.adjustBeforeMigration[String(targetMajor)] ?? []) {
    try { await src.query(a.sql, db); } catch (e) { throw new Error(`adjusting the source for ${targetMajor} (${a.reason}) failed: ${(e as Error).message}`); }
  }
}

/**
 * What the target must hold: the source as it was, less the excluded tables and what PostgreSQL itself drops with
 * them (DROP TABLE … CASCADE on another copy of the source) — so an exclusion may remove its dependents, nothing else.
 */
async function expectedOnTarget(db: string, targetMajor: number, before: Inventory, exclude: string[]): Promise<Inventory> {
  if (!exclude.length) return before;
  const copy = `${db}_expected`;
  await sourceCopy(copy, targetMajor);
  try {
    await src.query(`DROP TABLE ${exclude.map((t) => t.split(".").map((x) => `"${x}"`).join(".")).join(", ")} CASCADE`, copy);
    return await inventoryOf(src, copy);
  } finally {
    await src.query(`DROP DATABASE "${copy}"`);
  }
}

/** `pg_dump -Fc | pg_restore` of a source database into a target database (Debian's 15 client programs, as pgferry uses). */
function pgDumpRestore(from: string, to: string): { ms: number; status: number | null; stderr: string } {
  const t = Date.now();
  const pipe = spawnSync("bash", ["-o", "pipefail", "-c", `"${SYSTEM_PG15}/pg_dump" -Fc -d "$SRC" | "${SYSTEM_PG15}/pg_restore" --exit-on-error -d "$TGT"`],
    { encoding: "utf8", env: { ...process.env, SRC: from, TGT: to } });
  return { ms: Date.now() - t, status: pipe.status, stderr: pipe.stderr };
}

/**
 * What pg_dump | pg_restore of the (adjusted) corpus into a target major changes in the inventory: the yardstick
 * for the allowed-list's version effects (sameWithPgRestore). Without --create no database-level entry travels.
 */
const referenceRuns = new Map<number, Promise<InventoryDifference[]>>();
function pgRestoreDifferences(major: number): Promise<InventoryDifference[]> {
  if (!referenceRuns.has(major)) {
    referenceRuns.set(major, (async () => {
      const tgt = major === 15 ? tgt15 : tgt17;
      await sourceCopy(`ref${major}_src`, major);
      await tgt.query(`CREATE DATABASE ref${major}_tgt`);
      const r = pgDumpRestore(src.uri(`ref${major}_src`), tgt.uri(`ref${major}_tgt`));
      if (r.status !== 0 || r.stderr) throw new Error(`pg_dump | pg_restore 15 → ${major} failed: ${r.stderr}`);
      console.log(`reference: pg_dump -Fc | pg_restore of the regression database, 15 → ${major}: ${r.ms} ms`);
      const s = await inventoryOf(src, `ref${major}_src`), g = await inventoryOf(tgt, `ref${major}_tgt`);
      s.delete(DATABASE_KEY); g.delete(DATABASE_KEY);
      return diffInventories(s, g);
    })());
  }
  return referenceRuns.get(major)!;
}
const DATABASE_KEY = "pg_database: database (current)";

/** The differences of one comparison, split by the allowed-list; fails listing every unexpected one. */
function checkDifferences(what: string, diffs: InventoryDifference[], ctx: { targetMajor: number; mode: string; pgRestore?: InventoryDifference[] }): string[] {
  const r = applyAllowed(diffs, allowed.differences, { ...ctx, pgRestoreDifferences: new Set((ctx.pgRestore ?? []).map(differenceId)) });
  const byReason = new Map<string, number>();
  for (const a of r.allowed) byReason.set(a.by.reason, (byReason.get(a.by.reason) ?? 0) + 1);
  const notes = [...byReason].map(([reason, n]) => `${what}: ${n} allowed difference(s): ${reason}`);
  if (r.unexpected.length) notes.push(`${what}: ${r.unexpected.length} difference(s) not in test/conformance/allowed-differences.json:\n${formatDifferences(r.unexpected)}`);
  return r.unexpected.length ? [notes.join("\n")] : (notes.length && console.log(notes.join("\n")), []);
}

/** Writes during CDC on tables of several shapes: no primary key (REPLICA IDENTITY FULL), partitioned, wide rows. */
function regressWrites(i: number): string {
  const k = 200000 + i;
  return `BEGIN;
    INSERT INTO tenk1 (unique1, unique2, two, four, ten, twenty, hundred, thousand, twothousand, fivethous, tenthous, odd, even, stringu1, stringu2, string4)
      VALUES (${k}, ${k}, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 'CDCAAA', 'CDCBBB', 'HHHHxx');
    UPDATE tenk1 SET stringu2 = 'upd${i}' WHERE unique1 = ${i % 10000};
    DELETE FROM onek WHERE unique1 = ${i % 1000};
    UPDATE onek SET string4 = 'CDC' WHERE unique1 = ${(i + 500) % 1000};
    COMMIT;`;
}

group("conformance: PostgreSQL's regression database", () => {
  beforeAll(async () => {
    ensureBuilt();
    allowed = loadAllowed();
    src = await LocalServer.start({ major: 15, binDir: SYSTEM_PG15, settings: { max_wal_senders: 20, max_replication_slots: 20 } });
    tgt15 = await LocalServer.start({ major: 15, binDir: SYSTEM_PG15, settings: { max_logical_replication_workers: 8 } });
    tgt17 = await LocalServer.start({ major: 17 });
    for (const s of [src, tgt15, tgt17]) createRegressRoles(s);
  });
  afterAll(async () => {
    killAgents();
    await src?.stop(); await tgt15?.stop(); await tgt17?.stop();
  });

  test("reference: pg_dump -Fc | pg_restore, 15 → 15, leaves inventories equal (checks the inventory itself)", async () => {
    await sourceCopy("ref_src", 15);
    await tgt15.query(`CREATE DATABASE ref_tgt`);
    const r = pgDumpRestore(src.uri("ref_src"), tgt15.uri("ref_tgt"));
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: "" });
    console.log(`reference: pg_dump -Fc | pg_restore of the regression database took ${r.ms} ms`);
    // pg_dump without --create carries no database-level properties: compare the objects only.
    const s = await inventoryOf(src, "ref_src"), g = await inventoryOf(tgt15, "ref_tgt");
    s.delete(DATABASE_KEY); g.delete(DATABASE_KEY);
    expect(checkDifferences("pg_dump | pg_restore 15 → 15", diffInventories(s, g), { targetMajor: 15, mode: "pg_restore" })).toEqual([]);
    // The inventory sees the corpus's objects of every kind (a query that silently returned nothing would pass above).
    const perCatalog = new Map<string, number>();
    for (const k of s.keys()) { const c = k.slice(0, k.indexOf(":")); perCatalog.set(c, (perCatalog.get(c) ?? 0) + 1); }
    console.log(`inventory of the regression database: ${s.size} entries; ${[...perCatalog].map(([c, n]) => `${c} ${n}`).join(", ")}`);
    // (The suite leaves no conversions, languages, user mappings, event triggers, text search parsers or templates.)
    for (const c of ["pg_class", "pg_attribute", "pg_proc", "pg_type", "pg_constraint", "pg_trigger", "pg_rewrite", "pg_policy", "pg_cast",
      "pg_operator", "pg_opclass", "pg_opfamily", "pg_amop", "pg_amproc", "pg_collation", "pg_namespace", "pg_am", "pg_foreign_data_wrapper",
      "pg_foreign_server", "pg_default_acl", "pg_publication", "pg_publication_rel", "pg_publication_namespace", "pg_statistic_ext",
      "pg_ts_config", "pg_ts_dict", "pg_transform", "pg_largeobject_metadata"]) {
      expect([c, perCatalog.get(c) ?? 0]).not.toEqual([c, 0]);
    }
    // And it notices a change of each sort: a comment, a missing object, an ACL, a column property.
    await tgt15.query(`COMMENT ON TABLE tenk1 IS 'changed'; DROP CAST (int4 AS casttesttype); GRANT SELECT ON onek TO regress_rls_alice;
      ALTER TABLE onek ALTER COLUMN string4 SET STATISTICS 7`, "ref_tgt");
    const g2 = await inventoryOf(tgt15, "ref_tgt");
    g2.delete(DATABASE_KEY);
    const changed = diffInventories(s, g2).map((d) => `${d.kind} ${d.key} ${d.field ?? ""}`.trim());
    expect(changed).toEqual(expect.arrayContaining(["changed pg_class: table public.tenk1 comment", "changed pg_class: table public.onek acl",
      "changed pg_attribute: table column public.onek.string4 stattarget"]));
    expect(changed.filter((d) => d.startsWith("missing pg_cast: cast"))).toHaveLength(1);
    expect(changed).toHaveLength(4);
  });

  test("reference: pg_dump -Fc | pg_restore, 15 → 17: every difference is a version effect the allowed-list names", async () => {
    const diffs = await pgRestoreDifferences(17);
    // Every difference pg_restore itself shows must be explained by an entry of the list.
    const r = applyAllowed(diffs, allowed.differences.filter((a) => a.sameWithPgRestore),
      { targetMajor: 17, mode: "pg_restore", pgRestoreDifferences: new Set(diffs.map(differenceId)) });
    expect(diffs.length).toBeGreaterThan(0); // 17 does render some things differently; none may go unexplained
    expect(r.unexpected.length ? formatDifferences(r.unexpected) : "").toBe("");
  });

  const cases: [number, "subscription" | "stream"][] = [[15, "subscription"], [15, "stream"], [17, "subscription"], [17, "stream"]];
  test.each(cases)("15 → %i, mode %s: start under writes, cutover, every table's content and every catalog object equal", async (major, mode) => {
    const tgt = major === 15 ? tgt15 : tgt17;
    const db = `reg_${major}_${mode}`;
    await sourceCopy(db, major);
    await tgt.query(`CREATE DATABASE "${db}"`);
    const source: Endpoint = parseEndpoint(src.uri(db), "source"), target: Endpoint = parseEndpoint(tgt.uri(db), "target");
    const before = await inventoryOf(src, db);
    // The corpus has publications of its own (carried to the target too, like every object): leftovers() must find
    // only those afterwards, on either side.
    const ownPublications = (await src.query(`SELECT pubname FROM pg_publication`, db)).flatMap((r) => [`publication ${r.pubname}`, `target publication ${r.pubname}`]);
    expect(ownPublications.length).toBeGreaterThan(0);
    const name = `conf_${major}_${mode}`;
    // A mode that cannot carry some tables refuses them at preflight, naming them: the run takes the refusal's
    // --exclude fix, for exactly the tables named, each of which the allowed-list must name with the reason.
    const excludeRule = allowed.excludeInMode?.[mode];
    let exclude: string[] = [];
    if (excludeRule) {
      const refusal = await startMigration(source, target, migrationOptions({ name, jobs: 2, mode, replicaIdentityFull: true }))
        .then(() => undefined, (e) => e as PgferryError);
      const finding = refusal?.findings?.find((f) => f.code === excludeRule.finding);
      expect(finding).toBeDefined();
      exclude = [...new Set((finding!.objects ?? []).map((o) => o.split(" ")[0].split(".").slice(0, 2).join(".")))];
      expect(exclude.filter((t) => !excludeRule.tables.includes(t))).toEqual([]);
      expect((await leftovers(src, tgt, db)).filter((x) => !ownPublications.includes(x))).toEqual([]);
    }
    const opts = migrationOptions({ name, jobs: 2, mode, replicaIdentityFull: true, exclude });
    const writer = new Writer(src.uri(db), regressWrites).start();
    const t = Date.now();
    let started;
    try {
      started = await startMigration(source, target, opts);
    } catch (e) {
      await writer.stop();
      const f = e instanceof PgferryError && e.findings.length ? `\n${formatFindings(e.findings)}` : "";
      throw new Error(`pgferry start on the regression database (15 → ${major}, ${mode}) failed: [${(e as PgferryError).code}] ${(e as Error).message}${f}`);
    }
    console.log(`15 → ${major} ${mode}: start reached ${started.phase} in ${Date.now() - t} ms`);
    expect(started.phase).toBe("ReadyToCutover");
    const agent = mode === "stream" ? spawnAgent(["--name", name], { source: src.uri(db), target: tgt.uri(db) }) : undefined;
    if (agent) await until("the agent to stream", async () => /streaming/.test(agent.log()));
    await moreWrites(writer);
    const cut = await cutoverMigration(source, target, { name, freezeWrites: true, timeoutSec: 180, jobs: 2 });
    await writer.stop();
    if (agent) expect(await exited(agent, "cutover while the agent runs")).toBe(0);
    expect(writer.errors).toEqual([]);
    expect(writer.transactions).toBeGreaterThan(10);
    expect(cut.phase).toBe("Completed");

    // Every problem is gathered before failing, so one run lists them all: content (every table's hash), then objects.
    const report = await verifyMigration(source, target, { jobs: 2, exclude });
    expect(report.tables.length).toBeGreaterThan(500);
    await cleanupMigration(source, target, name);
    expect((await leftovers(src, tgt, db)).filter((x) => !ownPublications.includes(x))).toEqual([]);

    // Large objects: carried by pgferry (issue 13) with their OIDs, owners, ACLs and comments, changes during CDC at
    // cutover: start must not list them as not carried, verify compares their contents, the inventory their metadata.
    const problems: string[] = [];
    const largeObjects = (await src.query(`SELECT count(*)::int AS n FROM pg_largeobject_metadata`, db))[0].n as number;
    const named = (started as { notCarried?: { kind: string; object: string }[] }).notCarried?.find((n) => n.kind === "large objects");
    if (named) problems.push(`start listed the source's large objects as not carried: ${named.object}`);
    if (report.largeObjects?.targetCount !== largeObjects) {
      problems.push(`large objects: ${largeObjects} on the source, ${report.largeObjects?.targetCount ?? "not compared"} on the target`);
    }
    problems.push(
      ...(report.problems.length ? [`pgferry verify (content hashes, constraints, triggers): ${report.problems.length} problem(s):\n  ${report.problems.join("\n  ")}`] : []),
      ...checkDifferences(`15 → ${major} ${mode}, source before vs target`, diffInventories(await expectedOnTarget(db, major, before, exclude), await inventoryOf(tgt, db)),
        { targetMajor: major, mode, pgRestore: allowed.differences.some((a) => a.sameWithPgRestore && (!a.targetMajors || a.targetMajors.includes(major)))
          ? await pgRestoreDifferences(major) : [] }),
      ...checkDifferences(`15 → ${major} ${mode}, source before vs source after`, diffInventories(before, await inventoryOf(src, db)),
        { targetMajor: 0, mode: "source" }),
    );
    expect(problems).toEqual([]);
  });
});
