/**
 * CDC benchmark (not a test), both CDC modes side by side on the same servers, in the same run:
 *  (a) drain: real pgbench data (`pgbench -i -s 10`: 1M accounts, filler filled) and a backlog of
 *      pgbench's tpcb-like transactions (4 clients, 50,000 by default) held in two slots, applied once
 *      by a native subscription (mode subscription) and once by a `pgferry agent` process started from
 *      the CLI (mode stream, its start included), each until a reader of the target sees every row;
 *      seconds, changes/s, the ratio and the agent's peak RSS;
 *  (b) steady state: pgbench writes at a fixed rate while the subscription and a `pgferry agent`
 *      process follow; a heartbeat row updated every 100 ms on the source is polled on each target,
 *      so the lag is what a reader of the target sees (seconds), beside the slot's lag in bytes.
 *
 *   node dist/bench/drain.js [--scale 10] [--transactions 50000] [--clients 4]
 *                            [--rate 1000] [--seconds 20] [--json] [--profile DIR]
 */
import { spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Command } from "commander";
import { Client } from "pg";
import { LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, cutoverMigration, migrationOptions, parseEndpoint, startMigration } from "../provider/engine";
import { formatTimings } from "../provider/cli/output";

const opts = new Command("drain")
  .option("--scale <n>", "pgbench -i -s scale of the source (1M accounts at 10, filler filled as pgbench fills it)", (v) => Number(v), 10)
  .option("--transactions <n>", "backlog transactions (pgbench's built-in tpcb-like: 3 updates + 1 insert each)", (v) => Number(v), 50000)
  .option("--clients <n>", "pgbench clients writing the backlog", (v) => Number(v), 4)
  .option("--rate <tps>", "steady-state part: pgbench transactions per second (0 skips the steady-state and cutover parts)", (v) => Number(v), 1000)
  .option("--seconds <n>", "steady-state part: how long the load runs", (v) => Number(v), 20)
  .option("--json", "print JSON")
  .option("--profile <dir>", "write a V8 CPU profile of the draining agent process into this directory (node --cpu-prof; open in Chrome DevTools)")
  .parse(process.argv).opts();

const log = (s: string) => { if (!opts.json) process.stderr.write(`[drain] ${s}\n`); };
const CLI = path.join(__dirname, "../provider/cli/main.js");

/** Peak resident set size (VmHWM, kB) of a live process, or 0 once it is gone. */
export function peakRssKb(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : 0;
  } catch { return 0; }
}

/** CPU seconds (user + system) a live process has used, or undefined once it is gone. */
function cpuSeconds(pid: number): number | undefined {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /, "").split(" ");
    return (Number(f[11]) + Number(f[12])) / 100; // utime, stime (fields 14, 15) in clock ticks (100/s on Linux)
  } catch { return undefined; }
}

/**
 * While a drain runs: the CPU the source's walsender (decoding) and the target's applying backend use, read
 * from /proc every 100 ms (both are started by the drain, so their totals are the drain's). Says which side limits a drain.
 */
function watchServerCpu(src: LocalServer, tgt: LocalServer, db: string, walsender: string, applier: string) {
  const seen = { walsender: 0, applier: 0 };
  let on = true;
  const loop = (async () => {
    while (on) {
      const w = await src.query(`SELECT pid FROM pg_stat_replication WHERE application_name = '${walsender}'`, "bench").catch(() => []);
      const a = await tgt.query(applier, db).catch(() => []);
      for (const [k, rows] of [["walsender", w], ["applier", a]] as const) {
        for (const r of rows as { pid: number }[]) seen[k] = Math.max(seen[k], cpuSeconds(r.pid) ?? 0);
      }
      await new Promise((res) => setTimeout(res, 100));
    }
  })();
  return async () => { on = false; await loop; return seen; };
}

/** Rows of pgbench_history (every backlog transaction inserts one, last): the target shows the whole backlog once it has them all. */
async function waitForHistory(c: Client, want: number, timeoutMs = 600000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const n = Number((await c.query(`SELECT count(*)::bigint AS n FROM pgbench_history`)).rows[0].n);
    if (n >= want) return;
    if (Date.now() > deadline) throw new Error(`the target shows ${n} of ${want} history rows after ${timeoutMs / 1000} s`);
    await new Promise((res) => setTimeout(res, 20));
  }
}

