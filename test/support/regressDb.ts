/**
 * PostgreSQL's regression database as a test corpus: built once by scripts/build-regress-db.sh (cached in
 * .cache/regress), restored here into a test's own Debian PostgreSQL 15 server in a second or two, and the
 * committed list of differences a migration of it may show (test/conformance/allowed-differences.json).
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { LocalServer } from "../../provider/embedded/localServer";
import { InventoryDifference } from "./catalogInventory";
import { ROOT } from "./build";
import { SYSTEM_PG15 } from "./servers";

export const REGRESS_CACHE = path.join(ROOT, ".cache/regress");
export const REGRESS_DUMP = path.join(REGRESS_CACHE, "regression.dump");
export const ALLOWED_FILE = path.join(ROOT, "test/conformance/allowed-differences.json");

/** Why the corpus cannot be had here (undefined when it can): the build script's own reason when it wrote one. */
export function regressCorpusMissing(): string | undefined {
  if (!fs.existsSync(path.join(SYSTEM_PG15, "postgres"))) return `no Debian PostgreSQL 15 server in ${SYSTEM_PG15} (apt-get install postgresql-15)`;
  const libDir = fs.existsSync(path.join(REGRESS_CACHE, "LIBDIR")) ? fs.readFileSync(path.join(REGRESS_CACHE, "LIBDIR"), "utf8").trim() : "";
  if (fs.existsSync(path.join(REGRESS_CACHE, "COMPLETE")) && fs.existsSync(REGRESS_DUMP)) {
    // The suite's C functions name their libraries by absolute path: the source server loads them from there.
    if (!fs.existsSync(path.join(libDir, "regress.so"))) return `the regression suite's libraries are gone from ${libDir}; rebuild with: REGRESS_REBUILD=1 bash scripts/build-regress-db.sh`;
    return undefined;
  }
  const why = fs.existsSync(path.join(REGRESS_CACHE, "UNAVAILABLE")) ? fs.readFileSync(path.join(REGRESS_CACHE, "UNAVAILABLE"), "utf8").trim()
    : "it has not been built";
  return `PostgreSQL's regression database is not in ${REGRESS_CACHE}: ${why}. Build it with: bash scripts/build-regress-db.sh ` +
    `(needs a deb-src entry for postgresql-15 and postgresql-server-dev-15; .ci/run does this)`;
}

function tool(name: string): string { return path.join(SYSTEM_PG15, name); }

function run(cmd: string, args: string[], password: string): { code: number; out: string } {
  const r = spawnSync(cmd, args, { encoding: "utf8", env: { ...process.env, PGPASSWORD: password }, maxBuffer: 64 << 20 });
  return { code: r.status ?? -1, out: `${r.stdout ?? ""}${r.stderr ?? ""}` };
}

/** The roles the suite leaves behind (pg_dumpall --roles-only), created on a server — a DBA's step before any migration. */
export function createRegressRoles(server: LocalServer): void {
  const sql = fs.readFileSync(path.join(REGRESS_CACHE, "globals.sql"), "utf8")
    .split("\n").filter((l) => !/^(CREATE|ALTER) ROLE postgres[ ;]/.test(l)).join("\n");
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "pgferry-roles-")), "roles.sql");
  fs.writeFileSync(file, sql);
  // psql -f: the file has psql meta-commands (\restrict).
  const r = run(tool("psql"), ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", server.uri("postgres"), "-f", file], server.password);
  fs.rmSync(path.dirname(file), { recursive: true, force: true });
  if (r.code !== 0) throw new Error(`creating the regression suite's roles failed: ${r.out}`);
}

/**
 * Restore the regression database into `server` as database `name` (pg_restore --create makes "regression"
 * with its settings and comment, then it is renamed). Returns pg_restore's run time in ms.
 */
export async function restoreRegressDb(server: LocalServer, name: string): Promise<number> {
  const t = Date.now();
  const r = run(tool("pg_restore"), ["--create", "--exit-on-error", "-d", server.uri("postgres"), REGRESS_DUMP], server.password);
  if (r.code !== 0) throw new Error(`pg_restore of the regression database failed: ${r.out}`);
  const ms = Date.now() - t;
  if (name !== "regression") await server.query(`ALTER DATABASE regression RENAME TO "${name}"`);
  return ms;
}

