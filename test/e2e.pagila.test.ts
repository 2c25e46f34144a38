/**
 * Pagila (the real DVD Rental sample, ../shared/datasets/pagila) migrated 15 → 17 under concurrent
 * writes, cut over the "application stopped" way (no freeze), verified equal. Skipped with a message
 * when ../shared is absent (a user's clone).
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { LocalServer } from "../provider/embedded/localServer";
import {
  cleanupMigration, cutoverMigration, migrationOptions, parseEndpoint, startMigration, verifyMigration,
} from "../provider/engine";
import { leftovers, moreWrites, PAGILA, runVerifySh, startServers, Writer } from "./support/servers";

const present = fs.existsSync(path.join(PAGILA, "pagila-data.sql"));
if (!present) console.warn(`skipping the Pagila test: ${PAGILA} not found (a clone without ../shared)`);

let src: LocalServer, tgt: LocalServer;
beforeAll(async () => {
  if (!present) return;
  [src, tgt] = await startServers(15, 17);
  await src.createDatabase("pagila");
  for (const f of ["pagila-schema.sql", "pagila-data.sql"]) {
    const r = spawnSync("psql", ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", src.uri("pagila"), "-f", path.join(PAGILA, f)], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`loading ${f} failed: ${r.stderr}`);
  }
});
afterAll(async () => { await src?.stop(); await tgt?.stop(); });

/** Rental-desk traffic: rent, pay, return, fix a customer, refund (delete), retag a film, move a payment's month. */
const pagilaTraffic = (i: number) => `BEGIN;
  WITH r AS (INSERT INTO rental (rental_date, inventory_id, customer_id, staff_id)
             VALUES (now() + (${i} || ' seconds')::interval, ${1 + (i % 4500)}, ${1 + (i % 599)}, ${1 + (i % 2)}) RETURNING rental_id, customer_id, staff_id)
  INSERT INTO payment (customer_id, staff_id, rental_id, amount, payment_date)
    SELECT customer_id, staff_id, rental_id, 4.99, '2022-03-15'::timestamptz + (${i} || ' minutes')::interval FROM r;
  UPDATE rental SET return_date = now() WHERE rental_id = ${1 + (i * 13) % 16000};
  UPDATE customer SET email = 'c${i}@example.org', activebool = NOT activebool WHERE customer_id = ${1 + (i % 599)};
  DELETE FROM payment WHERE payment_id = (SELECT payment_id FROM payment WHERE amount < 1 ORDER BY payment_id OFFSET ${i % 50} LIMIT 1);
  UPDATE film SET special_features = special_features || '{Commentaries}'::text[], rental_rate = rental_rate + 0.01 WHERE film_id = ${1 + (i % 1000)};
  UPDATE payment SET payment_date = payment_date + interval '1 month' WHERE payment_id = (SELECT payment_id FROM payment WHERE payment_date < '2022-06-01' ORDER BY payment_id OFFSET ${i % 100} LIMIT 1);
  COMMIT;`;

const each = present ? test.each : test.skip.each;
each(["subscription", "stream"] as const)("Pagila 15 → 17 in mode %s under writes, cutover after the application stops, verified equal", async (mode) => {
  await tgt.createDatabase(`pagila_${mode}`);
  const source = parseEndpoint(src.uri("pagila"), "source"), target = parseEndpoint(tgt.uri(`pagila_${mode}`), "target");
  const name = `pagila_${mode}`;
  const writer = new Writer(src.uri("pagila"), (i) => pagilaTraffic(i + (mode === "stream" ? 100000 : 0))).start();
  const started = await startMigration(source, target, migrationOptions({ name, jobs: 4, mode }));
  expect(started.phase).toBe("ReadyToCutover");
  await moreWrites(writer);
  await writer.stop(); // the application stops; no freeze
  expect(writer.errors).toEqual([]);
  expect(writer.transactions).toBeGreaterThan(20);

  const cut = await cutoverMigration(source, target, { name, freezeWrites: false, timeoutSec: 120, jobs: 4 });
  expect(cut).toMatchObject({ phase: "Completed", sourceLeftReadOnly: false });
  expect(cut.sequencesSynced).toBeGreaterThanOrEqual(13);

  const report = await verifyMigration(source, target);
  expect(report.problems).toEqual([]);
  expect(report.tables.length).toBeGreaterThanOrEqual(21);
  await cleanupMigration(source, target, name);
  expect(await leftovers(src, tgt, "pagila", `pagila_${mode}`)).toEqual([]);
  const sh = runVerifySh(src.uri("pagila"), tgt.uri(`pagila_${mode}`));
  if (sh) expect({ code: sh.code, output: sh.code === 0 ? "" : sh.output }).toEqual({ code: 0, output: "" });
});
