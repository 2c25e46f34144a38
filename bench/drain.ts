/**
 * CDC benchmark (not a test), both CDC modes side by side on the same servers, in the same run:
 *  (a) drain: the same backlog of pgbench-style transactions, applied once by a native subscription
 *      (mode subscription) and once by pgferry's stream applier (mode stream), into two target
 *      databases; changes/s for each and the ratio;
 *  (b) steady state: pgbench writes at a fixed rate while the subscription and a `pgferry agent`
 *      process follow; a heartbeat row updated every 100 ms on the source is polled on each target,
 *      so the lag is what a reader of the target sees (seconds), beside the slot's lag in bytes.
 *
 *   node dist/bench/drain.js [--accounts 200000] [--transactions 20000] [--clients 4]
 *                            [--rate 1000] [--seconds 20] [--json] [--profile FILE]
 */
import { spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Session } from "inspector";
import { Command } from "commander";
import { Client } from "pg";
import { LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, cutoverMigration, lsnToBigInt, migrationOptions, parseEndpoint, startMigration } from "../provider/engine";
import { formatTimings } from "../provider/cli/output";
import { StreamApplier } from "../provider/engine/cdc/stream/stream";

const opts = new Command("drain")
  .option("--accounts <n>", "rows in the accounts table", (v) => Number(v), 200000)
  .option("--transactions <n>", "backlog transactions (each: 3 updates + 1 insert)", (v) => Number(v), 20000)
  .option("--clients <n>", "pgbench clients writing the backlog", (v) => Number(v), 4)
  .option("--rate <tps>", "steady-state part: pgbench transactions per second (0 skips the part)", (v) => Number(v), 1000)
  .option("--seconds <n>", "steady-state part: how long the load runs", (v) => Number(v), 20)
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
      CREATE TABLE heartbeat (id int PRIMARY KEY, ts timestamptz NOT NULL);
      INSERT INTO heartbeat VALUES (1, clock_timestamp());
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

    const steady = opts.rate > 0 ? await steadyState(src, tgt, script) : undefined;

    const check = async (db: string) => (await tgt.query(`SELECT count(*)::int AS n, sum(abalance)::bigint AS s FROM accounts`, db))[0];
    const want = (await src.query(`SELECT count(*)::int AS n, sum(abalance)::bigint AS s FROM accounts`, "bench"))[0];
    const [nat, str] = [await check("native"), await check("stream")];
    if (JSON.stringify(nat) !== JSON.stringify(want) || JSON.stringify(str) !== JSON.stringify(want)) {
      throw new Error(`drained targets differ from the source: source ${JSON.stringify(want)}, native ${JSON.stringify(nat)}, stream ${JSON.stringify(str)}`);
    }
    // Part (c): each mode cut over while pgbench writes (stream first: its cutover leaves the source
    // frozen, which is undone before the native one, whose subscription kept following).
    const downtime = opts.rate > 0 ? { stream: await cutoverUnderLoad(src, tgt, script, "stream"), native: await cutoverUnderLoad(src, tgt, script, "native") } : undefined;
    await cleanupMigration(source, parseEndpoint(tgt.uri("native"), "target"), "native");
    await cleanupMigration(source, parseEndpoint(tgt.uri("stream"), "target"), "stream");

    const result = {
      backlog: { transactions, changes },
      native: { seconds: nativeSec, changesPerSecond: Math.round(changes / nativeSec) },
      stream: { seconds: streamSec, changesPerSecond: Math.round(changes / streamSec), nodeCpuSeconds: streamCpuSec },
      streamVsNative: nativeSec / streamSec,
      steadyState: steady,
      cutoverUnderLoad: downtime,
    };
    if (opts.json) process.stdout.write(JSON.stringify(result, null, 2) + "\n");
    else {
      process.stdout.write(`backlog: ${transactions} transactions, ${changes} row changes (PostgreSQL 15 → 17)\n` +
        `native subscription  ${nativeSec.toFixed(2)} s  ${result.native.changesPerSecond} changes/s\n` +
        `pgferry stream       ${streamSec.toFixed(2)} s  ${result.stream.changesPerSecond} changes/s (pgferry process CPU ${streamCpuSec.toFixed(2)} s)\n` +
        `stream drains at ${result.streamVsNative.toFixed(2)}× the native subscription's rate\n`);
      if (steady) {
        const row = (k: string, l: LagStats) => `${k.padEnd(21)}lag p50 ${l.p50Sec.toFixed(2)} s  p95 ${l.p95Sec.toFixed(2)} s  max ${l.maxSec.toFixed(2)} s  ` +
          `slot max ${(l.maxBytes / 1024).toFixed(0)} kB\n`;
        process.stdout.write(`steady state: pgbench at ${steady.targetTps} tps for ${steady.seconds} s (achieved ${steady.achievedTps.toFixed(0)} tps, ` +
          `${Math.round(steady.achievedTps * 4)} changes/s), both consumers following at once\n` + row("native subscription", steady.native) + row("pgferry agent", steady.stream));
      }
      if (downtime) {
        const row = (k: string, d: CutoverUnderLoad) => `${k.padEnd(21)}downtime ${(d.downtimeMs / 1000).toFixed(2)} s (${d.breakdown}); ${d.endedSessions} sessions ended\n`;
        process.stdout.write(`cutover under pgbench at ${opts.rate} tps (--freeze-writes, verify counts):\n` +
          row("native subscription", downtime.native) + row("pgferry stream+agent", downtime.stream));
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    await stopAll();
  }
}

