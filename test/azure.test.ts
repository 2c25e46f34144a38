/**
 * Azure Flexible Server prerequisites: the resource graph under pulumi.runtime.setMocks (types, names,
 * inputs, the dependsOn chain, retainOnDelete, when a restart is declared and what its trigger
 * covers), and the ServerRestart handlers against a fake ARM server on 127.0.0.1 — in process and
 * through the real dynamic-provider plugin. Nothing here reaches Azure.
 */
import * as http from "http";
import * as path from "path";
import { AddressInfo } from "net";
import * as pulumi from "@pulumi/pulumi";
import { DynamicProviderHarness, unwrapSecrets } from "./support/dynamicProviderHarness";
import { ensureBuilt, ROOT } from "./support/build";

const SUB = "00000000-0000-0000-0000-000000000001";
const FAKE_TOKEN = "fake-arm-token-from-getClientToken";

const resources: pulumi.runtime.MockResourceArgs[] = [];
const calls: pulumi.runtime.MockCallArgs[] = [];
pulumi.runtime.setMocks({
  newResource(args) { resources.push(args); return { id: `${args.name}-id`, state: args.inputs }; },
  call(args) {
    calls.push(args);
    if (args.token === "azure-native:authorization:getClientToken") return { token: FAKE_TOKEN };
    if (args.token === "azure-native:authorization:getClientConfig") {
      return { subscriptionId: SUB, tenantId: "t", clientId: "c", objectId: "o" };
    }
    return args.inputs;
  },
}, "proj", "test", false);

/**
 * MockResourceArgs carries no options (dependsOn, retainOnDelete, parent): record them from the
 * RegisterResourceRequest the mock monitor receives.
 */
interface Registration { type: string; name: string; parent: string; dependencies: string[]; retainOnDelete: boolean; urn?: string }
const registrations: Registration[] = [];
const monitor = pulumi.runtime.getMonitor() as any;
const register = monitor.registerResource.bind(monitor);
monitor.registerResource = (req: any, cb: any) => {
  registrations.push({
    type: req.getType(), name: req.getName(), parent: req.getParent(), dependencies: req.getDependenciesList(),
    retainOnDelete: req.getRetainondelete(),
  });
  return register(req, cb);
};

// Import AFTER setMocks, as awsx and eks tests do.
// eslint-disable-next-line @typescript-eslint/no-var-requires
const azure = require("../provider/azure") as typeof import("../provider/azure");
// eslint-disable-next-line @typescript-eslint/no-var-requires
const handlers = require("../provider/azure/serverRestartHandlers") as typeof import("../provider/azure/serverRestartHandlers");
const { FlexibleServerPrerequisites, staticParameters, restartTrigger, needsRestart, serverParameters, ipRange, firewallRuleSpecs } = azure;

const FW = "azure-native:dbforpostgresql:FirewallRule";
const CFG = "azure-native:dbforpostgresql:Configuration";
const RESTART = "pulumi-nodejs:dynamic/pgferry:AzureServerRestart";
const COMPONENT = "pgferry:azure:FlexibleServerPrerequisites";

function unwrap<T>(o: pulumi.Output<T>): Promise<T> {
  return new Promise((resolve) => o.apply((v) => { resolve(v); return v; }));
}
function findResource(type: string, name: string): pulumi.runtime.MockResourceArgs | undefined {
  return resources.find((r) => r.type === type && r.name === name);
}
function findRegistration(type: string, name: string): Registration {
  const r = registrations.find((x) => x.type === type && x.name === name);
  if (!r) throw new Error(`no registration of ${type} ${name}`);
  return r;
}
/** Mock URNs end in ::<name>. */
const nameOf = (urn: string) => urn.split("::").pop()!;
const ofComponent = (c: string) => resources.filter((r) => r.name.startsWith(`${c}-`));

/** Construct and wait until every child is registered. */
async function build(name: string, args: import("../provider/azure").FlexibleServerPrerequisitesArgs) {
  const c = new FlexibleServerPrerequisites(name, args);
  const children: pulumi.Resource[] = [...c.firewallRules, ...c.configurations, ...(c.restart ? [c.restart] : [])];
  await Promise.all([unwrap(c.urn), ...children.map((r) => unwrap(r.urn))]);
  return c;
}

const base = { resourceGroupName: "rg-mig", serverName: "pg-source" };

