/**
 * `start --ddl replicate --roles`, both CDC modes, real servers (source 15, target 17): objects an application role (no
 * superuser) creates on the source while streaming — a table with a serial column, a partitioned table and its partition,
 * a sequence, a view, a materialized view, a function, a procedure, an enum and a domain — are owned on the target by the
 * same role after the cutover (the replayed statement runs as the target's connecting role; the capture records the
 * owners, and the target gives each object its owner in the statement's transaction). A role created on the source after
 * start, which the target lacks, stops replication at its first CREATE by name (ddl_owner: status names the role and the
 * fix, cutover refuses with the code); once the role exists on the target, replication goes on by itself and the cutover
 * completes with that role as owner; the same for a grantee the source's default privileges name. Without kept ownership (a
 * role missing at start, no --roles) nothing stops and new objects belong to the target's role, as start named. A row whose
 * owners the source could not record is refused in both modes. Roles are global: each test uses its own names on throwaway servers.
 */
import { Client } from "pg";
import { LocalServer } from "../provider/embedded/localServer";
import { formatStatus } from "../provider/cli/output";
import { cutoverMigration, migrationOptions, migrationStatus, parseEndpoint, startMigration, verifyMigration } from "../provider/engine";
import { leftovers, startServers, Writer } from "./support/servers";
import { ensureBuilt } from "./support/build";
import { AgentProcess, exited, killAgents, spawnAgent, until } from "./support/agents";
import { targetApplySql } from "../provider/engine/cdc/ddl/targetApply";
import { readDdlRefusal } from "../provider/engine/cdc/ddl/refusal";
import { applyOwners } from "../provider/engine/cdc/ddl/owners";

let src: LocalServer, tgt: LocalServer;

beforeAll(async () => {
  ensureBuilt();
  [src, tgt] = await startServers(15, 17);
});
afterAll(async () => {
  killAgents();
  await src?.stop(); await tgt?.stop();
});

/** Owners of the user objects in schema public, by kind and name (sequences, views, functions and types included). */
const owners = async (s: LocalServer, db: string) => s.query(`
  SELECT 'rel ' || c.relkind::text || ' ' || c.relname AS o, pg_get_userbyid(c.relowner) AS owner FROM pg_class c
   WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
  UNION ALL SELECT 'proc ' || p.oid::regprocedure::text, pg_get_userbyid(p.proowner) FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
  UNION ALL SELECT 'type ' || t.typname, pg_get_userbyid(t.typowner) FROM pg_type t
   WHERE t.typnamespace = 'public'::regnamespace AND t.typtype IN ('e', 'd')
  ORDER BY 1`, db);

/**
 * Effective privileges on the same objects (the owner's defaults where no ACL is set), without grantors and without
 * MAINTAIN (17 has it, a 15 source does not).
 */
const privileges = async (s: LocalServer, db: string) => s.query(`
  WITH o AS (
    SELECT 'rel ' || c.relkind::text || ' ' || c.relname AS o, coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner)) AS acl
      FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'S', 'v', 'm')
    UNION ALL SELECT 'proc ' || p.oid::regprocedure::text, coalesce(p.proacl, acldefault('f', p.proowner)) FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
    UNION ALL SELECT 'type ' || t.typname, coalesce(t.typacl, acldefault('T', t.typowner)) FROM pg_type t
     WHERE t.typnamespace = 'public'::regnamespace AND t.typtype IN ('e', 'd'))
  SELECT DISTINCT o.o, CASE WHEN e.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(e.grantee) END AS grantee, e.privilege_type AS priv, e.is_grantable AS g
    FROM o, aclexplode(o.acl) e WHERE e.privilege_type <> 'MAINTAIN' ORDER BY 1, 2, 3`, db);

