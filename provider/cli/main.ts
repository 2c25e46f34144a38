#!/usr/bin/env node
/**
 * The `pgferry` command: the same engine the Pulumi resources drive. Its command and flag names are
 * a contract scripts rely on. URIs may also come from PGFERRY_SOURCE / PGFERRY_TARGET, which keeps
 * passwords out of shell history and the process list.
 */
import { Command, InvalidArgumentError, Option } from "commander";
import {
  abortCutover, cleanupMigration, cutoverMigration, finishRollbackWindow, migrationOptions, migrationStatus, parseEndpoint, reverseName,
  rollbackMigration, runAgent, startMigration, updateRollbackState, verifyMigration,
} from "../engine";
import { Monitor, serveMonitor } from "./monitor";
import { agentLog, formatStatus, formatTimings, formatWatch, printJson, reportError, reporter } from "./output";
import { describeSessions } from "../engine/cutover/cutover";
import { connect } from "../engine/core/endpoint";
import { COMMANDS, flagName, PROGRAM, SETTINGS, SettingSpec } from "../engine/core/optionSpec";
import { readMigration } from "../engine/state/state";
import { verifyIncludeWithJoined } from "../engine/cdc/ddl/joined";
import { parseDistributionFlags } from "../engine/copy/distribution";
import * as several from "./databases";

/** --database / --all-databases given: the command is about several databases (./databases.ts). */
const severalDatabases = (o: { database?: string[]; allDatabases?: boolean }) => !!(o.database?.length || o.allDatabases);

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

/** The parser of each kind of value, with the message a bad value gets (named by its flag). */
function parserOf(s: SettingSpec, flag: string): ((v: string, prev: any) => any) | undefined {
  switch (s.kind) {
    case "positiveInt": return int(flag);
    case "seconds": return nonNegative(flag);
    case "port": return port;
    case "interval": return seconds;
    case "list": return collect;
    default: return undefined;
  }
}

/**
 * A command with its description and options as the spec declares them (core/optionSpec.ts): flags, help,
 * choices, parser and default. Booleans take no default: an absent flag reads undefined (commander makes a --no-x one true).
 */
function declared(program: Command, name: string): Command {
  const spec = COMMANDS.find((c) => c.name === name)!;
  const cmd = program.command(spec.name).description(spec.description);
  for (const use of spec.options) {
    const s: SettingSpec = SETTINGS[use.setting];
    const option = new Option(s.cli!.flags, use.help ?? s.cli!.help);
    if (s.choices) option.choices(s.choices);
    const parse = parserOf(s, `--${flagName(s.cli!.flags)}`);
    if (parse) option.argParser(parse);
    if (s.kind !== "boolean" && s.default !== undefined && use.default !== false) option.default(Array.isArray(s.default) ? [...s.default] : s.default);
    cmd.addOption(option);
  }
  return cmd;
}

/** Run a command body; map errors to a printed message and exit code 1. */
function action<T extends { json?: boolean }>(fn: (o: T, cmd: Command) => Promise<number | void>) {
  return async (o: T, cmd: Command) => {
    try {
      process.exitCode = (await fn(o, cmd)) ?? 0;
    } catch (e) {
      process.exitCode = reportError(e, !!o.json);
    }
  };
}

