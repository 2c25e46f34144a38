/**
 * The rollback window (issue #5) on real servers, PostgreSQL 15 → 17: a frozen cutover under a live writer
 * opens it; writes on the NEW server (inserts, updates, deletes, key changes, a TRUNCATE) reach the OLD server
 * through `pgferry agent --reverse` — killed with -9 mid-stream and restarted — while the old server stays
 * read-only for everyone else; `pgferry rollback` moves back (old writable, sequences not behind, equal);
 * `pgferry finish` removes every reverse object, and a second finish does nothing. A second migration
 * (subscription mode forward) lets changes wait in the reverse slot with no agent, then closes its window through
 * the CLI while a late agent runs (which then stops by itself).
 */
import { spawnSync } from "child_process";
import { Client } from "pg";
import { LocalServer } from "../provider/embedded/localServer";
import {
  cleanupMigration, cutoverMigration, Endpoint, finishRollbackWindow, migrationOptions, migrationStatus, parseEndpoint, rollbackMigration,
  startMigration, verifyMigration,
} from "../provider/engine";
import { openRollbackWindow } from "../provider/engine/rollback/rollback";
import { readMigration } from "../provider/engine/state/state";
import { EDGE_SCHEMA, edgeChanges } from "./support/fixtures";
import { leftovers, moreWrites, startServers, Writer } from "./support/servers";
import { CLI, ensureBuilt } from "./support/build";
import { exited, killAgents, spawnAgent, until } from "./support/agents";

let src: LocalServer, tgt: LocalServer;

beforeAll(async () => {
  ensureBuilt();
  [src, tgt] = await startServers(15, 17);
  for (const db of ["app", "app2"]) {
    await src.createDatabase(db);
    await tgt.createDatabase(db);
    await src.query(EDGE_SCHEMA, db);
  }
});
// A failed expectation must not leave an agent running (it would keep jest, and a slot, busy).
afterAll(async () => { killAgents(); await src?.stop(); await tgt?.stop(); });

const reverseAgent = (db: string, name: string) => spawnAgent(["--reverse", "--name", name], { source: src.uri(db), target: tgt.uri(db) });

/** Replication objects on both servers (leftovers() covers the new server's too) and the reverse state on the old one. */
async function everythingLeft(db: string): Promise<string[]> {
  const out = await leftovers(src, tgt, db);
  for (const r of await src.query(`SELECT nspname FROM pg_namespace WHERE nspname = 'pgferry'`, db)) out.push(`old-server schema ${r.nspname}`);
  return out;
}

/** Every row of the migrated tables, old and new server, compared as text (hash verification besides). */
async function sameRows(db: string): Promise<void> {
  const tables: [string, string][] = [["parent", "a, b"], ["child", "id"], ["doc", "id"], ["measure", "id, at"], [`"Edge Aux"."Mixed Case Ü"`, `"Key"`]];
  for (const [table, order] of tables) {
    const q = `SELECT to_jsonb(x)::text AS r FROM (SELECT * FROM ${table} ORDER BY ${order}) x`;
    const [o, n] = await Promise.all([src.query(q, db), tgt.query(q, db)]);
    expect({ table, rows: o.length }).toEqual({ table, rows: n.length });
    expect(o.map((r) => r.r)).toEqual(n.map((r) => r.r));
  }
}

const swapped = (db: string): [Endpoint, Endpoint] => [parseEndpoint(tgt.uri(db), "source"), parseEndpoint(src.uri(db), "target")];

/** Changes on the new server beyond edgeChanges: a TRUNCATE (of a table no foreign key points at) and a refill. */
const newServerChanges = (i: number) => i % 40 === 39
  ? `BEGIN; TRUNCATE "Edge Aux"."Mixed Case Ü"; INSERT INTO "Edge Aux"."Mixed Case Ü" SELECT g, 'refill ${i} ' || g FROM generate_series(1, 100) g; COMMIT;`
  : edgeChanges(50000 + i);

