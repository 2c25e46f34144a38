/**
 * The Migration resource through the real dynamic-provider plugin (gRPC), the way `pulumi up` drives it,
 * against real servers (15 → 17): check → create (streams) → read → diff (no-op, then cutover) → update
 * (cutover, opening a rollback window) → refused un-cutover → update (rollbackWindow false: finish) → delete; an interrupted create adopted by the next one; secrets.
 * The provider text comes from a setMocks registration, exactly what a program would store in state.
 */
import * as pulumi from "@pulumi/pulumi";
import { LocalServer } from "../provider/embedded/localServer";
import { parseEndpoint, verifyMigration } from "../provider/engine";
import { DynamicProviderHarness, unwrapSecrets } from "./support/dynamicProviderHarness";
import { EDGE_SCHEMA, edgeChanges } from "./support/fixtures";
import { leftovers, startServers } from "./support/servers";
import { ensureBuilt, ROOT } from "./support/build";
import { until } from "./support/until";

const registered: pulumi.runtime.MockResourceArgs[] = [];
pulumi.runtime.setMocks({
  newResource(args) { registered.push(args); return { id: `${args.name}-id`, state: args.inputs }; },
  call(args) { return args.inputs; },
}, "proj", "test", false);
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { Migration } = require("../provider/resources/migration") as typeof import("../provider/resources/migration");

let src: LocalServer, tgt: LocalServer, h: DynamicProviderHarness;

beforeAll(async () => {
  ensureBuilt();
  [src, tgt] = await startServers(15, 17);
  await src.createDatabase("app");
  await tgt.createDatabase("app");
  await src.query(EDGE_SCHEMA, "app");
});
afterAll(async () => { await h?.stop(); await src?.stop(); await tgt?.stop(); });

async function registration(name: string, args: ConstructorParameters<typeof Migration>[1]) {
  const m = new Migration(name, args);
  await new Promise((r) => m.urn.apply(r));
  const reg = registered.find((a) => a.name === name)!;
  return { reg, inputs: unwrapSecrets(reg.inputs) as Record<string, any> };
}

