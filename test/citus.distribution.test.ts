/**
 * Hyperscale (Citus) distribution (issue #17), pure: the inputs' parsing and refusals (CLI flags and Pulumi's
 * distribution object), and the Citus SQL start runs after pre-data, in its order. No server: what these
 * statements do on a real Citus cluster only a cluster can show (docs/citus.md).
 */
import {
  distributionStatements, parseDistributionFlags, parseDistributionInput,
} from "../provider/engine/copy/distribution";
import { PgferryError } from "../provider/engine/core/errors";
import { migrationOptions } from "../provider/engine/core/options";
import { buildProgram } from "../provider/cli/main";

const refused = (f: () => unknown): PgferryError => {
  try { f(); } catch (e) { return e as PgferryError; }
  throw new Error("not refused");
};

describe("distribution inputs", () => {
  test("flags: tables qualified (unqualified = public), repeatable, colocation", () => {
    expect(parseDistributionFlags({ distribute: ["s.orders=customer_id", "lines=customer_id"], reference: ["s.countries", "s.countries"],
      colocate: ["lines=s.orders"] })).toEqual({
      distribute: { "s.orders": "customer_id", "public.lines": "customer_id" }, reference: ["s.countries"], colocate: { "public.lines": "s.orders" } });
  });

  test.each([
    [{ distribute: ["s.orders"] }, /--distribute "s.orders" is not TABLE=COLUMN; fix: give it as --distribute TABLE=COLUMN/],
    [{ distribute: ["s.orders="] }, /--distribute "s.orders=" is not TABLE=COLUMN/],
    [{ distribute: ["=c"] }, /--distribute "=c" is not TABLE=COLUMN/],
    [{ distribute: ["a.b.c=x"] }, /--distribute "a.b.c=x": "a.b.c" is not a table name.*fix: give --distribute schema.table=column/],
    [{ distribute: ["s.t=a", "s.t=b"] }, /names s.t twice.*fix: give one distribution column per table/],
    [{ colocate: ["s.a"] }, /--colocate "s.a" is not TABLE=TABLE; fix: give it as --colocate TABLE=TABLE/],
    [{ distribute: ["s.a=x"], colocate: ["s.a=s.b"] }, /--colocate s.a=s.b: s.b is not distributed; fix: give --distribute s.b=COLUMN/],
    [{ distribute: ["s.a=x"], reference: ["s.a"] }, /s.a named by both --distribute and --reference; fix:/],
    [{ distribute: ["s.a=x", "s.b=x"], colocate: ["s.a=s.b", "s.b=s.a"] }, /--colocate forms a cycle.*fix:/],
    [{ distribute: ["s.a=x"], colocate: ["s.a=s.a"] }, /with itself; fix: drop it/],
  ])("bad flags %j are refused naming the flag and the fix", (flags, message) => {
    const e = refused(() => parseDistributionFlags(flags));
    expect(e.code).toBe("bad_distribution");
    expect(e.message).toMatch(message);
    expect(e.fix).toBeTruthy();
  });

  test("Pulumi's distribution object: same result as the flags; malformed ones refused with the shape to give", () => {
    expect(parseDistributionInput({ distribute: { "s.t": "c", "s.u": "c" }, reference: ["s.r"], colocate: { "s.u": "s.t" } }))
      .toEqual(parseDistributionFlags({ distribute: ["s.t=c", "s.u=c"], reference: ["s.r"], colocate: ["s.u=s.t"] }));
    expect(parseDistributionInput(undefined)).toEqual({ distribute: {}, reference: [], colocate: {} });
    for (const bad of [["s.t"], { distribute: ["s.t=c"] }, { distribute: { "s.t": 1 } }, { reference: "s.r" }, { distrib: {} }]) {
      const e = refused(() => parseDistributionInput(bad));
      expect(e.code).toBe("bad_distribution");
      expect(e.message).toMatch(/^distribution: .*; fix: give distribution as \{ distribute:/);
    }
  });

  test("the CLI's start takes the flags (and --until schema); a bad one stops before anything connects", async () => {
    const program = buildProgram();
    program.exitOverride();
    const start = program.commands.find((c) => c.name() === "start")!;
    const flags = start.options.map((o) => o.long);
    expect(flags).toEqual(expect.arrayContaining(["--distribute", "--reference", "--colocate", "--until"]));
    const out: string[] = [];
    const write = process.stdout.write;
    process.stdout.write = ((s: string) => { out.push(s); return true; }) as typeof process.stdout.write;
    try {
      await program.parseAsync(["node", "pgferry", "start", "--source", "postgresql://u@127.0.0.1:1/d", "--target", "postgresql://u@127.0.0.1:1/d",
        "--distribute", "orders", "--json"]);
    } finally { process.stdout.write = write; }
    expect(process.exitCode).toBe(1);
    process.exitCode = 0;
    const printed = JSON.parse(out.join(""));
    expect(printed.error.code).toBe("bad_distribution");
    expect(printed.error.message).toMatch(/--distribute "orders" is not TABLE=COLUMN/);
    expect(printed.error.fix).toMatch(/--distribute TABLE=COLUMN/);
  });

  test("migrationOptions keeps the distribution (default none)", () => {
    expect(migrationOptions({}).distribution).toEqual({ distribute: {}, reference: [], colocate: {} });
    const d = parseDistributionFlags({ distribute: ["s.t=c"] });
    expect(migrationOptions({ distribution: d, mode: "stream" }).distribution).toEqual(d);
  });

  test("distributed or reference tables default to stream mode; a mode given is kept; no distribution: subscription", () => {
    expect(migrationOptions({ distribution: parseDistributionFlags({ distribute: ["s.t=c"] }) }).mode).toBe("stream");
    expect(migrationOptions({ distribution: parseDistributionFlags({ reference: ["s.r"] }) }).mode).toBe("stream");
    expect(migrationOptions({ distribution: parseDistributionFlags({ distribute: ["s.t=c"] }), mode: "subscription" }).mode).toBe("subscription");
    expect(migrationOptions({}).mode).toBe("subscription");
  });
});

describe("distribution plan: the Citus SQL and its order", () => {
  test("reference tables first, then distributed tables each after the table it is co-located with; guarded for re-runs", () => {
    const d = parseDistributionFlags({
      distribute: ["s.lines=order_id", "s.orders=order_id", "s.events=tenant", "s.payments=order_id"],
      reference: ["s.countries", "s.Currency"],
      colocate: ["s.lines=s.orders", "s.payments=s.lines"],
    });
    expect(distributionStatements(d)).toEqual([
      `SELECT create_reference_table('"s"."Currency"') WHERE NOT EXISTS (SELECT 1 FROM citus_tables WHERE table_name = '"s"."Currency"'::regclass AND citus_table_type = 'reference')`,
      `SELECT create_reference_table('"s"."countries"') WHERE NOT EXISTS (SELECT 1 FROM citus_tables WHERE table_name = '"s"."countries"'::regclass AND citus_table_type = 'reference')`,
      `SELECT create_distributed_table('"s"."events"', 'tenant') WHERE NOT EXISTS (SELECT 1 FROM citus_tables WHERE table_name = '"s"."events"'::regclass AND citus_table_type = 'distributed')`,
      `SELECT create_distributed_table('"s"."orders"', 'order_id') WHERE NOT EXISTS (SELECT 1 FROM citus_tables WHERE table_name = '"s"."orders"'::regclass AND citus_table_type = 'distributed')`,
      `SELECT create_distributed_table('"s"."lines"', 'order_id', colocate_with => '"s"."orders"') WHERE NOT EXISTS (SELECT 1 FROM citus_tables WHERE table_name = '"s"."lines"'::regclass AND citus_table_type = 'distributed')`,
      `SELECT create_distributed_table('"s"."payments"', 'order_id', colocate_with => '"s"."lines"') WHERE NOT EXISTS (SELECT 1 FROM citus_tables WHERE table_name = '"s"."payments"'::regclass AND citus_table_type = 'distributed')`,
    ]);
  });

  test("quotes in names are escaped as literals", () => {
    expect(distributionStatements(parseDistributionFlags({ distribute: ["s.o'k=c'x"] }))[0])
      .toBe(`SELECT create_distributed_table('"s"."o''k"', 'c''x') WHERE NOT EXISTS (SELECT 1 FROM citus_tables WHERE table_name = '"s"."o''k"'::regclass AND citus_table_type = 'distributed')`);
  });

  test("no distribution: no statement", () => {
    expect(distributionStatements(parseDistributionFlags({}))).toEqual([]);
  });
});

describe("Pulumi's Migration check", () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { check } = require("../provider/resources/migrationHandlers") as typeof import("../provider/resources/migrationHandlers");
  const endpoints = { source: "postgresql://u@127.0.0.1:1/d", target: "postgresql://u@127.0.0.1:2/d" };

  test("a malformed distribution fails the check on the distribution input, with the shape to give", async () => {
    const r = await check({}, { ...endpoints, mode: "stream", distribution: { distribute: ["public.t=c"] } });
    expect(r.failures).toEqual([{ property: "distribution", reason: expect.stringMatching(/^distribution: distribute is not an object.*fix: give distribution as/) }]);
  });

  test("a valid distribution passes", async () => {
    const r = await check({}, { ...endpoints, mode: "stream", distribution: { distribute: { "public.t": "c" }, reference: ["public.r"] } });
    expect(r.failures).toEqual([]);
  });
});

