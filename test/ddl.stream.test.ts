/**
 * `start --ddl replicate` in stream mode (pgoutput), on real servers (source 15, target 17) with `pgferry agent` as a
 * real process: DDL on the source interleaved with writes reaches the target at its place — ADD COLUMN (constant
 * default), CREATE TABLE (its rows streamed from creation), ALTER COLUMN TYPE, RENAME column and table, CREATE/DROP
 * INDEX (CONCURRENTLY too), constraints, DROP COLUMN, DROP TABLE, sequences, views, functions, a REPLICA IDENTITY
 * FULL table gaining a column; kill -9 of the agent between a DDL and the next change of its transaction, then a
 * re-run converges; a cutover right after a DDL; target = source (engine verify with hashes, ../shared verify.sh
 * when present), the capture gone from the source. Then: only the capture can feed the applier (a forged logical message
 * or log row is not); a DDL the target refuses stops the stream until the target accepts it; what cannot be carried
 * (ADD COLUMN … DEFAULT now() on a key-less table) stops it by name, status shows it, cutover refuses; a failed start and cleanup remove the capture.
 */
import { Client } from "pg";
import { LocalServer } from "../provider/embedded/localServer";
import { EXCLUDE_SCHEMA, SELECTION_REFUSALS } from "./support/fixtures";
import {
  cleanupMigration, cutoverMigration, migrationOptions, migrationStatus, parseEndpoint, startMigration, verifyMigration,
} from "../provider/engine";
import { leftovers, runVerifySh, startServers, Writer } from "./support/servers";
import { ensureBuilt } from "./support/build";
import { exited, killAgents, spawnAgent, until } from "./support/agents";
import { formatStatus } from "../provider/cli/output";

let src: LocalServer, tgt: LocalServer;

beforeAll(async () => {
  ensureBuilt();
  [src, tgt] = await startServers(15, 17);
  for (const db of ["app", "app2"]) { await src.createDatabase(db); await tgt.createDatabase(db); }
  await src.query(`CREATE TABLE acct (id int PRIMARY KEY, v text, n int);
    INSERT INTO acct SELECT g, 'v' || g, g FROM generate_series(1, 500) g;
    CREATE TABLE nokey (k int, w text); ALTER TABLE nokey REPLICA IDENTITY FULL;
    INSERT INTO nokey SELECT g, 'w' || g FROM generate_series(1, 100) g;
    CREATE TABLE blocker (id int PRIMARY KEY);`, "app");
  await src.query(`CREATE TABLE t2 (id int PRIMARY KEY, v text); INSERT INTO t2 SELECT g, 'x' FROM generate_series(1, 50) g;`, "app2");
});
afterAll(async () => {
  killAgents();
  await src?.stop(); await tgt?.stop();
});

/** The capture's objects on the source: event triggers and functions pgferry made. */
async function captureLeft(db: string): Promise<string[]> {
  return (await src.query(`SELECT 'event trigger ' || evtname AS o FROM pg_event_trigger WHERE evtname LIKE 'pgferry%'
    UNION ALL SELECT 'function ' || proname FROM pg_proc WHERE proname LIKE 'ddl\\_%' AND pronamespace::regnamespace::text = 'pgferry'
    UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname = 'pgferry'`, db)).map((r) => r.o);
}

