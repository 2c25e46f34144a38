/**
 * The `pgferry` command as scripts use it (built CLI, real servers, --json), and crash safety:
 * `start` killed with SIGKILL in the middle of the load leaves an inactive slot; a re-run restarts the
 * load cleanly and converges; cutover, verify and cleanup finish with nothing left behind.
 */
import { spawn, spawnSync } from "child_process";
import { LocalServer } from "../provider/embedded/localServer";
import { leftovers, startServers } from "./support/servers";
import { CLI, ensureBuilt } from "./support/build";
import { until } from "./support/until";


let src: LocalServer, tgt: LocalServer;
beforeAll(async () => {
  ensureBuilt();
  [src, tgt] = await startServers(15, 17);
  await src.createDatabase("app");
  await tgt.createDatabase("app");
  // Big enough (~150 MB) that the load is still running when we kill it.
  await src.query(`CREATE TABLE big (id bigint PRIMARY KEY, a int, b text, c timestamptz DEFAULT now());
    INSERT INTO big SELECT g, g % 1000, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, 1500000) g;
    CREATE TABLE small (id serial PRIMARY KEY, v text); INSERT INTO small (v) SELECT 'v' || g FROM generate_series(1, 1000) g;
    ANALYZE;`, "app");
});
afterAll(async () => { await src?.stop(); await tgt?.stop(); });

function cli(args: string[], env: NodeJS.ProcessEnv = {}): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", env: { ...process.env, ...env } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

test("start killed mid-load, re-run converges; status/cutover/verify/cleanup over the CLI", async () => {
  const env = { PGFERRY_SOURCE: src.uri("app"), PGFERRY_TARGET: tgt.uri("app") };
  const child = spawn(process.execPath, [CLI, "start", "--name", "crash", "--jobs", "1", "--json"], { env: { ...process.env, ...env }, stdio: "ignore" });
  // Wait until the load is under way, then kill -9.
  await until("the load to start", async () =>
    (await tgt.query(`SELECT phase FROM pgferry.migration WHERE name = 'crash'`, "app").catch(() => []))[0]?.phase === "Loading" &&
    (await src.query(`SELECT 1 FROM pg_replication_slots WHERE slot_name = 'pgferry_crash'`, "app")).length > 0, 120000, 50);
  await new Promise((r) => setTimeout(r, 300));
  child.kill("SIGKILL");
  await new Promise((r) => child.once("exit", r));

  // What the kill left: the migration recorded as Loading, its slot (inactive once the walsender notices).
  const st1 = cli(["status", "--name", "crash", "--json"], env);
  expect(JSON.parse(st1.stdout).phase).toBe("Loading");

  // Re-run: restarts the load from a new snapshot and reaches streaming.
  const r2 = cli(["start", "--name", "crash", "--jobs", "2", "--json"], env);
  expect(r2.stderr).toBe("");
  expect(r2.code).toBe(0);
  const started = JSON.parse(r2.stdout);
  expect(started).toMatchObject({ ok: true, phase: "ReadyToCutover", alreadyRunning: false });
  expect(started.load.rows).toBe(1501000);

  await src.query(`UPDATE big SET a = -1 WHERE id <= 1000; DELETE FROM small WHERE id <= 10; INSERT INTO small (v) VALUES ('late')`, "app");
  const again = cli(["start", "--name", "crash", "--json"], env);
  expect(JSON.parse(again.stdout)).toMatchObject({ ok: true, alreadyRunning: true });

  const cut = cli(["cutover", "--name", "crash", "--freeze-writes", "--json"], env);
  expect(cut.code).toBe(0);
  expect(JSON.parse(cut.stdout)).toMatchObject({ ok: true, phase: "Completed", sequencesSynced: 1 });

  const v = cli(["verify", "--json"], env);
  expect(JSON.parse(v.stdout).problems).toEqual([]);
  expect(v.code).toBe(0);

  const cl = cli(["cleanup", "--name", "crash", "--json"], env);
  expect(JSON.parse(cl.stdout)).toMatchObject({ ok: true, previousPhase: "Completed" });
  expect(await leftovers(src, tgt)).toEqual([]);

  // After cleanup the migration is unknown: status exits non-zero, without printing any password.
  const gone = cli(["status", "--name", "crash"], env);
  expect(gone.code).toBe(1);
  expect(gone.stdout + gone.stderr).not.toContain(src.password);
});

test("refusals exit non-zero with the finding and its fix, and no password in the output", async () => {
  await src.createDatabase("refuse");
  await src.query(`CREATE TABLE nokey (v text)`, "refuse");
  {
    const r = cli(["start", "--source", src.uri("refuse"), "--target", tgt.uri("postgres"), "--name", "refused"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no primary key and no replica identity.*public\.nokey/s);
    expect(r.stderr).toMatch(/fix: add a primary key, or pass --replica-identity-full/);
    expect(r.stderr + r.stdout).not.toContain(src.password);
    const j = cli(["start", "--source", src.uri("refuse"), "--target", tgt.uri("postgres"), "--name", "refused", "--json"]);
    expect(JSON.parse(j.stdout).error.findings.map((f: { code: string }) => f.code)).toContain("no_replica_identity");
    expect(await leftovers(src, tgt, "refuse", "postgres")).toEqual([]);
  }
});
