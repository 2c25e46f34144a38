/**
 * `--ddl replicate` carries `ALTER TABLE … ADD COLUMN` with a default that is not immutable — now(), clock_timestamp(),
 * random(), gen_random_uuid(), md5(random()…), nextval() of a shared sequence, serial/bigserial, identity ALWAYS and BY
 * DEFAULT — in both CDC modes, on real servers (source 15, target 17), while writes run: the capture backfills the table
 * in the DDL's transaction (its UPDATEs stream right after the statement) and writes an after-backfill row (identity
 * ALWAYS and the owned sequences' position). Afterwards the target holds the source's values in every existing row,
 * the same column definitions (default, identity, NOT NULL), later inserts replicate, a cutover (--freeze-writes,
 * --verify hashes) completes and the target equals the source (engine verify, ../shared verify.sh when present),
 * sequences not behind. Tables: keyed, keyed by an identity ALWAYS column, partitioned. Stream mode also: kill -9 of the
 * agent between the DDL and the backfill's changes, then a re-run converges. (Refusal for a key-less FULL table:
 * test/ddl.stream.test.ts; the PL/pgSQL judge: test/ddl.subscription.test.ts.)
 */
import { Client } from "pg";
import { LocalServer } from "../provider/embedded/localServer";
import { cutoverMigration, migrationOptions, parseEndpoint, startMigration, verifyMigration } from "../provider/engine";
import { leftovers, moreWrites, runVerifySh, startServers, Writer } from "./support/servers";
import { ensureBuilt } from "./support/build";
import { exited, killAgents, spawnAgent, until } from "./support/agents";
import { captureSql, captureUndoSql } from "../provider/engine/cdc/ddl/capture";

let src: LocalServer, tgt: LocalServer;

const SCHEMA = `CREATE TABLE acct (id int PRIMARY KEY, v text, n int);
  INSERT INTO acct SELECT g, 'v' || g, g FROM generate_series(1, 1500) g;
  CREATE SEQUENCE shared_seq START 100;
  CREATE TABLE ev (id bigint PRIMARY KEY, note text);
  INSERT INTO ev SELECT g, 'e' || g FROM generate_series(1, 300) g;
  CREATE TABLE idt (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);
  INSERT INTO idt (v) SELECT 'i' || g FROM generate_series(1, 200) g;
  CREATE TABLE parts (id int, region int, v text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
  CREATE TABLE parts_a PARTITION OF parts FOR VALUES IN (1);
  CREATE TABLE parts_b PARTITION OF parts FOR VALUES IN (2);
  INSERT INTO parts SELECT g, 1 + g % 2, 'p' || g FROM generate_series(1, 400) g;
  CREATE TABLE audit (id serial PRIMARY KEY, what text);
  CREATE FUNCTION audit_fn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit (what) VALUES (TG_OP || ' ' || TG_TABLE_NAME); RETURN NEW; END $$;
  CREATE TRIGGER idt_audit AFTER UPDATE ON idt FOR EACH ROW EXECUTE FUNCTION audit_fn();
  CREATE FUNCTION rnd_text(n int) RETURNS text LANGUAGE sql VOLATILE AS $$ SELECT string_agg(md5(random()::text), '') FROM generate_series(1, n) $$;
  CREATE TABLE big (id int PRIMARY KEY, v text);
  INSERT INTO big SELECT g, 'b' || g FROM generate_series(1, 3000) g;`;

beforeAll(async () => {
  ensureBuilt();
  [src, tgt] = await startServers(15, 17);
  for (const db of ["vs", "vn"]) { await src.createDatabase(db); await tgt.createDatabase(db); await src.query(SCHEMA, db); }
  await src.createDatabase("vc");
});
afterAll(async () => {
  killAgents();
  await src?.stop(); await tgt?.stop();
});

/** Every column's definition: type, NOT NULL, identity, default expression. */
const columns = async (s: LocalServer, db: string) => (await s.query(`SELECT c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
    || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END || ' identity=' || a.attidentity::text || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') AS c
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1`, db)).map((r) => r.c);
/** Every row of a table, as text, in key order. */
const rows = async (s: LocalServer, db: string, table: string, key = "id") =>
  (await s.query(`SELECT count(*)::int AS n, md5(string_agg(x::text, ',' ORDER BY ${key})) AS h FROM ${table} x`, db))[0];
/** Each sequence's position (of the public schema: the owned ones serial and identity made too). */
const sequences = async (s: LocalServer, db: string) => Object.fromEntries((await s.query(`SELECT schemaname || '.' || sequencename AS s,
  coalesce(last_value, 0)::text AS v FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1`, db)).map((r) => [r.s, BigInt(r.v)]));

