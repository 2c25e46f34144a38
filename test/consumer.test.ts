/**
 * The published package as a user gets it: `npm pack`, install the tarball into a fresh project, run
 * the Migration provider through the real plugin from that project (so the `pgferry/dist/…` paths in
 * the serialized provider resolve to the installed package), and the `pgferry` bin.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { LocalServer } from "../provider/embedded/localServer";
import { migrationProvider } from "../provider/resources/migration";
import { DynamicProviderHarness } from "./support/dynamicProviderHarness";
import { leftovers, startServers } from "./support/servers";

const ROOT = path.resolve(__dirname, "..");
let dir: string, src: LocalServer, tgt: LocalServer;

function run(cmd: string, args: string[], cwd: string) {
  const r = spawnSync(cmd, args, { cwd, encoding: "utf8", env: { ...process.env, npm_config_audit: "false", npm_config_fund: "false" } });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "pgferry-consumer-"));
  const tarball = run("npm", ["pack", "--silent", "--pack-destination", dir], ROOT).trim().split("\n").pop()!;
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ name: "consumer", private: true }));
  run("npm", ["install", "--prefer-offline", "--no-package-lock", path.join(dir, tarball), "@pulumi/pulumi@3.248.0"], dir);
  [src, tgt] = await startServers(15, 17);
  await src.createDatabase("app");
  await tgt.createDatabase("app");
  await src.query(`CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 500) g`, "app");
});
afterAll(async () => {
  await src?.stop(); await tgt?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test("the packed package: only the library ships, its provider runs from a consumer project", async () => {
  const installed = path.join(dir, "node_modules/pgferry");
  expect(fs.realpathSync(installed)).toBe(installed); // a real install, not a link to this checkout
  expect(fs.existsSync(path.join(installed, "dist/provider/resources/migrationHandlers.js"))).toBe(true);
  expect(fs.existsSync(path.join(installed, "dist/test"))).toBe(false);

  const h = await DynamicProviderHarness.start(migrationProvider, { cwd: dir });
  try {
    await h.configure();
    const inputs = { source: src.uri("app"), target: tgt.uri("app"), name: "consumer" };
    expect((await h.check("m", {}, inputs)).failures).toEqual([]);
    const { id, outs } = await h.create("m", inputs);
    expect(outs).toMatchObject({ phase: "ReadyToCutover", rowsCopied: 500 });
    await h.delete("m", id, outs);
    expect(await leftovers(src, tgt)).toEqual([]);
  } finally {
    await h.stop();
  }

  const bin = spawnSync(path.join(dir, "node_modules/.bin/pgferry"), ["--help"], { encoding: "utf8" });
  expect(bin.status).toBe(0);
  expect(bin.stdout).toMatch(/start .*status .*cutover .*cleanup .*verify .*demo/s);
});
