/**
 * The real Pulumi CLI for tests, driven through the Automation API (LocalWorkspace): a `pulumi` on PATH
 * first (what users have), else the one scripts/build-pulumi.sh builds into .cache/pulumi/bin. Every
 * workspace is offline and isolated: its own PULUMI_HOME, a local file backend in a temp dir, passphrase
 * secrets, no update check, no plugin downloads.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { LocalWorkspace, PulumiCommand, Stack } from "@pulumi/pulumi/automation";
import { ROOT } from "./build";

export const BUILT_BIN = path.join(ROOT, ".cache/pulumi/bin");
export const PASSPHRASE = "pgferry-test-passphrase";

/** Where the CLI is: { bin } (its directory), or { missing } saying why not and how to get one. */
export function findPulumiCli(): { bin: string; missing?: undefined } | { bin?: undefined; missing: string } {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (dir && fs.existsSync(path.join(dir, "pulumi")) && fs.existsSync(path.join(dir, "pulumi-language-nodejs"))) return { bin: dir };
  }
  // .version is written last, once the CLI, the language host and the plugin are all in place.
  if (fs.existsSync(path.join(BUILT_BIN, ".version"))) return { bin: BUILT_BIN };
  return { missing: `no Pulumi CLI: none on PATH and none in ${BUILT_BIN}; run \`bash scripts/build-pulumi.sh\` (needs Go and the Go module proxy)` };
}

/** An isolated Pulumi environment: PULUMI_HOME, file backend and a scratch dir, removed by dispose(). */
export class PulumiEnv {
  readonly home: string;
  readonly backendDir: string;
  readonly envVars: Record<string, string>;
  private constructor(readonly bin: string, readonly cmd: PulumiCommand, readonly scratch: string) {
    this.home = path.join(scratch, "home");
    this.backendDir = path.join(scratch, "backend");
    fs.mkdirSync(this.home);
    fs.mkdirSync(this.backendDir);
    this.envVars = {
      PULUMI_HOME: this.home,
      PULUMI_BACKEND_URL: `file://${this.backendDir}`,
      PULUMI_CONFIG_PASSPHRASE: PASSPHRASE,
      PULUMI_SKIP_UPDATE_CHECK: "true",
      PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
      PULUMI_SKIP_CONFIRMATIONS: "true",
      // The language host and the dynamic provider plugin are found beside the CLI.
      PATH: `${this.bin}${path.delimiter}${process.env.PATH ?? ""}`,
    };
  }

  static async create(bin: string): Promise<PulumiEnv> {
    // PulumiCommand runs <root>/bin/pulumi, or `pulumi` from PATH without a root.
    const cmd = await PulumiCommand.get(path.basename(bin) === "bin" ? { root: path.dirname(bin) } : {});
    return new PulumiEnv(bin, cmd, fs.mkdtempSync(path.join(os.tmpdir(), "pgferry-pulumi-")));
  }

  /** A stack of the project in `workDir` (its Pulumi.yaml), created fresh. */
  async stack(workDir: string, stackName: string): Promise<Stack> {
    const ws = await LocalWorkspace.create({ workDir, pulumiHome: this.home, envVars: this.envVars, pulumiCommand: this.cmd });
    return Stack.create(stackName, ws);
  }

  /** The stack's checkpoint file in the file backend (what `pulumi up` wrote to disk). */
  stateFile(project: string, stackName: string): string {
    return path.join(this.backendDir, ".pulumi/stacks", project, `${stackName}.json`);
  }

  /** Run the CLI directly (for what the Automation API does not expose), in `cwd`. */
  run(args: string[], cwd: string): { code: number; out: string } {
    const r = spawnSync(path.join(this.bin, "pulumi"), args, { cwd, encoding: "utf8", env: { ...process.env, ...this.envVars } });
    return { code: r.status ?? -1, out: `${r.stdout ?? ""}${r.stderr ?? ""}` };
  }

  dispose(): void { fs.rmSync(this.scratch, { recursive: true, force: true }); }
}

/** Every process below `pid` (children first found by /proc), for killing a CLI with its plugins. */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const e of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(e)]);
    } catch { /* gone meanwhile */ }
  }
  const out: number[] = [];
  const walk = (p: number) => { for (const c of children.get(p) ?? []) { out.push(c); walk(c); } };
  walk(pid);
  return out;
}

/** The pid of a running `pulumi <verb>` started by this process (the Automation API does not expose it). */
export function runningCli(bin: string, verb: string): number | undefined {
  const exe = path.join(bin, "pulumi");
  for (const pid of descendants(process.pid)) {
    try {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      if (argv[0] === exe && argv.includes(verb)) return pid;
    } catch { /* gone meanwhile */ }
  }
  return undefined;
}
