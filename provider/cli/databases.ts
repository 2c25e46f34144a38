/**
 * The commands with --database (repeatable) or --all-databases: several databases of one server in one migration
 * (provider/engine/databases.ts). main.ts hands a command here when either flag is given; without them nothing here runs.
 */
import {
  abortDatabases, agentDatabases, cleanupDatabases, cutoverDatabases, databasesStatus, memberName, MigrationOptions, PgferryError, serverEndpoints,
  startDatabases, verifyDatabases,
} from "../engine";
import { DatabaseSelection } from "../engine/databases";
import { agentLog, formatStatus, formatTimings, printJson, reporter } from "./output";

export const selectionOf = (o: { database?: string[]; allDatabases?: boolean }): DatabaseSelection =>
  ({ databases: o.database ?? [], allDatabases: !!o.allDatabases });

// An empty --source "" counts as not given (status reads the target alone).
const uris = (o: { source?: string; target?: string }) => [(o.source ?? process.env.PGFERRY_SOURCE) || undefined, o.target ?? process.env.PGFERRY_TARGET] as const;

const seconds = (ms?: number) => `${((ms ?? 0) / 1000).toFixed(2)} s`;

function refuse(flag: string, why: string, fix: string): never {
  throw new PgferryError("database_conflict", `${flag} cannot be used with --database/--all-databases: ${why}; fix: ${fix}`);
}

export async function startCommand(o: any, opts: MigrationOptions, until?: "SchemaSync"): Promise<number> {
  const sel = selectionOf(o);
  const [s, t] = uris(o);
  const { source, target } = serverEndpoints(s, t, sel);
  const r = reporter(!!o.json);
  let current: string | undefined;
  const res = await startDatabases(source!, target, sel, opts, (db, e) => {
    if (db !== current) { current = db; r.line(`── database ${db} (migration ${memberName(opts.name, db)}) ──`); }
    r.event(e);
  }, until).finally(() => r.done());
  if (o.json) { printJson({ ok: true, ...res }); return 0; }
  if (res.skipped.length) r.line(`skipped by --all-databases: ${res.skipped.map((x) => `${x.database} (${x.reason})`).join(", ")}`);
  for (const d of res.databases) {
    r.line(`database ${d.database}: migration ${d.migration} is ${d.phase}${d.alreadyRunning ? " (already; nothing to do)" : ""}` +
      (d.load ? ` (loaded ${d.load.rows} rows in ${d.load.seconds.toFixed(1)} s)` : ""));
    for (const x of d.notCarried) r.line(`  not carried: ${x.kind} ${x.object}: ${x.reason}\n      fix: ${x.fix}`);
  }
  r.line(`migration ${res.name}: ${res.databases.length} database(s) (${res.databases.map((d) => d.database).join(", ")}); ` +
    (until ? "run pgferry start again without --until to load and stream" : "changes stream to the target; run pgferry cutover with the same databases when ready"));
  return 0;
}

export async function statusCommand(o: any): Promise<number> {
  const sel = selectionOf(o);
  if (o.serve !== undefined) refuse("--serve", "the web monitor shows one database's migration", `run status --serve per database (--name <name>_<database> ` +
    `and that database in --target), or status --watch --database …`);
  const [s, t] = uris(o);
  const { source, target } = serverEndpoints(s, t, sel, { sourceOptional: true });
  const once = async (countPending: boolean) => {
    const st = await databasesStatus(source, target, o.name, sel, { countPending });
    if (o.json) printJson(st);
    else {
      process.stdout.write(`migration ${st.name}: ${st.phase} in ${st.databases.length} database(s)` +
        `${st.downtimeMs !== undefined ? `, downtime ${seconds(st.downtimeMs)} (one cutover)` : ""}\n`);
      for (const d of st.databases) process.stdout.write(`── database ${d.database} ──\n${formatStatus(d.status)}\n`);
    }
    return st;
  };
  if (!o.watch) {
    const st = await once(true);
    return st.databases.some((d) => d.status.phase === "NotFound" || d.status.phase === "Failed") ? 1 : 0;
  }
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    while (!stop.signal.aborted) {
      await once(false);
      if (!o.json) process.stdout.write("\n");
      await new Promise<void>((res) => { const tm = setTimeout(res, o.interval * 1000); stop.signal.addEventListener("abort", () => { clearTimeout(tm); res(); }); });
    }
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  return 0;
}