test.each(["stream", "subscription"] as const)("mode %s: objects created while streaming keep their source owner; a role the target lacks stops it by name until created", async (mode) => {
  const db = `own_${mode}`, app = `own_app_${mode}`, late = `own_late_${mode}`, reader = `own_reader_${mode}`;
  await src.createDatabase(db); await tgt.createDatabase(db);
  await src.query(`CREATE ROLE ${app} NOLOGIN; CREATE ROLE ${reader} NOLOGIN`);
  // The application's default privileges: what its new objects get on the source without a GRANT statement.
  await src.query(`ALTER DEFAULT PRIVILEGES FOR ROLE ${app} IN SCHEMA public GRANT SELECT ON TABLES TO ${reader};
    ALTER DEFAULT PRIVILEGES FOR ROLE ${app} IN SCHEMA public GRANT USAGE ON SEQUENCES TO ${reader};
    ALTER DEFAULT PRIVILEGES FOR ROLE ${app} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
    ALTER DEFAULT PRIVILEGES FOR ROLE ${app} IN SCHEMA public GRANT EXECUTE ON FUNCTIONS TO ${reader};
    ALTER DEFAULT PRIVILEGES FOR ROLE ${app} REVOKE USAGE ON TYPES FROM PUBLIC`, db);
  await src.query(`GRANT CREATE ON SCHEMA public TO ${app};
    CREATE TABLE base (id int PRIMARY KEY, v text); ALTER TABLE base OWNER TO ${app};
    INSERT INTO base SELECT g, 'b' FROM generate_series(1, 200) g`, db);
  const source = parseEndpoint(src.uri(db), "source"), target = parseEndpoint(tgt.uri(db), "target");
  const started = await startMigration(source, target, migrationOptions({ name: "own", mode, ddl: "replicate", roles: true, jobs: 2 }))
    .catch((e) => { throw new Error(`${e.message}: ${JSON.stringify(e.findings)}`); });
  expect(started.phase).toBe("ReadyToCutover");
  expect(started.roles!.created.sort()).toEqual([app, reader].sort());
  let agent: AgentProcess | undefined;
  if (mode === "stream") agent = spawnAgent(["--name", "own"], { source: src.uri(db), target: tgt.uri(db) });
  const writer = new Writer(src.uri(db), (i) => `UPDATE base SET v = 'w${i}' WHERE id = ${(i % 200) + 1}`).start();

  // The application's release, run as its role (no superuser), one statement per query.
  const as = new Client({ connectionString: src.uri(db) });
  as.on("error", () => undefined); // the servers stop under it when an assertion fails
  await as.connect();
  await as.query(`SET ROLE ${app}`);
  for (const sql of [
    `CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL)`,
    `INSERT INTO items (name) SELECT 'i' || g FROM generate_series(1, 30) g`,
    `CREATE TABLE parted (id bigint NOT NULL, r int NOT NULL, PRIMARY KEY (id, r)) PARTITION BY RANGE (r)`,
    `CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100)`,
    `INSERT INTO parted SELECT g, g % 100 FROM generate_series(1, 20) g`,
    `CREATE SEQUENCE counter`,
    `CREATE VIEW items_v AS SELECT id, upper(name) AS name FROM items`,
    `CREATE MATERIALIZED VIEW moods_mv AS SELECT unnest(ARRAY[1, 2]) AS k`,
    `CREATE FUNCTION item_count() RETURNS bigint LANGUAGE sql STABLE AS $$ SELECT count(*) FROM items $$`,
    `CREATE PROCEDURE touch_items() LANGUAGE sql AS $$ UPDATE items SET name = name WHERE false $$`,
    `CREATE TYPE mood AS ENUM ('ok', 'meh')`,
    `CREATE DOMAIN posint AS int CHECK (VALUE > 0)`,
    `ALTER TABLE items ADD COLUMN m mood`,
  ]) await as.query(sql);
  // Once replayed (the last statement's column is there), the target's owners are the source's, before any cutover.
  await until("the release to be replayed", async () => (await tgt.query(`SELECT count(*)::int AS n FROM pg_attribute
    WHERE attrelid = to_regclass('public.items') AND attname = 'm'`, db))[0].n === 1, 120000);
  expect(await owners(tgt, db)).toEqual(await owners(src, db));
  expect(await privileges(tgt, db)).toEqual(await privileges(src, db));

  // A role created on the source after start (--roles created what the migrated objects named then), which the target lacks, creates a table: replication stops at it, named (role, object, fix).
  await src.query(`CREATE ROLE ${late} NOLOGIN`);
  await src.query(`GRANT CREATE ON SCHEMA public TO ${late}`, db);
  await as.query(`RESET ROLE`);
  await as.query(`SET ROLE ${late}`);
  await as.query(`CREATE TABLE late_t (id int PRIMARY KEY)`);
  await as.query(`INSERT INTO late_t VALUES (1), (2)`);
  await as.query(`RESET ROLE`);
  await as.query(`INSERT INTO base VALUES (1000, 'after late_t')`);
  await as.end();
  const st = await until("status to name the missing owner", async () => {
    const s = await migrationStatus(source, target, "own");
    return s.applyError?.code === "ddl_owner" ? s : undefined;
  }, 120000);
  expect(st.applyError!.message).toMatch(new RegExp(`CREATE TABLE late_t[\\s\\S]*late_t[\\s\\S]*role "${late}"[\\s\\S]*Fix: create the role on the target`));
  expect(formatStatus(st)).toContain("DDL NOT REPLICATED (ddl_owner)");
  // Stopped before it: neither the table nor anything after it on the target.
  expect((await tgt.query(`SELECT to_regclass('late_t') IS NULL AS gone, (SELECT count(*)::int FROM base WHERE id = 1000) AS n`, db))[0])
    .toEqual({ gone: true, n: 0 });
  await expect(cutoverMigration(source, target, { name: "own", freezeWrites: true, timeoutSec: 120, jobs: 2 }))
    .rejects.toMatchObject({ code: "ddl_owner", message: expect.stringContaining(late) });

  // The fix: the role on the target. Replication retries the statement and goes on (stream: the agent; subscription: the worker).
  await tgt.query(`CREATE ROLE ${late} NOLOGIN`);
  await until("replication to get past the statement", async () =>
    (await tgt.query(`SELECT count(*)::int AS n FROM base WHERE id = 1000`, db))[0].n === 1, 120000);
  await until("the recorded refusal to clear", async () => (await migrationStatus(source, target, "own")).applyError === undefined, 60000);

  // The same for a role the source's default privileges grant a new object to: named, then carried once the role exists.
  const lateReader = `own_late_reader_${mode}`;
  await src.query(`CREATE ROLE ${lateReader} NOLOGIN`);
  await src.query(`ALTER DEFAULT PRIVILEGES FOR ROLE ${late} IN SCHEMA public GRANT SELECT ON TABLES TO ${lateReader}`, db);
  const as2 = new Client({ connectionString: src.uri(db) });
  as2.on("error", () => undefined);
  await as2.connect();
  await as2.query(`SET ROLE ${late}`);
  await as2.query(`CREATE TABLE late_2 (id int PRIMARY KEY)`);
  await as2.end();
  const st2 = await until("status to name the missing grantee", async () => {
    const s = await migrationStatus(source, target, "own");
    return s.applyError?.code === "ddl_owner" ? s : undefined;
  }, 120000);
  expect(st2.applyError!.message).toMatch(new RegExp(`CREATE TABLE late_2[\\s\\S]*SELECT to role "${lateReader}"[\\s\\S]*Fix: create the role on the target`));
  await tgt.query(`CREATE ROLE ${lateReader} NOLOGIN`);
  await until("replication to carry late_2 with its grant", async () => (await tgt.query(`SELECT CASE WHEN to_regclass('public.late_2') IS NOT NULL
    THEN has_table_privilege('${lateReader}', 'public.late_2', 'SELECT') END AS ok`, db))[0].ok, 120000);
  await until("the recorded refusal to clear", async () => (await migrationStatus(source, target, "own")).applyError === undefined, 60000);

  const cut = await cutoverMigration(source, target, { name: "own", freezeWrites: true, timeoutSec: 120, jobs: 2, verify: "hashes" });
  await writer.stop();
  expect(writer.errors).toEqual([]);
  expect(cut.phase).toBe("Completed");
  if (agent) expect(await exited(agent, "cutover while the agent runs")).toBe(0);

  const want = await owners(src, db);
  expect(await owners(tgt, db)).toEqual(want);
  // And the privileges the source's default privileges gave them (the target created them as its own role).
  const granted = await privileges(src, db);
  expect(await privileges(tgt, db)).toEqual(granted);
  for (const p of ["rel r items SELECT", "rel S items_id_seq USAGE", "rel v items_v SELECT", "proc item_count() EXECUTE"]) {
    expect(granted.filter((x) => `${x.o} ${x.priv}` === p).map((x) => x.grantee)).toContain(reader);
  }
  expect(granted.filter((x) => x.o === "proc item_count()").map((x) => x.grantee)).not.toContain("PUBLIC");
  expect(granted.filter((x) => x.o === "type mood").map((x) => x.grantee)).not.toContain("PUBLIC");
  // What the application made is its role's, on both sides (not the target's connecting role).
  const of = (o: string) => want.find((x) => x.o === o)?.owner;
  for (const o of ["rel r items", "rel S items_id_seq", "rel p parted", "rel r parted_1", "rel S counter", "rel v items_v", "rel m moods_mv",
    "proc item_count()", "proc touch_items()", "type mood", "type posint"]) expect([o, of(o)]).toEqual([o, app]);
  expect(of("rel r late_t")).toBe(late);
  expect((await tgt.query(`SELECT item_count()::int AS n`, db))[0].n).toBe(30);
  expect((await verifyMigration(source, target, { jobs: 2 })).problems).toEqual([]);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});

