/**
 * A seeded chaos loop under pgbench load: each iteration migrates the pgbench database (stream or
 * subscription mode, chosen by the seed), and at random moments kill -9s `start`, the agent and `cutover`
 * and restarts the source; each iteration then resumes what was killed, cuts over, verifies the target equals
 * the source (content hashes) and leaves no slot, publication or subscription.
 * Short in CI (3 iterations); the long version by hand:
 *   PGFERRY_CHAOS_SEED=42 PGFERRY_CHAOS_ITERATIONS=30 npx jest --runInBand test/faults.chaos.test.ts
 */
import { mulberry32 } from "../provider/demo/dvdrental";
import { ChildProcess, spawn, spawnSync } from "child_process";
import * as fs from "fs";
import { LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, cutoverMigration, migrationOptions, parseEndpoint, startMigration, verifyMigration } from "../provider/engine";
import { CLI, ensureBuilt } from "./support/build";
import { exited, killAgents, spawnAgent } from "./support/agents";
import { leftovers, startServers, SYSTEM_PG15 } from "./support/servers";

const PGBENCH = `${SYSTEM_PG15}/pgbench`;
const havePgbench = fs.existsSync(PGBENCH);
if (!havePgbench) console.warn(`skipping the chaos loop: ${PGBENCH} not found (Debian's postgresql-15 provides it)`);
const maybe = havePgbench ? test : test.skip;
const SEED = Number(process.env.PGFERRY_CHAOS_SEED ?? 20261206);
const ITERATIONS = Number(process.env.PGFERRY_CHAOS_ITERATIONS ?? 3);

const rng = mulberry32;

let src: LocalServer, tgt: LocalServer;
const children = new Set<ChildProcess>();
beforeAll(async () => {
  if (!havePgbench) return;
  ensureBuilt();
  [src, tgt] = await startServers(15, 17);
  await src.createDatabase("app");
  const r = spawnSync(PGBENCH, ["-i", "-s", "2", "-q", src.uri("app")], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`pgbench -i: ${r.stderr}`);
}, 120000);
afterAll(async () => {
  killAgents();
  for (const c of children) c.kill("SIGKILL");
  await src?.stop(); await tgt?.stop();
});

function cli(args: string[]): { proc: ChildProcess; exit: Promise<number | null>; err: () => string } {
  let err = "";
  const proc = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, PGFERRY_SOURCE: src.uri("app"), PGFERRY_TARGET: tgt.uri("app") },
    stdio: ["ignore", "ignore", "pipe"] });
  children.add(proc);
  proc.stderr!.on("data", (d) => { err += d; });
  const exit = new Promise<number | null>((r) => proc.once("exit", (code) => { children.delete(proc); r(code); }));
  return { proc, exit, err: () => err };
}

/** pgbench's TPC-B-like load until stopped (its clients end themselves once the source is frozen). */
function pgbench(): { stop: () => Promise<void> } {
  const p = spawn(PGBENCH, ["-n", "-c", "2", "-T", "600", "-R", "200", src.uri("app")], { stdio: "ignore" });
  children.add(p);
  const done = new Promise<void>((r) => p.once("exit", () => { children.delete(p); r(); }));
  return { stop: async () => { p.kill("SIGINT"); await done; } };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

maybe(`chaos: ${ITERATIONS} iterations of kill -9 (start, agent, cutover) and source restarts under pgbench, seed ${SEED}`, async () => {
  const rand = rng(SEED);
  const source = parseEndpoint(src.uri("app"), "source"), target = parseEndpoint(tgt.uri("app"), "target");
  const tally = { kills: 0, restarts: 0, iterations: 0 };
  for (let i = 0; i < ITERATIONS; i++) {
    const name = `chaos${i}`;
    const mode = rand() < 0.5 ? "stream" : "subscription";
    const what = `iteration ${i} (seed ${SEED}, ${mode})`;
    await tgt.query(`DROP DATABASE IF EXISTS app`);
    await tgt.createDatabase("app");
    let load = pgbench();
    // start, killed at a random moment, then resumed.
    if (rand() < 0.7) {
      const s = cli(["start", "--name", name, "--mode", mode, "--replica-identity-full", "--jobs", "2"]);
      await sleep(Math.floor(rand() * 1500));
      s.proc.kill("SIGKILL");
      await s.exit;
      tally.kills++;
    }
    const opts = migrationOptions({ name, mode, replicaIdentityFull: true, jobs: 2 });
    expect({ what, phase: (await startMigration(source, target, opts)).phase }).toEqual({ what, phase: "ReadyToCutover" });
    let agent = mode === "stream" ? spawnAgent(["--name", name], { source: src.uri("app"), target: tgt.uri("app") }) : undefined;
    if (agent && rand() < 0.7) {
      await sleep(Math.floor(rand() * 2000));
      agent.proc.kill("SIGKILL");
      await exited(agent, `${what}: kill -9 of the agent`);
      tally.kills++;
      agent = spawnAgent(["--name", name], { source: src.uri("app"), target: tgt.uri("app") });
    }
    if (rand() < 0.3) {
      await load.stop();
      await src.restart();
      tally.restarts++;
      load = pgbench();
    }
    await sleep(500 + Math.floor(rand() * 1500));
    // cutover, killed at a random moment (perhaps with the source frozen), then run again: it resumes.
    if (rand() < 0.7) {
      const c = cli(["cutover", "--name", name, "--freeze-writes", "--timeout", "120"]);
      await sleep(Math.floor(rand() * 1500));
      c.proc.kill("SIGKILL");
      await c.exit;
      tally.kills++;
    }
    const cut = await cutoverMigration(source, target, { name, freezeWrites: true, timeoutSec: 120, jobs: 2 });
    await load.stop();
    expect({ what, phase: cut.phase }).toEqual({ what, phase: "Completed" });
    if (agent) expect({ what, exit: await exited(agent, `${what}: agent after cutover`) }).toEqual({ what, exit: 0 });
    if (cut.undoFreezeSql.length) await src.query(cut.undoFreezeSql.join("\n"), "app");
    const report = await verifyMigration(source, target, { hashes: true });
    expect({ what, problems: report.problems }).toEqual({ what, problems: [] });
    await cleanupMigration(source, target, name);
    expect({ what, left: await leftovers(src, tgt) }).toEqual({ what, left: [] });
    tally.iterations++;
  }
  console.log(`chaos (seed ${SEED}): ${tally.iterations} iterations converged; ${tally.kills} kill -9, ${tally.restarts} source restarts`);
}, 120000 + ITERATIONS * 90000);
