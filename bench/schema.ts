/**
 * Schema-heavy databases (not a test): `pgferry start` until it streams, beside `pg_dump -Fc | pg_restore` of the
 * same database into another database of the same target server, in the same run, PostgreSQL 15 → 17:
 *  - PostgreSQL's regression database (scripts/build-regress-db.sh builds it into .cache/regress; the source is
 *    Debian's PostgreSQL 15 so the suite's C functions load; skipped with the reason when it is not built);
 *  - N generated tables (default 2,000: serial key + foreign key + 2 indexes, 50–200 rows each, as bench/cutover.ts).
 * Prints seconds and the ratio pgferry / pg_dump|pg_restore (below 1: pgferry is faster); with --runs N each runs N times,
 * alternating, and the best of each is kept.
 *
 *   node dist/bench/schema.js [--tables 2000] [--no-regress] [--mode stream] [--jobs 2] [--runs 1] [--events] [--json]
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Command } from "commander";
import { LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, migrationOptions, parseEndpoint, startMigration } from "../provider/engine";
import { manyTablesSql } from "./datasets";

const opts = new Command("schema")
  .option("--tables <n>", "generated tables (0 skips them)", (v) => Number(v), 2000)
  .option("--no-regress", "skip the regression database")
  .option("--mode <mode>", "CDC mode of pgferry's start", "stream")
  .option("--jobs <n>", "pgferry's --jobs", (v) => Number(v), 2)
  .option("--runs <n>", "runs of each, alternating; the best of each is kept (the machine is shared)", (v) => Number(v), 1)
  .option("--events", "print pgferry's events with the seconds since its start (where the time goes)")
  .option("--json", "print JSON")
  .parse(process.argv).opts();

const log = (s: string) => { if (!opts.json) process.stderr.write(`[schema] ${s}\n`); };
const PG15 = "/usr/lib/postgresql/15/bin";
const REGRESS = path.resolve(__dirname, "../../.cache/regress");
const secs = (ms: number) => (ms / 1000).toFixed(2);

function run(cmd: string, args: string[], password: string): { code: number; out: string } {
  const r = spawnSync(cmd, args, { encoding: "utf8", env: { ...process.env, PGPASSWORD: password }, maxBuffer: 64 << 20 });
  return { code: r.status ?? -1, out: `${r.stdout ?? ""}${r.stderr ?? ""}` };
}

function regressMissing(): string | undefined {
  if (!opts.regress) return "--no-regress";
  if (!fs.existsSync(path.join(PG15, "postgres"))) return `no Debian PostgreSQL 15 in ${PG15}`;
  if (!fs.existsSync(path.join(REGRESS, "COMPLETE"))) return `not built in ${REGRESS} (bash scripts/build-regress-db.sh)`;
  return undefined;
}

/** `pg_dump -Fc | pg_restore` (Debian's 15 client programs), source database into an empty target database. */
function dumpRestore(src: LocalServer, db: string, tgt: LocalServer, into: string): number {
  const t = Date.now();
  const r = spawnSync("bash", ["-o", "pipefail", "-c", `"${PG15}/pg_dump" -Fc -d "$SRC" | "${PG15}/pg_restore" --exit-on-error -d "$TGT"`],
    { encoding: "utf8", env: { ...process.env, SRC: src.uri(db), TGT: tgt.uri(into) } });
  if (r.status !== 0) throw new Error(`pg_dump | pg_restore of ${db} failed: ${r.stderr}`);
  return Date.now() - t;
}

async function pgferryStart(src: LocalServer, db: string, tgt: LocalServer, into: string, exclude: string[] = []): Promise<number> {
  const t = Date.now();
  const r = await startMigration(parseEndpoint(src.uri(db), "source"), parseEndpoint(tgt.uri(into), "target"),
    migrationOptions({ name: into, mode: opts.mode, jobs: opts.jobs, replicaIdentityFull: true, exclude }),
    (e) => { if (opts.events) log(`  +${((Date.now() - t) / 1000).toFixed(2)} s ${JSON.stringify(e).slice(0, 160)}`); });
  const ms = Date.now() - t;
  if (r.phase !== "ReadyToCutover") throw new Error(`start of ${db} did not reach streaming: ${JSON.stringify(r).slice(0, 2000)}`);
  return ms;
}


interface Row { data: string; pgferrySeconds: number; pgDumpRestoreSeconds: number; ratio: number }

