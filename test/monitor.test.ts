/// <reference lib="dom" />
/**
 * The monitor on a real migration (15 → 17, stream mode): `status --watch` without a terminal follows a
 * load table by table, then `status --serve 0` under live writes with the agent applying them: /metrics and
 * /api/status carry the real figures (rows copied = the source's row count, applied counts = what the
 * writer did), the page renders them in a real headless Chromium, and SIGTERM closes the server.
 */
import { ChildProcess, spawn } from "child_process";
import * as fs from "fs";
import { LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, migrationOptions, parseEndpoint, runAgent, startMigration } from "../provider/engine";
import { Monitor, metricsText } from "../provider/cli/monitor";
import { leftovers, startServers, Writer } from "./support/servers";
import { CLI, ensureBuilt } from "./support/build";
import { until } from "./support/until";

const CHROMIUM = "/usr/bin/chromium";
const NAME = "mon";
const BIG_ROWS = 600_000, ORDERS = 5_000;

let src: LocalServer, tgt: LocalServer;
const agentStop = new AbortController();
let agentRun: Promise<unknown> | undefined;
let writer: Writer | undefined;
let serve: { proc: ChildProcess; out: () => string; err: () => string; exit: Promise<number | null> } | undefined;
let url = "";

beforeAll(async () => {
  ensureBuilt();
  [src, tgt] = await startServers(15, 17);
  await src.createDatabase("app");
  await tgt.createDatabase("app");
  // shop.big is large enough for the load to take several status reads; ANALYZE gives the row estimates.
  await src.query(`CREATE SCHEMA shop;
    CREATE TABLE shop.big (id int PRIMARY KEY, payload text);
    CREATE TABLE shop.orders (id int PRIMARY KEY, v text, n int);
    INSERT INTO shop.big SELECT g, repeat(md5(g::text), 2) FROM generate_series(1, ${BIG_ROWS}) g;
    INSERT INTO shop.orders SELECT g, 'o' || g, g FROM generate_series(1, ${ORDERS}) g;
    ANALYZE shop.big; ANALYZE shop.orders;`, "app");
});

afterAll(async () => {
  await writer?.stop();
  serve?.proc.kill("SIGKILL");
  agentStop.abort();
  await agentRun?.catch(() => undefined);
  if (src && tgt) await cleanupMigration(parseEndpoint(src.uri("app"), "source"), parseEndpoint(tgt.uri("app"), "target"), NAME).catch(() => undefined);
  await src?.stop();
  await tgt?.stop();
});

function cli(args: string[]) {
  let out = "", err = "";
  const proc = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, PGFERRY_SOURCE: src.uri("app"), PGFERRY_TARGET: tgt.uri("app") }, stdio: ["ignore", "pipe", "pipe"],
  });
  proc.stdout!.on("data", (d) => { out += d; });
  proc.stderr!.on("data", (d) => { err += d; });
  const exit = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)));
  return { proc, out: () => out, err: () => err, exit };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const apiStatus = async (): Promise<any> => (await fetch(url + "api/status")).json();


/** Prometheus text → "name{labels}" → value, checking every sample has its # TYPE. */
function parseMetrics(text: string): Map<string, number> {
  const typed = new Set<string>(), out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line) continue;
    const t = /^# TYPE (\w+) (gauge|counter)$/.exec(line);
    if (t) { typed.add(t[1]); continue; }
    if (line.startsWith("# HELP ")) continue;
    const m = /^(\w+)(\{[^}]*\})? (-?[\d.e+]+)$/.exec(line);
    if (!m) throw new Error(`not a metric line: ${line}`);
    if (!typed.has(m[1])) throw new Error(`${m[1]} has no # TYPE`);
    out.set(m[1] + (m[2] ?? ""), Number(m[3]));
  }
  return out;
}

