/**
 * What the cutover's freeze no longer holds, or holds in one round trip.
 *
 * Foreign keys are added and validated while streaming (PostgreSQL 15 → 17, both CDC modes), so the cutover's
 * freeze holds none of that work:
 *  - after start, every key of the source is on the target, validated where the source validated it, NOT VALID
 *    where the source has it NOT VALID, with its comment;
 *  - changes the keys would refuse if their triggers fired — a child applied before its parent in one source
 *    transaction, deferred circular keys, a parent deleted after its child — are applied by both apply paths
 *    (session_replication_role = replica), and the cutover completes with a passing full verification;
 *  - resumable: a start killed after its first key resumes the rest on re-run; a start killed before any key
 *    leaves them to the cutover, which adds them while writes still flow.
 * Sequences are read in one source statement and set in one target statement: every kind comes out exactly
 * (is_called false after setval(…, false), descending, identity, quoted names, unowned).
 */
import { Client } from "pg";
import { LocalServer } from "../provider/embedded/localServer";
import {
  abortCutover, cleanupMigration, cutoverMigration, migrationOptions, parseEndpoint, PgferryError, startMigration, verifyMigration,
} from "../provider/engine";
import { ensureBuilt } from "./support/build";
import { leftovers, startServers } from "./support/servers";
import { until } from "./support/until";

let src: LocalServer, tgt: LocalServer;
const MODES = ["subscription", "stream"] as const;

beforeAll(async () => {
  ensureBuilt();
  [src, tgt] = await startServers(15, 17);
});
afterAll(async () => { await src?.stop(); await tgt?.stop(); });

async function makeDb(db: string) {
  await src.createDatabase(db);
  await tgt.createDatabase(db);
  await src.query(`
    CREATE TABLE parent (id int PRIMARY KEY, v text);
    CREATE TABLE child (id int PRIMARY KEY, p int NOT NULL CONSTRAINT child_p_fkey REFERENCES parent ON DELETE CASCADE, v text);
    COMMENT ON CONSTRAINT child_p_fkey ON child IS 'each child has a parent';
    CREATE TABLE a (id int PRIMARY KEY, b int);
    CREATE TABLE b (id int PRIMARY KEY, a int REFERENCES a DEFERRABLE INITIALLY DEFERRED);
    ALTER TABLE a ADD CONSTRAINT a_b_fkey FOREIGN KEY (b) REFERENCES b DEFERRABLE INITIALLY DEFERRED;
    CREATE TABLE loose (id int PRIMARY KEY, p int);
    INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 100) g;
    INSERT INTO child SELECT g, 1 + g % 100, 'c' || g FROM generate_series(1, 1000) g;
    BEGIN; INSERT INTO a VALUES (1, 1); INSERT INTO b VALUES (1, 1); COMMIT;
    INSERT INTO loose VALUES (1, 1), (2, 999);
    ALTER TABLE loose ADD CONSTRAINT loose_p_fkey FOREIGN KEY (p) REFERENCES parent NOT VALID;
    CREATE TABLE ident (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY);
    INSERT INTO ident DEFAULT VALUES; INSERT INTO ident DEFAULT VALUES;
    CREATE SCHEMA "Odd Schema";
    CREATE SEQUENCE "Odd Schema"."Mixed Seq" START 7;
    CREATE SEQUENCE down_seq INCREMENT BY -3 START 1000 MAXVALUE 1000;
    SELECT nextval('down_seq') FROM generate_series(1, 4);
    CREATE SEQUENCE not_called_seq;
    SELECT setval('not_called_seq', 500, false);`, db);
  return { source: parseEndpoint(src.uri(db), "source"), target: parseEndpoint(tgt.uri(db), "target") };
}

const SEQS = `SELECT format('%I.%I', schemaname, sequencename) AS s FROM pg_sequences WHERE schemaname <> 'pgferry' ORDER BY 1`;
/** last_value and is_called of every sequence, read from the sequence itself (pg_sequences hides is_called). */
async function sequenceStates(server: LocalServer, db: string): Promise<string[]> {
  const names = (await server.query(SEQS, db)).map((x) => x.s as string);
  const out: string[] = [];
  for (const n of names) out.push(`${n} ${JSON.stringify((await server.query(`SELECT last_value::text AS v, is_called AS c FROM ${n}`, db))[0])}`);
  return out;
}

