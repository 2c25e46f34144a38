/** Pure logic: no servers. */
import { formatTimings } from "../provider/cli/output";
import { splitQualified } from "../provider/engine/catalog/catalog";
import { undoSql } from "../provider/engine/cutover/cutover";
import { conninfo, parseEndpoint, redact } from "../provider/engine/core/endpoint";
import { formatFindings } from "../provider/engine/core/errors";
import { bigIntToLsn, lsnDiff, lsnToBigInt } from "../provider/engine/core/lsn";
import { migrationOptions, objectNames } from "../provider/engine/core/options";
import { foreignKeyEntries, matviewEntries, splitDump } from "../provider/engine/copy/schema";
import { addTablesEscape, wal2jsonOptions } from "../provider/engine/cdc/decoders/wal2json";

test("LSN arithmetic", () => {
  expect(lsnToBigInt("16/B374D848")).toBe((0x16n << 32n) | 0xb374d848n);
  expect(bigIntToLsn(lsnToBigInt("0/12B8DE08"))).toBe("0/12B8DE08");
  expect(lsnDiff("1/0", "0/FFFFFFFF")).toBe(1);
  expect(lsnDiff("0/10", "0/20")).toBe(0);
  expect(() => lsnToBigInt("nope")).toThrow();
});

test("endpoints: parsed, labelled without the password, redacted everywhere", () => {
  const ep = parseEndpoint("postgresql://app:s%3Acret@db.example:6543/shop?sslmode=require", "source");
  expect(ep).toMatchObject({ host: "db.example", port: 6543, user: "app", password: "s:cret", database: "shop", sslmode: "require" });
  expect(ep.label).toBe("source app@db.example:6543/shop");
  expect(redact("failed for s:cret at postgresql://app:s%3Acret@db.example/shop", ep)).toBe("failed for ******** at postgresql://app:********@db.example/shop");
  expect(conninfo(ep)).toBe("host='db.example' port=6543 user='app' dbname='shop' password='s:cret' sslmode=require");
  expect(conninfo(parseEndpoint("postgresql://o'neil:p\\w@h/d", "source"))).toContain("user='o\\'neil' dbname='d' password='p\\\\w'");
  expect(() => parseEndpoint("postgresql://u@h/d?sslmode=sometimes", "target")).toThrow(/sslmode=sometimes/);
});

test("qualified names split on the dot outside quotes", () => {
  expect(splitQualified("public.film")).toEqual({ schema: "public", name: "film" });
  expect(splitQualified('"Edge Aux"."Mixed.Case"')).toEqual({ schema: "Edge Aux", name: "Mixed.Case" });
  expect(splitQualified("film")).toEqual({ name: "film" });
  expect(splitQualified('"a""b".c')).toEqual({ schema: 'a"b', name: "c" });
});

test("migration options: defaults, validation, deterministic object names", () => {
  expect(migrationOptions({})).toMatchObject({ name: "main", mode: "subscription", jobs: 4, replicaIdentityFull: false,
    selection: { schemas: [], include: [], exclude: [] } });
  expect(objectNames("dvd_1")).toEqual({ slot: "pgferry_dvd_1", publication: "pgferry_dvd_1", subscription: "pgferry_dvd_1" });
  expect(() => migrationOptions({ mode: "magic" as never })).toThrow(/--mode/);
  expect(migrationOptions({}).stallTimeoutSec).toBe(30);
  expect(() => migrationOptions({ stallTimeoutSec: 0 })).toThrow(/--stall-timeout must be a whole number of seconds/);
  expect(() => migrationOptions({ name: "Shop" })).toThrow(/a-z, 0-9 and _/);
  expect(() => migrationOptions({ name: "shop_rev" })).toThrow(/reserved for rollback windows/);
  expect(migrationOptions({ name: "shop_revision" }).name).toBe("shop_revision");
  expect(migrationOptions({}).plugin).toBe("pgoutput");
  expect(migrationOptions({ mode: "stream", plugin: "wal2json" })).toMatchObject({ mode: "stream", plugin: "wal2json" });
  expect(() => migrationOptions({ plugin: "wal2json" })).toThrow(/--plugin wal2json needs --mode stream/);
  expect(() => migrationOptions({ mode: "stream", plugin: "test_decoding" as never })).toThrow(/--plugin must be one of pgoutput, wal2json/);
  expect(migrationOptions({}).unlogged).toBe("copy");
  expect(migrationOptions({ unlogged: "skip" }).unlogged).toBe("skip");
  expect(() => migrationOptions({ unlogged: "ignore" as never })).toThrow(/--unlogged must be one of copy, skip/);
});