test("status --watch without a terminal appends snapshots that follow the load to streaming", async () => {
  const source = parseEndpoint(src.uri("app"), "source"), target = parseEndpoint(tgt.uri("app"), "target");
  // Watching before the migration exists: the watcher must keep going through every phase.
  const watch = cli(["status", "--watch", "--interval", "0.2", "--name", NAME]);
  await until("a first snapshot", () => watch.out().includes("no such migration"));
  const started = await startMigration(source, target, migrationOptions({ name: NAME, mode: "stream", jobs: 2 }));
  expect(started.phase).toBe("ReadyToCutover");
  await until("a streaming snapshot", () => /· ReadyToCutover ·[^]*\n\n/.test(watch.out()));
  watch.proc.kill("SIGTERM");
  expect(await watch.exit).toBe(0);

  const frames = watch.out().split("\n\n").filter(Boolean);
  expect(frames.join("")).not.toContain("\x1b[");                    // no terminal: no escape sequences
  const loading = frames.filter((f) => f.includes("· Loading ·"));
  expect(loading.length).toBeGreaterThanOrEqual(2);
  // While loading, shop.big was seen part-way: copying, with rows and a rate, before it was copied.
  const partial = loading.map((f) => /copying .* (\d+)%  shop\.big +(\d+) rows .*rows\/s/.exec(f)).filter(Boolean) as RegExpExecArray[];
  expect(partial.length).toBeGreaterThanOrEqual(1);
  expect(partial.some((m) => Number(m[2]) > 0 && Number(m[2]) < BIG_ROWS)).toBe(true);
  expect(loading.some((f) => /ETA \d/.test(f))).toBe(true);
  const last = frames[frames.length - 1];
  expect(last).toMatch(new RegExp(`^load .* 100%  ${BIG_ROWS + ORDERS} rows`, "m"));
  expect(last).toMatch(new RegExp(`copied .* 100%  shop\\.orders +${ORDERS} rows`));
  expect(watch.out() + watch.err()).not.toContain(src.password);
});