test("rollback window: writes on the new server appear on the old one, then the window closes cleanly", async () => {
  const db = "app";
  const source = parseEndpoint(src.uri(db), "source"), target = parseEndpoint(tgt.uri(db), "target");
  expect((await startMigration(source, target, migrationOptions({ name: "rw", mode: "stream", jobs: 2 }))).phase).toBe("ReadyToCutover");

  // Cutover under a live writer on the old server, opening the window.
  const oldWriter = new Writer(src.uri(db), (i) => edgeChanges(i)).start();
  await moreWrites(oldWriter);
  const cut = await cutoverMigration(source, target, { name: "rw", freezeWrites: true, timeoutSec: 120, jobs: 2, reverseReplication: true });
  await oldWriter.stop();
  expect(oldWriter.errors).toEqual([]);
  expect(cut.phase).toBe("Completed");
  expect(cut.rollbackWindow).toMatchObject({ reverseMigration: "rw_rev", slot: "pgferry_rw_rev", publication: "pgferry_rw_rev" });
  expect(await tgt.query(`SELECT slot_name, plugin FROM pg_replication_slots WHERE database = current_database()`, db)).toEqual([{ slot_name: "pgferry_rw_rev", plugin: "pgoutput" }]);
  expect(await src.query(`SELECT name, phase, mode FROM pgferry.migration`, db)).toEqual([{ name: "rw_rev", phase: "ReadyToCutover", mode: "stream" }]);
  // The forward slot is gone from the old server; what remains is the window's, on the new one. A cutover
  // re-run is a no-op and keeps the window.
  expect(await leftovers(src, tgt, db)).toEqual(["target slot pgferry_rw_rev", "target publication pgferry_rw_rev"]);
  expect((await cutoverMigration(source, target, { name: "rw", freezeWrites: true, timeoutSec: 10, jobs: 1, reverseReplication: true })).alreadyCompleted).toBe(true);

  // The application now writes to the new server; the reverse agent carries it back.
  const writer = new Writer(tgt.uri(db), newServerChanges).start();
  let agent = reverseAgent(db, "rw");
  await until("the reverse agent to apply new-server changes", async () =>
    (await src.query(`SELECT count(*)::int AS n FROM parent WHERE a >= 150000`, db))[0].n > 20);
  agent.proc.kill("SIGKILL");
  await exited(agent, "kill -9 of the reverse agent");
  await until("the killed agent's walsender to release the reverse slot", async () =>
    (await tgt.query(`SELECT 1 FROM pg_replication_slots WHERE slot_name = 'pgferry_rw_rev' AND active`, db)).length === 0);
  agent = reverseAgent(db, "rw");
  await until("the writer to pass a TRUNCATE", async () => writer.transactions > 90, 120000);
  await writer.stop();
  expect(writer.errors).toEqual([]);

  // The old server is read-only for every ordinary session, all the while.
  await expect(src.query(`INSERT INTO parent VALUES (-1, 1, 'must fail')`, db)).rejects.toThrow(/read-only transaction/);

  const st = await migrationStatus(source, target, "rw");
  expect(st.phase).toBe("Completed");
  // One status read both waited for and checked: WAL the new server writes on its own afterwards (autovacuum after the
  // writer, the bgwriter's running-xacts record) puts the agent a few bytes behind again until it next confirms.
  const caught = await until("the old server to catch up", async () => {
    const w = (await migrationStatus(source, target, "rw")).rollbackWindow;
    return w?.lagBytes === 0 ? w : undefined;
  }, 60000);
  expect(caught).toMatchObject({ state: "open", agentConnected: true, lagBytes: 0 });
  expect(caught.appliedLsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
  await sameRows(db);
  const [revSource, revTarget] = swapped(db);
  const tables = (await src.query(`SELECT schemaname || '.' || tablename AS t FROM pg_tables WHERE schemaname IN ('public', 'Edge Aux')`, db)).map((r) => r.t);
  const mid = await verifyMigration(revSource, revTarget, { onlyTables: tables, hashes: true });
  expect(mid.problems).toEqual([]);
  expect((await src.query(`SELECT count(*)::int AS n FROM "Edge Aux"."Mixed Case Ü" WHERE "Wert ä" LIKE 'refill%'`, db))[0].n).toBe(100);

  // A rollback whose gate fails stops with the new server frozen (VerifyFailed); finish refuses meanwhile (it would lose
  // writes); rollback --abort unfreezes the new server and the window stays open, the agent resuming.
  await src.query(`BEGIN READ WRITE; INSERT INTO "Edge Aux"."Mixed Case Ü" VALUES (-5, 'only on the old server'); COMMIT`, db);
  await expect(rollbackMigration(source, target, { name: "rw", timeoutSec: 60, jobs: 2 })).rejects.toThrow(/verification .*found 1 difference.*Mixed Case/);
  expect(await tgt.query(`SELECT current_setting('default_transaction_read_only') AS ro`, db)).toEqual([{ ro: "on" }]);
  expect((await migrationStatus(source, target, "rw")).rollbackWindow?.state).toBe("rollingBack");
  await expect(finishRollbackWindow(source, target, "rw")).rejects.toThrow(/rollback .* did not finish.*pgferry rollback again/);
  const abort = spawnSync(process.execPath, [CLI, "rollback", "--abort", "--name", "rw"], {
    env: { ...process.env, PGFERRY_SOURCE: src.uri(db), PGFERRY_TARGET: tgt.uri(db) }, encoding: "utf8" });
  expect({ code: abort.status, out: abort.stdout + abort.stderr }).toMatchObject({ code: 0, out: expect.stringMatching(/target is writable again, the rollback window stays open/) });
  expect(await tgt.query(`SELECT current_setting('default_transaction_read_only') AS ro`, db)).toEqual([{ ro: "off" }]);
  expect((await migrationStatus(source, target, "rw")).rollbackWindow?.state).toBe("open");
  await src.query(`BEGIN READ WRITE; DELETE FROM "Edge Aux"."Mixed Case Ü" WHERE "Key" = -5; COMMIT`, db);

  // Rollback under a live writer on the new server: frozen, drained to the fence, verified, sequences synced, old server writable.
  const lateWriter = new Writer(tgt.uri(db), (i) => edgeChanges(90000 + i)).start();
  await moreWrites(lateWriter);
  const back = await rollbackMigration(source, target, { name: "rw", timeoutSec: 120, jobs: 2 });
  await lateWriter.stop();
  expect(lateWriter.errors).toEqual([]);
  expect(lateWriter.transactions).toBeGreaterThan(5);
  expect(back.alreadyRolledBack).toBe(false);
  expect(back.cutover!.phase).toBe("Completed");
  expect(back.cutover!.endedSessions.length).toBeGreaterThanOrEqual(1);
  expect(back.undoNewServerFreezeSql.join(" ")).toMatch(/ALTER DATABASE "?app"? RESET default_transaction_read_only/);
  expect(await exited(agent, "rollback while the reverse agent runs")).toBe(0);
  expect(agent.log()).toMatch(/agent completed/);
  // Sequences included: the full verifier, new → old.
  const after = await verifyMigration(revSource, revTarget);
  expect(after.problems).toEqual([]);
  await sameRows(db);
  expect(await src.query(`SELECT current_setting('default_transaction_read_only') AS ro`, db)).toEqual([{ ro: "off" }]);
  expect(await tgt.query(`SELECT current_setting('default_transaction_read_only') AS ro`, db)).toEqual([{ ro: "on" }]);
  // The application writes to the old server again, with sequences ahead of every row the new server made.
  await src.query(`INSERT INTO parent VALUES (-1, 1, 'back home'); INSERT INTO child (a, b) VALUES (-1, 1)`, db);
  expect((await src.query(`SELECT ticket > (SELECT max(ticket) FROM child WHERE a <> -1) AS ok FROM child WHERE a = -1`, db))[0].ok).toBe(true);
  expect((await rollbackMigration(source, target, { name: "rw", timeoutSec: 10, jobs: 1 })).alreadyRolledBack).toBe(true);
  expect((await migrationStatus(source, target, "rw")).rollbackWindow?.state).toBe("rolledBack");

  // finish: nothing left of the reverse direction; a second finish is a no-op.
  const fin = await finishRollbackWindow(source, target, "rw");
  expect(fin).toMatchObject({ previousState: "rolledBack", droppedSlot: false, droppedPublication: false, removedReverseState: true });
  expect(await finishRollbackWindow(source, target, "rw")).toMatchObject({ droppedSlot: false, droppedPublication: false, removedReverseState: false });
  await cleanupMigration(source, target, "rw");
  expect(await everythingLeft(db)).toEqual([]);
});

test("changes wait in the reverse slot without an agent; finish through the CLI stops the agent, nothing left on either server (subscription mode forward)", async () => {
  const db = "app2";
  const source = parseEndpoint(src.uri(db), "source"), target = parseEndpoint(tgt.uri(db), "target");
  expect((await startMigration(source, target, migrationOptions({ name: "cli", mode: "subscription", jobs: 2 }))).phase).toBe("ReadyToCutover");
  const cli = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args, "--name", "cli"], {
    env: { ...process.env, PGFERRY_SOURCE: src.uri(db), PGFERRY_TARGET: tgt.uri(db) }, encoding: "utf8" });
  const cut = cli("cutover", "--freeze-writes", "--reverse-replication");
  expect({ code: cut.status, err: cut.stderr }).toMatchObject({ code: 0 });
  expect(cut.stdout + cut.stderr).toMatch(/pgferry agent --reverse --name cli/);
  expect(cut.stdout + cut.stderr).toMatch(/pgferry finish --name cli/);

  // Opening is idempotent (what a cutover re-run after a kill mid-way does): same slot, same start, one record.
  const [newC, oldC] = [new Client({ connectionString: tgt.uri(db) }), new Client({ connectionString: src.uri(db) })];
  await Promise.all([newC.connect(), oldC.connect()]);
  try {
    await oldC.query(`SET default_transaction_read_only = off`);
    const first = (await src.query(`SELECT consistent_point FROM pgferry.migration WHERE name = 'cli_rev'`, db))[0].consistent_point;
    const again = await openRollbackWindow(oldC, newC, (await readMigration(newC, "cli"))!);
    expect(again.consistentPoint).toBe(first);
    expect((await src.query(`SELECT count(*)::int AS n FROM pgferry.migration`, db))[0].n).toBe(1);
    expect((await tgt.query(`SELECT count(*)::int AS n FROM pg_replication_slots WHERE database = current_database()`, db))[0].n).toBe(1);
  } finally {
    await Promise.all([newC.end(), oldC.end()]);
  }

  // No agent: the new server's writes wait in the reverse slot, and status says so.
  for (let i = 0; i < 10; i++) await tgt.query(edgeChanges(70000 + i), db);
  const st = await migrationStatus(source, target, "cli");
  expect(st.rollbackWindow).toMatchObject({ state: "open", agentConnected: false });
  expect(st.rollbackWindow!.lagBytes).toBeGreaterThan(0);
  const status = cli("status");
  expect(status.stdout).toMatch(/rollback window open: the old server is \d+ bytes behind/);
  // A reverse agent against the wrong name is refused with the way to open a window.
  const wrong = spawnSync(process.execPath, [CLI, "agent", "--reverse", "--name", "nope"], {
    env: { ...process.env, PGFERRY_SOURCE: src.uri(db), PGFERRY_TARGET: tgt.uri(db) }, encoding: "utf8", timeout: 30000 });
  expect(wrong.status).toBe(1);
  expect(wrong.stderr).toMatch(/no rollback window[\s\S]*--reverse-replication/);

  // The changes waited: an agent started now brings the old server level with the new one.
  const agent = reverseAgent(db, "cli");
  await until("the late reverse agent to catch up", async () => (await migrationStatus(source, target, "cli")).rollbackWindow?.lagBytes === 0);
  await sameRows(db);
  // finish while the agent runs: its slot goes, and it stops by itself.
  const fin = cli("finish");
  expect({ code: fin.status, err: fin.stderr }).toMatchObject({ code: 0 });
  expect(fin.stderr).toMatch(/rollback window of cli closed: reverse slot dropped, publication dropped, state on the source removed/);
  expect(await exited(agent, "finish while the reverse agent runs")).toBe(0);
  expect(agent.log()).toMatch(/agent completed/);
  const again = cli("finish");
  expect(again.status).toBe(0);
  expect(again.stderr).toMatch(/already closed \(was closed\); nothing to do/);
  expect((await migrationStatus(source, target, "cli")).rollbackWindow?.state).toBe("closed");
  // Closed means closed: rollback refuses, naming why.
  await expect(rollbackMigration(source, target, { name: "cli", timeoutSec: 10, jobs: 1 })).rejects.toThrow(/was closed \(pgferry finish\)/);
  // The old server stays read-only after the window (as after any frozen cutover).
  await expect(src.query(`INSERT INTO parent VALUES (-1, 1, 'x')`, db)).rejects.toThrow(/read-only transaction/);
  await cleanupMigration(source, target, "cli");
  expect(await everythingLeft(db)).toEqual([]);
});