const cols = async (s: LocalServer, table: string, db = "app") =>
  (await s.query(`SELECT attname || ' ' || format_type(atttypid, atttypmod) AS c FROM pg_attribute WHERE attrelid = to_regclass('${table}')
    AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, db)).map((r) => r.c);

test("stream: DDL interleaved with writes is applied in place; kill -9 between a DDL and the next change; cutover right after DDL", async () => {
  const source = parseEndpoint(src.uri("app"), "source"), target = parseEndpoint(tgt.uri("app"), "target");
  const started = await startMigration(source, target, migrationOptions({ name: "dd", mode: "stream", ddl: "replicate", jobs: 2 }));
  expect(started.phase).toBe("ReadyToCutover");
  expect(started.sourceChanges!.map((c) => c.object)).toContain("event trigger pgferry_ddl_dd");
  expect(await captureLeft("app")).toEqual(expect.arrayContaining(["event trigger pgferry_ddl_dd", "event trigger pgferry_ddl_drop_dd"]));

  // Writes that stay valid across every DDL below (only id and n, whose type changes; the FULL-identity table by k).
  const writer = new Writer(src.uri("app"), (i) => `BEGIN; INSERT INTO acct (id, n) VALUES (${100000 + i}, ${i}); ` +
    `UPDATE acct SET n = n + 1 WHERE id = ${(i % 500) + 1}; DELETE FROM acct WHERE id = ${100000 + i - 3}; ` +
    `UPDATE nokey SET k = k + 1000 WHERE k = ${(i % 100) + 1}; COMMIT`).start();
  let agent = spawnAgent(["--name", "dd"], { source: src.uri("app"), target: tgt.uri("app") });
  const ddl = async (sql: string) => { await src.query(sql, "app"); await new Promise((r) => setTimeout(r, 30)); };

  await ddl(`ALTER TABLE acct ADD COLUMN c int DEFAULT 5`);
  await ddl(`UPDATE acct SET c = id % 7 WHERE id % 3 = 0`);
  await ddl(`CREATE TABLE newt (id serial PRIMARY KEY, x text NOT NULL)`);
  await ddl(`INSERT INTO newt (x) SELECT 'r' || g FROM generate_series(1, 40) g`);
  await ddl(`ALTER TABLE acct ALTER COLUMN n TYPE bigint`);
  await ddl(`UPDATE acct SET n = n + 5000000000 WHERE id % 10 = 0`);
  await ddl(`ALTER TABLE acct RENAME COLUMN v TO label`);
  await ddl(`UPDATE acct SET label = label || '!' WHERE id % 4 = 0`);
  await ddl(`ALTER TABLE newt RENAME TO newt2`);
  await ddl(`INSERT INTO newt2 (x) VALUES ('after rename')`);
  await ddl(`CREATE INDEX CONCURRENTLY acct_n_idx ON acct (n)`);
  await ddl(`CREATE INDEX acct_c_idx ON acct (c)`);
  await ddl(`DROP INDEX CONCURRENTLY acct_n_idx`);
  await ddl(`ALTER TABLE acct ADD CONSTRAINT acct_c_nonneg CHECK (c >= 0)`);
  await ddl(`ALTER TABLE newt2 ADD CONSTRAINT newt2_x_key UNIQUE (x)`);
  await ddl(`ALTER TABLE acct ADD COLUMN tmp text DEFAULT 'gone soon'`);
  await ddl(`ALTER TABLE acct DROP COLUMN tmp`);
  await ddl(`ALTER TABLE nokey ADD COLUMN z int DEFAULT 1`);
  await ddl(`UPDATE nokey SET z = k WHERE k % 5 = 0`);
  await ddl(`CREATE TABLE dropme (id int PRIMARY KEY)`);
  await ddl(`INSERT INTO dropme VALUES (1), (2)`);
  await ddl(`DROP TABLE dropme`);
  await ddl(`CREATE SEQUENCE s2 INCREMENT BY 3`);
  await ddl(`SELECT nextval('s2'), nextval('s2')`);
  await ddl(`CREATE VIEW acct_view AS SELECT id, label, c FROM acct WHERE c > 2`);
  await ddl(`CREATE FUNCTION double_it(x int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT x * 2 $$`);
  // A table created without a key (types without equality too: json, point): published at once, so the trigger gives it
  // REPLICA IDENTITY FULL — the source's UPDATE/DELETE on it must not fail — and records the undo (named in status).
  await ddl(`CREATE TABLE keyless (k int, j json, p point, note text)`);
  expect((await src.query(`SELECT relreplident AS r FROM pg_class WHERE oid = 'keyless'::regclass`, "app"))[0].r).toBe("f");
  await ddl(`INSERT INTO keyless SELECT g, json_build_object('g', g), point(g, -g), 'n' || g FROM generate_series(1, 30) g`);
  await ddl(`UPDATE keyless SET note = note || '!', j = json_build_object('u', k), p = point(k, k) WHERE k % 3 = 0`);
  await ddl(`DELETE FROM keyless WHERE k % 5 = 0`);
  await until("status to name the FULL identity set on keyless", async () => ((await migrationStatus(source, target, "dd")).sourceChanges ?? [])
    .some((c) => c.object === "public.keyless" && /REPLICA IDENTITY FULL.*primary key/.test(c.change)), 120000);
  expect((await tgt.query(`SELECT relreplident AS r FROM pg_class WHERE oid = 'keyless'::regclass`, "app"))[0].r).toBe("d"); // not replayed
  await until("the agent to apply the DDL so far", async () => (await cols(tgt, "public.newt2")).length === 2 &&
    (await tgt.query(`SELECT to_regprocedure('double_it(int)') IS NOT NULL AS ok`, "app"))[0].ok, 120000);

  // kill -9 between a DDL and the next change of its transaction: the target's blocker table is locked, so the agent has run
  // the ALTER (in its open target transaction) and waits on the INSERT after it.
  const lock = new Client({ connectionString: tgt.uri("app") });
  await lock.connect();
  await lock.query(`BEGIN; LOCK TABLE blocker IN ACCESS EXCLUSIVE MODE`);
  const s = new Client({ connectionString: src.uri("app") });
  await s.connect();
  await s.query(`BEGIN`);
  await s.query(`ALTER TABLE acct ADD COLUMN k7 int DEFAULT 7`);
  await s.query(`INSERT INTO blocker VALUES (1)`);
  await s.query(`COMMIT`);
  await s.end();
  await until("the agent to hold the new column uncommitted and wait on the next change", async () => (await tgt.query(`
    SELECT count(*)::int AS n FROM pg_stat_activity a WHERE a.application_name = 'pgferry stream' AND a.wait_event_type = 'Lock'
      AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.relation = 'acct'::regclass AND l.mode = 'AccessExclusiveLock' AND l.granted)`,
  "app"))[0].n === 1, 60000);
  agent.proc.kill("SIGKILL");
  await exited(agent, "kill -9 between a DDL and the next change");
  await lock.query(`ROLLBACK`);
  await lock.end();
  agent = spawnAgent(["--name", "dd"], { source: src.uri("app"), target: tgt.uri("app") });
  await until("the re-run to apply the DDL and the change after it", async () =>
    (await tgt.query(`SELECT count(*)::int AS n FROM blocker`, "app"))[0].n === 1, 120000);
  expect((await cols(tgt, "public.acct")).filter((c) => c.startsWith("k7 "))).toEqual(["k7 integer"]);

  // Cutover right after a DDL, while the agent may not have applied it yet: the drain applies it, then the schemas agree.
  await src.query(`ALTER TABLE acct ADD COLUMN last_col text DEFAULT 'z'`, "app");
  const cut = await cutoverMigration(source, target, { name: "dd", freezeWrites: true, timeoutSec: 120, jobs: 2, verify: "hashes" });
  await writer.stop();
  expect(writer.errors).toEqual([]);
  expect(writer.transactions).toBeGreaterThan(20);
  expect(cut.phase).toBe("Completed");
  expect(await exited(agent, "cutover while the agent runs")).toBe(0);

  // The target is the source, the tables created while streaming included.
  for (const t of ["public.acct", "public.newt2", "public.nokey", "public.blocker", "public.keyless"]) expect(await cols(tgt, t)).toEqual(await cols(src, t));
  const keyless = `SELECT k, j::text AS j, p::text AS p, note FROM keyless ORDER BY k`;
  expect(await tgt.query(keyless, "app")).toEqual(await src.query(keyless, "app"));
  expect((await tgt.query(`SELECT count(*)::int AS n FROM keyless WHERE note LIKE '%!'`, "app"))[0].n).toBe(8);
  // The cutover gave the source table its identity back.
  expect((await src.query(`SELECT relreplident AS r FROM pg_class WHERE oid = 'keyless'::regclass`, "app"))[0].r).toBe("d");
  expect(await cols(tgt, "public.dropme")).toEqual([]);
  const idx = `SELECT string_agg(indexname, ',' ORDER BY indexname) AS i FROM pg_indexes WHERE tablename IN ('acct', 'newt2')`;
  expect((await tgt.query(idx, "app"))[0].i).toBe((await src.query(idx, "app"))[0].i);
  expect((await tgt.query(idx, "app"))[0].i).toBe("acct_c_idx,acct_pkey,newt2_x_key,newt_pkey");
  expect((await tgt.query(`SELECT count(*)::int AS n FROM acct_view`, "app"))[0].n).toBe((await src.query(`SELECT count(*)::int AS n FROM acct_view`, "app"))[0].n);
  expect((await tgt.query(`SELECT double_it(21) AS v`, "app"))[0].v).toBe(42);
  expect((await tgt.query(`SELECT count(*)::int AS n FROM newt2`, "app"))[0].n).toBe(41);
  const report = await verifyMigration(source, target, { jobs: 2 });
  expect(report.problems).toEqual([]);
  expect(report.tables.map((t) => t.table)).toEqual(expect.arrayContaining(["public.newt2"]));
  const sh = runVerifySh(src.uri("app"), tgt.uri("app"), ["public"]);
  if (sh) expect(sh).toMatchObject({ code: 0 });

  // The capture is gone from the source with the rest of the migration.
  expect(await captureLeft("app")).toEqual([]);
  expect(await leftovers(src, tgt)).toEqual([]);
});

test("stream: DDL that cannot be carried stops the stream by name, cutover refuses; a failed start and cleanup remove the capture", async () => {
  const source = parseEndpoint(src.uri("app2"), "source"), target = parseEndpoint(tgt.uri("app2"), "target");
  const o = migrationOptions({ name: "dr", mode: "stream", ddl: "replicate", jobs: 1 });
  // Preflight tries the right to create the capture: a role that is no superuser is refused by name, nothing changed.
  await src.query(`CREATE ROLE ddl_plain LOGIN REPLICATION PASSWORD 'pw'; GRANT CREATE ON DATABASE app2 TO ddl_plain`, "app2");
  await src.query(`GRANT SELECT ON t2 TO ddl_plain`, "app2");
  const refused = await startMigration(parseEndpoint(src.uri("app2", "ddl_plain", "pw"), "source"), target, o).then(() => undefined, (e) => e);
  expect(refused).toMatchObject({ code: "preflight" });
  expect(refused.findings.filter((f: { code: string }) => f.code === "ddl_capture").map((f: { message: string }) => f.message).join(""))
    .toMatch(/event trigger.*superuser/);
  expect(await captureLeft("app2")).toEqual([]);
  process.env.PGFERRY_TEST_FAIL_AT = "load";
  try {
    await expect(startMigration(source, target, o)).rejects.toMatchObject({ code: "test_failpoint" });
  } finally { delete process.env.PGFERRY_TEST_FAIL_AT; }
  expect(await captureLeft("app2")).toEqual([]);

  expect((await startMigration(source, target, o)).phase).toBe("ReadyToCutover");
  const agent = spawnAgent(["--name", "dr"], { source: src.uri("app2"), target: tgt.uri("app2") });
  // No other role can make the applier run SQL: a logical message is ignored, the log table is out of reach.
  const plain = new Client({ connectionString: src.uri("app2", "ddl_plain", "pw") });
  await plain.connect();
  await plain.query(`SELECT pg_logical_emit_message(true, 'pgferry.ddl', '{"v":1,"sql":"DROP TABLE t2","commands":[],"searchPath":"public"}')`);
  await expect(plain.query(`INSERT INTO pgferry.ddl_log_dr (payload) VALUES ('{"v":1,"sql":"DROP TABLE t2","commands":[],"searchPath":"public"}')`))
    .rejects.toThrow(/permission denied/);
  await plain.end();
  // A DDL the target refuses (a role only the source has) stops the stream (ddl_failed) until the target accepts it; then it goes on.
  await src.query(`CREATE ROLE ddl_owner_src_only`, "app2");
  await src.query(`ALTER TABLE t2 OWNER TO ddl_owner_src_only`, "app2");
  await until("status to show the target's refusal", async () => (await migrationStatus(source, target, "dr")).applyError?.code === "ddl_failed", 60000);
  expect((await migrationStatus(source, target, "dr")).applyError!.message).toMatch(/ALTER TABLE t2 OWNER TO ddl_owner_src_only[\s\S]*ddl_owner_src_only/);
  await tgt.query(`CREATE ROLE ddl_owner_src_only`, "app2");
  await until("the agent to apply it once the target accepts it", async () =>
    (await tgt.query(`SELECT pg_get_userbyid(relowner) AS o FROM pg_class WHERE oid = 't2'::regclass`, "app2"))[0].o === "ddl_owner_src_only", 90000);
  await until("the recorded error to clear", async () => (await migrationStatus(source, target, "dr")).applyError === undefined, 60000);

  // Key-less tables created while streaming: one the agent applies (its undo recorded on the target), one after the stream
  // stops below (never applied: the capture's own undo restores it). cleanup puts both back to DEFAULT.
  await src.query(`CREATE TABLE kl1 (a int, b text)`, "app2");
  await src.query(`INSERT INTO kl1 VALUES (1, 'x'), (2, 'y'); UPDATE kl1 SET b = 'z' WHERE a = 1; DELETE FROM kl1 WHERE a = 2`, "app2");
  await until("the agent to record kl1's identity", async () => ((await migrationStatus(source, target, "dr")).sourceChanges ?? [])
    .some((c) => c.object === "public.kl1"), 60000);
  await src.query(`INSERT INTO t2 VALUES (51, 'before')`, "app2");
  // A column with a volatile default on a table without a key (kl1: REPLICA IDENTITY FULL): the backfill's old rows would carry
  // the new value, which the target lacks, so the source does not backfill it and the applier refuses (keyed tables: ddl.volatile.test.ts).
  await src.query(`ALTER TABLE kl1 ADD COLUMN seen timestamptz DEFAULT now()`, "app2");
  await src.query(`INSERT INTO t2 VALUES (52, 'after')`, "app2");
  await until("status to show the refusal", async () => (await migrationStatus(source, target, "dr")).applyError?.code === "ddl_volatile_default", 60000);
  const st = await migrationStatus(source, target, "dr");
  expect(st.applyError!.message).toMatch(/ALTER TABLE kl1 ADD COLUMN seen timestamptz DEFAULT now\(\)[\s\S]*public\.kl1 has no key[\s\S]*Fix: [\s\S]*primary key/);
  // Stopped before it: neither the DDL nor anything after it is applied (the change before it may share its target transaction).
  expect((await tgt.query(`SELECT count(*)::int AS n FROM t2 WHERE id = 52`, "app2"))[0].n).toBe(0);
  expect(await cols(tgt, "public.t2", "app2")).toEqual(["id integer", "v text"]);
  expect(await cols(tgt, "public.kl1", "app2")).toEqual(["a integer", "b text"]);
  await expect(cutoverMigration(source, target, { name: "dr", freezeWrites: true, timeoutSec: 30, jobs: 1 }))
    .rejects.toMatchObject({ code: "ddl_volatile_default" });
  // A refusal does not go away by retrying: the agent stops with it.
  expect(await exited(agent, "the agent stopping at the refusal")).not.toBe(0);
  expect(agent.log()).toMatch(/ddl_volatile_default|not immutable/);

  await src.query(`CREATE TABLE kl2 (a int)`, "app2");
  await src.query(`INSERT INTO kl2 VALUES (1); UPDATE kl2 SET a = 2; DELETE FROM kl2`, "app2");
  await src.query(`ALTER TABLE kl2 RENAME TO kl2b`, "app2"); // restored by oid
  await cleanupMigration(source, target, "dr");
  expect(await src.query(`SELECT relname, relreplident FROM pg_class WHERE relname IN ('kl1', 'kl2b') ORDER BY 1`, "app2"))
    .toEqual([{ relname: "kl1", relreplident: "d" }, { relname: "kl2b", relreplident: "d" }]);
  expect(await captureLeft("app2")).toEqual([]);
  expect(await leftovers(src, tgt, "app2")).toEqual([]);
});

test("stream, --include: a table created by replicated DDL is in the cutover's gate, though --include does not name it", async () => {
  for (const s of [src, tgt]) await s.createDatabase("app3");
  await src.query(`CREATE TABLE inc (id int PRIMARY KEY, v text); INSERT INTO inc SELECT g, 'a' FROM generate_series(1, 40) g;
    CREATE TABLE other (id int PRIMARY KEY); INSERT INTO other VALUES (1)`, "app3");
  const source = parseEndpoint(src.uri("app3"), "source"), target = parseEndpoint(tgt.uri("app3"), "target");
  expect((await startMigration(source, target, migrationOptions({ name: "di", mode: "stream", ddl: "replicate", jobs: 1, include: ["inc"] }))).phase)
    .toBe("ReadyToCutover");
  const agent = spawnAgent(["--name", "di"], { source: src.uri("app3"), target: tgt.uri("app3") });
  await src.query(`CREATE TABLE "New T" (id int PRIMARY KEY, x text)`, "app3");
  await src.query(`INSERT INTO "New T" SELECT g, 'r' FROM generate_series(1, 30) g`, "app3");
  // DDL on a table --include leaves out is not the target's (it has no such table), a DROP of it neither.
  await src.query(`ALTER TABLE other ADD COLUMN z int`, "app3");
  await src.query(`DROP TABLE other`, "app3");
  await until("the agent to apply the new table's rows", async () =>
    (await tgt.query(`SELECT count(*)::int AS n FROM pg_class WHERE relname = 'New T'`, "app3"))[0].n === 1 &&
    (await tgt.query(`SELECT count(*)::int AS n FROM "New T"`, "app3"))[0].n === 30, 60000);
  // The target loses a row of the new table after the fence: the gate compares it and refuses.
  const lose = async (step: string) => { if (step === "fence") await tgt.query(`DELETE FROM "New T" WHERE id = 3`, "app3"); };
  await expect(cutoverMigration(source, target, { name: "di", freezeWrites: true, timeoutSec: 120, jobs: 1, afterStep: lose }))
    .rejects.toMatchObject({ code: "verify_failed", message: expect.stringContaining("New T") });
  await tgt.query(`INSERT INTO "New T" VALUES (3, 'r')`, "app3");
  const cut = await cutoverMigration(source, target, { name: "di", freezeWrites: true, timeoutSec: 120, jobs: 1, verify: "hashes" });
  expect(cut.phase).toBe("Completed");
  expect(cut.verification!.tables).toBe(2);
  expect(await exited(agent, "cutover while the agent runs")).toBe(0);
  expect(await captureLeft("app3")).toEqual([]);
  expect(await leftovers(src, tgt, "app3")).toEqual([]);
});

/** --exclude and DDL while streaming: a table created while streaming obeys start's selection like one present at start. */
async function excludeDatabase(db: string): Promise<void> {
  for (const s of [src, tgt]) await s.createDatabase(db);
  await src.query(EXCLUDE_SCHEMA, db);
}

test("stream, --exclude: a table created while streaming that --exclude names is left out like at start (not on the target, not published, not compared), named by status and cutover", async () => {
  await excludeDatabase("app6");
  const source = parseEndpoint(src.uri("app6"), "source"), target = parseEndpoint(tgt.uri("app6"), "target");
  const exclude = ["cache", "old_log"];
  expect((await startMigration(source, target, migrationOptions({ name: "dx", mode: "stream", ddl: "replicate", jobs: 1, exclude }))).phase)
    .toBe("ReadyToCutover");
  const agent = spawnAgent(["--name", "dx"], { source: src.uri("app6"), target: tgt.uri("app6") });
  const q = (sql: string) => src.query(sql, "app6");
  await q(`CREATE TABLE cache (id serial PRIMARY KEY, v text, acct_id int REFERENCES acct)`); // its key references a migrated table
  await q(`INSERT INTO cache (v, acct_id) SELECT 'r' || g, g FROM generate_series(1, 20) g`);
  await q(`CREATE INDEX cache_v ON cache (v)`);
  await q(`CREATE STATISTICS cache_st ON v, acct_id FROM cache`);
  await q(`COMMENT ON TABLE cache IS 'scratch'`);
  await q(`ALTER TABLE cache ADD COLUMN seen timestamptz DEFAULT now()`); // a volatile default: nothing to backfill, nothing refused
  await q(`UPDATE acct SET v = 'u' WHERE id % 5 = 0`);
  await q(`ALTER TABLE arch.cache ADD COLUMN w int`); // DDL on the table excluded at start: not the target's either
  await q(`CREATE TABLE old_log_2025 PARTITION OF old_log FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')`); // follows its excluded root
  await q(`INSERT INTO old_log VALUES (1, '2025-05-05')`);
  await q(`CREATE TABLE old_log_2026 PARTITION OF old_log FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')`); // kept on the source
  await q(`CREATE TABLE kept (id int PRIMARY KEY, v text)`); // a table the selection takes joins as before
  await q(`INSERT INTO kept SELECT g, 'k' FROM generate_series(1, 10) g`);
  // Drops of left-out relations are not the target's: an index made while streaming, a partition excluded at start, one made since.
  await q(`DROP INDEX cache_v`);
  await q(`DROP TABLE old_log_2024`);
  await q(`DROP TABLE old_log_2025`);
  await q(`DROP TABLE arch.cache`);
  await q(`INSERT INTO acct VALUES (1000, 'last')`);
  await until("the agent to apply what follows", async () => (await tgt.query(`SELECT count(*)::int AS n FROM acct WHERE id = 1000`, "app6"))[0].n === 1, 60000);
  const st = await migrationStatus(source, target, "dx");
  expect(st.applyError).toBeUndefined();
  expect(st.newTablesLeftOut).toEqual(["public.cache", "public.old_log_2026"]);
  expect(formatStatus(st)).toMatch(/created on the source while streaming that the selection leaves out \(--exclude names them, or a partition of a left-out table\), left out like at start[^\n]*: public\.cache, public\.old_log_2026/);
  expect(await tgt.query(`SELECT relname FROM pg_class WHERE relname ~ '^(cache|old_log|kept)' AND relkind IN ('r', 'p') ORDER BY 1`, "app6"))
    .toEqual([{ relname: "kept" }]);
  expect(await src.query(`SELECT tablename FROM pg_publication_tables WHERE pubname LIKE '%dx%' AND schemaname <> 'pgferry' ORDER BY 1`, "app6"))
    .toEqual([{ tablename: "acct" }, { tablename: "events" }, { tablename: "kept" }]);
  const says: string[] = [];
  const cut = await cutoverMigration(source, target, { name: "dx", freezeWrites: true, timeoutSec: 120, jobs: 1, verify: "hashes", onProgress: (s: string) => says.push(s) });
  expect(cut.phase).toBe("Completed");
  expect(says.join("\n")).toMatch(/left out like at start[^\n]*: public\.cache, public\.old_log_2026/);
  expect(await exited(agent, "cutover while the agent runs")).toBe(0);
  const after = await migrationStatus(undefined, target, "dx");
  expect(after.notCarried!.filter((x) => x.kind === "table created while streaming").map((x) => x.object)).toEqual(["public.cache", "public.old_log_2026"]);
  expect((await verifyMigration(source, target, { exclude })).problems).toEqual([]);
  expect(await tgt.query(`SELECT count(*)::int AS n FROM kept`, "app6")).toEqual([{ n: 10 }]);
  expect(await leftovers(src, tgt, "app6")).toEqual([]);
});

