/**
 * Hyperscale (Citus) as a target (issue #17), on real servers (15 → 17, plain PostgreSQL: no Citus package can be
 * installed here, and none is faked). What runs here: the preflight refusals (Citus missing on the target, a named
 * table not migrated, keys without the distribution column, identity columns: read from the source catalog),
 * `start --until schema` and its resume, and the stream applier moving a row whose distribution column changes
 * (DELETE + INSERT in one target transaction) — with the distribution recorded in the migration's options by this
 * test's direct call (the Citus presence check stays in force for every start). What only a Citus cluster can
 * show is listed in docs/citus.md.
 */
import { spawnSync } from "child_process";
import { Client } from "pg";
import { LocalServer } from "../provider/embedded/localServer";
import { cutoverMigration, migrationOptions, parseEndpoint, PgferryError, startMigration } from "../provider/engine";
import { StreamApplier } from "../provider/engine/cdc/stream/stream";
import { parseDistributionFlags } from "../provider/engine/copy/distribution";
import { lsnToBigInt } from "../provider/engine/core/lsn";
import { objectNames } from "../provider/engine/core/options";
import { mergeMigrationOptions, readMigration } from "../provider/engine/state/state";
import { CLI, ensureBuilt } from "./support/build";
import { leftovers, startServers } from "./support/servers";

let src: LocalServer, tgt: LocalServer;

beforeAll(async () => {
  ensureBuilt();
  [src, tgt] = await startServers(15, 17);
  await src.createDatabase("app");
  await src.query(`
    CREATE TABLE orders (id int, customer_id int NOT NULL, v text, PRIMARY KEY (id, customer_id));
    CREATE TABLE bad_key (id int PRIMARY KEY, tenant int NOT NULL, code text UNIQUE);
    CREATE TABLE ident (id bigint GENERATED ALWAYS AS IDENTITY, tenant int NOT NULL, PRIMARY KEY (id, tenant));
    CREATE TABLE countries (code text PRIMARY KEY, name text);
    INSERT INTO orders SELECT g, g % 7, 'v' || g FROM generate_series(1, 200) g;
    INSERT INTO bad_key SELECT g, g % 3, 'c' || g FROM generate_series(1, 10) g;
    INSERT INTO ident (tenant) SELECT g FROM generate_series(1, 10) g;
    INSERT INTO countries VALUES ('de', 'Germany'), ('fr', 'France');`, "app");
  await tgt.createDatabase("refused");
  await tgt.createDatabase("app");
});
afterAll(async () => { await src?.stop(); await tgt?.stop(); });

test("with --distribute/--reference on a plain target: refused (Citus missing, unknown table, keys, identity) naming each fix; nothing created", async () => {
  const distribution = parseDistributionFlags({
    distribute: ["orders=customer_id", "bad_key=tenant", "ident=tenant", "public.nope=x", "countries=nocolumn"], reference: ["public.gone"] });
  let e: PgferryError | undefined;
  try {
    await startMigration(parseEndpoint(src.uri("app"), "source"), parseEndpoint(tgt.uri("refused"), "target"),
      migrationOptions({ name: "cit", mode: "stream", distribution }));
  } catch (x) { e = x as PgferryError; }
  expect(e).toBeInstanceOf(PgferryError);
  expect(e!.code).toBe("preflight");
  const by = (code: string) => e!.findings.filter((f) => f.code === code);
  expect(by("citus_missing")).toHaveLength(1);
  expect(by("citus_missing")[0]).toMatchObject({ server: "target", fix: expect.stringMatching(/CREATE EXTENSION citus/) });
  expect(by("distribution_table_missing").map((f) => f.objects)).toEqual([["public.gone", "public.nope"]]);
  expect(by("distribution_column_missing").map((f) => f.objects)).toEqual([["public.countries"]]);
  // bad_key's primary key and unique constraint lack tenant; orders' key includes customer_id; ident's key includes tenant.
  expect(by("distribution_key").map((f) => f.objects)).toEqual([["public.bad_key.bad_key_code_key", "public.bad_key.bad_key_pkey"]]);
  expect(by("distribution_key")[0].fix).toMatch(/add "tenant" to those keys on the source.*--reference public\.bad_key/);
  expect(by("distribution_identity").map((f) => f.objects)).toEqual([["public.ident.id"]]);
  expect(by("distribution_identity")[0].fix).toMatch(/--until schema.*DROP IDENTITY.*create_distributed_table/);
  expect(await leftovers(src, tgt, "app", "refused")).toEqual([]);
  expect(await tgt.query(`SELECT relname FROM pg_class WHERE relname IN ('orders', 'migration')`, "refused")).toEqual([]);
});

test("subscription mode with --distribute on a plain target: refused (Citus missing) before anything is created", async () => {
  let e: PgferryError | undefined;
  try {
    await startMigration(parseEndpoint(src.uri("app"), "source"), parseEndpoint(tgt.uri("refused"), "target"),
      migrationOptions({ name: "cit", distribution: parseDistributionFlags({ distribute: ["orders=customer_id"] }) }));
  } catch (x) { e = x as PgferryError; }
  expect(e?.findings.map((f) => f.code)).toContain("citus_missing");
  expect(await leftovers(src, tgt, "app", "refused")).toEqual([]);
});

