/**
 * The real Pulumi CLI and engine (v3.248.0) driving pgferry through the Automation API: the repository's
 * root stack (Pulumi.yaml → dist/program) from `up` to `destroy`, secrets in state, no-op updates, a slot
 * dropped by hand, interrupted updates (SIGINT; SIGKILL of the CLI with its plugins), and the examples.
 * Local file backend, passphrase secrets, isolated PULUMI_HOME, offline. The CLI is a `pulumi` on PATH, else
 * the one `bash scripts/build-pulumi.sh` builds into .cache/pulumi/bin; without either these tests skip.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Stack } from "@pulumi/pulumi/automation";
import { demoSchemaSql, populateDemo } from "../provider/demo/dvdrental";
import { LocalServer } from "../provider/embedded/localServer";
import { parseEndpoint, verifyMigration } from "../provider/engine";
import { ensureBuilt, ROOT } from "./support/build";
import { until } from "./support/until";
import { EDGE_SCHEMA, edgeChanges } from "./support/fixtures";
import { descendants, findPulumiCli, PulumiEnv, runningCli } from "./support/pulumiCli";
import { leftovers, startServers } from "./support/servers";

const cli = findPulumiCli();
if (cli.missing) console.warn(`skipping test/pulumi.cli.test.ts: ${cli.missing}`);
const maybe = cli.bin ? describe : describe.skip;

const SECRET_SIG = "4dabf18193072939515e22adb298388d";
const MIGRATION = "pulumi-nodejs:dynamic/pgferry:Migration";

let env: PulumiEnv, src: LocalServer, tgt: LocalServer;
const rootStacks: string[] = [];

/** A fresh stack of the root project (Pulumi.yaml) with its connections as secret config. */
async function rootStack(name: string, db: string, extra: Record<string, string> = {}, targetDb = db): Promise<Stack> {
  const stack = await env.stack(ROOT, name);
  rootStacks.push(name);
  await stack.setAllConfig({
    "pgferry:source": { value: src.uri(db), secret: true },
    "pgferry:target": { value: tgt.uri(targetDb), secret: true },
    ...Object.fromEntries(Object.entries(extra).map(([k, value]) => [`pgferry:${k}`, { value }])),
  });
  return stack;
}

/** The Migration resource as the checkpoint holds it (the Automation API's export decrypts secrets). */
async function migrationState(stack: Stack): Promise<{ inputs: any; outputs: any; pending: any[] }> {
  const d = (await stack.exportStack()).deployment;
  const r = (d.resources ?? []).find((x: any) => x.type === MIGRATION);
  return { inputs: r?.inputs, outputs: r?.outputs, pending: d.pending_operations ?? [] };
}

/** The stack's outputs (program exports), values only. */
async function outputsOf(stack: Stack): Promise<Record<string, any>> {
  return Object.fromEntries(Object.entries(await stack.outputs()).map(([k, v]) => [k, v.value]));
}

/** No password (nor a URI of the source) in `text`; a failure shows where it was found. */
function expectNoSecrets(text: string, what: string): void {
  for (const needle of [src.password, tgt.password, `127.0.0.1:${src.port}`, `127.0.0.1:${tgt.port}`]) {
    const at = text.indexOf(needle);
    if (at >= 0) throw new Error(`${what} holds "${needle}" in plain text: …${text.slice(Math.max(0, at - 400), at + 100)}…`);
  }
}

