/**
 * The cutover's fence covers an asynchronous commit (synchronous_commit = off) the source already shows. Such a commit
 * is visible as soon as its record is inserted; the WAL writer writes it up to 3 × wal_writer_delay later. The fence
 * was pg_current_wal_lsn() — the WRITTEN position, before that commit — so the drain stopped short of it, the
 * after-fence check (the slot decodes only flushed WAL) did not see it, and the gate compared a source showing the row
 * with a target that never got it: "1001 rows on source, 1000 on target", a verify failure for a change nothing lost.
 * Now the fence is the end of the inserted WAL (cutover/fence.ts), and the drain waits until it is decoded.
 *
 * Made exact here: the source's WAL writer writes every 10 s (wal_writer_delay's maximum), and the application's
 * asynchronous commit comes after the gate's pre-check; stream mode, no --freeze-writes, PostgreSQL 15 → 17.
 */
import { Client } from "pg";
import { LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, cutoverMigration, migrationOptions, parseEndpoint, startMigration, verifyMigration } from "../provider/engine";
import { pageHeaderBefore } from "../provider/engine/cutover/fence";
import { leftovers, startServerSet } from "./support/servers";

let src: LocalServer, tgt: LocalServer;
beforeAll(async () => { [src, tgt] = await startServerSet([{ major: 15, settings: { wal_writer_delay: "10s" } }, { major: 17 }]); });
afterAll(async () => { await src?.stop(); await tgt?.stop(); });

test("the end of the last WAL record, not the next page's header, is the fence", () => {
  // An insert position right after a page header means the last record ended at the page boundary.
  expect(pageHeaderBefore(40, 8192)).toBe(40n); // a segment's first page: long header
  expect(pageHeaderBefore(8192 + 24, 8192)).toBe(24n);
  expect(pageHeaderBefore(5 * 8192 + 24, 8192)).toBe(24n);
  // Anywhere else it is the end of the last record (a record continued onto a page ends after data there).
  expect(pageHeaderBefore(8192 + 40, 8192)).toBe(0n);
  expect(pageHeaderBefore(124, 8192)).toBe(0n);
  expect(pageHeaderBefore(8192 + 4000, 8192)).toBe(0n);
});

test("an asynchronous commit visible on the source before the fence reaches the target; the gate passes", async () => {
  const db = "async_commit", name = "async_commit";
  await src.createDatabase(db);
  await tgt.createDatabase(db);
  await src.query(`CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' FROM generate_series(1, 1000) g`, db);
  const source = parseEndpoint(src.uri(db), "source"), target = parseEndpoint(tgt.uri(db), "target");
  expect((await startMigration(source, target, migrationOptions({ name, mode: "stream", jobs: 1 }))).phase).toBe("ReadyToCutover");
  const app = new Client({ connectionString: src.uri(db) });
  await app.connect();
  try {
    await app.query(`SET synchronous_commit = off`);
    const cut = await cutoverMigration(source, target, { name, freezeWrites: false, timeoutSec: 120, jobs: 1, graceSec: 10, gateByKey: false,
      afterStep: async (step) => { if (step === "warm-up") await app.query(`INSERT INTO t VALUES (1001, 'committed asynchronously')`); } });
    expect(cut.phase).toBe("Completed");
  } finally {
    await app.end();
  }
  expect(await tgt.query(`SELECT v FROM t WHERE id = 1001`, db)).toEqual([{ v: "committed asynchronously" }]);
  expect((await verifyMigration(source, target, { hashes: true })).problems).toEqual([]);
  await cleanupMigration(source, target, name);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});
