/**
 * Several databases in one migration (--database, repeatable; --all-databases), on real servers (PostgreSQL 15 → 17):
 *  - in both CDC modes: two databases written to during CDC, started by one `start`, served by one `agent` process
 *    (stream mode), cut over by one `cutover` with one downtime; then source and target equal row for row in both
 *    (the engine's verify and ../shared/tools/verify.sh), status per database, cleanup leaves nothing;
 *  - a gate that fails in one database leaves neither completed and both unfrozen and streaming;
 *  - --all-databases takes the connectable databases but templates and postgres, naming what it skips;
 *  - bad input is refused with {code, message, fix} and nothing changed.
 */
import { spawnSync } from "child_process";
import { Client } from "pg";
import { LocalServer } from "../provider/embedded/localServer";
import {
  cleanupDatabases, cutoverDatabases, cutoverMigration, databaseEndpoint, databasesStatus, memberName, migrationOptions, PgferryError, serverEndpoints, startDatabases, startDatabaseSet,
  verifyDatabases,
} from "../provider/engine";
import { CLI, ensureBuilt } from "./support/build";
import { leftovers, runVerifySh, startServers, Writer } from "./support/servers";
import { exited, killAgents, spawnAgent, until } from "./support/agents";

let src: LocalServer, tgt: LocalServer;

beforeAll(async () => {
  ensureBuilt();
  [src, tgt] = await startServers(15, 17);
});
afterAll(async () => { killAgents(); await src?.stop(); await tgt?.stop(); });

/** The server's URI without a database: with --database the URIs name servers. */
const server = (s: LocalServer) => s.uri("postgres").replace(/\/postgres$/, "/");

function cli(args: string[]): { code: number; stdout: string; stderr: string; json?: any } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, PGFERRY_SOURCE: server(src), PGFERRY_TARGET: server(tgt) } });
  let json: any;
  try { json = JSON.parse(r.stdout); } catch { json = undefined; }
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr, json };
}

/** A database on both servers: small tables (a key, a sequence, a foreign key) on the source, empty on the target. */
async function makeDb(db: string, rows = 2000): Promise<void> {
  await src.createDatabase(db);
  await tgt.createDatabase(db);
  await src.query(`
    CREATE TABLE customer (id int PRIMARY KEY, name text NOT NULL);
    CREATE TABLE orders (id bigserial PRIMARY KEY, customer int NOT NULL REFERENCES customer, amount numeric(10,2), note text);
    INSERT INTO customer SELECT g, '${db} customer ' || g FROM generate_series(1, 100) g;
    INSERT INTO orders (customer, amount, note) SELECT 1 + g % 100, g * 1.25, md5(g::text) FROM generate_series(1, ${rows}) g;`, db);
}

/** Inserts, updates and deletes in every transaction, so CDC carries all three kinds. */
const writes = (db: string) => (i: number) => `BEGIN;
  INSERT INTO orders (customer, amount, note) VALUES (${1 + (i % 100)}, ${i}.5, '${db} live ${i}');
  UPDATE orders SET amount = amount + 1, note = note || '+' WHERE id = ${1 + ((i * 7) % 1500)};
  DELETE FROM orders WHERE id = ${1600 + i};
  COMMIT;`;

const count = async (s: LocalServer, db: string) => Number((await s.query(`SELECT count(*) AS n FROM orders`, db))[0].n);
const readOnly = async (db: string) => (await src.query(`SELECT current_setting('default_transaction_read_only') AS ro`, db))[0].ro;

async function noLeftovers(dbs: string[]): Promise<void> {
  for (const db of dbs) expect(await leftovers(src, tgt, db)).toEqual([]);
}