/** The CLI's own output of a step, printed with PGFERRY_SHOW_PULUMI_OUTPUT=1 (how the samples in docs/pulumi.md were taken). */
function show(step: string, text: string): void {
  if (process.env.PGFERRY_SHOW_PULUMI_OUTPUT) console.log(`${step}\n${text}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Wait until the load is under way: a COPY into the target database `db` is running. */
async function waitForCopy(db: string): Promise<void> {
  await until(`a COPY into ${db}`, async () =>
    (await tgt.query(`SELECT 1 FROM pg_stat_progress_copy WHERE datname = '${db}' AND command = 'COPY FROM'`, "postgres")).length > 0, 120000, 20);
}

/**
 * An example project copied to a temp dir as a user would have it installed: node_modules holds
 * @pulumi/pulumi, typescript and pgferry (this checkout, built), linked from this repository.
 */
function exampleProject(name: string, packages: string[] = []): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `pgferry-example-${name}-`));
  for (const f of fs.readdirSync(path.join(ROOT, "examples", name))) fs.copyFileSync(path.join(ROOT, "examples", name, f), path.join(dir, f));
  fs.mkdirSync(path.join(dir, "node_modules/@pulumi"), { recursive: true });
  for (const p of ["@pulumi/pulumi", "typescript", ...packages]) fs.symlinkSync(path.join(ROOT, "node_modules", p), path.join(dir, "node_modules", p));
  fs.symlinkSync(ROOT, path.join(dir, "node_modules/pgferry"));
  return dir;
}

const changed = (summary: Record<string, number> | undefined) =>
  Object.entries(summary ?? {}).filter(([k, n]) => k !== "same" && n > 0);

maybe("pgferry through the real Pulumi CLI", () => {
  beforeAll(async () => {
    ensureBuilt();
    env = await PulumiEnv.create(cli.bin!);
    [src, tgt] = await startServers(15, 17);
    for (const db of ["app", "slot"]) {
      await src.createDatabase(db);
      await tgt.createDatabase(db);
      await src.query(EDGE_SCHEMA, db);
    }
  });
  afterAll(async () => {
    // Stack settings (Pulumi.<stack>.yaml) land beside Pulumi.yaml; they are this test's, not the repository's.
    for (const s of rootStacks) fs.rmSync(path.join(ROOT, `Pulumi.${s}.yaml`), { force: true });
    env?.dispose();
    await src?.stop();
    await tgt?.stop();
  });

  test("root stack: up streams, refresh shows lag, no-op up, preview of the cutover, up cuts over, destroy leaves nothing", async () => {
    const stack = await rootStack("life", "app", { name: "life", jobs: "2" });

    const up = await stack.up();
    show("root stack: pulumi up", up.stdout);
    expect(up.summary.result).toBe("succeeded");
    let out = await outputsOf(stack);
    expect(out.phase).toBe("ReadyToCutover");
    expect(out.status).toMatch(/^ReadyToCutover: streaming/);
    expect(out.rowsCopied).toBeGreaterThan(9000);
    expect(out.tables).toHaveLength(6);

    // Secrets: neither the checkpoint on disk nor `pulumi stack export` holds a password; the connection
    // strings are secret in the resource's inputs and outputs.
    expectNoSecrets(fs.readFileSync(env.stateFile("pgferry", "life"), "utf8"), "the checkpoint file");
    // (The Automation API's exportStack adds --show-secrets: the plain CLI command is what users run.)
    const exported = env.run(["stack", "export", "--stack", "life"], ROOT);
    expect(exported.code).toBe(0);
    expectNoSecrets(exported.out, "pulumi stack export");
    const state = await migrationState(stack);
    for (const k of ["source", "target"]) {
      expect(state.inputs[k][SECRET_SIG]).toBeDefined();
      expect(state.outputs[k][SECRET_SIG]).toBeDefined();
    }
    expect(state.outputs.__provider).toContain("pgferry/dist/provider/resources/migrationHandlers");

    // `pulumi up` again with nothing changed: no changes at all (the engine refuses any with expectNoChanges).
    const again = await stack.up({ expectNoChanges: true });
    expect(changed(again.summary.resourceChanges)).toEqual([]);

    const before = (await migrationState(stack)).outputs;
    // Writes on the source, then `pulumi refresh`: the live figures land in the resource's outputs.
    for (let i = 0; i < 20; i++) await src.query(edgeChanges(i), "app");
    const refresh = await stack.refresh();
    show("root stack: pulumi refresh", refresh.stdout);
    expect(refresh.summary.result).toBe("succeeded");
    const live = (await migrationState(stack)).outputs;
    expect(live.phase).toBe("ReadyToCutover");
    expect(typeof live.lagBytes).toBe("number");
    expect(live.confirmedLsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    expect(live.confirmedLsn).not.toBe(before.confirmedLsn); // the target confirmed the writes since up
    expect(typeof live.caughtUp).toBe("boolean");
    expect(live.status).toMatch(/^ReadyToCutover: streaming, lag \d+ bytes/);

    // Lag that stays: the subscription paused (as when the target is down), more writes. A plain refresh updates
    // the resource's outputs; `refresh --run-program` also the stack's outputs (`pulumi stack output`).
    await tgt.query(`ALTER SUBSCRIPTION pgferry_life DISABLE`, "app");
    await until("the subscription's walsender to stop", async () =>
      !(await src.query(`SELECT 1 FROM pg_replication_slots WHERE slot_name = 'pgferry_life' AND active`, "app")).length);
    for (let i = 20; i < 40; i++) await src.query(edgeChanges(i), "app");
    await stack.refresh();
    const lagging = (await migrationState(stack)).outputs;
    expect(lagging.lagBytes).toBeGreaterThan(0);
    expect(lagging.caughtUp).toBe(false);
    expect(lagging.pendingChanges).toBeGreaterThan(0);
    expect(lagging.status).toBe(`ReadyToCutover: streaming, lag ${lagging.lagBytes} bytes`);
    expect((await outputsOf(stack)).lagBytes).toBe(0); // the stack's outputs are the program's, from the last up
    const rerun = await stack.refresh({ runProgram: true });
    show("root stack: pulumi refresh --run-program (subscription paused)", rerun.stdout);
    out = await outputsOf(stack);
    expect(out.lagBytes).toBeGreaterThan(0);
    expect(out.pendingChanges).toBeGreaterThan(0);
    expect(out.status).toMatch(/^ReadyToCutover: streaming, lag [1-9]\d* bytes$/);
    await tgt.query(`ALTER SUBSCRIPTION pgferry_life ENABLE`, "app");

    // pulumi config set pgferry:cutover true && pulumi preview --diff: one in-place update, shown readably.
    await stack.setConfig("pgferry:cutover", { value: "true" });
    const preview = await stack.preview({ diff: true });
    show("root stack: pulumi config set pgferry:cutover true && pulumi preview --diff", preview.stdout);
    expect(changed(preview.changeSummary)).toEqual([["update", 1]]);
    expect(preview.stdout).toMatch(/~ pulumi-nodejs:dynamic\/pgferry:Migration: \(update\)/);
    expect(preview.stdout).toMatch(/~ cutover\s*: false => true/);
    expect(preview.stdout).not.toContain("__provider");
    // Only what the program changed: no input shown as removed or added (refresh keeps the program's inputs).
    expect(preview.stdout).not.toMatch(/^\s+[-+] \w+\s*:(?! \[unknown\])/m);
    expectNoSecrets(preview.stdout, "pulumi preview --diff");

    const cut = await stack.up();
    show("root stack: pulumi up (cutover)", cut.stdout);
    expect(cut.summary.resourceChanges?.update).toBe(1);
    expect(cut.stdout).toContain("Migration migration updated");
    expect(cut.stdout).toMatch(/\[diff: ~cutover\]/);
    out = await outputsOf(stack);
    expect(out.phase).toBe("Completed");
    expect(out.downtimeMs).toBeGreaterThan(0);
    expect(out.status).toMatch(/^Completed: downtime \d+\.\d\d s$/);
    const v = await verifyMigration(parseEndpoint(src.uri("app"), "source"), parseEndpoint(tgt.uri("app"), "target"));
    expect(v.problems).toEqual([]);

    const destroy = await stack.destroy();
    show("root stack: pulumi destroy", destroy.stdout);
    expect(destroy.summary.result).toBe("succeeded");
    expect(await leftovers(src, tgt)).toEqual([]);
    for (const server of [src, tgt]) {
      expect(await server.query(`SELECT nspname FROM pg_namespace WHERE nspname = 'pgferry'`, "app")).toEqual([]);
    }
    // destroy never touches target data.
    const count = async (server: LocalServer) => Number((await server.query(`SELECT count(*) AS n FROM parent`, "app"))[0].n);
    expect(await count(tgt)).toBeGreaterThan(1000);
    expect(await count(tgt)).toBe(await count(src));
    await stack.workspace.removeStack("life");
  });

  test("a slot dropped by hand: refresh names it, the next up refuses with the fix, and the fix works", async () => {
    const stack = await rootStack("slot", "slot", { name: "slotlost", jobs: "2" });
    await stack.up();
    expect((await outputsOf(stack)).phase).toBe("ReadyToCutover");

    // The DBA ends the subscription's walsender and drops the slot (the subscription reconnects: retry).
    for (let i = 0; ; i++) {
      try {
        await src.query(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = 'pgferry_slotlost' AND active_pid IS NOT NULL`, "slot");
        await src.query(`SELECT pg_drop_replication_slot('pgferry_slotlost')`, "slot");
        break;
      } catch (e) {
        if (i > 100) throw e;
        await sleep(100);
      }
    }
    show("lost slot: pulumi refresh", (await stack.refresh()).stdout);
    const outs = (await migrationState(stack)).outputs;
    expect(outs.status).toMatch(/^ReadyToCutover: BROKEN, the replication slot "pgferry_slotlost" is gone from the source/);
    expect(outs.error).toMatch(/changes made since it was dropped are lost.*Fix: pulumi destroy/);

    // The next up does not say "no changes": it refuses, with the fix.
    const refused = await stack.up().then(() => undefined, (e: Error) => e);
    show("lost slot: pulumi up", String(refused));
    expect(String(refused)).toMatch(/replication slot "pgferry_slotlost" is gone from the source[\s\S]*Fix: pulumi destroy/);

    // The fix as stated: destroy, an empty target database, up.
    await stack.destroy();
    expect(await leftovers(src, tgt, "slot")).toEqual([]);
    await tgt.query(`DROP DATABASE slot WITH (FORCE)`, "postgres");
    await tgt.createDatabase("slot");
    await stack.up();
    expect((await outputsOf(stack)).phase).toBe("ReadyToCutover");
    await stack.destroy();
    expect(await leftovers(src, tgt, "slot")).toEqual([]);
    await stack.workspace.removeStack("slot");
  });

  describe("interrupted updates", () => {
    beforeAll(async () => {
      await src.createDatabase("big");
      await src.query(`CREATE TABLE big (id bigint PRIMARY KEY, b text);
        INSERT INTO big SELECT g, md5(g::text) || md5((-g)::text) FROM generate_series(1, 1000000) g; ANALYZE`, "big");
    });

    test("SIGINT mid-load (Ctrl-C): the engine waits for the running create; the next up converges", async () => {
      await tgt.createDatabase("big_int");
      const stack = await rootStack("sigint", "big", { name: "sigint", jobs: "1" }, "big_int");
      const abort = new AbortController();
      const first = stack.up({ signal: abort.signal }).then(() => undefined, (e: Error) => e);
      await waitForCopy("big_int");
      abort.abort(); // the Automation API sends SIGINT to the CLI
      const interrupted = await first;
      // First Ctrl-C: the engine cancels, but waits for the step in flight (a dynamic provider cannot be
      // interrupted), records its result and ends the update as canceled.
      expect(String(interrupted)).toMatch(/\^C received; cancelling/);
      expect(String(interrupted)).toMatch(/Migration migration created/);
      expect(String(interrupted)).toMatch(/error: update canceled/);
      const recorded = await migrationState(stack);
      expect(recorded.pending).toEqual([]);
      expect(recorded.outputs.phase).toBe("ReadyToCutover");

      const resumed = await stack.up();
      expect(resumed.summary.result).toBe("succeeded");
      const out = await outputsOf(stack);
      expect(out.phase).toBe("ReadyToCutover");
      expect(out.rowsCopied).toBe(1000000);
      expect((await migrationState(stack)).pending).toEqual([]);
      await stack.destroy();
      expect(await leftovers(src, tgt, "big", "big_int")).toEqual([]);
      await stack.workspace.removeStack("sigint");
    });

    test("SIGKILL of the CLI and its plugins mid-load: cancel the lock, clear the pending create, up adopts the migration", async () => {
      await tgt.createDatabase("big_kill");
      const stack = await rootStack("sigkill", "big", { name: "sigkill", jobs: "1" }, "big_kill");
      const first = stack.up().then(() => undefined, (e: Error) => e);
      await waitForCopy("big_kill");
      const pid = runningCli(env.bin, "up");
      expect(pid).toBeDefined();
      // The machine or CI runner dies: the CLI, the language host and the provider plugin go at once.
      for (const p of [pid!, ...descendants(pid!)]) process.kill(p, "SIGKILL");
      expect(await first).toBeDefined();

      // The file backend keeps the killed CLI's lock: the next up refuses, naming `pulumi cancel`.
      const locked = await stack.up().then(() => undefined, (e: Error) => e);
      expect(String(locked)).toMatch(/the stack is currently locked by 1 lock\(s\)[\s\S]*pulumi cancel/);
      await stack.cancel();
      const pendingCreate = (await migrationState(stack)).pending;
      expect(pendingCreate.map((p: any) => [p.type, p.resource.type])).toEqual([["creating", MIGRATION]]);

      // The next up warns about the interrupted create and runs it again: Create adopts the migration the
      // killed one started (same slot, same record) and finishes the load.
      const resumed = await stack.up();
      expect(resumed.stdout).toMatch(/1 pending operations from previous deployment[\s\S]*Migration::migration, interrupted while creating/);
      expect((await outputsOf(stack)).rowsCopied).toBe(1000000);
      const after = await migrationState(stack);
      // The engine keeps the stale pending create even so; non-interactively, refresh --clear-pending-creates drops it.
      expect(after.pending.map((p: any) => p.type)).toEqual(["creating"]);
      await stack.refresh({ clearPendingCreates: true });
      const cleared = await migrationState(stack);
      expect(cleared.pending).toEqual([]);
      expect(cleared.outputs.phase).toBe("ReadyToCutover");
      expect((await stack.up({ expectNoChanges: true })).summary.result).toBe("succeeded");

      await stack.destroy();
      expect(await leftovers(src, tgt, "big", "big_kill")).toEqual([]);
      await stack.workspace.removeStack("sigkill");
    });

    test("SIGKILL of the CLI alone mid-load: its plugins live on; after pulumi cancel, up converges (refused as busy while the orphan copies)", async () => {
      await tgt.createDatabase("big_kill_cli");
      const stack = await rootStack("sigkillcli", "big", { name: "sigkillcli", jobs: "1" }, "big_kill_cli");
      const first = stack.up().then(() => undefined, (e: Error) => e);
      await waitForCopy("big_kill_cli");
      const pid = runningCli(env.bin, "up")!;
      const plugins = descendants(pid); // reparented once the CLI is gone: remembered to end them at the end
      process.kill(pid, "SIGKILL");
      await first;
      const alive = plugins.filter((p) => fs.existsSync(`/proc/${p}`)).map((p) => fs.readFileSync(`/proc/${p}/cmdline`, "utf8").replace(/\0/g, " ").slice(0, 120));
      show("SIGKILL of the CLI alone: still running", alive.join("\n"));
      // Pulumi does not stop its plugins when the CLI dies: the provider plugin goes on with the create in flight.
      expect(alive.some((c) => c.includes("cmd/dynamic-provider"))).toBe(true);
      try {
        await stack.cancel();
        const outcomes: string[] = [];
        for (let i = 0; ; i++) {
          const r = await stack.up().then(() => "succeeded", (e: Error) => String(e));
          // While the orphaned plugin still copies, the create is refused with who holds the migration.
          const busy = /another pgferry process is working on migration "sigkillcli" on this target; wait for it or stop it/.test(r);
          outcomes.push(busy ? "busy" : r === "succeeded" ? r : r.slice(0, 3000));
          if (!busy) break;
          if (i > 100) throw new Error("the orphaned plugin never finished");
          await sleep(1000);
        }
        show("SIGKILL of the CLI alone: the next pulumi up attempts", outcomes.join("\n"));
        expect(outcomes[outcomes.length - 1]).toBe("succeeded");
        expect(outcomes.slice(0, -1).every((o) => o === "busy")).toBe(true);
        expect((await outputsOf(stack)).rowsCopied).toBe(1000000);
        await stack.refresh({ clearPendingCreates: true });
        expect((await migrationState(stack)).pending).toEqual([]);
        await stack.destroy();
        expect(await leftovers(src, tgt, "big", "big_kill_cli")).toEqual([]);
        await stack.workspace.removeStack("sigkillcli");
      } finally {
        for (const p of plugins) { try { process.kill(p, "SIGTERM"); } catch { /* already gone */ } }
      }
    });
  });

  describe("examples", () => {
    const dirs: string[] = [];
    afterAll(() => { for (const d of dirs) fs.rmSync(d, { recursive: true, force: true }); });

    test("examples/dvdrental-self-managed: up (parameters, replication rule, schema, streaming), cutover, destroy", async () => {
      await src.createDatabase("dvdrental");
      await tgt.createDatabase("dvdrental");
      const c = await src.client("dvdrental");
      try {
        await c.query(demoSchemaSql());
        await populateDemo(c, 1);
      } finally {
        await c.end();
      }
      const dir = exampleProject("dvdrental-self-managed");
      dirs.push(dir);
      const stack = await env.stack(dir, "demo");
      await stack.setAllConfig({
        sourceAdmin: { value: src.uri("postgres"), secret: true },
        source: { value: src.uri("dvdrental"), secret: true },
        target: { value: tgt.uri("dvdrental"), secret: true },
        targetAddress: { value: "127.0.0.1" },
      });
      const up = await stack.up();
      show("examples/dvdrental-self-managed: pulumi up", up.stdout);
      let out = await outputsOf(stack);
      expect(out.status).toMatch(/^ReadyToCutover: streaming/);
      expect(out.pendingRestart).toBe(false);
      expect(out.replicationRuleName).toMatch(/_replrule$/);

      await stack.setConfig("cutover", { value: "true" });
      const cut = await stack.up();
      show("examples/dvdrental-self-managed: pulumi config set cutover true && pulumi up", cut.stdout);
      out = await outputsOf(stack);
      expect(out.status).toMatch(/^Completed: downtime/);
      expect(out.downtimeMs).toBeGreaterThan(0);
      const v = await verifyMigration(parseEndpoint(src.uri("dvdrental"), "source"), parseEndpoint(tgt.uri("dvdrental"), "target"));
      expect(v.problems).toEqual([]);

      const destroy = await stack.destroy();
      show("examples/dvdrental-self-managed: pulumi destroy", destroy.stdout);
      expect(await leftovers(src, tgt, "dvdrental")).toEqual([]);
      expect(await src.query(`SELECT nspname FROM pg_namespace WHERE nspname = 'pgferry'`, "dvdrental")).toEqual([]);
      await stack.workspace.removeStack("demo");
    });

    test("examples/azure-flexible-server: preview fails clearly without the azure-native plugin (offline)", async () => {
      const dir = exampleProject("azure-flexible-server", ["@pulumi/azure-native"]);
      dirs.push(dir);
      const stack = await env.stack(dir, "azure");
      await stack.setAllConfig({
        "azure-native:location": { value: "westeurope" },
        resourceGroupName: { value: "rg-shop" }, sourceServerName: { value: "pg-shop-13" }, targetOutboundIp: { value: "20.50.1.2" },
        source: { value: "postgresql://migrator:pw-src@pg-shop-13.postgres.database.azure.com/shop?sslmode=require", secret: true },
        target: { value: "postgresql://migrator:pw-tgt@pg-shop-17.postgres.database.azure.com/shop?sslmode=require", secret: true },
      });
      const failed = await stack.preview().then(() => undefined, (e: Error) => e);
      show("examples/azure-flexible-server: pulumi preview", String(failed));
      // The engine names the plugin and version it lacks; nothing was created.
      expect(String(failed)).toMatch(/no resource plugin 'pulumi-resource-azure-native' found in the workspace at version v3\.28\.0/);
      await stack.workspace.removeStack("azure");
    });
  });
});
