/**
 * Every object the database holds arrives, or pgferry names it and why (issue 10's numbered cases), on real
 * servers, 15 → 17: extensions at their version, objects outside schemas (casts, access methods, foreign-data
 * wrappers, servers, user mappings, default privileges, publications, event triggers, database settings),
 * SET lines that belong to the next dump entry, foreign keys with comments or to partitioned tables,
 * exclusion that follows dependencies, missing roles, pg_upgrade's checks, quoted names in messages.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { embeddedBinDir, LocalServer } from "../provider/embedded/localServer";
import {
  cleanupMigration, cutoverMigration, migrationOptions, migrationStatus, parseEndpoint, PgferryError, startMigration, verifyMigration,
} from "../provider/engine";
import { splitDump } from "../provider/engine/copy/schema";
import { CLI, ensureBuilt } from "./support/build";
import { leftovers, startServers, SYSTEM_PG15, wal2jsonMissing } from "./support/servers";

let src: LocalServer, tgt: LocalServer;
beforeAll(async () => { [src, tgt] = await startServers(15, 17); });
const tablespaceDirs: string[] = [];
afterAll(async () => {
  await src?.stop(); await tgt?.stop();
  for (const d of tablespaceDirs) fs.rmSync(d, { recursive: true, force: true });
});

const endpoints = (db: string) => ({ source: parseEndpoint(src.uri(db), "source"), target: parseEndpoint(tgt.uri(db), "target") });
async function databases(db: string, sql: string): Promise<void> {
  await src.createDatabase(db);
  await tgt.createDatabase(db);
  await src.query(sql, db);
}
/** The preflight findings a refused start reports. */
async function refusal(db: string, opts: Parameters<typeof migrationOptions>[0]) {
  const { source, target } = endpoints(db);
  const e = await startMigration(source, target, migrationOptions(opts)).then(() => undefined, (x) => x as PgferryError);
  if (!(e instanceof PgferryError)) console.error(e);
  expect(e).toBeInstanceOf(PgferryError);
  return e!.findings;
}

