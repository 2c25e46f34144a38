/**
 * `start --ddl replicate` in subscription mode (source 15, target 17): the capture's log rows reach the target through
 * the native subscription, and an ENABLE ALWAYS trigger runs each statement inside the apply worker's transaction, at
 * its place between the writes around it. Covered here: ADD COLUMN (constant default), ALTER COLUMN TYPE, RENAME
 * column and table, CREATE/DROP INDEX (CONCURRENTLY too), constraints, DROP COLUMN, a REPLICA IDENTITY FULL table
 * gaining a column, sequences, views, functions; a cutover right after a DDL; target = source (verify with hashes,
 * ../shared verify.sh when present); the capture and the target's trigger gone. CREATE TABLE stops the apply worker
 * before it (the subscription cannot take a new table inside its transaction), nothing after it applied.
 */
import { LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, cutoverMigration, migrationOptions, parseEndpoint, startMigration, verifyMigration } from "../provider/engine";
import { dropTargetApply, targetApplySql } from "../provider/engine/cdc/ddl/targetApply";
import { leftovers, runVerifySh, startServers, Writer } from "./support/servers";
import { until } from "./support/until";

let src: LocalServer, tgt: LocalServer;

beforeAll(async () => {
  [src, tgt] = await startServers(15, 17);
  for (const db of ["app", "app2"]) { await src.createDatabase(db); await tgt.createDatabase(db); }
  await src.query(`CREATE TABLE acct (id int PRIMARY KEY, v text, n int);
    INSERT INTO acct SELECT g, 'v' || g, g FROM generate_series(1, 500) g;
    CREATE TABLE nokey (k int, w text); ALTER TABLE nokey REPLICA IDENTITY FULL;
    INSERT INTO nokey SELECT g, 'w' || g FROM generate_series(1, 100) g;
    CREATE TABLE ren (id int PRIMARY KEY); INSERT INTO ren VALUES (1);`, "app");
  await src.query(`CREATE TABLE t2 (id int PRIMARY KEY, v text); INSERT INTO t2 SELECT g, 'x' FROM generate_series(1, 50) g;`, "app2");
});
afterAll(async () => { await src?.stop(); await tgt?.stop(); });

