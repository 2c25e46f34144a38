/** Pure logic, no servers: what the applier runs for a captured DDL message, and what it refuses (by code). */
import { migrationOptions } from "../../core/options";
import { DdlPayload, ddlToApply, splitStatements } from "./statement";

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
