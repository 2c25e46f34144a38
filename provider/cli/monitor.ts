/**
 * The monitor behind `pgferry status --watch` and `--serve`: successive status reads become a view with
 * per-table load fractions, throughput and ETA, and a lag history; `serveMonitor` publishes that view on
 * 127.0.0.1 as a page, `/api/status` (JSON) and `/metrics` (Prometheus text format).
 *
 * The history lives in this process's memory only: the monitor is a viewer that can be started and
 * stopped at will, and writing samples to the target would make watching a migration a write load on
 * the server being migrated to.
 */
import * as http from "http";
import type { AddressInfo } from "net";
import type { Endpoint } from "../engine/core/endpoint";
import { redact } from "../engine/core/endpoint";
import type { MigrationStatus } from "../engine/status";
import type { TableProgress } from "../engine/state/state";
import { renderPage } from "./monitorPage";

export { renderPage };

/** How far back throughput is measured: long enough to smooth the 1 s progress writes, short enough to follow changes. */
const RATE_WINDOW_MS = 15_000;
/** Lag history kept for the chart. */
export const HISTORY_MS = 30 * 60_000;

export interface TableView extends TableProgress {
  /** "schema.table" */
  name: string;
  /** 0..1; 1 only once copied (estimates can be low, so an unfinished table stops at 0.99). */
  fraction: number;
  rowsPerSec?: number;
  bytesPerSec?: number;
  etaSeconds?: number;
}

export interface LagSample { t: number; lagBytes: number | null; lagSeconds: number | null }

export interface MonitorView {
  updatedAt: string;
  /** False when the last status read failed; the figures are then those of the last good read. */
  up: boolean;
  error?: string;
  status: Omit<MigrationStatus, "tables">;
  tables: TableView[];
  load: { fraction: number; rows: number; bytes: number; estimatedRows: number; estimatedBytes: number;
    rowsPerSec?: number; bytesPerSec?: number; etaSeconds?: number };
  /** Lag over the last HISTORY_MS, oldest first. */
  samples: LagSample[];
}

/**
 * A table's fraction done: by rows when the source had statistics (reltuples), else by bytes against
 * the source heap size (COPY bytes are not heap bytes, so this is rougher).
 */
export function tableFraction(t: TableProgress): number {
  if (t.status === "copied") return 1;
  const f = t.estimatedRows > 0 ? t.rows / t.estimatedRows : t.estimatedBytes > 0 ? t.bytes / t.estimatedBytes : 0;
  return Math.max(0, Math.min(0.99, f));
}

interface Point { t: number; rows: number; bytes: number; fraction: number }

/** Rates over the window; ETA from the fraction's rate, so tables measured in rows and in bytes combine. */
function rates(h: Point[], fraction: number) {
  if (h.length < 2) return {};
  const a = h[0], b = h[h.length - 1], dt = (b.t - a.t) / 1000;
  if (dt <= 0) return {};
  // A load restarted from a new snapshot starts again from zero: never report negative throughput.
  const rowsPerSec = Math.max(0, (b.rows - a.rows) / dt), bytesPerSec = Math.max(0, (b.bytes - a.bytes) / dt);
  const perSec = (b.fraction - a.fraction) / dt;
  return { rowsPerSec, bytesPerSec, etaSeconds: perSec > 0 && fraction < 1 ? (1 - fraction) / perSec : undefined };
}

export class Monitor {
  private history = new Map<string, Point[]>();
  private samples: LagSample[] = [];
  private last?: MonitorView;

  /** `secrets`: endpoints whose passwords must never appear in what the monitor shows. */
  constructor(private secrets: (Endpoint | undefined)[] = [], private historyMs = HISTORY_MS) {}

  view(): MonitorView | undefined { return this.last; }