test("objects outside schemas travel: extensions at their version, casts, access methods, FDWs, default privileges, publications, event triggers (at cutover), database settings; FK comments and keys to partitioned tables", async () => {
  await databases("objs", `
    CREATE EXTENSION hstore; CREATE EXTENSION "uuid-ossp"; CREATE SCHEMA ext; CREATE EXTENSION citext WITH SCHEMA ext VERSION '1.5';
    CREATE TABLE kv (id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), h hstore, c ext.citext);
    REVOKE EXECUTE ON FUNCTION uuid_generate_v1() FROM PUBLIC;
    INSERT INTO kv (h, c) SELECT ('a=>' || g)::hstore, 'Name' || g FROM generate_series(1, 20) g;
    CREATE ACCESS METHOD heap2 TYPE TABLE HANDLER heap_tableam_handler;
    CREATE TABLE plain (id int PRIMARY KEY);
    CREATE TABLE no_columns (); ALTER TABLE no_columns REPLICA IDENTITY FULL; INSERT INTO no_columns DEFAULT VALUES; INSERT INTO no_columns DEFAULT VALUES;
    CREATE TABLE am (id int PRIMARY KEY) USING heap2;
    INSERT INTO am SELECT generate_series(1, 10);
    CREATE TABLE parent (id int PRIMARY KEY); CREATE TABLE kid (id int PRIMARY KEY, pid int REFERENCES parent);
    COMMENT ON CONSTRAINT kid_pid_fkey ON kid IS 'each kid has a parent';
    INSERT INTO parent SELECT generate_series(1, 5); INSERT INTO kid SELECT g, 1 + g % 5 FROM generate_series(1, 10) g;
    CREATE TABLE region (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
    CREATE TABLE region_2024 PARTITION OF region FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
    CREATE TABLE region_2025 PARTITION OF region FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
    INSERT INTO region VALUES (1, '2024-05-01'), (2, '2025-05-01');
    CREATE TABLE visit (id int PRIMARY KEY, rid int, rat date, FOREIGN KEY (rid, rat) REFERENCES region);
    INSERT INTO visit VALUES (1, 1, '2024-05-01'), (2, 2, '2025-05-01');
    CREATE FUNCTION parent_of(int) RETURNS parent LANGUAGE sql AS 'SELECT ROW($1)::parent';
    CREATE CAST (int AS parent) WITH FUNCTION parent_of(int);
    CREATE FOREIGN DATA WRAPPER dummy; CREATE SERVER elsewhere FOREIGN DATA WRAPPER dummy OPTIONS (host 'x');
    CREATE USER MAPPING FOR postgres SERVER elsewhere OPTIONS (user 'someone');
    ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC;
    CREATE PUBLICATION app_pub FOR TABLE parent, kid; CREATE PUBLICATION pgferry_other FOR TABLE kid;
    CREATE TABLE ddl_log (id serial PRIMARY KEY, tag text);
    CREATE FUNCTION log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO public.ddl_log (tag) VALUES (tg_tag); END $$;
    CREATE EVENT TRIGGER log_ddl ON ddl_command_end EXECUTE FUNCTION log_ddl();
    COMMENT ON EVENT TRIGGER log_ddl IS 'audits DDL';
    ALTER DATABASE objs SET force_parallel_mode = off;   -- renamed in 16: the target refuses it
    ALTER ROLE postgres IN DATABASE objs SET default_transaction_read_only = off;   -- the freeze's setting: never carried
    ALTER DATABASE objs SET work_mem = '7MB'; ALTER DATABASE objs SET search_path = "$user", public, ext; COMMENT ON DATABASE objs IS 'the app';
    SELECT lo_create(4242);`);
  // The event trigger logged the DDL above on the source; on the target it must not fire before the cutover.
  await src.query(`TRUNCATE ddl_log`, "objs");
  const { source, target } = endpoints("objs");
  const started = await startMigration(source, target, migrationOptions({ name: "objs", jobs: 2 }))
    .catch((e) => { throw new Error(`${e.message}: ${JSON.stringify(e.findings)}`); });
  expect(started.phase).toBe("ReadyToCutover");
  const q = (sql: string) => tgt.query(sql, "objs");
  expect(await q(`SELECT extname, extnamespace::regnamespace::text AS schema, extversion FROM pg_extension ORDER BY 1`)).toEqual(
    await src.query(`SELECT extname, extnamespace::regnamespace::text AS schema, extversion FROM pg_extension ORDER BY 1`, "objs"));
  // a grant changed on an extension's member travels too
  const acl = `SELECT proacl::text FROM pg_proc WHERE proname = 'uuid_generate_v1'`;
  expect(await q(acl)).toEqual(await src.query(acl, "objs"));
  expect(await q(acl)).toEqual([{ proacl: "{postgres=X/postgres}" }]);
  expect(await q(`SELECT amname FROM pg_am a JOIN pg_class c ON c.relam = a.oid WHERE c.relname = 'am'`)).toEqual([{ amname: "heap2" }]);
  expect(await q(`SELECT amname FROM pg_am a JOIN pg_class c ON c.relam = a.oid WHERE c.relname = 'plain'`)).toEqual([{ amname: "heap" }]);
  expect(await q(`SELECT castsource::regtype::text AS s, casttarget::regtype::text AS t FROM pg_cast c WHERE oid >= 16384 AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')`)).toEqual([{ s: "integer", t: "parent" }]);
  expect(await q(`SELECT srvname, srvoptions FROM pg_foreign_server`)).toEqual([{ srvname: "elsewhere", srvoptions: ["host=x"] }]);
  expect(await q(`SELECT usename, umoptions FROM pg_user_mappings`)).toEqual([{ usename: "postgres", umoptions: ["user=someone"] }]);
  // (17 adds MAINTAIN, "m", to the owner's default privileges)
  expect(await q(`SELECT defaclobjtype, defaclacl::text FROM pg_default_acl`)).toEqual([{ defaclobjtype: "r", defaclacl: expect.stringMatching(/^\{=r\/postgres,/) }]);
  // The source's own publication travels (with its tables); pgferry's never does.
  expect(await q(`SELECT pubname, array_agg(tablename::text ORDER BY tablename) AS tables FROM pg_publication_tables GROUP BY 1`))
    .toEqual([{ pubname: "app_pub", tables: ["kid", "parent"] }]);
  expect(await q(`SELECT evtname FROM pg_event_trigger`)).toEqual([]);
  expect(started.notCarried.map((x) => `${x.kind} ${x.object}`)).toEqual([
    'database setting ALTER ROLE "postgres" IN DATABASE … default_transaction_read_only = off', "database setting force_parallel_mode"]);
  // The large object is carried (issue 13), with its OID.
  expect(await q(`SELECT oid::int FROM pg_largeobject_metadata`)).toEqual([{ oid: 4242 }]);
  expect(started.notCarried[1].reason).toMatch(/the target refused it: unrecognized configuration parameter "force_parallel_mode"/);
  expect((await migrationStatus(source, target, "objs")).notCarried).toEqual(started.notCarried);

  await cutoverMigration(source, target, { name: "objs", freezeWrites: false, timeoutSec: 60, jobs: 2 });
  expect(await q(`SELECT evtname, evtenabled, obj_description(oid, 'pg_event_trigger') AS c FROM pg_event_trigger`))
    .toEqual([{ evtname: "log_ddl", evtenabled: "O", c: "audits DDL" }]);
  // The target's log holds what the source's trigger logged (pgferry's own publication there), nothing of the target's DDL.
  // (no ALTER TABLE of the keys, no COMMENT, no REFRESH MATERIALIZED VIEW made by the cutover)
  expect([...new Set((await q(`SELECT tag FROM ddl_log`)).map((x) => x.tag))].sort()).toEqual(["CREATE PUBLICATION", "DROP PUBLICATION"]);
  const settings = `SELECT setconfig FROM pg_db_role_setting WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = 'objs') AND setrole = 0`;
  expect(await q(settings)).toEqual([{ setconfig: ["work_mem=7MB", 'search_path="$user", public, ext'] }]);
  expect((await src.query(settings, "objs"))[0].setconfig).toEqual(["force_parallel_mode=off", "work_mem=7MB", 'search_path="$user", public, ext']);
  expect(await q(`SELECT shobj_description(oid, 'pg_database') AS c FROM pg_database WHERE datname = 'objs'`)).toEqual([{ c: "the app" }]);
  expect(await q(`SELECT obj_description(oid, 'pg_constraint') AS c FROM pg_constraint WHERE conname = 'kid_pid_fkey'`)).toEqual([{ c: "each kid has a parent" }]);
  // Every foreign key, the clones on the referenced partitions included, validated as on the source.
  const fks = `SELECT conrelid::regclass::text AS t, confrelid::regclass::text AS r, convalidated FROM pg_constraint WHERE contype = 'f' AND connamespace::regnamespace::text <> 'pgferry' ORDER BY 1, 2, 3`;
  expect(await q(fks)).toEqual(await src.query(fks, "objs"));
  expect((await q(fks)).length).toBeGreaterThan(2);
  expect(await q(`SELECT count(*)::int AS n FROM no_columns`)).toEqual([{ n: 2 }]);   // rows without columns are rows
  // (ddl_log: the source's trigger logged the cutover's DROP PUBLICATION after replication ended)
  const report = await verifyMigration(source, target, { excludeTables: ["public.ddl_log"] });
  expect(report.problems).toEqual([]);
  await cleanupMigration(source, target, "objs");
  expect(await leftovers(src, tgt, "objs")).toEqual(["publication app_pub", "publication pgferry_other", "target publication app_pub"]);
});

test("the SET lines pg_restore writes before an entry belong to it, and every entry carries the settings in force at its place", () => {
  const sql = [
    "SET statement_timeout = 0;", "", "SET default_tablespace = '';", "", "--", "-- Name: a_idx; Type: INDEX; Schema: public; Owner: x", "--", "",
    "CREATE INDEX a_idx ON public.a USING btree (v);", "", "", "SET default_tablespace = fast;", "", "--",
    "-- Name: b_idx; Type: INDEX; Schema: public; Owner: x", "--", "", "CREATE INDEX b_idx ON public.b USING btree (v);", "",
    "SET default_table_access_method = heap2;", "", "--", "-- Name: t; Type: TABLE; Schema: public; Owner: x", "--", "", "CREATE TABLE public.t (id int);", ""].join("\n");
  const { preamble, entries } = splitDump(sql);
  expect(preamble).toBe("SET statement_timeout = 0;");
  expect(entries.map((e) => [e.object, e.sql])).toEqual([
    ["public.a_idx", "SET default_tablespace = '';\nCREATE INDEX a_idx ON public.a USING btree (v);"],
    ["public.b_idx", "SET default_tablespace = fast;\nCREATE INDEX b_idx ON public.b USING btree (v);"],
    ["public.t", "SET default_tablespace = fast;\nSET default_table_access_method = heap2;\nCREATE TABLE public.t (id int);"],
  ]);
});

test("--include of a partitioned table takes its partitions and their rows (the partitions' root was read as a name, so they were left out: 'no tables selected')", async () => {
  await databases("incp", `
    CREATE TABLE ev (id int, at date, v text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
    CREATE TABLE ev_2024 PARTITION OF ev FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
    CREATE TABLE ev_2025 PARTITION OF ev FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
    CREATE TABLE other (id int PRIMARY KEY);
    INSERT INTO ev SELECT g, DATE '2024-01-01' + g, 'x' FROM generate_series(1, 600) g;`);
  const { source, target } = endpoints("incp");
  const started = await startMigration(source, target, migrationOptions({ name: "incp", mode: "stream", jobs: 1, include: ["ev"] }));
  expect(started.phase).toBe("ReadyToCutover");
  expect(started.notCarried.map((x) => `${x.kind} ${x.object}`)).toEqual(["table public.other"]);
  expect(await tgt.query(`SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p') ORDER BY 1`, "incp"))
    .toEqual([{ relname: "ev" }, { relname: "ev_2024" }, { relname: "ev_2025" }]);
  expect(await tgt.query(`SELECT tableoid::regclass::text AS p, count(*)::int AS n FROM ev GROUP BY 1 ORDER BY 1`, "incp"))
    .toEqual([{ p: "ev_2024", n: 365 }, { p: "ev_2025", n: 235 }]);
  await cleanupMigration(source, target, "incp");
  expect(await leftovers(src, tgt, "incp")).toEqual([]);
});

test("--exclude follows dependencies (views, materialized views, functions on the row type, partitions), lists what it left out, refuses unknown names; verify takes the same selection", async () => {
  await databases("excl", `
    CREATE TABLE keep (id int PRIMARY KEY, v text); INSERT INTO keep SELECT g, 'k' FROM generate_series(1, 10) g;
    CREATE TABLE gone (id serial PRIMARY KEY, keep_id int REFERENCES keep); INSERT INTO gone (keep_id) SELECT g FROM generate_series(1, 10) g;
    CREATE TABLE gone_child (note text) INHERITS (gone); INSERT INTO gone_child (keep_id, note) VALUES (1, 'inherits an excluded table');
    CREATE TABLE refs_gone (id int PRIMARY KEY, gone_id int REFERENCES gone); INSERT INTO refs_gone VALUES (1, 1);
    CREATE VIEW gone_v AS SELECT * FROM gone; CREATE VIEW gone_vv AS SELECT * FROM gone_v;
    CREATE MATERIALIZED VIEW gone_mv AS SELECT count(*) AS n FROM gone;
    CREATE FUNCTION gone_label(g gone) RETURNS text LANGUAGE sql AS 'SELECT g.id::text';
    COMMENT ON FUNCTION gone_label(gone) IS 'labels';
    CREATE VIEW keep_v AS SELECT * FROM keep;
    CREATE TABLE log (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
    CREATE TABLE log_2024 PARTITION OF log FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
    INSERT INTO log VALUES (1, '2024-02-02');`);
  // An unknown name is refused, naming it; so is leaving out what a kept table's default uses (pg_dump writes it inside CREATE TABLE).
  await src.query(`CREATE SEQUENCE ticket; CREATE TABLE desk (id int PRIMARY KEY DEFAULT nextval('ticket'))`, "excl");
  const findings = await refusal("excl", { name: "excl", exclude: ["public.gone", "nosuch", "ticket"] });
  expect(findings.map((f) => f.code)).toEqual(["unknown_relation", "exclusion_blocked"]);
  expect(findings[0].message).toMatch(/nosuch/);
  expect(findings[1].message).toMatch(/default value for column id of table public.desk/);
  // A partition left out while its partitioned table is migrated: its rows' changes would still come through the root
  // (stream mode then stops on an UPDATE matching no row; subscription mode puts new rows in another partition). Refused
  // before anything is made, naming the partition and both fixes.
  const refused = await refusal("excl", { name: "excl", exclude: ["public.gone", "log_2024"] });
  expect(refused.map((f) => f.code)).toEqual(["exclusion_partition"]);
  expect(refused[0].message).toMatch(/partition public\.log_2024 of public\.log, whose partitioned table is migrated/);
  expect(refused[0].fix).toMatch(/--exclude public\.log\b.*DETACH PARTITION public\.log_2024/);
  expect(await src.query(`SELECT slot_name FROM pg_replication_slots`, "excl")).toEqual([]);

  const { source, target } = endpoints("excl");
  const started = await startMigration(source, target, migrationOptions({ name: "excl", exclude: ["public.gone", "log", "keep_v"], jobs: 2 }));
  expect(started.phase).toBe("ReadyToCutover");
  expect(await tgt.query(`SELECT relname FROM pg_class WHERE relkind IN ('r', 'p', 'v', 'm') AND relnamespace = 'public'::regnamespace ORDER BY 1`, "excl"))
    .toEqual([{ relname: "desk" }, { relname: "keep" }, { relname: "refs_gone" }]);
  expect(await tgt.query(`SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace`, "excl")).toEqual([]);
  const listed = started.notCarried.map((x) => `${x.kind} ${x.object}`);
  // What was named is not repeated; what depends on it is listed, internal parts (a key's triggers) are not.
  expect(listed.sort()).toEqual(["dependent object function public.gone_label(public.gone)",
    "foreign key constraint refs_gone_gone_id_fkey on table public.refs_gone", "materialized view public.gone_mv", "sequence public.gone_id_seq",
    "table public.gone_child", "table public.log_2024", "view public.gone_v", "view public.gone_vv"]);
  // The cutover's gate and drift detection leave out what start left out (gone_child inherits gone).
  expect((await migrationStatus(source, target, "excl")).schemaDifferences).toEqual([]);
  await cutoverMigration(source, target, { name: "excl", freezeWrites: false, timeoutSec: 60, jobs: 2 });
  // verify with start's selection: what was left out is not missing; without it, it is.
  expect((await verifyMigration(source, target, { exclude: ["public.gone", "log", "keep_v"] })).problems).toEqual([]);
  expect((await verifyMigration(source, target)).problems.join("\n")).toMatch(/gone: table missing on target/);
  await expect(verifyMigration(source, target, { exclude: ["nosuch"] })).rejects.toThrow(/nosuch.*fix: give verify the same/);
  // The CLI takes start's flag names.
  ensureBuilt();
  const cli = spawnSync(process.execPath, [CLI, "verify", "--source", src.uri("excl"),
    "--target", tgt.uri("excl"), "--exclude", "public.gone", "--exclude", "log", "--exclude", "keep_v", "--counts-only"], { encoding: "utf8" });
  expect(cli.stdout).toMatch(/source and target are equal/);
  expect(cli.status).toBe(0);
  const status = spawnSync(process.execPath, [CLI, "status", "--target", tgt.uri("excl"), "--name", "excl"], { encoding: "utf8" });
  expect(status.stdout).toMatch(/not carried to the target \(8\):[\s\S]*- view public\.gone_v: depends on an excluded relation/);
  await cleanupMigration(source, target, "excl");
  expect(await leftovers(src, tgt, "excl")).toEqual([]);
});

test("roles missing on the target: a policy's role stops preflight naming the role and the CREATE ROLE fix; an owner or a grant is a warning", async () => {
  await src.query(`CREATE ROLE auditor; CREATE ROLE "Report Reader"`);
  await databases("roles", `
    CREATE TABLE doc (id int PRIMARY KEY, owner text); ALTER TABLE doc ENABLE ROW LEVEL SECURITY;
    CREATE POLICY mine ON doc TO auditor USING (owner = current_user);
    GRANT SELECT (id) ON doc TO "Report Reader";`);
  const findings = await refusal("roles", { name: "roles" });
  const named = findings.find((f) => f.code === "roles_named")!;
  expect(named.severity).toBe("error");
  expect(named.message).toMatch(/auditor.*policy mine on table doc/);
  expect(named.fix).toMatch(/CREATE ROLE "auditor";/);
  const warned = findings.find((f) => f.code === "roles")!;
  expect(warned.severity).toBe("warning");
  expect(warned.fix).toMatch(/CREATE ROLE "Report Reader";/);
  expect(await tgt.query(`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'pgferry'`, "roles")).toEqual([{ n: 0 }]);
});

test("what pg_upgrade checks: an unloadable C library, lz4 columns on a target without lz4, a child's own generation expression, a clashing collation", async () => {
  const lib15 = path.join(embeddedBinDir(15), "..", "lib", "postgresql", "hstore");
  await databases("upg", `
    CREATE TABLE t (id int PRIMARY KEY, v text);
    CREATE FUNCTION my_hstore_diag(text) RETURNS int AS '${lib15}', 'hstore_version_diag' LANGUAGE C STRICT;
    CREATE TABLE g (a int, b int);
    CREATE TABLE g_child (a int, b int GENERATED ALWAYS AS (a * 3) STORED); ALTER TABLE g_child INHERIT g;
    CREATE COLLATION mine (provider = libc, locale = 'C');`);
  const lz4 = (await src.query(`SELECT 'lz4' = ANY(enumvals) AS has FROM pg_settings WHERE name = 'default_toast_compression'`))[0].has;
  if (lz4) await src.query(`ALTER TABLE t ALTER COLUMN v SET COMPRESSION lz4`, "upg");
  else console.warn("the source server has no lz4: the lz4 check is not exercised here");
  await tgt.query(`CREATE COLLATION mine (provider = libc, locale = 'C')`, "upg");
  // A tablespace the target lacks (pg_restore would SET default_tablespace to it).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pgferry-ts-"));
  tablespaceDirs.push(dir);
  const pgUser = spawnSync("id", ["-u", "postgres"], { encoding: "utf8" });
  if (process.getuid?.() === 0 && pgUser.status === 0) fs.chownSync(dir, Number(pgUser.stdout.trim()), Number(spawnSync("id", ["-g", "postgres"], { encoding: "utf8" }).stdout.trim()));
  await src.query(`CREATE TABLESPACE "Fast Disk" LOCATION '${dir}'`);
  await src.query(`CREATE TABLE on_fast (id int PRIMARY KEY) TABLESPACE "Fast Disk"`, "upg");
  const findings = await refusal("upg", { name: "upg" });
  const byCode = new Map(findings.map((f) => [f.code, f]));
  expect(byCode.get("c_library")?.message).toMatch(/hstore.*my_hstore_diag/);
  expect(byCode.get("generated_child")?.message).toMatch(/g_child\.b \(parent g, where it is not generated\)/);
  expect(byCode.get("target_objects")?.message).toMatch(/collation public\.mine/);
  expect(byCode.get("target_objects")?.fix).toMatch(/drop them on the target/);
  if (lz4) expect(byCode.get("lz4")?.message).toMatch(/t\.v/);
  expect(byCode.get("tablespaces")?.message).toMatch(/"Fast Disk" \(1 relation/);
  expect(byCode.get("tablespaces")?.fix).toMatch(/CREATE TABLESPACE "Fast Disk" LOCATION/);
  await src.query(`DROP TABLE on_fast`, "upg");
  await src.query(`DROP TABLESPACE "Fast Disk"`);
  for (const f of findings) expect(f.fix.length).toBeGreaterThan(10);
});

test("names in messages are quoted where they need it; a schema named \"abc\" is not shown as \"abc\".job", async () => {
  await databases("quote", `CREATE SCHEMA """abc"""; CREATE TABLE """abc""".job (v int); CREATE TABLE "Mixed"."T" (v int)`.replace(`CREATE TABLE "Mixed"`, `CREATE SCHEMA "Mixed"; CREATE TABLE "Mixed"`));
  const findings = await refusal("quote", { name: "quote" });
  const noKey = findings.find((f) => f.code === "no_replica_identity")!;
  expect(noKey.objects).toEqual(['"""abc""".job', '"Mixed"."T"']);
  expect(noKey.message).toContain('"""abc""".job');
});