test("wal2json options: add-tables escapes what its parser treats specially, numbers quoted only when asked", () => {
  expect(addTablesEscape("Tab, ü*")).toBe("Tab\\,\\ ü\\*");
  expect(addTablesEscape("a.b'c\\d")).toBe("a\\.b\\'c\\\\d");
  const opts = new Map(wal2jsonOptions([{ schema: "Sch. x", name: "t" }, { schema: "public", name: "m1" }], false));
  expect(opts.get("add-tables")).toBe("Sch\\.\\ x.t,public.m1");
  expect(opts.get("format-version")).toBe("2");
  expect(opts.get("include-lsn")).toBe("1");
  expect(opts.has("numeric-data-types-as-string")).toBe(false);
  expect(new Map(wal2jsonOptions([], true)).get("numeric-data-types-as-string")).toBe("1");
});

const DUMP = `--
-- PostgreSQL database dump
--

\\restrict abc123

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: film film_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.film
    ADD CONSTRAINT film_pkey PRIMARY KEY (film_id);


--
-- Name: idx_title; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX idx_title ON public.film USING btree (title);


--
-- Name: film film_fulltext_trigger; Type: TRIGGER; Schema: public; Owner: postgres
--

CREATE TRIGGER film_fulltext_trigger BEFORE INSERT OR UPDATE ON public.film FOR EACH ROW EXECUTE FUNCTION tsvector_update_trigger('fulltext', 'pg_catalog.english', 'title', 'description');

\\unrestrict abc123
--
-- PostgreSQL database dump complete
--
`;

test("pg_restore output splits into TOC entries; psql-only lines are dropped", () => {
  const { preamble, entries } = splitDump(DUMP);
  expect(preamble).toBe("SET statement_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);");
  expect(entries.map((e) => [e.kind, e.object])).toEqual([
    ["CONSTRAINT", "public.film film_pkey"], ["INDEX", "public.idx_title"], ["TRIGGER", "public.film film_fulltext_trigger"],
  ]);
  expect(entries[0].sql).toBe("ALTER TABLE ONLY public.film\n    ADD CONSTRAINT film_pkey PRIMARY KEY (film_id);");
  expect(entries.some((e) => e.sql.includes("\\"))).toBe(false);
});

test("foreign keys are held back NOT VALID then validated; partitioned ones added directly; excluded targets skipped", () => {
  const fk = (o: Partial<Parameters<typeof foreignKeyEntries>[0][0]>) => ({
    schema: "public", table: "rental", name: "rental_fk", definition: "FOREIGN KEY (a, b) REFERENCES public.inventory(a, b) ON DELETE CASCADE DEFERRABLE",
    validated: true, onPartitioned: false, refSchema: "public", refTable: "inventory", refPartitioned: false,
    quotedTable: "rental", quotedName: "rental_fk", comment: null, ...o });
  const entries = foreignKeyEntries([
    fk({}), fk({ name: "never_checked", validated: false }), fk({ table: "payment", name: "pay_fk", onPartitioned: true }),
    fk({ name: "to_excluded", refTable: "gone" }),
  ], new Set(["public.inventory"]));
  expect(entries.map((e) => e.sql)).toEqual([
    'ALTER TABLE ONLY "public"."rental" ADD CONSTRAINT "rental_fk" FOREIGN KEY (a, b) REFERENCES public.inventory(a, b) ON DELETE CASCADE DEFERRABLE NOT VALID;',
    'ALTER TABLE ONLY "public"."rental" VALIDATE CONSTRAINT "rental_fk";',
    'ALTER TABLE ONLY "public"."rental" ADD CONSTRAINT "never_checked" FOREIGN KEY (a, b) REFERENCES public.inventory(a, b) ON DELETE CASCADE DEFERRABLE;',
    'ALTER TABLE "public"."payment" ADD CONSTRAINT "pay_fk" FOREIGN KEY (a, b) REFERENCES public.inventory(a, b) ON DELETE CASCADE DEFERRABLE;',
  ]);
  expect(matviewEntries([{ schema: "s", name: "Mv" }])[0].sql).toBe('REFRESH MATERIALIZED VIEW "s"."Mv";');
});

test("findings print errors first, each with its fix", () => {
  const text = formatFindings([
    { code: "w", severity: "warning", server: "source", message: "unlogged", fix: "SET LOGGED" },
    { code: "e", severity: "error", server: "source", message: "wal_level", fix: "ALTER SYSTEM" },
  ]);
  expect(text.split("\n")).toEqual(["  ✗ [source] wal_level", "      fix: ALTER SYSTEM", "  ! [source] unlogged", "      fix: SET LOGGED"]);
});

