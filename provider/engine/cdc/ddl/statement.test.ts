/** Pure logic, no servers: what the applier runs for a captured DDL message, and what it refuses (by code). */
import { migrationOptions } from "../../core/options";
import { afterBackfillSql, beforeBackfillSql, DdlPayload, ddlToApply, parseLogRow, splitStatements } from "./statement";

const payload = (sql: string, over: Partial<DdlPayload> = {}): DdlPayload =>
  ({ v: 1, sql, commands: [{ tag: "ALTER TABLE", type: "table", identity: "public.t" }], searchPath: "public", nonConstantDefaults: [], ...over });
const codeOf = (f: () => unknown): string | undefined => { try { f(); return undefined; } catch (e) { return (e as { code?: string }).code; } };

test("statements split at top-level semicolons only (quotes, dollar quotes, comments kept whole)", () => {
  expect(splitStatements("ALTER TABLE t ADD COLUMN a text DEFAULT 'x;y';").map((s) => s.text)).toEqual(["ALTER TABLE t ADD COLUMN a text DEFAULT 'x;y'"]);
  expect(splitStatements(`CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $b$ SELECT 1; $b$ ; -- done; really`)).toHaveLength(1);
  expect(splitStatements(`COMMENT ON TABLE t IS E'it''s \\'; here'`)).toHaveLength(1);
  expect(splitStatements(`/* a; /* nested; */ b; */ CREATE INDEX i ON "we;ird"(x)`)).toHaveLength(1);
  expect(splitStatements("ALTER TABLE t ADD COLUMN b int; UPDATE t SET b = 1")).toHaveLength(2);
  expect(splitStatements(";;  ;")).toHaveLength(0);
});

test("one top-level DDL statement is applied as sent; CONCURRENTLY is dropped (the applier keeps it in its transaction)", () => {
  expect(ddlToApply(payload("ALTER TABLE t ADD COLUMN c int DEFAULT 5;"))).toMatchObject({ sql: "ALTER TABLE t ADD COLUMN c int DEFAULT 5", searchPath: "public" });
  expect(ddlToApply(payload("create unique index concurrently if not exists i on t (c)")).sql).toBe("create unique index  if not exists i on t (c)");
  expect(ddlToApply(payload("DROP INDEX CONCURRENTLY i")).sql).toBe("DROP INDEX  i");
  expect(ddlToApply(payload("-- why\nCREATE INDEX CONCURRENTLY i ON t (c)")).sql).toBe("-- why\nCREATE INDEX  i ON t (c)");
  // A column named "concurrently" elsewhere is not touched.
  expect(ddlToApply(payload(`ALTER TABLE t ADD COLUMN concurrently int`)).sql).toBe("ALTER TABLE t ADD COLUMN concurrently int");
});

test("what cannot be carried is refused by name before anything is applied", () => {
  expect(codeOf(() => ddlToApply(payload("ALTER TABLE t ADD COLUMN b int; INSERT INTO t VALUES (1)")))).toBe("ddl_multi_statement");
  expect(codeOf(() => ddlToApply(payload("DO $$ BEGIN EXECUTE 'ALTER TABLE t ADD COLUMN b int'; END $$")))).toBe("ddl_not_top_level");
  expect(codeOf(() => ddlToApply(payload("SELECT migrate()")))).toBe("ddl_not_top_level");
  expect(codeOf(() => ddlToApply(payload("CREATE TABLE c AS SELECT * FROM t", { commands: [{ tag: "CREATE TABLE AS", type: "table", identity: "public.c" }] }))))
    .toBe("ddl_unsupported");
  // A column the trigger found with a non-immutable default, added by this statement: refused.
  expect(codeOf(() => ddlToApply(payload("ALTER TABLE t ADD COLUMN ts timestamptz DEFAULT now()", { nonConstantDefaults: ["ts"] }))))
    .toBe("ddl_volatile_default");
  expect(codeOf(() => ddlToApply(payload(`ALTER TABLE t ADD "Ts" bigserial`, { nonConstantDefaults: ["Ts"] })))).toBe("ddl_volatile_default");
  // Backfilled by the capture (its values follow as row changes): applied as sent; one the capture could not backfill: refused with its reason.
  const volatile = (reason: string | null) => [{ table: "public.t", columns: ["ts", "i"], always: ["i"], reason }];
  expect(ddlToApply(payload("ALTER TABLE t ADD COLUMN ts timestamptz DEFAULT now(), ADD i int GENERATED ALWAYS AS IDENTITY",
    { nonConstantDefaults: ["i", "ts"], volatile: volatile(null) })).sql).toBe("ALTER TABLE t ADD COLUMN ts timestamptz DEFAULT now(), ADD i int GENERATED ALWAYS AS IDENTITY");
  const refused = (() => { try { ddlToApply(payload("ALTER TABLE t ADD COLUMN ts timestamptz DEFAULT now()", { nonConstantDefaults: ["ts"], volatile: volatile("public.t has no key") })); } catch (e) { return e as Error & { code: string }; } })();
  expect(refused).toMatchObject({ code: "ddl_volatile_default" });
  expect(refused!.message).toMatch(/public\.t has no key[\s\S]*Fix: .*primary key/);
  // Backfilled columns do not cover another column the statement adds that the capture did not list.
  expect(codeOf(() => ddlToApply(payload("ALTER TABLE t ADD COLUMN ts timestamptz DEFAULT now(), ADD u uuid DEFAULT gen_random_uuid()",
    { nonConstantDefaults: ["ts", "u"], volatile: [{ table: "public.t", columns: ["ts"], always: [], reason: null }] })))).toBe("ddl_volatile_default");
  // A column whose name starts like a flagged one is another column.
  expect(ddlToApply(payload("ALTER TABLE t ADD COLUMN tsx int", { nonConstantDefaults: ["ts"] })).sql).toBe("ALTER TABLE t ADD COLUMN tsx int");
  // The same column flagged (its catalog row is this transaction's) but not added by this statement: applied.
  expect(ddlToApply(payload("ALTER TABLE t ALTER COLUMN ts TYPE timestamp", { nonConstantDefaults: ["ts"] })).sql).toBe("ALTER TABLE t ALTER COLUMN ts TYPE timestamp");
});

