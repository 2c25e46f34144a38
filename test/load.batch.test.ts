/**
 * The load copies small tables many per round trip (copy/copyBatch.ts): one Query of N `COPY … TO STDOUT` on the
 * source, one of N `COPY … FROM STDIN` on the target, rows forwarded in packed CopyData messages. Checked here on
 * real servers (15 → 17): every row arrives exactly (empty tables, rows larger than a forwarded message, text and
 * binary formats side by side in one batch), the small tables really share transactions on the target (their rows'
 * xmin: one COPY per transaction would give one per non-empty table), a COPY failing in the middle of a batch names
 * its table, and the re-run after it converges.
 */
import { LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, migrationOptions, parseEndpoint, PgferryError, startMigration, verifyMigration } from "../provider/engine";
import { leftovers, startServers } from "./support/servers";

let src: LocalServer, tgt: LocalServer;
const TABLES = 120;
const name = (i: number) => `t${String(i).padStart(3, "0")}`;

const SCHEMA = [
  ...Array.from({ length: TABLES }, (_, i) => `CREATE TABLE ${name(i)} (id int PRIMARY KEY, v text);
    INSERT INTO ${name(i)} SELECT g, md5(g::text || '${i}') FROM generate_series(1, ${i % 4}) g;`),
  // Rows of 300 kB and 1.2 MB: larger than one forwarded message (256 kB).
  `CREATE TABLE wide (id int PRIMARY KEY, v text);
   INSERT INTO wide SELECT g, repeat(md5(g::text), g * 10000) FROM generate_series(1, 4) g;`,
  // Binary COPY (built-in scalar types only) and text COPY (an enum, an array) in the same batch.
  `CREATE TABLE bin (id bigint PRIMARY KEY, f float8, ts timestamptz, b bytea, n numeric);
   INSERT INTO bin SELECT g, g / 3.0, '2026-01-01'::timestamptz + g * interval '1 min', decode(md5(g::text), 'hex'), g * 1.5
     FROM generate_series(1, 500) g;
   CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
   CREATE TABLE typed (id int PRIMARY KEY, m mood, a int[], t text);
   INSERT INTO typed SELECT g, (ARRAY['sad','ok','happy'])[g % 3 + 1]::mood, ARRAY[g, NULL, -g], E'tab\\there\\nnewline \\\\ back'
     FROM generate_series(1, 300) g;`,
].join("\n");

beforeAll(async () => {
  [src, tgt] = await startServers(15, 17);
}, 120000);
afterAll(async () => { await src?.stop(); await tgt?.stop(); });

async function database(db: string) {
  await src.createDatabase(db);
  await tgt.createDatabase(db);
  await src.query(SCHEMA, db);
  return { source: parseEndpoint(src.uri(db), "source"), target: parseEndpoint(tgt.uri(db), "target") };
}

test("small tables are copied many per transaction, every row exactly", async () => {
  const db = "batch";
  const { source, target } = await database(db);
  expect((await startMigration(source, target, migrationOptions({ name: "bt", jobs: 2, replicaIdentityFull: true }))).phase).toBe("ReadyToCutover");
  const report = await verifyMigration(source, target, { hashes: true });
  expect(report.problems).toEqual([]);
  expect(await tgt.query(`SELECT count(*)::int AS n, max(length(v))::int AS longest FROM wide`, db)).toEqual([{ n: 4, longest: 1280000 }]);
  // Rows of the small tables: 90 non-empty tables; one COPY per transaction gave 90 distinct xmins.
  const union = Array.from({ length: TABLES }, (_, i) => `SELECT xmin::text AS x FROM ${name(i)}`).join(" UNION ALL ");
  const [{ rows, transactions }] = await tgt.query(`SELECT count(*)::int AS rows, count(DISTINCT x)::int AS transactions FROM (${union}) u`, db);
  expect(rows).toBe(Array.from({ length: TABLES }, (_, i) => i % 4).reduce((a, b) => a + b, 0));
  expect(transactions).toBeLessThanOrEqual(10);
  await cleanupMigration(source, target, "bt");
  expect(await leftovers(src, tgt, db)).toEqual([]);
}, 180000);

test("a COPY failing in the middle of a batch names its table; the re-run converges", async () => {
  const db = "batch_error";
  const { source, target } = await database(db);
  const opts = migrationOptions({ name: "be", jobs: 1, replicaIdentityFull: true });
  expect((await startMigration(source, target, opts, undefined, "SchemaSync")).phase).toBe("Loading");
  // t061 has a row with id 1: a check the target alone has makes its COPY fail, after the batch's earlier tables.
  await tgt.query(`ALTER TABLE t061 ADD CONSTRAINT no_one CHECK (id <> 1)`, db);
  const err = await startMigration(source, target, opts).then(() => undefined, (e) => e as PgferryError);
  expect(err).toBeInstanceOf(PgferryError);
  expect(err!.message).toMatch(/loading table public\.t061 failed: new row for relation "t061" violates check constraint "no_one"/);
  // The failed batch left nothing half-done: the re-run (the check gone) truncates what needs it and loads every row.
  await tgt.query(`ALTER TABLE t061 DROP CONSTRAINT no_one`, db);
  expect((await startMigration(source, target, opts)).phase).toBe("ReadyToCutover");
  expect((await verifyMigration(source, target, { hashes: true })).problems).toEqual([]);
  await cleanupMigration(source, target, "be");
  expect(await leftovers(src, tgt, db)).toEqual([]);
}, 180000);
