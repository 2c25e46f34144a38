/**
 * Cutover downtime benchmark (not a test): a synthetic schema-size test. N generated tables (default 2,000),
 * each with a serial key, a foreign key to another table, two secondary indexes and 50–200 rows, migrated
 * PostgreSQL 15 → 17 in each CDC mode, then cut over with --freeze-writes and the default verification gate
 * (row counts of every table, content hashes of the tables written during CDC). A few tables are written while
 * streaming so the gate has something to hash. Prints the application's downtime (writes stopped → Completed)
 * with its breakdown, and beside it what start spent on the foreign keys while streaming (work the freeze
 * held before).
 *
 * Second dataset: pgbench's own schema and data (`pgbench -i -s 100`, 10M accounts, server-side generated),
 * migrated in each mode and cut over while pgbench's TPC-B-like transactions run at a fixed rate (`-R 1000`) during
 * CDC and the cutover; in stream mode a `pgferry agent` process follows, as in production.
 *
 *   node dist/bench/cutover.js [--tables 2000] [--written 20] [--pgbench-scale 100] [--tps 1000]
 *                              [--modes subscription,stream] [--gates by-key,whole] [--json]
 * (--gates: the gate's check of tables written through the warm-up, each a migration of its own: by the keys changed since
 *  the pre-check, the default, or hashed whole at the fence as before; both side by side for a ratio within one run)
 * (--tables 0 or --pgbench-scale 0 skips that dataset)
 */
import { spawn, spawnSync } from "child_process";
import * as path from "path";
import { Command } from "commander";
import { LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, cutoverMigration, migrationOptions, parseEndpoint, startMigration } from "../provider/engine";
import { formatTimings } from "../provider/cli/output";
import { manyTablesSql } from "./datasets";

const opts = new Command("cutover")
  .option("--tables <n>", "generated tables (serial key + FK + 2 indexes, 50-200 rows each)", (v) => Number(v), 2000)
  .option("--written <n>", "tables written while streaming (hashed by the gate)", (v) => Number(v), 20)
  .option("--pgbench-scale <n>", "pgbench -i -s N dataset cut over under load (0 skips it)", (v) => Number(v), 100)
  .option("--tps <n>", "pgbench rate (-R) during CDC and the cutover of the pgbench dataset", (v) => Number(v), 1000)
  .option("--modes <list>", "CDC modes to cut over", "subscription,stream")
  .option("--gates <list>", "pgbench dataset: the gate's check of busy tables, by-key (default) and/or whole", "by-key")
  .option("--json", "print JSON")
  .parse(process.argv).opts();

const log = (s: string) => { if (!opts.json) process.stderr.write(`[cutover] ${s}\n`); };
const secs = (ms?: number) => ms === undefined ? "-" : (ms / 1000).toFixed(2);