test("--ddl replicate needs pgoutput; detect stays the default", () => {
  expect(migrationOptions({}).ddl).toBe("detect");
  expect(migrationOptions({ mode: "stream", ddl: "replicate" }).ddl).toBe("replicate");
  expect(migrationOptions({ mode: "subscription", ddl: "replicate" }).ddl).toBe("replicate");
  expect(codeOf(() => migrationOptions({ mode: "stream", plugin: "wal2json", ddl: "replicate" }))).toBe("bad_ddl");
  expect(codeOf(() => migrationOptions({ ddl: "sometimes" as "detect" }))).toBe("bad_ddl");
});

test("a backfilled identity ALWAYS column is BY DEFAULT on the target until the capture's after-backfill row puts it back with the sequence", () => {
  const p = payload("ALTER TABLE t ADD i int GENERATED ALWAYS AS IDENTITY", { nonConstantDefaults: ["i"], volatile: [{ table: "public.t", columns: ["i"], always: ["i"], reason: null }] });
  expect(beforeBackfillSql(p)).toEqual([`ALTER TABLE public.t ALTER COLUMN "i" SET GENERATED BY DEFAULT`]);
  expect(beforeBackfillSql({ ...p, volatile: [{ table: "public.t", columns: ["i"], always: ["i"], reason: "no key" }] })).toEqual([]);
  const row = parseLogRow(JSON.stringify({ v: 1, kind: "after-backfill", table: `public."T"`, columns: ["i", "s"], always: ["i"],
    sequences: [{ column: "s", lastValue: "500", isCalled: true }], error: null }));
  expect(row).toMatchObject({ kind: "after-backfill" });
  expect(afterBackfillSql(row as never)).toEqual([`ALTER TABLE public."T" ALTER COLUMN "i" SET GENERATED ALWAYS`,
    `SELECT pg_catalog.setval(pg_catalog.pg_get_serial_sequence('public."T"', 's'), 500, true)`]);
  // The source's backfill failed: refused there (its statement and rows are in the same open target transaction).
  expect(codeOf(() => afterBackfillSql({ ...(row as never as object), error: "check constraint violated" } as never))).toBe("ddl_volatile_default");
  // A malformed row is named, never run.
  expect(codeOf(() => parseLogRow(JSON.stringify({ v: 1, kind: "after-backfill", table: "public.t", columns: ["s"], always: [],
    sequences: [{ column: "s", lastValue: "1); DROP TABLE t; --", isCalled: true }], error: null })))).toBe("ddl_failed");
  // A DDL row is still a DDL row.
  expect(parseLogRow(JSON.stringify({ v: 1, sql: "ALTER TABLE t ADD c int", commands: [], searchPath: "public" }))).toMatchObject({ sql: "ALTER TABLE t ADD c int" });
});

test("start's table selection, judged by the capture: a statement on left-out tables only is not run (whatever its shape); one moving a table across it is refused by name", () => {
  const skip = { action: "skip" as const, tables: ["public.cache"], created: [{ oid: "1", table: "public.cache" }] };
  expect(ddlToApply(payload("CREATE TABLE cache (id int); INSERT INTO cache VALUES (1)", { selection: skip }))).toMatchObject({ sql: "", leftOut: ["public.cache"] });
  expect(ddlToApply(payload("SELECT partman.run_maintenance()", { selection: skip })).leftOut).toEqual(["public.cache"]);
  expect(ddlToApply(payload("ALTER TABLE cache ADD COLUMN ts timestamptz DEFAULT now()", { nonConstantDefaults: ["ts"], selection: skip })).leftOut)
    .toEqual(["public.cache"]);
  const refused = () => ddlToApply(payload("ALTER TABLE tmp RENAME TO cache",
    { selection: { action: "refuse", reason: "public.cache, a table the migration carries, now has a name --exclude names" } }));
  expect(codeOf(refused)).toBe("ddl_selection");
  expect(refused).toThrow(/"ALTER TABLE tmp RENAME TO cache".*now has a name --exclude names.*Fix: run pgferry cleanup and start again/s);
  expect(ddlToApply(payload("ALTER TABLE t ADD COLUMN c int")).leftOut).toBeUndefined();
});
