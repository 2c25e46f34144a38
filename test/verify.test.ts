/**
 * verifyMigration against real servers (source PostgreSQL 15, target 17): identical databases verify
 * clean (and the independent tools/verify.sh agrees, hash for hash); then each kind of damage done
 * to the target is reported by name.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import { LocalServer } from "../provider/embedded/localServer";
import { parseEndpoint } from "../provider/engine/core/endpoint";
import { verifyMigration, VerifyReport } from "../provider/engine/verify/verify";

const VERIFY_SH = "/work/shared/tools/verify.sh";
const DB = "shop";

const SCHEMA = `
CREATE SCHEMA "Edge Aux";
CREATE TABLE public.customers (
  id serial PRIMARY KEY,
  name text NOT NULL,
  email text UNIQUE,
  data jsonb,
  balance numeric(12, 2) CHECK (balance >= -1000),
  created timestamptz,
  photo bytea,
  tags text[],
  name_upper text GENERATED ALWAYS AS (upper(name)) STORED,
  touched int NOT NULL DEFAULT 0
);
CREATE TABLE public.orders (
  id bigint PRIMARY KEY,
  customer_id int NOT NULL CONSTRAINT orders_customer_fk REFERENCES public.customers (id),
  amount numeric NOT NULL,
  placed_on date,
  took interval
);
CREATE TABLE public.events (id bigint NOT NULL, at timestamptz NOT NULL, payload jsonb, PRIMARY KEY (id, at))
  PARTITION BY RANGE (at);
CREATE TABLE public.events_2023 PARTITION OF public.events FOR VALUES FROM ('2023-01-01 00:00+00') TO ('2024-01-01 00:00+00');
CREATE TABLE public.events_2024 PARTITION OF public.events FOR VALUES FROM ('2024-01-01 00:00+00') TO ('2025-01-01 00:00+00');
CREATE TABLE "Edge Aux"."Quoted Tbl" ("Ünïcödé Col" text, "MixedCase" int PRIMARY KEY, "with space" float8, "a""quote" real);
CREATE SEQUENCE public.ticket_seq START 100 INCREMENT 5;
CREATE SEQUENCE "Edge Aux"."Down Seq" INCREMENT -1 MINVALUE -1000 MAXVALUE 0 START 0;
CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.touched := OLD.touched + 1; RETURN NEW; END $$;
CREATE TRIGGER customers_touch BEFORE UPDATE ON public.customers FOR EACH ROW EXECUTE FUNCTION public.touch();
CREATE MATERIALIZED VIEW public.order_totals AS SELECT customer_id, sum(amount) AS total FROM public.orders GROUP BY 1;
`;

const DATA = `
INSERT INTO public.customers (name, email, data, balance, created, photo, tags)
SELECT 'cust ' || g, 'c' || g || '@example.com',
       jsonb_build_object('n', g, 'nested', jsonb_build_object('ok', g % 2 = 0), 'list', jsonb_build_array(g, 'x')),
       (g * 12.34)::numeric(12, 2), timestamptz '2024-02-29 12:34:56.789+05:30' + g * interval '1 hour',
       decode(lpad(to_hex(g), 8, '0'), 'hex'), ARRAY['a' || g, 'b "quoted"', NULL]
FROM generate_series(1, 50) g;
INSERT INTO public.customers (name) VALUES ('Zoë ünïcode ☃');
INSERT INTO public.orders SELECT g, 1 + g % 50, g * 1.5, date '2024-01-01' + g, g * interval '90 seconds'
FROM generate_series(1, 200) g;
INSERT INTO public.events SELECT g, timestamptz '2023-06-01 00:00+00' + g * interval '3 days', jsonb_build_object('g', g)
FROM generate_series(1, 150) g;
INSERT INTO "Edge Aux"."Quoted Tbl" VALUES ('héllo wörld', 1, 0.1, 1.5), ('日本語', 2, 1e-300, -0.25), (NULL, 3, 'NaN', 3.4e38);
SELECT nextval('public.ticket_seq') FROM generate_series(1, 3);
SELECT nextval('"Edge Aux"."Down Seq"') FROM generate_series(1, 4);
REFRESH MATERIALIZED VIEW public.order_totals;
`;

function runVerifySh(...args: string[]): { status: number | null; stdout: string; out: string } | undefined {
  if (!fs.existsSync(VERIFY_SH)) {
    console.log(`${VERIFY_SH} is absent: skipping the comparison with the independent checker`);
    return undefined;
  }
  const r = spawnSync("bash", [VERIFY_SH, ...args], { encoding: "utf8" });
  return { status: r.status, stdout: r.stdout, out: r.stdout + r.stderr };
}

describe("verifyMigration", () => {
  let source: LocalServer | undefined;
  let target: LocalServer | undefined;

  beforeAll(async () => {
    [source, target] = await Promise.all([LocalServer.start({ major: 15 }), LocalServer.start({ major: 17 })]);
    for (const s of [source, target]) {
      await s.createDatabase(DB);
      await s.query(SCHEMA, DB);
      await s.query(DATA, DB);
    }
  });

  afterAll(async () => {
    await Promise.all([source?.stop(), target?.stop()]);
  });

  const endpoints = () => [parseEndpoint(source!.uri(DB), "source"), parseEndpoint(target!.uri(DB), "target")] as const;

  let equal: VerifyReport;

  test("identical databases verify clean", async () => {
    const [src, tgt] = endpoints();
    equal = await verifyMigration(src, tgt);
    expect(equal.problems).toEqual([]);
    expect(equal.ok).toBe(true);
    const byName = new Map(equal.tables.map((t) => [t.table, t]));
    expect([...byName.keys()].sort()).toEqual([
      '"Edge Aux"."Quoted Tbl"', "public.customers", "public.events", "public.events_2023", "public.events_2024",
      "public.order_totals", "public.orders",
    ]);
    expect(byName.get("public.customers")).toMatchObject({ sourceRows: 51, targetRows: 51, ok: true });
    expect(byName.get("public.events")).toMatchObject({ sourceRows: 150, targetRows: 150, ok: true });
    expect(byName.get("public.events_2023")!.sourceRows + byName.get("public.events_2024")!.sourceRows).toBe(150);
    for (const t of equal.tables) {
      if (t.table === "public.events") continue; // parents: covered by leaves, no hash
      expect(t.sourceHash).toMatch(/^[0-9a-f]{32}$/);
      expect(t.targetHash).toBe(t.sourceHash);
    }
    expect(equal.sequences.map((s) => s.sequence).sort()).toEqual([
      '"Edge Aux"."Down Seq"', "public.customers_id_seq", "public.ticket_seq",
    ]);
    expect(equal.sequences.find((s) => s.sequence === "public.ticket_seq")).toMatchObject({ sourceNext: "115", targetNext: "115", ok: true });
    expect(equal.sequences.find((s) => s.sequence === '"Edge Aux"."Down Seq"')).toMatchObject({ sourceNext: "-4", ok: true });
    expect(equal.objects.find((o) => o.name === "orders_customer_fk")).toMatchObject({ kind: "constraint", table: "public.orders", ok: true });
    expect(equal.objects.find((o) => o.name === "customers_touch")).toMatchObject({ kind: "trigger", table: "public.customers", ok: true });

    // Other modes agree.
    const counts = await verifyMigration(src, tgt, { hashes: false, jobs: 1 });
    expect(counts.ok).toBe(true);
    expect(counts.tables.every((t) => t.sourceHash === undefined)).toBe(true);
    const some = await verifyMigration(src, tgt, { schemas: ["Edge Aux"], jobs: 8 });
    expect(some.ok).toBe(true);
    expect(some.tables.map((t) => t.table)).toEqual(['"Edge Aux"."Quoted Tbl"']);
    const none = await verifyMigration(src, tgt, { schemas: ["no such schema"] });
    expect(none.ok).toBe(false);
  });

  test("the independent verify.sh agrees: exit 0 and the same hashes", () => {
    const r = runVerifySh(source!.uri(DB), target!.uri(DB));
    if (!r) return;
    if (r.status !== 0) console.log(r.out);
    expect(r.status).toBe(0);
    // Its table lines show the first 12 characters of each hash: ours must be among them.
    const shown = new Set(r.stdout.split("\n").filter((l) => /^OK\s+(tbl|mv)\s/.test(l)).map((l) => l.trim().split(/\s+/)[4]));
    for (const t of equal.tables) if (t.sourceHash) expect(shown).toContain(t.sourceHash.slice(0, 12));
  });

  test("our control schema, present only on the target, is ignored by default", async () => {
    await target!.query("CREATE SCHEMA pgferry; CREATE TABLE pgferry.state (k text PRIMARY KEY, v text)", DB);
    const [src, tgt] = endpoints();
    const report = await verifyMigration(src, tgt);
    expect(report.problems).toEqual([]);
    // Named explicitly, it is compared (and exists only on the target).
    const named = await verifyMigration(src, tgt, { schemas: ["public", "pgferry"] });
    expect(named.problems).toContain("pgferry.state: table exists only on target");
  });

  test("damage on the target is reported by name", async () => {
    await target!.query(`
      DELETE FROM public.orders WHERE id = 7;
      UPDATE "Edge Aux"."Quoted Tbl" SET "Ünïcödé Col" = 'changed' WHERE "MixedCase" = 2;
      SELECT setval('public.ticket_seq', 100);
      ALTER TABLE public.orders DROP CONSTRAINT orders_customer_fk;
      ALTER TABLE public.customers DISABLE TRIGGER customers_touch;
    `, DB);
    const [src, tgt] = endpoints();
    const report = await verifyMigration(src, tgt, { jobs: 2 });
    expect(report.ok).toBe(false);
    const text = report.problems.join("\n");
    expect(text).toContain("public.orders: 200 rows on source, 199 on target");
    expect(text).toContain('"Edge Aux"."Quoted Tbl": contents differ (3 rows');
    expect(text).toMatch(/public\.ticket_seq: target would hand out 105 next, behind the source's 115/);
    expect(text).toMatch(/public\.orders: foreign key "orders_customer_fk" missing on target/);
    expect(text).toMatch(/public\.customers: trigger "customers_touch" is enabled on source but disabled on target/);
    // Each problem once, nothing else flagged, and no credentials anywhere.
    expect(report.problems).toHaveLength(5);
    expect(report.tables.find((t) => t.table === '"Edge Aux"."Quoted Tbl"')).toMatchObject({ sourceRows: 3, targetRows: 3, ok: false });
    expect(report.sequences.find((s) => s.sequence === "public.ticket_seq")).toMatchObject({ ok: false, targetNext: "105" });
    expect(report.objects.find((o) => o.name === "orders_customer_fk")).toMatchObject({ ok: false });
    expect(report.objects.find((o) => o.name === "customers_touch")).toMatchObject({ ok: false });
    expect(JSON.stringify(report)).not.toContain(source!.password);
    expect(JSON.stringify(report)).not.toContain(target!.password);

    // Excluding the damaged table hides its problems (and its constraints).
    const skip = await verifyMigration(src, tgt, { excludeTables: ["public.orders", "Edge Aux.Quoted Tbl"] });
    expect(skip.problems.some((p) => p.startsWith("public.orders") || p.startsWith("Edge Aux"))).toBe(false);
    expect(skip.problems).toHaveLength(2);

    // verify.sh (told to skip our control schema by naming the user schemas) sees a mismatch too.
    const r = runVerifySh(source!.uri(DB), target!.uri(DB), "public", "Edge Aux");
    if (r) expect(r.status).toBe(1);
  });
});
