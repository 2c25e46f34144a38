/**
 * How the CLI talks: progress bars on a TTY, plain lines otherwise, one JSON document with --json.
 * Errors are printed with their findings and fixes; nothing printed ever contains a password.
 */
import { Format, MultiBar, Presets, SingleBar } from "cli-progress";
import { fixOf, formatFindings, PgferryError } from "../engine/core/errors";
import type { MigrationEvent } from "../engine/start";
import type { MigrationStatus } from "../engine/status";
import { describeRollbackWindow } from "../engine/rollback/rollback";
import type { CutoverTimings } from "../engine/state/state";
import type { TableLoadProgress } from "../engine/copy/load";
import type { MonitorView } from "./monitor";

/** The agent's log line on stderr: a timestamped line, or one JSON object per line with --json. */
export function agentLog(json: boolean): (message: string) => void {
  return (message) => process.stderr.write(json ? JSON.stringify({ time: new Date().toISOString(), message }) + "\n"
    : `${new Date().toISOString()} ${message}\n`);
}

export function human(bytes: number): string {
  const u = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (bytes >= 1024 && i < u.length - 1) { bytes /= 1024; i++; }
  return `${bytes.toFixed(i ? 1 : 0)} ${u[i]}`;
}

export interface Reporter {
  event(e: MigrationEvent): void;
  line(text: string): void;
  done(): void;
}

/** Reporter for start: one bar per table while loading (TTY), else a line per finished table. */
export function reporter(json: boolean): Reporter {
  const tty = !json && process.stderr.isTTY;
  let multi: MultiBar | undefined;
  const bars = new Map<string, SingleBar>();
  const write = (s: string) => { if (!json) process.stderr.write(s + "\n"); };
  return {
    event(e) {
      if (json) return;
      if (e.type === "phase") { multi?.stop(); multi = undefined; write(`▸ ${e.phase}: ${e.message}`); return; }
      if (e.type === "finding") { write(formatFindings([e.finding])); return; }
      if (e.type === "snapshotWait") { multi?.stop(); multi = undefined; write(`  ${e.message}`); return; }
      if (e.type === "sourceChange") {
        if (e.action === "changed") {
          write(`  changed on the source (recorded on the target with its undo; restored by pgferry cleanup, a completed cutover or a failed load):`);
          for (const c of e.changes) write(`    ${c.object}: ${c.change}; undo: ${c.undoSql};`);
        } else {
          write(`  restored on the source:`);
          for (const c of e.changes) write(`    ${c.object}: ${c.undoSql};`);
        }
        return;
      }
      if (e.type === "table") {
        const p: TableLoadProgress = e.progress;
        if (!tty) { if (p.done) write(`  copied ${p.table}: ${p.rows} rows, ${human(p.bytes)} in ${p.seconds.toFixed(1)}s`); return; }
        multi ??= new MultiBar({ format: " {bar} {percentage}% | {table} | {rows} rows | {size}", hideCursor: true, clearOnComplete: false,
          stream: process.stderr }, Presets.shades_classic);
        let bar = bars.get(p.table);
        const total = Math.max(p.estimatedBytes, p.bytes, 1);
        if (!bar) { bar = multi.create(total, 0, { table: p.table, rows: 0, size: "0 B" }); bars.set(p.table, bar); }
        bar.setTotal(p.done ? Math.max(p.bytes, 1) : total);
        bar.update(p.done ? Math.max(p.bytes, 1) : Math.min(p.bytes, total), { table: p.table, rows: p.rows, size: human(p.bytes) });
      }
    },
    line(text) { multi?.stop(); multi = undefined; write(text); },
    done() { multi?.stop(); multi = undefined; },
  };
}

export function printJson(doc: unknown): void {
  process.stdout.write(JSON.stringify(doc, (_k, v) => (typeof v === "bigint" ? v.toString() : v), 2) + "\n");
}

