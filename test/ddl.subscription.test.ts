/**
 * `start --ddl replicate` in subscription mode (source 15, target 17): the capture's log rows reach the target through
 * the native subscription, and an ENABLE ALWAYS trigger runs each statement inside the apply worker's transaction, at
 * its place between the writes around it. Covered here: ADD COLUMN (constant default), ALTER COLUMN TYPE, RENAME
 * column and table, CREATE/DROP INDEX (CONCURRENTLY too), constraints, DROP COLUMN, a REPLICA IDENTITY FULL table
 * gaining a column, sequences, views, functions; a cutover right after a DDL; target = source (verify with hashes,
 * ../shared verify.sh when present); the capture and the target's trigger gone. CREATE TABLE (rows written in its
 * transaction, after it and through the cutover's refresh; a key-less one; one created after the warm-up) and DROP
 * TABLE of a migrated table, then cutover: target = source. A refused DDL named by status and cutover (before the freeze,
 * at the drain, in the new-tables step); --include with a table created by DDL (gate and verify); the tablesync capacity
 * warning; a cutover killed in its new-tables step converging.
 */
import { spawn, spawnSync } from "child_process";
import { LocalServer } from "../provider/embedded/localServer";
import { EXCLUDE_SCHEMA, SELECTION_REFUSALS } from "./support/fixtures";
import { CLI, ensureBuilt } from "./support/build";
import { formatStatus } from "../provider/cli/output";
import { cleanupMigration, cutoverMigration, migrationOptions, migrationStatus, parseEndpoint, startMigration, verifyMigration } from "../provider/engine";
import { dropTargetApply, targetApplySql } from "../provider/engine/cdc/ddl/targetApply";
import { readDdlRefusal } from "../provider/engine/cdc/ddl/refusal";
import { leftovers, moreWrites, reloadConf, runVerifySh, startServers, Writer } from "./support/servers";
import { until } from "./support/until";

let src: LocalServer, tgt: LocalServer;

beforeAll(async () => {
  [src, tgt] = await startServers(15, 17);
  for (const db of ["app", "app2"]) { await src.createDatabase(db); await tgt.createDatabase(db); }
  await tgt.createDatabase("judge"); // the trigger's own test: a database no migration's control schema is in
  await src.query(`CREATE TABLE acct (id int PRIMARY KEY, v text, n int);
    INSERT INTO acct SELECT g, 'v' || g, g FROM generate_series(1, 500) g;
    CREATE TABLE nokey (k int, w text); ALTER TABLE nokey REPLICA IDENTITY FULL;
    INSERT INTO nokey SELECT g, 'w' || g FROM generate_series(1, 100) g;
    CREATE TABLE ren (id int PRIMARY KEY); INSERT INTO ren VALUES (1);`, "app");
  await src.query(`CREATE TABLE t2 (id int PRIMARY KEY, v text); INSERT INTO t2 SELECT g, 'x' FROM generate_series(1, 50) g;
    CREATE TABLE gone (id int PRIMARY KEY); INSERT INTO gone SELECT generate_series(1, 10);`, "app2");
});
afterAll(async () => { await src?.stop(); await tgt?.stop(); });

