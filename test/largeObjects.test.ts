/**
 * Large objects (issue 13), on real servers 15 → 17 in both CDC modes (stream with a `pgferry agent`
 * process): a table whose oid column points at large objects — small, empty, multi-chunk (3.8 MB, not a
 * multiple of the copy's 1 MB chunk), one at a chosen OID — with owners, grants and comments, and one
 * owned by a role the target lacks. Copied by the load with the same OIDs; during CDC one is created, one
 * rewritten with lo_put, one unlinked and one re-commented; the cutover carries those while the source is
 * frozen, and verify and a direct lo_get comparison find the target equal. Also: --no-large-objects keeps
 * them listed as not carried; a kill -9 of `pgferry start` in the middle of the large-object copy resumes.
 */
import { spawn } from "child_process";
import { LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, cutoverMigration, migrationOptions, migrationStatus, parseEndpoint, startMigration, verifyMigration } from "../provider/engine";
import { leftovers, startServers } from "./support/servers";
import { formatStatus } from "../provider/cli/output";
import { ensureBuilt, CLI } from "./support/build";
import { exited, killAgents, spawnAgent, until } from "./support/agents";

let src: LocalServer, tgt: LocalServer;

const ROLES = `DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lo_owner') THEN CREATE ROLE lo_owner; END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lo_reader') THEN CREATE ROLE lo_reader; END IF;
END $$`;

const SCHEMA = `
  CREATE TABLE docs (id int PRIMARY KEY, title text, body oid);
  INSERT INTO docs SELECT g, 'doc ' || g, lo_from_bytea(0, convert_to(repeat('line ' || g || E'\\t\\n', g * 7), 'UTF8')) FROM generate_series(1, 20) g;
  INSERT INTO docs VALUES (21, 'big', lo_from_bytea(0, convert_to((SELECT string_agg(md5(g::text), '') FROM generate_series(1, 120000) g), 'UTF8')));
  INSERT INTO docs VALUES (22, 'empty', lo_create(0));
  INSERT INTO docs VALUES (23, 'chosen oid', lo_create(424242));
  SELECT lo_put(424242, 0, '\\x00ff00ff'::bytea);
  ALTER LARGE OBJECT 424242 OWNER TO lo_owner;
  GRANT SELECT ON LARGE OBJECT 424242 TO lo_reader;
  GRANT UPDATE ON LARGE OBJECT 424242 TO PUBLIC;
  COMMENT ON LARGE OBJECT 424242 IS 'chosen; with a '' quote';
`;

/** oid → md5 of content, owner, acl, comment: the whole of what a large object is. */
async function largeObjects(s: LocalServer, db: string) {
  return s.query(`SELECT oid::text, md5(lo_get(oid)) AS md5, pg_get_userbyid(lomowner) AS owner, lomacl::text AS acl,
    obj_description(oid, 'pg_largeobject') AS comment FROM pg_largeobject_metadata ORDER BY oid`, db);
}

beforeAll(async () => {
  ensureBuilt();
  [src, tgt] = await startServers(15, 17);
  await src.query(ROLES);
  await tgt.query(ROLES);
  await src.query(`DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lo_ghost') THEN CREATE ROLE lo_ghost; END IF; END $$`);
});
afterAll(async () => {
  killAgents();
  await src?.stop(); await tgt?.stop();
});

async function prepare(db: string) {
  await src.createDatabase(db);
  await tgt.createDatabase(db);
  await src.query(SCHEMA, db);
  // One owned by a role the target does not have: carried, owned by the target user, and named as not carried.
  await src.query(`SELECT lo_create(515151); ALTER LARGE OBJECT 515151 OWNER TO lo_ghost; INSERT INTO docs VALUES (24, 'ghost', 515151)`, db);
  return { source: parseEndpoint(src.uri(db), "source"), target: parseEndpoint(tgt.uri(db), "target") };
}