const FKS = `SELECT conrelid::regclass::text || '.' || conname AS k, convalidated AS valid, obj_description(oid, 'pg_constraint') AS comment
  FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace ORDER BY 1`;

/** Writes the keys would refuse, were their triggers to fire on the target in apply order. */
async function orderHazards(db: string): Promise<void> {
  const c = new Client({ connectionString: src.uri(db) });
  await c.connect();
  try {
    // Circular deferred keys: a's row is applied before the b row it references exists.
    await c.query(`BEGIN; INSERT INTO a VALUES (2, 2); INSERT INTO b VALUES (2, 2); COMMIT`);
    await c.query(`BEGIN; INSERT INTO parent VALUES (1001, 'late'); INSERT INTO child VALUES (5001, 1001, 'x'); COMMIT`);
    await c.query(`UPDATE child SET p = 1001 WHERE id BETWEEN 1 AND 50`);
    await c.query(`DELETE FROM parent WHERE id = 2`); // cascades to its children on the source; both deletes replicate
  } finally {
    await c.end();
  }
}

test.each(MODES)("mode %s: start adds and validates every key while streaming; the cutover has none to add", async (mode) => {
  const db = `fk_${mode}`;
  const { source, target } = await makeDb(db);
  const started = await startMigration(source, target, migrationOptions({ name: db, mode, jobs: 2 }));
  expect(started.phase).toBe("ReadyToCutover");
  expect(started.foreignKeys).toEqual({ applied: 7, deferred: [] }); // 4 keys added, 3 validated (loose_p_fkey stays NOT VALID, as on the source)
  const onSource = await src.query(FKS, db);
  expect(onSource).toEqual([
    { k: "a.a_b_fkey", valid: true, comment: null }, { k: "b.b_a_fkey", valid: true, comment: null },
    { k: "child.child_p_fkey", valid: true, comment: "each child has a parent" }, { k: "loose.loose_p_fkey", valid: false, comment: null }]);
  // While streaming, before any cutover: the target has them all, exactly as the source.
  expect(await tgt.query(FKS, db)).toEqual(onSource);

  await orderHazards(db);
  await src.query(`SELECT nextval('"Odd Schema"."Mixed Seq"'); INSERT INTO ident DEFAULT VALUES; SELECT setval('not_called_seq', 600, false)`, db);
  const cut = await cutoverMigration(source, target, { name: db, freezeWrites: true, timeoutSec: 120, jobs: 2, graceSec: 1 });
  expect(cut.phase).toBe("Completed");
  const seqs = await sequenceStates(src, db);
  expect(seqs).toEqual(expect.arrayContaining(['"Odd Schema"."Mixed Seq" {"v":"7","c":true}', 'public.down_seq {"v":"991","c":true}',
    'public.not_called_seq {"v":"600","c":false}', 'public.ident_id_seq {"v":"3","c":true}']));
  expect(cut.sequencesSynced).toBe(seqs.length);
  expect(await sequenceStates(tgt, db)).toEqual(seqs);
  expect(cut.heldBackApplied).toBe(0); // nothing held back: the freeze window added no key
  const report = await verifyMigration(source, target);
  expect(report.problems).toEqual([]);
  expect(await tgt.query(`SELECT count(*)::int AS n FROM child WHERE p = 1001`, db)).toEqual([{ n: 51 }]);
  expect(await tgt.query(FKS, db)).toEqual(onSource);
  // Row counts go in batches (one statement per side for many tables): a difference is still named on its own table.
  await tgt.query(`DELETE FROM loose WHERE id = 2`, db);
  const counts = await verifyMigration(source, target, { hashes: false });
  expect(counts.problems).toEqual(["public.loose: 2 rows on source, 1 on target"]);
  expect(counts.tables.filter((t) => t.ok).map((t) => `${t.table} ${t.sourceRows}`).sort()).toEqual(
    ["public.a 2", "public.b 2", "public.child 992", "public.ident 3", "public.parent 100"]);
  await cleanupMigration(source, target, db);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});