test("start --until schema stops after the schema (tables empty, no slot); start again loads; a distribution-column UPDATE is applied as DELETE + INSERT", async () => {
  const source = parseEndpoint(src.uri("app"), "source"), target = parseEndpoint(tgt.uri("app"), "target");
  const cli = spawnSync(process.execPath, [CLI, "start", "--source", src.uri("app"), "--target", tgt.uri("app"), "--name", "cit", "--mode", "stream",
    "--exclude", "public.bad_key", "--exclude", "public.ident", "--until", "schema"], { encoding: "utf8" });
  expect(cli.status).toBe(0);
  expect(cli.stdout + cli.stderr).toMatch(/migration cit stopped after the schema \(phase Loading\)/);
  expect(await tgt.query(`SELECT count(*)::int AS n FROM orders`, "app")).toEqual([{ n: 0 }]);
  expect(await tgt.query(`SELECT count(*)::int AS n FROM countries`, "app")).toEqual([{ n: 0 }]);
  expect(await src.query(`SELECT slot_name FROM pg_replication_slots`, "app")).toEqual([]);
  // pg_dump's primary keys are post-data: none on the target yet (create_distributed_table must meet key-less tables).
  expect(await tgt.query(`SELECT conname FROM pg_constraint WHERE conrelid = 'orders'::regclass AND contype = 'p'`, "app")).toEqual([]);

  const o = migrationOptions({ name: "cit", mode: "stream", selection: { schemas: [], include: [], exclude: ["public.bad_key", "public.ident"] } });
  const res = await startMigration(source, target, o);
  expect(res.phase).toBe("ReadyToCutover");
  expect(res.load?.rows).toBe(202);

  // The distribution as start records it with --distribute on a Citus target (this target has no Citus: set directly).
  const c = new Client({ connectionString: tgt.uri("app") });
  await c.connect();
  try {
    await mergeMigrationOptions(c, "cit", { distribution: parseDistributionFlags({ distribute: ["orders=customer_id"] }) });
    expect((await readMigration(c, "cit"))!.options.distribution).toEqual({ distribute: { "public.orders": "customer_id" }, reference: [], colocate: {} });
  } finally { await c.end(); }
  // An ALWAYS trigger (it fires under session_replication_role = replica) records each statement's row operations.
  await tgt.query(`CREATE SCHEMA audit; CREATE TABLE audit.ops (n serial, op text, id int);
    CREATE FUNCTION audit.note() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
      INSERT INTO audit.ops (op, id) VALUES (TG_OP, CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END); RETURN NULL; END $$;
    CREATE TRIGGER note AFTER INSERT OR UPDATE OR DELETE ON public.orders FOR EACH ROW EXECUTE FUNCTION audit.note();
    ALTER TABLE public.orders ENABLE ALWAYS TRIGGER note;`, "app");

  await src.query(`UPDATE orders SET customer_id = customer_id + 1000, v = 'moved' WHERE id = 1;
    UPDATE orders SET v = 'kept' WHERE id = 2;
    UPDATE orders SET customer_id = customer_id + 1000 WHERE id BETWEEN 3 AND 5;
    BEGIN; UPDATE orders SET customer_id = 2000 WHERE id = 6; UPDATE orders SET v = 'after move' WHERE id = 6; COMMIT;`, "app");
  const upTo = lsnToBigInt((await src.query(`SELECT pg_current_wal_lsn()::text AS l`, "app"))[0].l);
  const names = objectNames("cit");
  await new StreamApplier(source, target, { migration: "cit", slot: names.slot, publication: names.publication, until: upTo }).run();

  const ops = await tgt.query(`SELECT id, string_agg(op, ',' ORDER BY n) AS ops FROM audit.ops GROUP BY id ORDER BY id`, "app");
  expect(ops).toEqual([
    { id: 1, ops: "DELETE,INSERT" }, { id: 2, ops: "UPDATE" }, { id: 3, ops: "DELETE,INSERT" }, { id: 4, ops: "DELETE,INSERT" },
    { id: 5, ops: "DELETE,INSERT" }, { id: 6, ops: "DELETE,INSERT,UPDATE" },
  ]);
  const rows = `SELECT id, customer_id, v FROM orders ORDER BY id, customer_id`;
  expect(await tgt.query(rows, "app")).toEqual(await src.query(rows, "app"));
  expect(await tgt.query(`SELECT customer_id, v FROM orders WHERE id IN (1, 6) ORDER BY id`, "app"))
    .toEqual([{ customer_id: 1001, v: "moved" }, { customer_id: 2000, v: "after move" }]);

  await tgt.query(`DROP SCHEMA audit CASCADE`, "app");
  const cut = await cutoverMigration(source, target, { name: "cit", freezeWrites: true, timeoutSec: 60, jobs: 2, verify: "hashes" });
  expect(cut.verification?.mode).toBe("hashes");
  expect(await leftovers(src, tgt, "app")).toEqual([]);
});
