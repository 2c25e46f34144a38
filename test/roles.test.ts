/**
 * start --roles (issue 13) on real servers 15 → 17, both CDC modes: roles owning / granted on the migrated
 * objects are created on the target with attributes, membership, settings and password; ownership, table and
 * column grants and default privileges equal the source's; a password login works on the target (the
 * embedded servers use scram-sha-256 for every connection). Roles are global: the test drops them on both servers.
 */
import { Client } from "pg";
import { LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, cutoverMigration, migrationOptions, parseEndpoint, startMigration } from "../provider/engine";
import { leftovers, startServers, Writer } from "./support/servers";

let src: LocalServer, tgt: LocalServer;
const ROLES = ["app_owner", "app_rw", "app_ro", "app_group", "app_login"];
/** The test's databases go first (the source one is read-only after the cutover), then the roles they depended on. */
const dropRoles = async (s: LocalServer, dbs: string[]) => {
  for (const db of dbs) await s.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  for (const r of ROLES) await s.query(`DROP ROLE IF EXISTS ${r}`);
};

const ALL_DBS = ["roles_subscription", "roles_stream", "roles_differs", "roles_differs_subscription", "roles_nopw_subscription", "roles_nopw_stream", "roles_nocreate"];
beforeAll(async () => { [src, tgt] = await startServers(15, 17); });
afterAll(async () => {
  await dropRoles(src, ["roles_subscription", "roles_stream", "roles_differs"]).catch(() => undefined);
  await dropRoles(tgt, ["roles_subscription", "roles_stream", "roles_differs"]).catch(() => undefined);
  await src?.stop(); await tgt?.stop();
});