test("a start killed after its first key resumes the rest on re-run; one killed before any leaves them to the cutover, added before the freeze", async () => {
  for (const [point, db] of [["foreign-key-added", "fk_resume"], ["foreign-keys", "fk_cutover"]] as const) {
    const { source, target } = await makeDb(db);
    process.env.PGFERRY_TEST_FAIL_AT = point;
    try {
      await expect(startMigration(source, target, migrationOptions({ name: db, mode: "subscription", jobs: 2 }))).rejects.toThrow(/injected failure/);
    } finally {
      delete process.env.PGFERRY_TEST_FAIL_AT;
    }
    const added = await tgt.query(FKS, db);
    expect(added.length).toBe(point === "foreign-key-added" ? 1 : 0);
    const applied = async () => (await tgt.query(`SELECT count(*)::int AS n FROM pgferry.schema_entry WHERE migration = '${db}' AND section = 'cutover' AND applied`,
      db))[0].n;
    if (point === "foreign-key-added") {
      const again = await startMigration(source, target, migrationOptions({ name: db, mode: "subscription", jobs: 2 }));
      expect(again).toMatchObject({ alreadyRunning: true, phase: "ReadyToCutover", foreignKeys: { applied: 6, deferred: [] } });
      expect(await applied()).toBe(7);
    } else {
      expect(await applied()).toBe(0);
    }
    await orderHazards(db);
    const cut = await cutoverMigration(source, target, { name: db, freezeWrites: true, timeoutSec: 120, jobs: 2, graceSec: 1 });
    expect(cut.heldBackApplied).toBe(0);
    expect((await verifyMigration(source, target)).problems).toEqual([]);
    expect(await tgt.query(FKS, db)).toEqual(await src.query(FKS, db));
    await cleanupMigration(source, target, db);
    expect(await leftovers(src, tgt, db)).toEqual([]);
  }
});

/**
 * The gate's pre-check (made while streaming) is not trusted for a table changed after it: a change the target
 * lost after the pre-check — an UPDATE made while the table was out of the publication, so no consumer ever sees
 * it — still fails the gate, naming that table and only it; a replicated change after the pre-check passes. A
 * cutover that passes compares the unchanged tables once, while streaming.
 */