const cols = async (s: LocalServer, table: string, db = "app") =>
  (await s.query(`SELECT attname || ' ' || format_type(atttypid, atttypmod) AS c FROM pg_attribute WHERE attrelid = to_regclass('${table}')
    AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, db)).map((r) => r.c);
const pgferryObjects = async (s: LocalServer, db: string) => (await s.query(`SELECT 'event trigger ' || evtname AS o FROM pg_event_trigger
    WHERE evtname LIKE 'pgferry%' UNION ALL SELECT 'relation ' || relname FROM pg_class WHERE relname ~ '^ddl_(log|refused)_'
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

test("subscription: CREATE TABLE joins (rows before and after the refresh, a table created after the warm-up) and DROP TABLE; cutover; target = source", async () => {
  const source = parseEndpoint(src.uri("app2"), "source"), target = parseEndpoint(tgt.uri("app2"), "target");
  expect((await startMigration(source, target, migrationOptions({ name: "sr", mode: "subscription", ddl: "replicate", jobs: 1 }))).phase).toBe("ReadyToCutover");
  const c = await src.client("app2");
  // The creating transaction writes rows too (DDL as a statement of its own, then DML).
  await c.query("BEGIN");
  await c.query(`INSERT INTO t2 VALUES (51, 'before')`);
  await c.query(`CREATE TABLE t3 (id int PRIMARY KEY, v text)`);
  await c.query(`INSERT INTO t3 SELECT g, 'in-create-tx' FROM generate_series(1, 200) g`);
  await c.query(`UPDATE t3 SET v = 'updated-in-tx' WHERE id <= 20`);
  await c.query("COMMIT");
  // A key-less table (REPLICA IDENTITY FULL on the source, types with equality): matched by whole rows.
  await c.query(`CREATE TABLE t4 (a int, w text)`);
  await c.query(`INSERT INTO t4 SELECT g, 'w' || g FROM generate_series(1, 50) g`);
  await c.query(`UPDATE t4 SET w = 'u' WHERE a % 5 = 0`);
  await c.query(`DELETE FROM t4 WHERE a % 7 = 0`);
  // After the creation, before any refresh: inserts, updates, deletes.
  await c.query(`INSERT INTO t3 SELECT g, 'after' FROM generate_series(201, 300) g`);
  await c.query(`UPDATE t3 SET v = 'updated-after' WHERE id % 10 = 0`);
  await c.query(`DELETE FROM t3 WHERE id % 13 = 0`);
  // DROP TABLE of a migrated table (with rows), between writes.
  await c.query(`DROP TABLE gone`);
  await c.query(`INSERT INTO t2 VALUES (52, 'after-drop')`);
  await until("the apply worker to apply up to the last write", async () =>
    (await tgt.query(`SELECT count(*)::int AS n FROM t2 WHERE id = 52`, "app2"))[0].n === 1, 60000);
  // The tables exist at their place on the target; their rows wait for the refresh (the worker skips unlisted tables).
  expect(await cols(tgt, "public.t3", "app2")).toEqual(["id integer", "v text"]);
  expect((await tgt.query(`SELECT count(*)::int AS n FROM t3`, "app2"))[0].n).toBe(0);
  expect(await cols(tgt, "public.gone", "app2")).toEqual([]);
  expect((await tgt.query(`SELECT count(*)::int AS n FROM pg_subscription_rel WHERE srrelid::regclass::text = 'gone'`, "app2"))[0].n).toBe(0);
  expect((await src.query(`SELECT count(*)::int AS n FROM pg_publication_tables WHERE tablename = 'gone'`, "app2"))[0].n).toBe(0);
  // status names the tables that wait for the cutover's refresh.
  const st = await migrationStatus(source, target, "sr");
  expect(st.newTablesAwaitingSync?.map((t) => t.table)).toEqual(["public.t3", "public.t4"]);
  // Writes go on through the refresh and the freeze; a table is created after the warm-up (at the freeze barrier).
  const writer = new Writer(src.uri("app2"), (i) => `BEGIN; INSERT INTO t3 VALUES (${1000 + i}, 'w'); UPDATE t3 SET v = 'x${i}' WHERE id = ${(i % 300) + 1}; ` +
    `UPDATE t2 SET v = 'y${i}' WHERE id = ${(i % 50) + 1}; COMMIT`).start();
  // Writing before the cutover begins (not after a fixed delay: a writer that connects only after the freeze is read-only at once).
  await moreWrites(writer, 5);
  const cut = await cutoverMigration(source, target, { name: "sr", freezeWrites: true, timeoutSec: 120, jobs: 1, verify: "hashes",
    barrier: async (point) => {
      if (point !== "freeze") return;
      await c.query(`CREATE TABLE t5 (id int PRIMARY KEY, v text)`);
      await c.query(`INSERT INTO t5 SELECT g, 'late' FROM generate_series(1, 30) g`);
    } });
  await writer.stop();
  await c.end();
  expect(writer.errors).toEqual([]);
  expect(writer.transactions).toBeGreaterThan(0);
  expect(cut.phase).toBe("Completed");
  for (const t of ["t2", "t3", "t4", "t5"]) {
    const q = `SELECT count(*)::int AS n, md5(string_agg(x::text, ',' ORDER BY x::text)) AS h FROM ${t} x`;
    expect(await tgt.query(q, "app2")).toEqual(await src.query(q, "app2"));
  }
  expect((await tgt.query(`SELECT count(*)::int AS n FROM t5`, "app2"))[0].n).toBe(30);
  expect((await src.query(`SELECT relreplident AS r FROM pg_class WHERE oid = 't4'::regclass`, "app2"))[0].r).toBe("d");
  const report = await verifyMigration(source, target, { jobs: 1 });
  expect(report.problems).toEqual([]);
  const sh = runVerifySh(src.uri("app2"), tgt.uri("app2"), ["public"]);
  if (sh) expect(sh).toMatchObject({ code: 0 });
  expect(await pgferryObjects(src, "app2")).toEqual([]);
  expect(await pgferryObjects(tgt, "app2")).toEqual([]);
  expect(await leftovers(src, tgt, "app2")).toEqual([]);
});

test("subscription: the target trigger's judgement (PL/pgSQL) refuses and applies what statement.ts does", async () => {
  const c = await tgt.client("judge");
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
    // Each refusal is kept outside the rolled-back transaction (a sequence): the log row's id and the code.
    expect(await readDdlRefusal(c, undefined, "judge")).toMatchObject({ code: "ddl_multi_statement", logId: "1" });
    expect(await run("DO $$ BEGIN EXECUTE 'ALTER TABLE judge_t ADD COLUMN b int'; END $$")).toBe("ddl_not_top_level");
    expect(await run("CREATE TABLE c AS SELECT 1", { commands: [{ tag: "CREATE TABLE AS", type: "table", identity: "public.c" }] })).toBe("ddl_unsupported");
    expect(await run("ALTER TABLE judge_t ADD COLUMN seen timestamptz DEFAULT now()", { nonConstantDefaults: ["seen"] })).toBe("ddl_volatile_default");
    // The capture could not backfill it (its reason in the payload): refused; backfilled: applied, and the after-backfill row puts
    // the identity and its sequence's position in place (a backfill the source could not run: refused there).
    const volatile = (columns: string[], reason: string | null) => ({ nonConstantDefaults: columns, volatile: [{ table: "public.judge_t", columns, always: [], reason }] });
    expect(await run("ALTER TABLE judge_t ADD COLUMN seen timestamptz DEFAULT now()", volatile(["seen"], "public.judge_t has no key"))).toBe("ddl_volatile_default");
    expect(await run("ALTER TABLE judge_t ADD COLUMN seen timestamptz DEFAULT now(), ADD COLUMN ia int GENERATED ALWAYS AS IDENTITY",
      { ...volatile(["seen"], null), nonConstantDefaults: ["ia", "seen"] })).toBe("ddl_volatile_default"); // ia is flagged too, the capture's list lacks it
    expect(await run("ALTER TABLE judge_t ADD COLUMN seen timestamptz DEFAULT now(), ADD COLUMN ia int GENERATED ALWAYS AS IDENTITY",
      { ...volatile(["seen", "ia"], null), nonConstantDefaults: ["ia", "seen"] })).toBe("applied");
    const after = (extra: Record<string, unknown>) => c.query(`INSERT INTO pgferry.ddl_log_judge VALUES ($1, $2)`, [++id, JSON.stringify({ v: 1,
      kind: "after-backfill", table: "public.judge_t", columns: ["seen", "ia"], always: ["ia"], sequences: [{ column: "ia", lastValue: "77", isCalled: true }],
      error: null, ...extra })]).then(() => "applied", (e: Error) => e.message.split(":")[0]);
    await c.query(`ALTER TABLE judge_t ALTER COLUMN ia SET GENERATED BY DEFAULT`);
    expect(await after({})).toBe("applied");
    expect((await c.query(`SELECT (SELECT attidentity FROM pg_attribute WHERE attrelid = 'judge_t'::regclass AND attname = 'ia') AS i,
      (SELECT last_value::int FROM judge_t_ia_seq) AS v`)).rows[0]).toEqual({ i: "a", v: 77 });
    expect(await after({ error: "new row violates check constraint" })).toBe("ddl_volatile_default");
    expect(await run("CREATE TABLE judge_j (a int, j json)", { commands: [{ tag: "CREATE TABLE", type: "table", identity: "public.judge_j" }],
      identityFull: [{ schema: "public", name: "judge_j" }] })).toBe("ddl_unsupported");
    expect(await readDdlRefusal(c, undefined, "judge")).toMatchObject({ code: "ddl_unsupported", logId: String(id) });
    expect(await run("CREATE TABLE judge_k (a int, w text, r int4range, e int[])", { commands: [{ tag: "CREATE TABLE", type: "table", identity: "public.judge_k" }],
      identityFull: [{ schema: "public", name: "judge_k" }] })).toBe("applied");
    expect(await run("ALTER TABLE judge_t ALTER COLUMN v TYPE varchar(20)", { nonConstantDefaults: ["v"] })).toBe("applied");
    expect(await readDdlRefusal(c, undefined, "judge")).toBeUndefined(); // a later statement applied: the worker is past it
    expect(await run("COMMENT ON TABLE judge_t IS 'a;b -- not a comment'")).toBe("applied");
    expect(await run("CREATE FUNCTION f_semi() RETURNS int LANGUAGE sql AS $b$ SELECT 1; $b$;  -- trailing; comment")).toBe("applied");
    expect(await run("/* lead; */ CREATE INDEX CONCURRENTLY judge_t_v_idx ON judge_t (v)")).toBe("applied");
    expect((await c.query(`SELECT obj_description('judge_t'::regclass) AS d, to_regprocedure('f_semi()') IS NOT NULL AS f,
      to_regclass('judge_t_v_idx') IS NOT NULL AS i`)).rows[0]).toEqual({ d: "a;b -- not a comment", f: true, i: true });
  } finally {
    await dropTargetApply(c, "judge");
    await c.query(`DROP SCHEMA pgferry; DROP TABLE judge_t; DROP TABLE IF EXISTS judge_k, judge_j; DROP FUNCTION IF EXISTS f_semi()`);
    await c.end();
  }
});

test("subscription: a refused DDL is named by status (code, statement, fix) and cutover refuses with its code, at the drain and before the freeze", async () => {
  for (const s of [src, tgt]) await s.createDatabase("app3");
  await src.query(`CREATE TABLE r1 (id int PRIMARY KEY, v text); INSERT INTO r1 SELECT g, 'a' FROM generate_series(1, 20) g`, "app3");
  await src.query(`CREATE ROLE ddl_owner_on_source_only`);
  const source = parseEndpoint(src.uri("app3"), "source"), target = parseEndpoint(tgt.uri("app3"), "target");
  expect((await startMigration(source, target, migrationOptions({ name: "sx", mode: "subscription", ddl: "replicate", jobs: 1 }))).phase).toBe("ReadyToCutover");
  const refusedWith = (code: string) => until(`status to name ${code}`, async () => {
    const st = await migrationStatus(source, target, "sx");
    return st.applyError?.code === code ? st : undefined;
  }, 60000);
  const readOnly = async () => (await src.query(`SELECT current_setting('default_transaction_read_only') AS r`, "app3"))[0].r;

  // The target refuses the statement (a role it lacks): ddl_failed with its SQLSTATE, cleared once the worker applies it.
  await src.query(`ALTER TABLE r1 OWNER TO ddl_owner_on_source_only`, "app3");
  await src.query(`INSERT INTO r1 VALUES (21, 'after-owner')`, "app3");
  let st = await refusedWith("ddl_failed");
  expect(st.applyError!.message).toContain(`"ALTER TABLE r1 OWNER TO ddl_owner_on_source_only"`);
  expect(st.applyError!.message).toContain("SQLSTATE 42704");
  expect(formatStatus(st)).toContain("DDL NOT REPLICATED (ddl_failed)");
  // The cutover refuses with the code, and names the target's error (the statement run again, rolled back).
  await expect(cutoverMigration(source, target, { name: "sx", freezeWrites: true, timeoutSec: 300, jobs: 1 })).rejects.toMatchObject({
    code: "ddl_failed", message: expect.stringContaining(`the target says now: role "ddl_owner_on_source_only" does not exist`) });
  await tgt.query(`CREATE ROLE ddl_owner_on_source_only`);
  await until("the apply worker to apply the statement once the target has the role", async () =>
    (await tgt.query(`SELECT count(*)::int AS n FROM r1 WHERE id = 21`, "app3"))[0].n === 1, 60000);
  expect((await migrationStatus(source, target, "sx")).applyError).toBeUndefined();

  // Refused while the cutover runs (after its checks, before the freeze): the drain names it and unfreezes.
  const multi = `ALTER TABLE r1 ADD COLUMN q int; UPDATE r1 SET q = 1 WHERE id = 1`;
  await expect(cutoverMigration(source, target, { name: "sx", freezeWrites: true, timeoutSec: 300, jobs: 1,
    afterStep: async (step) => { if (step === "warm-up") await src.query(multi, "app3"); } })).rejects.toMatchObject({ code: "ddl_multi_statement" });
  expect(await readOnly()).toBe("off");
  st = await refusedWith("ddl_multi_statement");
  expect(st.phase).toBe("ReadyToCutover");
  expect(st.applyError!.message).toContain(`"${multi}"`);
  expect(st.applyError!.message).toContain("Fix: run pgferry cleanup and start again");
  expect(JSON.parse(JSON.stringify(st)).applyError.code).toBe("ddl_multi_statement");
  expect(formatStatus(st)).toContain("DDL NOT REPLICATED (ddl_multi_statement)");
  // Without the source: the code and the source's log row.
  const bare = await migrationStatus(undefined, target, "sx");
  expect(bare.applyError?.code).toBe("ddl_multi_statement");
  expect(bare.applyError?.message).toMatch(/the source's DDL log row \d+/);
  // A second cutover refuses before freezing anything.
  await expect(cutoverMigration(source, target, { name: "sx", freezeWrites: true, timeoutSec: 300, jobs: 1 }))
    .rejects.toMatchObject({ code: "ddl_multi_statement", message: expect.stringContaining("Nothing was frozen") });
  expect(await readOnly()).toBe("off");
  await src.query(`INSERT INTO r1 VALUES (22, 'still writable')`, "app3");

  await cleanupMigration(source, target, "sx");
  expect(await pgferryObjects(src, "app3")).toEqual([]);
  expect(await pgferryObjects(tgt, "app3")).toEqual([]);
  expect(await leftovers(src, tgt, "app3")).toEqual([]);
});

test("subscription: a DDL refused while the cutover waits for a new table's sync is named by its code, not at the deadline", async () => {
  for (const s of [src, tgt]) await s.createDatabase("app7");
  await src.query(`CREATE TABLE a7 (id int PRIMARY KEY); INSERT INTO a7 SELECT generate_series(1, 10)`, "app7");
  const source = parseEndpoint(src.uri("app7"), "source"), target = parseEndpoint(tgt.uri("app7"), "target");
  expect((await startMigration(source, target, migrationOptions({ name: "sw", mode: "subscription", ddl: "replicate", jobs: 1 }))).phase).toBe("ReadyToCutover");
  // After the cutover's checks: a new table (the new-tables step refreshes and waits for it), then a statement the trigger refuses,
  // which stops the apply worker, so the table's sync never meets it.
  const afterStep = async (step: string) => {
    if (step !== "replication-checks") return;
    await src.query(`CREATE TABLE n7 (id int PRIMARY KEY)`, "app7");
    await src.query(`INSERT INTO n7 SELECT generate_series(1, 5)`, "app7");
    await src.query(`ALTER TABLE a7 ADD COLUMN q int; UPDATE a7 SET q = 1`, "app7");
  };
  await expect(cutoverMigration(source, target, { name: "sw", freezeWrites: true, timeoutSec: 90, jobs: 1, afterStep }))
    .rejects.toMatchObject({ code: "ddl_multi_statement", message: expect.stringContaining("Nothing was frozen") });
  expect((await src.query(`SELECT current_setting('default_transaction_read_only') AS r`, "app7"))[0].r).toBe("off");
  await cleanupMigration(source, target, "sw");
  expect(await pgferryObjects(src, "app7")).toEqual([]);
  expect(await pgferryObjects(tgt, "app7")).toEqual([]);
  expect(await leftovers(src, tgt, "app7")).toEqual([]);
});

test("subscription, --include: a table created by replicated DDL is in the cutover's gate and in verify, though --include does not name it", async () => {
  ensureBuilt();
  for (const s of [src, tgt]) await s.createDatabase("app4");
  await src.query(`CREATE TABLE acct (id int PRIMARY KEY, v text); INSERT INTO acct SELECT g, 'a' || g FROM generate_series(1, 100) g;
    CREATE TABLE other (id int PRIMARY KEY); INSERT INTO other SELECT generate_series(1, 10)`, "app4");
  const source = parseEndpoint(src.uri("app4"), "source"), target = parseEndpoint(tgt.uri("app4"), "target");
  expect((await startMigration(source, target, migrationOptions({ name: "sy", mode: "subscription", ddl: "replicate", jobs: 1, include: ["public.acct"] })))
    .phase).toBe("ReadyToCutover");
  await src.query(`CREATE TABLE newt (id serial PRIMARY KEY, x text)`, "app4");
  await src.query(`INSERT INTO newt (x) SELECT 'r' || g FROM generate_series(1, 50) g`, "app4");
  await src.query(`UPDATE acct SET v = 'u' WHERE id % 9 = 0`, "app4");
  // The target loses a row of the new table after the fence, before the gate: the gate must see it.
  const lose = async (step: string) => { if (step === "new-tables-after-fence") await tgt.query(`DELETE FROM newt WHERE id = 7`, "app4"); };
  await expect(cutoverMigration(source, target, { name: "sy", freezeWrites: true, timeoutSec: 120, jobs: 1, afterStep: lose }))
    .rejects.toMatchObject({ code: "verify_failed", message: expect.stringContaining("newt") });
  expect((await migrationStatus(source, target, "sy")).phase).toBe("VerifyFailed");
  await tgt.query(`INSERT INTO newt VALUES (7, 'r7')`, "app4"); // repaired: the re-run re-verifies and completes
  const cut = await cutoverMigration(source, target, { name: "sy", freezeWrites: true, timeoutSec: 120, jobs: 1, verify: "hashes" });
  expect(cut.phase).toBe("Completed");
  expect(cut.verification!.tables).toBe(2); // acct and newt (other is not migrated)
  expect(await tgt.query(`SELECT count(*)::int AS n FROM newt`, "app4")).toEqual([{ n: 50 }]);
  const seq = `SELECT last_value::int AS v, is_called FROM newt_id_seq`; // its sequence is synced like the selection's
  expect(await tgt.query(seq, "app4")).toEqual(await src.query(seq, "app4"));
  expect(await leftovers(src, tgt, "app4")).toEqual([]);
  // verify --include public.acct (as given to start) compares newt too, after the cutover (from the record).
  const env = { ...process.env, PGFERRY_SOURCE: src.uri("app4"), PGFERRY_TARGET: tgt.uri("app4") };
  const verify = () => spawnSync(process.execPath, [CLI, "verify", "--name", "sy", "--include", "public.acct"], { encoding: "utf8", env });
  let v = verify();
  expect(v.stdout).toContain(`also compared: "public"."newt"`);
  expect(v.status).toBe(0);
  await tgt.query(`UPDATE newt SET x = 'changed on the target' WHERE id = 3`, "app4");
  v = verify();
  expect(v.stdout).toMatch(/newt: contents differ/);
  expect(v.status).toBe(1);
});

test("subscription: start warns when the target cannot run the tablesync worker a new table needs; the cutover names it before the freeze; once fixed it completes", async () => {
  for (const s of [src, tgt]) await s.createDatabase("app5");
  await src.query(`CREATE TABLE a5 (id int PRIMARY KEY); INSERT INTO a5 SELECT generate_series(1, 10)`, "app5");
  await tgt.query(`ALTER SYSTEM SET max_sync_workers_per_subscription = 0`);
  await reloadConf(tgt);
  try {
    const source = parseEndpoint(src.uri("app5"), "source"), target = parseEndpoint(tgt.uri("app5"), "target");
    const started = await startMigration(source, target, migrationOptions({ name: "sz", mode: "subscription", ddl: "replicate", jobs: 1 }));
    expect(started.phase).toBe("ReadyToCutover");
    const warning = started.findings.find((f) => f.code === "ddl_new_table_sync");
    expect(warning).toMatchObject({ severity: "warning", server: "target" });
    expect(warning!.message).toContain("max_sync_workers_per_subscription = 0");
    expect(warning!.fix).toContain("ALTER SYSTEM SET max_sync_workers_per_subscription = 2");
    await src.query(`CREATE TABLE n5 (id int PRIMARY KEY)`, "app5");
    await src.query(`INSERT INTO n5 SELECT generate_series(1, 20)`, "app5");
    await expect(cutoverMigration(source, target, { name: "sz", freezeWrites: true, timeoutSec: 5, jobs: 1 }))
      .rejects.toMatchObject({ code: "new_table_sync_timeout", message: expect.stringContaining("max_sync_workers_per_subscription") });
    expect((await src.query(`SELECT current_setting('default_transaction_read_only') AS r`, "app5"))[0].r).toBe("off");
    await tgt.query(`ALTER SYSTEM RESET max_sync_workers_per_subscription`);
    await reloadConf(tgt);
    expect((await cutoverMigration(source, target, { name: "sz", freezeWrites: true, timeoutSec: 120, jobs: 1 })).phase).toBe("Completed");
    expect(await tgt.query(`SELECT count(*)::int AS n FROM n5`, "app5")).toEqual([{ n: 20 }]);
    expect(await leftovers(src, tgt, "app5")).toEqual([]);
  } finally {
    await tgt.query(`ALTER SYSTEM RESET max_sync_workers_per_subscription`);
    await reloadConf(tgt);
  }
});

test("subscription: a cutover killed (SIGKILL) during its new-tables step converges when run again", async () => {
  ensureBuilt();
  for (const s of [src, tgt]) await s.createDatabase("app6");
  await src.query(`CREATE TABLE a6 (id int PRIMARY KEY, v text); INSERT INTO a6 SELECT g, 'a' FROM generate_series(1, 30) g`, "app6");
  const source = parseEndpoint(src.uri("app6"), "source"), target = parseEndpoint(tgt.uri("app6"), "target");
  expect((await startMigration(source, target, migrationOptions({ name: "sk", mode: "subscription", ddl: "replicate", jobs: 1 }))).phase).toBe("ReadyToCutover");
  await src.query(`CREATE TABLE n6 (id int PRIMARY KEY, v text)`, "app6");
  await src.query(`INSERT INTO n6 SELECT g, 'n' FROM generate_series(1, 40) g`, "app6");
  await until("the apply worker to create n6 on the target", async () => (await tgt.query(`SELECT to_regclass('n6') IS NOT NULL AS e`, "app6"))[0].e, 60000);
  // No sync worker: the CLI's cutover refreshes the subscription, then waits in its new-tables step, where it is killed.
  await tgt.query(`ALTER SYSTEM SET max_sync_workers_per_subscription = 0`);
  await reloadConf(tgt);
  try {
    const env = { ...process.env, PGFERRY_SOURCE: src.uri("app6"), PGFERRY_TARGET: tgt.uri("app6") };
    const cli = spawn(process.execPath, [CLI, "cutover", "--name", "sk", "--freeze-writes", "--timeout", "300"], { env, stdio: "ignore" });
    const gone = new Promise((r) => cli.on("exit", r));
    try {
      await until("the cutover to list n6 in the subscription (new-tables step)", async () => (await tgt.query(`SELECT count(*)::int AS n
        FROM pg_subscription_rel WHERE srrelid = to_regclass('n6')`, "app6"))[0].n === 1, 60000);
    } finally {
      cli.kill("SIGKILL");
      await gone;
    }
    await src.query(`INSERT INTO n6 VALUES (41, 'after the kill'); UPDATE a6 SET v = 'b' WHERE id < 5`, "app6");
    expect((await migrationStatus(source, target, "sk")).phase).toBe("ReadyToCutover");
    expect((await src.query(`SELECT current_setting('default_transaction_read_only') AS r`, "app6"))[0].r).toBe("off");
  } finally {
    await tgt.query(`ALTER SYSTEM RESET max_sync_workers_per_subscription`);
    await reloadConf(tgt);
  }
  const cut = await cutoverMigration(source, target, { name: "sk", freezeWrites: true, timeoutSec: 120, jobs: 1, verify: "hashes" });
  expect(cut.phase).toBe("Completed");
  for (const t of ["a6", "n6"]) {
    const q = `SELECT count(*)::int AS n, md5(string_agg(x::text, ',' ORDER BY x::text)) AS h FROM ${t} x`;
    expect(await tgt.query(q, "app6")).toEqual(await src.query(q, "app6"));
  }
  expect(await pgferryObjects(src, "app6")).toEqual([]);
  expect(await pgferryObjects(tgt, "app6")).toEqual([]);
  expect(await leftovers(src, tgt, "app6")).toEqual([]);
});

/** --exclude and DDL while streaming: a table created while streaming obeys start's selection like one present at start. */
async function excludeDatabase(db: string): Promise<void> {
  for (const s of [src, tgt]) await s.createDatabase(db);
  await src.query(EXCLUDE_SCHEMA, db);
}

test("subscription, --exclude: a table created while streaming that --exclude names is left out like at start (not published, so not in the subscription; not on the target; not compared), named by status and cutover", async () => {
  await excludeDatabase("sxa");
  const source = parseEndpoint(src.uri("sxa"), "source"), target = parseEndpoint(tgt.uri("sxa"), "target");
  const exclude = ["cache", "old_log"];
  expect((await startMigration(source, target, migrationOptions({ name: "ex", mode: "subscription", ddl: "replicate", jobs: 1, exclude }))).phase)
    .toBe("ReadyToCutover");
  const q = (sql: string) => src.query(sql, "sxa");
  await q(`CREATE TABLE cache (id serial PRIMARY KEY, v text, acct_id int REFERENCES acct)`); // its key references a migrated table
  await q(`INSERT INTO cache (v, acct_id) SELECT 'r' || g, g FROM generate_series(1, 20) g`);
  await q(`CREATE INDEX cache_v ON cache (v)`);
  await q(`CREATE STATISTICS cache_st ON v, acct_id FROM cache`);
  await q(`COMMENT ON TABLE cache IS 'scratch'`);
  await q(`ALTER TABLE cache ADD COLUMN seen timestamptz DEFAULT now()`);
  await q(`UPDATE acct SET v = 'u' WHERE id % 5 = 0`);
  await q(`ALTER TABLE arch.cache ADD COLUMN w int`);
  await q(`CREATE TABLE old_log_2025 PARTITION OF old_log FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')`);
  await q(`INSERT INTO old_log VALUES (1, '2025-05-05')`);
  await q(`CREATE TABLE old_log_2026 PARTITION OF old_log FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')`); // kept on the source
  await q(`CREATE TABLE kept (id int PRIMARY KEY, v text)`);
  await q(`INSERT INTO kept SELECT g, 'k' FROM generate_series(1, 10) g`);
  // Drops of left-out relations are not the target's: an index made while streaming, a partition excluded at start, one made since.
  await q(`DROP INDEX cache_v`);
  await q(`DROP TABLE old_log_2024`);
  await q(`DROP TABLE old_log_2025`);
  await q(`DROP TABLE arch.cache`);
  await q(`INSERT INTO acct VALUES (1000, 'last')`);
  await until("the apply worker to apply what follows", async () => (await tgt.query(`SELECT count(*)::int AS n FROM acct WHERE id = 1000`, "sxa"))[0].n === 1, 60000);
  const st = await migrationStatus(source, target, "ex");
  expect(st.applyError).toBeUndefined();
  expect(st.newTablesLeftOut).toEqual(["public.cache", "public.old_log_2026"]);
  expect(st.newTablesAwaitingSync).toEqual([{ table: "public.kept", state: "not in the subscription" }]);
  expect(formatStatus(st)).toMatch(/created on the source while streaming that the selection leaves out \(--exclude names them, or a partition of a left-out table\), left out like at start[^\n]*: public\.cache, public\.old_log_2026/);
  expect(await tgt.query(`SELECT relname FROM pg_class WHERE relname ~ '^(cache|old_log|kept)' AND relkind IN ('r', 'p') ORDER BY 1`, "sxa"))
    .toEqual([{ relname: "kept" }]);
  const says: string[] = [];
  const cut = await cutoverMigration(source, target, { name: "ex", freezeWrites: true, timeoutSec: 120, jobs: 1, verify: "hashes", onProgress: (s: string) => says.push(s) });
  expect(cut.phase).toBe("Completed");
  expect(says.join("\n")).toMatch(/left out like at start[^\n]*: public\.cache, public\.old_log_2026/);
  expect((await migrationStatus(undefined, target, "ex")).notCarried!.filter((x) => x.kind === "table created while streaming").map((x) => x.object))
    .toEqual(["public.cache", "public.old_log_2026"]);
  expect(await tgt.query(`SELECT relname FROM pg_class WHERE relname ~ '^(cache|old_log)' ORDER BY 1`, "sxa")).toEqual([]);
  expect((await verifyMigration(source, target, { exclude })).problems).toEqual([]);
  expect(await tgt.query(`SELECT count(*)::int AS n FROM kept`, "sxa")).toEqual([{ n: 10 }]);
  expect(await pgferryObjects(src, "sxa")).toEqual([]);
  expect(await leftovers(src, tgt, "sxa")).toEqual([]);
});

test("subscription, --exclude: a rename into or out of an --exclude name, and a new partition --exclude names of a migrated table, stop the apply worker before them (ddl_selection)", async () => {
  const cases = SELECTION_REFUSALS.map((x, i) => ({ ...x, db: ["sxb", "sxc", "sxd"][i] }));
  for (const c of cases) {
    await excludeDatabase(c.db);
    const source = parseEndpoint(src.uri(c.db), "source"), target = parseEndpoint(tgt.uri(c.db), "target");
    expect((await startMigration(source, target, migrationOptions({ name: "ez", mode: "subscription", ddl: "replicate", jobs: 1, exclude: ["cache"] }))).phase)
      .toBe("ReadyToCutover");
    for (const sql of c.ddl) await src.query(sql, c.db);
    await src.query(`INSERT INTO acct VALUES (1000, 'after')`, c.db);
    const st = await until(`status to show the refusal (${c.ddl.at(-1)})`, async () => {
      const s = await migrationStatus(source, target, "ez");
      return s.applyError?.code === "ddl_selection" ? s : undefined;
    }, 120000);
    expect(st.applyError!.message).toMatch(c.names);
    expect(st.applyError!.message).toMatch(/Fix: run pgferry cleanup and start again/);
    expect(formatStatus(st)).toContain("DDL NOT REPLICATED (ddl_selection)");
    // Stopped before it: nothing after it applied.
    expect((await tgt.query(`SELECT count(*)::int AS n FROM acct WHERE id = 1000`, c.db))[0].n).toBe(0);
    await expect(cutoverMigration(source, target, { name: "ez", freezeWrites: true, timeoutSec: 30, jobs: 1 })).rejects.toMatchObject({ code: "ddl_selection" });
    await cleanupMigration(source, target, "ez");
    expect(await pgferryObjects(src, c.db)).toEqual([]);
    expect(await pgferryObjects(tgt, c.db)).toEqual([]);
    expect(await leftovers(src, tgt, c.db)).toEqual([]);
  }
});