test("a statement whose owners the source could not record is refused by name in both modes, and owners are applied from the payload", async () => {
  await tgt.createDatabase("own_judge");
  await tgt.query(`CREATE ROLE own_judge_role NOLOGIN`);
  const c = await tgt.client("own_judge");
  await c.query(`CREATE SCHEMA pgferry`);
  try {
    for (const sql of targetApplySql("judge")) await c.query(sql);
    let id = 0;
    const run = async (sql: string, extra: Record<string, unknown>) => c.query(`INSERT INTO pgferry.ddl_log_judge VALUES ($1, $2)`,
      [++id, JSON.stringify({ v: 1, sql, commands: [{ tag: "CREATE TABLE", type: "table", identity: "public.j1" }], searchPath: "public",
        nonConstantDefaults: [], ...extra })]).then(() => "applied", (e: Error) => e.message);
    // Subscription mode's trigger: refused with the code, kept in the refusal sequence as ddl_owner.
    expect(await run("CREATE TABLE j1 (id int)", { owners: null, ownersError: "boom" })).toMatch(/^ddl_owner: .*could not record the owners.*boom/);
    expect(await readDdlRefusal(c, undefined, "judge")).toMatchObject({ code: "ddl_owner", logId: "1" });
    expect((await c.query(`SELECT to_regclass('public.j1') AS r`)).rows[0].r).toBeNull();
    // Owners (and privileges) from the payload: the table is the role's, as on the source.
    const owners = [{ type: "table", names: ["public", "j1"], args: [], owner: "own_judge_role",
      acl: [["own_judge_role", "SELECT", false], ["", "SELECT", false]], privs: ["SELECT"] }];
    expect(await run("CREATE TABLE j1 (id int)", { owners })).toBe("applied");
    expect((await c.query(`SELECT pg_get_userbyid(relowner) AS o, has_table_privilege('public', 'j1', 'SELECT') AS p FROM pg_class
      WHERE oid = 'public.j1'::regclass`)).rows[0]).toEqual({ o: "own_judge_role", p: true });
    // Stream mode's applier: the same refusal, by code.
    await expect(applyOwners(c, [], "CREATE TABLE j2 (id int)", "boom")).rejects.toMatchObject({ code: "ddl_owner",
      message: expect.stringContaining("could not record the owners") });
  } finally {
    await c.end();
  }
});

