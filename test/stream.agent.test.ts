/**
 * Stream mode's long-lived applier, `pgferry agent`, as a real process: kill -9 mid-stream under writes
 * and restart it, kill -9 inside a big transaction, a source restart mid-stream (it reconnects), one source transaction larger than
 * the applier's batches, SIGTERM, a second agent refused while the first holds the slot, cutover while the agent
 * runs (it waits for the fence, then the agent exits by itself) — and source = target at the end.
 */
import { LocalServer } from "../provider/embedded/localServer";
import {
  cleanupMigration, cutoverMigration, migrationOptions, migrationStatus, parseEndpoint, startMigration, verifyMigration,
} from "../provider/engine";
import { EDGE_SCHEMA, edgeChanges } from "./support/fixtures";
import { leftovers, startServers, Writer } from "./support/servers";
import { ensureBuilt } from "./support/build";
import { exited, killAgents, spawnAgent, until } from "./support/agents";

let src: LocalServer, tgt: LocalServer;

beforeAll(async () => {
  ensureBuilt();
  [src, tgt] = await startServers(15, 17);
  await src.createDatabase("app");
  await tgt.createDatabase("app");
  await src.query(EDGE_SCHEMA + `CREATE TABLE bulk (id int PRIMARY KEY, payload text);`, "app");
});
afterAll(async () => {
  killAgents();
  await src?.stop(); await tgt?.stop();
});

const agent = (nodeArgs: string[] = []) => spawnAgent(["--name", "ag"], { source: src.uri("app"), target: tgt.uri("app") }, nodeArgs);

test("agent: kill -9, source restart, big transaction, single consumer, cutover while running", async () => {
  const source = parseEndpoint(src.uri("app"), "source"), target = parseEndpoint(tgt.uri("app"), "target");
  expect((await startMigration(source, target, migrationOptions({ name: "ag", mode: "stream", jobs: 2 }))).phase).toBe("ReadyToCutover");

  let writer = new Writer(src.uri("app"), (i) => edgeChanges(i)).start();
  let a = agent();
  await until("the agent to apply changes", async () => (await tgt.query(`SELECT count(*)::int AS n FROM parent WHERE a >= 100000`, "app"))[0].n > 20);
  a.proc.kill("SIGKILL"); // mid-stream, possibly mid-transaction
  await exited(a, "kill -9");

  // A second consumer while one holds the slot is refused by the server and retries: the slot is the lock.
  a = agent();
  const second = agent();
  await until("the server to refuse one of the two agents", async () => /is active for PID|being used/i.test(second.log() + a.log()), 30000);
  second.proc.kill("SIGTERM");
  expect(await exited(second, "SIGTERM of the refused second agent")).toBe(0);

  // The source restarts under the agent: it reconnects and goes on.
  await writer.stop();
  await src.restart();
  writer = new Writer(src.uri("app"), (i) => edgeChanges(10000 + i)).start();
  await until("the agent to reconnect", async () => /reconnecting/.test(a.log()) && /streaming[\s\S]*streaming/.test(a.log()));
  // SIGTERM: a clean stop after committing what it holds.
  a.proc.kill("SIGTERM");
  expect(await exited(a, "SIGTERM")).toBe(0);
  expect(a.log()).toMatch(/agent stopped/);

  // One source transaction (~55 MB of row data, over 100 MB as JS strings) larger than the agent's whole
  // heap (48 MB): the stream pauses while the target applies, so memory stays bounded.
  a = agent(["--max-old-space-size=48"]);
  await src.query(`INSERT INTO bulk SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 200000) g`, "app");
  // kill -9 mid-transaction: while the agent's target transaction holds part of the big one, uncommitted.
  await until("the agent to be inside the big transaction", async () => (await tgt.query(`SELECT count(*)::int AS n FROM pg_stat_activity
    WHERE application_name = 'pgferry stream' AND xact_start IS NOT NULL AND query LIKE 'INSERT INTO "public"."bulk"%'`, "app"))[0].n > 0, 60000);
  expect((await tgt.query(`SELECT count(*)::int AS n FROM bulk`, "app"))[0].n).toBe(0);
  a.proc.kill("SIGKILL");
  await exited(a, "kill -9 mid-transaction");
  a = agent(["--max-old-space-size=48"]);
  await until("the big transaction to arrive", async () => (await tgt.query(`SELECT count(*)::int AS n FROM bulk`, "app"))[0].n === 200000, 180000);
  const st = await migrationStatus(source, target, "ag");
  expect(st.applied!.find((t) => t.table === "public.bulk")).toMatchObject({ inserts: 200000 });

  // Cutover while the agent runs: it waits for the agent to pass the fence, then ends it.
  const cut = await cutoverMigration(source, target, { name: "ag", freezeWrites: true, timeoutSec: 120, jobs: 2 });
  await writer.stop();
  expect(writer.errors).toEqual([]);
  expect(cut.phase).toBe("Completed");
  expect(await exited(a, "cutover while the agent runs")).toBe(0);
  expect(a.log()).toMatch(/agent completed/);

  const report = await verifyMigration(source, target);
  expect(report.problems).toEqual([]);
  await cleanupMigration(source, target, "ag");
  expect(await leftovers(src, tgt)).toEqual([]);
});