test.each(["subscription", "stream"] as const)("mode %s: two databases written to during CDC, one start, one cutover, equal row for row, nothing left",
  async (mode) => {
    const [a, b] = [`${mode}_shop`, `${mode}_billing`];
    const name = `m_${mode}`;
    await makeDb(a);
    await makeDb(b, 1500);
    const started = cli(["start", "--database", a, "--database", b, "--name", name, "--mode", mode, "--jobs", "2", "--json"]);
    expect({ code: started.code, stderr: started.stderr }).toEqual({ code: 0, stderr: "" });
    expect(started.json.databases.map((d: any) => [d.database, d.migration, d.phase])).toEqual([
      [a, memberName(name, a), "ReadyToCutover"], [b, memberName(name, b), "ReadyToCutover"]]);
    // Each database its own slot (slots are global to the server, hence the member names) and publication.
    const slots = (await src.query(`SELECT slot_name, database FROM pg_replication_slots ORDER BY 1`)).map((r) => `${r.slot_name}@${r.database}`);
    expect(slots).toEqual(expect.arrayContaining([`pgferry_${name}_${b}@${b}`, `pgferry_${name}_${a}@${a}`]));

    const writers = [new Writer(src.uri(a), writes(a)).start(), new Writer(src.uri(b), writes(b)).start()];
    const agent = mode === "stream" ? spawnAgent(["--database", a, "--database", b, "--name", name], { source: server(src), target: server(tgt) }) : undefined;
    // Changes reach both targets while the application writes (the agent, or each subscription, applies them).
    await until(`live rows of ${a} and ${b} on the target`, async () =>
      (await tgt.query(`SELECT count(*) AS n FROM orders WHERE note LIKE '% live %'`, a))[0].n > 20 &&
      (await tgt.query(`SELECT count(*) AS n FROM orders WHERE note LIKE '% live %'`, b))[0].n > 20, 120000);

    // status: per database, and --all-databases finds exactly the databases the migration was started with.
    const st = cli(["status", "--all-databases", "--name", name, "--json"]);
    expect(st.code).toBe(0);
    expect(st.json.databases.map((d: any) => [d.database, d.status.phase])).toEqual([[b, "ReadyToCutover"], [a, "ReadyToCutover"]].sort());
    expect(st.json.phase).toBe("ReadyToCutover");
    // One cutover takes all of them: a part is refused, naming the set.
    const part = cli(["cutover", "--database", a, "--name", name, "--json"]);
    expect(part.code).toBe(1);
    expect(part.json.error.code).toBe("databases_mismatch");
    expect(part.json.error.fix).toContain(`--database ${b}`);

    const cut = cli(["cutover", "--database", a, "--database", b, "--name", name, "--freeze-writes", "--grace", "1", "--verify", "hashes", "--json"]);
    expect({ code: cut.code, stderr: cut.stderr.replace(/▸[^\n]*\n/g, "") }).toEqual({ code: 0, stderr: "" });
    await Promise.all(writers.map((w) => w.stop()));
    expect(writers.flatMap((w) => w.errors)).toEqual([]);
    expect(writers.every((w) => w.transactions > 20)).toBe(true);
    expect(cut.json.phase).toBe("Completed");
    expect(cut.json.databases.map((d: any) => [d.database, d.phase, d.verification.tables])).toEqual([[a, "Completed", 2], [b, "Completed", 2]]);
    // One downtime: from the first freeze to the last completion, so at least each database's own.
    expect(cut.json.downtimeMs).toBeGreaterThan(0);
    for (const d of cut.json.databases) expect(cut.json.downtimeMs).toBeGreaterThanOrEqual(d.downtimeMs);
    if (agent) expect(await exited(agent, "the agent after the cutover")).toBe(0);

    // Equal row for row in both databases: the engine's verify (counts and hashes), and ../shared/tools/verify.sh.
    for (const db of [a, b]) expect(await count(tgt, db)).toBe(await count(src, db));
    const { source, target } = serverEndpoints(server(src), server(tgt), { databases: [a, b] });
    const rep = cli(["verify", "--database", a, "--database", b, "--name", name, "--json"]);
    expect(rep.json.databases.map((d: any) => [d.database, d.report.problems, d.report.tables.length])).toEqual([[a, [], 2], [b, [], 2]]);
    expect({ ok: rep.json.ok, code: rep.code }).toEqual({ ok: true, code: 0 });
    for (const db of [a, b]) {
      const sh = runVerifySh(src.uri(db), tgt.uri(db), ["public"]);
      if (sh) expect({ db, code: sh.code }).toEqual({ db, code: 0 });
    }
    // The human status: one line for the migration with the one downtime, then each database's own.
    const human = cli(["status", "--database", a, "--database", b, "--name", name]);
    expect(human.stdout).toMatch(new RegExp(`^migration ${name}: Completed in 2 database\\(s\\), downtime \\d+\\.\\d\\d s \\(one cutover\\)\n`));
    for (const db of [a, b]) expect(human.stdout).toContain(`── database ${db} ──\nmigration ${memberName(name, db)}: Completed`);
    const after = await databasesStatus(source, target, name, { allDatabases: true });
    expect(after.phase).toBe("Completed");
    expect(after.downtimeMs).toBe(cut.json.downtimeMs);
    // The sequences came along: the target's next id is past every id.
    for (const db of [a, b]) {
      const max = Number((await src.query(`SELECT max(id) AS m FROM orders`, db))[0].m);
      expect(Number((await tgt.query(`SELECT last_value AS v FROM orders_id_seq`, db))[0].v)).toBeGreaterThanOrEqual(max);
    }
    await noLeftovers([a, b]);
    const cleaned = cli(["cleanup", "--all-databases", "--name", name, "--json"]);
    expect(cleaned.code).toBe(0);
    expect(cleaned.json.databases.map((d: any) => [d.database, d.removedState])).toEqual([[b, true], [a, true]].sort());
    for (const db of [a, b]) expect(await tgt.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'pgferry'`, db)).toEqual([]);
    await noLeftovers([a, b]);
    // The frozen cutover leaves the sources read-only on purpose; writable again for the next test's neighbours.
    for (const db of [a, b]) await src.query(`ALTER DATABASE "${db}" RESET default_transaction_read_only`);
  });

test.each(["subscription", "stream"] as const)("mode %s: a gate that fails in one database completes neither: both unfrozen exactly and " +
  "streaming; after the repair one cutover completes both", async (mode) => {
  const [a, b] = [`gate_${mode}_shop`, `gate_${mode}_billing`];
  const name = `gate_${mode}`;
  await makeDb(a, 500);
  await makeDb(b, 500);
  const { source, target } = serverEndpoints(server(src), server(tgt), { databases: [a, b] });
  const sel = { databases: [a, b] };
  await startDatabases(source!, target, sel, migrationOptions({ name, jobs: 2, mode }));
  // Stream mode: the agent is paused by the cutover and must apply again once it is rolled back.
  const agent = mode === "stream" ? spawnAgent(["--all-databases", "--name", name], { source: server(src), target: server(tgt) }) : undefined;
  // A row only the target has: the gate of b must see it.
  await tgt.query(`INSERT INTO orders (id, customer, amount, note) VALUES (900000, 1, 1, 'target only')`, b);
  const err = await cutoverDatabases(source!, target, sel, { name, freezeWrites: true, timeoutSec: 60, jobs: 2, graceSec: 0.5 }).catch((e) => e);
  expect(err).toBeInstanceOf(PgferryError);
  expect(err.code).toBe("verify_failed");
  expect(err.message).toContain(`database "${b}"`);
  expect(err.message).toContain("None of the 2 databases was completed");
  expect(err.fix).toContain(`repair the target database "${b}"`);
  const st = await databasesStatus(source, target, name, sel);
  expect(st.databases.map((d) => [d.database, d.status.phase, d.status.sourceFrozen, d.status.replicationPaused])).toEqual([
    [a, "ReadyToCutover", false, false], [b, "ReadyToCutover", false, false]]);
  expect(st.databases[1].status.error).toContain("last cutover attempt");
  // Unfrozen exactly (no setting left behind) and streaming: a write on each source reaches its target.
  for (const db of [a, b]) {
    expect(await readOnly(db)).toBe("off");
    expect(await src.query(`SELECT setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = '${db}'`)).toEqual([]);
    await src.query(`INSERT INTO orders (customer, amount, note) VALUES (1, 2, 'after the failed gate')`, db);
    await until(`${db}'s write after the failed gate on the target`, async () =>
      (await tgt.query(`SELECT count(*) AS n FROM orders WHERE note = 'after the failed gate'`, db))[0].n === "1", 60000);
  }
  if (mode === "subscription") {
    // cutover --abort over the databases: one left frozen in VerifyFailed (by a single-database cutover of its member) is
    // unfrozen and streams again; the other, streaming, stays so.
    await tgt.query(`INSERT INTO customer VALUES (900000, 'target only')`, a);
    const single = await cutoverMigration(databaseEndpoint(source!, a), databaseEndpoint(target, a), { name: memberName(name, a), freezeWrites: true,
      timeoutSec: 60, jobs: 2, graceSec: 0 }).catch((e) => e);
    expect(single.code).toBe("verify_failed");
    expect(await readOnly(a)).toBe("on");
    const aborted = cli(["cutover", "--abort", "--database", a, "--database", b, "--name", name, "--json"]);
    expect(aborted.json.databases.map((d: any) => [d.database, d.previousPhase, d.unfroze])).toEqual([[a, "VerifyFailed", true], [b, "ReadyToCutover", false]]);
    expect(await readOnly(a)).toBe("off");
    await tgt.query(`DELETE FROM customer WHERE id = 900000`, a);
  }
  // Repaired: one cutover completes both.
  await tgt.query(`DELETE FROM orders WHERE id = 900000`, b);
  const done = cli(["cutover", "--database", a, "--database", b, "--name", name, "--freeze-writes", "--grace", "1", "--jobs", "2"]);
  expect({ code: done.code, completed: /^migration \S+ Completed in 2 database\(s\): downtime \d+\.\d\d s \(first freeze → last completion\)$/m.test(done.stderr),
    stderr: done.code ? done.stderr : "" }).toEqual({ code: 0, completed: true, stderr: "" });
  for (const db of [a, b]) expect(done.stderr).toMatch(new RegExp(`^  ${db}: fence [0-9A-F]+/[0-9A-F]+, 2 tables verified \\(counts\\), 1 sequences synced, downtime .*freeze`, "m"));
  expect((await databasesStatus(source, target, name, sel)).phase).toBe("Completed");
  if (agent) expect(await exited(agent, "the agent after the cutover")).toBe(0);
  const rep = await verifyDatabases(source!, target, name, sel, { hashes: true, jobs: 2 });
  expect(rep.ok).toBe(true);
  await cleanupDatabases(source!, target, name, sel);
  for (const db of [a, b]) await src.query(`ALTER DATABASE "${db}" RESET default_transaction_read_only`);
  await noLeftovers([a, b]);
});

