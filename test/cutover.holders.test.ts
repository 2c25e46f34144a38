/**
 * The gate's pre-check verdicts stand on the source's statistics (a table whose fingerprint did not move since the
 * pre-check is not read again at the fence). A session may hold its latest counts unflushed for up to 10 s after going
 * idle, so the fence first looks for such sessions ("holders") and then compares every table. A session that leaves
 * (flushing its counts as it exits) between the gate's read of the fingerprints and its look for holders was in
 * neither: the fingerprints missed its counts and the holders missed the session, and a change it made that the target
 * lost passed the gate unseen. The look for holders now comes first.
 *
 * Made exact here (real servers 15 → 17, stream mode, no --freeze-writes): the application's second transaction
 * within a second of its first — its counts wait in the session — updates a table while it is out of the
 * publication (the target never gets that change); the gate's read of the fingerprints is held by a lock on the
 * target's apply counters while the application disconnects, then released.
 */
import { Client } from "pg";
import { LocalServer } from "../provider/embedded/localServer";
import { abortCutover, cleanupMigration, cutoverMigration, migrationOptions, parseEndpoint, PgferryError, startMigration, verifyMigration } from "../provider/engine";
import { leftovers, startServers } from "./support/servers";
import { until } from "./support/until";

let src: LocalServer, tgt: LocalServer;
beforeAll(async () => { [src, tgt] = await startServers(15, 17); });
afterAll(async () => { await src?.stop(); await tgt?.stop(); });

test("a session that leaves between the gate's reads of the statistics cannot hide a change the target lost", async () => {
  const db = "holder_left", name = "holder_left";
  await src.createDatabase(db);
  await tgt.createDatabase(db);
  await src.query(`CREATE TABLE parent (id int PRIMARY KEY, v text); CREATE TABLE child (id int PRIMARY KEY, v text);
    INSERT INTO parent SELECT g, 'p' FROM generate_series(1, 100) g; INSERT INTO child SELECT g, 'c' FROM generate_series(1, 100) g;`, db);
  const source = parseEndpoint(src.uri(db), "source"), target = parseEndpoint(tgt.uri(db), "target");
  expect((await startMigration(source, target, migrationOptions({ name, mode: "stream", jobs: 1 }))).phase).toBe("ReadyToCutover");
  const app = new Client({ connectionString: src.uri(db) }), lock = new Client({ connectionString: tgt.uri(db) });
  app.on("error", () => undefined);
  await Promise.all([app.connect(), lock.connect()]);
  const appPid = (await app.query(`SELECT pg_backend_pid() AS p`)).rows[0].p as number;
  let held: Promise<void> | undefined;
  try {
    const afterStep = async (step: string) => {
      if (step === "warm-up") {
        // After the pre-check (child matched on both sides): a change the target never gets, in the application's
        // second transaction within a second of its first (the first flushes its counts; the second's wait).
        await src.query(`ALTER PUBLICATION pgferry_${name} DROP TABLE child`, db);
        await app.query(`UPDATE parent SET v = 'flushed' WHERE id = 1`);
        await app.query(`UPDATE child SET v = 'lost' WHERE id = 5`);
        await src.query(`ALTER PUBLICATION pgferry_${name} ADD TABLE child`, db);
      }
      if (step === "fence") {
        // The gate's read of the fingerprints waits on the target's apply counters; meanwhile the application leaves.
        await lock.query(`BEGIN`);
        await lock.query(`LOCK TABLE pgferry.apply_stats IN ACCESS EXCLUSIVE MODE`);
        held = (async () => {
          try {
            await until("the gate's read of the fingerprints to wait for the lock", async () => (await tgt.query(`SELECT count(*)::int AS n
              FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%inserts::float8%apply_stats%'`, db))[0].n > 0, 60000);
            await app.end();
            await until("the application's session to be gone", async () => (await src.query(`SELECT 1 FROM pg_stat_activity WHERE pid = ${appPid}`, db)).length === 0, 60000);
          } finally {
            await lock.query(`COMMIT`);
          }
        })();
      }
    };
    // Compared by the whole-table hashes alone (not by key: the key check would see the publication altered).
    const failed = await cutoverMigration(source, target, { name, freezeWrites: false, timeoutSec: 120, jobs: 1, graceSec: 10, verify: "hashes",
      gateByKey: false, afterStep }).then(() => undefined, (e) => e as PgferryError);
    await held;
    expect(failed?.code).toBe("verify_failed");
    expect(failed?.message).toMatch(/public\.child: contents differ \(100 rows on both sides/);
    expect(failed?.message).not.toMatch(/public\.parent/);
  } finally {
    await held?.catch(() => undefined);
    await Promise.all([app.end().catch(() => undefined), lock.end().catch(() => undefined)]);
  }
  // Repaired, the cutover completes and the target equals the source.
  await abortCutover(source, target, name);
  await tgt.query(`UPDATE child SET v = 'lost' WHERE id = 5`, db);
  expect((await cutoverMigration(source, target, { name, freezeWrites: false, timeoutSec: 120, jobs: 1, graceSec: 10, verify: "hashes" })).phase)
    .toBe("Completed");
  expect((await verifyMigration(source, target, { hashes: true })).problems).toEqual([]);
  await cleanupMigration(source, target, name);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});
