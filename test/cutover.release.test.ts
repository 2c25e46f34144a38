/**
 * What the cutover's downtime no longer holds (PostgreSQL 15 → 17, both CDC modes):
 *  - replication's source side (the slot, the publication, what pgferry changed on the source) is ended after the
 *    downtime: the record says Completed — the target takes writes — while the slot is still there, unconsumed;
 *    a cutover interrupted there is finished by the next `cutover`, which leaves nothing behind, and nothing reaches
 *    the target meanwhile;
 *  - sequences are set while streaming and again at the fence, only those that moved since: one advanced after the
 *    pre-freeze pass still comes out exactly as on the source.
 */
import { LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, connect, cutoverMigration, migrationOptions, parseEndpoint, startMigration, verifyMigration } from "../provider/engine";
import { readMigration } from "../provider/engine/state/state";
import { ensureBuilt } from "./support/build";
import { leftovers, startServers } from "./support/servers";

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
    CREATE TABLE parent (id serial PRIMARY KEY, v text);
    CREATE TABLE child (id serial PRIMARY KEY, p int NOT NULL REFERENCES parent, v text);
    CREATE TABLE nokey (v text);
    INSERT INTO parent (v) SELECT 'p' || g FROM generate_series(1, 50) g;
    INSERT INTO child (p, v) SELECT 1 + g % 50, 'c' || g FROM generate_series(1, 200) g;
    INSERT INTO nokey VALUES ('a'), ('b');
    CREATE SEQUENCE free_seq;`, db);
  return { source: parseEndpoint(src.uri(db), "source"), target: parseEndpoint(tgt.uri(db), "target") };
}

async function record(db: string, endpoint: ReturnType<typeof parseEndpoint>) {
  const c = await connect(endpoint);
  try { return (await readMigration(c, db))!; } finally { await c.end(); }
}

test.each(MODES)("mode %s: replication ends after Completed; a cutover interrupted there is finished by the next, which leaves nothing behind", async (mode) => {
  const db = `rel_${mode}`;
  const { source, target } = await makeDb(db);
  // nokey has no key: REPLICA IDENTITY FULL, which pgferry restores on the source once replication has ended.
  expect((await startMigration(source, target, migrationOptions({ name: db, mode, jobs: 2, replicaIdentityFull: true }))).phase).toBe("ReadyToCutover");
  await src.query(`INSERT INTO child (p, v) VALUES (3, 'during CDC'); SELECT nextval('free_seq')`, db);
  // Sequences moved after the pre-freeze pass (which already set them on the target) are set again at the fence.
  const afterStep = async (step: string) => {
    if (step === "warm-up") await src.query(`INSERT INTO parent (v) VALUES ('after the warm-up'); SELECT setval('free_seq', 41)`, db);
    if (step === "complete") throw new Error("killed right after Completed");
  };
  await expect(cutoverMigration(source, target, { name: db, freezeWrites: true, timeoutSec: 120, jobs: 2, graceSec: 1, afterStep }))
    .rejects.toThrow(/killed right after Completed/);

  // Completed: the downtime is over and the target takes writes, while the slot is still there, unconsumed.
  const m = await record(db, target);
  expect(m).toMatchObject({ phase: "Completed", replicationPaused: true });
  expect(m.downtimeMs).toBeGreaterThan(0);
  expect(await src.query(`SELECT slot_name, active FROM pg_replication_slots WHERE database = current_database()`, db)).toEqual([{ slot_name: `pgferry_${db}`, active: false }]);
  expect(await tgt.query(`SELECT subname FROM pg_subscription`, db)).toEqual([]); // dropped inside the downtime: DDL on the target
  expect(await src.query(`SELECT relreplident FROM pg_class WHERE relname = 'nokey'`, db)).toEqual([{ relreplident: "f" }]);
  await tgt.query(`INSERT INTO parent (v) VALUES ('the application, on the target')`, db);
  const seqs = `SELECT last_value::text AS v, is_called AS c FROM parent_id_seq UNION ALL SELECT last_value::text, is_called FROM free_seq`;
  expect(await tgt.query(`SELECT last_value::text AS v FROM parent_id_seq`, db)).toEqual([{ v: "52" }]); // the source's 51, then one on the target
  expect(await tgt.query(`SELECT last_value::text AS v, is_called AS c FROM free_seq`, db)).toEqual([{ v: "41", c: true }]);
  expect(await src.query(seqs, db)).toEqual([{ v: "51", c: true }, { v: "41", c: true }]);

  // The next cutover ends replication and reports the cutover as done before; nothing is left on either server.
  const again = await cutoverMigration(source, target, { name: db, freezeWrites: true, timeoutSec: 120, jobs: 2, graceSec: 1 });
  expect(again).toMatchObject({ phase: "Completed", alreadyCompleted: true, downtimeMs: m.downtimeMs });
  expect(again.restoredSourceChanges?.map((c) => c.object)).toEqual(["public.nokey"]);
  expect(await leftovers(src, tgt, db)).toEqual([]);
  expect((await record(db, target)).replicationPaused).toBe(false);
  expect(await src.query(`SELECT relreplident FROM pg_class WHERE relname = 'nokey'`, db)).toEqual([{ relreplident: "d" }]);
  // Only the application's row differs from the source: nothing else reached the target.
  const report = await verifyMigration(source, target, { hashes: true });
  expect(report.problems).toEqual(["public.parent: 51 rows on source, 52 on target"]);
  expect(await tgt.query(`SELECT count(*)::int AS n FROM child WHERE v = 'during CDC'`, db)).toEqual([{ n: 1 }]);
  await src.query(again.undoFreezeSql.join("\n"), db);
  await cleanupMigration(source, target, db);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});

test("a cutover that is not interrupted ends replication before it returns, and its sequences are exact", async () => {
  const db = "rel_whole";
  const { source, target } = await makeDb(db);
  expect((await startMigration(source, target, migrationOptions({ name: db, mode: "subscription", jobs: 2, replicaIdentityFull: true }))).phase).toBe("ReadyToCutover");
  const said: string[] = [];
  const cut = await cutoverMigration(source, target, { name: db, freezeWrites: true, timeoutSec: 120, jobs: 2, graceSec: 1, onProgress: (x) => said.push(x),
    afterStep: async (step) => { if (step === "warm-up") await src.query(`SELECT setval('free_seq', 7, false); SELECT nextval('child_id_seq')`, db); } });
  expect(cut).toMatchObject({ phase: "Completed", alreadyCompleted: false, sequencesSynced: 3 });
  expect(said.join("\n")).toMatch(/cutover complete \(downtime [\d.]+ s\): the target takes writes; dropping the slot and publication on the source now/);
  expect(await leftovers(src, tgt, db)).toEqual([]);
  expect((await record(db, target)).replicationPaused).toBe(false);
  const seqs = `SELECT last_value::text AS v, is_called AS c FROM parent_id_seq UNION ALL SELECT last_value::text, is_called FROM child_id_seq
    UNION ALL SELECT last_value::text, is_called FROM free_seq`;
  expect(await src.query(seqs, db)).toEqual([{ v: "50", c: true }, { v: "201", c: true }, { v: "7", c: false }]);
  expect(await tgt.query(seqs, db)).toEqual(await src.query(seqs, db));
  expect((await verifyMigration(source, target)).problems).toEqual([]);
  await src.query(cut.undoFreezeSql.join("\n"), db);
  await cleanupMigration(source, target, db);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});

/** The gate's catalog is read before the freeze; DDL after that read is still caught at the fence (its fingerprint moved). */
test("a column added on the target after the pre-freeze catalog read fails the gate, naming it", async () => {
  const db = "rel_drift";
  const { source, target } = await makeDb(db);
  expect((await startMigration(source, target, migrationOptions({ name: db, mode: "subscription", jobs: 2, replicaIdentityFull: true }))).phase)
    .toBe("ReadyToCutover");
  const failed = await cutoverMigration(source, target, { name: db, freezeWrites: true, timeoutSec: 120, jobs: 2, graceSec: 1,
    afterStep: async (step) => { if (step === "warm-up") await tgt.query(`ALTER TABLE child ADD COLUMN extra int`, db); } })
    .then(() => undefined, (e) => e as Error & { code?: string });
  expect(failed?.code).toBe("verify_failed");
  expect(failed?.message).toMatch(/public\.child: columns differ \(extra on target: extra\)/);
  await tgt.query(`ALTER TABLE child DROP COLUMN extra`, db);
  const cut = await cutoverMigration(source, target, { name: db, freezeWrites: true, timeoutSec: 120, jobs: 2, graceSec: 1 });
  expect(cut.phase).toBe("Completed");
  await src.query(cut.undoFreezeSql.join("\n"), db);
  await cleanupMigration(source, target, db);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});