test("index and constraint entries name the table they build on", () => {
  const { entryTable } = require("../provider/engine/copy/schema") as typeof import("../provider/engine/copy/schema");
  expect(entryTable("CREATE INDEX idx_title ON public.film USING btree (title);")).toBe("public.film");
  expect(entryTable('CREATE UNIQUE INDEX "Odd Idx" ON ONLY "Edge Aux"."Mixed Case Ü" USING btree ("Key");')).toBe('"Edge Aux"."Mixed Case Ü"');
  expect(entryTable("ALTER TABLE ONLY public.film\n    ADD CONSTRAINT film_pkey PRIMARY KEY (film_id);")).toBe("public.film");
  expect(entryTable("CREATE TRIGGER t BEFORE UPDATE ON public.film FOR EACH ROW EXECUTE FUNCTION f();")).toBeUndefined();
});

test("stream batches: grouped by table in order, consecutive changes merged, unsafe ones kept apart", () => {
  const { batchSql } = require("../provider/engine/cdc/stream/stream") as typeof import("../provider/engine/cdc/stream/stream");
  const { Client } = require("pg");
  const c = new Client();
  const rel = (name: string, ri = "default") => ({ tag: "relation", schema: "public", name, replicaIdentity: ri, keyColumns: ["id"], columns: [] }) as any;
  const acc = rel("acc"), log = rel("log"), full = rel("nokey", "full");
  const meta = () => ({ types: new Map([["id", "integer"], ["bal", "integer"], ["note", "text"]]), alwaysIdentity: new Set<string>(),
    columns: new Map([["id", { type: "integer", eq: true }], ["note", { type: "json", eq: false }]]) });
  const upd = (id: number, bal: number, r = acc, key?: object) => ({ tag: "update", relation: r, key: key ?? null, old: null, new: { id: String(id), bal: String(bal) } });
  const ins = (id: number) => ({ tag: "insert", relation: log, new: { id: String(id), note: `n'${id}` } });
  const del = (id: number) => ({ tag: "delete", relation: acc, key: { id: String(id) }, old: null });
  const out = batchSql(c, [upd(1, 10), ins(1), upd(2, 20), ins(2), upd(1, 11), del(3), del(4),
    upd(5, 50, acc, { id: "4" }), { tag: "delete", relation: full, old: { id: "1", note: null }, key: null }] as any, meta);
  expect(out).toEqual([
    // acc: updates of 1 and 2 merged, the second update of 1 replacing the first; deletes merged; a key change alone
    // (merged statements return the keys they touched: each must come back exactly once)
    { sql: `UPDATE "public"."acc" t SET "bal" = v.s0::integer FROM (VALUES ('2', '20'), ('1', '11')) AS v(k0, s0) WHERE t."id" = v.k0::integer ` +
      `RETURNING v.k0 AS k0`, expect: 2, table: `"public"."acc"`, kind: "update", keys: ["2", "1"] },
    { sql: `DELETE FROM "public"."acc" t USING (VALUES ('3'), ('4')) AS v(k0) WHERE t."id" = v.k0::integer RETURNING v.k0 AS k0`, expect: 2,
      table: `"public"."acc"`, kind: "delete", keys: ["3", "4"] },
    { sql: `UPDATE "public"."acc" SET "id" = '5', "bal" = '50' WHERE "id" = '4'`, expect: 1, table: `"public"."acc"`, kind: "update", one: `(id="4")` },
    // log: inserts merged into one multi-row INSERT
    { sql: `INSERT INTO "public"."log" ("id", "note") VALUES ('1', 'n''1'), ('2', 'n''2')`, expect: null },
    // REPLICA IDENTITY FULL: one physical row per change (tableoid too: ctids repeat across partitions), found by the value read
    // through the column's own type — `=` where the type has one (index usable), and its canonical text, byte-wise
    { sql: `DELETE FROM "public"."nokey" WHERE (tableoid, ctid) = (SELECT tableoid, ctid FROM "public"."nokey" WHERE "id" = '1'::integer AND ` +
      `"id"::text COLLATE "C" = ('1'::integer)::text COLLATE "C" AND "note" IS NULL LIMIT 1)`, expect: 1, table: `"public"."nokey"`, kind: "delete",
      one: `(id="1", note=NULL)` },
  ]);
  // A merged statement's RETURNING rows must name each key exactly once; a single change must touch exactly one row.
  const { checkStatement } = require("../provider/engine/cdc/stream/stream") as typeof import("../provider/engine/cdc/stream/stream");
  expect(() => checkStatement(out[0], 2, [{ k0: "2" }, { k0: "1" }])).not.toThrow();
  expect(() => checkStatement(out[0], 1, [{ k0: "2" }])).toThrow(/divergence on "public"."acc": the source's UPDATE of the row with key 1 found no such row/);
  expect(() => checkStatement(out[1], 3, [{ k0: "3" }, { k0: "4" }, { k0: "4" }])).toThrow(/DELETE of the row with key 4 matched 2 rows \(expected 1\)/);
  expect(() => checkStatement(out[4], 0)).toThrow(/DELETE of the row \(id="1", note=NULL\) found no such row/);
  expect(() => checkStatement(out[3], 2)).not.toThrow(); // INSERT: nothing to check
});

test("unfreeze SQL restores exactly the recorded settings, in one read-write transaction", () => {
  const ep = parseEndpoint("postgresql://u@h/Shop", "source");
  expect(undoSql(ep, [{ role: null, previous: null }, { role: "app", previous: null }, { role: "Ops Team", previous: "off" }])).toEqual([
    "BEGIN READ WRITE;",
    `ALTER DATABASE "Shop" RESET default_transaction_read_only;`,
    `ALTER ROLE "app" IN DATABASE "Shop" RESET default_transaction_read_only;`,
    `ALTER ROLE "Ops Team" IN DATABASE "Shop" SET default_transaction_read_only = 'off';`,
    "COMMIT;",
  ]);
  // A database that had its own setting gets it back; nothing recorded (older state) resets the database's.
  expect(undoSql(ep, [{ role: null, previous: "off" }])[1]).toBe(`ALTER DATABASE "Shop" SET default_transaction_read_only = 'off';`);
  expect(undoSql(ep, undefined)).toEqual(["BEGIN READ WRITE;", `ALTER DATABASE "Shop" RESET default_transaction_read_only;`, "COMMIT;"]);
});

test("downtime breakdown reads in step order and skips steps that did not run", () => {
  expect(formatTimings({ freezeMs: 1234, drainMs: 50, verifyMs: 800, heldBackMs: 10 }))
    .toBe("freeze 1.23 s, drain 0.05 s, verify 0.80 s, held-back objects 0.01 s");
});

test("Migration resource: rollbackWindow true → false is an in-place update; reopening or adding reverse replication after cutover is refused", async () => {
  const { diff, pickInputs } = await import("../provider/resources/migrationHandlers");
  const base = { source: "postgresql://u@old/db", target: "postgresql://u@new/db", name: "m", cutover: true, freezeWrites: true };
  const open = { ...base, reverseReplication: true };
  // Defaults: no reverse replication; the window, once there, stays open.
  expect(pickInputs(base)).toMatchObject({ reverseReplication: false, rollbackWindow: true });
  // Closing the window (pulumi config set pgferry:rollbackWindow false): an update, never a replace (the migration is the same).
  expect(await diff("id", open, { ...open, rollbackWindow: false })).toEqual({ changes: true, replaces: [], deleteBeforeReplace: true });
  expect(await diff("id", open, { ...open, rollbackWindow: true })).toEqual({ changes: false, replaces: [], deleteBeforeReplace: true });
  // Before cutover, reverse replication may be switched on or off freely.
  expect((await diff("id", { ...base, cutover: false }, { ...open, cutover: false })).changes).toBe(true);
  // After cutover: a window cannot be added (the application may have written already) nor reopened once closed.
  await expect(diff("id", base, open)).rejects.toThrow(/cut over without reverseReplication/);
  await expect(diff("id", { ...open, rollbackWindow: false }, open)).rejects.toThrow(/was closed .* cannot be reopened/);
});

test("large objects: carried by default; --no-large-objects and the Pulumi input largeObjects: false opt out, as an update", async () => {
  expect(migrationOptions({}).largeObjects).toBe(true);
  expect(migrationOptions({ largeObjects: false }).largeObjects).toBe(false);
  const { diff, pickInputs } = await import("../provider/resources/migrationHandlers");
  const base = { source: "postgresql://u@old/db", target: "postgresql://u@new/db", name: "m" };
  expect(pickInputs(base)).toMatchObject({ largeObjects: true });
  expect(pickInputs({ ...base, largeObjects: false })).toMatchObject({ largeObjects: false });
  expect(await diff("id", base, { ...base, largeObjects: false })).toMatchObject({ changes: true, replaces: [] });
  const { buildProgram } = await import("../provider/cli/main");
  const start = buildProgram().commands.find((c) => c.name() === "start")!;
  expect(start.options.map((o) => o.long)).toContain("--no-large-objects");
  expect(formatTimings({ freezeMs: 10, largeObjectsMs: 1234, verifyMs: 5 })).toMatch(/large objects 1\.23 s/);
});

test("Migration resource: unlogged defaults to copy, skip flows through, and changing it is an update (it only matters at cutover)", async () => {
  const { diff, pickInputs } = await import("../provider/resources/migrationHandlers");
  const base = { source: "postgresql://u@old/db", target: "postgresql://u@new/db", name: "m" };
  expect(pickInputs(base)).toMatchObject({ unlogged: "copy" });
  expect(pickInputs({ ...base, unlogged: "skip" })).toMatchObject({ unlogged: "skip" });
  expect(await diff("id", base, { ...base, unlogged: "skip" })).toMatchObject({ changes: true, replaces: [] });
});
