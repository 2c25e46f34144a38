/**
 * Network faults between each pair, through a TCP fault proxy (test/support/faultProxy.ts): pgferry ↔ source,
 * pgferry ↔ target, and target ↔ source for the subscription (--source-host-for-target). Stalls (packets
 * vanish, no FIN/RST) mid-CDC are detected within the stall timeout and the agent converges after the heal;
 * a reset/drop mid-load makes start fail naming the broken link, and the re-run converges; a stall
 * mid-cutover fails naming the link, and the migration is resumable (abort → streaming → cutover).
 * The figures (faults injected, survived, seconds to detect a stall) are printed at the end.
 */
import { LocalServer } from "../provider/embedded/localServer";
import {
  abortCutover, cleanupMigration, cutoverMigration, migrationOptions, parseEndpoint, PgferryError, startMigration, verifyMigration,
} from "../provider/engine";
import { ensureBuilt } from "./support/build";
import { exited, killAgents, spawnAgent, until } from "./support/agents";
import { FaultProxy } from "./support/faultProxy";
import { leftovers, startServerSet, Writer } from "./support/servers";

const STALL_SEC = 3;
let src: LocalServer, tgt: LocalServer;
const proxies: FaultProxy[] = [];
const figures = { injected: 0, survived: 0, detectSeconds: [] as number[] };

beforeAll(async () => {
  ensureBuilt();
  // Short walsender/walreceiver timeouts: the subscription's own stall detection, within the test's time.
  [src, tgt] = await startServerSet([{ major: 15, settings: { wal_sender_timeout: "3s" } }, { major: 17, settings: { wal_receiver_timeout: "3s" } }]);
  await src.createDatabase("app");
  await tgt.createDatabase("app");
  await src.query(`CREATE TABLE acct (id int PRIMARY KEY, n int NOT NULL DEFAULT 0, note text);
    CREATE TABLE big (id int PRIMARY KEY, payload text);
    INSERT INTO acct SELECT g, 0, 'x' FROM generate_series(1, 1000) g;
    INSERT INTO big SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 150000) g;`, "app");
}, 120000);
afterAll(async () => {
  killAgents();
  for (const p of proxies) await p.close();
  await src?.stop(); await tgt?.stop();
  console.log(`faults: injected ${figures.injected}, survived ${figures.survived}; stall detected after ` +
    `${figures.detectSeconds.map((s) => s.toFixed(1)).join(", ")} s (--stall-timeout ${STALL_SEC})`);
});

const proxy = async (server: LocalServer) => { const p = await FaultProxy.start(server.port); proxies.push(p); return p; };
const writes = (i: number) => `UPDATE acct SET n = n + 1, note = 'w${i}' WHERE id = ${(i % 1000) + 1}`;
const sum = async (s: LocalServer) => (await s.query(`SELECT sum(n)::int AS s FROM acct`, "app"))[0].s as number;

async function cleanup(name: string) {
  const source = parseEndpoint(src.uri("app"), "source"), target = parseEndpoint(tgt.uri("app"), "target");
  await cleanupMigration(source, target, name);
  await tgt.query(`DROP TABLE IF EXISTS acct, big; DROP SCHEMA IF EXISTS pgferry CASCADE`, "app");
  expect(await leftovers(src, tgt)).toEqual([]);
}

test("a reset or drop mid-load: start fails naming the broken link; the re-run converges", async () => {
  for (const [side, fault] of [["source", "reset"], ["target", "drop"]] as const) {
    const pSrc = await proxy(src), pTgt = await proxy(tgt);
    const source = parseEndpoint(pSrc.via(src.uri("app")), "source"), target = parseEndpoint(pTgt.via(tgt.uri("app")), "target");
    const o = migrationOptions({ name: "ld", mode: "stream", jobs: 2 });
    const run = startMigration(source, target, o);
    const failed = run.then(() => undefined, (e) => e as PgferryError);
    await until("the load's COPY to run", async () => (await tgt.query(`SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE application_name = 'pgferry load' AND query LIKE 'COPY%'`, "app"))[0].n > 0, 60000);
    const p = side === "source" ? pSrc : pTgt;
    if (fault === "reset") p.reset(); else p.drop();
    figures.injected++;
    const err = await failed;
    expect(err).toBeInstanceOf(PgferryError);
    const port = side === "source" ? pSrc.port : pTgt.port;
    expect(err!.message).toContain(`the connection to the ${side} 127.0.0.1:${port} was lost`);
    expect(err!.message).not.toContain(src.password);
    // The re-run (the link is back) converges.
    expect((await startMigration(source, target, o)).phase).toBe("ReadyToCutover");
    const cut = await cutoverMigration(source, target, { name: "ld", freezeWrites: true, timeoutSec: 60, jobs: 2 });
    expect(cut.phase).toBe("Completed");
    await src.query(cut.undoFreezeSql.join("\n"), "app");
    expect((await verifyMigration(parseEndpoint(src.uri("app"), "source"), parseEndpoint(tgt.uri("app"), "target"), { hashes: true })).ok).toBe(true);
    figures.survived++;
    await cleanup("ld");
  }
}, 300000);

