/**
 * Cutover downtime benchmark (not a test): a synthetic schema-size test. N generated tables (default 2,000),
 * each with a serial key, a foreign key to another table, two secondary indexes and 50–200 rows, migrated
 * PostgreSQL 15 → 17 in each CDC mode, then cut over with --freeze-writes and the default verification gate
 * (row counts of every table, content hashes of the tables written during CDC). A few tables are written while
 * streaming so the gate has something to hash. Prints the application's downtime (writes stopped → Completed)
 * with its breakdown, and beside it what start spent on the foreign keys while streaming (work the freeze
 * held before).
 *
 *   node dist/bench/cutover.js [--tables 2000] [--written 20] [--modes subscription,stream] [--json]
 */
import { Command } from "commander";
import { LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, cutoverMigration, migrationOptions, parseEndpoint, startMigration } from "../provider/engine";
import { formatTimings } from "../provider/cli/output";

const opts = new Command("cutover")
  .option("--tables <n>", "generated tables (serial key + FK + 2 indexes, 50-200 rows each)", (v) => Number(v), 2000)
  .option("--written <n>", "tables written while streaming (hashed by the gate)", (v) => Number(v), 20)
  .option("--modes <list>", "CDC modes to cut over", "subscription,stream")
  .option("--json", "print JSON")
  .parse(process.argv).opts();

const log = (s: string) => { if (!opts.json) process.stderr.write(`[cutover] ${s}\n`); };
const secs = (ms?: number) => ms === undefined ? "-" : (ms / 1000).toFixed(2);

/** t_i references t_(i/2) (t_0 itself): every key has a parent table with rows 1..50 at least. */
function schemaSql(from: number, to: number): string {
  return `DO $$ BEGIN FOR i IN ${from}..${to - 1} LOOP
    EXECUTE format('CREATE TABLE t_%s (id serial PRIMARY KEY, ref int REFERENCES t_%s (id), a int NOT NULL, b text NOT NULL)', i, i / 2);
    EXECUTE format('CREATE INDEX ON t_%s (a)', i);
    EXECUTE format('CREATE INDEX ON t_%s (b)', i);
    EXECUTE format('INSERT INTO t_%s (ref, a, b) SELECT CASE WHEN %s = 0 THEN NULL ELSE 1 + g %% 50 END, g * 7 %% 1000, md5(g::text) FROM generate_series(1, %s) g',
      i, i, 50 + (i * 37) % 151);
  END LOOP; END $$`;
}

async function main() {
  const modes = String(opts.modes).split(",").map((x) => x.trim()) as ("subscription" | "stream")[];
  log(`synthetic schema-size test: ${opts.tables} generated tables (serial key + FK + 2 indexes each, 50-200 rows), PostgreSQL 15 -> 17; ` +
    `one run on a shared machine: figures vary between runs`);
  const [src, tgt] = await Promise.all([LocalServer.start({ major: 15 }), LocalServer.start({ major: 17 })]);
  const stopAll = () => Promise.all([src.stop(), tgt.stop()]);
  process.once("SIGINT", () => { void stopAll().finally(() => process.exit(130)); });
  const results: Record<string, unknown>[] = [];
  try {
    for (const mode of modes) {
      const db = `cut_${mode}`;
      await src.createDatabase(db);
      await tgt.createDatabase(db);
      const tGen = Date.now();
      // In transactions of 100 tables: one for all would need more locks than max_locks_per_transaction allows.
      for (let i = 0; i < opts.tables; i += 100) await src.query(schemaSql(i, Math.min(opts.tables, i + 100)), db);
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
      const cut = await cutoverMigration(source, target, { name: db, freezeWrites: true, timeoutSec: 300, jobs: 2, graceSec: 1 });
      const row = { mode, tables: opts.tables, startSeconds: startMs / 1000, foreignKeysWhileStreamingSeconds: fkMs === undefined ? null : fkMs / 1000,
        downtimeSeconds: (cut.downtimeMs ?? NaN) / 1000, breakdown: cut.timings ? formatTimings(cut.timings) : "", timings: cut.timings,
        sequencesSynced: cut.sequencesSynced, heldBackApplied: cut.heldBackApplied, verification: cut.verification };
      results.push(row);
      log(`${mode}: cutover downtime ${secs(cut.downtimeMs)} s (${row.breakdown}); ${cut.sequencesSynced} sequences synced, ` +
        `${cut.heldBackApplied} held-back objects applied at cutover; gate: ${cut.verification?.tables} tables counted, ${cut.verification?.hashedTables} hashed`);
      await cleanupMigration(source, target, db);
    }
  } finally {
    await stopAll();
  }
  if (opts.json) process.stdout.write(JSON.stringify({ benchmark: "cutover", synthetic: true, results }, null, 2) + "\n");
  else {
    console.log(`\ncutover downtime, synthetic schema-size test (${opts.tables} generated tables, serial key + FK + 2 indexes, 50-200 rows; one run, shared machine)`);
    for (const r of results) {
      console.log(`  ${String(r.mode).padEnd(12)} downtime ${(r.downtimeSeconds as number).toFixed(2)} s  [${r.breakdown}]  ` +
        `start ${(r.startSeconds as number).toFixed(1)} s incl. foreign keys while streaming ${r.foreignKeysWhileStreamingSeconds === null ? "-" : (r.foreignKeysWhileStreamingSeconds as number).toFixed(1)} s`);
    }
  }
}

main().catch((e) => { process.stderr.write(`${e.stack ?? e}\n`); process.exit(1); });
