/**
 * ServerParameters, FirewallRule and SchemaSync through the real dynamic-provider plugin on real servers:
 * wal_level changed but not yet in force (pending restart, Migration refuses), the 28000 "no pg_hba.conf
 * entry for replication connection" refusal naming host, user and the fixing rule, the `_replrule` rule
 * written/checked/removed, autoReplicationRule, and SchemaSync followed by the Migration.
 */
import * as fs from "fs";
import * as path from "path";
import { LocalServer } from "../provider/embedded/localServer";
import { firewallRuleProvider } from "../provider/resources/firewallRule";
import { migrationProvider } from "../provider/resources/migration";
import { schemaSyncProvider } from "../provider/resources/schemaSync";
import { serverParametersProvider } from "../provider/resources/serverParameters";
import { DynamicProviderHarness } from "./support/dynamicProviderHarness";
import { leftovers, reloadConf } from "./support/servers";
import { ensureBuilt, ROOT } from "./support/build";

let src: LocalServer, tgt: LocalServer;
const plugins: DynamicProviderHarness[] = [];

async function plugin(provider: Parameters<typeof DynamicProviderHarness.start>[0]) {
  const h = await DynamicProviderHarness.start(provider, { cwd: ROOT });
  await h.configure();
  plugins.push(h);
  return h;
}

beforeAll(async () => {
  ensureBuilt();
  // wal_level left to the configuration files: the server starts with the default, replica.
  [src, tgt] = await Promise.all([LocalServer.start({ major: 15, settings: { wal_level: null, listen_addresses: "127.0.0.1,::1" } }),
    LocalServer.start({ major: 17 })]);
  await src.createDatabase("app");
  await tgt.createDatabase("app");
  await src.query(`CREATE TABLE parent (id int PRIMARY KEY); CREATE TABLE child (id int PRIMARY KEY, p int REFERENCES parent);
    INSERT INTO parent SELECT generate_series(1, 100); INSERT INTO child SELECT g, g FROM generate_series(1, 100) g;`, "app");
});
afterAll(async () => {
  for (const h of plugins) await h.stop();
  await src?.stop(); await tgt?.stop();
});

const migration = (name: string, extra: Record<string, unknown> = {}) => ({ source: src.uri("app"), target: tgt.uri("app"), name, ...extra });

test("ServerParameters: wal_level set, restart pending, Migration refuses until the restart", async () => {
  const params = await plugin(serverParametersProvider);
  const mig = await plugin(migrationProvider);
  const { id, outs } = await params.create("params", { server: src.uri("postgres") });
  expect(outs).toMatchObject({ pendingRestart: true, pendingRestartParameters: ["wal_level"], wanted: { wal_level: "logical" } });
  expect(outs.effective.wal_level).toBe("replica");
  expect(outs.changed).toContain("wal_level");
  expect(Number(outs.wanted.max_replication_slots)).toBeGreaterThanOrEqual(3);

  await expect(mig.create("m", migration("early"))).rejects.toThrow(/wal_level was changed on the source but the server has not been restarted/);
  expect(await leftovers(src, tgt)).toEqual([]);

  await src.restart();
  const refreshed = await params.read("params", id, outs);
  expect(refreshed.props).toMatchObject({ pendingRestart: false, effective: { wal_level: "logical" } });
  // Applying again changes nothing.
  expect((await params.update("params", id, outs, { server: src.uri("postgres") })).outs.changed).toEqual([]);
});

