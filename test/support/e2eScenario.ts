/**
 * The end-to-end scenario both CDC modes must pass, for any source major: start under concurrent writes
 * of every change kind, values lossy parsing would change, re-run start (no-op), status, TRUNCATE while
 * streaming, frozen cutover, verify with our verifier and ../shared/tools/verify.sh, cleanup, and
 * nothing left behind. Used by e2e.modes (15 → 17) and e2e.pg13 (13 → 17).
 */
import { LocalServer } from "../../provider/embedded/localServer";
import {
  cleanupMigration, cutoverMigration, migrationOptions, migrationStatus, parseEndpoint, startMigration, verifyMigration,
} from "../../provider/engine";
import { EDGE_SCHEMA, edgeChanges } from "./fixtures";
import { leftovers, moreWrites, runVerifySh, Writer } from "./servers";

export const MODES = ["subscription", "stream"] as const;
export type Mode = (typeof MODES)[number];

/** One database per mode on each server, with the EDGE fixture and a table of hard-to-keep values. */
export async function prepareModeDatabases(src: LocalServer, tgt: LocalServer): Promise<void> {
  for (const mode of MODES) {
    await src.createDatabase(`app_${mode}`);
    await tgt.createDatabase(`app_${mode}`);
    await src.query(EDGE_SCHEMA + `
    CREATE DOMAIN posint AS int CHECK (VALUE > 0);
    CREATE TABLE typed (id int PRIMARY KEY, ts timestamptz, j jsonb, jn jsonb, arr int[], n numeric, f float8, d date, b bytea,
      m mood, p posint, iv interval, t text);`, `app_${mode}`);
  }
}

export async function modeEndToEnd(src: LocalServer, tgt: LocalServer, mode: Mode): Promise<void> {
  const db = `app_${mode}`;
  const source = parseEndpoint(src.uri(db), "source"), target = parseEndpoint(tgt.uri(db), "target");
  const opts = migrationOptions({ name: "e2e", jobs: 3, mode });
  const writer = new Writer(src.uri(db), edgeChanges).start();
  const phases: string[] = [];
  const started = await startMigration(source, target, opts, (e) => { if (e.type === "phase") phases.push(e.phase); });
  expect(started.phase).toBe("ReadyToCutover");
  expect(phases).toEqual(["SchemaSync", "Loading", "IndexBuild", "ReadyToCutover"]);
  expect(started.load!.rows).toBeGreaterThan(9000);

  // A re-run once streaming is a no-op.
  const again = await startMigration(source, target, opts);
  expect(again).toMatchObject({ alreadyRunning: true, phase: "ReadyToCutover" });

  // Changes made while streaming, including a TRUNCATE and rows moving between partitions.
  await moreWrites(writer);
  // Values that lossy parsing would change: µs, big and trailing-zero jsonb numbers, JSON null vs SQL NULL, NaN, infinities.
  await src.query(`INSERT INTO typed VALUES
    (1, '2024-01-01 00:00:00.123456+00', '{"x": 12345678901234567890, "y": 2.50}', 'null', '{1,NULL,3}', 'NaN', 'Infinity', 'infinity',
     '\\x00ff10', 'happy', 5, '1 day 00:00:00.000001', E'tab\\there ''quote'' \\\\ backslash'),
    (2, '-infinity', NULL, NULL, '{}', '-0.000000000000000000001', '-Infinity', '-infinity', '\\x', 'sad', 1, '-3 years', NULL);
    UPDATE typed SET n = n, f = 1e-300 WHERE id = 2;`, db);
  await src.query(`TRUNCATE "Edge Aux"."Mixed Case Ü"; INSERT INTO "Edge Aux"."Mixed Case Ü" SELECT g, 'again ' || g FROM generate_series(1, 50) g`, db);
  const status = await migrationStatus(source, target, "e2e");
  expect(status.phase).toBe("ReadyToCutover");
  if (mode === "stream") {
    expect(status.appliedLsn).toBeDefined();
    // No agent runs: what waits in the slot is counted exactly (the writer never touches "typed": 2 inserts + 1 update).
    expect(status.pendingByTable?.find((t) => t.table === "public.typed")).toEqual({ table: "public.typed", changes: 3 });
    expect(status.pendingChanges).toBeGreaterThanOrEqual(3 + 51);
  }
  else expect(status.subscription?.workerPid).toBeGreaterThan(0);
  expect(status.tables.every((t) => t.status === "copied")).toBe(true);
  expect(status.lagBytes).toBeGreaterThanOrEqual(0);

  // The writer is still writing: the freeze ends its session and makes the source read-only.
  const cut = await cutoverMigration(source, target, { name: "e2e", freezeWrites: true, timeoutSec: 120, jobs: 2 });
  await writer.stop();
  expect(writer.transactions).toBeGreaterThan(10);
  expect(writer.errors).toEqual([]);
  expect(cut.phase).toBe("Completed");
  expect(cut.sequencesSynced).toBe(4);
  expect(cut.endedSessions.length).toBeGreaterThanOrEqual(1);
  expect(await src.query(`SELECT current_setting('default_transaction_read_only') AS ro`, db)).toEqual([{ ro: "on" }]);

  expect(await tgt.query(`SELECT jn IS NULL AS sql_null, jn::text AS jn, j::text AS j, ts::text AS ts FROM typed WHERE id = 1`, db))
    .toEqual([{ sql_null: false, jn: "null", j: '{"x": 12345678901234567890, "y": 2.50}', ts: "2024-01-01 00:00:00.123456+00" }]);
  const report = await verifyMigration(source, target);
  expect(report.problems).toEqual([]);
  expect(report.ok).toBe(true);

  // Cutover again is a no-op; cleanup removes the state (and the control schema with it).
  expect((await cutoverMigration(source, target, { name: "e2e", freezeWrites: true, timeoutSec: 10, jobs: 1 })).alreadyCompleted).toBe(true);
  await cleanupMigration(source, target, "e2e");
  expect(await leftovers(src, tgt, db)).toEqual([]);
  expect(await tgt.query(`SELECT nspname FROM pg_namespace WHERE nspname = 'pgferry'`, db)).toEqual([]);

  const sh = runVerifySh(src.uri(db), tgt.uri(db));
  if (sh) expect({ code: sh.code, output: sh.code === 0 ? "" : sh.output }).toEqual({ code: 0, output: "" });
}
