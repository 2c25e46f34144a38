#!/usr/bin/env node
/**
 * Captures the committed decoder fixtures (test/fixtures/decoders/*.json) from a real server: Debian's
 * PostgreSQL 15 with wal2json (the same source the wal2json tests use). One workload covers every
 * message kind pgferry decodes, and the values that are easy to get wrong: unchanged TOAST, NaN and
 * ±Infinity, arrays, jsonb, bytea, enums (pgoutput type messages), generated columns, partitions
 * (published through the root), REPLICA IDENTITY FULL, key changes, odd identifiers, a replication
 * origin, TRUNCATE … CASCADE RESTART IDENTITY. Both plugins decode the same WAL: pgoutput bytes
 * (pg_logical_slot_peek_binary_changes, exactly the XLogData payloads) and wal2json text (with the
 * options the applier streams with), in sessions with the applier's GUCs.
 *
 * Run after `npm run build`: node scripts/capture-decoder-fixtures.js
 */
const fs = require("fs");
const path = require("path");
const { LocalServer } = require("../dist/provider/embedded/localServer");
const { readWal2jsonTables, wal2jsonOptions } = require("../dist/provider/engine/cdc/decoders/wal2json");
const { quoteLiteral, SESSION_GUCS } = require("../dist/provider/engine/core/endpoint");
const { Client } = require("pg");

const SYSTEM_PG15 = "/usr/lib/postgresql/15/bin";
const OUT = path.join(__dirname, "../test/fixtures/decoders");

const SCHEMA = `CREATE TYPE mood AS ENUM ('sad', 'happy');
  CREATE TABLE t (id int PRIMARY KEY, n numeric, f float8, r real, b bool, j jsonb, jn jsonb, arr int[], tarr text[], ts timestamptz,
    d date, raw bytea, m mood, iv interval, big text, g int GENERATED ALWAYS AS (id * 2) STORED);
  ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL;
  CREATE TABLE full1 (k int, v text, x float8); ALTER TABLE full1 REPLICA IDENTITY FULL;
  CREATE TABLE m (id int, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
  CREATE TABLE m1 PARTITION OF m FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
  CREATE TABLE m2 PARTITION OF m FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
  CREATE SCHEMA "Sch. x"; CREATE TABLE "Sch. x"."Tab, ü*" ("K" int PRIMARY KEY, "__proto__" text);
  CREATE TABLE parent (id serial PRIMARY KEY); CREATE TABLE child (id int PRIMARY KEY, pid int REFERENCES parent);
  CREATE TABLE empty_cols ();`;

/** The migrated tables (as wal2json names them: leaves), in publication order. */
const TABLES = [["public", "t"], ["public", "full1"], ["public", "m1"], ["public", "m2"], ["Sch. x", "Tab, ü*"], ["public", "parent"],
  ["public", "child"], ["public", "empty_cols"]].map(([schema, name]) => ({ schema, name }));

/** One source transaction per entry (statements separated by ;). */
const WORKLOAD = [
  `INSERT INTO t VALUES
    (1, 12345678901234567890.120, 'NaN', '-Infinity', true, '{"x": 12345678901234567890, "y": 2.50}', 'null', '{1,NULL}', '{a,"b c",NULL,"q\\"uote"}',
     '2024-01-01 00:00:00.123456+00', 'infinity', '\\x00ff', 'happy', '1 day 02:03:04.5', repeat('x', 5000)),
    (2, 'NaN', 'Infinity', 1.5, false, NULL, NULL, '{}', '{}', '-infinity', '2024-02-29', '\\x', 'sad', '-1 mon', 'small')`,
  `UPDATE t SET n = 1 WHERE id = 1`,                         // big (TOAST) unchanged: 'u'
  `UPDATE t SET id = 10 WHERE id = 1`,                       // key change: 'K' tuple, big unchanged
  `DELETE FROM t WHERE id = 2`,
  `INSERT INTO full1 VALUES (1, 'a', 0), (1, 'a', 0), (2, NULL, 1.5); UPDATE full1 SET v = 'b' WHERE k = 2; DELETE FROM full1 WHERE k = 1`,
  `INSERT INTO m VALUES (1, '2024-05-05'); UPDATE m SET at = '2025-05-05' WHERE id = 1`,   // moves between partitions: DELETE + INSERT
  `INSERT INTO "Sch. x"."Tab, ü*" VALUES (7, 'proto'), (8, NULL); UPDATE "Sch. x"."Tab, ü*" SET "__proto__" = 'x' WHERE "K" = 7`,
  `INSERT INTO parent VALUES (DEFAULT), (DEFAULT); INSERT INTO child VALUES (1, 1)`,
  `INSERT INTO empty_cols DEFAULT VALUES`,
  `TRUNCATE parent RESTART IDENTITY CASCADE`,                // pgoutput: one message naming parent and child, both flags
  `TRUNCATE m1`,
  `TRUNCATE t, full1`,
];