export function buildProgram(): Command {
  const program = new Command(PROGRAM.name)
    .description(PROGRAM.description)
    .showHelpAfterError();

  declared(program, "start")
    .action(action(async (o, cmd) => {
      const { source, target } = endpoints(o);
      const opts = migrationOptions({ snapshotTimeoutSec: o.snapshotTimeout, stallTimeoutSec: o.stallTimeout, largeObjects: o.largeObjects !== false, roles: !!o.roles, name: o.name,
        // --mode not given: the engine picks (stream where tables are distributed, else subscription)
        mode: cmd.getOptionValueSource("mode") === "default" ? undefined : o.mode, plugin: o.plugin, ddl: o.ddl, jobs: o.jobs, schemas: o.schema, include: o.include, exclude: o.exclude,
        replicaIdentityFull: !!o.replicaIdentityFull, unlogged: o.unlogged, sourceHostForTarget: o.sourceHostForTarget,
        distribution: parseDistributionFlags({ distribute: o.distribute, reference: o.reference, colocate: o.colocate }) });
      if (severalDatabases(o)) return several.startCommand(o, opts, o.until === "schema" ? "SchemaSync" : undefined);
      const r = reporter(!!o.json);
      const res = await startMigration(source, target, opts, (e) => r.event(e), o.until === "schema" ? "SchemaSync" : undefined).finally(() => r.done());
      if (o.json) printJson({ ok: true, ...res });
      else if (o.until === "schema" && !res.alreadyRunning) r.line(`migration ${res.name} stopped after the schema (phase ${res.phase}): the target's tables exist, ` +
        `empty, and no replication slot exists yet; run pgferry start again (same options, without --until) to load and stream`);
      else if (res.alreadyRunning) r.line(`migration ${res.name} is already ${res.phase}; nothing to do`);
      else r.line(`migration ${res.name} is ${res.phase}: changes stream to the target; run pgferry cutover when ready` +
        (res.load ? ` (loaded ${res.load.rows} rows in ${res.load.seconds.toFixed(1)} s` +
          `${res.load.largeObjects ? `, ${res.load.largeObjects.objects} large objects (${res.load.largeObjects.bytes} bytes) in ${res.load.largeObjects.seconds.toFixed(1)} s` : ""})` : ""));
      if (!o.json && res.roles?.created.length) {
        r.line(`roles created on the target (--roles): ${res.roles.created.join(", ")}` +
          `${res.roles.memberships.length ? `; memberships ${res.roles.memberships.join(", ")}` : ""}` +
          `${res.roles.passwords.length ? `; passwords copied for ${res.roles.passwords.join(", ")}` : ""}`);
      }
      if (!o.json && res.notCarried.length) {
        r.line(`not carried to the target (${res.notCarried.length}):\n` +
          res.notCarried.map((x) => `  - ${x.kind} ${x.object}: ${x.reason}\n      fix: ${x.fix}`).join("\n"));
      }
    }));

  declared(program, "status")
    .action(action(async (o) => {
      if (severalDatabases(o)) return several.statusCommand(o);
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

  declared(program, "cutover")
    .action(action(async (o) => {
      if (severalDatabases(o)) return several.cutoverCommand(o);
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

  declared(program, "rollback")
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

  declared(program, "finish")
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

  declared(program, "cleanup")
    .action(action(async (o) => {
      if (severalDatabases(o)) return several.cleanupCommand(o);
      const { source, target } = endpoints(o);
      const res = await cleanupMigration(source, target, o.name);
      if (o.json) printJson({ ok: true, ...res });
      else process.stderr.write(`cleaned up ${res.name} (was ${res.previousPhase}): subscription ${res.droppedSubscription ? "dropped" : "none"}, ` +
        `slot ${res.droppedSlot ? "dropped" : "none"}, publication ${res.droppedPublication ? "dropped" : "none"}` +
        `${res.unfrozeSource ? ", source writable again" : ""}\n` +
        res.restoredSourceChanges.map((c) => `restored on the source: ${c.object} ${c.change.replace(/^.*\(was (.*)\)$/, "back to $1")} (${c.undoSql})\n`).join("") +
        (res.createdRoles.length ? `roles created by start --roles are kept (roles are global to the target server); to drop them, first ` +
          `REASSIGN OWNED / DROP OWNED BY them in each target database, then run:\n${res.dropRoleStatements.map((s) => `  ${s}\n`).join("")}` : ""));
    }));

  declared(program, "agent")
    .action(action(async (o) => {
      if (severalDatabases(o)) return several.agentCommand(o);
      const given = endpoints(o);
      // Reverse: the new server (target) is read, the old one (source) written; the reverse migration is <name>_rev.
      const [source, target] = o.reverse ? [given.target, given.source] : [given.source, given.target];
      const stop = new AbortController();
      const onSignal = () => stop.abort();
      process.once("SIGTERM", onSignal);
      process.once("SIGINT", onSignal);
      const log = agentLog(Boolean(o.json));
      const res = await runAgent(source, target, o.reverse ? { name: reverseName(o.name), signal: stop.signal, log, writeThroughFreeze: true,
        stallTimeoutSec: o.stallTimeout,
        notFound: `migration "${o.name}" has no rollback window on the ${given.source.label} (nothing to apply in reverse); open one with ` +
          `pgferry cutover --reverse-replication, or check --name` } : { name: o.name, signal: stop.signal, log, stallTimeoutSec: o.stallTimeout });
      log(`agent ${res.reason}: ${res.appliedChanges} changes applied`);
    }));

  declared(program, "verify")
    .action(action(async (o) => {
      if (severalDatabases(o)) return several.verifyCommand(o);
      const { source, target } = endpoints(o);
      let unlogged = o.unlogged as string | undefined;
      let largeObjects: boolean | undefined;
      let include = o.include as string[];
      let joined: string[] = [];
      {
        // A migration started with --unlogged skip (--no-large-objects) does not carry their content: comparing would only report that.
        const c = await connect(target);
        try {
          const m = await readMigration(c, o.name);
          const started = m?.options;
          unlogged ??= started?.unlogged;
          largeObjects = started?.largeObjects;
          // --ddl replicate: tables its DDL created are part of the migration, though --include does not name them.
          ({ include, joined } = await verifyIncludeWithJoined(source, m, include));
        } finally { await c.end().catch(() => undefined); }
      }
      const rep = await verifyMigration(source, target, { schemas: o.schema.length ? o.schema : undefined, include, exclude: o.exclude,
        hashes: !o.countsOnly, jobs: o.jobs, skipUnlogged: unlogged === "skip", largeObjects: largeObjects !== false });
      if (joined.length) rep.warnings.push(`also compared: ${joined.join(", ")} (created by replicated DDL during migration ${o.name}, not named by --include)`);
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

  declared(program, "demo")
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