async function main() {
  const modes = String(opts.modes).split(",").map((x) => x.trim()) as ("subscription" | "stream")[];
  log(`synthetic schema-size test: ${opts.tables} generated tables (serial key + FK + 2 indexes each, 50-200 rows), PostgreSQL 15 -> 17; ` +
    `one run on a shared machine: figures vary between runs`);
  const [src, tgt] = await Promise.all([LocalServer.start({ major: 15 }), LocalServer.start({ major: 17 })]);
  const stopAll = () => Promise.all([src.stop(), tgt.stop()]);
  process.once("SIGINT", () => { void stopAll().finally(() => process.exit(130)); });
  const results: Record<string, unknown>[] = [];
  const pgbenchResults: Record<string, unknown>[] = [];
  try {
    for (const mode of opts.tables > 0 ? modes : []) {
      const db = `cut_${mode}`;
      await src.createDatabase(db);
      await tgt.createDatabase(db);
      const tGen = Date.now();
      // In transactions of 100 tables: one for all would need more locks than max_locks_per_transaction allows.
      for (let i = 0; i < opts.tables; i += 100) await src.query(manyTablesSql(i, Math.min(opts.tables, i + 100)), db);
      await src.query(`VACUUM ANALYZE`, db);
      log(`${mode}: generated ${opts.tables} tables in ${secs(Date.now() - tGen)} s`);
      const source = parseEndpoint(src.uri(db), "source"), target = parseEndpoint(tgt.uri(db), "target");
      let fkStarted: number | undefined;
      const tStart = Date.now();
      const started = await startMigration(source, target, migrationOptions({ name: db, mode, jobs: 2 }), (e) => {
        if (e.type === "schema" && e.section === "cutover" && fkStarted === undefined) fkStarted = Date.now(); // first key applied
      });
      // From the first key applied (its own time is left out: under a millisecond) to the end of start.
      const startMs = Date.now() - tStart, fkMs = fkStarted ? Date.now() - fkStarted : undefined;
      log(`${mode}: start ${secs(startMs)} s, of which foreign keys while streaming ${secs(fkMs)} s (${started.foreignKeys?.applied ?? 0} steps, ` +
        `${started.foreignKeys?.deferred.length ?? 0} left for the cutover)`);
      // Writes while streaming: the gate hashes these tables at the fence.
      for (let i = 0; i < Math.min(opts.written, opts.tables); i++) {
        const t = Math.floor((i * opts.tables) / Math.max(1, opts.written));
        await src.query(`INSERT INTO t_${t} (ref, a, b) VALUES (${t === 0 ? "NULL" : 1}, 1, 'cdc'); UPDATE t_${t} SET a = a + 1 WHERE id <= 10`, db);
      }
      // Every step's wall time (from the previous step's end), so what lies between the recorded timings shows too.
      const stepMs: [string, number][] = [];
      let stepEnd = Date.now();
      const cut = await cutoverMigration(source, target, { name: db, freezeWrites: true, timeoutSec: 300, jobs: 2, graceSec: 1,
        afterStep: async (step) => { const now = Date.now(); stepMs.push([step, now - stepEnd]); stepEnd = now; } });
      const steps = stepMs.map(([s, ms]) => `${s} ${secs(ms)}`).join(", ");
      const row = { mode, tables: opts.tables, steps: Object.fromEntries(stepMs), startSeconds: startMs / 1000, foreignKeysWhileStreamingSeconds: fkMs === undefined ? null : fkMs / 1000,
        downtimeSeconds: (cut.downtimeMs ?? NaN) / 1000, breakdown: cut.timings ? formatTimings(cut.timings) : "", timings: cut.timings,
        sequencesSynced: cut.sequencesSynced, heldBackApplied: cut.heldBackApplied, verification: cut.verification };
      results.push(row);
      log(`${mode}: cutover downtime ${secs(cut.downtimeMs)} s (${row.breakdown}); ${cut.sequencesSynced} sequences synced, ` +
        `${cut.heldBackApplied} held-back objects applied at cutover; gate: ${cut.verification?.tables} tables counted, ${cut.verification?.hashedTables} hashed, ` +
        `${cut.verification?.preChecked ?? "-"} compared while streaming and not read again`);
      log(`${mode}: per step (s): ${steps}`);
      await cleanupMigration(source, target, db);
    }
    if (opts.pgbenchScale > 0) pgbenchResults.push(...await pgbenchDataset(src, tgt, modes));
  } finally {
    await stopAll();
  }
  if (opts.json) process.stdout.write(JSON.stringify({ benchmark: "cutover", synthetic: true, results, pgbench: pgbenchResults }, null, 2) + "\n");
  else {
    if (results.length) console.log(`\ncutover downtime, synthetic schema-size test (${opts.tables} generated tables, serial key + FK + 2 indexes, 50-200 rows; one run, shared machine)`);
    for (const r of results) {
      console.log(`  ${String(r.mode).padEnd(12)} downtime ${(r.downtimeSeconds as number).toFixed(2)} s  [${r.breakdown}]  ` +
        `start ${(r.startSeconds as number).toFixed(1)} s incl. foreign keys while streaming ${r.foreignKeysWhileStreamingSeconds === null ? "-" : (r.foreignKeysWhileStreamingSeconds as number).toFixed(1)} s`);
    }
    if (pgbenchResults.length) console.log(`\ncutover downtime, pgbench -i -s ${opts.pgbenchScale} under pgbench -R ${opts.tps} (TPC-B-like, 4 clients) during CDC and the cutover ` +
      `(--freeze-writes, default gate; one run, shared machine)`);
    for (const r of pgbenchResults) {
      console.log(`  ${String(r.mode).padEnd(12)} gate ${String(r.gate).padEnd(6)} downtime ${(r.downtimeSeconds as number).toFixed(2)} s  [${r.breakdown}]  pgbench reached ${(r.achievedTps as number).toFixed(0)} tps ` +
        `before the cutover; gate: ${(r.verification as { tables: number })?.tables} tables counted, ${(r.verification as { hashedTables: number })?.hashedTables} hashed` +
        `${(r.verification as any)?.byKey ? `; by key: ${(r.verification as any).byKey.tables.map((t: any) => `${t.table} ${t.keys} keys`).join(", ")}; ` +
          `fence part ${(r.verification as any).byKey.seconds?.toFixed(2)} s; hashed whole: ${(r.verification as any).byKey.fallback.map((t: any) => `${t.table} (${t.reason})`).join(", ") || "none"}` : ""}`);
    }
  }
}

/** pgbench's binary: Debian's PostgreSQL 15 client, else one on PATH. */
function pgbenchBin(): string {
  for (const p of ["/usr/lib/postgresql/15/bin/pgbench", "/usr/lib/postgresql/17/bin/pgbench"]) {
    if (spawnSync(p, ["--version"]).status === 0) return p;
  }
  return "pgbench";
}

/**
 * pgbench -i -s N on the source (generated once, copied per mode by CREATE DATABASE … TEMPLATE), migrated, then cut over
 * while pgbench -R tps writes; the load runs from before the cutover starts until the freeze stops it.
 */
