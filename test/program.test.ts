/**
 * The Pulumi programs under pulumi.runtime.setMocks: the root program (Pulumi.yaml) and the examples.
 * The resource graph, dependencies (parameters and firewall rules before the schema, schema before the
 * migration), stack config → resource inputs, and secrets kept secret.
 */
import * as pulumi from "@pulumi/pulumi";
import { ensureBuilt } from "./support/build";

const SECRET_SIG = "4dabf18193072939515e22adb298388d";
const resources: pulumi.runtime.MockResourceArgs[] = [];
pulumi.runtime.setMocks({
  newResource(args) { resources.push(args); return { id: `${args.name}-id`, state: args.inputs }; },
  call(args) {
    if (args.token === "azure-native:authorization:getClientToken") return { token: "fake-token" };
    if (args.token === "azure-native:authorization:getClientConfig") return { subscriptionId: "sub", tenantId: "t", clientId: "c", objectId: "o" };
    return args.inputs;
  },
}, "proj", "test", false);

/** The mock monitor's RegisterResourceRequest carries dependsOn; MockResourceArgs does not. */
const deps = new Map<string, string[]>();
const monitor = pulumi.runtime.getMonitor() as any;
const register = monitor.registerResource.bind(monitor);
monitor.registerResource = (req: any, cb: any) => {
  deps.set(req.getName(), req.getDependenciesList().map((u: string) => u.split("::").pop()));
  return register(req, cb);
};

const find = (type: string, name: string) => {
  const r = resources.find((x) => x.type === type && x.name === name);
  if (!r) throw new Error(`no ${type} named ${name}; have ${resources.map((x) => `${x.type}/${x.name}`).join(", ")}`);
  return r;
};
const settle = () => new Promise((r) => setTimeout(r, 500));
const T = (t: string) => `pulumi-nodejs:dynamic/pgferry:${t}`;

beforeAll(() => {
  // The examples import "pgferry" as users do: the package's built entry.
  ensureBuilt();
});

test("root program: config → inputs, prerequisites before schema before migration, secrets", async () => {
  pulumi.runtime.setAllConfig({
    "pgferry:source": "postgresql://migrator:src-pw@old:5432/shop", "pgferry:target": "postgresql://postgres:tgt-pw@new:5432/shop",
    "pgferry:sourceAdmin": "postgresql://postgres:admin-pw@old:5432/postgres", "pgferry:replicationClients": '["10.0.0.7"]',
    "pgferry:cutover": "true", "pgferry:reverseReplication": "true", "pgferry:rollbackWindow": "false", "pgferry:name": "shop", "pgferry:jobs": "6", "pgferry:schemas": '["public","sales"]',
    "pgferry:azure": JSON.stringify({ resourceGroupName: "rg", serverName: "pg13", replicationClientIps: ["20.1.2.3"] }),
  }, ["pgferry:source", "pgferry:target", "pgferry:sourceAdmin"]);
  const { declareMigrationStack } = require("../program/stack") as typeof import("../program/stack");
  declareMigrationStack();
  await settle();

  const mig = find(T("Migration"), "migration");
  expect(mig.inputs).toMatchObject({ name: "shop", cutover: true, jobs: 6, schemas: ["public", "sales"], mode: "subscription", freezeWrites: false,
    reverseReplication: true, rollbackWindow: false });
  expect(JSON.stringify(mig.inputs.source)).toContain(SECRET_SIG);
  expect(JSON.stringify(mig.inputs.source)).toContain("src-pw"); // inside the secret envelope only
  expect(mig.inputs.__provider).not.toContain("pw");
  expect(find(T("SchemaSync"), "schema").inputs).toMatchObject({ name: "shop", schemas: ["public", "sales"] });
  expect(find(T("FirewallRule"), "replication-client-1").inputs).toMatchObject({ name: "shop_1_replrule", address: "10.0.0.7/32", replication: true });
  expect(find("pgferry:azure:FlexibleServerPrerequisites", "source-azure")).toBeDefined();

  expect(deps.get("migration")).toEqual(["schema"]);
  // dependsOn a component means every resource in it: the Azure rules, parameters and restart.
  expect(deps.get("schema")!.sort()).toEqual(["replication-client-1", "source-azure-max_replication_slots", "source-azure-max_wal_senders",
    "source-azure-replrule-1", "source-azure-restart", "source-azure-wal_level", "source-parameters"]);
  expect(deps.get("replication-client-1")).toEqual(["source-parameters"]);
});

test("root program: every Migration input is reachable from stack config", async () => {
  const { INPUT_KEYS } = require("../provider/resources/migrationHandlers") as typeof import("../provider/resources/migrationHandlers");
  // A value other than the default for each input, as `pulumi config set pgferry:<key> …` stores it (strings).
  const values: Record<string, unknown> = {
    source: "postgresql://m:s@old/db", target: "postgresql://m:t@new/db", name: "every", mode: "stream", plugin: "wal2json",
    schemas: ["a"], include: ["a.t"], exclude: ["a.u"], replicaIdentityFull: true, sourceHostForTarget: "old.internal:5433",
    jobs: 7, freezeWrites: true, cutover: true, cutoverTimeoutSec: 99, verify: "hashes", cutoverGraceSec: 2, autoReplicationRule: true,
    reverseReplication: true, rollbackWindow: false, unlogged: "skip", largeObjects: false, roles: true, ddl: "replicate",
    distribution: { distribute: { "a.t": "k" }, reference: ["a.r"], colocate: {} }, databases: ["shop", "billing"], allDatabases: true,
  };
  expect(Object.keys(values).sort()).toEqual([...INPUT_KEYS].sort());
  pulumi.runtime.setAllConfig(Object.fromEntries(Object.entries(values).map(([k, v]) => [`pgferry:${k}`, typeof v === "string" ? v : JSON.stringify(v)])),
    ["pgferry:source", "pgferry:target"]);
  const { declareMigrationStack } = require("../program/stack") as typeof import("../program/stack");
  declareMigrationStack();
  await settle();
  const mig = resources.filter((r) => r.type === T("Migration") && r.inputs.name === "every").pop()!;
  const { source, target, ...plain } = values;
  expect(mig.inputs).toMatchObject(plain);
  expect(JSON.stringify(mig.inputs.source)).toContain(SECRET_SIG);
  expect(JSON.stringify(mig.inputs.target)).toContain(SECRET_SIG);
});

