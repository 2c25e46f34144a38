/**
 * Sequences at cutover: every migrated sequence is set on the target, none is skipped in silence.
 * - A sequence created on the source after start is not migrated: cutover refuses before freezing, naming it
 *   (schema drift, kind "sequence"), and passes once it exists on the target, which then gets the source's value.
 * - A sequence owned by an excluded table, or excluded by name, is not expected on the target.
 */
import { LocalServer } from "../provider/embedded/localServer";
import {
  cleanupMigration, cutoverMigration, migrationOptions, parseEndpoint, startMigration,
} from "../provider/engine";
import { leftovers, startServers } from "./support/servers";

let src: LocalServer, tgt: LocalServer;
beforeAll(async () => {
  [src, tgt] = await startServers(15, 17);
});
afterAll(async () => { await src?.stop(); await tgt?.stop(); });

test.each(["subscription", "stream"] as const)("mode %s: a sequence created on the source after start stops the cutover until the target has it", async (mode) => {
  const db = `seq_${mode}`;
  await src.createDatabase(db);
  await tgt.createDatabase(db);
  await src.query(`CREATE TABLE orders (id serial PRIMARY KEY, v text);
    CREATE TABLE skipped (id bigserial PRIMARY KEY);               -- excluded: its owned sequence is not expected
    CREATE SEQUENCE lonely START 7;                                -- excluded by name
    CREATE SEQUENCE invoice_no START 1000;
    INSERT INTO orders (v) SELECT 'o' FROM generate_series(1, 50);
    INSERT INTO skipped DEFAULT VALUES; SELECT nextval('invoice_no'), nextval('lonely');`, db);
  const source = parseEndpoint(src.uri(db), "source"), target = parseEndpoint(tgt.uri(db), "target");
  const name = `seq${mode[0]}`;
  const started = await startMigration(source, target, migrationOptions({ name, mode, exclude: ["public.skipped", "public.lonely"], jobs: 2 }));
  expect(started.phase).toBe("ReadyToCutover");

  // After start: a new sequence on the source, used by the application.
  await src.query(`CREATE SEQUENCE late_seq START 500; SELECT nextval('late_seq'), nextval('late_seq'); SELECT nextval('invoice_no');
    INSERT INTO orders (v) VALUES ('during cdc');`, db);
  await expect(cutoverMigration(source, target, { name, freezeWrites: true, timeoutSec: 60, jobs: 2 }))
    .rejects.toThrow(/public\.late_seq: sequence exists on the source only.*pg_dump --schema-only -t public\.late_seq/);
  // Refused before anything was frozen.
  expect(await src.query(`SELECT setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = '${db}'`)).toEqual([]);

  await tgt.query(`CREATE SEQUENCE late_seq START 500`, db);
  const done = await cutoverMigration(source, target, { name, freezeWrites: true, timeoutSec: 60, jobs: 2 });
  expect(done.phase).toBe("Completed");
  // Every migrated sequence at the source's value; the excluded ones not created.
  for (const s of ["late_seq", "invoice_no", "orders_id_seq"]) {
    expect(await tgt.query(`SELECT last_value::text AS v, is_called FROM ${s}`, db)).toEqual(await src.query(`SELECT last_value::text AS v, is_called FROM ${s}`, db));
  }
  expect(await tgt.query(`SELECT to_regclass('skipped_id_seq')::text AS a, to_regclass('lonely')::text AS b`, db)).toEqual([{ a: null, b: null }]);
  await src.query(`ALTER DATABASE ${db} RESET default_transaction_read_only`);
  await cleanupMigration(source, target, name);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});