test.each(MODES)("mode %s: a change lost after the gate's pre-check still fails the gate; unchanged tables are not read again at the fence", async (mode) => {
  const db = `pre_${mode}`;
  const { source, target } = await makeDb(db);
  expect((await startMigration(source, target, migrationOptions({ name: db, mode, jobs: 2 }))).phase).toBe("ReadyToCutover");
  // Changed during CDC, so the pre-check hashes it (and its hash would be reused at the fence were the change below not seen).
  await src.query(`INSERT INTO child VALUES (9001, 3, 'during CDC')`, db);
  // Settled before the cutover (a subscription's apply worker reports its statistics up to a second later): a table
  // still moving when the pre-check starts is left to the fence, and this one must be hashed by the pre-check.
  const inserted = async (server: LocalServer) => (await server.query(`SELECT n_tup_ins::int AS n FROM pg_stat_user_tables WHERE relname = 'child'`, db))[0]?.n >= 1001;
  await until("the insert in the statistics", async () => await inserted(src) && (mode === "stream" || await inserted(tgt)));
  const afterPreCheck = async (step: string) => {
    if (step !== "warm-up") return;
    await src.query(`UPDATE loose SET p = 1 WHERE id = 2`, db); // replicated: fine
    await src.query(`ALTER PUBLICATION pgferry_${db} DROP TABLE child`, db);
    await src.query(`UPDATE child SET v = 'lost' WHERE id = 9001`, db); // count unchanged; never decoded for the consumer: lost
    await src.query(`ALTER PUBLICATION pgferry_${db} ADD TABLE child`, db);
  };
  const failed = await cutoverMigration(source, target, { name: db, freezeWrites: true, timeoutSec: 120, jobs: 2, graceSec: 1, afterStep: afterPreCheck })
    .then(() => undefined, (e) => e as PgferryError);
  expect(failed?.code).toBe("verify_failed");
  expect(failed?.message).toMatch(/difference\(s\) in public\.child: public\.child: contents differ \(1001 rows on both sides/);
  expect(failed?.message).not.toMatch(/public\.(loose|parent|a|b|ident)\b/);

  // Back to streaming, the target repaired: the next cutover passes, with the tables unchanged since its pre-check read once.
  await abortCutover(source, target, db);
  await tgt.query(`UPDATE child SET v = 'lost' WHERE id = 9001`, db);
  const cut = await cutoverMigration(source, target, { name: db, freezeWrites: true, timeoutSec: 120, jobs: 2, graceSec: 1,
    afterStep: async (step) => { if (step === "warm-up") await src.query(`UPDATE parent SET v = 'late' WHERE id = 5`, db); } });
  expect(cut.phase).toBe("Completed");
  // Six tables; parent changed after the pre-check, child during CDC (the pre-check hashed it, and it did not change since).
  expect(cut.verification).toMatchObject({ tables: 6, hashedTables: 3, preChecked: 5 });
  expect((await verifyMigration(source, target)).problems).toEqual([]);
  await src.query(cut.undoFreezeSql.join("\n"), db);
  await cleanupMigration(source, target, db);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});

/**
 * The pre-check's verdicts rest on the source's statistics, which a session flushes at exit or up to 10 s after
 * going idle: without --freeze-writes, an application session that wrote moments ago and is still connected may
 * hold a change's counts, so the fence compares every table (and says why) instead of trusting the pre-check.
 */
test("without --freeze-writes, a source session that may hold unflushed statistics makes the fence compare every table", async () => {
  const db = "pre_holder";
  const { source, target } = await makeDb(db);
  expect((await startMigration(source, target, migrationOptions({ name: db, mode: "subscription", jobs: 2 }))).phase).toBe("ReadyToCutover");
  const app = new Client({ connectionString: src.uri(db) });
  await app.connect();
  try {
    const said: string[] = [];
    const cut = await cutoverMigration(source, target, { name: db, freezeWrites: false, timeoutSec: 120, jobs: 2, graceSec: 5, onProgress: (m) => said.push(m),
      afterStep: async (step) => { if (step === "warm-up") await app.query(`UPDATE parent SET v = 'after the pre-check' WHERE id = 7`); } });
    expect(cut.phase).toBe("Completed");
    expect(cut.verification?.preChecked).toBeUndefined();
    expect(said.join("\n")).toMatch(/comparing every table at the fence: .*may still hold unflushed statistics/);
    expect((await verifyMigration(source, target)).problems).toEqual([]);
  } finally {
    await app.end();
  }
  await cleanupMigration(source, target, db);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});

/**
 * The gate's per-key check (verify/byKey.ts): a table written through the cutover's warm-up is compared at the fence by
 * the keys a witness slot saw changed since the pre-check's snapshots, not hashed whole. A writer keeps changing a
 * 20,000-row table (updates, key changes, deletes, inserts) until the freeze ends it.
 */
async function bigTable(db: string): Promise<void> {
  await src.query(`CREATE TABLE big (id int PRIMARY KEY, v text, n int);
    INSERT INTO big SELECT g, 'v' || g, 0 FROM generate_series(1, 20000) g`, db);
}

/** Writes to big (ids above 1000 only) until the freeze ends its session, or stop(). */
function bigWriter(db: string): { stop: () => Promise<void> } {
  const c = new Client({ connectionString: src.uri(db) });
  c.on("error", () => undefined);
  let running = true;
  const done = (async () => {
    await c.connect();
    for (let i = 0; running; i++) {
      const id = 1001 + ((i * 7919) % 18000);
      await c.query(i % 10 === 3 ? `UPDATE big SET id = id + 100000 WHERE id = ${id}` : i % 10 === 7 ? `DELETE FROM big WHERE id = ${id}`
        : i % 10 === 9 ? `INSERT INTO big VALUES (${200000 + i}, 'new', 1) ON CONFLICT DO NOTHING` : `UPDATE big SET n = n + 1 WHERE id = ${id}`);
    }
  })().catch(() => undefined);
  return { stop: async () => { running = false; await done; await c.end().catch(() => undefined); } };
}

/** The table is written during CDC (so the gate hashes it) and its counts are in the statistics before the cutover. */
async function writtenDuringCdc(db: string, mode: string): Promise<void> {
  await src.query(`UPDATE big SET n = 1 WHERE id <= 10`, db);
  const updated = async (server: LocalServer) => (await server.query(`SELECT n_tup_upd::int AS n FROM pg_stat_user_tables WHERE relname = 'big'`, db))[0]?.n >= 10;
  await until("the update in the statistics", async () => await updated(src) && (mode === "stream" || await updated(tgt)));
}

test.each(MODES)("mode %s: a change the target lost on a table written through the warm-up fails the gate, by key or hashed whole", async (mode) => {
  const db = `bykey_lost_${mode}`;
  const { source, target } = await makeDb(db);
  await bigTable(db);
  expect((await startMigration(source, target, migrationOptions({ name: db, mode, jobs: 2 }))).phase).toBe("ReadyToCutover");
  await writtenDuringCdc(db, mode);
  // After the pre-check: row 7 changes on the source; once the fence is drained, the target loses that change (its row
  // set back), as an applier that dropped it would leave it. Or: the table is briefly out of the publication.
  const loseOnTarget = async (step: string) => {
    if (step === "warm-up") await src.query(`UPDATE big SET v = 'changed' WHERE id = 7`, db);
    if (step === "fence") await tgt.query(`UPDATE big SET v = 'v7' WHERE id = 7`, db);
  };
  const outOfPublication = async (step: string) => {
    if (step !== "warm-up") return;
    await src.query(`ALTER PUBLICATION pgferry_${db} DROP TABLE big`, db);
    await src.query(`UPDATE big SET v = 'unpublished' WHERE id = 8`, db);
    await src.query(`ALTER PUBLICATION pgferry_${db} ADD TABLE big`, db);
  };
  const repair = async () => {
    await abortCutover(source, target, db);
    for (const x of await src.query(`SELECT id, v FROM big WHERE id IN (7, 8)`, db)) await tgt.query(`UPDATE big SET v = '${x.v}' WHERE id = ${x.id}`, db);
  };
  for (const [hook, byKey, says] of [
    [loseOnTarget, true, /compared 1 table\(s\) by the keys changed since the pre-check: public\.big \(\d+ key\(s\)\)/],
    [loseOnTarget, false, /^(?![\s\S]*by the keys changed)/],
    [outOfPublication, true, /hashing 1 table\(s\) whole at the fence instead of by key: public\.big \(the publication was altered/],
  ] as const) {
    const writer = bigWriter(db);
    const said: string[] = [];
    const failed = await cutoverMigration(source, target, { name: db, freezeWrites: true, timeoutSec: 120, jobs: 2, graceSec: 1, afterStep: hook,
      gateByKey: byKey, onProgress: (m) => said.push(m) }).then(() => undefined, (e) => e as PgferryError);
    await writer.stop();
    expect(failed?.code).toBe("verify_failed");
    // Out of the publication, the writer's own changes are lost too: a row it inserted or deleted then changes the count.
    expect(failed?.message).toMatch(hook === outOfPublication
      ? /difference\(s\) in public\.big: public\.big: (contents differ \(\d+ rows on both sides|\d+ rows on source, \d+ on target)/
      : /difference\(s\) in public\.big: public\.big: contents differ \(\d+ rows on both sides/);
    expect(failed?.message).not.toMatch(/public\.(loose|parent|child|a|b|ident)\b/);
    expect(said.join("\n")).toMatch(says);
    await repair();
  }
  await cleanupMigration(source, target, db);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});

test.each(MODES)("mode %s: keys changed and rows deleted after the pre-check pass the gate checked by key; the target equals the source", async (mode) => {
  const db = `bykey_ok_${mode}`;
  const { source, target } = await makeDb(db);
  await bigTable(db);
  expect((await startMigration(source, target, migrationOptions({ name: db, mode, jobs: 2 }))).phase).toBe("ReadyToCutover");
  await writtenDuringCdc(db, mode);
  const writer = bigWriter(db);
  const cut = await cutoverMigration(source, target, { name: db, freezeWrites: true, timeoutSec: 120, jobs: 2, graceSec: 1,
    afterStep: async (step) => {
      if (step !== "warm-up") return;
      // After the pre-check: keys that change (to new and to freed values), deleted rows, a row deleted and inserted again.
      await src.query(`UPDATE big SET id = -id WHERE id BETWEEN 100 AND 119; DELETE FROM big WHERE id BETWEEN 200 AND 219;
        UPDATE big SET id = 200 WHERE id = 300; DELETE FROM big WHERE id = 400; INSERT INTO big VALUES (400, 'again', 2);
        UPDATE child SET v = 'by key' WHERE id = 1`, db);
    } }).finally(() => writer.stop());
  expect(cut.phase).toBe("Completed");
  const byKey = cut.verification?.byKey;
  expect(byKey?.fallback).toEqual([]);
  // child was not written during CDC: not hashed by the pre-check, so hashed whole at the fence (it changed after it).
  expect(byKey?.tables.map((t) => t.table)).toEqual(["public.big"]);
  // 20 changed keys twice (old and new), 20 deleted, 300 → 200, 400, and whatever the writer changed.
  expect(byKey?.tables.find((t) => t.table === "public.big")?.keys).toBeGreaterThanOrEqual(62);
  expect((await verifyMigration(source, target)).problems).toEqual([]);
  await src.query(cut.undoFreezeSql.join("\n"), db);
  await cleanupMigration(source, target, db);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});

/**
 * The gate's check by new rows (verify/newRows.ts): a table without a key written through the warm-up (pgbench_history's
 * shape) is compared at the fence by the row versions written since a snapshot taken just before the freeze, its older
 * rows' sums read in that snapshot — not hashed whole. A writer keeps inserting until the freeze ends it.
 */
async function histTable(db: string): Promise<void> {
  await src.query(`CREATE TABLE hist (tid int, aid int, delta int, mtime timestamptz DEFAULT clock_timestamp(), filler char(22));
    INSERT INTO hist (tid, aid, delta) SELECT g % 10, g, g FROM generate_series(1, 5000) g`, db);
}

/** Inserts into hist until the freeze ends its session, or stop(). */
function histWriter(db: string): { stop: () => Promise<void> } {
  const c = new Client({ connectionString: src.uri(db) });
  c.on("error", () => undefined);
  let running = true;
  const done = (async () => {
    await c.connect();
    for (let i = 0; running; i++) await c.query(`INSERT INTO hist (tid, aid, delta) VALUES (${i % 10}, ${100000 + i}, ${i})`);
  })().catch(() => undefined);
  return { stop: async () => { running = false; await done; await c.end().catch(() => undefined); } };
}

/** hist is written during CDC (so the gate hashes it) and that is in the statistics before the cutover. */
async function histWrittenDuringCdc(db: string, mode: string): Promise<void> {
  await src.query(`INSERT INTO hist (tid, aid, delta) SELECT 0, -g, 0 FROM generate_series(1, 10) g`, db);
  const inserted = async (server: LocalServer) => (await server.query(`SELECT n_tup_ins::int AS n FROM pg_stat_user_tables WHERE relname = 'hist'`, db))[0]?.n >= 5010;
  await until("the inserts in the statistics", async () => await inserted(src) && (mode === "stream" || await inserted(tgt)));
}

const NEW_ROWS_SAID = /compared 1 table\(s\) without a usable key by the rows written since the snapshot before the freeze: public\.hist \((\d+) new row\(s\) on the source, (\d+) on the target\)/;

test.each(MODES)("mode %s: a keyless table written through the warm-up: a row the target lost, changed, or an older row it changed fails the gate", async (mode) => {
  const db = `newrows_lost_${mode}`;
  const { source, target } = await makeDb(db);
  await histTable(db);
  expect((await startMigration(source, target, migrationOptions({ name: db, mode, jobs: 2, replicaIdentityFull: true }))).phase).toBe("ReadyToCutover");
  await histWrittenDuringCdc(db, mode);
  // A row inserted on the source after the snapshot before the freeze (the warm-up's end), its aid new each round; once the
  // fence is drained, the target loses it, or changes it; or the target changes a row older than that snapshot (the whole
  // hash then decides). Nothing is deleted on the source: a delete replicated after the snapshot would itself (rightly)
  // send the table to the whole hash.
  let marker = -100;
  const marked = async (step: string) => { if (step === "warm-up") await src.query(`INSERT INTO hist (tid, aid, delta) VALUES (0, ${--marker}, 7)`, db); };
  const lost = async (step: string) => { await marked(step); if (step === "fence") await tgt.query(`DELETE FROM hist WHERE aid = ${marker}`, db); };
  const changed = async (step: string) => { await marked(step); if (step === "fence") await tgt.query(`UPDATE hist SET delta = 8 WHERE aid = ${marker}`, db); };
  const olderChanged = async (step: string) => { if (step === "fence") await tgt.query(`UPDATE hist SET delta = -1 WHERE aid = 7`, db); };
  const repair = async () => {
    await abortCutover(source, target, db);
    await tgt.query(`DELETE FROM hist WHERE aid IN (${marker}, 7)`, db);
    for (const x of await src.query(`SELECT tid, aid, delta, mtime::text AS m, filler FROM hist WHERE aid IN (${marker}, 7)`, db)) {
      await tgt.query(`INSERT INTO hist VALUES (${x.tid}, ${x.aid}, ${x.delta}, '${x.m}', ${x.filler === null ? "NULL" : `'${x.filler}'`})`, db);
    }
  };
  for (const [hook, says, problem] of [
    [lost, NEW_ROWS_SAID, /public\.hist: \d+ rows on source, \d+ on target/],
    [changed, NEW_ROWS_SAID, /public\.hist: contents differ \(\d+ rows on both sides/],
    [olderChanged, /hashing 1 table\(s\) whole at the fence instead of by their new rows: public\.hist \(1 row\(s\) on the target older than the snapshot before the freeze were updated or deleted since\)/,
      /public\.hist: contents differ \(\d+ rows on both sides/],
  ] as const) {
    const writer = histWriter(db);
    const said: string[] = [];
    const failed = await cutoverMigration(source, target, { name: db, freezeWrites: true, timeoutSec: 120, jobs: 2, graceSec: 1, afterStep: hook,
      onProgress: (m) => said.push(m) }).then(() => undefined, (e) => e as PgferryError);
    await writer.stop();
    expect(failed?.code).toBe("verify_failed");
    expect(failed?.message).toMatch(problem);
    expect(failed?.message).not.toMatch(/public\.(loose|parent|child|a|b|ident)\b/);
    expect(said.join("\n")).toMatch(says);
    await repair();
  }
  await cleanupMigration(source, target, db);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});

test.each(MODES)("mode %s: a keyless table inserted into until the freeze passes the gate by its new rows; the target equals the source", async (mode) => {
  const db = `newrows_ok_${mode}`;
  const { source, target } = await makeDb(db);
  await histTable(db);
  expect((await startMigration(source, target, migrationOptions({ name: db, mode, jobs: 2, replicaIdentityFull: true }))).phase).toBe("ReadyToCutover");
  await histWrittenDuringCdc(db, mode);
  const writer = histWriter(db);
  const said: string[] = [];
  const cut = await cutoverMigration(source, target, { name: db, freezeWrites: true, timeoutSec: 120, jobs: 2, graceSec: 1, onProgress: (m) => said.push(m),
    afterStep: async (step) => { if (step === "warm-up") await src.query(`INSERT INTO hist (tid, aid, delta) VALUES (0, -100, 7)`, db); } })
    .finally(() => writer.stop());
  expect(cut.phase).toBe("Completed");
  const newRows = cut.verification?.newRows;
  expect(newRows?.fallback).toEqual([]);
  expect(newRows?.tables.map((t) => t.table)).toEqual(["public.hist"]);
  // At least the row inserted after the snapshot, on each side.
  expect(newRows?.tables[0].sourceNewRows).toBeGreaterThanOrEqual(1);
  expect(newRows?.tables[0].targetNewRows).toBeGreaterThanOrEqual(1);
  expect(said.join("\n")).toMatch(NEW_ROWS_SAID);
  expect(said.join("\n")).not.toMatch(/whole at the fence instead of by key: public\.hist/);
  expect((await verifyMigration(source, target)).problems).toEqual([]);
  await src.query(cut.undoFreezeSql.join("\n"), db);
  await cleanupMigration(source, target, db);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});