test.each(["subscription", "stream"] as const)("mode %s: large objects are loaded with OIDs, owners, grants, comments; CDC changes carried at cutover", async (mode) => {
  const db = `lo_${mode}`;
  const { source, target } = await prepare(db);
  const started = await startMigration(source, target, migrationOptions({ name: "lo", mode, jobs: 2 }));
  expect(started.phase).toBe("ReadyToCutover");
  expect(started.findings.map((f) => f.code)).not.toContain("large_objects");
  expect(started.load!.largeObjects!.objects).toBe(24);
  expect(started.notCarried.map((x) => x.kind)).not.toContain("large objects");
  expect(started.notCarried.find((x) => x.kind === "large object owners and grants")!.object).toMatch(/lo_ghost \(1 large object/);

  // Same OIDs, contents, owner, grants and comment; the ghost-owned one is owned by the target user.
  const s0 = await largeObjects(src, db), t0 = await largeObjects(tgt, db);
  expect(t0.map((x) => x.oid)).toEqual(s0.map((x) => x.oid));
  expect(t0.map((x) => x.md5)).toEqual(s0.map((x) => x.md5));
  const chosen = t0.find((x) => x.oid === "424242")!;
  expect(chosen).toMatchObject({ owner: "lo_owner", comment: "chosen; with a ' quote" });
  expect(chosen.acl).toMatch(/lo_reader=r\/lo_owner/);
  expect(chosen.acl).toMatch(/(^|[{,])=w\/lo_owner/);
  expect(t0.find((x) => x.oid === "515151")!.owner).toBe("postgres");
  // Every oid column value points at a large object on the target.
  expect((await tgt.query(`SELECT count(*)::int AS n FROM docs WHERE body NOT IN (SELECT oid FROM pg_largeobject_metadata)`, db))[0].n).toBe(0);

  const st = await migrationStatus(source, target, "lo");
  expect(st.largeObjects).toMatchObject({ carried: true, targetCount: 24, sourceCount: 24 });
  expect(st.largeObjects!.targetBytes).toBe(st.largeObjects!.sourceBytes);
  expect(st.largeObjects!.targetBytes).toBeGreaterThan(3840000);
  expect(formatStatus(st)).toMatch(/large objects: 24 \(.+\) on the target, 24 \(.+\) on the source\n/);

  const agent = mode === "stream" ? spawnAgent(["--name", "lo"], { source: src.uri(db), target: tgt.uri(db) }) : undefined;
  // During CDC: a new one (with its row), lo_put into the big one past its first chunk and into a small one,
  // one unlinked (with its row), a comment changed. Logical decoding carries only the rows.
  const big = (await src.query(`SELECT body::text AS oid FROM docs WHERE id = 21`, db))[0].oid;
  const gone = (await src.query(`SELECT body::text AS oid FROM docs WHERE id = 3`, db))[0].oid;
  await src.query(`INSERT INTO docs VALUES (100, 'new during cdc', lo_from_bytea(0, convert_to(repeat('fresh', 5000), 'UTF8')));
    SELECT lo_put(${big}, 1500000, convert_to('rewritten during CDC', 'UTF8'));
    SELECT lo_put(body, 2, '\\xdeadbeef'::bytea) FROM docs WHERE id = 5;
    SELECT lo_unlink(${gone}); DELETE FROM docs WHERE id = 3;
    COMMENT ON LARGE OBJECT 424242 IS 'changed during CDC'`, db);
  if (agent) await until("the agent to apply the rows", async () => (await tgt.query(`SELECT count(*)::int AS n FROM docs WHERE id = 100`, db))[0].n === 1);

  // Before the cutover the target lacks them, and verify says so.
  const before = await verifyMigration(source, target, { jobs: 2 });
  expect(before.ok).toBe(false);
  expect(before.problems.join("\n")).toMatch(/large object \d+: missing on target/);
  expect(before.problems.join("\n")).toMatch(new RegExp(`large object ${gone}: exists only on target`));

  const cut = await cutoverMigration(source, target, { name: "lo", freezeWrites: true, timeoutSec: 120, jobs: 2 });
  expect(cut.phase).toBe("Completed");
  expect(cut.largeObjects).toMatchObject({ compared: 24, copied: 4, unlinked: 1 });
  expect(cut.timings!.largeObjectsMs).toBeGreaterThanOrEqual(0);
  if (agent) expect(await exited(agent, "cutover while the agent runs")).toBe(0);

  const s1 = await largeObjects(src, db), t1 = await largeObjects(tgt, db);
  expect(t1.filter((x) => x.oid !== "515151")).toEqual(s1.filter((x) => x.oid !== "515151"));
  expect(t1.map((x) => x.md5)).toEqual(s1.map((x) => x.md5));
  const report = await verifyMigration(source, target, { jobs: 2 });
  expect(report.problems).toEqual([]);
  expect(report.largeObjects).toMatchObject({ sourceCount: 24, targetCount: 24, hashed: true, ok: true });

  await cleanupMigration(source, target, "lo");
  expect(await leftovers(src, tgt, db)).toEqual([]);
}, 240000);

test("--no-large-objects: not copied, listed as not carried, left out of the gate", async () => {
  const db = "lo_off";
  const { source, target } = await prepare(db);
  const started = await startMigration(source, target, migrationOptions({ name: "lo", jobs: 2, largeObjects: false }));
  expect(started.phase).toBe("ReadyToCutover");
  expect(started.findings.find((f) => f.code === "large_objects")!.message).toMatch(/24 large objects .*--no-large-objects/);
  expect(started.notCarried.find((x) => x.kind === "large objects")!.object).toMatch(/^24 large object/);
  expect(started.load!.largeObjects).toBeUndefined();
  expect((await tgt.query(`SELECT count(*)::int AS n FROM pg_largeobject_metadata`, db))[0].n).toBe(0);
  expect((await migrationStatus(source, target, "lo")).largeObjects).toMatchObject({ carried: false, targetCount: 0, sourceCount: 24 });
  const cut = await cutoverMigration(source, target, { name: "lo", freezeWrites: true, timeoutSec: 120, jobs: 2 });
  expect(cut.largeObjects).toBeUndefined();
  expect(cut.timings!.largeObjectsMs).toBeUndefined();
  await cleanupMigration(source, target, "lo");
  expect(await leftovers(src, tgt, db)).toEqual([]);
}, 240000);

test("kill -9 of start in the middle of the large-object copy: the re-run resumes and converges", async () => {
  const db = "lo_kill";
  const { source, target } = await prepare(db);
  // 400 objects of 256 KiB: long enough to be killed part-way.
  await src.query(`INSERT INTO docs SELECT 1000 + g, 'bulk', lo_from_bytea(0, decode(repeat(md5(g::text), 8192), 'hex')) FROM generate_series(1, 400) g`, db);
  const proc = spawn(process.execPath, [CLI, "start", "--name", "lo", "--jobs", "2"], {
    env: { ...process.env, PGFERRY_SOURCE: src.uri(db), PGFERRY_TARGET: tgt.uri(db) }, stdio: "ignore",
  });
  const exit = new Promise((r) => proc.once("exit", r));
  await until("the start to copy some large objects", async () =>
    (await tgt.query(`SELECT count(*)::int AS n FROM pg_largeobject_metadata`, db))[0].n > 30, 120000);
  proc.kill("SIGKILL");
  await exit;
  const copied = (await tgt.query(`SELECT count(*)::int AS n FROM pg_largeobject_metadata`, db))[0].n;
  expect(copied).toBeLessThan(424);
  // Changed before the re-run: one of the copied ones rewritten, one unlinked.
  const first = (await tgt.query(`SELECT min(oid)::text AS o FROM pg_largeobject_metadata`, db))[0].o;
  await src.query(`SELECT lo_put(${first}, 0, '\\xcafe'::bytea)`, db);
  const again = await startMigration(source, target, migrationOptions({ name: "lo", jobs: 2 }));
  expect(again.phase).toBe("ReadyToCutover");
  expect(again.load!.largeObjects!.objects).toBe(424);
  const report = await verifyMigration(source, target, { jobs: 2 });
  expect(report.largeObjects).toMatchObject({ sourceCount: 424, targetCount: 424, ok: true });
  await cleanupMigration(source, target, "lo");
  expect(await leftovers(src, tgt, db)).toEqual([]);
}, 300000);

test("a target that already has large objects is refused before anything is changed (they would be overwritten or unlinked)", async () => {
  const db = "lo_taken";
  const { source, target } = await prepare(db);
  await tgt.query(`SELECT lo_create(424242)`, db);
  const err = await startMigration(source, target, migrationOptions({ name: "lo", jobs: 2 })).catch((e) => e);
  expect(err.code).toBe("preflight");
  expect(err.findings.find((f: { code: string }) => f.code === "target_large_objects")).toMatchObject({
    severity: "error", message: expect.stringMatching(/already has 1 large object/), fix: expect.stringMatching(/--no-large-objects/) });
  expect(await leftovers(src, tgt, db)).toEqual([]);
}, 120000);

test("a source role that may not read the large objects is refused in preflight, naming them and the fix", async () => {
  const db = "lo_unreadable";
  const { target } = await prepare(db);
  await src.query(`DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lo_limited') THEN
    CREATE ROLE lo_limited LOGIN REPLICATION PASSWORD 'limited-pw'; END IF; END $$`);
  await src.query(`GRANT SELECT ON LARGE OBJECT 424242 TO lo_limited`, db);
  const source = parseEndpoint(src.uri(db, "lo_limited", "limited-pw"), "source");
  const err = await startMigration(source, target, migrationOptions({ name: "lo", jobs: 2 })).catch((e) => e);
  expect(err.code).toBe("preflight");
  const f = err.findings.find((x: { code: string }) => x.code === "large_objects_unreadable");
  expect(f).toMatchObject({ severity: "error", message: expect.stringMatching(/"lo_limited" may not read 23 large object\(s\)/),
    fix: expect.stringMatching(/GRANT SELECT ON LARGE OBJECT .*--no-large-objects/) });
  const off = await startMigration(source, target, migrationOptions({ name: "lo", jobs: 2, largeObjects: false })).catch((e) => e);
  expect(off.findings.map((x: { code: string }) => x.code)).not.toContain("large_objects_unreadable");
  expect(await leftovers(src, tgt, db)).toEqual([]);
}, 120000);