test("--all-databases: every connectable database but templates and postgres, what it skips named; a database missing on the target is refused with its CREATE DATABASE", async () => {
  await makeDb("all_one", 10);
  await src.createDatabase("all_closed");
  await src.query(`ALTER DATABASE all_closed WITH ALLOW_CONNECTIONS false`);
  await src.createDatabase("all_source_only");
  await src.query(`CREATE TABLE t (id int PRIMARY KEY)`, "all_source_only");
  await src.createDatabase("all_empty");
  const { source, target } = serverEndpoints(server(src), server(tgt), { allDatabases: true });
  const missing = await startDatabaseSet(source!, target, { allDatabases: true }).catch((e) => e);
  expect(missing.code).toBe("target_database_missing");
  expect(missing.message).toContain("all_source_only");
  expect(missing.fix).toMatch(/CREATE DATABASE "all_source_only" TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE '[^']+' LC_CTYPE '[^']+';/);
  // Through the CLI: {code, message, fix}, and nothing was made on either server.
  const refused = cli(["start", "--all-databases", "--name", "alldb", "--json"]);
  expect(refused.code).toBe(1);
  expect(refused.json.error.code).toBe("target_database_missing");
  expect(refused.json.error.fix).toContain(`CREATE DATABASE "all_source_only"`);
  expect(await src.query(`SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'pgferry_alldb%'`)).toEqual([]);

  await tgt.createDatabase("all_source_only");
  const set = await startDatabaseSet(source!, target, { allDatabases: true });
  const onSource = (await src.query(`SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn AND datname NOT IN ('postgres', 'all_empty')
    ORDER BY 1`)).map((r) => r.datname);
  expect(set.databases).toEqual(onSource);
  expect(set.databases).toEqual(expect.arrayContaining(["all_one", "all_source_only"]));
  expect(set.databases).not.toContain("all_closed");
  expect(Object.fromEntries(set.skipped.map((s) => [s.database, s.reason]))).toEqual({
    all_closed: "not accepting connections (datallowconn off)", postgres: expect.stringContaining("maintenance database"),
    all_empty: expect.stringContaining("no tables"),
    template0: "a template", template1: "a template",
  });
  await src.query(`DROP DATABASE all_closed`);
  await src.query(`DROP DATABASE all_empty`);
});