test("pg_hba: the target's replication connection refused (28000) names host, user and the rule; FirewallRule fixes it; autoReplicationRule adds it", async () => {
  // The target reaches the source over ::1 (another "network" than pgferry's 127.0.0.1), which pg_hba does not allow.
  const hbaPath = path.join(src.dataDir, "pg_hba.conf");
  const original = fs.readFileSync(hbaPath, "utf8");
  fs.writeFileSync(hbaPath, original.split("\n").filter((l) => !/::1\/128/.test(l)).join("\n"));
  await reloadConf(src);
  try {
    const mig = await plugin(migrationProvider);
    const viaV6 = (name: string, extra: Record<string, unknown> = {}) => migration(name, { sourceHostForTarget: "::1", ...extra });
    await expect(mig.create("m", viaV6("hba"))).rejects.toThrow(
      /the source refuses the target's replication connection: no pg_hba\.conf entry for a replication connection from host "::1", user "postgres".*new pgferry\.FirewallRule\("source_replrule", \{ server: <source admin URI>, address: "::1\/128", user: "postgres", database: "app", replication: true \}\)/s);
    // Found before the slot and the load: nothing is left on the servers.
    expect(await leftovers(src, tgt)).toEqual([]);

    const fw = await plugin(firewallRuleProvider);
    const rule = { server: src.uri("postgres"), name: "target", address: "::1/128", user: "postgres", database: "app", replication: true };
    expect((await fw.check("fw", {}, { ...rule, address: "not-an-ip" })).failures[0].reason).toMatch(/CIDR/);
    const created = await fw.create("fw", rule);
    expect(created.id).toBe("pgferry-hba-target_replrule");
    expect(created.outs).toMatchObject({ ruleName: "target_replrule", line: "host\tapp\tpostgres\t::1/128\tscram-sha-256\t# pgferry:target_replrule" });
    expect((await fw.read("fw", created.id, created.outs)).id).toBe(created.id);

    const { id, outs } = await mig.create("m", viaV6("hba"));
    expect(outs.phase).toBe("ReadyToCutover");
    await mig.delete("m", id, outs);

    await fw.delete("fw", created.id, created.outs);
    expect((await fw.read("fw", created.id, created.outs)).id).toBe("");
    expect(fs.readFileSync(hbaPath, "utf8")).not.toContain("target_replrule");

    // The same refusal, fixed by the Migration itself (into another empty target database).
    await tgt.createDatabase("auto");
    const auto = await mig.create("m2", viaV6("auto", { autoReplicationRule: true, target: tgt.uri("auto") }));
    expect(auto.outs.phase).toBe("ReadyToCutover");
    expect(fs.readFileSync(hbaPath, "utf8")).toContain("host\tapp\tpostgres\t::1/128\tscram-sha-256\t# pgferry:auto_replrule");
    await mig.delete("m2", auto.id, auto.outs);
    expect(await leftovers(src, tgt, "app", "auto")).toEqual([]);
  } finally {
    fs.writeFileSync(hbaPath, original);
    await src.query(`SELECT pg_reload_conf()`);
  }
});

test("SchemaSync copies the schema and reports what comes later; the Migration continues from it", async () => {
  const ss = await plugin(schemaSyncProvider);
  const mig = await plugin(migrationProvider);
  await tgt.createDatabase("ss");
  const inputs = { source: src.uri("app"), target: tgt.uri("ss"), name: "ss" };
  const schema = await ss.create("schema", inputs);
  expect(schema.outs.phase).toBe("Loading");
  expect(schema.outs.postData.map((e: { kind: string }) => e.kind)).toEqual(["CONSTRAINT", "CONSTRAINT"]);
  expect(schema.outs.heldBack).toEqual([{ kind: "FK CONSTRAINT", object: "public.child.child_p_fkey", applied: false },
    { kind: "FK VALIDATE", object: "public.child.child_p_fkey", applied: false }]);
  expect(await tgt.query(`SELECT count(*)::int AS n FROM child`, "ss")).toEqual([{ n: 0 }]);

  const { id, outs } = await mig.create("mig", inputs);
  expect(outs).toMatchObject({ phase: "ReadyToCutover", rowsCopied: 200 });
  expect((await ss.read("schema", schema.id, schema.outs)).props.postData.every((e: { applied: boolean }) => e.applied)).toBe(true);
  await mig.delete("mig", id, outs);
  expect(await leftovers(src, tgt, "app", "ss")).toEqual([]);
});