async function main() {
  const missing = regressMissing();
  if (missing) log(`regression database skipped: ${missing}`);
  log(`pgferry start (mode ${opts.mode}, jobs ${opts.jobs}, until streaming) beside pg_dump -Fc | pg_restore, PostgreSQL 15 -> 17; ` +
    `one run on a shared machine: figures vary between runs`);
  const [src, tgt] = await Promise.all([
    LocalServer.start({ major: 15, binDir: missing ? undefined : PG15, settings: { max_wal_senders: 20, max_replication_slots: 20 } }),
    LocalServer.start({ major: 17 }),
  ]);
  const stopAll = () => Promise.all([src.stop(), tgt.stop()]);
  process.once("SIGINT", () => { void stopAll().finally(() => process.exit(130)); });
  const rows: Row[] = [];
  const measure = async (data: string, db: string, exclude: string[] = []) => {
    let dumpMs = Infinity, startMs = Infinity;
    for (let run = 0; run < Math.max(1, opts.runs); run++) {
      const [d, p] = [`${db}_dump${run}`, `${db}_pgferry${run}`];
      await tgt.createDatabase(d);
      await tgt.createDatabase(p);
      const dm = dumpRestore(src, db, tgt, d);
      const sm = await pgferryStart(src, db, tgt, p, exclude);
      log(`${data}, run ${run + 1}: pgferry start ${secs(sm)} s, pg_dump -Fc | pg_restore ${secs(dm)} s: ${(sm / dm).toFixed(2)}x`);
      [dumpMs, startMs] = [Math.min(dumpMs, dm), Math.min(startMs, sm)];
      await cleanupMigration(parseEndpoint(src.uri(db), "source"), parseEndpoint(tgt.uri(p), "target"), p);
      await tgt.query(`DROP DATABASE "${d}"`);
      await tgt.query(`DROP DATABASE "${p}"`);
    }
    rows.push({ data, pgferrySeconds: startMs / 1000, pgDumpRestoreSeconds: dumpMs / 1000, ratio: startMs / dumpMs });
  };
  try {
    if (!missing) {
      // The roles the suite leaves, on both servers (a DBA's step before any migration), then the database itself.
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pgferry-schema-"));
      const roles = path.join(dir, "roles.sql");
      fs.writeFileSync(roles, fs.readFileSync(path.join(REGRESS, "globals.sql"), "utf8").split("\n")
        .filter((l) => !/^(CREATE|ALTER) ROLE postgres[ ;]/.test(l)).join("\n"));
      for (const s of [src, tgt]) {
        const r = run(path.join(PG15, "psql"), ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", s.uri("postgres"), "-f", roles], s.password);
        if (r.code !== 0) throw new Error(`creating the regression suite's roles failed: ${r.out}`);
      }
      fs.rmSync(dir, { recursive: true, force: true });
      const r = run(path.join(PG15, "pg_restore"), ["--create", "--exit-on-error", "-d", src.uri("postgres"), path.join(REGRESS, "regression.dump")], src.password);
      if (r.code !== 0) throw new Error(`pg_restore of the regression database failed: ${r.out}`);
      // As test/conformance.regress.test.ts: the source adjusted the way PostgreSQL's own cross-version upgrade test adjusts it.
      const allowed = JSON.parse(fs.readFileSync(path.resolve(__dirname, "../../test/conformance/allowed-differences.json"), "utf8"));
      for (const a of allowed.adjustBeforeMigration?.["17"] ?? []) await src.query(a.sql, "regression");
      const rels = (await src.query(`SELECT count(*)::int AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'`, "regression"))[0].n;
      await measure(`regression database (${rels} relations)`, "regression",
        opts.mode === "subscription" ? allowed.excludeInMode?.subscription?.tables ?? [] : []);
    }
    if (opts.tables > 0) {
      await src.createDatabase("gen");
      for (let i = 0; i < opts.tables; i += 100) await src.query(manyTablesSql(i, Math.min(opts.tables, i + 100)), "gen");
      await src.query(`VACUUM ANALYZE`, "gen");
      await measure(`${opts.tables} generated tables (serial key + FK + 2 indexes, 50-200 rows)`, "gen");
    }
  } finally {
    await stopAll();
  }
  if (opts.json) process.stdout.write(JSON.stringify({ benchmark: "schema", results: rows }, null, 2) + "\n");
  else {
    console.log(`\nschema-heavy start (PostgreSQL 15 -> 17, pgferry mode ${opts.mode} until streaming vs pg_dump -Fc | pg_restore; ` +
      `best of ${Math.max(1, opts.runs)} run(s) each, shared machine)`);
    for (const r of rows) {
      console.log(`  ${r.data.padEnd(62)} pgferry ${r.pgferrySeconds.toFixed(1).padStart(6)} s   pg_dump|pg_restore ${r.pgDumpRestoreSeconds.toFixed(1).padStart(6)} s   ` +
        `ratio ${r.ratio.toFixed(2)}x`);
    }
  }
}

main().catch((e) => { process.stderr.write(`${e.stack ?? e}\n`); process.exit(1); });
