/**
 * The target's disk fills: the target database lives in a tablespace on a small tmpfs (mounted here; root
 * only). During the load: start fails with the disk named and the fix, the slot released; after space is
 * freed (the tmpfs grown) start converges. During CDC (stream mode): the agent records a disk-full error
 * (status shows it), keeps the slot, and resumes once there is space — the target converges.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { LocalServer } from "../provider/embedded/localServer";
import {
  cleanupMigration, cutoverMigration, migrationOptions, migrationStatus, parseEndpoint, PgferryError, startMigration, verifyMigration,
} from "../provider/engine";
import { ensureBuilt } from "./support/build";
import { exited, killAgents, spawnAgent, until } from "./support/agents";
import { leftovers, startServers } from "./support/servers";

const isRoot = process.getuid?.() === 0;
let mountDir: string | undefined, mounted = false;
let src: LocalServer, tgt: LocalServer;

function mount(size: string, remount = false): void {
  const owner = { uid: Number(spawnSync("id", ["-u", "postgres"], { encoding: "utf8" }).stdout), gid: Number(spawnSync("id", ["-g", "postgres"], { encoding: "utf8" }).stdout) };
  const r = spawnSync("mount", ["-t", "tmpfs", "-o", `${remount ? "remount," : ""}size=${size},uid=${owner.uid},gid=${owner.gid},mode=0700`, "tmpfs", mountDir!],
    { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`mount tmpfs: ${r.stderr}`);
  mounted = true;
}

const canMount = (() => {
  if (!isRoot) return "not root";
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "pgferry-tmpfs-probe-"));
  const r = spawnSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", d], { encoding: "utf8" });
  if (r.status === 0) spawnSync("umount", [d]);
  fs.rmdirSync(d);
  return r.status === 0 ? undefined : `mount failed: ${r.stderr.trim()}`;
})();
if (canMount) console.warn(`skipping the disk-full tests: a tmpfs cannot be mounted here (${canMount})`);
const maybe = canMount ? test.skip : test;

beforeAll(async () => {
  if (canMount) return;
  ensureBuilt();
  [src, tgt] = await startServers(15, 17);
  mountDir = fs.mkdtempSync(path.join(os.tmpdir(), "pgferry-small-disk-"));
  fs.chmodSync(mountDir, 0o755);
  mount("24m");
  const space = path.join(mountDir, "ts");
  fs.mkdirSync(space);
  const owner = Number(spawnSync("id", ["-u", "postgres"], { encoding: "utf8" }).stdout);
  fs.chownSync(space, owner, Number(spawnSync("id", ["-g", "postgres"], { encoding: "utf8" }).stdout));
  await tgt.query(`CREATE TABLESPACE small LOCATION '${space}'`);
  await tgt.query(`CREATE DATABASE app TABLESPACE small`);
  await src.createDatabase("app");
  // ~40 MB of rows: more than the target's 24 MB disk.
  await src.query(`CREATE TABLE acct (id int PRIMARY KEY, n int NOT NULL DEFAULT 0);
    INSERT INTO acct SELECT g, 0 FROM generate_series(1, 1000) g;
    CREATE TABLE big (id int PRIMARY KEY, payload text);
    INSERT INTO big SELECT g, repeat(md5(g::text), 12) FROM generate_series(1, 80000) g;`, "app");
}, 120000);
afterAll(async () => {
  killAgents();
  await src?.stop(); await tgt?.stop();
  if (mounted) spawnSync("umount", [mountDir!]);
  if (mountDir) fs.rmSync(mountDir, { recursive: true, force: true });
});

const eps = () => ({ source: parseEndpoint(src.uri("app"), "source"), target: parseEndpoint(tgt.uri("app"), "target") });
const count = async (s: LocalServer) => (await s.query(`SELECT count(*)::int AS n FROM big`, "app"))[0].n as number;

maybe("the target's disk fills during the load, then during CDC: named, slot released / kept as documented, resumes after space is freed", async () => {
  const { source, target } = eps();
  const o = migrationOptions({ name: "disk", mode: "stream", jobs: 2 });
  const err = await startMigration(source, target, o).then(() => undefined, (e) => e as PgferryError);
  expect(err?.code).toBe("load_failed");
  expect(err!.message).toMatch(/No space left on device[\s\S]*the target's disk is full; fix: free or add space on the target, then run pgferry start again/);
  // Released: no slot, no publication holds WAL on the source while the disk is full.
  expect(await leftovers(src, tgt)).toEqual([]);

  // Space freed: the re-run converges.
  mount("200m", true);
  expect((await startMigration(source, target, o)).phase).toBe("ReadyToCutover");
  expect(await count(tgt)).toBe(80000);

  // During CDC: shrink the disk to what is used now plus a little, and write more than fits.
  const used = Number(spawnSync("df", ["--output=used", "-k", mountDir!], { encoding: "utf8" }).stdout.trim().split("\n")[1]);
  mount(`${used + 2048}k`, true);
  const a = spawnAgent(["--name", "disk"], { source: src.uri("app"), target: tgt.uri("app") });
  await until("the agent to stream", async () => /streaming/.test(a.log()));
  await src.query(`INSERT INTO big SELECT g, repeat(md5(g::text), 12) FROM generate_series(80001, 120000) g`, "app");
  await until("the agent to hit the full disk", async () => /the target's disk is full/.test(a.log()), 60000);
  const st = await migrationStatus(source, target, "disk");
  expect(st.applyError?.message).toMatch(/the target's disk is full[\s\S]*the slot is kept/);
  expect(st.slot).toBeDefined(); // kept: the changes wait in it
  expect(await count(tgt)).toBe(80000); // nothing partial
  mount("200m", true);
  await until("the agent to apply after space is freed", async () => (await count(tgt)) === 120000, 120000);
  const done = await cutoverMigration(source, target, { name: "disk", freezeWrites: true, timeoutSec: 60, jobs: 2 });
  expect(done.phase).toBe("Completed");
  expect(await exited(a, "agent after cutover")).toBe(0);
  await src.query(done.undoFreezeSql.join("\n"), "app");
  expect((await verifyMigration(source, target, { hashes: true })).ok).toBe(true);
  await cleanupMigration(source, target, "disk");
  await tgt.query(`DROP TABLE big, acct; DROP SCHEMA IF EXISTS pgferry CASCADE`, "app");
  expect(await leftovers(src, tgt)).toEqual([]);
}, 300000);
