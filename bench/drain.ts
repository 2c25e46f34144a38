/**
 * CDC drain benchmark (not a test): the same backlog of pgbench-style transactions, applied once by a
 * native subscription (mode subscription) and once by pgferry's stream applier (mode stream), into two
 * target databases on the same servers, in the same run. Prints changes/s for each and the ratio.
 *
 *   node dist/bench/drain.js [--accounts 200000] [--transactions 20000] [--clients 4] [--json]
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Session } from "inspector";
import { Command } from "commander";
import { LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, lsnToBigInt, migrationOptions, parseEndpoint, startMigration } from "../provider/engine";
import { StreamApplier } from "../provider/engine/stream";

const opts = new Command("drain")
  .option("--accounts <n>", "rows in the accounts table", (v) => Number(v), 200000)
  .option("--transactions <n>", "backlog transactions (each: 3 updates + 1 insert)", (v) => Number(v), 20000)
  .option("--clients <n>", "pgbench clients writing the backlog", (v) => Number(v), 4)
  .option("--json", "print JSON")
  .option("--profile <file>", "write a V8 CPU profile of the stream drain (open in Chrome DevTools)")
  .parse(process.argv).opts();

const log = (s: string) => { if (!opts.json) process.stderr.write(`[drain] ${s}\n`); };

async function main() {
  const [src, tgt] = await Promise.all([LocalServer.start({ major: 15 }), LocalServer.start({ major: 17 })]);
  const stopAll = () => Promise.all([src.stop(), tgt.stop()]);
  process.once("SIGINT", () => { void stopAll().finally(() => process.exit(130)); });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pgferry-drain-"));
  try {
    await src.createDatabase("bench");
    await tgt.createDatabase("native");
    await tgt.createDatabase("stream");
    await src.query(`CREATE TABLE branches (bid int PRIMARY KEY, bbalance int NOT NULL DEFAULT 0);
      CREATE TABLE tellers (tid int PRIMARY KEY, bid int NOT NULL, tbalance int NOT NULL DEFAULT 0);
      CREATE TABLE accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL DEFAULT 0, filler char(84));
      CREATE TABLE history (hid bigserial PRIMARY KEY, tid int, bid int, aid int, delta int, mtime timestamptz);
      INSERT INTO branches SELECT g FROM generate_series(1, 10) g;
      INSERT INTO tellers SELECT g, 1 + g % 10 FROM generate_series(1, 100) g;
      INSERT INTO accounts (aid, bid) SELECT g, 1 + g % 10 FROM generate_series(1, ${opts.accounts}) g;`, "bench");
    await src.query(`VACUUM ANALYZE`, "bench");
    const source = parseEndpoint(src.uri("bench"), "source");
    log("starting both migrations (load, then CDC)");
    await startMigration(source, parseEndpoint(tgt.uri("native"), "target"), migrationOptions({ name: "native", mode: "subscription", jobs: 2 }));
    await tgt.query(`ALTER SUBSCRIPTION pgferry_native DISABLE`, "native"); // hold the backlog in its slot too
    await startMigration(source, parseEndpoint(tgt.uri("stream"), "target"), migrationOptions({ name: "stream", mode: "stream", jobs: 2 }));

    // The TPC-B-like transaction pgbench runs by default, as a script (pgbench -i is not used: our schema).
    const script = path.join(dir, "tpcb.sql");
    fs.writeFileSync(script, `\\set aid random(1, ${opts.accounts})\n\\set bid random(1, 10)\n\\set tid random(1, 100)\n\\set delta random(-5000, 5000)
BEGIN;
UPDATE accounts SET abalance = abalance + :delta WHERE aid = :aid;
UPDATE tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
`);
    log(`writing the backlog: ${opts.transactions} transactions with pgbench (${opts.clients} clients)`);
    const perClient = Math.ceil(opts.transactions / opts.clients);
    const pb = spawnSync("pgbench", ["-n", "-c", String(opts.clients), "-j", "2", "-t", String(perClient), "-f", script,
      "-h", "127.0.0.1", "-p", String(src.port), "-U", "postgres", "bench"], { encoding: "utf8", env: { ...process.env, PGPASSWORD: src.password } });
    if (pb.status !== 0) throw new Error(`pgbench failed: ${pb.stderr}`);
    const transactions = perClient * opts.clients, changes = transactions * 4;
    const end = (await src.query(`SELECT pg_current_wal_lsn()::text AS l`, "bench"))[0].l as string;

    log("draining with the native subscription");
    const n0 = Date.now();
    await tgt.query(`ALTER SUBSCRIPTION pgferry_native ENABLE`, "native");
    for (;;) {
      const r = await src.query(`SELECT confirmed_flush_lsn::text AS l FROM pg_replication_slots WHERE slot_name = 'pgferry_native'`, "bench");
      if (lsnToBigInt(r[0].l) >= lsnToBigInt(end)) break;
      await new Promise((res) => setTimeout(res, 20));
    }
    const nativeSec = (Date.now() - n0) / 1000;

    log("draining with pgferry's stream applier");
    const profiler = opts.profile ? await startProfile() : undefined;
    const s0 = Date.now(), cpu0 = process.cpuUsage();
    await new StreamApplier(source, parseEndpoint(tgt.uri("stream"), "target"),
      { migration: "stream", slot: "pgferry_stream", publication: "pgferry_stream", until: lsnToBigInt(end) }).run();
    const streamSec = (Date.now() - s0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const streamCpuSec = (cpu.user + cpu.system) / 1e6;
    if (profiler) fs.writeFileSync(opts.profile, JSON.stringify(await profiler()));

    const check = async (db: string) => (await tgt.query(`SELECT count(*)::int AS n, sum(abalance)::bigint AS s FROM accounts`, db))[0];
    const want = (await src.query(`SELECT count(*)::int AS n, sum(abalance)::bigint AS s FROM accounts`, "bench"))[0];
    const [nat, str] = [await check("native"), await check("stream")];
    if (JSON.stringify(nat) !== JSON.stringify(want) || JSON.stringify(str) !== JSON.stringify(want)) {
      throw new Error(`drained targets differ from the source: source ${JSON.stringify(want)}, native ${JSON.stringify(nat)}, stream ${JSON.stringify(str)}`);
    }
    await cleanupMigration(source, parseEndpoint(tgt.uri("native"), "target"), "native");
    await cleanupMigration(source, parseEndpoint(tgt.uri("stream"), "target"), "stream");

    const result = {
      backlog: { transactions, changes },
      native: { seconds: nativeSec, changesPerSecond: Math.round(changes / nativeSec) },
      stream: { seconds: streamSec, changesPerSecond: Math.round(changes / streamSec), nodeCpuSeconds: streamCpuSec },
      streamVsNative: nativeSec / streamSec,
    };
    if (opts.json) process.stdout.write(JSON.stringify(result, null, 2) + "\n");
    else {
      process.stdout.write(`backlog: ${transactions} transactions, ${changes} row changes (PostgreSQL 15 → 17)\n` +
        `native subscription  ${nativeSec.toFixed(2)} s  ${result.native.changesPerSecond} changes/s\n` +
        `pgferry stream       ${streamSec.toFixed(2)} s  ${result.stream.changesPerSecond} changes/s (pgferry process CPU ${streamCpuSec.toFixed(2)} s)\n` +
        `stream drains at ${result.streamVsNative.toFixed(2)}× the native subscription's rate\n`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    await stopAll();
  }
}

/** CPU profile of one phase only (node --cpu-prof would mix in the load and both servers' setup). */
async function startProfile(): Promise<() => Promise<unknown>> {
  const session = new Session();
  session.connect();
  const post = (method: string) => new Promise<unknown>((res, rej) => session.post(method, (e, r) => (e ? rej(e) : res(r))));
  await post("Profiler.enable");
  await post("Profiler.start");
  return async () => ((await post("Profiler.stop")) as { profile: unknown }).profile;
}

main().catch((e) => { console.error(e); process.exitCode = 1; });