async function pgbenchDataset(src: LocalServer, tgt: LocalServer, modes: ("subscription" | "stream")[]): Promise<Record<string, unknown>[]> {
  const bin = pgbenchBin();
  const env = { ...process.env, PGPASSWORD: src.password };
  const conn = (db: string) => ["-h", "127.0.0.1", "-p", String(src.port), "-U", "postgres", db];
  const tInit = Date.now();
  await src.createDatabase("pgb_template");
  const init = spawnSync(bin, ["-i", "-q", "-I", "dtGvp", "-s", String(opts.pgbenchScale), ...conn("pgb_template")], { env, encoding: "utf8" });
  if (init.status !== 0) throw new Error(`pgbench -i failed: ${init.stderr}`);
  log(`pgbench -i -s ${opts.pgbenchScale} (${bin}) in ${secs(Date.now() - tInit)} s`);
  const out: Record<string, unknown>[] = [];
  const gates = String(opts.gates).split(",").map((x) => x.trim());
  for (const [mode, gate] of modes.flatMap((m) => gates.map((g) => [m, g] as const))) {
    const db = `pgb_${mode}_${gate.replace("-", "")}`;
    await src.query(`CREATE DATABASE ${db} TEMPLATE pgb_template`);
    await tgt.createDatabase(db);
    const source = parseEndpoint(src.uri(db), "source"), target = parseEndpoint(tgt.uri(db), "target");
    const tStart = Date.now();
    // pgbench_history has no key: REPLICA IDENTITY FULL, as a user of pgbench's schema would choose.
    await startMigration(source, target, migrationOptions({ name: db, mode, jobs: 2, replicaIdentityFull: true }));
    const startMs = Date.now() - tStart;
    log(`${mode}: pgbench -s ${opts.pgbenchScale} start ${secs(startMs)} s`);
    const agent = mode === "stream" ? spawn(process.execPath, [path.join(__dirname, "../provider/cli/main.js"), "agent", "--name", db], {
      env: { ...process.env, PGFERRY_SOURCE: src.uri(db), PGFERRY_TARGET: tgt.uri(db) }, stdio: "ignore",
    }) : undefined;
    const agentExit = agent ? new Promise((r) => agent.once("exit", r)) : undefined;
    let pbOut = "";
    const pb = spawn(bin, ["-n", "-c", "4", "-j", "2", "-R", String(opts.tps), "-T", "600", "-b", "tpcb-like", ...conn(db)], { env, stdio: ["ignore", "pipe", "pipe"] });
    pb.stdout!.on("data", (d) => { pbOut += d; });
    pb.stderr!.on("data", (d) => { pbOut += d; });
    const pbExit = new Promise((r) => pb.once("exit", r));
    try {
      // CDC under load for a while (the gate's pre-check and the warm-up run under it too).
      const commits = async () => Number((await src.query(`SELECT xact_commit::text AS n FROM pg_stat_database WHERE datname = '${db}'`))[0].n);
      await new Promise((r) => setTimeout(r, 3000));
      const before = await commits(), tLoad = Date.now();
      await new Promise((r) => setTimeout(r, 12000));
      const achieved = (await commits() - before) / ((Date.now() - tLoad) / 1000); // the rate reached, in the 12 s before the cutover
      // Every step's wall time (from the previous step's end): where the downtime goes.
      const stepMs: [string, number][] = [];
      let stepEnd = Date.now();
      const cut = await cutoverMigration(source, target, { name: db, freezeWrites: true, timeoutSec: 300, jobs: 2, graceSec: 1,
        gateByKey: gate !== "whole", onProgress: (m) => log(`${mode}/${gate}: ${m}`),
        afterStep: async (step) => { const now = Date.now(); stepMs.push([step, now - stepEnd]); stepEnd = now; } });
      log(`${mode}/${gate}: per step (s): ${stepMs.map(([s, ms]) => `${s} ${secs(ms)}`).join(", ")}`);
      const row = { mode, gate, dataset: `pgbench -i -s ${opts.pgbenchScale}`, tps: opts.tps, achievedTps: achieved, startSeconds: startMs / 1000,
        downtimeSeconds: (cut.downtimeMs ?? NaN) / 1000, breakdown: cut.timings ? formatTimings(cut.timings) : "", timings: cut.timings, verification: cut.verification,
        steps: Object.fromEntries(stepMs) };
      out.push(row);
      log(`${mode}/${gate}: pgbench cutover downtime ${secs(cut.downtimeMs)} s (${row.breakdown}); gate: ${cut.verification?.tables} tables counted, ` +
        `${cut.verification?.hashedTables} hashed, ${cut.verification?.preChecked ?? "-"} compared while streaming and not read again`);
      if (cut.undoFreezeSql.length) await src.query(cut.undoFreezeSql.join("\n"), db);
    } finally {
      pb.kill("SIGINT");
      await pbExit;
      if (agent) {
        const t = setTimeout(() => agent.kill("SIGTERM"), 30000); // it exits by itself once the cutover is done
        await agentExit;
        clearTimeout(t);
      }
    }
    await cleanupMigration(source, target, db);
    await src.query(`DROP DATABASE ${db}`);
    await tgt.query(`DROP DATABASE ${db}`);
  }
  return out;
}

main().catch((e) => { process.stderr.write(`${e.stack ?? e}\n`); process.exit(1); });