export interface CutoverUnderLoad { downtimeMs: number; breakdown: string; timings: unknown; endedSessions: number }

/**
 * Part (c): `pgferry cutover --freeze-writes` while pgbench writes at the steady-state rate; stream mode
 * with an agent following, as in production. Downtime is pgferry's own figure: freeze → Completed.
 */
async function cutoverUnderLoad(src: LocalServer, tgt: LocalServer, script: string, mode: "native" | "stream"): Promise<CutoverUnderLoad> {
  const source = parseEndpoint(src.uri("bench"), "source"), target = parseEndpoint(tgt.uri(mode), "target");
  const agent = mode === "stream" ? spawn(process.execPath, [path.join(__dirname, "../provider/cli/main.js"), "agent", "--name", "stream"], {
    env: { ...process.env, PGFERRY_SOURCE: src.uri("bench"), PGFERRY_TARGET: tgt.uri("stream") }, stdio: "ignore",
  }) : undefined;
  const agentExit = agent ? new Promise((r) => agent.once("exit", r)) : undefined;
  const pb = spawn("pgbench", ["-n", "-c", String(opts.clients), "-j", "2", "-R", String(opts.rate), "-T", "300", "-f", script,
    "-h", "127.0.0.1", "-p", String(src.port), "-U", "postgres", "bench"], { env: { ...process.env, PGPASSWORD: src.password }, stdio: "ignore" });
  const pbExit = new Promise((r) => pb.once("exit", r));
  try {
    log(`cutover of ${mode} under pgbench at ${opts.rate} tps`);
    await new Promise((r) => setTimeout(r, 3000));
    const res = await cutoverMigration(source, target, { name: mode, freezeWrites: true, timeoutSec: 120, jobs: 2, verify: "counts" });
    // The next part needs a writable source: undo the freeze exactly as the cutover reports it.
    if (res.undoFreezeSql.length) await src.query(res.undoFreezeSql.join("\n"), "bench");
    return { downtimeMs: res.downtimeMs ?? NaN, breakdown: res.timings ? formatTimings(res.timings) : "", timings: res.timings, endedSessions: res.endedSessions.length };
  } finally {
    pb.kill("SIGINT");
    await pbExit;
    if (agent) {
      const t = setTimeout(() => agent.kill("SIGTERM"), 30000); // it exits by itself once the cutover is done
      await agentExit;
      clearTimeout(t);
    }
  }
}

export interface LagStats { p50Sec: number; p95Sec: number; maxSec: number; maxBytes: number }

/**
 * Part (b): a fixed-rate write load while both consumers follow it. The stream side runs as a real
 * `pgferry agent` process, as a user would run it. Lag in seconds is measured as a reader sees it:
 * a source row updated to clock_timestamp() every 100 ms, read on each target every 100 ms.
 */