export interface AllowedDifference {
  /** Regular expression over the inventory key ("pg_class: table public.foo", "pg_attribute: table column …"). */
  key: string;
  kind: "missing" | "extra" | "changed";
  /** For "changed": the property (acl, owner, def, …); absent = any. */
  field?: string;
  /** Only for these target majors; absent = every target. */
  targetMajors?: number[];
  /** Only for these CDC modes ("subscription", "stream"; "source" = the source after vs before); absent = any. */
  modes?: string[];
  /**
   * A version effect: allowed only where `pg_dump | pg_restore` of the same source into the same target server
   * shows exactly the same difference (same values on both sides) — the target major renders or stores it so.
   */
  sameWithPgRestore?: boolean;
  reason: string;
}

export interface Adjustment { sql: string; reason: string }

export interface AllowedFile {
  /**
   * Statements run on the source copy before migrating to a target of that major, as PostgreSQL's own
   * cross-version pg_upgrade test adjusts its regression database (AdjustUpgrade.pm): objects the target
   * major cannot hold at all. Each with its reason.
   */
  adjustBeforeMigration: Record<string, Adjustment[]>;
  /**
   * Tables a CDC mode cannot carry, which that mode's runs therefore --exclude: each must be named by pgferry's
   * own preflight refusal (the test checks that the refusal names exactly tables listed here), and the target
   * is then compared with the source copy from which PostgreSQL itself dropped them (DROP TABLE … CASCADE), so
   * what depends on them may be absent and nothing else.
   */
  excludeInMode?: Record<string, { finding: string; tables: string[]; reason: string }>;
  differences: AllowedDifference[];
}

export function loadAllowed(): AllowedFile {
  const f = JSON.parse(fs.readFileSync(ALLOWED_FILE, "utf8")) as AllowedFile;
  for (const d of f.differences) {
    if (!d.reason?.trim()) throw new Error(`${ALLOWED_FILE}: every allowed difference needs a reason (${d.key})`);
    new RegExp(d.key); // a bad pattern fails here, not silently later
    // What pg_restore also loses is a loss, not a version effect: only changed or extra entries can be one.
    if (d.sameWithPgRestore && d.kind === "missing") throw new Error(`${ALLOWED_FILE}: a missing object cannot be a version effect (${d.key})`);
  }
  for (const [mode, x] of Object.entries(f.excludeInMode ?? {})) {
    if (!x.reason?.trim() || !x.finding || !x.tables?.length) throw new Error(`${ALLOWED_FILE}: excludeInMode.${mode} needs a finding, tables and a reason`);
  }
  for (const list of Object.values(f.adjustBeforeMigration)) for (const a of list) {
    if (!a.reason?.trim()) throw new Error(`${ALLOWED_FILE}: every adjustment needs a reason (${a.sql})`);
  }
  return f;
}

/** Split differences into those the file allows (with the entry that allows each) and the rest. */
export const differenceId = (d: InventoryDifference) => JSON.stringify([d.key, d.kind, d.field, d.source, d.target]);

export function applyAllowed(diffs: InventoryDifference[], allowed: AllowedDifference[],
  ctx: { targetMajor: number; mode: string; pgRestoreDifferences?: Set<string> }):
  { unexpected: InventoryDifference[]; allowed: { diff: InventoryDifference; by: AllowedDifference }[]; unused: AllowedDifference[] } {
  const applicable = allowed.filter((a) => (!a.targetMajors || a.targetMajors.includes(ctx.targetMajor)) && (!a.modes || a.modes.includes(ctx.mode)));
  const used = new Set<AllowedDifference>();
  const unexpected: InventoryDifference[] = [];
  const ok: { diff: InventoryDifference; by: AllowedDifference }[] = [];
  for (const d of diffs) {
    const by = applicable.find((a) => a.kind === d.kind && (!a.field || a.field === d.field) && new RegExp(a.key).test(d.key) &&
      (!a.sameWithPgRestore || !!ctx.pgRestoreDifferences?.has(differenceId(d))));
    if (by) { used.add(by); ok.push({ diff: d, by }); } else unexpected.push(d);
  }
  return { unexpected, allowed: ok, unused: applicable.filter((a) => !used.has(a)) };
}