test.each(["subscription", "stream"] as const)("mode %s: roles, ownership, grants, settings and a password login carried", async (mode) => {
  const db = `roles_${mode}`;
  const all = ["roles_subscription", "roles_stream"];
  await dropRoles(src, all); await dropRoles(tgt, all);
  await src.createDatabase(db); await tgt.createDatabase(db);
  await src.query(`CREATE ROLE app_owner NOLOGIN CREATEDB; CREATE ROLE app_rw NOLOGIN CONNECTION LIMIT 7; CREATE ROLE app_ro NOLOGIN;
    CREATE ROLE app_group NOLOGIN; CREATE ROLE app_login LOGIN PASSWORD 'login-pw-1' VALID UNTIL '2099-01-01 00:00:00+00';
    GRANT app_group TO app_login; GRANT app_rw TO app_group; ALTER ROLE app_login SET search_path = app, public`);
  await src.query(`ALTER ROLE app_login IN DATABASE ${db} SET work_mem = '5MB'`);
  await src.query(`CREATE TABLE items (id int PRIMARY KEY, name text, secret text); ALTER TABLE items OWNER TO app_owner;
    INSERT INTO items SELECT g, 'n' || g, 's' FROM generate_series(1, 50) g;
    GRANT SELECT, INSERT, UPDATE ON items TO app_rw; GRANT SELECT (name) ON items TO app_ro;
    ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public GRANT SELECT ON TABLES TO app_ro`, db);
  const source = parseEndpoint(src.uri(db), "source"), target = parseEndpoint(tgt.uri(db), "target");
  const started = await startMigration(source, target, migrationOptions({ name: "roles", mode, jobs: 2, roles: true }));
  expect(started.phase).toBe("ReadyToCutover");
  expect(started.roles!.created.sort()).toEqual([...ROLES].sort());
  expect(started.roles!.passwords).toEqual(["app_login"]);
  const w = new Writer(src.uri(db), (i) => `INSERT INTO items VALUES (${1000 + i}, 'w', 's')`).start();
  await new Promise((r) => setTimeout(r, 300));
  await w.stop();
  const cut = await cutoverMigration(source, target, { name: "roles", freezeWrites: true, timeoutSec: 120, jobs: 2 });
  expect(cut.phase).toBe("Completed");
  const q = async (sql: string) => (await tgt.query(sql, db))[0];
  expect(await q(`SELECT rolcreatedb, rolcanlogin FROM pg_roles WHERE rolname = 'app_owner'`)).toEqual({ rolcreatedb: true, rolcanlogin: false });
  expect((await q(`SELECT rolconnlimit FROM pg_roles WHERE rolname = 'app_rw'`)).rolconnlimit).toBe(7);
  expect((await q(`SELECT rolvaliduntil = '2099-01-01 00:00:00+00' AS ok FROM pg_roles WHERE rolname = 'app_login'`)).ok).toBe(true);
  expect((await q(`SELECT pg_has_role('app_login', 'app_rw', 'USAGE') AS ok`)).ok).toBe(true);
  expect((await q(`SELECT setconfig::text AS c FROM pg_db_role_setting WHERE setrole = 'app_login'::regrole AND setdatabase = 0`)).c).toMatch(/search_path=app, public/);
  expect((await q(`SELECT setconfig::text AS c FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE setrole = 'app_login'::regrole AND d.datname = '${db}'`)).c).toMatch(/work_mem=5MB/);
  expect((await q(`SELECT pg_get_userbyid(relowner) AS o FROM pg_class WHERE relname = 'items'`)).o).toBe("app_owner");
  expect(await q(`SELECT has_table_privilege('app_rw', 'items', 'INSERT') AS a, has_table_privilege('app_ro', 'items', 'SELECT') AS b,
    has_column_privilege('app_ro', 'items', 'name', 'SELECT') AS c, has_column_privilege('app_ro', 'items', 'secret', 'SELECT') AS d`)).toEqual({ a: true, b: false, c: true, d: false });
  const acl = async (s: LocalServer) => (await s.query(`SELECT pg_get_userbyid(defaclrole) AS r, defaclacl::text AS a FROM pg_default_acl`, db));
  expect(await acl(tgt)).toEqual(await acl(src));
  expect((await tgt.query(`SELECT count(*)::int AS n FROM items`, db))[0].n).toBe((await src.query(`SELECT count(*)::int AS n FROM items`, db))[0].n);
  // The password login: the verifier copied, scram-sha-256 authentication on the target.
  const c = new Client({ connectionString: tgt.uri(db, "app_login", "login-pw-1") });
  await c.connect();
  expect((await c.query(`SELECT current_user AS u`)).rows[0].u).toBe("app_login");
  await c.end();
  const cleaned = await cleanupMigration(source, target, "roles");
  // Roles are global: cleanup names them and prints their DROP statements, never drops them.
  expect(cleaned.createdRoles.sort()).toEqual([...ROLES].sort());
  expect(cleaned.dropRoleStatements).toContain(`DROP ROLE "app_login";`);
  expect((await q(`SELECT count(*)::int AS n FROM pg_roles WHERE rolname LIKE 'app\\_%'`)).n).toBe(5);
  expect(await leftovers(src, tgt, db)).toEqual([]);
  await dropRoles(src, [db]); await dropRoles(tgt, [db]);
}, 240000);

