/**
 * The wal2json decoder on real wal2json output: a system PostgreSQL 15 with postgresql-15-wal2json,
 * changes of every kind, the output read with pg_logical_slot_peek_changes and exactly the options
 * stream mode sends, then parsed and converted as StreamApplier would receive it. Skips (with the
 * reason) where wal2json is not installed.
 */
import { Client } from "pg";
import type { Change, ChangeBegin, ChangeCommit, ChangeDelete, ChangeInsert, ChangeRelation, ChangeUpdate } from "../provider/engine/cdc/decoders/change";
import { LocalServer } from "../provider/embedded/localServer";
import { quoteLiteral } from "../provider/engine/core/endpoint";
import {
  parseWal2json, probeWal2json, readWal2jsonTables, unresolvableTables, Wal2jsonConverter, wal2jsonOptions,
} from "../provider/engine/cdc/decoders/wal2json";
import { startServers, startWal2jsonSource, wal2jsonMissing } from "./support/servers";

const missing = wal2jsonMissing();
if (missing) console.warn(`skipping the wal2json decoder tests: ${missing}`);
const maybe = missing ? test.skip : test;

let src: LocalServer | undefined;
let c: Client;
const TABLES = [
  { schema: "public", name: "t" }, { schema: "public", name: "full1" }, { schema: "public", name: "m1" },
  { schema: "public", name: "m2" }, { schema: "Sch. x", name: "Tab, ü*" }, { schema: "public", name: "keep" },
];
let rows: { lsn: string; data: string }[] = [];

beforeAll(async () => {
  if (missing) return;
  src = await startWal2jsonSource();
  c = await src.client();
  await c.query(`CREATE TYPE mood AS ENUM ('sad', 'happy'); CREATE DOMAIN posint AS int CHECK (VALUE > 0);
    CREATE TABLE t (id int PRIMARY KEY, n numeric, f float8, r real, b bool, j jsonb, jn jsonb, arr int[], ts timestamptz, d date,
      raw bytea, m mood, p posint, big text, g int GENERATED ALWAYS AS (id * 2) STORED);
    ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL;
    CREATE TABLE full1 (k int, v text, x float8); ALTER TABLE full1 REPLICA IDENTITY FULL;
    CREATE TABLE m (id int, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
    CREATE TABLE m1 PARTITION OF m FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
    CREATE TABLE m2 PARTITION OF m FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
    CREATE SCHEMA "Sch. x"; CREATE TABLE "Sch. x"."Tab, ü*" ("K" int PRIMARY KEY);
    CREATE TABLE not_migrated (id int PRIMARY KEY);
    CREATE TABLE keep (id int PRIMARY KEY, f float8, r real, n numeric);`);
  await c.query(`SELECT pg_create_logical_replication_slot('w', 'wal2json')`);
  await c.query(`INSERT INTO t VALUES
    (1, 12345678901234567890.120, 'NaN', '-Infinity', true, '{"x": 12345678901234567890, "y": 2.50}', 'null', '{1,NULL}',
     '2024-01-01 00:00:00.123456+00', 'infinity', '\\x00ff', 'happy', 5, repeat('x', 5000)),
    (2, 'NaN', NULL, 1.5, false, NULL, NULL, '{}', '-infinity', '2024-02-29', '\\x', 'sad', 1, 'small')`);
  await c.query(`UPDATE t SET n = 1 WHERE id = 1`);            // big (TOAST) unchanged
  await c.query(`UPDATE t SET id = 10 WHERE id = 1`);          // key change
  await c.query(`DELETE FROM t WHERE id = 2`);
  await c.query(`INSERT INTO full1 VALUES (1, 'a', 0), (1, 'a', 0), (2, NULL, 1); UPDATE full1 SET v = 'b' WHERE k = 2; DELETE FROM full1 WHERE k = 1`);
  await c.query(`INSERT INTO m VALUES (1, '2024-05-05'); UPDATE m SET at = '2025-05-05' WHERE id = 1`);   // moves between partitions
  await c.query(`INSERT INTO "Sch. x"."Tab, ü*" VALUES (7); INSERT INTO not_migrated VALUES (1)`);
  await c.query(`INSERT INTO keep VALUES (1, 'NaN', '-Infinity', NULL), (2, NULL, 'Infinity', 'NaN')`);
  await c.query(`TRUNCATE m1`);
  await c.query(`TRUNCATE t, full1`);
  const opts = wal2jsonOptions(TABLES, false).map(([k, v]) => `, ${quoteLiteral(k)}, ${quoteLiteral(v)}`).join("");
  rows = (await c.query(`SELECT lsn::text, data FROM pg_logical_slot_peek_changes('w', NULL, NULL ${opts})`)).rows;
});
afterAll(async () => { await c?.end(); await src?.stop(); });