  add(raw: MigrationStatus, now = Date.now()): MonitorView {
    const s = redactDeep(raw, this.secrets);
    const push = (key: string, p: Point) => {
      const h = this.history.get(key) ?? [];
      h.push(p);
      while (h.length > 2 && now - h[0].t > RATE_WINDOW_MS) h.shift();
      this.history.set(key, h);
      return h;
    };
    const tables: TableView[] = s.tables.map((t) => {
      const name = `${t.schema}.${t.table}`, fraction = tableFraction(t);
      const r = t.status === "copied" ? {} : rates(push(name, { t: now, rows: t.rows, bytes: t.bytes, fraction }), fraction);
      return { ...t, name, fraction, ...r };
    });
    // Overall fraction weighted by the source size, so a big table counts for more than a small one.
    const w = (t: TableView) => Math.max(t.estimatedBytes, 1);
    const totalW = tables.reduce((a, t) => a + w(t), 0);
    const fraction = totalW ? tables.reduce((a, t) => a + t.fraction * w(t), 0) / totalW : 0;
    const rows = tables.reduce((a, t) => a + t.rows, 0), bytes = tables.reduce((a, t) => a + t.bytes, 0);
    const loading = s.phase === "Loading";
    const load = {
      fraction, rows, bytes,
      estimatedRows: tables.reduce((a, t) => a + Math.max(t.estimatedRows, t.status === "copied" ? t.rows : 0), 0),
      estimatedBytes: tables.reduce((a, t) => a + t.estimatedBytes, 0),
      ...(loading ? rates(push("", { t: now, rows, bytes, fraction }), fraction) : {}),
    };
    if (s.lagBytes !== undefined || s.lagSeconds !== undefined) {
      this.samples.push({ t: now, lagBytes: s.lagBytes ?? null, lagSeconds: s.lagSeconds ?? null });
    }
    while (this.samples.length && now - this.samples[0].t > this.historyMs) this.samples.shift();
    const { tables: _t, ...status } = s;
    this.last = { updatedAt: new Date(now).toISOString(), up: true, status, tables, load, samples: [...this.samples] };
    return this.last;
  }

  /** A failed read: keep the last figures, say they are stale and why. */
  fail(e: unknown, now = Date.now()): MonitorView | undefined {
    const error = redact(e instanceof Error ? e.message : String(e), ...this.secrets);
    if (this.last) this.last = { ...this.last, up: false, error, updatedAt: new Date(now).toISOString() };
    return this.last;
  }
}

/** Every string in a value with the endpoints' passwords and any URI password masked. */
export function redactDeep<T>(v: T, eps: (Endpoint | undefined)[]): T {
  if (typeof v === "string") return redact(v, ...eps) as unknown as T;
  if (Array.isArray(v)) return v.map((x) => redactDeep(x, eps)) as unknown as T;
  if (v && typeof v === "object" && !(v instanceof Date)) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, redactDeep(x, eps)])) as T;
  }
  return v;
}

const PHASES = ["SchemaSync", "Loading", "IndexBuild", "ReadyToCutover", "CuttingOver", "VerifyFailed", "Completed", "Failed", "Aborted", "NotFound"];