test("status --serve: /api/status and /metrics carry the live migration's real figures", async () => {
  const source = parseEndpoint(src.uri("app"), "source"), target = parseEndpoint(tgt.uri("app"), "target");
  agentRun = runAgent(source, target, { name: NAME, signal: agentStop.signal });
  // Each transaction: two inserts, one update, one delete on shop.orders, so the applied counts are known exactly.
  writer = new Writer(src.uri("app"), (i) => `INSERT INTO shop.orders VALUES (${100000 + 2 * i}, 'w', ${i}), (${100001 + 2 * i}, 'w', ${i});
    UPDATE shop.orders SET n = n + 1 WHERE id = ${(i % ORDERS) + 1}; DELETE FROM shop.orders WHERE id = ${100000 + 2 * i};`).start();

  serve = cli(["status", "--serve", "0", "--interval", "0.5", "--name", NAME]);
  url = (await until("the monitor's URL", () => /(http:\/\/127\.0\.0\.1:\d+\/) /.exec(serve!.err())?.[1]));
  await until("lag samples while writes stream", async () => {
    const v = await apiStatus();
    return v.samples.length >= 4 && (v.status.applied ?? []).length > 0;
  });
  await writer.stop();
  expect(writer.errors).toEqual([]);
  const n = writer.transactions;
  expect(n).toBeGreaterThan(0);

  // Once the agent has applied everything, the applied counts are exactly what the writer did.
  const v = await until("the applied counts to catch up", async () => {
    const x = await apiStatus();
    const o = x.status.applied?.find((a: { table: string }) => a.table === "shop.orders");
    return x.status.caughtUp && o?.inserts === 2 * n && o.deletes === n ? x : undefined;
  });
  expect(v.up).toBe(true);
  expect(v.status.phase).toBe("ReadyToCutover");
  expect(v.status.pendingChanges).toBe(0);
  expect(v.status.applied.find((a: { table: string }) => a.table === "shop.orders")).toMatchObject({ inserts: 2 * n, updates: n, deletes: n, truncates: 0 });
  expect(v.tables.map((t: { name: string; status: string; rows: number; fraction: number }) => [t.name, t.status, t.rows, t.fraction]))
    .toEqual([["shop.big", "copied", BIG_ROWS, 1], ["shop.orders", "copied", ORDERS, 1]]);
  expect(v.load).toMatchObject({ rows: BIG_ROWS + ORDERS, fraction: 1 });
  // Lag was measured in every sample while streaming (it may be 0 throughout: the agent keeps up with this writer).
  expect(v.samples.filter((s: { lagBytes: number | null }) => typeof s.lagBytes === "number" && s.lagBytes >= 0).length).toBeGreaterThanOrEqual(4);

  const res = await fetch(url + "metrics");
  expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  const m = parseMetrics(text);
  const lbl = `migration="${NAME}"`;
  // Rows copied equal what the source held when the load's snapshot was taken (no writes ran before it).
  expect(m.get(`pgferry_rows_copied{${lbl}}`)).toBe(BIG_ROWS + ORDERS);
  expect(m.get(`pgferry_table_rows_copied{${lbl},table="shop.big"}`)).toBe(BIG_ROWS);
  expect(m.get(`pgferry_table_copied{${lbl},table="shop.orders"}`)).toBe(1);
  expect(m.get(`pgferry_bytes_copied{${lbl}}`)).toBeGreaterThan(BIG_ROWS * 64);   // each payload is 64 characters
  expect(m.get(`pgferry_phase{${lbl},phase="ReadyToCutover",mode="stream"}`)).toBe(1);
  expect(m.get(`pgferry_phase{${lbl},phase="Loading",mode="stream"}`)).toBe(0);
  expect(m.get(`pgferry_up{${lbl}}`)).toBe(1);
  expect(m.get(`pgferry_lag_bytes{${lbl}}`)).toBeGreaterThanOrEqual(0);
  expect(m.has(`pgferry_lag_seconds{${lbl}}`)).toBe(true);
  expect(m.get(`pgferry_applied_changes_total{${lbl},table="shop.orders",kind="insert"}`)).toBeGreaterThanOrEqual(2 * n);
  expect(m.get(`pgferry_applied_changes_total{${lbl},table="shop.orders",kind="delete"}`)).toBeGreaterThanOrEqual(n);
  expect(m.has(`pgferry_downtime_seconds{${lbl}}`)).toBe(false);   // not known before cutover
  expect(text).toMatch(/^# HELP pgferry_lag_bytes .+$/m);

  const page = await (await fetch(url)).text();
  for (const body of [text, page, JSON.stringify(v), serve.out(), serve.err()]) {
    expect(body).not.toContain(src.password);
    expect(body).not.toContain(tgt.password);
  }
  expect(page).not.toMatch(/<script[^>]+src=|<link[^>]+href=/);   // self-contained: nothing fetched from elsewhere
  expect((await fetch(url + "nope")).status).toBe(404);
  expect((await fetch(url + "api/status", { method: "POST" })).status).toBe(405);
});

const browserTest = fs.existsSync(CHROMIUM) ? test : test.skip;
if (!fs.existsSync(CHROMIUM)) console.warn(`skipping the browser test: ${CHROMIUM} not found (apt-get install chromium; .ci/run does this)`);

browserTest("the page in headless Chromium shows the phase, a table's progress and a drawn lag chart", async () => {
  const { chromium } = await import("playwright-core");
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  try {
    const page = await browser.newPage();
    await page.goto(url);
    await page.waitForFunction(() => document.getElementById("phase")?.textContent === "ReadyToCutover");
    const row = page.locator('#tables tr[data-table="shop.big"]');
    await row.waitFor();
    expect(await row.locator(".pct").textContent()).toBe("100%");
    expect(await row.locator(".status").textContent()).toBe("copied");
    expect(await row.locator(".rows").textContent()).toBe(BIG_ROWS.toLocaleString("en-US"));
    // The bar as laid out: the fill spans the whole track for a copied table.
    const [fill, track] = await row.locator(".bar > i").evaluate((e) => [e.getBoundingClientRect().width, e.parentElement!.getBoundingClientRect().width]);
    expect(track).toBeGreaterThan(50);
    expect(fill).toBeCloseTo(track, 0);
    // The chart: a path with a segment per sample, and a real rendered extent.
    const d = await page.locator("#lag-path").getAttribute("d");
    expect((d ?? "").match(/[ML]/g)?.length ?? 0).toBeGreaterThanOrEqual(4);
    const box = await page.locator("#lag-path").evaluate((e) => { const b = (e as SVGGraphicsElement).getBBox(); return { w: b.width, h: b.height }; });
    expect(box.w).toBeGreaterThan(10);
    expect(await page.locator("#lag-empty").isHidden()).toBe(true);
    const applied = page.locator('#applied tr[data-table="shop.orders"] td');
    expect(Number((await applied.nth(1).textContent())!.replace(/,/g, ""))).toBeGreaterThan(0);
    expect(await page.content()).not.toContain(src.password);
  } finally {
    await browser.close();
  }
});

test("SIGTERM closes the server; cleanup leaves no slot or publication behind", async () => {
  serve!.proc.kill("SIGTERM");
  expect(await serve!.exit).toBe(0);
  await expect(fetch(url + "metrics")).rejects.toThrow();
  agentStop.abort();
  await agentRun;
  await cleanupMigration(parseEndpoint(src.uri("app"), "source"), parseEndpoint(tgt.uri("app"), "target"), NAME);
  expect(await leftovers(src, tgt)).toEqual([]);
});

test("the monitor never shows a password, even in a connection error", () => {
  const source = parseEndpoint("postgresql://migrator:s3cr%40t-pw@db.example:5432/shop", "source");
  const mon = new Monitor([source]);
  mon.add({ name: "x", phase: "Failed", error: "could not reach postgresql://migrator:s3cr@t-pw@db.example/shop", tables: [],
    rowsCopied: 0, bytesCopied: 0, timestamps: { createdAt: new Date(0) } });
  const v = mon.fail(new Error("password s3cr@t-pw rejected"))!;
  expect(v.up).toBe(false);
  expect(JSON.stringify(v)).not.toContain("s3cr@t-pw");
  expect(metricsText({ ...v.status, tables: v.tables }, v.up)).toContain('pgferry_up{migration="x"} 0');
});
