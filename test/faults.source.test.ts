/**
 * Faults on the source's side: a long transaction open at `start` delays the consistent snapshot (progress
 * names it; --snapshot-timeout refuses naming the pid and the fix, leaving no slot), and a slot invalidated
 * by max_slot_wal_keep_size while the consumer was away (status, the agent and cutover say so and name the
 * way back — cleanup, start again — which works).
 */
import { Client } from "pg";
import { LocalServer } from "../provider/embedded/localServer";
import {
  cleanupMigration, cutoverMigration, migrationOptions, migrationStatus, parseEndpoint, PgferryError, startMigration, verifyMigration,
} from "../provider/engine";
import type { MigrationEvent } from "../provider/engine";
import { ensureBuilt } from "./support/build";
import { exited, killAgents, spawnAgent, until } from "./support/agents";
import { leftovers, moreWrites, startServers, Writer } from "./support/servers";

let src: LocalServer, tgt: LocalServer;

beforeAll(async () => {
  ensureBuilt();
  [src, tgt] = await startServers(15, 17);
  await src.createDatabase("app");
  await tgt.createDatabase("app");
  await src.query(`CREATE TABLE acct (id int PRIMARY KEY, n int NOT NULL DEFAULT 0);
    INSERT INTO acct SELECT g, 0 FROM generate_series(1, 2000) g;
    CREATE TABLE other (id serial PRIMARY KEY, t text);`, "app");
}, 120000);
afterAll(async () => {
  killAgents();
  await src?.stop(); await tgt?.stop();
});

const eps = () => ({ source: parseEndpoint(src.uri("app"), "source"), target: parseEndpoint(tgt.uri("app"), "target") });

async function cleanup(name: string) {
  const { source, target } = eps();
  await cleanupMigration(source, target, name);
  await tgt.query(`DROP TABLE IF EXISTS acct, other; DROP SCHEMA IF EXISTS pgferry CASCADE`, "app");
  expect(await leftovers(src, tgt)).toEqual([]);
}

test("a long transaction at start: progress names it, --snapshot-timeout refuses naming the pid and the fix, nothing is left behind", async () => {
  const { source, target } = eps();
  // A writer that began before start and stays open (it has an xid): the slot cannot become consistent until it ends.
  const long = new Client({ connectionString: src.uri("app"), application_name: "long batch" });
  long.on("error", () => undefined); // it is terminated below
  await long.connect();
  const pid = (await long.query(`SELECT pg_backend_pid() AS p`)).rows[0].p as number;
  await long.query(`BEGIN; INSERT INTO other (t) VALUES ('held open')`);
  const events: MigrationEvent[] = [];
  const err = await startMigration(source, target, migrationOptions({ name: "lt", mode: "stream", snapshotTimeoutSec: 4 }), (e) => events.push(e))
    .then(() => undefined, (e) => e as PgferryError);
  expect(err?.code).toBe("snapshot_timeout");
  expect(err!.message).toContain(`pid ${pid}`);
  expect(err!.message).toContain(`SELECT pg_terminate_backend(${pid})`);
  expect(err!.message).toContain("INSERT INTO other");
  const waits = events.filter((e) => e.type === "snapshotWait");
  expect(waits.length).toBeGreaterThan(0);
  expect(waits[0]).toMatchObject({ blocking: [expect.objectContaining({ pid, user: "postgres", database: "app" })] });
  // Nothing left behind: no slot, no publication (the load's failure path released them).
  expect(await leftovers(src, tgt)).toEqual([]);

  // Without a limit, start waits (saying for what); ending that transaction — the fix the refusal names — lets it go on.
  const waited: number[] = [];
  const res = await startMigration(source, target, migrationOptions({ name: "lt", mode: "stream", snapshotTimeoutSec: 0 }), (e) => {
    if (e.type === "snapshotWait") {
      waited.push(e.waitedSec);
      if (waited.length === 1) void src.query(`SELECT pg_terminate_backend(${e.blocking[0].pid})`);
    }
  });
  await long.end().catch(() => undefined);
  expect(waited.length).toBeGreaterThan(0);
  expect(res.phase).toBe("ReadyToCutover");
  // The terminated transaction's row never existed: the tables are equal (sequences are synced at cutover).
  const report = await verifyMigration(source, target, { hashes: true });
  expect(report.tables.filter((t) => !t.ok)).toEqual([]);
  await cleanup("lt");
}, 180000);

test("a slot invalidated while the consumer was away: status, agent and cutover say so; cleanup and start again converges", async () => {
  const { source, target } = eps();
  expect((await startMigration(source, target, migrationOptions({ name: "sl", mode: "stream", jobs: 2 }))).phase).toBe("ReadyToCutover");
  // The consumer is away (no agent) while the source writes more WAL than max_slot_wal_keep_size allows.
  await src.query(`ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'`);
  await src.query(`SELECT pg_reload_conf()`);
  try {
    await until("the slot to be invalidated", async () => {
      await src.query(`INSERT INTO other (t) SELECT repeat('w', 200) FROM generate_series(1, 2000); SELECT pg_switch_wal()`, "app");
      await src.query(`CHECKPOINT`);
      return (await src.query(`SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'pgferry_sl'`))[0]?.wal_status === "lost";
    }, 60000);
  } finally {
    await src.query(`ALTER SYSTEM RESET max_slot_wal_keep_size`);
    await src.query(`SELECT pg_reload_conf()`);
  }
  const st = await migrationStatus(source, target, "sl");
  expect(st.slotLost).toMatch(/invalidated \(wal_status lost\)[\s\S]*pgferry cleanup --name sl, drop the migrated tables on the target[\s\S]*then pgferry start again/);
  // The agent stops (no endless retry) with the explanation.
  const a = spawnAgent(["--name", "sl"], { source: src.uri("app"), target: tgt.uri("app") });
  expect(await exited(a, "agent on a lost slot")).not.toBe(0);
  expect(a.log()).toMatch(/slot "pgferry_sl" on the source was invalidated[\s\S]*pgferry cleanup --name sl/);
  const cut = await cutoverMigration(source, target, { name: "sl", freezeWrites: true, timeoutSec: 30, jobs: 2 }).then(() => undefined, (e) => e as PgferryError);
  expect(cut?.code).toBe("slot_lost");
  expect(cut!.message).toContain("Nothing was frozen");
  // The documented way back: cleanup, start again — then it streams and cuts over, equal.
  await cleanupMigration(source, target, "sl");
  await tgt.query(`DROP TABLE acct, other`, "app");
  expect((await startMigration(source, target, migrationOptions({ name: "sl", mode: "stream", jobs: 2 }))).phase).toBe("ReadyToCutover");
  const writer = new Writer(src.uri("app"), (i) => `UPDATE acct SET n = n + 1 WHERE id = ${(i % 2000) + 1}`).start();
  const b = spawnAgent(["--name", "sl"], { source: src.uri("app"), target: tgt.uri("app") });
  await until("the agent to stream", async () => /streaming/.test(b.log()));
  await moreWrites(writer);
  const done = await cutoverMigration(source, target, { name: "sl", freezeWrites: true, timeoutSec: 60, jobs: 2 });
  await writer.stop();
  expect(done.phase).toBe("Completed");
  expect(await exited(b, "agent after cutover")).toBe(0);
  await src.query(done.undoFreezeSql.join("\n"), "app");
  expect((await verifyMigration(source, target, { hashes: true })).ok).toBe(true);
  await cleanup("sl");
}, 240000);