export async function cutoverCommand(o: any): Promise<number> {
  const sel = selectionOf(o);
  if (o.reverseReplication) refuse("--reverse-replication", "a rollback window serves one database's migration (rollback and finish take no --database)",
    "cut over without --reverse-replication, or migrate the databases one by one");
  const [s, t] = uris(o);
  const { source, target } = serverEndpoints(s, t, sel);
  const r = reporter(!!o.json);
  if (o.abort) {
    const res = await abortDatabases(source!, target, o.name, sel);
    if (o.json) printJson({ ok: true, ...res });
    else for (const x of res.databases) r.line(`database ${x.database}: cutover aborted (was ${x.previousPhase}): ${x.unfroze ? "source writable again, " : ""}phase ReadyToCutover`);
    return 0;
  }
  const res = await cutoverDatabases(source!, target, sel, { name: o.name, freezeWrites: !!o.freezeWrites, timeoutSec: o.timeout, jobs: o.jobs,
    graceSec: o.grace, verify: o.verify, stallTimeoutSec: o.stallTimeout }, (db, m) => r.line(`▸ [${db}] ${m}`));
  if (o.json) { printJson({ ok: true, ...res }); return 0; }
  r.line(res.alreadyCompleted ? `migration ${res.name} was already Completed in ${res.databases.length} database(s) (downtime ${seconds(res.downtimeMs)})` :
    `migration ${res.name} Completed in ${res.databases.length} database(s): downtime ${seconds(res.downtimeMs)} (first freeze → last completion)`);
  for (const d of res.databases) {
    r.line(`  ${d.database}: fence ${d.fenceLsn}, ${d.verification ? `${d.verification.tables} tables verified (${d.verification.mode}), ` : ""}` +
      `${d.sequencesSynced} sequences synced, downtime ${seconds(d.downtimeMs)}${d.timings && !d.alreadyCompleted ? `; ${formatTimings(d.timings)}` : ""}`);
    if (d.sourceLeftReadOnly) r.line(`    the source database ${d.database} stays read-only; to undo: ${d.undoFreezeSql.join(" ")}`);
  }
  return 0;
}

export async function verifyCommand(o: any): Promise<number> {
  const sel = selectionOf(o);
  const [s, t] = uris(o);
  const { source, target } = serverEndpoints(s, t, sel);
  const rep = await verifyDatabases(source!, target, o.name, sel, { schemas: o.schema, include: o.include, exclude: o.exclude, hashes: !o.countsOnly,
    jobs: o.jobs, unlogged: o.unlogged });
  if (o.json) printJson(rep);
  else {
    for (const { database, report } of rep.databases) {
      for (const w of report.warnings) process.stdout.write(`  ! [${database}] ${w}\n`);
      process.stdout.write(`database ${database}: ${report.tables.length} tables, ${report.sequences.length} sequences, ${report.objects.length} ` +
        `constraints/triggers checked in ${report.seconds.toFixed(1)} s: ${report.ok ? "source and target are equal" : `${report.problems.length} difference(s)`}\n`);
      for (const p of report.problems) process.stdout.write(`  ✗ ${p}\n`);
    }
  }
  return rep.ok ? 0 : 1;
}

export async function cleanupCommand(o: any): Promise<number> {
  const sel = selectionOf(o);
  const [s, t] = uris(o);
  const { source, target } = serverEndpoints(s, t, sel);
  const res = await cleanupDatabases(source!, target, o.name, sel);
  if (o.json) printJson({ ok: true, ...res });
  else for (const d of res.databases) {
    process.stderr.write(`database ${d.database}: cleaned up ${d.name} (was ${d.previousPhase}): subscription ${d.droppedSubscription ? "dropped" : "none"}, ` +
      `slot ${d.droppedSlot ? "dropped" : "none"}, publication ${d.droppedPublication ? "dropped" : "none"}${d.unfrozeSource ? ", source writable again" : ""}\n`);
  }
  return 0;
}

export async function agentCommand(o: any): Promise<number> {
  const sel = selectionOf(o);
  if (o.reverse) refuse("--reverse", "a rollback window serves one database's migration", "run pgferry agent --reverse per database migration");
  const [s, t] = uris(o);
  const { source, target } = serverEndpoints(s, t, sel);
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);
  const log = agentLog(Boolean(o.json));
  try {
    const res = await agentDatabases(source!, target, o.name, sel, { signal: stop.signal, log, stallTimeoutSec: o.stallTimeout });
    log(`agent ${res.reason}: ${res.appliedChanges} changes applied in ${res.databases.length} database(s) ` +
      `(${res.databases.map((d) => `${d.database} ${d.result.appliedChanges}`).join(", ")})`);
  } finally {
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
  }
  return 0;
}