test("stream, --exclude: a rename into or out of an --exclude name, and a new partition --exclude names of a migrated table, stop the stream before them (ddl_selection)", async () => {
  const cases = SELECTION_REFUSALS.map((x, i) => ({ ...x, db: ["app7", "app8", "app9"][i] }));
  for (const c of cases) {
    await excludeDatabase(c.db);
    const source = parseEndpoint(src.uri(c.db), "source"), target = parseEndpoint(tgt.uri(c.db), "target");
    expect((await startMigration(source, target, migrationOptions({ name: "dz", mode: "stream", ddl: "replicate", jobs: 1, exclude: ["cache"] }))).phase)
      .toBe("ReadyToCutover");
    const agent = spawnAgent(["--name", "dz"], { source: src.uri(c.db), target: tgt.uri(c.db) });
    for (const sql of c.ddl) await src.query(sql, c.db);
    await src.query(`INSERT INTO acct VALUES (1000, 'after')`, c.db);
    await until(`status to show the refusal (${c.ddl.at(-1)})`, async () => (await migrationStatus(source, target, "dz")).applyError?.code === "ddl_selection", 120000);
    const st = await migrationStatus(source, target, "dz");
    expect(st.applyError!.message).toMatch(c.names);
    expect(st.applyError!.message).toMatch(/Fix: run pgferry cleanup and start again/);
    // Stopped before it: nothing after it applied.
    expect((await tgt.query(`SELECT count(*)::int AS n FROM acct WHERE id = 1000`, c.db))[0].n).toBe(0);
    await expect(cutoverMigration(source, target, { name: "dz", freezeWrites: true, timeoutSec: 30, jobs: 1 })).rejects.toMatchObject({ code: "ddl_selection" });
    expect(await exited(agent, "the agent stopping at the refusal")).not.toBe(0);
    await cleanupMigration(source, target, "dz");
    expect(await captureLeft(c.db)).toEqual([]);
    expect(await leftovers(src, tgt, c.db)).toEqual([]);
  }
});