test("bad input: a database that is not there, a URI naming another database, both flags: {code, message, fix}, nothing changed", async () => {
  await makeDb("bad_one", 10);
  const slotsBefore = await src.query(`SELECT slot_name FROM pg_replication_slots ORDER BY 1`);
  const cases: [string[], string, RegExp][] = [
    [["start", "--database", "bad_one", "--database", "no_such_db"], "database_not_found", /no database "no_such_db" on the source/],
    [["start", "--source", src.uri("bad_one"), "--database", "other_db"], "database_conflict", /--source names database "bad_one"/],
    [["start", "--database", "bad_one", "--all-databases"], "database_conflict", /both given/],
    [["start", "--database", "template1"], "database_not_found", /is a template/],
    [["status", "--all-databases", "--name", "never_started", "--source", ""], "no_databases", /no migration "never_started"/],
  ];
  for (const [args, code, message] of cases) {
    const r = cli([...args, "--json"]);
    expect({ args, code: r.json?.error?.code }).toEqual({ args, code });
    expect(r.json.error.message).toMatch(message);
    expect(r.json.error.fix).toBeTruthy();
  }
  expect(await src.query(`SELECT slot_name FROM pg_replication_slots ORDER BY 1`)).toEqual(slotsBefore);
  expect(await tgt.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'pgferry'`, "bad_one")).toEqual([]);
});

test("the Pulumi Migration resource with databases: create starts every database, cutover true cuts them over as one, destroy leaves nothing", async () => {
  const [a, b] = ["pulumi_shop", "pulumi_billing"];
  await makeDb(a, 300);
  await makeDb(b, 300);
  const handlers = await import("../provider/resources/migrationHandlers");
  const inputs = { source: server(src), target: server(tgt), name: "pl", databases: [a, b], jobs: 2, cutoverGraceSec: 1, freezeWrites: true };
  const created = await handlers.create(inputs);
  expect(created.outs).toMatchObject({ phase: "ReadyToCutover", databases: [a, b], allDatabases: false, rowsCopied: 2 * (100 + 300) });
  expect(created.outs.tables.map((t) => t.table).sort()).toEqual([`${a}/public.customer`, `${a}/public.orders`, `${b}/public.customer`, `${b}/public.orders`].sort());
  await src.query(`INSERT INTO orders (customer, amount) VALUES (1, 1)`, a);
  const updated = await handlers.update(created.id, created.outs as never, { ...inputs, cutover: true });
  expect(updated.outs.phase).toBe("Completed");
  expect(updated.outs.downtimeMs).toBeGreaterThan(0);
  for (const db of [a, b]) expect(await count(tgt, db)).toBe(await count(src, db));
  await handlers.remove(created.id, updated.outs as never);
  for (const db of [a, b]) await src.query(`ALTER DATABASE "${db}" RESET default_transaction_read_only`);
  await noLeftovers([a, b]);
  for (const db of [a, b]) expect(await tgt.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'pgferry'`, db)).toEqual([]);
  expect((await handlers.read(created.id, updated.outs as never)).id).toBe("");
});

