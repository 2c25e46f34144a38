/**
 * `pgferry demo`: the whole product in one command, on this machine only. Two embedded servers
 * (PostgreSQL 15 source, 17 target) on free loopback ports, a DVD-rental database under a live write
 * load, then start → stream → cutover (writes frozen) → verify → cleanup, and a short report.
 */
import { LocalServer } from "../embedded/localServer";
import { human, printJson, reporter } from "../cli/output";
import {
  CdcMode, cleanupMigration, cutoverMigration, migrationOptions, migrationStatus, parseEndpoint, runAgent, startMigration, verifyMigration,
} from "../engine";
import { DemoWriteLoad, DemoWriteStats, demoSchemaSql, populateDemo } from "./dvdrental";

export interface DemoReport {
  source: string;
  target: string;
  scale: number;
  sourceRows: number;
  load: { rows: number; bytes: number; seconds: number; mbPerSecond: number };
  lagBeforeCutover: { bytes?: number; seconds?: number };
  writesDuringMigration: DemoWriteStats;
  cutover: { downtimeMs?: number; fenceLsn?: string; sequencesSynced: number; sessionsEnded: number };
  verified: boolean;
  problems: string[];
  leftovers: string[];
}

/** json: print the report as one JSON document; silent: print nothing (tests). */
export async function runDemo(o: { scale: number; json: boolean; silent?: boolean; streamSeconds?: number; mode?: CdcMode }): Promise<DemoReport> {
  const mode = o.mode ?? "subscription";
  const log = (s: string) => { if (!o.json && !o.silent) process.stderr.write(s + "\n"); };
  log("▸ starting two embedded servers: PostgreSQL 15 (source) and 17 (target) on loopback");
  const [src, tgt] = await Promise.all([LocalServer.start({ major: 15 }), LocalServer.start({ major: 17 })]);
  const stopAll = () => Promise.all([src.stop(), tgt.stop()]);
  const onSignal = () => { void stopAll().finally(() => process.exit(130)); };
  process.once("SIGINT", onSignal);
  let load: DemoWriteLoad | undefined;
  const agentStop = new AbortController();
  let agent: Promise<unknown> | undefined;
  try {
    await src.createDatabase("dvdrental");
    await tgt.createDatabase("dvdrental");
    const c = await src.client("dvdrental");
    let sourceRows = 0;
    try {
      await c.query(demoSchemaSql());
      sourceRows = (await populateDemo(c, o.scale)).rows;
    } finally {
      await c.end();
    }
    log(`▸ source filled: ${sourceRows} rows (scale ${o.scale}); starting a live write load`);
    load = new DemoWriteLoad(() => src.client("dvdrental"), { concurrency: 2 });
    load.start();

    const source = parseEndpoint(src.uri("dvdrental"), "source"), target = parseEndpoint(tgt.uri("dvdrental"), "target");
    const r = reporter(o.json || !!o.silent);
    const started = await startMigration(source, target, migrationOptions({ name: "demo", jobs: 4, mode }), (e) => r.event(e)).finally(() => r.done());
    const loaded = started.load!;
    // Stream mode: an agent applies changes as they come, as `pgferry agent` would (here in-process); it ends by
    // itself once the cutover is done.
    if (mode === "stream") {
      log("▸ stream mode: an agent applies the changes");
      agent = runAgent(source, target, { name: "demo", signal: agentStop.signal });
    }
    log(`▸ streaming changes while the application keeps writing (${o.streamSeconds ?? 3} s)`);
    await new Promise((res) => setTimeout(res, (o.streamSeconds ?? 3) * 1000));
    const st = await migrationStatus(source, target, "demo");
    log(`  lag ${human(st.lagBytes ?? 0)}${st.lagSeconds !== undefined ? `, ${st.lagSeconds.toFixed(2)} s` : ""}`);

    log("▸ cutover: freeze writes, wait for the fence, sync sequences, add foreign keys");
    const cut = await cutoverMigration(source, target, { name: "demo", freezeWrites: true, timeoutSec: 120, jobs: 4 });
    const writes = await load.stop();
    load = undefined;
    await agent;
    agent = undefined;
    log("▸ verifying: row counts, content hashes, sequences, constraints, triggers");
    const v = await verifyMigration(source, target, { jobs: 4 });
    await cleanupMigration(source, target, "demo");
    const left = [
      ...(await src.query(`SELECT 'slot ' || slot_name AS x FROM pg_replication_slots UNION ALL SELECT 'publication ' || pubname FROM pg_publication`, "dvdrental")),
      ...(await tgt.query(`SELECT 'subscription ' || subname AS x FROM pg_subscription`, "dvdrental")),
    ].map((x) => x.x as string);
    const report: DemoReport = {
      source: `PostgreSQL ${(await src.query("SHOW server_version"))[0].server_version}`,
      target: `PostgreSQL ${(await tgt.query("SHOW server_version"))[0].server_version}`,
      scale: o.scale, sourceRows,
      load: { rows: loaded.rows, bytes: loaded.bytes, seconds: loaded.seconds, mbPerSecond: loaded.bytes / 1048576 / Math.max(loaded.seconds, 0.001) },
      lagBeforeCutover: { bytes: st.lagBytes, seconds: st.lagSeconds },
      writesDuringMigration: writes,
      cutover: { downtimeMs: cut.downtimeMs, fenceLsn: cut.fenceLsn, sequencesSynced: cut.sequencesSynced, sessionsEnded: cut.endedSessions.length },
      verified: v.ok && left.length === 0, problems: v.problems, leftovers: left,
    };
    if (o.json && !o.silent) printJson(report);
    else {
      log("");
      log(`pgferry demo: ${report.source} → ${report.target}, scale ${o.scale}, mode ${mode}`);
      log(`  full load     ${report.load.rows} rows, ${human(report.load.bytes)} in ${report.load.seconds.toFixed(2)} s (${report.load.mbPerSecond.toFixed(1)} MB/s)`);
      log(`  live writes   ${writes.transactions} transactions (${writes.statements} statements) during the migration, ${writes.errors} failed`);
      log(`  lag           ${human(st.lagBytes ?? 0)} before cutover`);
      log(`  cutover       downtime ${((cut.downtimeMs ?? 0) / 1000).toFixed(2)} s, ${cut.sequencesSynced} sequences synced, ${cut.endedSessions.length} sessions ended`);
      log(`  verification  ${v.tables.length} tables, ${v.sequences.length} sequences, ${v.objects.length} constraints/triggers: ` +
        (report.verified ? "source and target are EQUAL" : `${v.problems.length} difference(s):\n    ${[...v.problems, ...left].join("\n    ")}`));
    }
    return report;
  } finally {
    await load?.stop().catch(() => undefined);
    agentStop.abort();
    await agent?.catch(() => undefined);
    process.off("SIGINT", onSignal);
    await stopAll();
  }
}
