/** Test helpers: real servers, a concurrent writer, and the leftovers check every test ends with. */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { Client } from "pg";
import { EmbeddedMajor, LocalServer, LocalServerOptions, pkgLibDir } from "../../provider/embedded/localServer";
import { until } from "./until";

export const SHARED = path.resolve(__dirname, "../../../shared");
export const VERIFY_SH = path.join(SHARED, "tools/verify.sh");
export const PAGILA = path.join(SHARED, "datasets/pagila");

/**
 * pg_reload_conf(), then wait until new sessions run under the reloaded files (the postmaster reloads
 * asynchronously; pg_conf_load_time() of a new session moves once it has).
 */
export async function reloadConf(s: LocalServer, database = "postgres"): Promise<void> {
  const [{ before }] = await s.query(`SELECT pg_conf_load_time()::text AS before, pg_reload_conf()`, database);
  await until("the server to reload its configuration", async () =>
    (await s.query(`SELECT pg_conf_load_time() > '${before}'::timestamptz AS reloaded`, database))[0].reloaded, 60000, 20);
}

/** Wait until the server refuses plain (non-TLS) connections, after its pg_hba.conf allows hostssl only and is reloaded. */
export async function plainRefused(s: LocalServer): Promise<void> {
  await until("the server to refuse plain connections", () => s.query(`SELECT 1`).then(() => false, (e: Error) => /no pg_hba\.conf entry/.test(e.message)),
    60000, 20);
}

export async function startServers(...majors: EmbeddedMajor[]): Promise<LocalServer[]> {
  return startServerSet(majors.map((major) => ({ major })));
}

/** Start several servers; if one fails, stop the others (a leaked server keeps jest from exiting) and rethrow. */
export async function startServerSet(options: LocalServerOptions[]): Promise<LocalServer[]> {
  const results = await Promise.allSettled(options.map((o) => LocalServer.start(o)));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) {
    await Promise.all(results.map((r) => (r.status === "fulfilled" ? r.value.stop() : undefined)));
    throw failed.reason;
  }
  return results.map((r) => (r as PromiseFulfilledResult<LocalServer>).value);
}

/** Replication objects left on either side (slots of every database): must be empty after cleanup. */
export async function leftovers(source: LocalServer, target: LocalServer, db = "app", targetDb = db): Promise<string[]> {
  const out: string[] = [];
  for (const r of await source.query(`SELECT slot_name FROM pg_replication_slots`, db)) out.push(`slot ${r.slot_name}`);
  for (const r of await source.query(`SELECT pubname FROM pg_publication`, db)) out.push(`publication ${r.pubname}`);
  for (const r of await target.query(`SELECT subname FROM pg_subscription`, targetDb)) out.push(`subscription ${r.subname}`);
  // A rollback window puts a slot and a publication on the target; none may outlive it either.
  for (const r of await target.query(`SELECT slot_name FROM pg_replication_slots`, targetDb)) out.push(`target slot ${r.slot_name}`);
  for (const r of await target.query(`SELECT pubname FROM pg_publication`, targetDb)) out.push(`target publication ${r.pubname}`);
  return out;
}

/** Runs a SQL generator in a loop on its own connection until stopped; stops quietly once the source is read-only. */
export class Writer {
  private running = true;
  private loop?: Promise<void>;
  transactions = 0;
  errors: string[] = [];
  constructor(private uri: string, private sql: (i: number) => string) {}
  start(): this {
    this.loop = (async () => {
      const c = new Client({ connectionString: this.uri });
      c.on("error", () => undefined);
      await c.connect();
      for (let i = 0; this.running; i++) {
        try {
          await c.query(this.sql(i));
          this.transactions++;
        } catch (e) {
          await c.query("ROLLBACK").catch(() => undefined);
          const code = (e as { code?: string }).code;
          // Read-only or our session ended by the freeze: the application is fenced, stop writing.
          if (code === "25006" || code === "57P01" || /terminat|not queryable|ECONNRESET/i.test((e as Error).message)) break;
          this.errors.push((e as Error).message);
        }
        await new Promise((r) => setTimeout(r, 2));
      }
      await c.end().catch(() => undefined);
    })();
    return this;
  }
  async stop(): Promise<void> { this.running = false; await this.loop; }
}

/** Wait until `writer` has committed `n` more transactions: load during a phase, instead of a fixed sleep. */
export async function moreWrites(writer: Writer, n = 50): Promise<void> {
  const from = writer.transactions;
  await until(`the writer to commit ${n} more transactions (errors: ${writer.errors.length})`, () => writer.transactions >= from + n);
}

/** Run ../shared/tools/verify.sh; undefined (with a message) when the checkout has no ../shared. */
export function runVerifySh(src: string, tgt: string, schemas: string[] = []): { code: number; output: string } | undefined {
  if (!fs.existsSync(VERIFY_SH)) {
    console.warn(`skipping verify.sh: ${VERIFY_SH} not found (a clone without ../shared)`);
    return undefined;
  }
  const r = spawnSync("bash", [VERIFY_SH, src, tgt, ...schemas], { encoding: "utf8" });
  return { code: r.status ?? -1, output: (r.stdout ?? "") + (r.stderr ?? "") };
}

/** Debian's PostgreSQL 15 server binaries, where postgresql-15-wal2json installs the plugin (.ci/run installs both). */
export const SYSTEM_PG15 = "/usr/lib/postgresql/15/bin";

/** Why a wal2json source cannot be started here (undefined when it can). */
export function wal2jsonMissing(): string | undefined {
  if (!fs.existsSync(path.join(SYSTEM_PG15, "postgres"))) return `no PostgreSQL 15 server binaries in ${SYSTEM_PG15} (apt-get install postgresql-15)`;
  const lib = pkgLibDir(SYSTEM_PG15);
  if (!lib || !fs.existsSync(path.join(lib, "wal2json.so"))) return `wal2json is not installed for ${SYSTEM_PG15} (apt-get install postgresql-15-wal2json)`;
  return undefined;
}

/**
 * A source server (system PostgreSQL 15) that can load wal2json. Newer Debian builds (15.20) only let the
 * output plugins listed in output_plugin_libraries be used (default pgoutput, test_decoding): wal2json is added
 * when the server has that setting.
 */
export function startWal2jsonSource(): Promise<LocalServer> {
  // Newer minor releases (e.g. Debian's 15.20) only let libraries listed in output_plugin_libraries decode a slot.
  const config = spawnSync(path.join(SYSTEM_PG15, "postgres"), ["--describe-config"], { encoding: "utf8" }).stdout ?? "";
  const settings = /^output_plugin_libraries\t/m.test(config) ? { output_plugin_libraries: "pgoutput, test_decoding, wal2json" } : undefined;
  return LocalServer.start({ major: 15, binDir: SYSTEM_PG15, settings });
}

/**
 * A PostgreSQL 15 source serving TLS with the given certificate and key, and a 17 target, each with database "app".
 * Run as root, the server runs as the OS user postgres, which must own its key.
 */
export async function startTlsServers(crt: string, key: string): Promise<[LocalServer, LocalServer]> {
  if (process.getuid?.() === 0) {
    const id = (flag: string) => Number(spawnSync("id", [flag, "postgres"], { encoding: "utf8" }).stdout);
    fs.chownSync(key, id("-u"), id("-g")); fs.chownSync(crt, id("-u"), id("-g"));
  }
  const [src, tgt] = await startServerSet([{ major: 15, settings: { ssl: "on", ssl_cert_file: crt, ssl_key_file: key } }, { major: 17 }]);
  await src.createDatabase("app");
  await tgt.createDatabase("app");
  return [src, tgt];
}