maybe("wal2json output converts to the applier's pgoutput messages, values exact", async () => {
  const tables = await readWal2jsonTables(c, TABLES);
  const conv = new Wal2jsonConverter(tables, false);
  const msgs: Change[] = [];
  for (const r of rows) {
    const parsed = parseWal2json(r.data);
    const out = conv.convert(parsed);
    for (const m of out) await conv.resolve(c, m);
    // Commit: the end of the commit record is what the applier stores and acknowledges; it is
    // the position the walsender reports for the C message.
    if (parsed.action === "C") expect((out[0] as ChangeCommit).commitEndLsn).toBe(r.lsn);
    msgs.push(...out);
  }
  // Lossless: JSON.parse would round the numeric.
  const first = rows.find((r) => r.data.includes('"action":"I"'))!.data;
  expect(JSON.stringify(JSON.parse(first))).not.toContain("12345678901234567890.120");

  const tags = msgs.map((m) => m.tag === "relation" ? `relation ${m.name}` : m.tag === "truncate" ? `truncate ${m.relations.map((x) => x.name)}` : m.tag);
  expect(tags).toEqual([
    "begin", "relation t", "insert", "insert", "commit",
    "begin", "update", "commit",
    "begin", "update", "commit",
    "begin", "delete", "commit",
    "begin", "relation full1", "insert", "insert", "insert", "update", "delete", "delete", "commit",
    "begin", "relation m", "insert", "delete", "relation m", "insert", "commit",    // leaves m1, m2 applied through the root
    "begin", "relation Tab, ü*", "insert", "commit",                             // not_migrated: filtered by add-tables
    "begin", "relation keep", "insert", "insert", "commit",
    "begin", "truncate m1", "commit",                                            // a leaf truncate stays a leaf truncate
    "begin", "truncate t", "truncate full1", "commit",
  ]);
  const [begin, , ins1, ins2, commit] = msgs as [ChangeBegin, ChangeRelation, ChangeInsert, ChangeInsert, ChangeCommit];
  expect(begin.commitLsn).toBe(commit.commitLsn);
  expect(typeof begin.xid).toBe("number");

  // Insert: every value as the text PostgreSQL prints; generated g left out.
  expect(ins1.new).toEqual({
    id: "1", n: "12345678901234567890.120", f: null, r: null, b: "t", j: '{"x": 12345678901234567890, "y": 2.50}', jn: "null",
    arr: "{1,NULL}", ts: "2024-01-01 00:00:00.123456+00", d: "infinity", raw: "\\x00ff", m: "happy", p: "5", big: "x".repeat(5000),
  });
  // f (NaN) and r (-Infinity) came as null from wal2json 2.5, and by the time they are resolved the
  // row is gone from the source (re-keyed, then truncated): they stay null, and the later changes of
  // the row (its key change carries the whole row; the truncate) rewrite it — the target converges.
  expect(ins2.new).toMatchObject({ id: "2", n: null, f: null, r: "1.5", b: "f", j: null, jn: null, arr: "{}", ts: "-infinity", raw: "\\x" });
  // Rows still on the source: NaN, ±Infinity read back by the key; a real NULL stays NULL.
  const keep = msgs.filter((m) => m.tag === "insert" && m.relation.name === "keep").map((m) => (m as ChangeInsert).new);
  expect(keep).toEqual([{ id: "1", f: "NaN", r: "-Infinity", n: null }, { id: "2", f: null, r: "Infinity", n: "NaN" }]);

  const rel = msgs[1] as ChangeRelation;
  expect(rel).toMatchObject({ schema: "public", name: "t", replicaIdentity: "default", keyColumns: ["id"] });
  expect(rel.columns.map((x) => x.name)).not.toContain("g");

  // Update with an unchanged TOAST value: big is absent (left as it is), the key comes from the row.
  const upd = msgs[6] as ChangeUpdate;
  expect("big" in upd.new).toBe(false);
  expect(upd.key).toEqual({ id: "1" });
  expect(upd.new).toMatchObject({ id: "1", n: "1" });
  // Key change: the old key, the new row.
  const keyChange = msgs[9] as ChangeUpdate;
  expect(keyChange.key).toEqual({ id: "1" });
  expect(keyChange.new.id).toBe("10");
  expect((msgs[12] as ChangeDelete).key).toEqual({ id: "2" });

  // REPLICA IDENTITY FULL: the whole old row (NULL kept), every column a key column, duplicates deleted one by one.
  const full = msgs.filter((m) => "relation" in m && m.relation.name === "full1") as (ChangeUpdate | ChangeDelete)[];
  expect(full[0].relation).toMatchObject({ replicaIdentity: "full", keyColumns: ["k", "v", "x"] });
  expect(full[3]).toMatchObject({ tag: "update", key: null, old: { k: "2", v: null, x: "1" }, new: { k: "2", v: "b", x: "1" } });
  expect(full[4]).toMatchObject({ tag: "delete", old: { k: "1", v: "a", x: "0" } });
  expect(full[5]).toMatchObject({ tag: "delete", old: { k: "1", v: "a", x: "0" } });

  // A row moving between partitions: DELETE from m1 + INSERT into m2, both applied to the root m.
  const moved = msgs.filter((m) => (m.tag === "insert" || m.tag === "delete") && m.relation.name === "m") as (ChangeInsert | ChangeDelete)[];
  expect(moved.map((m) => [m.tag, m.tag === "insert" ? m.new.at : m.key!.at])).toEqual([["insert", "2024-05-05"], ["delete", "2024-05-05"], ["insert", "2025-05-05"]]);
  const special = msgs.find((m) => m.tag === "insert" && m.relation.schema === "Sch. x") as ChangeInsert;
  expect(special.new).toEqual({ K: "7" });
});

maybe("probe: wal2json 2.5 loads but does not quote numbers; preflight's check of tables that cannot be read back by a key", async () => {
  expect(await probeWal2json(c)).toEqual({ available: true, numericAsString: false });
  expect((await c.query(`SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name LIKE 'pgferry_probe%'`)).rows[0].n).toBe(0);
  // full1 (REPLICA IDENTITY FULL) has a float8 column: its NaN could not be told from NULL.
  expect(unresolvableTables((await readWal2jsonTables(c, TABLES)).values())).toEqual(["public.full1"]);
});

maybe("probe on a server without wal2json names the missing plugin", async () => {
  const [plain] = await startServers(15);
  try {
    const pc = await plain.client();
    const p = await probeWal2json(pc);
    await pc.end();
    expect(p.available).toBe(false);
    expect(p.error).toMatch(/wal2json/);
  } finally {
    await plain.stop();
  }
}, 120000);