test("pulumi up / refresh / config cutover / destroy through the real plugin", async () => {
  const { reg, inputs } = await registration("mig", { source: pulumi.secret(src.uri("app")), target: pulumi.secret(tgt.uri("app")), name: "pl", jobs: 2 });
  expect(reg.type).toBe("pulumi-nodejs:dynamic/pgferry:Migration");
  expect(JSON.stringify(reg.inputs.source)).toContain("4dabf18193072939515e22adb298388d"); // a secret envelope
  // What state stores: a few lines that require the handlers by their published path, no password.
  expect(inputs.__provider).toContain("pgferry/dist/provider/resources/migrationHandlers");
  expect(inputs.__provider).not.toContain(src.password);

  h = await DynamicProviderHarness.start(inputs.__provider, { cwd: ROOT, type: "pulumi-nodejs:dynamic/pgferry:Migration" });
  await h.configure();
  const bad = await h.check("mig", {}, { ...inputs, name: "Not Valid", source: "mysql://nope" });
  expect(bad.failures.map((f) => f.property).sort()).toEqual(["name", "source"]);
  expect((await h.check("mig", {}, inputs)).failures).toEqual([]);

  await src.query(`SELECT lo_create(77)`, "app");   // carried by default (issue 13): nothing is listed as not carried
  const { id, outs } = await h.create("mig", inputs);
  expect(id).toBe("pgferry-migration-pl");
  expect(outs.notCarried).toEqual([]);
  expect(await tgt.query(`SELECT oid::int FROM pg_largeobject_metadata`, "app")).toEqual([{ oid: 77 }]);
  expect(outs).toMatchObject({ phase: "ReadyToCutover", migrationName: "pl", cutover: false });
  expect(outs.status).toMatch(/^ReadyToCutover: streaming/);
  expect(outs.tables.length).toBe(6);
  expect(outs.rowsCopied).toBeGreaterThan(9000);
  const { source: _s, target: _t, __provider: _p, ...plain } = outs;
  expect(JSON.stringify(plain)).not.toContain(src.password);
  expect(JSON.stringify(plain)).not.toContain(tgt.password);

  for (let i = 0; i < 20; i++) await src.query(edgeChanges(i), "app");
  const refreshed = await h.read("mig", id, outs);
  expect(refreshed.id).toBe(id);
  expect(refreshed.props.phase).toBe("ReadyToCutover");
  expect(typeof refreshed.props.lagBytes).toBe("number");
  // The monitor's summary: caught up or not, the confirmed position, estimates per table; no applied counts from a native subscription.
  expect(typeof refreshed.props.caughtUp).toBe("boolean");
  expect(refreshed.props.confirmedLsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
  expect(refreshed.props.appliedChanges).toBeNull();
  expect(refreshed.props.tables.every((t: { estimatedRows: unknown }) => typeof t.estimatedRows === "number")).toBe(true);
  // Refresh keeps the program's inputs (read returns none): returned inputs with defaults filled in made the next update show them as removed.
  expect(refreshed.inputs).toBeUndefined();

  // A second `pulumi up` with nothing changed: no diff. Changing the source would replace.
  expect(await h.diff("mig", id, refreshed.props, inputs)).toEqual({ changes: false, replaces: [], deleteBeforeReplace: true });
  expect((await h.diff("mig", id, refreshed.props, { ...inputs, source: src.uri("postgres") })).replaces).toEqual(["source"]);

  // pulumi config set pgferry:cutover true (and pgferry:reverseReplication true) && pulumi up
  const cutInputs = { ...inputs, cutover: true, freezeWrites: true, reverseReplication: true };
  expect(await h.diff("mig", id, refreshed.props, cutInputs)).toEqual({ changes: true, replaces: [], deleteBeforeReplace: true });
  const updated = await h.update("mig", id, refreshed.props, cutInputs);
  expect(updated.outs).toMatchObject({ phase: "Completed", cutover: true });
  expect(updated.outs.downtimeMs).toBeGreaterThan(0);
  expect(updated.outs.status).toMatch(/^Completed: downtime/);
  // The rollback window is open: a reverse slot on the target, the state of the reverse direction on the source.
  expect(updated.outs.rollbackWindowStatus).toMatch(/^rollback window open: the old server is \d+ bytes behind/);
  expect(await tgt.query(`SELECT slot_name FROM pg_replication_slots`, "app")).toEqual([{ slot_name: "pgferry_pl_rev" }]);

  // cutover true → false is refused with a clear message.
  await expect(h.diff("mig", id, updated.outs, { ...cutInputs, cutover: false })).rejects.toThrow(/cannot be set back to false/);

  // pulumi config set pgferry:rollbackWindow false && pulumi up: finish, in place.
  const closeInputs = { ...cutInputs, rollbackWindow: false };
  expect(await h.diff("mig", id, updated.outs, closeInputs)).toEqual({ changes: true, replaces: [], deleteBeforeReplace: true });
  const closed = await h.update("mig", id, updated.outs, closeInputs);
  expect(closed.outs).toMatchObject({ phase: "Completed", rollbackWindow: false, rollbackWindowStatus: "rollback window closed" });
  expect(await tgt.query(`SELECT slot_name FROM pg_replication_slots`, "app")).toEqual([]);
  expect(await src.query(`SELECT nspname FROM pg_namespace WHERE nspname = 'pgferry'`, "app")).toEqual([]);

  const v = await verifyMigration(parseEndpoint(src.uri("app"), "source"), parseEndpoint(tgt.uri("app"), "target"));
  expect(v.problems).toEqual([]);

  await h.delete("mig", id, closed.outs);
  expect(await leftovers(src, tgt)).toEqual([]);
  expect((await h.read("mig", id, updated.outs)).id).toBe("");
  // Target data stays after destroy.
  expect(Number((await tgt.query(`SELECT count(*) AS n FROM parent`, "app"))[0].n)).toBeGreaterThan(1000);
});

test("an interrupted create (plugin killed mid-load) is adopted by the next create", async () => {
  await src.createDatabase("big");
  await tgt.createDatabase("big");
  await src.query(`CREATE TABLE big (id bigint PRIMARY KEY, b text); INSERT INTO big SELECT g, md5(g::text) || md5((-g)::text) FROM generate_series(1, 1200000) g; ANALYZE`, "big");
  const { inputs } = await registration("big", { source: pulumi.secret(src.uri("big")), target: pulumi.secret(tgt.uri("big")), name: "adopt", jobs: 1 });
  const first = await DynamicProviderHarness.start(inputs.__provider, { cwd: ROOT });
  await first.configure();
  const pending = first.create("big", inputs).catch((e) => e);
  await until("the load to start", async () =>
    (await tgt.query(`SELECT phase FROM pgferry.migration WHERE name = 'adopt'`, "big").catch(() => []))[0]?.phase === "Loading", 120000, 50);
  await first.kill(); // the second Ctrl-C: the plugin dies, the create stays a pending operation
  expect(String(await pending)).toMatch(/UNAVAILABLE|Connection dropped|CANCELLED|closed/i);
  await first.stop();

  const second = await DynamicProviderHarness.start(inputs.__provider, { cwd: ROOT });
  try {
    await second.configure();
    const { id, outs } = await second.create("big", inputs);
    expect(id).toBe("pgferry-migration-adopt");
    expect(outs.phase).toBe("ReadyToCutover");
    expect(outs.rowsCopied).toBe(1200000);
    await second.delete("big", id, outs);
    expect(await leftovers(src, tgt, "big")).toEqual([]);
  } finally {
    await second.stop();
  }
});
