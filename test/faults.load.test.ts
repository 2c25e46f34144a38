/**
 * A stalled link during the load (packets vanish at a middlebox, no FIN/RST: TCP keepalives cannot see it,
 * test/support/faultProxy.ts): pgferry ↔ source and pgferry ↔ target, while a COPY is in flight. start
 * must fail within a bounded time (--stall-timeout plus its clean-up), naming the link that stopped, leave
 * no slot once the link is back, and the re-run must converge and verify equal. The detection times are
 * printed at the end.
 */
import { LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, migrationOptions, parseEndpoint, PgferryError, startMigration, verifyMigration } from "../provider/engine";
import { ensureBuilt } from "./support/build";
import { until } from "./support/agents";
import { FaultProxy } from "./support/faultProxy";
import { leftovers, startServerSet } from "./support/servers";

const STALL_SEC = 3;
let src: LocalServer, tgt: LocalServer;
const proxies: FaultProxy[] = [];
const detectSeconds: string[] = [];

beforeAll(async () => {
  ensureBuilt();
  [src, tgt] = await startServerSet([{ major: 15 }, { major: 17 }]);
  await src.createDatabase("app");
  await tgt.createDatabase("app");
  // Big enough (~100 MB) that the COPY is still running when the link stalls.
  await src.query(`CREATE TABLE big (id int PRIMARY KEY, payload text);
    INSERT INTO big SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 150000) g;`, "app");
}, 120000);
afterAll(async () => {
  for (const p of proxies) await p.close();
  await src?.stop(); await tgt?.stop();
  console.log(`load stalls: start failed ${detectSeconds.join(", ")} after the stall (--stall-timeout ${STALL_SEC})`);
});

test.each(["source", "target"] as const)("a %s stall mid-COPY: start fails naming that link within a bounded time; the re-run converges", async (side) => {
  const pSrc = await FaultProxy.start(src.port), pTgt = await FaultProxy.start(tgt.port);
  proxies.push(pSrc, pTgt);
  const source = parseEndpoint(pSrc.via(src.uri("app")), "source"), target = parseEndpoint(pTgt.via(tgt.uri("app")), "target");
  const o = migrationOptions({ name: "lst", mode: "stream", jobs: 1, stallTimeoutSec: STALL_SEC });
  const failed = startMigration(source, target, o).then(() => undefined, (e) => e as PgferryError);
  await until("the load's COPY to run", async () => (await tgt.query(`SELECT count(*)::int AS n FROM pg_stat_activity
    WHERE application_name = 'pgferry load' AND query LIKE 'COPY%'`, "app"))[0].n > 0, 60000);
  const p = side === "source" ? pSrc : pTgt;
  p.stall();
  const t0 = Date.now();
  const err = await failed;
  const seconds = (Date.now() - t0) / 1000;
  detectSeconds.push(`${side} ${seconds.toFixed(1)} s`);
  expect(err).toBeInstanceOf(PgferryError);
  expect(err!.code).toBe("stalled");
  expect(err!.message).toContain(`the connection to the ${side} 127.0.0.1:${p.port} stalled`);
  expect(err!.message).toContain("loading table public.big stopped");
  expect(err!.message).not.toContain(src.password);
  // A hang detector, not a timing assertion: bounded by the stall timeout plus the clean-up's own bounded waits.
  expect(seconds).toBeLessThan(STALL_SEC + 20);
  p.heal();
  // No slot left behind, or the error said so (a stalled source cannot be asked to drop it; the re-run does).
  const slots = await src.query(`SELECT slot_name FROM pg_replication_slots WHERE slot_name = 'pgferry_lst'`, "app");
  if (slots.length) expect(err!.message).toContain(`the replication slot "pgferry_lst" could not be dropped`);
  // The re-run (the link is back) drops whatever the stalled run could not, reloads and converges.
  expect((await startMigration(source, target, o)).phase).toBe("ReadyToCutover");
  const direct = { source: parseEndpoint(src.uri("app"), "source"), target: parseEndpoint(tgt.uri("app"), "target") };
  expect((await verifyMigration(direct.source, direct.target, { hashes: true })).ok).toBe(true);
  await cleanupMigration(direct.source, direct.target, "lst");
  await tgt.query(`DROP TABLE IF EXISTS big; DROP SCHEMA IF EXISTS pgferry CASCADE`, "app");
  expect(await leftovers(src, tgt)).toEqual([]);
}, 180000);