test("a rollback window the target cannot host (wal_level = replica) is refused before anything is frozen", async () => {
  const db = "app3";
  await src.createDatabase(db);
  await tgt.createDatabase(db);
  await src.query(`CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 50) g;`, db);
  await tgt.restart({ wal_level: "replica" }); // a subscriber needs no logical WAL; the reverse slot does
  try {
    const source = parseEndpoint(src.uri(db), "source"), target = parseEndpoint(tgt.uri(db), "target");
    expect((await startMigration(source, target, migrationOptions({ name: "nowal", jobs: 1 }))).phase).toBe("ReadyToCutover");
    await expect(cutoverMigration(source, target, { name: "nowal", freezeWrites: true, timeoutSec: 30, jobs: 1, reverseReplication: true }))
      .rejects.toThrow(/wal_level is 'replica' on the target[\s\S]*Nothing was frozen or changed/);
    // Nothing frozen, still streaming: the source takes writes and they arrive.
    await src.query(`INSERT INTO t VALUES (51, 'after the refusal')`, db);
    await until("the write to stream", async () => (await tgt.query(`SELECT count(*)::int AS n FROM t`, db))[0].n === 51);
    expect((await migrationStatus(source, target, "nowal")).phase).toBe("ReadyToCutover");
    // Without the window the cutover goes through.
    expect((await cutoverMigration(source, target, { name: "nowal", freezeWrites: true, timeoutSec: 30, jobs: 1 })).phase).toBe("Completed");
    await cleanupMigration(source, target, "nowal");
    expect(await everythingLeft(db)).toEqual([]);
  } finally {
    await tgt.restart({ wal_level: "logical" });
  }
});
