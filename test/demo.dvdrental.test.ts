import { Client } from "pg";
import { DemoWriteLoad, demoSchemaSql, populateDemo } from "../provider/demo/dvdrental";
import { LocalServer } from "../provider/embedded/localServer";
import { until } from "./support/until";

describe("DVD rental demo database", () => {
  let server: LocalServer | undefined;
  let client: Client | undefined;

  beforeAll(async () => {
    server = await LocalServer.start({ major: 15 });
    await server.createDatabase("demo");
    client = await server.client("demo");
  });

  afterAll(async () => {
    await client?.end().catch(() => undefined);
    await server?.stop();
  });

  test("schema, population at scale 1 and a live write load", async () => {
    const c = client!;
    await c.query(demoSchemaSql());
    const { rows } = await populateDemo(c, 1);
    expect(rows).toBeGreaterThan(40000);

    const count = async (table: string) => Number((await c.query(`SELECT count(*) AS n FROM ${table}`)).rows[0].n);
    expect(await count("film")).toBe(1000);
    expect(await count("customer")).toBe(600);
    expect(await count("rental")).toBe(16000);
    expect(await count("payment")).toBe(14000);
    expect(await count("payment_p2022_06")).toBeGreaterThan(0);
    expect(await count("payment_default")).toBe(0);
    expect(await count(`public."Store Notes"`)).toBeGreaterThan(0);
    expect(await count("sales_by_category")).toBe(16);

    // Every table has a primary key.
    const noPk = await c.query(`
      SELECT c.relname FROM pg_class c
       WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
         AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p')`);
    expect(noPk.rows).toEqual([]);

    // Sequences are past the generated ids: a default-id insert works.
    await c.query(`INSERT INTO public.actor (first_name, last_name) VALUES ('NEW', 'ACTOR')`);

    const load = new DemoWriteLoad(() => server!.client("demo"), { concurrency: 2, seed: 7 });
    load.start();
    await until("the load to commit transactions of several kinds", () => load.stats.transactions >= 20 && Object.keys(load.stats.byKind).length > 3);
    const stats = await load.stop();
    expect(stats.transactions).toBeGreaterThan(0);
    expect(stats.statements).toBeGreaterThanOrEqual(stats.transactions);
    expect(stats.errors).toBeLessThanOrEqual(Math.max(2, stats.transactions * 0.02));
    expect(Object.keys(stats.byKind).length).toBeGreaterThan(3);
    expect(stats).toBe(load.stats);
  });
});