/** Print an error (with findings) and return the process exit code. */
export function reportError(e: unknown, json: boolean): number {
  const err = e instanceof PgferryError ? e : undefined;
  const message = e instanceof Error ? e.message : String(e);
  if (json) {
    // {code, message, fix}: code from the typed list (core/errors.ts ERROR_CODES), fix null when there is none to give.
    printJson({ ok: false, error: { code: err?.code ?? "internal", message, fix: err?.fix ?? null, findings: err?.findings ?? [] } });
  } else {
    process.stderr.write(`pgferry: ${message}\n`);
    if (err?.findings.length) process.stderr.write(formatFindings(err.findings) + "\n");
    // The code's general fix, when the message does not carry its own (findings carry theirs).
    else if (err?.fix && !fixOf(message)) process.stderr.write(`  fix: ${err.fix}\n`);
  }
  return 1;
}

export function formatStatus(s: MigrationStatus): string {
  const lines = [`migration ${s.name}: ${s.phase}${s.error ? ` (error: ${s.error})` : ""}`];
  if (s.phase === "NotFound") return lines[0] + " — no such migration on the target";
  lines.push(`  loaded ${s.rowsCopied} rows, ${human(s.bytesCopied)} in ${s.tables.length} tables`);
  if (s.lagBytes !== undefined) {
    lines.push(`  lag ${human(s.lagBytes)}${s.lagSeconds !== undefined ? `, ${s.lagSeconds.toFixed(1)} s` : ""}` +
      `${s.caughtUp ? " — caught up, pending changes 0" : ""} (source ${s.sourceLsn}, confirmed ${s.confirmedLsn})`);
  }
  if (s.subscription?.exists) {
    lines.push(`  subscription ${s.subscription.workerPid ? `running (pid ${s.subscription.workerPid})` : "not running"}` +
      `${s.subscription.applyErrors ? `, ${s.subscription.applyErrors} apply errors — see the target's log` : ""}`);
  }
  if (s.slotLost) lines.push(`  ✗ SLOT LOST: ${s.slotLost}`);
  if (s.applyError) lines.push(`  ✗ ${s.applyError.kind === "divergence" ? "DIVERGENCE — cutover refuses until it is repaired" : s.applyError.code?.startsWith("ddl_") ? `DDL NOT REPLICATED (${s.applyError.code}) — cutover refuses` : "apply failing"} ` +
    `${s.applyError.at ? `(since ${s.applyError.at})` : "(subscription)"}: ${s.applyError.message}`);
  if (s.schemaDifferences?.length) {
    lines.push(`  schema changed on the source — cutover refuses until the target matches (${s.schemaDifferences.length}):`);
    for (const d of s.schemaDifferences) lines.push(`    ✗ ${d.problem}${d.fix ? `\n        fix on the target: ${d.fix}` : ""}`);
  }
  if (s.truncatedPartitions?.length) {
    lines.push(`  ! partition(s) truncated (or rewritten) on the source since the load — a TRUNCATE of a single partition is not replicated, ` +
      `so the target may still hold their old rows; the cutover copies them again while writes are stopped (${s.truncatedPartitions.length}): ` +
      s.truncatedPartitions.join(", "));
  }
  if (s.newTablesAwaitingSync?.length) {
    lines.push(`  ! table(s) created on the source while streaming, not yet applied by the subscription (their rows are copied by ` +
      `PostgreSQL's table synchronisation when pgferry cutover refreshes it, before the freeze) (${s.newTablesAwaitingSync.length}): ` +
      s.newTablesAwaitingSync.map((t) => `${t.table} (${t.state})`).join(", "));
  }
  if (s.newTablesLeftOut?.length) {
    lines.push(`  ! table(s) created on the source while streaming that the selection leaves out (--exclude names them, or a ` +
      `partition of a left-out table), left out like at start (not created on ` +
      `the target, not replicated, not compared by the cutover or verify) (${s.newTablesLeftOut.length}): ${s.newTablesLeftOut.join(", ")}`);
  }
  if (s.largeObjects && (s.largeObjects.carried || s.largeObjects.sourceCount)) {
    const lo = s.largeObjects;
    const size = (b?: number) => (b === undefined ? "size not readable by this role" : human(b));
    lines.push(`  large objects: ${lo.targetCount} (${size(lo.targetBytes)}) on the target` +
      `${lo.sourceCount !== undefined ? `, ${lo.sourceCount} (${size(lo.sourceBytes)}) on the source` : ""}` +
      `${lo.carried ? "" : " — not carried (--no-large-objects)"}`);
  }
  if (s.sourceChanges?.length) {
    lines.push(`  source changes (undone by cutover or cleanup) (${s.sourceChanges.length}):`);
    for (const c of s.sourceChanges) lines.push(`    - ${c.object}: ${c.change}`);
  }
  if (s.notCarried?.length) {
    lines.push(`  not carried to the target (${s.notCarried.length}):`);
    for (const x of s.notCarried) lines.push(`    - ${x.kind} ${x.object}: ${x.reason}\n        fix: ${x.fix}`);
  }
  if (s.sourceFrozen && s.phase !== "Completed") lines.push(`  the source is frozen (read-only) by this cutover`);
  if (s.replicationPaused) lines.push(s.phase === "Completed" ? `  the slot and publication on the source are being dropped after the cutover; if they stay, pgferry cutover drops them` :
    `  replication paused by the cutover (resume: pgferry cutover to retry, or pgferry cutover --abort)`);
  if (s.rollbackWindow) lines.push(`  ${describeRollbackWindow(s.rollbackWindow)}`);
  if (s.downtimeMs !== undefined) lines.push(`  cutover downtime ${(s.downtimeMs / 1000).toFixed(2)} s${s.cutoverTimings ? ` (${formatTimings(s.cutoverTimings)})` : ""}`);
  for (const t of s.tables) {
    const pct = t.status === "copied" ? 100 : t.estimatedBytes ? Math.min(99, Math.round((100 * t.bytes) / t.estimatedBytes)) : 0;
    lines.push(`  ${t.status.padEnd(7)} ${String(pct).padStart(3)}%  ${t.schema}.${t.table}  ${t.rows} rows  ${human(t.bytes)}`);
  }
  return lines.join("\n");
}

/** A bar drawn by cli-progress's own formatter; `fancy` (a TTY) uses block characters, logs get plain ASCII. */
function bar(fraction: number, size: number, fancy: boolean): string {
  const [full, empty] = fancy ? ["\u2588", "\u2591"] : ["#", "-"];
  return Format.BarFormat(Math.max(0, Math.min(1, fraction)), { barsize: size, barCompleteString: full.repeat(size),
    barIncompleteString: empty.repeat(size), barGlue: "" });
}

const eta = (s?: number) => (s === undefined || !Number.isFinite(s) ? "" : `ETA ${Format.TimeFormat(Math.round(s), { autopaddingChar: "0" }, 1)}`);
const rate = (bytesPerSec?: number, rowsPerSec?: number) =>
  bytesPerSec === undefined ? "" : `${human(bytesPerSec)}/s ${Math.round(rowsPerSec ?? 0)} rows/s`;

/**
 * One frame of `status --watch`: phase, the load (overall and per table: bar, rows and bytes, rate, ETA),
 * then CDC (lag, pending, positions, stream-mode applied counts). Plain text so it reads the same in a
 * terminal over SSH and in a log file; `fancy` only changes the bar characters.
 */
export function formatWatch(v: MonitorView, fancy: boolean): string {
  const s = v.status;
  const lines = [`pgferry ${s.name} · ${s.phase}${s.mode ? ` · mode ${s.mode}` : ""} · ${v.updatedAt.replace("T", " ").replace(/\.\d+Z$/, "Z")}` +
    (v.up ? "" : ` · status read failed, figures from the last read: ${v.error}`)];
  if (s.error) lines.push(`  error: ${s.error}`);
  if (s.phase === "NotFound") return lines.concat("  no such migration on the target").join("\n");
  const l = v.load;
  lines.push(`load  ${bar(l.fraction, 20, fancy)} ${String(Math.floor(100 * l.fraction)).padStart(3)}%  ${l.rows} rows` +
    `${l.estimatedRows ? ` of ~${l.estimatedRows}` : ""}  ${human(l.bytes)}  ${[rate(l.bytesPerSec, l.rowsPerSec), eta(l.etaSeconds)].filter(Boolean).join("  ")}`.trimEnd());
  const width = Math.min(40, Math.max(5, ...v.tables.map((t) => t.name.length)));
  for (const t of v.tables) {
    const name = t.name.length > width ? t.name.slice(0, width - 1) + "…" : t.name.padEnd(width);
    lines.push(`  ${t.status.padEnd(7)} ${bar(t.fraction, 12, fancy)} ${String(Math.floor(100 * t.fraction)).padStart(3)}%  ${name}  ` +
      `${String(t.rows).padStart(9)} rows  ${human(t.bytes).padStart(9)}  ${[rate(t.bytesPerSec, t.rowsPerSec), eta(t.etaSeconds)].filter(Boolean).join("  ")}`.trimEnd());
  }
  if (s.lagBytes !== undefined || s.lagSeconds !== undefined) {
    lines.push(`cdc   lag ${s.lagBytes !== undefined ? human(s.lagBytes) : "?"}${s.lagSeconds !== undefined ? `, ${s.lagSeconds.toFixed(1)} s` : ""}` +
      ` · pending changes ${s.pendingChanges !== undefined ? s.pendingChanges : "unknown while a consumer runs"}${s.caughtUp ? " (caught up)" : ""}`);
    lines.push(`      source ${s.sourceLsn ?? "?"} · confirmed ${s.confirmedLsn ?? "?"}${s.appliedLsn ? ` · applied ${s.appliedLsn}` : ""}`);
  } else if (s.phase === "ReadyToCutover") {
    lines.push(`cdc   lag not measured (give --source or PGFERRY_SOURCE)`);
  }
  if (s.subscription?.exists) {
    lines.push(`      subscription ${s.subscription.workerPid ? `running (pid ${s.subscription.workerPid})` : "not running"}` +
      `${s.subscription.applyErrors ? `, ${s.subscription.applyErrors} apply errors — see the target's log` : ""}`);
  }
  if (s.applied?.length) {
    lines.push(`      applied ${"inserts".padStart(9)} ${"updates".padStart(9)} ${"deletes".padStart(9)}  table`);
    for (const a of s.applied) lines.push(`              ${String(a.inserts).padStart(9)} ${String(a.updates).padStart(9)} ${String(a.deletes).padStart(9)}  ${a.table}`);
  }
  if (s.downtimeMs !== undefined) lines.push(`cutover downtime ${(s.downtimeMs / 1000).toFixed(2)} s${s.fenceLsn ? `, fence ${s.fenceLsn}` : ""}`);
  if (s.rollbackWindow) lines.push(describeRollbackWindow(s.rollbackWindow));
  return lines.join("\n");
}

/** "freeze 0.41 s, drain 0.20 s, …": where the cutover's downtime went. */
export function formatTimings(t: CutoverTimings): string {
  const parts: [string, number | undefined][] = [["freeze", t.freezeMs], ["drain", t.drainMs], ["fence check", t.fenceCheckMs], ["unlogged tables", t.unloggedCopyMs], ["large objects", t.largeObjectsMs], ["verify", t.verifyMs],
    ["end replication", t.endReplicationMs], ["sequences", t.sequencesMs], ["held-back objects", t.heldBackMs]];
  return parts.filter(([, v]) => v !== undefined).map(([k, v]) => `${k} ${(v! / 1000).toFixed(2)} s`).join(", ");
}
