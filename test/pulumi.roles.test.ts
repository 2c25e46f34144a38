/**
 * The Migration resource's `roles` input reaches the engine (issue 13: Pulumi `roles: true`), through the real
 * dynamic-provider plugin (gRPC) against real servers 15 → 17, in both CDC modes: create makes the roles on the
 * target before pre-data (ownership and a column grant kept), cutover completes, the password login works on the
 * target, destroy leaves nothing (roles are global: the test drops them itself).
 */
import * as pulumi from "@pulumi/pulumi";
import { Client } from "pg";
import { LocalServer } from "../provider/embedded/localServer";
import { DynamicProviderHarness, unwrapSecrets } from "./support/dynamicProviderHarness";
import { leftovers, startServers } from "./support/servers";
import { ensureBuilt, ROOT } from "./support/build";

const registered: pulumi.runtime.MockResourceArgs[] = [];
pulumi.runtime.setMocks({
  newResource(args) { registered.push(args); return { id: `${args.name}-id`, state: args.inputs }; },
  call(args) { return args.inputs; },
}, "proj", "test", false);
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { Migration } = require("../provider/resources/migration") as typeof import("../provider/resources/migration");

let src: LocalServer, tgt: LocalServer;
const ROLES = ["pl_owner", "pl_login"];
const dropAll = async (s: LocalServer, db: string) => {
  await s.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
  for (const r of ROLES) await s.query(`DROP ROLE IF EXISTS ${r}`);
};

beforeAll(async () => { ensureBuilt(); [src, tgt] = await startServers(15, 17); });
afterAll(async () => { await src?.stop(); await tgt?.stop(); });

test.each(["subscription", "stream"] as const)("mode %s: the roles input creates the roles on the target; ownership, grants and a password login carried", async (mode) => {
  const db = `plroles_${mode}`;
  await dropAll(src, db); await dropAll(tgt, db);
  await src.createDatabase(db); await tgt.createDatabase(db);
  await src.query(`CREATE ROLE pl_owner NOLOGIN CREATEDB; CREATE ROLE pl_login LOGIN PASSWORD 'pl-login-pw'`);
  await src.query(`CREATE TABLE items (id int PRIMARY KEY, name text, secret text); ALTER TABLE items OWNER TO pl_owner;
    INSERT INTO items SELECT g, 'n' || g, 's' FROM generate_series(1, 30) g; GRANT SELECT (id, name) ON items TO pl_login`, db);

  const name = `plr_${mode}`;
  const m = new Migration(name, { source: pulumi.secret(src.uri(db)), target: pulumi.secret(tgt.uri(db)), name, mode, jobs: 2, roles: true });
  await new Promise((r) => m.urn.apply(r));
  const inputs = unwrapSecrets(registered.find((a) => a.name === name)!.inputs) as Record<string, any>;
  expect(inputs.roles).toBe(true);
  const h = await DynamicProviderHarness.start(inputs.__provider, { cwd: ROOT });
  try {
    await h.configure();
    const { id, outs } = await h.create(name, inputs);
    expect(outs).toMatchObject({ phase: "ReadyToCutover", roles: true, mode });
    // Made before pre-data, with their attributes: the dump's OWNER TO and GRANT applied as on the source.
    expect(await tgt.query(`SELECT rolname, rolcreatedb, rolcanlogin FROM pg_roles WHERE rolname LIKE 'pl\\_%' ORDER BY 1`))
      .toEqual([{ rolname: "pl_login", rolcreatedb: false, rolcanlogin: true }, { rolname: "pl_owner", rolcreatedb: true, rolcanlogin: false }]);
    expect((await tgt.query(`SELECT pg_get_userbyid(relowner) AS o FROM pg_class WHERE relname = 'items'`, db))[0].o).toBe("pl_owner");

    await src.query(`INSERT INTO items VALUES (100, 'during', 'cdc')`, db);
    const cut = await h.update(name, id, outs, { ...inputs, cutover: true, freezeWrites: true });
    expect(cut.outs).toMatchObject({ phase: "Completed", cutover: true });
    // The password login on the target (the verifier copied; scram-sha-256), limited to its column grant.
    const c = new Client({ connectionString: tgt.uri(db, "pl_login", "pl-login-pw") });
    await c.connect();
    try {
      expect((await c.query(`SELECT count(*)::int AS n FROM (SELECT id, name FROM items) x`)).rows[0].n).toBe(31);
      await expect(c.query(`SELECT secret FROM items`)).rejects.toThrow(/permission denied/);
    } finally { await c.end(); }

    await h.delete(name, id, cut.outs);
    expect(await leftovers(src, tgt, db)).toEqual([]);
  } finally {
    await h.stop();
  }
  await dropAll(src, db); await dropAll(tgt, db);
}, 240000);
