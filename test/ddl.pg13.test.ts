/**
 * `start --ddl replicate` with a PostgreSQL 13 source (→ 17), both CDC modes: CREATE TABLE (its rows streamed, in stream
 * mode from its creation, in subscription mode through the cutover's refresh), ADD COLUMN, DROP COLUMN, CREATE INDEX,
 * interleaved with writes, then cutover (hashes) and target = source; nothing left on either side.
 * The 13 binaries come from scripts/fetch-pg13.sh (CI runs it); without them the test skips.
 */
import * as fs from "fs";
import * as path from "path";
import { LocalServer } from "../provider/embedded/localServer";
import { cutoverMigration, migrationOptions, parseEndpoint, startMigration, verifyMigration } from "../provider/engine";
import { ROOT, ensureBuilt } from "./support/build";
import { leftovers, startServerSet, Writer } from "./support/servers";
import { exited, killAgents, spawnAgent, until } from "./support/agents";

const binDir = process.env.PGFERRY_PG13_BIN ?? path.join(ROOT, ".cache/pg13/native/bin");
const have = fs.existsSync(path.join(binDir, "postgres"));
if (!have) {
  // eslint-disable-next-line no-console
  console.warn(`skipping the PostgreSQL 13 --ddl replicate tests: no binaries in ${binDir}; run scripts/fetch-pg13.sh (or set PGFERRY_PG13_BIN)`);
}

let src: LocalServer, tgt: LocalServer;

const cols = async (s: LocalServer, table: string, db: string) =>
  (await s.query(`SELECT attname || ' ' || format_type(atttypid, atttypmod) AS c FROM pg_attribute WHERE attrelid = to_regclass('${table}')
    AND attnum > 0 AND NOT attisdropped ORDER BY attnum`, db)).map((r) => r.c);
const pgferryObjects = async (s: LocalServer, db: string) => (await s.query(`SELECT 'event trigger ' || evtname AS o FROM pg_event_trigger
    WHERE evtname LIKE 'pgferry%' UNION ALL SELECT 'relation ' || relname FROM pg_class WHERE relname ~ '^ddl_(log|refused)_'
    UNION ALL SELECT 'function ' || proname FROM pg_proc WHERE proname LIKE 'ddl\\_%'`, db)).map((r) => r.o);

(have ? describe : describe.skip)("--ddl replicate with a PostgreSQL 13 source", () => {
  beforeAll(async () => {
    ensureBuilt();
    [src, tgt] = await startServerSet([{ major: 13, binDir }, { major: 17 }]);
    for (const db of ["ds", "dq"]) {
      await src.createDatabase(db); await tgt.createDatabase(db);
      await src.query(`CREATE TABLE acct (id int PRIMARY KEY, v text, n int); INSERT INTO acct SELECT g, 'v' || g, g FROM generate_series(1, 300) g`, db);
    }
  });
  afterAll(async () => { killAgents(); await src?.stop(); await tgt?.stop(); });

  test.each([["stream", "ds"], ["subscription", "dq"]] as ["stream" | "subscription", string][])("mode %s: CREATE TABLE, ADD/DROP COLUMN, CREATE INDEX interleaved with writes; cutover; target = source", async (mode, db) => {
    const source = parseEndpoint(src.uri(db), "source"), target = parseEndpoint(tgt.uri(db), "target");
    const name = `p13_${mode.slice(0, 3)}`;
    expect((await startMigration(source, target, migrationOptions({ name, mode, ddl: "replicate", jobs: 1 }))).phase).toBe("ReadyToCutover");
    const agent = mode === "stream" ? spawnAgent(["--name", name], { source: src.uri(db), target: tgt.uri(db) }) : undefined;
    const writer = new Writer(src.uri(db), (i) => `BEGIN; INSERT INTO acct (id, n) VALUES (${10000 + i}, ${i}); ` +
      `UPDATE acct SET n = n + 1 WHERE id = ${(i % 300) + 1}; DELETE FROM acct WHERE id = ${10000 + i - 2}; COMMIT`).start();
    const ddl = async (sql: string) => { await src.query(sql, db); await new Promise((r) => setTimeout(r, 30)); };
    await ddl(`CREATE TABLE newt (id int PRIMARY KEY, x text)`);
    await ddl(`INSERT INTO newt SELECT g, 'r' || g FROM generate_series(1, 100) g`);
    await ddl(`ALTER TABLE acct ADD COLUMN c int DEFAULT 3`);
    await ddl(`UPDATE acct SET c = id % 5 WHERE id % 2 = 0`);
    await ddl(`ALTER TABLE acct ADD COLUMN tmp text`);
    await ddl(`UPDATE acct SET tmp = 'x' WHERE id < 10`);
    await ddl(`ALTER TABLE acct DROP COLUMN tmp`);
    await ddl(`CREATE INDEX acct_c_idx ON acct (c)`);
    await ddl(`UPDATE newt SET x = 'u' WHERE id % 3 = 0`);
    await ddl(`DELETE FROM newt WHERE id % 7 = 0`);
    await until("the target to have the new table and columns", async () => (await cols(tgt, "public.acct", db)).join() === "id integer,v text,n integer,c integer" &&
      (await cols(tgt, "public.newt", db)).length === 2, 120000);
    const cut = await cutoverMigration(source, target, { name, freezeWrites: true, timeoutSec: 120, jobs: 1, verify: "hashes" });
    await writer.stop();
    expect(writer.errors).toEqual([]);
    expect(writer.transactions).toBeGreaterThan(0);
    expect(cut.phase).toBe("Completed");
    if (agent) expect(await exited(agent, "cutover while the agent runs")).toBe(0);
    for (const t of ["public.acct", "public.newt"]) expect(await cols(tgt, t, db)).toEqual(await cols(src, t, db));
    for (const t of ["acct", "newt"]) {
      const q = `SELECT count(*)::int AS n, md5(string_agg(x::text, ',' ORDER BY x::text)) AS h FROM ${t} x`;
      expect(await tgt.query(q, db)).toEqual(await src.query(q, db));
    }
    expect((await tgt.query(`SELECT count(*)::int AS n FROM newt`, db))[0].n).toBe(86);
    expect((await tgt.query(`SELECT indexname FROM pg_indexes WHERE indexname = 'acct_c_idx'`, db)).length).toBe(1);
    expect((await verifyMigration(source, target, { jobs: 1 })).problems).toEqual([]);
    expect(await pgferryObjects(src, db)).toEqual([]);
    expect(await pgferryObjects(tgt, db)).toEqual([]);
    expect(await leftovers(src, tgt, db)).toEqual([]);
  });
});