test("ownership not kept at start (a role missing on the target, no --roles): objects made while streaming belong to the target's role, as start named; nothing stops", async () => {
  const db = "own_notkept";
  await src.createDatabase(db); await tgt.createDatabase(db);
  await src.query(`CREATE ROLE own_src_only NOLOGIN`);
  await src.query(`GRANT CREATE ON SCHEMA public TO own_src_only; CREATE TABLE base (id int PRIMARY KEY); ALTER TABLE base OWNER TO own_src_only`, db);
  const source = parseEndpoint(src.uri(db), "source"), target = parseEndpoint(tgt.uri(db), "target");
  const started = await startMigration(source, target, migrationOptions({ name: "nk", mode: "stream", ddl: "replicate", jobs: 1 }));
  expect(started.phase).toBe("ReadyToCutover");
  expect((started.notCarried ?? []).map((x) => x.kind)).toContain("ownership and privileges");
  const agent = spawnAgent(["--name", "nk"], { source: src.uri(db), target: tgt.uri(db) });
  const as = new Client({ connectionString: src.uri(db) });
  as.on("error", () => undefined);
  await as.connect();
  await as.query(`SET ROLE own_src_only`);
  await as.query(`CREATE TABLE made (id serial PRIMARY KEY)`);
  await as.query(`INSERT INTO made DEFAULT VALUES`);
  await as.end();
  await until("the agent to apply the new table's row", async () => (await tgt.query(`SELECT to_regclass('public.made') IS NOT NULL AS e`, db))[0].e &&
    (await tgt.query(`SELECT count(*)::int AS n FROM made`, db))[0].n === 1, 120000);
  const me = (await tgt.query(`SELECT current_user AS u`, db))[0].u;
  expect((await tgt.query(`SELECT pg_get_userbyid(relowner) AS o FROM pg_class WHERE oid = 'public.made'::regclass`, db))[0].o).toBe(me);
  expect((await migrationStatus(source, target, "nk")).applyError).toBeUndefined();
  const cut = await cutoverMigration(source, target, { name: "nk", freezeWrites: true, timeoutSec: 120, jobs: 1 });
  expect(cut.phase).toBe("Completed");
  expect(await exited(agent, "cutover while the agent runs")).toBe(0);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});