async function main() {
  const config = require("child_process").spawnSync(path.join(SYSTEM_PG15, "postgres"), ["--describe-config"], { encoding: "utf8" }).stdout ?? "";
  const settings = /^output_plugin_libraries\t/m.test(config) ? { output_plugin_libraries: "pgoutput, test_decoding, wal2json" } : undefined;
  const src = await LocalServer.start({ major: 15, binDir: SYSTEM_PG15, settings });
  const c = new Client({ connectionString: src.uri(), options: `${SESSION_GUCS} -c bytea_output=hex` });
  await c.connect();
  try {
    const version = (await c.query(`SELECT version()`)).rows[0].version;
    await c.query(SCHEMA);
    const list = TABLES.filter((t) => !/^m[12]$/.test(t.name)).concat([{ schema: "public", name: "m" }])
      .map((t) => `"${t.schema.replace(/"/g, '""')}"."${t.name.replace(/"/g, '""')}"`).join(", ");
    await c.query(`CREATE PUBLICATION pub FOR TABLE ${list} WITH (publish_via_partition_root = true)`);
    await c.query(`SELECT pg_create_logical_replication_slot('p', 'pgoutput'), pg_create_logical_replication_slot('w', 'wal2json')`);
    await c.query(`SELECT pg_replication_origin_create('elsewhere')`);
    for (const [n, sql] of WORKLOAD.entries()) {
      // The partition move comes "from elsewhere" (a replication origin): pgoutput sends an origin message.
      if (n === 5) await c.query(`SELECT pg_replication_origin_session_setup('elsewhere')`);
      await c.query(`BEGIN; ${sql}; COMMIT`).catch((e) => { throw new Error(`${e.message} in: ${sql}`); });
      if (n === 5) await c.query(`SELECT pg_replication_origin_session_reset()`);
    }
    const pgoutput = (await c.query(`SELECT lsn::text, xid::text, encode(data, 'hex') AS data
      FROM pg_logical_slot_peek_binary_changes('p', NULL, NULL, 'proto_version', '1', 'publication_names', 'pub')`)).rows;
    const opts = wal2jsonOptions(TABLES, false);
    const wal2json = (await c.query(`SELECT lsn::text, xid::text, data
      FROM pg_logical_slot_peek_changes('w', NULL, NULL ${opts.map(([k, v]) => `, ${quoteLiteral(k)}, ${quoteLiteral(v)}`).join("")})`)).rows;
    const tables = [...(await readWal2jsonTables(c, TABLES)).values()].map((t) => ({ ...t, generated: [...t.generated] }));
    const common = { capturedWith: "scripts/capture-decoder-fixtures.js", server: version, schema: SCHEMA, workload: WORKLOAD };
    fs.mkdirSync(OUT, { recursive: true });
    fs.writeFileSync(path.join(OUT, "pgoutput.json"), JSON.stringify({ ...common, plugin: "pgoutput",
      options: { proto_version: "1", publication_names: "pub" }, messages: pgoutput }, null, 1) + "\n");
    fs.writeFileSync(path.join(OUT, "wal2json.json"), JSON.stringify({ ...common, plugin: "wal2json",
      wal2json: require("child_process").spawnSync("dpkg-query", ["-W", "-f=${Version}", "postgresql-15-wal2json"], { encoding: "utf8" }).stdout || "unknown",
      options: Object.fromEntries(opts), tables, messages: wal2json }, null, 1) + "\n");
    console.log(`pgoutput: ${pgoutput.length} messages, wal2json: ${wal2json.length} messages`);
    await c.query(`SELECT pg_drop_replication_slot('p'), pg_drop_replication_slot('w')`);
  } finally {
    await c.end();
    await src.stop();
  }
}
main().catch((e) => { console.error(e); process.exit(1); });