/** Prometheus text exposition format 0.0.4. Figures that are not known are left out rather than reported as 0. */
export function metricsText(status: Omit<MigrationStatus, "tables"> & { tables: TableProgress[] }, up = true): string {
  const out: string[] = [];
  const esc = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
  const labels = (l: Record<string, string>) => `{${Object.entries({ migration: status.name, ...l }).map(([k, v]) => `${k}="${esc(v)}"`).join(",")}}`;
  const metric = (name: string, type: "gauge" | "counter", help: string, values: [Record<string, string>, number | undefined][]) => {
    const known = values.filter(([, v]) => v !== undefined && Number.isFinite(v));
    if (!known.length) return;
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [l, v] of known) out.push(`${name}${labels(l)} ${v}`);
  };
  metric("pgferry_up", "gauge", "1 if the monitor's last status read succeeded, 0 if the figures are from an earlier read.", [[{}, up ? 1 : 0]]);
  metric("pgferry_phase", "gauge", "The migration's current phase (1 for the current phase, 0 for the others).",
    PHASES.map((p) => [{ phase: p, mode: status.mode ?? "" }, p === status.phase ? 1 : 0]));
  metric("pgferry_rows_copied", "gauge", "Rows copied by the full load so far (all tables).", [[{}, status.rowsCopied]]);
  metric("pgferry_bytes_copied", "gauge", "COPY bytes transferred by the full load so far (all tables).", [[{}, status.bytesCopied]]);
  metric("pgferry_table_rows_copied", "gauge", "Rows copied by the full load so far, per table.",
    status.tables.map((t) => [{ table: `${t.schema}.${t.table}` }, t.rows]));
  metric("pgferry_table_bytes_copied", "gauge", "COPY bytes transferred so far, per table.",
    status.tables.map((t) => [{ table: `${t.schema}.${t.table}` }, t.bytes]));
  metric("pgferry_table_rows_estimated", "gauge", "Rows the source's statistics expected per table at load start (0 when never analyzed).",
    status.tables.map((t) => [{ table: `${t.schema}.${t.table}` }, t.estimatedRows]));
  metric("pgferry_table_copied", "gauge", "1 once a table's full copy has finished.",
    status.tables.map((t) => [{ table: `${t.schema}.${t.table}` }, t.status === "copied" ? 1 : 0]));
  metric("pgferry_lag_bytes", "gauge", "Source WAL not yet applied and confirmed by the target (bytes).", [[{}, status.lagBytes]]);
  metric("pgferry_lag_seconds", "gauge", "Replication lag in seconds as the source's walsender measures it.", [[{}, status.lagSeconds]]);
  metric("pgferry_caught_up", "gauge", "1 when the target has confirmed everything written on the source.",
    [[{}, status.caughtUp === undefined ? undefined : status.caughtUp ? 1 : 0]]);
  metric("pgferry_pending_changes", "gauge", "Source changes not yet applied (reported only when known, i.e. 0 once caught up).",
    [[{}, status.pendingChanges]]);
  metric("pgferry_applied_changes_total", "counter", "Changes applied by pgferry's stream applier, per table and kind.",
    (status.applied ?? []).flatMap((a) => ([["insert", a.inserts], ["update", a.updates], ["delete", a.deletes], ["truncate", a.truncates]] as const)
      .map(([kind, n]) => [{ table: a.table, kind }, n] as [Record<string, string>, number])));
  metric("pgferry_downtime_seconds", "gauge", "Write downtime of the cutover (freeze to completed).",
    [[{}, status.downtimeMs === undefined ? undefined : status.downtimeMs / 1000]]);
  return out.join("\n") + "\n";
}

export interface MonitorServer { url: string; port: number; close(): Promise<void> }

/**
 * Serve the monitor's latest view on 127.0.0.1 only (it shows database object names and positions;
 * exposing it further is a decision for a reverse proxy). Node's own http module: three read-only
 * routes do not justify a framework dependency.
 */
export async function serveMonitor(monitor: Monitor, port: number, refreshMs = 2000): Promise<MonitorServer> {
  const page = renderPage({ refreshMs });
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    const send = (code: number, type: string, body: string) => {
      res.writeHead(code, { "content-type": type, "cache-control": "no-store", "x-content-type-options": "nosniff" });
      res.end(req.method === "HEAD" ? undefined : body);
    };
    if (req.method !== "GET" && req.method !== "HEAD") return send(405, "text/plain; charset=utf-8", "method not allowed\n");
    const v = monitor.view();
    if (path === "/") return send(200, "text/html; charset=utf-8", page);
    if (path === "/api/status") {
      return v ? send(200, "application/json; charset=utf-8", JSON.stringify(v)) : send(503, "application/json", '{"error":"no status read yet"}');
    }
    if (path === "/metrics") {
      if (!v) return send(503, "text/plain; charset=utf-8", "no status read yet\n");
      return send(200, "text/plain; version=0.0.4; charset=utf-8", metricsText({ ...v.status, tables: v.tables }, v.up));
    }
    send(404, "text/plain; charset=utf-8", "not found\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => { server.off("error", reject); resolve(); });
  });
  const actual = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${actual}/`, port: actual,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      // Browsers keep connections alive; without this close() waits for them to time out.
      server.closeAllConnections();
    }),
  };
}