test.each(["subscription", "stream"] as const)("mode %s: an existing target role with other attributes is reported, not changed; the others are created", async (mode) => {
  const db = mode === "stream" ? "roles_differs" : `roles_differs_${mode}`;
  const all = ["roles_subscription", "roles_stream", "roles_differs", "roles_differs_subscription"];
  await dropRoles(src, all); await dropRoles(tgt, all);
  await src.createDatabase(db); await tgt.createDatabase(db);
  await src.query(`CREATE ROLE app_owner NOLOGIN CREATEDB; CREATE ROLE app_rw NOLOGIN`);
  await tgt.query(`CREATE ROLE app_owner NOLOGIN NOCREATEDB CONNECTION LIMIT 3`);
  await src.query(`CREATE TABLE t (id int PRIMARY KEY); ALTER TABLE t OWNER TO app_owner; GRANT SELECT ON t TO app_rw`, db);
  const source = parseEndpoint(src.uri(db), "source"), target = parseEndpoint(tgt.uri(db), "target");
  const started = await startMigration(source, target, migrationOptions({ name: "roles", mode, jobs: 2, roles: true }));
  expect(started.roles!.created).toEqual(["app_rw"]);
  expect(started.roles!.existing).toEqual(["app_owner"]);
  const f = started.findings.find((x) => x.code === "role_differs")!;
  expect(f).toMatchObject({ severity: "warning", objects: ["app_owner"] });
  expect(f.message).toMatch(/"app_owner" \(CREATEDB on the source, NOCREATEDB on the target; CONNECTION LIMIT -1 on the source, 3 on the target\)/);
  expect((await tgt.query(`SELECT rolcreatedb, rolconnlimit FROM pg_roles WHERE rolname = 'app_owner'`))[0]).toEqual({ rolcreatedb: false, rolconnlimit: 3 });
  expect((await tgt.query(`SELECT pg_get_userbyid(relowner) AS o FROM pg_class WHERE relname = 't'`, db))[0].o).toBe("app_owner");
  const cleaned = await cleanupMigration(source, target, "roles");
  expect(cleaned.createdRoles).toEqual(["app_rw"]);
  expect(await leftovers(src, tgt, db)).toEqual([]);
  await dropRoles(src, [db]); await dropRoles(tgt, [db]);
}, 120000);

/** The roles the non-superuser tests add on the source: a migration user that may replicate but not read pg_authid. */
const MIGRATOR = "ferry_limited";
const dropMigrator = async (s: LocalServer) => { await s.query(`DROP ROLE IF EXISTS ${MIGRATOR}`).catch(() => undefined); };

test.each(["subscription", "stream"] as const)("mode %s: a source role that may not read pg_authid: roles created without password, the finding names them; "
  + "setting one on the target makes the login work", async (mode) => {
  const db = `roles_nopw_${mode}`;
  await dropRoles(src, ALL_DBS); await dropRoles(tgt, ALL_DBS); await dropMigrator(src); await dropMigrator(tgt);
  await src.createDatabase(db); await tgt.createDatabase(db);
  await src.query(`CREATE ROLE app_owner NOLOGIN; CREATE ROLE app_login LOGIN PASSWORD 'login-pw-2';
    CREATE ROLE ${MIGRATOR} LOGIN REPLICATION PASSWORD 'limited-pw'; GRANT app_owner TO ${MIGRATOR}; GRANT CREATE ON DATABASE ${db} TO ${MIGRATOR}`);
  await src.query(`CREATE TABLE items (id int PRIMARY KEY, name text); ALTER TABLE items OWNER TO app_owner;
    INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 20) g; GRANT SELECT ON items TO app_login`, db);
  // Not a superuser: it may not read pg_authid, so no verifier can be copied.
  expect((await src.query(`SELECT rolsuper FROM pg_roles WHERE rolname = '${MIGRATOR}'`))[0].rolsuper).toBe(false);
  const source = parseEndpoint(src.uri(db, MIGRATOR, "limited-pw"), "source"), target = parseEndpoint(tgt.uri(db), "target");
  const started = await startMigration(source, target, migrationOptions({ name: "roles", mode, jobs: 2, roles: true }))
    .catch((e) => { throw new Error(`${e.message}: ${JSON.stringify(e.findings)}`); });
  expect(started.phase).toBe("ReadyToCutover");
  expect(started.roles!.passwords).toEqual([]);
  // Every login role created is named (the migration user itself is a member of the owner, so it is carried too).
  const f = started.findings.find((x) => x.code === "role_passwords")!;
  expect(f).toMatchObject({ severity: "warning", server: "target", objects: ["app_login", MIGRATOR] });
  expect(f.message).toMatch(/"app_login", "ferry_limited" were created on the target without a password/);
  expect(f.fix).toMatch(/ALTER ROLE … PASSWORD/);
  expect(f.message + f.fix).not.toContain("limited-pw");
  expect((await tgt.query(`SELECT rolname, rolpassword IS NULL AS none FROM pg_authid WHERE rolname IN ('app_login', '${MIGRATOR}') ORDER BY 1`)))
    .toEqual([{ rolname: "app_login", none: true }, { rolname: MIGRATOR, none: true }]);
  // Not the database's owner: it may not freeze the source, so the cutover waits for writes to stop instead (none here).
  const cut = await cutoverMigration(source, target, { name: "roles", freezeWrites: false, timeoutSec: 120, jobs: 2 });
  expect(cut.phase).toBe("Completed");
  // No password: the login fails on the target until one is set there (the finding's fix), then it reads its grant.
  const login = async () => { const c = new Client({ connectionString: tgt.uri(db, "app_login", "login-pw-2") }); await c.connect();
    try { return (await c.query(`SELECT count(*)::int AS n FROM items`)).rows[0].n; } finally { await c.end(); } };
  await expect(login()).rejects.toThrow(/password authentication failed/);
  await tgt.query(`ALTER ROLE app_login PASSWORD 'login-pw-2'`);
  expect(await login()).toBe(20);
  expect((await tgt.query(`SELECT pg_get_userbyid(relowner) AS o FROM pg_class WHERE relname = 'items'`, db))[0].o).toBe("app_owner");
  await cleanupMigration(source, target, "roles");
  expect(await leftovers(src, tgt, db)).toEqual([]);
  await dropRoles(src, [db]); await dropRoles(tgt, [db]); await dropMigrator(src); await dropMigrator(tgt);
}, 240000);