test("cleanup --all-databases while streaming: every database's subscription, slot, publication and state go; target data stays", async () => {
  const [a, b] = ["clean_shop", "clean_billing"];
  await makeDb(a, 100);
  await makeDb(b, 100);
  const started = cli(["start", "--database", a, "--database", b, "--name", "cl", "--json"]);
  expect(started.code).toBe(0);
  for (const db of [a, b]) expect((await leftovers(src, tgt, db)).length).toBeGreaterThan(0);
  const cleaned = cli(["cleanup", "--all-databases", "--name", "cl", "--json"]);
  expect(cleaned.code).toBe(0);
  expect(cleaned.json.databases.map((d: any) => [d.database, d.previousPhase, d.droppedSlot, d.droppedPublication, d.droppedSubscription]))
    .toEqual([[b, "ReadyToCutover", true, true, true], [a, "ReadyToCutover", true, true, true]].sort());
  await noLeftovers([a, b]);
  for (const db of [a, b]) expect(await count(tgt, db)).toBe(100);
  // Run again: nothing left to find, and it says so (no error, nothing half-done).
  const again = cli(["cleanup", "--database", a, "--database", b, "--name", "cl", "--json"]);
  expect(again.json.databases.map((d: any) => d.previousPhase)).toEqual(["NotFound", "NotFound"]);
});
