/**
 * Tables with no column to copy still have rows: `CREATE TABLE t ()` (PostgreSQL's regression database has
 * several) and tables whose only columns are generated. The load's `COPY t () …` was a syntax error that
 * stopped start; their rows must arrive (counted by the verifier's hashes too).
 */
import { LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, migrationOptions, parseEndpoint, startMigration, verifyMigration } from "../provider/engine";
import { leftovers, startServers } from "./support/servers";

let src: LocalServer, tgt: LocalServer;

beforeAll(async () => {
  [src, tgt] = await startServers(15, 17);
  await src.createDatabase("app");
  await tgt.createDatabase("app");
  await src.query(`CREATE TABLE no_columns (); INSERT INTO no_columns SELECT FROM generate_series(1, 3);
    CREATE TABLE only_generated (g int GENERATED ALWAYS AS (7) STORED); INSERT INTO only_generated DEFAULT VALUES; INSERT INTO only_generated DEFAULT VALUES;
    CREATE TABLE dropped_all (a int); INSERT INTO dropped_all VALUES (1); ALTER TABLE dropped_all DROP COLUMN a;`, "app");
});
afterAll(async () => { await src?.stop(); await tgt?.stop(); });

test("start copies the rows of tables without copyable columns", async () => {
  const source = parseEndpoint(src.uri("app"), "source"), target = parseEndpoint(tgt.uri("app"), "target");
  const started = await startMigration(source, target, migrationOptions({ name: "nocols", jobs: 2, replicaIdentityFull: true }));
  expect(started.phase).toBe("ReadyToCutover");
  expect(await tgt.query(`SELECT (SELECT count(*)::int FROM no_columns) AS a, (SELECT count(*)::int FROM only_generated) AS b,
    (SELECT sum(g)::int FROM only_generated) AS g, (SELECT count(*)::int FROM dropped_all) AS c`, "app")).toEqual([{ a: 3, b: 2, g: 14, c: 1 }]);
  const report = await verifyMigration(source, target, { onlyTables: ["public.no_columns", "public.only_generated", "public.dropped_all"] });
  expect(report.problems).toEqual([]);
  await cleanupMigration(source, target, "nocols");
  expect(await leftovers(src, tgt, "app")).toEqual([]);
});