const VOLATILE_DDL = [
  `ALTER TABLE acct ADD COLUMN created timestamptz DEFAULT now()`,
  `ALTER TABLE acct ADD COLUMN r float8 DEFAULT random()`,
  `ALTER TABLE acct ADD COLUMN s bigserial`,
  `ALTER TABLE acct ADD COLUMN ia int GENERATED ALWAYS AS IDENTITY`,
  `ALTER TABLE acct ADD COLUMN ib bigint GENERATED BY DEFAULT AS IDENTITY (START WITH 1000)`,
  `ALTER TABLE acct ADD COLUMN u uuid NOT NULL DEFAULT gen_random_uuid()`,
  `ALTER TABLE ev ADD COLUMN seq_n bigint DEFAULT nextval('shared_seq'), ADD COLUMN ct timestamptz DEFAULT clock_timestamp()`,
  `ALTER TABLE idt ADD COLUMN tag text DEFAULT md5(random()::text)`,
  // 3,200 random hex digits: not compressible enough, so stored out of line (TOAST).
  `ALTER TABLE idt ADD COLUMN blob text DEFAULT rnd_text(100)`,
  `ALTER TABLE parts ADD COLUMN p_ts timestamptz DEFAULT clock_timestamp(), ADD COLUMN p_s serial`,
];