test("stream batches: a changed distribution column moves the row (DELETE … RETURNING + INSERT), an unchanged one is left out of SET", () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { batchSql } = require("../provider/engine/cdc/stream/stream") as typeof import("../provider/engine/cdc/stream/stream");
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { Client } = require("pg");
  const c = new Client();
  const rel = { tag: "relation", schema: "s", name: "orders", replicaIdentity: "default", keyColumns: ["id", "tenant"],
    columns: [{ name: "id" }, { name: "tenant" }, { name: "v" }] };
  const meta = (moveOnChange?: Set<string>) => () => ({ types: new Map([["id", "integer"], ["tenant", "integer"], ["v", "text"]]),
    alwaysIdentity: new Set<string>(), moveOnChange });
  const changes = [
    { tag: "update", relation: rel, key: { id: "1", tenant: "7" }, old: null, new: { id: "1", tenant: "8", v: undefined } },
    { tag: "update", relation: rel, key: null, old: null, new: { id: "2", tenant: "7", v: "x" } },
  ] as never;
  expect(batchSql(c, changes, meta(new Set(["tenant"]))).map((b) => b.sql)).toEqual([
    `WITH d AS (DELETE FROM "s"."orders" WHERE "id" = '1' AND "tenant" = '7' RETURNING *) INSERT INTO "s"."orders" ("id", "tenant", "v") ` +
      `SELECT '1', '8', d."v" FROM d`,
    `UPDATE "s"."orders" SET "id" = '2', "v" = 'x' WHERE "id" = '2' AND "tenant" = '7'`,
  ]);
  // Not distributed: the same changes as plain UPDATEs (what a non-Citus target gets).
  expect(batchSql(c, changes, meta()).map((b) => b.sql)).toEqual([
    `UPDATE "s"."orders" SET "id" = '1', "tenant" = '8' WHERE "id" = '1' AND "tenant" = '7'`,
    `UPDATE "s"."orders" SET "id" = '2', "tenant" = '7', "v" = 'x' WHERE "id" = '2' AND "tenant" = '7'`,
  ]);
});
