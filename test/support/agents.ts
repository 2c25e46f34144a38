/**
 * `pgferry agent` as a real child process in tests: its stderr log, its exit, and a registry so that
 * agents left running by a test that failed midway are killed (they would keep jest from exiting).
 */
import { ChildProcess, spawn } from "child_process";
import { CLI } from "./build";

export interface AgentProcess { proc: ChildProcess; log: () => string; exit: Promise<number | null> }

const running = new Set<ChildProcess>();

/** Start `node [nodeArgs] pgferry agent [args]` with the source and target URIs in the environment. */
export function spawnAgent(args: string[], uris: { source: string; target: string }, nodeArgs: string[] = []): AgentProcess {
  let out = "";
  const proc = spawn(process.execPath, [...nodeArgs, CLI, "agent", ...args], {
    env: { ...process.env, PGFERRY_SOURCE: uris.source, PGFERRY_TARGET: uris.target }, stdio: ["ignore", "ignore", "pipe"],
  });
  running.add(proc);
  proc.stderr!.on("data", (d) => { out += d; });
  const exit = new Promise<number | null>((r) => proc.once("exit", (code) => { running.delete(proc); r(code); }));
  return { proc, log: () => out, exit };
}

/** For afterAll: SIGKILL every agent still running. */
export function killAgents(): void {
  for (const p of running) p.kill("SIGKILL");
}

/** The agent's exit code; fails with its log if it has not exited within `ms`. */
export async function exited(a: AgentProcess, what: string, ms = 60000): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, rej) => { timer = setTimeout(() => rej(new Error(`${what}: the agent did not exit within ${ms} ms; its log:\n${a.log()}`)), ms); });
  try { return await Promise.race([a.exit, late]); } finally { clearTimeout(timer); }
}

export { until } from "./until";