describe("FlexibleServerPrerequisites (setMocks)", () => {
  test("declares the _replrule firewall rules, the logical-replication parameters and a restart", async () => {
    const c = await build("src", {
      ...base, subscriptionId: SUB, accessToken: "explicit-token",
      replicationClientIps: ["203.0.113.7", "198.51.100.0/24"],
      extraFirewallRules: [{ name: "office", startIpAddress: "192.0.2.1", endIpAddress: "192.0.2.9" }],
      extensions: ["pg_stat_statements", "pgcrypto"],
      extraParameters: { work_mem: "8192" },
    });
    expect(findRegistration(COMPONENT, "src").type).toBe(COMPONENT);

    expect(findResource(FW, "src-replrule-1")!.inputs).toEqual({
      resourceGroupName: "rg-mig", serverName: "pg-source", firewallRuleName: "src_1_replrule",
      startIpAddress: "203.0.113.7", endIpAddress: "203.0.113.7",
    });
    expect(findResource(FW, "src-replrule-2")!.inputs).toMatchObject({
      firewallRuleName: "src_2_replrule", startIpAddress: "198.51.100.0", endIpAddress: "198.51.100.255",
    });
    expect(findResource(FW, "src-fw-office")!.inputs).toMatchObject({ firewallRuleName: "office", startIpAddress: "192.0.2.1", endIpAddress: "192.0.2.9" });
    expect(await unwrap(c.firewallRuleNames)).toEqual(["src_1_replrule", "src_2_replrule", "office"]);
    for (const n of ["src_1_replrule", "src_2_replrule"]) expect(n).toMatch(/^[A-Za-z0-9_-]+_replrule$/);

    const expected: Record<string, string> = {
      wal_level: "logical", max_replication_slots: "10", max_wal_senders: "10",
      "azure.extensions": "pg_stat_statements,pgcrypto", work_mem: "8192",
    };
    expect(await unwrap(c.parameterNames)).toEqual(Object.keys(expected));
    for (const [k, v] of Object.entries(expected)) {
      expect(findResource(CFG, `src-${k}`)!.inputs).toEqual({
        resourceGroupName: "rg-mig", serverName: "pg-source", configurationName: k, value: v, source: "user-override",
      });
    }

    const r = findResource(RESTART, "src-restart")!;
    expect(r).toBeDefined();
    expect(c.restart).toBeDefined();
    const inputs = unwrapSecrets(r.inputs);
    expect(inputs).toMatchObject({ subscriptionId: SUB, resourceGroupName: "rg-mig", serverName: "pg-source", accessToken: "explicit-token" });
    expect(JSON.stringify(r.inputs.accessToken)).toContain("4dabf18193072939515e22adb298388d"); // a secret envelope
    const trigger = restartTrigger({ wal_level: "logical", max_replication_slots: "10", max_wal_senders: "10" });
    expect(trigger).toMatch(/^[0-9a-f]{64}$/);
    expect(inputs.trigger).toBe(trigger);
    expect(await unwrap(c.restartTrigger)).toBe(trigger);
    // What state stores for the restart: a few lines requiring the handlers by their published path.
    expect(inputs.__provider).toContain("pgferry/dist/provider/azure/serverRestartHandlers");
    expect(inputs.__provider).not.toContain("explicit-token");
    // Explicit subscription and token: no invokes.
    expect(calls.filter((x) => x.token.startsWith("azure-native:authorization:"))).toEqual([]);
  });

  test("every server write is chained with dependsOn; parameters are retained on delete", async () => {
    await build("chain", { ...base, subscriptionId: SUB, accessToken: "t", replicationClientIps: ["10.0.0.1", "10.0.0.2"],
      extensions: ["pgcrypto"], extraParameters: { shared_preload_libraries: "pg_stat_statements", work_mem: "4096" } });
    const order = [
      [FW, "chain-replrule-1"], [FW, "chain-replrule-2"],
      [CFG, "chain-wal_level"], [CFG, "chain-max_replication_slots"], [CFG, "chain-max_wal_senders"],
      [CFG, "chain-azure.extensions"], [CFG, "chain-shared_preload_libraries"], [CFG, "chain-work_mem"],
      [RESTART, "chain-restart"],
    ];
    const regs = order.map(([t, n]) => findRegistration(t, n));
    expect(regs[0].dependencies).toEqual([]);
    for (let i = 1; i < regs.length; i++) {
      expect({ name: regs[i].name, deps: regs[i].dependencies.map(nameOf) }).toEqual({ name: regs[i].name, deps: [regs[i - 1].name] });
    }
    for (const r of regs) {
      expect(nameOf(r.parent)).toBe("chain");
      expect(r.parent.split("::")[2]).toBe(COMPONENT);
      expect(r.retainOnDelete).toBe(r.type === CFG); // parameters kept; firewall rules and the restart are not
    }
  });

  test("without accessToken / subscriptionId the restart uses getClientToken and getClientConfig", async () => {
    calls.length = 0;
    await build("inv", { ...base, replicationClientIps: [] });
    const inputs = unwrapSecrets(findResource(RESTART, "inv-restart")!.inputs);
    expect(inputs.accessToken).toBe(FAKE_TOKEN);
    expect(inputs.subscriptionId).toBe(SUB);
    expect(calls.map((x) => x.token).sort()).toEqual(["azure-native:authorization:getClientConfig", "azure-native:authorization:getClientToken"]);
    expect(findResource(RESTART, "inv-restart")!.inputs.__provider).not.toContain(FAKE_TOKEN);
    expect(ofComponent("inv").filter((r) => r.type === FW)).toEqual([]);
  });

  test("the restart is declared only for static parameters and only when restart is not false", async () => {
    // restart: false → parameters, no restart, no invokes.
    calls.length = 0;
    const off = await build("norestart", { ...base, replicationClientIps: ["10.1.1.1"], restart: false });
    expect(off.restart).toBeUndefined();
    expect(findResource(RESTART, "norestart-restart")).toBeUndefined();
    expect(ofComponent("norestart").filter((r) => r.type === CFG).length).toBe(3);
    expect(await unwrap(off.restartTrigger)).toBeUndefined();
    expect(calls).toEqual([]);

    // A target that needs only dynamic parameters (the extension allow-list, work_mem): no restart.
    const dyn = await build("dynonly", { ...base, replicationClientIps: [], logicalReplication: false,
      extensions: ["pgcrypto"], extraParameters: { work_mem: "4096" } });
    expect(dyn.restart).toBeUndefined();
    expect(findResource(RESTART, "dynonly-restart")).toBeUndefined();
    expect(await unwrap(dyn.parameterNames)).toEqual(["azure.extensions", "work_mem"]);
    expect(needsRestart({ logicalReplication: false, extensions: ["pgcrypto"], extraParameters: { work_mem: "4096" } })).toBe(false);

    // The same target with a static extra parameter: a restart after the last parameter.
    const stat = await build("statextra", { ...base, subscriptionId: SUB, accessToken: "t", replicationClientIps: [],
      logicalReplication: false, extraParameters: { work_mem: "4096", shared_preload_libraries: "pg_cron" } });
    expect(stat.restart).toBeDefined();
    expect(findRegistration(RESTART, "statextra-restart").dependencies.map(nameOf)).toEqual(["statextra-shared_preload_libraries"]);
    expect(unwrapSecrets(findResource(RESTART, "statextra-restart")!.inputs).trigger)
      .toBe(restartTrigger({ shared_preload_libraries: "pg_cron" }));
  });

  test("the trigger changes with a static value, not with a dynamic one", () => {
    const a = { maxReplicationSlots: 10, maxWalSenders: 10, extensions: ["pgcrypto"], extraParameters: { work_mem: "4096" } };
    const t = restartTrigger(staticParameters(a));
    expect(staticParameters(a)).toEqual({ max_replication_slots: "10", max_wal_senders: "10", wal_level: "logical" });
    // Dynamic changes: same trigger.
    expect(restartTrigger(staticParameters({ ...a, extraParameters: { work_mem: "65536" } }))).toBe(t);
    expect(restartTrigger(staticParameters({ ...a, extensions: ["pgcrypto", "hstore"] }))).toBe(t);
    expect(restartTrigger(staticParameters({ ...a, extraParameters: { work_mem: "4096", statement_timeout: "0" } }))).toBe(t);
    // Static changes: a new trigger.
    expect(restartTrigger(staticParameters({ ...a, maxWalSenders: 12 }))).not.toBe(t);
    expect(restartTrigger(staticParameters({ ...a, maxReplicationSlots: 20 }))).not.toBe(t);
    expect(restartTrigger(staticParameters({ ...a, extraParameters: { work_mem: "4096", shared_preload_libraries: "pg_cron" } }))).not.toBe(t);
    // Stable: order and case of the names do not matter.
    expect(restartTrigger({ b: "2", a: "1" })).toBe(restartTrigger({ a: "1", b: "2" }));
    expect(restartTrigger({ WAL_LEVEL: "logical" })).toBe(restartTrigger({ wal_level: "logical" }));
    expect(restartTrigger({ a: "1" })).toBe(require("crypto").createHash("sha256").update("a=1").digest("hex"));
  });

  test("the component's trigger follows the same rule", async () => {
    const one = await build("trig1", { ...base, subscriptionId: SUB, accessToken: "t", replicationClientIps: [], extraParameters: { work_mem: "1" } });
    const two = await build("trig2", { ...base, subscriptionId: SUB, accessToken: "t", replicationClientIps: [], extraParameters: { work_mem: "2" } });
    const three = await build("trig3", { ...base, subscriptionId: SUB, accessToken: "t", replicationClientIps: [], maxWalSenders: 20 });
    expect(await unwrap(one.restartTrigger)).toBe(await unwrap(two.restartTrigger));
    expect(await unwrap(three.restartTrigger)).not.toBe(await unwrap(one.restartTrigger));
  });

  test("pure helpers: addresses, rule names, conflicting parameters", () => {
    expect(ipRange("10.1.2.3")).toEqual({ start: "10.1.2.3", end: "10.1.2.3" });
    expect(ipRange("10.1.2.3/16")).toEqual({ start: "10.1.0.0", end: "10.1.255.255" });
    expect(ipRange("0.0.0.0/0")).toEqual({ start: "0.0.0.0", end: "255.255.255.255" });
    expect(() => ipRange("2001:db8::1")).toThrow(/IPv4/);
    expect(() => ipRange("10.1.2.300")).toThrow(/IPv4/);
    expect(firewallRuleSpecs("my.migration", { replicationClientIps: ["1.2.3.4"] })[0].firewallRuleName).toBe("my_migration_1_replrule");
    expect(firewallRuleSpecs("m", { replicationClientIps: ["1.2.3.4"], firewallRulePrefix: "sr" })[0].firewallRuleName).toBe("sr_1_replrule");
    expect(() => firewallRuleSpecs("m", { replicationClientIps: [], extraFirewallRules: [{ name: "no spaces", startIpAddress: "1.1.1.1", endIpAddress: "1.1.1.1" }] }))
      .toThrow(/not valid on Azure/);
    expect(() => firewallRuleSpecs("m", { replicationClientIps: ["1.1.1.1"], extraFirewallRules: [{ name: "m_1_replrule", startIpAddress: "1.1.1.1", endIpAddress: "1.1.1.1" }] }))
      .toThrow(/used twice/);
    expect(() => serverParameters({ extraParameters: { wal_level: "replica" } })).toThrow(/set twice/);
    expect(() => serverParameters({ maxWalSenders: 0 })).toThrow(/≥ 1/);
    expect(() => serverParameters({ logicalReplication: false, maxWalSenders: 5 })).toThrow(/logicalReplication/);
    expect(serverParameters({ extensions: ["pgcrypto", "pgcrypto", " hstore "] }).find((p) => p.name === "azure.extensions")!.value).toBe("pgcrypto,hstore");
    expect(() => new FlexibleServerPrerequisites("bad", { ...base, replicationClientIps: [], extraParameters: { max_wal_senders: "3" } })).toThrow(/set twice/);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// ServerRestart handlers against a fake ARM

interface ArmCall { method: string; path: string; auth?: string }
interface FakeArm { base: string; calls: ArmCall[]; close(): Promise<void> }
const SERVER_PATH = `/subscriptions/${SUB}/resourceGroups/rg-mig/providers/Microsoft.DBforPostgreSQL/flexibleServers/pg-source`;

/** GET server → states in turn (then Ready); POST restart → 202 + Azure-AsyncOperation; polls → ops in turn. */
async function fakeArm(opts: { states: string[]; ops: string[]; asyncHeader?: boolean; locationCodes?: number[] }): Promise<FakeArm> {
  const calls: ArmCall[] = [];
  const states = [...opts.states], ops = [...opts.ops], locationCodes = [...(opts.locationCodes ?? [])];
  let base = "";
  const server = http.createServer((req, res) => {
    const url = new URL(req.url!, base);
    calls.push({ method: req.method!, path: `${url.pathname}${url.search}`, auth: req.headers.authorization });
    const json = (code: number, body: unknown, headers: Record<string, string> = {}) => {
      res.writeHead(code, { "Content-Type": "application/json", ...headers });
      res.end(body === undefined ? "" : JSON.stringify(body));
    };
    if (req.method === "GET" && url.pathname === SERVER_PATH) {
      return json(200, { name: "pg-source", properties: { state: states.shift() ?? "Ready" } });
    }
    if (req.method === "POST" && url.pathname === `${SERVER_PATH}/restart`) {
      const op = `${base}/subscriptions/${SUB}/providers/Microsoft.DBforPostgreSQL/locations/westeurope/azureAsyncOperation/op-1?api-version=2025-08-01`;
      const loc = `${base}/subscriptions/${SUB}/providers/Microsoft.DBforPostgreSQL/locations/westeurope/operationResults/op-1?api-version=2025-08-01`;
      return json(202, undefined, { ...(opts.asyncHeader === false ? {} : { "Azure-AsyncOperation": op }), Location: loc, "Retry-After": "0" });
    }
    if (req.method === "GET" && url.pathname.endsWith("/azureAsyncOperation/op-1")) {
      const status = ops.shift() ?? "Succeeded";
      return json(200, { name: "op-1", status, ...(status === "Failed" ? { error: { code: "InternalServerError", message: "restart could not complete" } } : {}) });
    }
    if (req.method === "GET" && url.pathname.endsWith("/operationResults/op-1")) {
      return json(locationCodes.shift() ?? 200, undefined);
    }
    json(404, { error: { code: "NotFound", message: `no route ${req.method} ${url.pathname}` } });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { base, calls, close: () => new Promise<void>((r) => server.close(() => r())) };
}

const restartInputs = (arm: FakeArm, extra: Record<string, unknown> = {}) => ({
  subscriptionId: SUB, resourceGroupName: "rg-mig", serverName: "pg-source", accessToken: "tok-123",
  trigger: "abc", armEndpoint: arm.base, pollIntervalSec: 0.01, ...extra,
});

describe("ServerRestart handlers (fake ARM on 127.0.0.1)", () => {
  test("waits while Updating, restarts, polls the async operation until Succeeded", async () => {
    const arm = await fakeArm({ states: ["Updating", "Updating", "Ready"], ops: ["InProgress", "Succeeded"] });
    try {
      const inputs = restartInputs(arm);
      expect((await handlers.check({}, inputs)).failures).toEqual([]);
      const { id, outs } = await handlers.create(inputs);
      expect(id).toBe(`${SERVER_PATH}/restart`);
      const q = "?api-version=2025-08-01";
      expect(arm.calls.map((c) => `${c.method} ${c.path}`)).toEqual([
        `GET ${SERVER_PATH}${q}`, `GET ${SERVER_PATH}${q}`, `GET ${SERVER_PATH}${q}`,
        `POST ${SERVER_PATH}/restart${q}`,
        `GET /subscriptions/${SUB}/providers/Microsoft.DBforPostgreSQL/locations/westeurope/azureAsyncOperation/op-1${q}`,
        `GET /subscriptions/${SUB}/providers/Microsoft.DBforPostgreSQL/locations/westeurope/azureAsyncOperation/op-1${q}`,
      ]);
      for (const c of arm.calls) expect(c.auth).toBe("Bearer tok-123");
      expect(outs).toMatchObject({ trigger: "abc", serverName: "pg-source", operationStatus: "Succeeded", serverStateBefore: "Updating" });
      expect(Date.parse(outs.restartedAt)).not.toBeNaN();
      expect(JSON.stringify(outs)).not.toContain("tok-123");

      // Next run: a new token only → no change; same trigger in update → no ARM call; new trigger → restart.
      expect(await handlers.diff(id, outs as any, { ...inputs, accessToken: "tok-456" })).toEqual({ changes: false, replaces: [], deleteBeforeReplace: false });
      expect((await handlers.diff(id, outs as any, { ...inputs, trigger: "def" })).changes).toBe(true);
      expect((await handlers.diff(id, outs as any, { ...inputs, serverName: "pg-other" })).replaces).toEqual(["serverName"]);
      arm.calls.length = 0;
      const same = await handlers.update(id, outs as any, { ...inputs, restartTimeoutSec: 60 });
      expect(arm.calls).toEqual([]);
      expect(same.outs.restartedAt).toBe(outs.restartedAt);
      const again = await handlers.update(id, outs as any, { ...inputs, trigger: "def", accessToken: "tok-456" });
      expect(again.outs.trigger).toBe("def");
      expect(arm.calls.filter((c) => c.method === "POST").length).toBe(1);
      expect(arm.calls.every((c) => c.auth === "Bearer tok-456")).toBe(true);
      // Delete does nothing; read echoes state.
      arm.calls.length = 0;
      await handlers.remove(id, again.outs as any);
      expect(await handlers.read(id, again.outs as any)).toEqual({ id, props: again.outs });
      expect(arm.calls).toEqual([]);
    } finally { await arm.close(); }
  });

  test("a Failed operation is an error naming the server", async () => {
    const arm = await fakeArm({ states: ["Ready"], ops: ["InProgress", "Failed"] });
    try {
      await expect(handlers.create(restartInputs(arm))).rejects.toThrow(/pg-source.*restart failed: InternalServerError: restart could not complete/);
    } finally { await arm.close(); }
  });

  test("a server that stays Updating times out, naming the server, without a restart", async () => {
    const arm = await fakeArm({ states: Array(1000).fill("Updating"), ops: [] });
    try {
      await expect(handlers.create(restartInputs(arm, { readyTimeoutSec: 0.2 }))).rejects.toThrow(/pg-source: the server was still Updating/);
      expect(arm.calls.some((c) => c.method === "POST")).toBe(false);
    } finally { await arm.close(); }
  });

  test("a stopped server is refused at once; Location-only operations are followed", async () => {
    const stopped = await fakeArm({ states: ["Stopped"], ops: [] });
    try {
      await expect(handlers.create(restartInputs(stopped))).rejects.toThrow(/pg-source: the server is Stopped/);
    } finally { await stopped.close(); }
    const loc = await fakeArm({ states: ["Ready"], ops: [], asyncHeader: false, locationCodes: [202, 202, 204] });
    try {
      const { outs } = await handlers.create(restartInputs(loc));
      expect(outs.operationStatus).toBe("Succeeded");
      expect(loc.calls.filter((c) => c.path.includes("/operationResults/")).length).toBe(3);
    } finally { await loc.close(); }
  });

  test("check refuses plain http to a non-loopback endpoint and missing fields", async () => {
    const { failures } = await handlers.check({}, { serverName: "Bad_Name", armEndpoint: "http://example.com", trigger: "x" });
    expect(failures.map((f) => f.property).sort()).toEqual(["accessToken", "armEndpoint", "resourceGroupName", "serverName", "subscriptionId"]);
  });
});

describe("ServerRestart through the real dynamic-provider plugin", () => {
    let h: DynamicProviderHarness | undefined;
  afterAll(async () => { await h?.stop(); });

  test("the serialized provider requires the published handlers and restarts via the fake ARM", async () => {
    ensureBuilt();
    const arm = await fakeArm({ states: ["Updating", "Ready"], ops: ["InProgress", "Succeeded"] });
    try {
      const r = new azure.ServerRestart("plug", { subscriptionId: SUB, resourceGroupName: "rg-mig", serverName: "pg-source",
        accessToken: "tok-plugin", trigger: "t1", armEndpoint: arm.base, pollIntervalSec: 0.01 });
      await unwrap(r.urn);
      const reg = findResource(RESTART, "plug")!;
      const inputs = unwrapSecrets(reg.inputs) as Record<string, any>;
      h = await DynamicProviderHarness.start(inputs.__provider, { cwd: ROOT, type: RESTART });
      await h.configure();
      expect((await h.check("plug", {}, inputs)).failures).toEqual([]);
      const { id, outs } = await h.create("plug", inputs);
      expect(id).toBe(`${SERVER_PATH}/restart`);
      expect(outs).toMatchObject({ operationStatus: "Succeeded", trigger: "t1" });
      expect(outs.accessToken).toBeUndefined();
      expect(arm.calls.filter((c) => c.method === "POST").length).toBe(1);
      expect(arm.calls.every((c) => c.auth === "Bearer tok-plugin")).toBe(true);
      await h.delete("plug", id, outs);
    } finally { await arm.close(); }
  });
});