test("stalls mid-CDC (agent ↔ source, agent ↔ target) are detected within the stall timeout; the agent converges after the heal", async () => {
  const pSrc = await proxy(src), pTgt = await proxy(tgt);
  const direct = { source: parseEndpoint(src.uri("app"), "source"), target: parseEndpoint(tgt.uri("app"), "target") };
  expect((await startMigration(direct.source, direct.target, migrationOptions({ name: "cdc", mode: "stream", jobs: 2, include: ["public.acct"] }))).phase)
    .toBe("ReadyToCutover");
  const writer = new Writer(src.uri("app"), writes).start();
  const a = spawnAgent(["--name", "cdc", "--stall-timeout", String(STALL_SEC)], { source: pSrc.via(src.uri("app")), target: pTgt.via(tgt.uri("app")) });
  await until("the agent to apply changes", async () => (await sum(tgt)) > 50);
  for (const [side, p] of [["source", pSrc], ["target", pTgt]] as const) {
    const before = (a.log().match(/stalled/g) ?? []).length;
    p.stall();
    figures.injected++;
    const t0 = Date.now();
    // Bounded: the stall timeout plus the watchdog's tick and the time a statement needs to be in flight.
    await until(`the agent to detect the ${side} stall`, async () => (a.log().match(/stalled/g) ?? []).length > before, (STALL_SEC + 10) * 1000);
    figures.detectSeconds.push((Date.now() - t0) / 1000);
    expect(a.log()).toContain(`the connection to the ${side} 127.0.0.1:${p.port} stalled`);
    p.heal();
    const applied = await sum(tgt);
    await until(`the agent to apply again after the ${side} heal`, async () => (await sum(tgt)) > applied + 20, 60000);
    figures.survived++;
  }
  await writer.stop();
  expect(writer.errors).toEqual([]);
  const want = await sum(src);
  await until("the target to converge", async () => (await sum(tgt)) === want, 60000);
  a.proc.kill("SIGTERM");
  expect(await exited(a, "SIGTERM")).toBe(0);
  expect(a.log()).not.toContain(src.password);
  await cleanup("cdc");
}, 240000);

test("a stall mid-cutover fails naming the link and leaves the migration resumable; a subscription survives a target ↔ source stall", async () => {
  const pSrc = await proxy(src), pRepl = await proxy(src);
  const direct = { source: parseEndpoint(src.uri("app"), "source"), target: parseEndpoint(tgt.uri("app"), "target") };
  // Subscription mode: the target reaches the source through its own proxy.
  expect((await startMigration(direct.source, direct.target, migrationOptions({ name: "cut", jobs: 2, include: ["public.acct"],
    sourceHostForTarget: pRepl.hostPort }))).phase).toBe("ReadyToCutover");
  const writer = new Writer(src.uri("app"), writes).start();
  await until("the subscription to apply", async () => (await sum(tgt)) > 50);
  // target ↔ source: the walreceiver times out (wal_receiver_timeout) and the apply worker reconnects after the heal.
  const workerPid = async () => (await tgt.query(`SELECT pid FROM pg_stat_subscription WHERE subname = 'pgferry_cut' AND relid IS NULL`, "app"))[0]?.pid ?? null;
  const pid0 = await workerPid();
  pRepl.stall();
  figures.injected++;
  const t0 = Date.now();
  await until("the apply worker to notice the stall", async () => (await workerPid()) !== pid0, 60000);
  figures.detectSeconds.push((Date.now() - t0) / 1000);
  pRepl.heal();
  let applied = await sum(tgt);
  await until("the subscription to apply again after the heal", async () => (await sum(tgt)) > applied + 20, 90000);
  figures.survived++;
  await writer.stop();

  // pgferry ↔ source stalls while the cutover waits for the fence: it fails naming the source.
  const viaProxy = parseEndpoint(pSrc.via(src.uri("app")), "source");
  const cut = cutoverMigration(viaProxy, direct.target, { name: "cut", freezeWrites: true, timeoutSec: 120, jobs: 2, stallTimeoutSec: STALL_SEC,
    onProgress: (m) => { if (/waiting for the target to apply/.test(m)) { pRepl.stall(); pSrc.stall(); } } });
  figures.injected++;
  const err = await cut.then(() => undefined, (e) => e as PgferryError);
  expect(err?.code).toBe("stalled");
  expect(err!.message).toContain(`the connection to the source 127.0.0.1:${pSrc.port} stalled`);
  expect(err!.message).toContain("cutover --abort");
  pSrc.heal(); pRepl.heal();
  // Resumable: abort (unfreezes the source), streaming again, then the cutover completes.
  const ab = await abortCutover(direct.source, direct.target, "cut");
  expect(ab.phase).toBe("ReadyToCutover");
  await src.query(`UPDATE acct SET n = n + 1 WHERE id = 1`, "app"); // writable again
  applied = await sum(src);
  await until("streaming after the abort", async () => (await sum(tgt)) === applied, 90000);
  const done = await cutoverMigration(direct.source, direct.target, { name: "cut", freezeWrites: true, timeoutSec: 120, jobs: 2 });
  expect(done.phase).toBe("Completed");
  expect(done.sourceLeftReadOnly).toBe(true);
  figures.survived++;
  expect((await verifyMigration(direct.source, direct.target, { onlyTables: ["public.acct"], hashes: true })).ok).toBe(true);
  await src.query(done.undoFreezeSql.join("\n"), "app");
  await cleanup("cut");
}, 300000);