async function scenario(db: string, mode: "stream" | "subscription"): Promise<void> {
  const name = `v${mode[0]}`;
  const source = parseEndpoint(src.uri(db), "source"), target = parseEndpoint(tgt.uri(db), "target");
  const started = await startMigration(source, target, migrationOptions({ name, mode, ddl: "replicate", jobs: 2 }))
    .catch((e) => { throw new Error(`${e.message}: ${JSON.stringify(e.findings)}`); });
  expect(started.phase).toBe("ReadyToCutover");
  const agent = mode === "stream" ? spawnAgent(["--name", name], { source: src.uri(db), target: tgt.uri(db) }) : undefined;
  // Writes on every table while the columns are added; inserts name no new column (the source computes them, the stream carries them).
  const writer = new Writer(src.uri(db), (i) => `BEGIN; INSERT INTO acct (id, n) VALUES (${100000 + i}, ${i}); ` +
    `UPDATE acct SET n = n + 1 WHERE id = ${(i % 1500) + 1}; DELETE FROM acct WHERE id = ${100000 + i - 3}; ` +
    `INSERT INTO ev (id, note) VALUES (${100000 + i}, 'w'); UPDATE ev SET note = note || '.' WHERE id = ${(i % 300) + 1}; ` +
    `INSERT INTO idt (v) VALUES ('w${i}'); INSERT INTO parts (id, region, v) VALUES (${100000 + i}, ${1 + (i % 2)}, 'w'); COMMIT`).start();
  for (const sql of VOLATILE_DDL) {
    await src.query(sql, db);
    await moreWrites(writer, 5);
  }
  // In a transaction with writes around it.
  const c = await src.client(db);
  for (const q of ["BEGIN", `INSERT INTO ev (id, note) VALUES (-1, 'before')`, `ALTER TABLE ev ADD COLUMN ev_s serial`, `UPDATE ev SET note = 'after' WHERE id = 1`, "COMMIT"]) await c.query(q);
  await c.end();
  await moreWrites(writer, 20);

  if (agent) {
    // kill -9 between the DDL and the backfill's changes: on the target, an ENABLE ALWAYS trigger (it fires under the applier's
    // session_replication_role = replica) makes the backfill's first UPDATE of `big` wait for a lock this session holds, after the
    // agent ran the ALTER in its open transaction.
    await tgt.query(`CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN NEW; END $$;
      CREATE TRIGGER hold BEFORE UPDATE ON big FOR EACH ROW EXECUTE FUNCTION hold(); ALTER TABLE big ENABLE ALWAYS TRIGGER hold`, db);
    const lock = new Client({ connectionString: tgt.uri(db) });
    lock.on("error", () => undefined); // a failed assertion leaves it open until the servers stop
    await lock.connect();
    await lock.query(`SELECT pg_advisory_lock(4242)`);
    await src.query(`ALTER TABLE big ADD COLUMN bs bigserial`, db);
    await until("the agent to have run the ALTER and to wait in the backfill's UPDATE", async () => (await tgt.query(`
      SELECT count(*)::int AS n FROM pg_stat_activity a WHERE a.application_name = 'pgferry stream' AND a.wait_event = 'advisory'
        AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.relation = 'big'::regclass AND l.mode = 'AccessExclusiveLock' AND l.granted)`,
    db))[0].n === 1, 120000).catch((e) => { throw new Error(`${(e as Error).message}; agent log: ${agent.log().slice(-3000)}`); });
    agent.proc.kill("SIGKILL");
    await exited(agent, "kill -9 between the DDL and its backfill");
    await lock.query(`SELECT pg_advisory_unlock(4242)`);
    await lock.end();
    await until("the killed agent's target session to end", async () =>
      (await tgt.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'pgferry stream'`, db))[0].n === 0, 60000);
    // Nothing of that source transaction is on the target: the ALTER was rolled back with the agent's transaction.
    expect((await columns(tgt, db)).filter((c) => c.startsWith("big.bs"))).toEqual([]);
    await tgt.query(`DROP TRIGGER hold ON big; DROP FUNCTION hold()`, db);
    const again = spawnAgent(["--name", name], { source: src.uri(db), target: tgt.uri(db) });
    await until("the re-run to apply the DDL and its backfill", async () => (await columns(tgt, db)).some((c) => c.startsWith("big.bs")), 120000);
    await until("big's values to equal the source's", async () => JSON.stringify(await rows(tgt, db, "big")) === JSON.stringify(await rows(src, db, "big")), 120000);
    await src.query(`INSERT INTO big (id, v) VALUES (5001, 'after')`, db);
    const cut = await cutoverMigration(source, target, { name, freezeWrites: true, timeoutSec: 180, jobs: 2, verify: "hashes" });
    await writer.stop();
    expect(cut.phase).toBe("Completed");
    expect(await exited(again, "cutover while the agent runs")).toBe(0);
  } else {
    await src.query(`ALTER TABLE big ADD COLUMN bs bigserial`, db);
    await src.query(`INSERT INTO big (id, v) VALUES (5001, 'after')`, db);
    const cut = await cutoverMigration(source, target, { name, freezeWrites: true, timeoutSec: 180, jobs: 2, verify: "hashes" });
    await writer.stop();
    expect(cut.phase).toBe("Completed");
  }
  expect(writer.errors).toEqual([]);
  expect(writer.transactions).toBeGreaterThan(50);

  // The same columns (type, NOT NULL, identity, default), the source's values in every row (existing ones and later inserts).
  const srcCols = await columns(src, db);
  expect(srcCols).toEqual(expect.arrayContaining([expect.stringMatching(/^acct\.ia integer not null identity=a default=$/),
    expect.stringMatching(/^acct\.s bigint not null identity= default=nextval\('acct_s_seq'::regclass\)$/), expect.stringMatching(/^big\.bs /)]));
  expect(await columns(tgt, db)).toEqual(srcCols);
  for (const [table, key] of [["acct", "id"], ["ev", "id"], ["idt", "id"], ["parts", "id, region"], ["big", "id"]]) {
    expect(await rows(tgt, db, table, key)).toEqual(await rows(src, db, table, key));
  }
  // The values are the source's, not computed again: one now() for the existing rows, distinct random()/uuid/serial values.
  const shape = `SELECT count(DISTINCT created)::int AS created, count(DISTINCT r)::int AS r, count(DISTINCT s)::int AS s, count(DISTINCT ia)::int AS ia,
    min(ib)::int AS ib, count(DISTINCT u)::int AS u FROM acct WHERE id <= 1500`;
  expect(await tgt.query(shape, db)).toEqual(await src.query(shape, db));
  const blobs = `SELECT count(DISTINCT blob)::int AS n, md5(string_agg(blob, ',' ORDER BY id)) AS h FROM idt`;
  expect((await src.query(blobs, db))[0].n).toBeGreaterThan(200);
  expect(await tgt.query(blobs, db)).toEqual(await src.query(blobs, db));
  // Later inserts replicated with their source values (identity ALWAYS included).
  expect((await tgt.query(`SELECT count(*)::int AS n FROM acct WHERE id > 100000 AND ia IS NOT NULL AND u IS NOT NULL`, db))[0].n).toBeGreaterThan(0);
  // Sequences not behind (the owned ones of serial and identity too).
  const [ss, ts] = [await sequences(src, db), await sequences(tgt, db)];
  expect(Object.keys(ts)).toEqual(Object.keys(ss));
  for (const k of Object.keys(ss)) expect({ k, behind: ts[k] < ss[k] }).toEqual({ k, behind: false });
  // The backfill ran under session_replication_role = replica: the source's own trigger on idt (the writer only inserts there) never fired.
  expect(await src.query(`SELECT count(*)::int AS n FROM audit`, db)).toEqual([{ n: 0 }]);
  const report = await verifyMigration(source, target, { jobs: 2 });
  expect(report.problems).toEqual([]);
  const sh = runVerifySh(src.uri(db), tgt.uri(db), ["public"]);
  if (sh) expect(sh).toMatchObject({ code: 0 });
  // A later insert on the target (the application after the cutover) takes new values: nothing collides.
  await tgt.query(`INSERT INTO acct (id, n) VALUES (900001, 1); INSERT INTO idt (v) VALUES ('post'); INSERT INTO big (id, v) VALUES (900001, 'post');
    INSERT INTO parts (id, region) VALUES (900001, 1); INSERT INTO ev (id) VALUES (900001)`, db);
  const fresh = `SELECT (SELECT s > (SELECT max(s) FROM acct WHERE id <> 900001) AND ia > (SELECT max(ia) FROM acct WHERE id <> 900001) FROM acct WHERE id = 900001) AS acct,
    (SELECT bs > (SELECT max(bs) FROM big WHERE id <> 900001) FROM big WHERE id = 900001) AS big,
    (SELECT ev_s > (SELECT max(ev_s) FROM ev WHERE id <> 900001) FROM ev WHERE id = 900001) AS ev`;
  expect((await tgt.query(fresh, db))[0]).toEqual({ acct: true, big: true, ev: true });
  expect(await leftovers(src, tgt, db)).toEqual([]);
}

test("stream: ADD COLUMN with now(), random(), serial, identity, gen_random_uuid(), nextval() under writes; kill -9 between the DDL and its backfill; cutover; target = source",
  () => scenario("vs", "stream"));

test("subscription: ADD COLUMN with now(), random(), serial, identity, gen_random_uuid(), nextval() under writes; cutover; target = source",
  () => scenario("vn", "subscription"));

test("capture: what it backfills (once, columns the statement adds, identity too, in a subtransaction too) and why it does not", async () => {
  const db = "vc";
  await src.query(`CREATE TABLE k (id int PRIMARY KEY, v text); INSERT INTO k SELECT g, 'k' FROM generate_series(1, 20) g;
    CREATE TABLE full_t (a int, b text); ALTER TABLE full_t REPLICA IDENTITY FULL; INSERT INTO full_t VALUES (1, 'x');
    CREATE TABLE nothing_t (id int PRIMARY KEY); ALTER TABLE nothing_t REPLICA IDENTITY NOTHING; INSERT INTO nothing_t VALUES (1);
    CREATE TABLE pk_less_part (id int, r int) PARTITION BY LIST (r); CREATE TABLE pk_less_part_1 PARTITION OF pk_less_part FOR VALUES IN (1);
    INSERT INTO pk_less_part VALUES (1, 1);
    CREATE TABLE chk (id int PRIMARY KEY, n int); INSERT INTO chk VALUES (1, -1); ALTER TABLE chk ADD CONSTRAINT pos CHECK (n > 0) NOT VALID;
    CREATE TABLE outside (id int PRIMARY KEY); INSERT INTO outside VALUES (1);
    CREATE TABLE left_out (id int PRIMARY KEY); INSERT INTO left_out VALUES (1);
    CREATE TABLE by_index (a int NOT NULL, b text); CREATE UNIQUE INDEX by_index_a ON by_index (a); ALTER TABLE by_index REPLICA IDENTITY USING INDEX by_index_a;
    INSERT INTO by_index VALUES (1, 'x');
    CREATE PUBLICATION vc_pub FOR TABLE k, full_t, nothing_t, pk_less_part, chk, by_index;`, db);
  const c = await src.client(db);
  try {
    for (const sql of captureSql("vc", ["public"], "vc_pub")) await c.query(sql);
    const log = async () => (await c.query(`SELECT payload::jsonb AS p FROM pgferry.ddl_log_vc ORDER BY id`)).rows.map((r) => r.p);
    const last = async (sql: string) => { const before = (await log()).length; await c.query(sql); return (await log()).slice(before); };
    const reasonOf = async (sql: string) => { const rows = await last(sql); expect(rows).toHaveLength(1); return (rows[0].volatile as { reason: string }[]).map((v) => v.reason).join(); };

    // Carried: the statement's row (the columns it adds, identity included), the backfill, then the after-backfill row.
    let rows = await last(`ALTER TABLE k ADD COLUMN s bigserial, ADD COLUMN i int GENERATED ALWAYS AS IDENTITY, ADD COLUMN t timestamptz DEFAULT now()`);
    expect(rows.map((r) => r.kind ?? "ddl")).toEqual(["ddl", "after-backfill"]);
    expect(rows[0].volatile).toEqual([{ table: "public.k", oid: expect.any(String), columns: ["s", "i", "t"], always: ["i"], setColumn: "id", rewrite: [], reason: null }]);
    expect(rows[1]).toMatchObject({ table: "public.k", always: ["i"], error: null,
      sequences: [{ column: "s", lastValue: "20", isCalled: true }, { column: "i", lastValue: "20", isCalled: true }] });
    // A later statement of the same transaction does not backfill again; an ALTER COLUMN TYPE of the serial column is no new column.
    await c.query("BEGIN");
    await c.query(`SAVEPOINT a`);
    rows = await last(`ALTER TABLE k ADD COLUMN u uuid DEFAULT gen_random_uuid()`); // in a subtransaction: found too
    expect(rows.map((r) => r.kind ?? "ddl")).toEqual(["ddl", "after-backfill"]);
    await c.query(`RELEASE a`);
    rows = await last(`CREATE INDEX k_u ON k (u)`);
    expect(rows.map((r) => r.kind ?? "ddl")).toEqual(["ddl"]);
    await c.query("COMMIT");
    // A variable-length column is written anew by the backfill (a value stored out of line is sent in full only then).
    rows = await last(`ALTER TABLE k ADD COLUMN w varchar(5000) DEFAULT repeat(md5(random()::text), 40)`);
    expect(rows[0].volatile).toMatchObject([{ columns: ["w"], rewrite: [{ column: "w", type: "character varying(5000)" }], reason: null }]);
    expect(rows[1]).toMatchObject({ kind: "after-backfill", error: null });
    rows = await last(`ALTER TABLE k ALTER COLUMN s TYPE bigint`);
    expect(rows.map((r) => r.volatile)).toEqual([[]]);

    // REPLICA IDENTITY USING INDEX is a key too: its column is the one set to itself.
    rows = await last(`ALTER TABLE by_index ADD COLUMN t timestamptz DEFAULT now()`);
    expect(rows[0].volatile).toMatchObject([{ table: "public.by_index", setColumn: "a", reason: null }]);
    // A new table's serial column has no rows to backfill.
    rows = await last(`CREATE TABLE fresh (id serial PRIMARY KEY, t timestamptz DEFAULT now())`);
    expect(rows.map((r) => [r.kind ?? "ddl", r.volatile])).toEqual([["ddl", []]]);
    // Not carried, each with the reason the applier names.
    expect(await reasonOf(`ALTER TABLE full_t ADD COLUMN t timestamptz DEFAULT now()`)).toMatch(/public\.full_t has no key .*REPLICA IDENTITY FULL/);
    expect(await reasonOf(`ALTER TABLE nothing_t ADD COLUMN r float8 DEFAULT random()`)).toMatch(/public\.nothing_t has no key/);
    expect(await reasonOf(`ALTER TABLE pk_less_part ADD COLUMN t timestamptz DEFAULT clock_timestamp()`)).toMatch(/pk_less_part(_1)?.* has no key/);
    expect(await reasonOf(`ALTER TABLE k ADD COLUMN n serial UNIQUE`)).toMatch(/unique index/);
    expect(await reasonOf(`ALTER TABLE outside ADD COLUMN t timestamptz DEFAULT now()`)).toMatch(/not in the migration's publication/);
    // A table the migration leaves out (start records its exclusion plan in pgferry.ddl_left_out_<name>): not on the target,
    // so nothing to backfill or replay.
    await c.query(`INSERT INTO pgferry.ddl_left_out_vc SELECT 'left_out'::regclass`);
    rows = await last(`ALTER TABLE left_out ADD COLUMN t timestamptz DEFAULT now()`);
    expect(rows.map((r) => [r.kind ?? "ddl", r.volatile, r.selection])).toEqual([["ddl", [], { action: "skip", tables: ["public.left_out"], created: [] }]]);
    // A backfill the source's rows refuse does not fail the user's DDL: the error goes to the after-backfill row.
    rows = await last(`ALTER TABLE chk ADD COLUMN t timestamptz DEFAULT now()`);
    expect(rows[1]).toMatchObject({ kind: "after-backfill", error: expect.stringMatching(/check constraint "pos"/) });
    expect((await c.query(`SELECT count(*)::int AS n FROM chk WHERE t IS NOT NULL`)).rows[0].n).toBe(1);
  } finally {
    await c.query(`ROLLBACK`).catch(() => undefined);
    await c.query(captureUndoSql("vc"));
    await c.query(`DROP PUBLICATION vc_pub`);
    await c.end();
  }
});