async function steadyState(src: LocalServer, tgt: LocalServer, script: string) {
  const agent = spawn(process.execPath, [path.join(__dirname, "../provider/cli/main.js"), "agent", "--name", "stream"], {
    env: { ...process.env, PGFERRY_SOURCE: src.uri("bench"), PGFERRY_TARGET: tgt.uri("stream") }, stdio: ["ignore", "ignore", "pipe"],
  });
  let agentLog = "";
  agent.stderr!.on("data", (d) => { agentLog += d; });
  const agentExit = new Promise<number | null>((r) => agent.once("exit", (c) => r(c)));
  const lag: Record<"native" | "stream", number[]> = { native: [], stream: [] };
  const bytes: Record<"native" | "stream", number[]> = { native: [], stream: [] };
  let running = true;
  // One connection each, opened once: a connection per probe would cost more than the 100 ms period.
  const [beatConn, slotConn, nativeConn, streamConn] = [src.uri("bench"), src.uri("bench"), tgt.uri("native"), tgt.uri("stream")]
    .map((u) => new Client({ connectionString: u }));
  await Promise.all([beatConn, slotConn, nativeConn, streamConn].map((c) => c.connect()));
  const beat = (async () => {
    while (running) {
      await beatConn.query(`UPDATE heartbeat SET ts = clock_timestamp() WHERE id = 1`);
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const sample = (async () => {
    while (running) {
      for (const [db, c] of [["native", nativeConn], ["stream", streamConn]] as const) {
        lag[db].push((await c.query(`SELECT extract(epoch FROM clock_timestamp() - ts)::float8 AS s FROM heartbeat`)).rows[0].s);
      }
      const r = await slotConn.query(`SELECT slot_name, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::float8 AS b
        FROM pg_replication_slots WHERE slot_name IN ('pgferry_native', 'pgferry_stream')`);
      for (const x of r.rows) bytes[x.slot_name === "pgferry_native" ? "native" : "stream"].push(x.b);
      await new Promise((res) => setTimeout(res, 100));
    }
  })();
  try {
    // Measure only once both consumers follow the heartbeat (the agent process needs a moment to start).
    const warm = Date.now() + 60000;
    for (;;) {
      const recent = (k: "native" | "stream") => lag[k].length > 0 && lag[k][lag[k].length - 1] < 0.5;
      if (recent("native") && recent("stream")) break;
      if (Date.now() > warm) throw new Error(`the consumers did not start following within 60 s; agent log:\n${agentLog}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    for (const k of ["native", "stream"] as const) { lag[k].length = 0; bytes[k].length = 0; }
    log(`steady state: pgbench at ${opts.rate} tps for ${opts.seconds} s while the subscription and a pgferry agent follow`);
    // Asynchronous: the heartbeat and the sampler must run while pgbench does (spawnSync would block them).
    const pb = spawn("pgbench", ["-n", "-c", String(opts.clients), "-j", "2", "-R", String(opts.rate), "-T", String(opts.seconds), "-f", script,
      "-h", "127.0.0.1", "-p", String(src.port), "-U", "postgres", "bench"], { env: { ...process.env, PGPASSWORD: src.password } });
    let pbOut = "", pbErr = "";
    pb.stdout.on("data", (d) => { pbOut += d; });
    pb.stderr.on("data", (d) => { pbErr += d; });
    const code = await new Promise<number | null>((r) => pb.once("exit", (c) => r(c)));
    if (code !== 0) throw new Error(`pgbench failed: ${pbErr}`);
    const tps = Number(/tps = ([\d.]+)/.exec(pbOut)?.[1] ?? NaN);
    running = false;
    await Promise.all([beat, sample]);
    // Both consumers must still be caught up with everything at the end (the load was applied, not skipped).
    const end = (await src.query(`SELECT pg_current_wal_lsn()::text AS l`, "bench"))[0].l as string;
    const deadline = Date.now() + 120000;
    for (;;) {
      const r = await src.query(`SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name IN ('pgferry_native', 'pgferry_stream')
        AND confirmed_flush_lsn >= '${end}'::pg_lsn`, "bench");
      if (r[0].n === 2) break;
      if (Date.now() > deadline) throw new Error(`a consumer did not catch up after the load; agent log:\n${agentLog}`);
      await new Promise((res) => setTimeout(res, 100));
    }
    const stats = (k: "native" | "stream"): LagStats => {
      const v = [...lag[k]].sort((a, b) => a - b);
      const q = (p: number) => v[Math.min(v.length - 1, Math.floor(p * v.length))];
      return { p50Sec: q(0.5), p95Sec: q(0.95), maxSec: v[v.length - 1], maxBytes: Math.max(0, ...bytes[k]) };
    };
    if (process.env.PGFERRY_BENCH_SERIES) fs.writeFileSync(process.env.PGFERRY_BENCH_SERIES, JSON.stringify({ lag, bytes }));
    return { targetTps: opts.rate, seconds: opts.seconds, achievedTps: tps, samples: lag.native.length, native: stats("native"), stream: stats("stream") };
  } finally {
    running = false;
    await Promise.all([beat, sample]).catch(() => undefined);
    await Promise.all([beatConn, slotConn, nativeConn, streamConn].map((c) => c.end().catch(() => undefined)));
    agent.kill("SIGTERM");
    await agentExit;
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
