#!/usr/bin/env node
/**
 * The `pgferry` command: the same engine the Pulumi resources drive. Its command and flag names are
 * a contract scripts rely on. URIs may also come from PGFERRY_SOURCE / PGFERRY_TARGET, which keeps
 * passwords out of shell history and the process list.
 */
import { Command, InvalidArgumentError, Option } from "commander";
import {
  cleanupMigration, cutoverMigration, DEFAULT_NAME, migrationOptions, migrationStatus, parseEndpoint, runAgent, startMigration, verifyMigration,
} from "../engine";
import { formatStatus, printJson, reportError, reporter } from "./output";

const collect = (v: string, prev: string[]) => [...prev, v];
const int = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive whole number`);
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
    .addOption(new Option("--plugin <plugin>", "stream mode's output plugin: pgoutput (needs a publication) or wal2json (for sources without publications)").choices(["pgoutput", "wal2json"]).default("pgoutput"))
    .option("--jobs <n>", "parallel COPY workers and index builders", int("--jobs"), 4)
    .option("--schema <schema>", "migrate this schema (repeatable; default: all user schemas)", collect, [])
    .option("--include <table>", "only these tables, schema.table (repeatable)", collect, [])
    .option("--exclude <table>", "never these tables, schema.table (repeatable)", collect, [])
    .option("--replica-identity-full", "set REPLICA IDENTITY FULL on source tables without a key instead of refusing")
    .option("--source-host-for-target <host[:port]>", "how the target server reaches the source, when not as pgferry does")
    .option("--json", "print one JSON document instead of progress")
    .action(action(async (o) => {
      const { source, target } = endpoints(o);
      const opts = migrationOptions({ name: o.name, mode: o.mode, plugin: o.plugin, jobs: o.jobs, schemas: o.schema, include: o.include, exclude: o.exclude,
        replicaIdentityFull: !!o.replicaIdentityFull, sourceHostForTarget: o.sourceHostForTarget });
      const r = reporter(!!o.json);
      const res = await startMigration(source, target, opts, (e) => r.event(e)).finally(() => r.done());
      if (o.json) printJson({ ok: true, ...res });
      else if (res.alreadyRunning) r.line(`migration ${res.name} is already ${res.phase}; nothing to do`);
      else r.line(`migration ${res.name} is ${res.phase}: changes stream to the target; run pgferry cutover when ready` +
        (res.load ? ` (loaded ${res.load.rows} rows in ${res.load.seconds.toFixed(1)} s)` : ""));
    }));

  program.command("status").description("phase, per-table progress, lag and pending changes")
    .addOption(sourceOpt()).addOption(targetOpt()).addOption(nameOpt())
    .option("--json", "print JSON").option("--watch", "refresh every 2 seconds until interrupted")
    .action(action(async (o) => {
      const target = parseEndpoint(o.target ?? process.env.PGFERRY_TARGET, "target");
      const src = o.source ?? process.env.PGFERRY_SOURCE;
      const source = src ? parseEndpoint(src, "source") : undefined;
      for (;;) {
        const s = await migrationStatus(source, target, o.name);
        if (o.json) printJson(s);
        else process.stdout.write((o.watch && process.stdout.isTTY ? "\x1b[2J\x1b[H" : "") + formatStatus(s) + "\n");
        if (!o.watch) return s.phase === "NotFound" || s.phase === "Failed" ? 1 : 0;
        await new Promise((r) => setTimeout(r, 2000));
      }
    }));

  program.command("cutover").description("stop writes, wait for the fence, sync sequences, add foreign keys, end replication")
    .addOption(sourceOpt()).addOption(targetOpt()).addOption(nameOpt())
    .option("--freeze-writes", "make the source read-only for every role and end other sessions (default: the application has stopped)")
    .option("--timeout <sec>", "seconds to wait for the target to apply up to the fence", int("--timeout"), 300)
    .option("--jobs <n>", "parallel foreign key validation", int("--jobs"), 4)
    .option("--json", "print JSON")
    .action(action(async (o) => {
      const { source, target } = endpoints(o);
      const r = reporter(!!o.json);
      const res = await cutoverMigration(source, target, { name: o.name, freezeWrites: !!o.freezeWrites, timeoutSec: o.timeout, jobs: o.jobs,
        onProgress: (m) => r.line(`▸ ${m}`) });
      if (o.json) printJson({ ok: true, ...res });
      else {
        r.line(res.alreadyCompleted ? `migration ${res.name} was already Completed` :
          `migration ${res.name} Completed: fence ${res.fenceLsn}, ${res.sequencesSynced} sequences synced, ` +
          `${res.heldBackApplied} held-back objects applied, downtime ${((res.downtimeMs ?? 0) / 1000).toFixed(2)} s`);
        if (res.endedSessions.length) r.line(`ended ${res.endedSessions.length} source session(s): ` +
          res.endedSessions.map((s) => `${s.user}/${s.application || "-"} (pid ${s.pid})`).join(", "));
        if (res.sourceLeftReadOnly) r.line(`the source database stays read-only; undo with ALTER DATABASE … RESET default_transaction_read_only`);
      }
    }));

  program.command("cleanup").description("remove the migration's slot, publication, subscription and state (never target data)")
    .addOption(sourceOpt()).addOption(targetOpt()).addOption(nameOpt()).option("--json", "print JSON")
    .action(action(async (o) => {
      const { source, target } = endpoints(o);
      const res = await cleanupMigration(source, target, o.name);
      if (o.json) printJson({ ok: true, ...res });
      else process.stderr.write(`cleaned up ${res.name} (was ${res.previousPhase}): subscription ${res.droppedSubscription ? "dropped" : "none"}, ` +
        `slot ${res.droppedSlot ? "dropped" : "none"}, publication ${res.droppedPublication ? "dropped" : "none"}` +
        `${res.unfrozeSource ? ", source writable again" : ""}\n`);
    }));

  program.command("agent").description("stream mode: apply changes from the slot continuously (reconnects; SIGTERM stops after the current transaction)")
    .addOption(sourceOpt()).addOption(targetOpt()).addOption(nameOpt()).option("--json", "log JSON lines")
    .action(action(async (o) => {
      const { source, target } = endpoints(o);
      const stop = new AbortController();
      const onSignal = () => stop.abort();
      process.once("SIGTERM", onSignal);
      process.once("SIGINT", onSignal);
      const log = (message: string) => process.stderr.write(o.json ? JSON.stringify({ time: new Date().toISOString(), message }) + "\n"
        : `${new Date().toISOString()} ${message}\n`);
      const res = await runAgent(source, target, { name: o.name, signal: stop.signal, log });
      log(`agent ${res.reason}: ${res.appliedChanges} changes applied${res.conflicts ? `, ${res.conflicts} updates/deletes found no row` : ""}`);
    }));

  program.command("verify").description("compare source and target: row counts, content hashes, sequences, constraints, triggers")
    .addOption(sourceOpt()).addOption(targetOpt())
    .option("--schema <schema>", "only this schema (repeatable)", collect, [])
    .option("--counts-only", "row counts without content hashes")
    .option("--jobs <n>", "tables checked in parallel", int("--jobs"), 4)
    .option("--json", "print JSON")
    .action(action(async (o) => {
      const { source, target } = endpoints(o);
      const rep = await verifyMigration(source, target, { schemas: o.schema.length ? o.schema : undefined, hashes: !o.countsOnly, jobs: o.jobs });
      if (o.json) printJson(rep);
      else {
        process.stdout.write(`${rep.tables.length} tables, ${rep.sequences.length} sequences, ${rep.objects.length} constraints/triggers checked in ${rep.seconds.toFixed(1)} s: ` +
          `${rep.ok ? "source and target are equal" : `${rep.problems.length} difference(s)`}\n`);
        for (const p of rep.problems) process.stdout.write(`  ✗ ${p}\n`);
      }
      return rep.ok ? 0 : 1;
    }));

  program.command("demo").description("two embedded servers (PostgreSQL 15 → 17), a DVD-rental database under live writes: start, stream, cut over, verify")
    .option("--scale <n>", "data size (1 ≈ 50k rows)", int("--scale"), 1)
    .option("--json", "print the report as JSON")
    .action(action(async (o) => {
      const { runDemo } = await import("../demo/runDemo");
      const report = await runDemo({ scale: o.scale, json: !!o.json });
      return report.verified ? 0 : 1;
    }));

  return program;
}

if (require.main === module) {
  buildProgram().parseAsync(process.argv).catch((e) => { process.exitCode = reportError(e, process.argv.includes("--json")); });
}
