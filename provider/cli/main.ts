#!/usr/bin/env node
/**
 * The `pgferry` command: the same engine the Pulumi resources drive. Its command and flag names are
 * a contract scripts rely on. URIs may also come from PGFERRY_SOURCE / PGFERRY_TARGET, which keeps
 * passwords out of shell history and the process list.
 */
import { Command, InvalidArgumentError, Option } from "commander";
import {
  abortCutover, cleanupMigration, cutoverMigration, DEFAULT_NAME, finishRollbackWindow, migrationOptions, migrationStatus, parseEndpoint, reverseName,
  rollbackMigration, runAgent, startMigration, updateRollbackState, verifyMigration,
} from "../engine";
import { Monitor, serveMonitor } from "./monitor";
import { formatStatus, formatTimings, formatWatch, printJson, reportError, reporter } from "./output";
import { describeSessions } from "../engine/cutover/cutover";
import { connect, DEFAULT_STALL_TIMEOUT_SEC } from "../engine/core/endpoint";
import { DEFAULT_SNAPSHOT_TIMEOUT_SEC, OUTPUT_PLUGINS } from "../engine/core/options";
import { readMigration } from "../engine/state/state";

const collect = (v: string, prev: string[]) => [...prev, v];
const port = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError("--serve needs a port number (0 picks a free one)");
  return n;
};
const seconds = (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0.2) throw new InvalidArgumentError("--interval must be a number of seconds, at least 0.2");
  return n;
};
/** A sleep that an abort (SIGINT/SIGTERM) ends early. */
const sleep = (ms: number, signal: AbortSignal) => new Promise<void>((resolve) => {
  const t = setTimeout(done, ms);
  function done() { clearTimeout(t); signal.removeEventListener("abort", done); resolve(); }
  signal.addEventListener("abort", done);
});
const int = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive whole number`);
  return n;
};

const nonNegative = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`${name} must be a number of seconds, 0 or more`);
  return n;
};

function endpoints(o: { source?: string; target?: string }) {
  return {
    source: parseEndpoint(o.source ?? process.env.PGFERRY_SOURCE, "source"),
    target: parseEndpoint(o.target ?? process.env.PGFERRY_TARGET, "target"),
  };
}

const sourceOpt = () => new Option("--source <uri>", "source libpq URI (or PGFERRY_SOURCE)");
const targetOpt = () => new Option("--target <uri>", "target libpq URI (or PGFERRY_TARGET)");
const nameOpt = () => new Option("--name <name>", "migration name: names the slot, publication and subscription").default(DEFAULT_NAME);

/** Run a command body; map errors to a printed message and exit code 1. */
function action<T extends { json?: boolean }>(fn: (o: T) => Promise<number | void>) {
  return async (o: T) => {
    try {
      process.exitCode = (await fn(o)) ?? 0;
    } catch (e) {
      process.exitCode = reportError(e, !!o.json);
    }
  };
}

export function buildProgram(): Command {
  const program = new Command("pgferry")
    .description("Move a live PostgreSQL database to another PostgreSQL server with minimal downtime.")
    .showHelpAfterError();

  program.command("start").description("preflight, copy the schema, load every table consistently, then stream changes (returns once ReadyToCutover)")
    .addOption(sourceOpt()).addOption(targetOpt()).addOption(nameOpt())
    .addOption(new Option("--mode <mode>", "change data capture: subscription (the target applies) or stream (pgferry applies)").choices(["subscription", "stream"]).default("subscription"))
    .addOption(new Option("--plugin <plugin>", "stream mode's output plugin: pgoutput (needs a publication) or wal2json (for sources without publications)").choices(OUTPUT_PLUGINS).default("pgoutput"))
    .option("--jobs <n>", "parallel COPY workers and index builders", int("--jobs"), 4)
    .option("--schema <schema>", "migrate this schema (repeatable; default: all user schemas)", collect, [])
    .option("--include <table>", "only these tables, schema.table (repeatable)", collect, [])
    .option("--exclude <table>", "never these tables, schema.table (repeatable)", collect, [])
    .option("--replica-identity-full", "set REPLICA IDENTITY FULL on source tables without a key instead of refusing")
    .option("--source-host-for-target <host[:port]>", "how the target server reaches the source, when not as pgferry does")
    .addOption(new Option("--unlogged <how>", "unlogged tables (logical replication cannot see their changes): copy them again at cutover while the source is frozen, or skip them in the cutover gate and verify").choices(["copy", "skip"]).default("copy"))
    .option("--snapshot-timeout <sec>", "seconds to wait for transactions open on the source to end before the consistent snapshot " +
      "(0: no limit); past it, start refuses naming them", nonNegative("--snapshot-timeout"), DEFAULT_SNAPSHOT_TIMEOUT_SEC)
    .option("--no-large-objects", "leave large objects out (listed as not carried); default: copied in the load's snapshot and, where changed, again at cutover")
    .option("--stall-timeout <sec>", "seconds a load COPY may go without data from the source or taken by the target after which " +
      "that link counts as stalled and start stops naming it (re-run start to reload)", int("--stall-timeout"), DEFAULT_STALL_TIMEOUT_SEC)
    .option("--json", "print one JSON document instead of progress")
    .action(action(async (o) => {
      const { source, target } = endpoints(o);
      const opts = migrationOptions({ snapshotTimeoutSec: o.snapshotTimeout, stallTimeoutSec: o.stallTimeout, largeObjects: o.largeObjects !== false, name: o.name, mode: o.mode, plugin: o.plugin, jobs: o.jobs, schemas: o.schema, include: o.include, exclude: o.exclude,
        replicaIdentityFull: !!o.replicaIdentityFull, unlogged: o.unlogged, sourceHostForTarget: o.sourceHostForTarget });
      const r = reporter(!!o.json);
      const res = await startMigration(source, target, opts, (e) => r.event(e)).finally(() => r.done());
      if (o.json) printJson({ ok: true, ...res });
      else if (res.alreadyRunning) r.line(`migration ${res.name} is already ${res.phase}; nothing to do`);
      else r.line(`migration ${res.name} is ${res.phase}: changes stream to the target; run pgferry cutover when ready` +
        (res.load ? ` (loaded ${res.load.rows} rows in ${res.load.seconds.toFixed(1)} s` +
          `${res.load.largeObjects ? `, ${res.load.largeObjects.objects} large objects (${res.load.largeObjects.bytes} bytes) in ${res.load.largeObjects.seconds.toFixed(1)} s` : ""})` : ""));
      if (!o.json && res.notCarried.length) {
        r.line(`not carried to the target (${res.notCarried.length}):\n` +
          res.notCarried.map((x) => `  - ${x.kind} ${x.object}: ${x.reason}\n      fix: ${x.fix}`).join("\n"));
      }
    }));

  program.command("status").description("phase, per-table progress, lag and pending changes; --watch to follow, --serve for a web monitor")
    .addOption(sourceOpt()).addOption(targetOpt()).addOption(nameOpt())
    .option("--json", "print JSON").option("--watch", "redraw every --interval seconds until interrupted (without a terminal: append snapshots)")
    .option("--serve <port>", "serve a web monitor, /api/status and Prometheus /metrics on 127.0.0.1:PORT (0: any free port) until interrupted", port)
    .option("--interval <sec>", "seconds between status reads with --watch or --serve", seconds, 2)
    .action(action(async (o) => {
      const target = parseEndpoint(o.target ?? process.env.PGFERRY_TARGET, "target");
      const src = o.source ?? process.env.PGFERRY_SOURCE;
      const source = src ? parseEndpoint(src, "source") : undefined;
      const follow = !!o.watch || o.serve !== undefined;
      const monitor = new Monitor([source, target]);
      // A first read that fails (wrong URI, password) is a usage error: exit; later failures are shown and retried.
      // A monitor polls: it does not decode the slot to count pending changes (one-shot status does).
      let s = await migrationStatus(source, target, o.name, { countPending: !follow });
      let view = monitor.add(s);
      if (!follow) {
        if (o.json) printJson(s); else process.stdout.write(formatStatus(s) + "\n");
        return s.phase === "NotFound" || s.phase === "Failed" ? 1 : 0;
      }
      const stop = new AbortController();
      const onSignal = () => stop.abort();
      process.once("SIGINT", onSignal);
      process.once("SIGTERM", onSignal);
      const server = o.serve !== undefined ? await serveMonitor(monitor, o.serve, o.interval * 1000) : undefined;
      if (server) process.stderr.write(`pgferry monitor for ${o.name}: ${server.url} (JSON ${server.url}api/status, Prometheus ${server.url}metrics)\n`);
      const tty = !!process.stdout.isTTY && !o.json;
      let frames = 0;
      try {
        while (!stop.signal.aborted) {
          if (o.watch) {
            if (o.json) printJson(s);
            // A terminal gets a redraw in place (home, each line cleared to its end, the rest cleared); a pipe or log gets snapshots.
            else if (tty) process.stdout.write((frames++ ? "\x1b[H" : "\x1b[2J\x1b[H") + formatWatch(view, true).split("\n").join("\x1b[K\n") + "\x1b[K\n\x1b[J");
            else process.stdout.write(formatWatch(view, false) + "\n\n");
          }
          await sleep(o.interval * 1000, stop.signal);
          if (stop.signal.aborted) break;
          try {
            s = await migrationStatus(source, target, o.name, { countPending: false });
            view = monitor.add(s);
          } catch (e) {
            view = monitor.fail(e) ?? view;
          }
        }
      } finally {
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
        await server?.close();
      }
      return 0;
    }));

  program.command("cutover").description("stop writes, wait for the fence, verify, end replication, sync sequences, add foreign keys")
    .addOption(sourceOpt()).addOption(targetOpt()).addOption(nameOpt())
    .option("--freeze-writes", "make the source read-only for every role and end other sessions (default: the application has stopped)")
    .option("--timeout <sec>", "seconds to wait for the target to apply up to the fence", int("--timeout"), 300)
    .option("--grace <sec>", "with --freeze-writes: seconds sessions get to finish their transaction before they are ended; " +
      "without: seconds to wait for writes to stop", nonNegative("--grace"), 5)
    .addOption(new Option("--verify <mode>", "gate before Completed: row counts, or counts and content hashes").choices(["counts", "hashes"]).default("counts"))
    .option("--abort", "give up a cutover that stopped (VerifyFailed, or killed): unfreeze the source and go back to streaming")
    .option("--reverse-replication", "open a rollback window: the target's changes are replicated back to the source until pgferry finish")
    .option("--jobs <n>", "parallel verification and foreign key validation", int("--jobs"), 4)
    .option("--stall-timeout <sec>", "seconds without an answer from the source or target after which that link counts as stalled " +
      "and the cutover stops naming it (resumable)", int("--stall-timeout"), DEFAULT_STALL_TIMEOUT_SEC)
    .option("--json", "print JSON")
    .action(action(async (o) => {
      const { source, target } = endpoints(o);
      const r = reporter(!!o.json);
      if (o.abort) {
        const res = await abortCutover(source, target, o.name);
        if (o.json) printJson({ ok: true, ...res });
        else r.line(`cutover of ${res.name} aborted (was ${res.previousPhase}): ${res.unfroze ? "source writable again, " : ""}` +
          `${res.resumedReplication ? "replication resumed, " : ""}phase ReadyToCutover`);
        return;
      }
      const res = await cutoverMigration(source, target, { name: o.name, freezeWrites: !!o.freezeWrites, timeoutSec: o.timeout, jobs: o.jobs,
        graceSec: o.grace, verify: o.verify, reverseReplication: !!o.reverseReplication, stallTimeoutSec: o.stallTimeout, onProgress: (m) => r.line(`▸ ${m}`) });
      if (!o.json && res.unlogged) r.line(res.unlogged.action === "copied" ? `  copied ${res.unlogged.tables.length} unlogged table(s) again while writes were stopped (${res.unlogged.rows} rows)` :
        `  ! not carried and not verified (unlogged skip): ${res.unlogged.tables.join(", ")}`);
      if (!o.json && res.largeObjects) r.line(`  large objects: ${res.largeObjects.compared} compared, ${res.largeObjects.copied} copied ` +
        `(${res.largeObjects.bytes} bytes), ${res.largeObjects.unlinked} unlinked while writes were stopped`);
      if (o.json) printJson({ ok: true, ...res });
      else {
        r.line(res.alreadyCompleted ? `migration ${res.name} was already Completed (downtime ${((res.downtimeMs ?? 0) / 1000).toFixed(2)} s)` :
          `migration ${res.name} Completed: fence ${res.fenceLsn}${res.fenceAttempts > 1 ? ` (after ${res.fenceAttempts} fences)` : ""}, ` +
          `${res.verification ? `${res.verification.tables} tables verified (${res.verification.mode}` +
            `${res.verification.mode === "counts" ? `; ${res.verification.hashedTables} changed during replication also hashed` : ""}), ` : ""}` +
          `${res.sequencesSynced} sequences synced, ${res.heldBackApplied} held-back objects applied, downtime ${((res.downtimeMs ?? 0) / 1000).toFixed(2)} s`);
        if (res.timings && !res.alreadyCompleted) r.line(`  downtime breakdown: ${formatTimings(res.timings)}`);
        if (res.neutralisedRoles.length) r.line(`  made read-only in this database (their own setting overrode the database's): ${res.neutralisedRoles.join(", ")}`);
        if (res.endedSessions.length) r.line(`  ended ${res.endedSessions.length} source session(s): ` +
          res.endedSessions.map((s) => `${s.user}${s.superuser ? " (superuser)" : ""}/${s.application || "-"} (pid ${s.pid}${s.state ? `, ${s.state}` : ""})`).join(", "));
        if (res.stillConnected.length) r.line(`  still connected to the source: ${describeSessions(res.stillConnected)}` +
          (res.stillConnected.some((s) => s.superuser) ? " — superusers can lift read-only; make sure they write to the target now" : ""));
        if (res.rollbackWindow) {
          r.line(`  rollback window open: the target's changes wait in slot ${res.rollbackWindow.slot} (on the target) from ${res.rollbackWindow.consistentPoint}.`);
          r.line(`    apply them to the source continuously:  pgferry agent --reverse --name ${res.name}   (same --source/--target as now)`);
          r.line(`    move the application back:              pgferry rollback --name ${res.name}`);
          r.line(`    end the window (drops the reverse slot): pgferry finish --name ${res.name}`);
        } else if (res.sourceLeftReadOnly) r.line(`  the source database stays read-only; to undo: ${res.undoFreezeSql.join(" ")}`);
      }
    }));

  program.command("rollback").description("rollback window: move the application back to the source — freeze the target, drain its changes to the source, verify, sync sequences, unfreeze the source")
    .addOption(sourceOpt()).addOption(targetOpt()).addOption(nameOpt())
    .option("--timeout <sec>", "seconds to wait for the source to apply the target's changes up to the fence", int("--timeout"), 300)
    .option("--grace <sec>", "seconds sessions on the target get to finish their transaction before they are ended", nonNegative("--grace"), 5)
    .addOption(new Option("--verify <mode>", "gate before the source is unfrozen: row counts, or counts and content hashes").choices(["counts", "hashes"]).default("counts"))
    .option("--abort", "give up a rollback that stopped (VerifyFailed, or killed): unfreeze the target and keep the window open")
    .option("--jobs <n>", "parallel verification", int("--jobs"), 4)
    .option("--json", "print JSON")
    .action(action(async (o) => {
      const { source, target } = endpoints(o);
      const r = reporter(!!o.json);
      if (o.abort) {
        // The reverse migration's cutover, aborted: the target unfrozen, the reverse stream resumed.
        const res = await abortCutover(target, source, reverseName(o.name), { reverse: true });
        await updateRollbackState(target, o.name, "open");
        if (o.json) printJson({ ok: true, ...res });
        else r.line(`rollback of ${o.name} aborted: ${res.unfroze ? "the target is writable again, " : ""}the rollback window stays open`);
        return;
      }
      const res = await rollbackMigration(source, target, { name: o.name, timeoutSec: o.timeout, graceSec: o.grace, verify: o.verify, jobs: o.jobs,
        onProgress: (m) => r.line(`▸ ${m}`) });
      if (o.json) printJson({ ok: true, ...res });
      else {
        const c = res.cutover;
        r.line(res.alreadyRolledBack ? `migration ${res.name} was already rolled back to the source` :
          `migration ${res.name} rolled back: the source is writable again${c ? `, fence ${c.fenceLsn}, ${c.verification ? `${c.verification.tables} tables verified ` +
          `(${c.verification.mode}), ` : ""}${c.sequencesSynced} sequences synced, downtime ${((c.downtimeMs ?? 0) / 1000).toFixed(2)} s` : ""}`);
        if (c?.timings && !res.alreadyRolledBack) r.line(`  downtime breakdown: ${formatTimings(c.timings)}`);
        if (c?.endedSessions.length) r.line(`  ended ${c.endedSessions.length} target session(s): ${describeSessions(c.endedSessions)}`);
        if (res.undoNewServerFreezeSql.length) r.line(`  the target database stays read-only; to undo: ${res.undoNewServerFreezeSql.join(" ")}`);
        r.line(`  point the application at the source; then pgferry finish --name ${res.name} removes the reverse slot and state`);
      }
    }));

  program.command("finish").description("end the rollback window: drop the reverse slot and publication on the target and pgferry's state on the source")
    .addOption(sourceOpt()).addOption(targetOpt()).addOption(nameOpt()).option("--json", "print JSON")
    .action(action(async (o) => {
      const { source, target } = endpoints(o);
      const res = await finishRollbackWindow(source, target, o.name);
      if (o.json) printJson({ ok: true, ...res });
      else process.stderr.write(res.droppedSlot || res.droppedPublication || res.removedReverseState
        ? `rollback window of ${res.name} closed: reverse slot ${res.droppedSlot ? "dropped" : "none"}, publication ${res.droppedPublication ? "dropped" : "none"}, ` +
          `state on the source ${res.removedReverseState ? "removed" : "none"}${res.discardedBytes ? ` (${res.discardedBytes} bytes not applied to the source were discarded)` : ""}\n`
        : res.previousState ? `rollback window of ${res.name} already closed (was ${res.previousState}); nothing to do\n`
          : `migration ${res.name} has no rollback window (its cutover ran without --reverse-replication); nothing to do\n`);
    }));

  program.command("cleanup").description("remove the migration's slot, publication, subscription and state (never target data)")
    .addOption(sourceOpt()).addOption(targetOpt()).addOption(nameOpt()).option("--json", "print JSON")
    .action(action(async (o) => {
      const { source, target } = endpoints(o);
      const res = await cleanupMigration(source, target, o.name);
      if (o.json) printJson({ ok: true, ...res });
      else process.stderr.write(`cleaned up ${res.name} (was ${res.previousPhase}): subscription ${res.droppedSubscription ? "dropped" : "none"}, ` +
        `slot ${res.droppedSlot ? "dropped" : "none"}, publication ${res.droppedPublication ? "dropped" : "none"}` +
        `${res.unfrozeSource ? ", source writable again" : ""}\n` +
        res.restoredSourceChanges.map((c) => `restored on the source: ${c.object} ${c.change.replace(/^.*\(was (.*)\)$/, "back to $1")} (${c.undoSql})\n`).join(""));
    }));

  program.command("agent").description("stream mode: apply changes from the slot continuously (reconnects; SIGTERM stops after the current transaction)")
    .addOption(sourceOpt()).addOption(targetOpt()).addOption(nameOpt()).option("--json", "log JSON lines")
    .option("--reverse", "rollback window: apply the target's changes to the source (give --source/--target as for the migration)")
    .option("--stall-timeout <sec>", "seconds without an answer on the replication or target connection after which the agent " +
      "treats the link as stalled and reconnects", int("--stall-timeout"), DEFAULT_STALL_TIMEOUT_SEC)
    .action(action(async (o) => {
      const given = endpoints(o);
      // Reverse: the new server (target) is read, the old one (source) written; the reverse migration is <name>_rev.
      const [source, target] = o.reverse ? [given.target, given.source] : [given.source, given.target];
      const stop = new AbortController();
      const onSignal = () => stop.abort();
      process.once("SIGTERM", onSignal);
      process.once("SIGINT", onSignal);
      const log = (message: string) => process.stderr.write(o.json ? JSON.stringify({ time: new Date().toISOString(), message }) + "\n"
        : `${new Date().toISOString()} ${message}\n`);
      const res = await runAgent(source, target, o.reverse ? { name: reverseName(o.name), signal: stop.signal, log, writeThroughFreeze: true,
        stallTimeoutSec: o.stallTimeout,
        notFound: `migration "${o.name}" has no rollback window on the ${given.source.label} (nothing to apply in reverse); open one with ` +
          `pgferry cutover --reverse-replication, or check --name` } : { name: o.name, signal: stop.signal, log, stallTimeoutSec: o.stallTimeout });
      log(`agent ${res.reason}: ${res.appliedChanges} changes applied`);
    }));

  program.command("verify").description("compare source and target: row counts, content hashes, sequences, constraints, triggers")
    .addOption(sourceOpt()).addOption(targetOpt())
    .option("--schema <schema>", "only this schema (repeatable)", collect, [])
    .option("--include <table>", "only these tables, schema.table (repeatable; as given to start)", collect, [])
    .option("--exclude <table>", "not these tables, schema.table (repeatable; as given to start: what depends on them is skipped too)", collect, [])
    .option("--counts-only", "row counts without content hashes")
    .option("--jobs <n>", "tables checked in parallel", int("--jobs"), 4)
    .addOption(new Option("--unlogged <how>", "skip: do not compare unlogged tables (default: what migration --name was started with, else compare them)").choices(["copy", "skip"]))
    .addOption(nameOpt())
    .option("--json", "print JSON")
    .action(action(async (o) => {
      const { source, target } = endpoints(o);
      let unlogged = o.unlogged as string | undefined;
      let largeObjects: boolean | undefined;
      {
        // A migration started with --unlogged skip (--no-large-objects) does not carry their content: comparing would only report that.
        const c = await connect(target);
        try {
          const started = (await readMigration(c, o.name))?.options as { unlogged?: string; largeObjects?: boolean } | undefined;
          unlogged ??= started?.unlogged;
          largeObjects = started?.largeObjects;
        } finally { await c.end().catch(() => undefined); }
      }
      const rep = await verifyMigration(source, target, { schemas: o.schema.length ? o.schema : undefined, include: o.include, exclude: o.exclude,
        hashes: !o.countsOnly, jobs: o.jobs, skipUnlogged: unlogged === "skip", largeObjects: largeObjects !== false });
      if (largeObjects === false) rep.warnings.push(`not compared: large objects (migration ${o.name} was started with --no-large-objects)`);
      if (o.json) printJson(rep);
      else {
        for (const w of rep.warnings) process.stdout.write(`  ! ${w}\n`);
        const lobs = rep.largeObjects ? `, ${rep.largeObjects.sourceCount} large objects (${rep.largeObjects.sourceBytes} bytes${rep.largeObjects.hashed ? ", hashed" : ""})` : "";
        process.stdout.write(`${rep.tables.length} tables, ${rep.sequences.length} sequences, ${rep.objects.length} constraints/triggers${lobs} checked in ${rep.seconds.toFixed(1)} s: ` +
          `${rep.ok ? "source and target are equal" : `${rep.problems.length} difference(s)`}\n`);
        for (const p of rep.problems) process.stdout.write(`  ✗ ${p}\n`);
      }
      return rep.ok ? 0 : 1;
    }));

  program.command("demo").description("two embedded servers (PostgreSQL 15 → 17), a DVD-rental database under live writes: start, stream, cut over, verify")
    .option("--scale <n>", "data size (1 ≈ 50k rows)", int("--scale"), 1)
    .addOption(new Option("--mode <mode>", "change data capture: subscription (the target applies) or stream (pgferry's agent applies)").choices(["subscription", "stream"]).default("subscription"))
    .option("--json", "print the report as JSON")
    .action(action(async (o) => {
      const { runDemo } = await import("../demo/runDemo");
      const report = await runDemo({ scale: o.scale, json: !!o.json, mode: o.mode });
      return report.verified ? 0 : 1;
    }));

  return program;
}

if (require.main === module) {
  buildProgram().parseAsync(process.argv).catch((e) => { process.exitCode = reportError(e, process.argv.includes("--json")); });
}
