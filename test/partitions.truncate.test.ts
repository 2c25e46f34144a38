/**
 * A TRUNCATE of a single leaf partition during CDC (issue: silence is the worst bug). The publication publishes
 * through the root (publish_via_partition_root) and PostgreSQL then sends nothing for a leaf truncated alone, in
 * both modes: before, the target kept the leaf's old rows and only the gate's counts noticed, inside the downtime.
 * Now status names the leaf while streaming and the cutover copies it again while writes are stopped.
 * Real servers 15 → 17, both CDC modes.
 */
import { LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, cutoverMigration, migrationOptions, migrationStatus, parseEndpoint, startMigration } from "../provider/engine";
import { leftovers, startServers } from "./support/servers";

let src: LocalServer, tgt: LocalServer;
beforeAll(async () => { [src, tgt] = await startServers(15, 17); });
afterAll(async () => { await src?.stop(); await tgt?.stop(); });

test.each(["subscription", "stream"] as const)("mode %s: a leaf partition truncated alone is named by status and copied again at cutover", async (mode) => {
  const db = `trunc_${mode}`;
  await src.createDatabase(db); await tgt.createDatabase(db);
  await src.query(`CREATE TABLE events (id int, k int, v text, PRIMARY KEY (id, k)) PARTITION BY LIST (k);
    CREATE TABLE events_1 PARTITION OF events FOR VALUES IN (1); CREATE TABLE events_2 PARTITION OF events FOR VALUES IN (2);
    CREATE TABLE plain (id int PRIMARY KEY);
    INSERT INTO events SELECT g, 1 + g % 2, 'old' FROM generate_series(1, 400) g; INSERT INTO plain SELECT generate_series(1, 10)`, db);
  const source = parseEndpoint(src.uri(db), "source"), target = parseEndpoint(tgt.uri(db), "target");
  const started = await startMigration(source, target, migrationOptions({ name: "trunc", mode, jobs: 2 }));
  expect(started.phase).toBe("ReadyToCutover");
  expect((await migrationStatus(source, target, "trunc")).truncatedPartitions).toEqual([]);

  // The application empties one partition and writes on: the new rows replicate, the TRUNCATE does not.
  await src.query(`TRUNCATE events_1; INSERT INTO events SELECT g, 1, 'new' FROM generate_series(1001, 1010) g;
    INSERT INTO events VALUES (2001, 2, 'new'); INSERT INTO plain VALUES (11)`, db);
  const count = async (s: LocalServer, t: string) => (await s.query(`SELECT count(*)::int AS n FROM ${t}`, db))[0].n as number;
  const st = await migrationStatus(source, target, "trunc");
  expect(st.truncatedPartitions).toEqual(["public.events_1"]);
  expect(await count(src, "events_1")).toBe(10);

  const cut = await cutoverMigration(source, target, { name: "trunc", freezeWrites: true, timeoutSec: 120, jobs: 2 });
  expect(cut.phase).toBe("Completed");
  expect(cut.truncatedPartitions).toEqual({ tables: ["public.events_1"], rows: 10 });
  for (const t of ["events_1", "events_2", "plain"]) expect(await count(tgt, t)).toBe(await count(src, t));
  expect((await tgt.query(`SELECT count(*)::int AS n FROM events_1 WHERE v = 'old'`, db))[0].n).toBe(0);
  await cleanupMigration(source, target, "trunc");
  expect(await leftovers(src, tgt, db)).toEqual([]);
}, 240000);
