/**
 * The web monitor's page: one self-contained document (inline CSS and script, no CDN, no build step),
 * so it works on a host without internet access and over an SSH tunnel. It polls /api/status and
 * draws everything with DOM text nodes (never innerHTML of server data) and an inline SVG lag chart.
 */
export function renderPage(o: { refreshMs?: number } = {}): string {
  const refreshMs = Math.max(500, Math.round(o.refreshMs ?? 2000));
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pgferry monitor</title>
<style>
  :root { --fg: #1d2433; --muted: #667085; --line: #e4e7ec; --bar: #2f6fde; --done: #2e9e5b; --bad: #c4320a; }
  body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); margin: 0; background: #f7f8fa; }
  header { background: #fff; border-bottom: 1px solid var(--line); padding: 12px 24px; display: flex; gap: 16px; align-items: baseline; flex-wrap: wrap; }
  h1 { font-size: 18px; margin: 0; }
  h2 { font-size: 15px; margin: 0 0 8px; }
  main { padding: 16px 24px; display: grid; gap: 16px; max-width: 1200px; }
  section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px; }
  .phase { font-weight: 600; padding: 2px 10px; border-radius: 999px; background: #e8efff; color: #1a4fb3; }
  .phase.Completed { background: #e3f6ea; color: #1f7a45; } .phase.Failed { background: #fde8e3; color: var(--bad); }
  .muted { color: var(--muted); } .err { color: var(--bad); }
  .kv { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr)); gap: 8px 16px; }
  .kv div span { display: block; color: var(--muted); font-size: 12px; } .kv div b { font-variant-numeric: tabular-nums; }
  table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
  th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
  th { color: var(--muted); font-weight: 500; font-size: 12px; } td.num, th.num { text-align: right; }
  .bar { position: relative; width: 220px; height: 12px; background: #eef1f5; border-radius: 6px; overflow: hidden; display: inline-block; vertical-align: middle; }
  .bar > i { position: absolute; inset: 0 auto 0 0; background: var(--bar); }
  .bar.done > i { background: var(--done); }
  #lag-chart { width: 100%; height: 180px; display: block; }
  #lag-chart .axis { stroke: var(--line); } #lag-chart text { fill: var(--muted); font-size: 11px; }
  #lag-path { fill: none; stroke: var(--bar); stroke-width: 2; }
</style>
</head>
<body>
<header>
  <h1>pgferry <span id="name"></span></h1>
  <span id="phase" class="phase">…</span>
  <span id="mode" class="muted"></span>
  <span id="updated" class="muted"></span>
  <span id="error" class="err"></span>
</header>
<main>
  <section id="load">
    <h2>Full load</h2>
    <div class="kv" id="load-summary"></div>
    <table id="tables"><thead><tr><th>table</th><th>status</th><th>progress</th><th class="num">%</th><th class="num">rows</th>
      <th class="num">bytes</th><th class="num">rate</th><th class="num">ETA</th></tr></thead><tbody></tbody></table>
  </section>
  <section id="cdc">
    <h2>Change data capture</h2>
    <div class="kv" id="cdc-summary"></div>
  </section>
  <section>
    <h2>Lag, last 30 minutes</h2>
    <svg id="lag-chart" viewBox="0 0 800 180" preserveAspectRatio="none" role="img" aria-label="replication lag in bytes over time">
      <line class="axis" x1="50" y1="160" x2="790" y2="160"></line><line class="axis" x1="50" y1="10" x2="50" y2="160"></line>
      <text id="lag-max" x="46" y="18" text-anchor="end"></text><text x="46" y="160" text-anchor="end">0</text>
      <text id="lag-span" x="790" y="176" text-anchor="end"></text>
      <path id="lag-path" d=""></path>
    </svg>
    <p id="lag-empty" class="muted">No lag samples yet (lag is measured once changes stream, and needs --source).</p>
  </section>
  <section id="applied-section">
    <h2>Applied changes (stream mode)</h2>
    <table id="applied"><thead><tr><th>table</th><th class="num">inserts</th><th class="num">updates</th><th class="num">deletes</th><th class="num">truncates</th></tr></thead><tbody></tbody></table>
    <p id="applied-empty" class="muted">Counted by pgferry's stream applier; a native subscription does not report per-table counts.</p>
  </section>
</main>
<script>
"use strict";
const REFRESH_MS = ${refreshMs};
const $ = (id) => document.getElementById(id);
function human(n) {
  if (n === null || n === undefined) return "–";
  const u = ["B", "kB", "MB", "GB", "TB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + u[i];
}
function duration(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.round(s);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
}
const num = (n) => (n === null || n === undefined) ? "–" : Number(n).toLocaleString("en-US");
function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; }
function kv(box, pairs) {
  box.replaceChildren(...pairs.filter((p) => p[1] !== undefined).map(([k, v]) => { const d = el("div"); d.append(el("span", k), el("b", String(v))); return d; }));
}
function bar(fraction, done) {
  const b = el("span", undefined, "bar" + (done ? " done" : "")); const i = el("i"); i.style.width = (100 * fraction).toFixed(1) + "%"; b.append(i); return b;
}
function render(v) {
  const s = v.status;
  $("name").textContent = s.name;
  $("phase").textContent = s.phase; $("phase").className = "phase " + s.phase;
  $("mode").textContent = s.mode ? "mode " + s.mode : "";
  $("updated").textContent = "updated " + new Date(v.updatedAt).toLocaleTimeString();
  $("error").textContent = (v.up ? "" : "status read failed: " + (v.error || "") + " — showing the last figures") + (s.error ? " migration error: " + s.error : "");
  const l = v.load;
  kv($("load-summary"), [["progress", Math.floor(100 * l.fraction) + "%"], ["rows copied", num(l.rows) + (l.estimatedRows ? " of ~" + num(l.estimatedRows) : "")],
    ["bytes copied", human(l.bytes)], ["throughput", l.bytesPerSec !== undefined ? human(l.bytesPerSec) + "/s, " + num(Math.round(l.rowsPerSec)) + " rows/s" : "–"],
    ["ETA", duration(l.etaSeconds)]]);
  $("tables").tBodies[0].replaceChildren(...v.tables.map((t) => {
    const tr = el("tr"); tr.dataset.table = t.name;
    const pct = el("td", Math.floor(100 * t.fraction) + "%", "num pct");
    const barTd = el("td"); barTd.append(bar(t.fraction, t.status === "copied"));
    tr.append(el("td", t.name), el("td", t.status, "status"), barTd, pct, el("td", num(t.rows) + (t.estimatedRows && t.status !== "copied" ? " / ~" + num(t.estimatedRows) : ""), "num rows"),
      el("td", human(t.bytes), "num"), el("td", t.bytesPerSec !== undefined ? human(t.bytesPerSec) + "/s" : "", "num"), el("td", t.etaSeconds !== undefined ? duration(t.etaSeconds) : "", "num"));
    return tr;
  }));
  const sub = s.subscription;
  kv($("cdc-summary"), [["lag", s.lagBytes !== undefined ? human(s.lagBytes) : "–"], ["lag seconds", s.lagSeconds !== undefined ? s.lagSeconds.toFixed(1) + " s" : "–"],
    ["pending changes", s.pendingChanges !== undefined ? num(s.pendingChanges) : (s.lagBytes ? "not yet applied: " + human(s.lagBytes) : "–")],
    ["caught up", s.caughtUp === undefined ? "–" : s.caughtUp ? "yes" : "no"], ["source LSN", s.sourceLsn], ["confirmed LSN", s.confirmedLsn], ["applied LSN", s.appliedLsn],
    ["subscription", sub && sub.exists ? (sub.workerPid ? "running (pid " + sub.workerPid + ")" : "not running") + (sub.applyErrors ? ", " + sub.applyErrors + " apply errors" : "") : undefined],
    ["fence LSN", s.fenceLsn], ["downtime", s.downtimeMs !== undefined ? (s.downtimeMs / 1000).toFixed(2) + " s" : undefined]]);
  const applied = s.applied || [];
  $("applied").tBodies[0].replaceChildren(...applied.map((a) => {
    const tr = el("tr"); tr.dataset.table = a.table;
    tr.append(el("td", a.table), el("td", num(a.inserts), "num"), el("td", num(a.updates), "num"), el("td", num(a.deletes), "num"), el("td", num(a.truncates), "num"));
    return tr;
  }));
  $("applied-empty").hidden = applied.length > 0;
  drawLag(v.samples);
}
// The chart spans the samples the server holds; a gap (lag unknown) breaks the line.
function drawLag(samples) {
  const pts = samples.filter((p) => p.lagBytes !== null);
  $("lag-empty").hidden = pts.length > 0;
  if (!pts.length) { $("lag-path").setAttribute("d", ""); return; }
  const t0 = samples[0].t, t1 = Math.max(samples[samples.length - 1].t, t0 + 1000);
  const max = Math.max(1024, ...pts.map((p) => p.lagBytes));
  const x = (t) => 50 + 740 * (t - t0) / (t1 - t0), y = (b) => 160 - 150 * b / max;
  let d = "", pen = false;
  for (const p of samples) {
    if (p.lagBytes === null) { pen = false; continue; }
    d += (pen ? "L" : "M") + x(p.t).toFixed(1) + " " + y(p.lagBytes).toFixed(1) + " "; pen = true;
  }
  if (pts.length === 1) d += "L" + (x(pts[0].t) + 2).toFixed(1) + " " + y(pts[0].lagBytes).toFixed(1);
  $("lag-path").setAttribute("d", d.trim());
  $("lag-max").textContent = human(max);
  $("lag-span").textContent = duration((t1 - t0) / 1000) + " (now)";
}
async function tick() {
  try {
    const r = await fetch("/api/status", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
  } catch (e) {
    $("error").textContent = "monitor unreachable: " + e.message;
  } finally {
    setTimeout(tick, REFRESH_MS);
  }
}
tick();
</script>
</body>
</html>
`;
}
