/**
 * Table selection and the opt-ins: --schema/--include/--exclude, --replica-identity-full on a key-less
 * table with duplicate rows, an unlogged table (copied once, reported), and the demo end to end.
 */
import { runDemo } from "../provider/demo/runDemo";
import { LocalServer } from "../provider/embedded/localServer";
import {
  cleanupMigration, cutoverMigration, migrationOptions, parseEndpoint, startMigration, verifyMigration,
} from "../provider/engine";
import { leftovers, startServers } from "./support/servers";

let src: LocalServer, tgt: LocalServer;
beforeAll(async () => {
  [src, tgt] = await startServers(15, 17);
  await src.createDatabase("app");
  await tgt.createDatabase("app");
  await src.query(`
    CREATE SCHEMA sales; CREATE SCHEMA scratch;
    CREATE TABLE sales.orders (id int PRIMARY KEY, v text);
    CREATE TABLE sales.audit (id int PRIMARY KEY, note text);
    CREATE TABLE sales.events (k int, v text);                  -- no key: needs --replica-identity-full
    CREATE UNLOGGED TABLE sales.cache (id int PRIMARY KEY, v text);
    CREATE TABLE scratch.tmp (id int PRIMARY KEY);
    INSERT INTO sales.orders SELECT g, 'o' || g FROM generate_series(1, 500) g;
    INSERT INTO sales.audit SELECT g, 'a' || g FROM generate_series(1, 50) g;
    INSERT INTO sales.events SELECT g % 20, 'dup' FROM generate_series(1, 200) g;   -- duplicate rows
    INSERT INTO sales.cache SELECT g, 'c' FROM generate_series(1, 10) g;
    INSERT INTO scratch.tmp SELECT generate_series(1, 10);`, "app");
});
afterAll(async () => { await src?.stop(); await tgt?.stop(); });

test("schema + exclude + replica identity full + unlogged", async () => {
  const source = parseEndpoint(src.uri("app"), "source"), target = parseEndpoint(tgt.uri("app"), "target");
  const opts = migrationOptions({ name: "sel", schemas: ["sales"], exclude: ["sales.audit"], replicaIdentityFull: true, jobs: 2 });
  const started = await startMigration(source, target, opts);
  expect(started.phase).toBe("ReadyToCutover");
  expect(started.findings.map((f) => f.code)).toContain("unlogged");
  expect(await src.query(`SELECT relreplident FROM pg_class WHERE oid = 'sales.events'::regclass`, "app")).toEqual([{ relreplident: "f" }]);

  // Duplicate rows: an UPDATE/DELETE of one of two identical rows must touch exactly one on the target.
  await src.query(`DELETE FROM sales.events WHERE ctid = (SELECT ctid FROM sales.events WHERE k = 3 LIMIT 1);
    UPDATE sales.events SET v = 'changed' WHERE ctid = (SELECT ctid FROM sales.events WHERE k = 4 LIMIT 1);
    UPDATE sales.orders SET v = 'x' WHERE id < 100; INSERT INTO sales.audit VALUES (999, 'not migrated');`, "app");
  await cutoverMigration(source, target, { name: "sel", freezeWrites: false, timeoutSec: 60, jobs: 2 });

  const tables = (await tgt.query(`SELECT schemaname || '.' || tablename AS t FROM pg_tables WHERE schemaname IN ('sales', 'scratch') ORDER BY 1`, "app")).map((x) => x.t);
  expect(tables).toEqual(["sales.cache", "sales.events", "sales.orders"]);
  const report = await verifyMigration(source, target, { schemas: ["sales"], excludeTables: ["sales.audit"] });
  expect(report.problems).toEqual([]);
  expect(report.tables.map((t) => t.table).sort()).toEqual(["sales.cache", "sales.events", "sales.orders"]);
  await cleanupMigration(source, target, "sel");
  expect(await leftovers(src, tgt)).toEqual([]);
});

test("a schema sync recorded before the CDC mode was chosen continues in the mode start asks for; later the mode is fixed", async () => {
  await src.createDatabase("modes");
  await tgt.createDatabase("modes");
  await src.query(`CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 100) g;`, "modes");
  const source = parseEndpoint(src.uri("modes"), "source"), target = parseEndpoint(tgt.uri("modes"), "target");
  // What the SchemaSync resource does: schema only, with default options (mode subscription).
  expect((await startMigration(source, target, migrationOptions({ name: "late" }), undefined, "SchemaSync")).phase).toBe("Loading");
  const started = await startMigration(source, target, migrationOptions({ name: "late", mode: "stream" }));
  expect(started.phase).toBe("ReadyToCutover");
  expect(await tgt.query(`SELECT mode FROM pgferry.migration WHERE name = 'late'`, "modes")).toEqual([{ mode: "stream" }]);
  expect(await tgt.query(`SELECT subname FROM pg_subscription`, "modes")).toEqual([]);
  await expect(startMigration(source, target, migrationOptions({ name: "late", mode: "subscription" })))
    .rejects.toThrow(/started in mode stream .* cannot continue in mode subscription.*cleanup/);
  await src.query(`INSERT INTO t VALUES (101, 'late')`, "modes");
  expect((await cutoverMigration(source, target, { name: "late", freezeWrites: true, timeoutSec: 60, jobs: 2 })).phase).toBe("Completed");
  expect(await tgt.query(`SELECT count(*)::int AS n FROM t`, "modes")).toEqual([{ n: 101 }]);
  await cleanupMigration(source, target, "late");
  expect(await leftovers(src, tgt, "modes")).toEqual([]);
});

test.each(["subscription", "stream"] as const)("the demo in mode %s: DVD rental 15 → 17 under live writes, verified equal", async (mode) => {
  const report = await runDemo({ scale: 1, json: false, silent: true, streamSeconds: 1, mode });
  expect(report.problems).toEqual([]);
  expect(report.leftovers).toEqual([]);
  expect(report.verified).toBe(true);
  expect(report.writesDuringMigration.transactions).toBeGreaterThan(0);
  expect(report.load.rows).toBeGreaterThan(40000);
});
