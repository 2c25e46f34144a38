/**
 * `--ddl replicate` on Pagila (the real DVD Rental sample, ../shared/datasets/pagila), 15 → 17, both modes: the
 * rental desk keeps writing while the schema changes the way an application release changes it — a column with a
 * volatile default on a table with triggers (customer: last_updated), a serial column on film, a column with a
 * default on the partitioned payment table, a new table with its rows, an index — then a cutover with the default
 * gate and --freeze-writes, verified equal by the engine and by verify.sh. Skipped with a message when ../shared is
 * absent (a user's clone).
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { LocalServer } from "../provider/embedded/localServer";
import {
  cleanupMigration, cutoverMigration, migrationOptions, parseEndpoint, runAgent, startMigration, verifyMigration,
} from "../provider/engine";
import { leftovers, moreWrites, PAGILA, runVerifySh, startServers, Writer } from "./support/servers";

const present = fs.existsSync(path.join(PAGILA, "pagila-data.sql"));
if (!present) console.warn(`skipping the Pagila DDL test: ${PAGILA} not found (a clone without ../shared)`);

let src: LocalServer, tgt: LocalServer;
beforeAll(async () => {
  if (!present) return;
  [src, tgt] = await startServers(15, 17);
  for (const mode of ["subscription", "stream"]) {
    await src.createDatabase(`pagila_${mode}`);
    await tgt.createDatabase(`pagila_${mode}`);
    for (const f of ["pagila-schema.sql", "pagila-data.sql"]) {
      const r = spawnSync("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", src.uri(`pagila_${mode}`), "-f", path.join(PAGILA, f)], { encoding: "utf8" });
      if (r.status !== 0) throw new Error(`loading ${f} failed: ${r.stderr}`);
    }
  }
});
afterAll(async () => { await src?.stop(); await tgt?.stop(); });

const traffic = (i: number) => `BEGIN;
  WITH r AS (INSERT INTO rental (rental_date, inventory_id, customer_id, staff_id)
             VALUES (now() + (${i} || ' seconds')::interval, ${1 + (i % 4500)}, ${1 + (i % 599)}, ${1 + (i % 2)}) RETURNING rental_id, customer_id, staff_id)
  INSERT INTO payment (customer_id, staff_id, rental_id, amount, payment_date)
    SELECT customer_id, staff_id, rental_id, 4.99, '2022-03-15'::timestamptz + (${i} || ' minutes')::interval FROM r;
  UPDATE customer SET email = 'c${i}@example.org' WHERE customer_id = ${1 + (i % 599)};
  UPDATE film SET rental_rate = rental_rate + 0.01 WHERE film_id = ${1 + (i % 1000)};
  COMMIT;`;

const RELEASE = [
  `ALTER TABLE customer ADD COLUMN seen_at timestamptz DEFAULT clock_timestamp()`,
  `ALTER TABLE film ADD COLUMN catalog_no serial`,
  `ALTER TABLE payment ADD COLUMN channel text DEFAULT 'desk'`,
  `CREATE TABLE loyalty (customer_id int PRIMARY KEY REFERENCES customer, points int NOT NULL DEFAULT 0)`,
  `INSERT INTO loyalty SELECT customer_id, customer_id % 7 FROM customer`,
  `CREATE INDEX loyalty_points ON loyalty (points)`,
  `UPDATE loyalty SET points = points + 1 WHERE customer_id % 5 = 0`,
];

const each = present ? test.each : test.skip.each;
each(["subscription", "stream"] as const)("Pagila 15 → 17, --ddl replicate in mode %s: an application release's DDL under writes, cutover, verified equal", async (mode) => {
  const db = `pagila_${mode}`;
  const source = parseEndpoint(src.uri(db), "source"), target = parseEndpoint(tgt.uri(db), "target");
  const name = `pagila_ddl_${mode}`;
  const writer = new Writer(src.uri(db), traffic).start();
  const started = await startMigration(source, target, migrationOptions({ name, jobs: 2, mode, ddl: "replicate" }));
  expect(started.phase).toBe("ReadyToCutover");
  // Stream mode: an agent applies while the release runs (as `pgferry agent` would), and ends at the cutover.
  const stop = new AbortController();
  const agent = mode === "stream" ? runAgent(source, target, { name, signal: stop.signal, maxBackoffMs: 500 }) : undefined;
  await moreWrites(writer);
  for (const sql of RELEASE) await src.query(sql, db);
  await moreWrites(writer);
  await writer.stop();
  expect(writer.errors).toEqual([]);

  const cut = await cutoverMigration(source, target, { name, freezeWrites: true, timeoutSec: 120, jobs: 2 })
    .finally(() => setTimeout(() => stop.abort(), 10000).unref());
  expect(cut.phase).toBe("Completed");
  if (agent) expect((await agent).reason).toBe("completed");
  // The backfilled columns hold the source's values, not the target's own.
  for (const q of [`SELECT count(DISTINCT seen_at)::int AS n FROM customer`, `SELECT sum(catalog_no)::text AS n FROM film`,
    `SELECT count(*)::int AS n FROM payment WHERE channel = 'desk'`, `SELECT sum(points)::int AS n FROM loyalty`]) {
    expect(await tgt.query(q, db)).toEqual(await src.query(q, db));
  }
  const report = await verifyMigration(source, target);
  expect(report.problems).toEqual([]);
  expect(report.tables.map((t) => t.table)).toContain("public.loyalty");
  await cleanupMigration(source, target, name);
  expect(await leftovers(src, tgt, db, db)).toEqual([]);
  const sh = runVerifySh(src.uri(db), tgt.uri(db));
  if (sh) expect({ code: sh.code, output: sh.code === 0 ? "" : sh.output }).toEqual({ code: 0, output: "" });
});