async function main() {
  const [src, tgt] = await Promise.all([LocalServer.start({ major: 15 }), LocalServer.start({ major: 17 })]);
  const stopAll = () => Promise.all([src.stop(), tgt.stop()]);
  process.once("SIGINT", () => { void stopAll().finally(() => process.exit(130)); });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pgferry-drain-"));
  try {
    await src.createDatabase("bench");
    await tgt.createDatabase("native");
    await tgt.createDatabase("stream");
    const pgEnv = { ...process.env, PGPASSWORD: src.password };
    const conn = ["-h", "127.0.0.1", "-p", String(src.port), "-U", "postgres"];
    // Real pgbench data: pgbench's own schema and generator (accounts' filler is 84 blanks, not NULL: every
    // UPDATE of an account carries it, as in production). pgbench_history has no key: inserts only, as pgbench writes it.
    log(`pgbench -i -s ${opts.scale}`);
    const init = spawnSync("pgbench", ["-i", "-q", "-s", String(opts.scale), ...conn, "bench"], { encoding: "utf8", env: pgEnv });
    if (init.status !== 0) throw new Error(`pgbench -i failed: ${init.stderr}`);
    await src.query(`CREATE TABLE heartbeat (id int PRIMARY KEY, ts timestamptz NOT NULL); INSERT INTO heartbeat VALUES (1, clock_timestamp())`, "bench");
    await src.query(`VACUUM ANALYZE`, "bench");
    const source = parseEndpoint(src.uri("bench"), "source");
    log("starting both migrations (load, then CDC)");
    await startMigration(source, parseEndpoint(tgt.uri("native"), "target"), migrationOptions({ name: "native", mode: "subscription", jobs: 2, replicaIdentityFull: true }));
    await tgt.query(`ALTER SUBSCRIPTION pgferry_native DISABLE`, "native"); // hold the backlog in its slot too
    await startMigration(source, parseEndpoint(tgt.uri("stream"), "target"), migrationOptions({ name: "stream", mode: "stream", jobs: 2, replicaIdentityFull: true }));

    // pgbench's built-in tpcb-like transaction, as a script file (the steady-state and cutover parts reuse it).
    const script = path.join(dir, "tpcb.sql");
    fs.writeFileSync(script, `\\set aid random(1, ${100000 * opts.scale})\n\\set bid random(1, ${opts.scale})\n\\set tid random(1, ${10 * opts.scale})
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
`);
    log(`writing the backlog: ${opts.transactions} transactions with pgbench (${opts.clients} clients)`);
    const perClient = Math.ceil(opts.transactions / opts.clients);
    const pb = spawnSync("pgbench", ["-n", "-c", String(opts.clients), "-j", "2", "-t", String(perClient), "-f", script, ...conn, "bench"],
      { encoding: "utf8", env: pgEnv });
    if (pb.status !== 0) throw new Error(`pgbench failed: ${pb.stderr}`);
    const transactions = perClient * opts.clients, changes = transactions * 4;
    const historyRows = Number((await src.query(`SELECT count(*)::bigint AS n FROM pgbench_history`, "bench"))[0].n);

    // Both drains end when a reader of the target sees every backlog row (not when a slot is acknowledged).
    log("draining with the native subscription");
    const nativeConn = new Client({ connectionString: tgt.uri("native") }), streamConn = new Client({ connectionString: tgt.uri("stream") });
    await Promise.all([nativeConn.connect(), streamConn.connect()]);
    let nativeSec: number, streamSec: number, agentPeakKb = 0, agentCpu = NaN;
    let nativeCpu = { walsender: 0, applier: 0 }, streamCpu = { walsender: 0, applier: 0 };
    try {
      const n0 = Date.now();
      await tgt.query(`ALTER SUBSCRIPTION pgferry_native ENABLE`, "native");
      const nativeWatch = watchServerCpu(src, tgt, "native", "pgferry_native", `SELECT pid FROM pg_stat_subscription WHERE subname = 'pgferry_native' AND relid IS NULL`);
      await waitForHistory(nativeConn, historyRows);
      nativeSec = (Date.now() - n0) / 1000;
      nativeCpu = await nativeWatch();

      log("draining with pgferry's stream applier (a pgferry agent process started from the CLI)");
      const s0 = Date.now();
      const agent = spawn(process.execPath, [...(opts.profile ? ["--cpu-prof", "--cpu-prof-dir", opts.profile] : []), CLI, "agent", "--name", "stream"], {
        env: { ...process.env, PGFERRY_SOURCE: src.uri("bench"), PGFERRY_TARGET: tgt.uri("stream") }, stdio: ["ignore", "ignore", "pipe"],
      });
      let agentLog = "";
      agent.stderr!.on("data", (d) => { agentLog += d; });
      const agentExit = new Promise<number | null>((r) => agent.once("exit", (c) => r(c)));
      const streamWatch = watchServerCpu(src, tgt, "stream", "pgferry_stream", `SELECT pid FROM pg_stat_activity WHERE application_name = 'pgferry stream'`);
      const rss = setInterval(() => { agentPeakKb = Math.max(agentPeakKb, peakRssKb(agent.pid!)); }, 100);
      try {
        await Promise.race([waitForHistory(streamConn, historyRows),
          agentExit.then((c) => { throw new Error(`the agent exited (${c}) before the target caught up:\n${agentLog}`); })]);
        streamSec = (Date.now() - s0) / 1000;
        agentCpu = cpuSeconds(agent.pid!) ?? NaN;
      } finally {
        streamCpu = await streamWatch();
        agentPeakKb = Math.max(agentPeakKb, peakRssKb(agent.pid!));
        clearInterval(rss);
        agent.kill("SIGTERM");
        await agentExit;
      }
    } finally {
      await Promise.all([nativeConn.end(), streamConn.end()]);
    }

    const steady = opts.rate > 0 ? await steadyState(src, tgt, script) : undefined;

    const sums = `SELECT (SELECT sum(abalance)::bigint FROM pgbench_accounts) AS a, (SELECT sum(tbalance)::bigint FROM pgbench_tellers) AS t,
      (SELECT sum(bbalance)::bigint FROM pgbench_branches) AS b, (SELECT count(*)::bigint FROM pgbench_history) AS h`;
    const check = async (db: string) => (await tgt.query(sums, db))[0];
    const want = (await src.query(sums, "bench"))[0];
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
      dataset: `pgbench -i -s ${opts.scale}`,
      backlog: { transactions, changes },
      native: { seconds: nativeSec, changesPerSecond: Math.round(changes / nativeSec), cpuSeconds: nativeCpu },
      stream: { seconds: streamSec, changesPerSecond: Math.round(changes / streamSec), agentPeakRssMb: Math.round(agentPeakKb / 1024),
        cpuSeconds: { ...streamCpu, agent: agentCpu } },
      streamVsNative: nativeSec / streamSec,
      steadyState: steady,
      cutoverUnderLoad: downtime,
    };
    if (opts.json) process.stdout.write(JSON.stringify(result, null, 2) + "\n");
    else {
      process.stdout.write(`drain: pgbench -i -s ${opts.scale}, backlog of ${transactions} transactions, ${changes} row changes (PostgreSQL 15 → 17), ` +
        `until the target shows every row\n` +
        `native subscription  ${nativeSec.toFixed(2)} s  ${result.native.changesPerSecond} changes/s (CPU s: walsender ${nativeCpu.walsender.toFixed(2)}, ` +
        `apply worker ${nativeCpu.applier.toFixed(2)})\n` +
        `pgferry stream       ${streamSec.toFixed(2)} s  ${result.stream.changesPerSecond} changes/s (CPU s: walsender ${streamCpu.walsender.toFixed(2)}, ` +
        `target backend ${streamCpu.applier.toFixed(2)}, agent ${agentCpu.toFixed(2)}; a pgferry agent process, its start included; ` +
        `peak RSS ${result.stream.agentPeakRssMb} MB)\n` +
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

main().catch((e) => { console.error(e); process.exitCode = 1; });