test("example: DVD Rental between self-managed servers", async () => {
  pulumi.runtime.setAllConfig({
    "proj:sourceAdmin": "postgresql://postgres:a@old/postgres", "proj:source": "postgresql://migrator:b@old/dvdrental",
    "proj:target": "postgresql://postgres:c@new/dvdrental", "proj:targetAddress": "10.0.2.17",
  }, ["proj:sourceAdmin", "proj:source", "proj:target"]);
  require("../examples/dvdrental-self-managed/index");
  await settle();
  expect(find(T("ServerParameters"), "dvdrental-source-parameters")).toBeDefined();
  expect(find(T("FirewallRule"), "dvdrental-target").inputs).toMatchObject({ address: "10.0.2.17/32", database: "dvdrental", replication: true, user: "migrator" });
  expect(find(T("Migration"), "dvdrental").inputs).toMatchObject({ name: "dvdrental", cutover: false, freezeWrites: true });
  expect(deps.get("dvdrental-target")).toEqual(["dvdrental-source-parameters"]);
  expect(deps.get("dvdrental-schema")!.sort()).toEqual(["dvdrental-source-parameters", "dvdrental-target"]);
  expect(deps.get("dvdrental")).toEqual(["dvdrental-schema"]);
});

test("example: Azure Flexible Server to Flexible Server", async () => {
  pulumi.runtime.setAllConfig({
    "proj:resourceGroupName": "rg-shop", "proj:sourceServerName": "pg-shop-13", "proj:targetOutboundIp": "20.50.1.2",
    "proj:source": "postgresql://m:x@pg-shop-13.postgres.database.azure.com/shop?sslmode=require",
    "proj:target": "postgresql://m:y@pg-shop-17.postgres.database.azure.com/shop?sslmode=require", "proj:cutover": "true",
  }, ["proj:source", "proj:target"]);
  require("../examples/azure-flexible-server/index");
  await settle();
  const rule = resources.find((r) => r.type === "azure-native:dbforpostgresql:FirewallRule" && r.name.startsWith("shop-source"))!;
  expect(rule.inputs).toMatchObject({ serverName: "pg-shop-13", startIpAddress: "20.50.1.2", endIpAddress: "20.50.1.2" });
  expect(rule.inputs.firewallRuleName).toMatch(/_replrule$/);
  const wal = resources.find((r) => r.type === "azure-native:dbforpostgresql:Configuration" && r.inputs.configurationName === "wal_level"
    && r.inputs.serverName === "pg-shop-13")!;
  expect(wal.inputs).toMatchObject({ value: "logical", source: "user-override", serverName: "pg-shop-13" });
  expect(resources.some((r) => r.type === T("AzureServerRestart"))).toBe(true);
  expect(find(T("Migration"), "shop").inputs).toMatchObject({ cutover: true, jobs: 8 });
  expect(deps.get("shop")!.every((d) => d.startsWith("shop-source-"))).toBe(true);
  expect(deps.get("shop")).toContain("shop-source-restart");
});

test("root program: several databases (pgferry:databases) make one Migration over the servers, without a SchemaSync of the URI's database", async () => {
  pulumi.runtime.setAllConfig({
    "pgferry:source": "postgresql://m:s@old/", "pgferry:target": "postgresql://m:t@new/", "pgferry:name": "multi",
    "pgferry:databases": '["shop","billing"]',
  }, ["pgferry:source", "pgferry:target"]);
  const before = resources.filter((r) => r.type === T("SchemaSync")).length;
  const { declareMigrationStack } = require("../program/stack") as typeof import("../program/stack");
  const { schema } = declareMigrationStack();
  await settle();
  const mig = resources.filter((r) => r.type === T("Migration") && r.inputs.name === "multi").pop()!;
  expect(mig.inputs).toMatchObject({ databases: ["shop", "billing"], allDatabases: false });
  expect(schema).toBeUndefined();
  expect(resources.filter((r) => r.type === T("SchemaSync")).length).toBe(before);
  // The resource's check refuses what the CLI refuses: a URI naming a database the input does not list.
  const { check } = require("../provider/resources/migrationHandlers") as typeof import("../provider/resources/migrationHandlers");
  const bad = await check({}, { source: "postgresql://m:s@old/shop", target: "postgresql://m:t@new/", databases: ["billing"] });
  expect(bad.failures).toEqual([{ property: "databases", reason: expect.stringMatching(/--source names database "shop"/) }]);
  expect((await check({}, { source: "postgresql://m:s@old/", target: "postgresql://m:t@new/", databases: ["billing"] })).failures).toEqual([]);
});
