/**
 * End to end with the wal2json plugin: a system PostgreSQL 15 source with postgresql-15-wal2json (the
 * embedded servers ship no wal2json) → embedded PostgreSQL 17, --mode stream --plugin wal2json, no
 * publication anywhere. The EDGE fixture under concurrent writes of every change kind, values lossy
 * parsing (or wal2json's null for NaN/Infinity) would change, TRUNCATE while streaming, frozen cutover,
 * verified by our verifier and ../shared/tools/verify.sh, nothing left behind. Skips where wal2json
 * cannot be installed.
 */
import { LocalServer } from "../provider/embedded/localServer";
import {
  cleanupMigration, cutoverMigration, migrationOptions, migrationStatus, parseEndpoint, startMigration, verifyMigration,
} from "../provider/engine";
import { EDGE_SCHEMA, edgeChanges } from "./support/fixtures";
import { leftovers, moreWrites, runVerifySh, startServers, startWal2jsonSource, wal2jsonMissing, Writer } from "./support/servers";

const missing = wal2jsonMissing();
if (missing) console.warn(`skipping the wal2json end-to-end test: ${missing}`);
const maybe = missing ? test.skip : test;

let src: LocalServer | undefined, tgt: LocalServer | undefined;
const db = "app";

beforeAll(async () => {
  if (missing) return;
  [src, [tgt]] = await Promise.all([startWal2jsonSource(), startServers(17)]);
  await src.createDatabase(db);
  await tgt.createDatabase(db);
  await src.query(EDGE_SCHEMA + `
    CREATE DOMAIN posint AS int CHECK (VALUE > 0);
    CREATE TABLE typed (id int PRIMARY KEY, ts timestamptz, j jsonb, jn jsonb, arr int[], n numeric, f float8, d date, b bytea,
      m mood, p posint, iv interval, t text, ok boolean);`, db);
});
afterAll(async () => { await src?.stop(); await tgt?.stop(); });

maybe("wal2json, 15 → 17 under concurrent writes: start, stream, cutover, verify equal, no publication, nothing left", async () => {
  const s = src!, t = tgt!;
  const source = parseEndpoint(s.uri(db), "source"), target = parseEndpoint(t.uri(db), "target");
  const opts = migrationOptions({ name: "w2j", jobs: 3, mode: "stream", plugin: "wal2json" });
  const writer = new Writer(s.uri(db), edgeChanges).start();
  const started = await startMigration(source, target, opts);
  expect(started.phase).toBe("ReadyToCutover");
  expect(started.load!.rows).toBeGreaterThan(9000);
  expect(started.findings.filter((f) => f.code.startsWith("wal2json"))).toEqual([]);
  // The slot decodes with wal2json; no publication was needed.
  expect(await s.query(`SELECT plugin FROM pg_replication_slots`, db)).toEqual([{ plugin: "wal2json" }]);
  expect(await s.query(`SELECT pubname FROM pg_publication`, db)).toEqual([]);

  expect(await startMigration(source, target, opts)).toMatchObject({ alreadyRunning: true, phase: "ReadyToCutover" });

  await moreWrites(writer);
  // Values lossy parsing would change, and the float/numeric NaN and infinities wal2json 2.5 writes as null.
  await s.query(`INSERT INTO typed VALUES
    (1, '2024-01-01 00:00:00.123456+00', '{"x": 12345678901234567890, "y": 2.50}', 'null', '{1,NULL,3}', 'NaN', 'Infinity', 'infinity',
     '\\x00ff10', 'happy', 5, '1 day 00:00:00.000001', E'tab\\there ''quote'' \\\\ backslash', true),
    (2, '-infinity', NULL, NULL, '{}', '-0.000000000000000000001', '-Infinity', '-infinity', '\\x', 'sad', 1, '-3 years', NULL, false),
    (3, NULL, NULL, NULL, NULL, 12345678901234567890.123456789, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    UPDATE typed SET n = n, f = 1e-300 WHERE id = 2;
    UPDATE typed SET n = 'NaN' WHERE id = 3;`, db);
  await s.query(`TRUNCATE "Edge Aux"."Mixed Case Ü"; INSERT INTO "Edge Aux"."Mixed Case Ü" SELECT g, 'again ' || g FROM generate_series(1, 50) g`, db);
  const status = await migrationStatus(source, target, "w2j");
  expect(status.phase).toBe("ReadyToCutover");
  expect(status.appliedLsn).toBeDefined();

  const cut = await cutoverMigration(source, target, { name: "w2j", freezeWrites: true, timeoutSec: 120, jobs: 2 });
  await writer.stop();
  expect(writer.transactions).toBeGreaterThan(10);
  expect(writer.errors).toEqual([]);
  expect(cut.phase).toBe("Completed");
  expect(cut.sequencesSynced).toBe(4);

  expect(await t.query(`SELECT id, jn IS NULL AS sql_null, jn::text AS jn, j::text AS j, ts::text AS ts, n::text AS n, f::text AS f,
      b::text AS b, ok::text AS ok FROM typed ORDER BY id`, db)).toEqual([
    { id: 1, sql_null: false, jn: "null", j: '{"x": 12345678901234567890, "y": 2.50}', ts: "2024-01-01 00:00:00.123456+00", n: "NaN", f: "Infinity", b: "\\x00ff10", ok: "true" },
    { id: 2, sql_null: true, jn: null, j: null, ts: "-infinity", n: "-0.000000000000000000001", f: "1e-300", b: "\\x", ok: "false" },
    { id: 3, sql_null: true, jn: null, j: null, ts: null, n: "NaN", f: null, b: null, ok: null },
  ]);
  const applied = await t.query(`SELECT sum(inserts + updates + deletes)::int AS n, sum(truncates)::int AS tr FROM pgferry.apply_stats`, db);
  expect(applied[0].n).toBeGreaterThan(100);
  expect(applied[0].tr).toBeGreaterThanOrEqual(1);
  const report = await verifyMigration(source, target);
  expect(report.problems).toEqual([]);
  expect(report.ok).toBe(true);

  await cleanupMigration(source, target, "w2j");
  expect(await leftovers(s, t, db)).toEqual([]);

  const sh = runVerifySh(s.uri(db), t.uri(db));
  if (sh) expect({ code: sh.code, output: sh.code === 0 ? "" : sh.output }).toEqual({ code: 0, output: "" });
});