const cols = async (s: LocalServer, table: string, db = "app") =>
  (await s.query(`SELECT attname || ' ' || format_type(atttypid, atttypmod) AS c FROM pg_attribute WHERE attrelid = to_regclass('${table}')
    AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, db)).map((r) => r.c);
const pgferryObjects = async (s: LocalServer, db: string) => (await s.query(`SELECT 'event trigger ' || evtname AS o FROM pg_event_trigger
    WHERE evtname LIKE 'pgferry%' UNION ALL SELECT 'relation ' || relname FROM pg_class WHERE relname LIKE 'ddl\\_log\\_%'
    UNION ALL SELECT 'function ' || proname FROM pg_proc WHERE proname LIKE 'ddl\\_%'`, db)).map((r) => r.o);

test("subscription: DDL interleaved with writes is applied in place by the apply worker; cutover right after DDL", async () => {
  const source = parseEndpoint(src.uri("app"), "source"), target = parseEndpoint(tgt.uri("app"), "target");
  expect((await startMigration(source, target, migrationOptions({ name: "sd", mode: "subscription", ddl: "replicate", jobs: 2 }))).phase).toBe("ReadyToCutover");
  const writer = new Writer(src.uri("app"), (i) => `BEGIN; INSERT INTO acct (id, n) VALUES (${100000 + i}, ${i}); ` +
    `UPDATE acct SET n = n + 1 WHERE id = ${(i % 500) + 1}; DELETE FROM acct WHERE id = ${100000 + i - 3}; ` +
    `UPDATE nokey SET k = k + 1000 WHERE k = ${(i % 100) + 1}; COMMIT`).start();
  const ddl = async (sql: string) => { await src.query(sql, "app"); await new Promise((r) => setTimeout(r, 30)); };
  await ddl(`ALTER TABLE acct ADD COLUMN c int DEFAULT 5`);
  await ddl(`UPDATE acct SET c = id % 7 WHERE id % 3 = 0`);
  await ddl(`ALTER TABLE acct ALTER COLUMN n TYPE bigint`);
  await ddl(`UPDATE acct SET n = n + 5000000000 WHERE id % 10 = 0`);
  await ddl(`ALTER TABLE acct RENAME COLUMN v TO label`);
  await ddl(`UPDATE acct SET label = label || '!' WHERE id % 4 = 0`);
  await ddl(`CREATE INDEX CONCURRENTLY acct_n_idx ON acct (n)`);
  await ddl(`CREATE INDEX acct_c_idx ON acct (c)`);
  await ddl(`DROP INDEX CONCURRENTLY acct_n_idx`);
  await ddl(`ALTER TABLE acct ADD CONSTRAINT acct_c_nonneg CHECK (c >= 0)`);
  await ddl(`ALTER TABLE acct ADD COLUMN tmp text DEFAULT 'gone soon'`);
  await ddl(`ALTER TABLE acct DROP COLUMN tmp`);
  await ddl(`ALTER TABLE nokey ADD COLUMN z int DEFAULT 1`);
  await ddl(`UPDATE nokey SET z = k WHERE k % 5 = 0`);
  await ddl(`ALTER TABLE ren RENAME TO ren2`);
  await ddl(`INSERT INTO ren2 VALUES (2)`);
  await ddl(`CREATE SEQUENCE s2 INCREMENT BY 3`);
  await ddl(`SELECT nextval('s2'), nextval('s2')`);
  await ddl(`CREATE VIEW acct_view AS SELECT id, label, c FROM acct WHERE c > 2`);
  await ddl(`CREATE FUNCTION double_it(x int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT x * 2 $$`);
  await src.query(`ALTER TABLE acct ADD COLUMN last_col text DEFAULT 'z'`, "app");
  const cut = await cutoverMigration(source, target, { name: "sd", freezeWrites: true, timeoutSec: 120, jobs: 2, verify: "hashes" });
  await writer.stop();
  expect(writer.errors).toEqual([]);
  expect(cut.phase).toBe("Completed");

  for (const t of ["public.acct", "public.nokey", "public.ren2"]) expect(await cols(tgt, t)).toEqual(await cols(src, t));
  const idx = `SELECT string_agg(indexname, ',' ORDER BY indexname) AS i FROM pg_indexes WHERE tablename = 'acct'`;
  expect((await tgt.query(idx, "app"))[0].i).toBe("acct_c_idx,acct_pkey");
  expect((await tgt.query(`SELECT double_it(21) AS v`, "app"))[0].v).toBe(42);
  const report = await verifyMigration(source, target, { jobs: 2 });
  expect(report.problems).toEqual([]);
  const sh = runVerifySh(src.uri("app"), tgt.uri("app"), ["public"]);
  if (sh) expect(sh).toMatchObject({ code: 0 });
  expect(await pgferryObjects(src, "app")).toEqual([]);
  expect(await pgferryObjects(tgt, "app")).toEqual([]);
  expect(await leftovers(src, tgt)).toEqual([]);
});

test("subscription: CREATE TABLE stops the apply worker before it; cleanup removes the capture on both sides", async () => {
  const source = parseEndpoint(src.uri("app2"), "source"), target = parseEndpoint(tgt.uri("app2"), "target");
  expect((await startMigration(source, target, migrationOptions({ name: "sr", mode: "subscription", ddl: "replicate", jobs: 1 }))).phase).toBe("ReadyToCutover");
  await src.query(`INSERT INTO t2 VALUES (51, 'before')`, "app2");
  await until("the row before to arrive", async () => (await tgt.query(`SELECT count(*)::int AS n FROM t2 WHERE id = 51`, "app2"))[0].n === 1);
  await src.query(`CREATE TABLE t3 (id int PRIMARY KEY)`, "app2");
  await src.query(`INSERT INTO t2 VALUES (52, 'after')`, "app2");
  await until("the apply worker to fail on it", async () => (await tgt.query(`SELECT apply_error_count::int AS n FROM pg_stat_subscription_stats`,
    "app2"))[0]?.n > 0, 60000);
  expect((await tgt.query(`SELECT count(*)::int AS n FROM t2 WHERE id = 52`, "app2"))[0].n).toBe(0);
  expect(await cols(tgt, "public.t3", "app2")).toEqual([]);
  // A key-less table (a json column: no equality) created meanwhile: its CREATE TABLE is refused on the target like t3's (so
  // FULL-identity rows are never matched there by `=`), but the source's application keeps working on it (FULL
  // identity, set by the trigger), and cleanup puts DEFAULT back.
  await src.query(`CREATE TABLE t4 (a int, j json)`, "app2");
  await src.query(`INSERT INTO t4 VALUES (1, '{}'), (2, '[]'); UPDATE t4 SET j = '{"u":1}' WHERE a = 1; DELETE FROM t4 WHERE a = 2`, "app2");
  await cleanupMigration(source, target, "sr");
  expect((await src.query(`SELECT relreplident AS r FROM pg_class WHERE oid = 't4'::regclass`, "app2"))[0].r).toBe("d");
  expect(await pgferryObjects(src, "app2")).toEqual([]);
  expect(await pgferryObjects(tgt, "app2")).toEqual([]);
  expect(await leftovers(src, tgt, "app2")).toEqual([]);
});

test("subscription: the target trigger's judgement (PL/pgSQL) refuses and applies what statement.ts does", async () => {
  const c = await tgt.client("app2");
  await c.query(`CREATE SCHEMA pgferry; CREATE TABLE judge_t (v text)`); // the schema: what start's control schema provides
  try {
    for (const sql of targetApplySql("judge")) await c.query(sql);
    let id = 0;
    const run = async (sql: string, extra: Record<string, unknown> = {}) => {
      const payload = JSON.stringify({ v: 1, sql, commands: [{ tag: "ALTER TABLE", type: "table", identity: "public.judge_t" }], searchPath: "public",
        nonConstantDefaults: [], ...extra });
      return c.query(`INSERT INTO pgferry.ddl_log_judge VALUES ($1, $2)`, [++id, payload]).then(() => "applied", (e: Error) => e.message.split(":")[0]);
    };
    expect(await run("ALTER TABLE judge_t ADD COLUMN b int; UPDATE judge_t SET b = 1")).toBe("ddl_multi_statement");
    expect(await run("DO $$ BEGIN EXECUTE 'ALTER TABLE judge_t ADD COLUMN b int'; END $$")).toBe("ddl_not_top_level");
    expect(await run("CREATE TABLE c AS SELECT 1", { commands: [{ tag: "CREATE TABLE AS", type: "table", identity: "public.c" }] })).toBe("ddl_unsupported");
    expect(await run("ALTER TABLE judge_t ADD COLUMN seen timestamptz DEFAULT now()", { nonConstantDefaults: ["seen"] })).toBe("ddl_volatile_default");
    expect(await run("ALTER TABLE judge_t ALTER COLUMN v TYPE varchar(20)", { nonConstantDefaults: ["v"] })).toBe("applied");
    expect(await run("COMMENT ON TABLE judge_t IS 'a;b -- not a comment'")).toBe("applied");
    expect(await run("CREATE FUNCTION f_semi() RETURNS int LANGUAGE sql AS $b$ SELECT 1; $b$;  -- trailing; comment")).toBe("applied");
    expect(await run("/* lead; */ CREATE INDEX CONCURRENTLY judge_t_v_idx ON judge_t (v)")).toBe("applied");
    expect((await c.query(`SELECT obj_description('judge_t'::regclass) AS d, to_regprocedure('f_semi()') IS NOT NULL AS f,
      to_regclass('judge_t_v_idx') IS NOT NULL AS i`)).rows[0]).toEqual({ d: "a;b -- not a comment", f: true, i: true });
  } finally {
    await dropTargetApply(c, "judge");
    await c.query(`DROP SCHEMA pgferry; DROP TABLE judge_t; DROP FUNCTION IF EXISTS f_semi()`);
    await c.end();
  }
});