test("--roles with a target user that may not create roles: preflight names the roles and the fix; nothing is created", async () => {
  const db = "roles_nocreate";
  await dropRoles(src, ALL_DBS); await dropRoles(tgt, ALL_DBS); await dropMigrator(tgt);
  await src.createDatabase(db); await tgt.createDatabase(db);
  await src.query(`CREATE ROLE app_owner NOLOGIN; CREATE ROLE app_rw NOLOGIN`);
  await src.query(`CREATE TABLE t (id int PRIMARY KEY); ALTER TABLE t OWNER TO app_owner; GRANT SELECT ON t TO app_rw`, db);
  // On the target: may create schemas in the database, may not create roles.
  await tgt.query(`CREATE ROLE ${MIGRATOR} LOGIN PASSWORD 'limited-pw'; GRANT CREATE ON DATABASE ${db} TO ${MIGRATOR}`);
  await tgt.query(`GRANT SET ON PARAMETER session_replication_role TO ${MIGRATOR}`).catch(() => undefined);
  const source = parseEndpoint(src.uri(db), "source"), target = parseEndpoint(tgt.uri(db, MIGRATOR, "limited-pw"), "target");
  const err = await startMigration(source, target, migrationOptions({ name: "roles", mode: "stream", jobs: 2, roles: true })).catch((e) => e);
  expect(err.code).toBe("preflight");
  const f = err.findings.find((x: { code: string }) => x.code === "roles_create");
  expect(f).toMatchObject({ severity: "error", server: "target", objects: ["app_owner", "app_rw"] });
  expect(f.message).toMatch(/--roles must create role\(s\) app_owner, app_rw on the target, but "ferry_limited" is neither superuser nor has CREATEROLE/);
  expect(f.fix).toMatch(/superuser or a role with CREATEROLE/);
  expect(await tgt.query(`SELECT rolname FROM pg_roles WHERE rolname IN ('app_owner', 'app_rw')`)).toEqual([]);
  expect(await leftovers(src, tgt, db)).toEqual([]);
  await dropRoles(src, [db]); await dropRoles(tgt, [db]);
  await tgt.query(`DROP OWNED BY ${MIGRATOR}`, db).catch(() => undefined); await dropMigrator(tgt);
}, 120000);
