/**
 * Full-load benchmark (`npm run bench`): pgferry against the tools a user would pick instead, on the
 * same two throwaway servers in the same run. Each contender loads the same generated source
 * database into a fresh, empty target database (schema + data + indexes, wall clock end to end);
 * after each one the target is checked to hold every source table with the same row count and the
 * same number of indexes. Prints seconds, MB/s, rows/s, how busy the machine's cores were, each
 * contender's time relative to pgferry's, and pgferry's peak RSS (this process). Not a test: jest
 * never runs it (it lives outside test/ and is not named *.test.ts).
 *
 *   node dist/bench/load.js [--size-mb 1024] [--jobs 4] [--runs 1] [--source-major 15] [--target-major 17]
 *                           [--install-pgcopydb] [--json]
 */
import { ChildProcess, spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Client } from "pg";
import { Command, InvalidArgumentError } from "commander";
import { EmbeddedMajor, LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, migrationOptions, MigrationEvent, parseEndpoint, startMigration } from "../provider/engine";
import { findPgTools } from "../provider/engine/copy/schema";
import { qualified, quoteLiteral } from "../provider/engine/core/endpoint";

// ---------------------------------------------------------------- options

interface BenchOptions {
  sizeMb: number;
  jobs: number;
  runs: number;
  sourceMajor: EmbeddedMajor;
  targetMajor: EmbeddedMajor;
  installPgcopydb: boolean;
  json: boolean;
}

function intArg(name: string, min: number, max: number) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be a whole number from ${min} to ${max}`);
    return n;
  };
}

function majorArg(v: string): EmbeddedMajor {
  if (v !== "15" && v !== "17") throw new InvalidArgumentError("must be 15 or 17");
  return Number(v) as EmbeddedMajor;
}

function parseOptions(argv: string[]): BenchOptions {
  const p = new Command()
    .name("bench-load")
    .description("Full load benchmark: pgferry vs pg_dump|psql, pg_dump -Fd -j|pg_restore -j and pgcopydb, on the same servers")
    .option("--size-mb <n>", "approximate size of the generated source database (MB)", intArg("--size-mb", 10, 1024 * 1024), 1024)
    .option("--jobs <n>", "parallel jobs for every contender (pgferry --jobs, pg_dump/pg_restore -j, pgcopydb)", intArg("--jobs", 1, 64), 4)
    .option("--runs <n>", "runs per contender; the best is reported", intArg("--runs", 1, 100), 1)
    .option("--source-major <n>", "source PostgreSQL major (15|17)", majorArg, 15 as EmbeddedMajor)
    .option("--target-major <n>", "target PostgreSQL major (15|17)", majorArg, 17 as EmbeddedMajor)
    .option("--install-pgcopydb", "apt-get install -y pgcopydb when it is not on PATH", false)
    .option("--json", "print one JSON document instead of the table", false)
    .parse(argv);
  const o = p.opts();
  if (o.targetMajor < o.sourceMajor) p.error("--target-major must not be older than --source-major (downgrades are not supported)");
  return o as BenchOptions;
}

// ---------------------------------------------------------------- small helpers

const MB = 1024 * 1024;
const DB = "bench";
const t0 = Date.now();

/** Progress goes to stderr, so stdout holds only the result (the table or the JSON document). */
function log(msg: string): void {
  process.stderr.write(`[bench +${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${msg}\n`);
}

const seconds = (from: bigint) => Number(process.hrtime.bigint() - from) / 1e9;
const now = () => process.hrtime.bigint();

async function withClient<T>(server: LocalServer, db: string, fn: (c: Client) => Promise<T>): Promise<T> {
  const c = await server.client(db);
  try { return await fn(c); } finally { await c.end().catch(() => undefined); }
}

/** Run tasks on `parallel` sessions of one database, each task a SQL text. */
async function runParallel(server: LocalServer, db: string, parallel: number, tasks: string[], setup: string[] = []): Promise<void> {
  const queue = [...tasks];
  let failure: unknown;
  await Promise.all(Array.from({ length: Math.max(1, Math.min(parallel, queue.length)) }, async () => {
    await withClient(server, db, async (c) => {
      for (const s of setup) await c.query(s);
      for (let sql; !failure && (sql = queue.shift());) {
        try { await c.query(sql); } catch (e) { failure ??= new Error(`${(e as Error).message}\n  in: ${sql.slice(0, 200)}`); }
      }
    });
  }));
  if (failure) throw failure;
}

// Child processes we started (each in its own process group), killed on SIGINT.
const children = new Set<ChildProcess>();

function killChildren(): void {
  for (const ch of children) {
    try { if (ch.pid) process.kill(-ch.pid, "SIGTERM"); } catch { /* gone */ }
  }
}

interface CmdResult { code: number; stderr: string }

/** Spawn a command (or a bash script when cmd = "bash"), stdout discarded, stderr kept (tail). */
function runCmd(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<CmdResult> {
  return new Promise((resolve, reject) => {
    const ch = spawn(cmd, args, { env, stdio: ["ignore", "ignore", "pipe"], detached: true });
    children.add(ch);
    let err = "";
    ch.stderr!.on("data", (d: Buffer) => { err = (err + d.toString()).slice(-20000); });
    ch.once("error", (e) => { children.delete(ch); reject(e); });
    ch.once("close", (code, signal) => { children.delete(ch); resolve({ code: code ?? (signal ? 128 : -1), stderr: err }); });
  });
}

function onPath(cmd: string): string | undefined {
  const r = spawnSync("bash", ["-c", `command -v ${cmd}`], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/** Machine-wide CPU jiffies from /proc/stat (Linux), to report how busy all cores were during a run. */
function cpuTimes(): { busy: number; total: number } | undefined {
  try {
    const f = fs.readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    const idle = f[3] + (f[4] ?? 0);
    const total = f.reduce((a, b) => a + b, 0);
    return { busy: total - idle, total };
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- data generation

/**
 * Approximate on-disk bytes per row including the table's indexes (measured with PostgreSQL 13,
 * heap + PK + secondary indexes after VACUUM), used to size the tables to --size-mb.
 */
const BYTES_PER_ROW = { events: 198, documents: 580, line_items: 180 };
const SHARE = { events: 0.60, documents: 0.25, line_items: 0.10 };

const SCHEMA_SQL = `
CREATE TABLE events (
  id bigint NOT NULL, account_id integer NOT NULL, quantity integer NOT NULL, amount numeric(12,2) NOT NULL,
  note text, created_at timestamptz NOT NULL, processed boolean NOT NULL);
CREATE TABLE documents (
  id bigint NOT NULL, owner_id integer NOT NULL, title text NOT NULL, payload jsonb NOT NULL, tags text[] NOT NULL,
  created_at timestamptz NOT NULL);
CREATE TABLE line_items (
  order_id bigint NOT NULL, line_no integer NOT NULL, product_id integer NOT NULL, sku text NOT NULL, qty integer NOT NULL,
  unit_price numeric(10,2) NOT NULL, discount numeric(5,2) NOT NULL, tax numeric(10,2) NOT NULL, currency char(3) NOT NULL,
  description text, warehouse_id integer, shipped boolean NOT NULL, created_at timestamptz NOT NULL, updated_at timestamptz);
CREATE TABLE accounts (id integer PRIMARY KEY, email text NOT NULL, name text NOT NULL, country char(2) NOT NULL,
  created_at timestamptz NOT NULL);
CREATE TABLE products (id integer PRIMARY KEY, sku text NOT NULL, name text NOT NULL, price numeric(10,2) NOT NULL);
CREATE TABLE countries (code char(2) PRIMARY KEY, name text NOT NULL);
CREATE TABLE app_settings (key text PRIMARY KEY, value text NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
`;

function rangeTasks(total: number, parts: number, sql: (lo: number, hi: number) => string): string[] {
  const out: string[] = [];
  const step = Math.ceil(total / parts);
  for (let lo = 1; lo <= total; lo += step) out.push(sql(lo, Math.min(total, lo + step - 1)));
  return out;
}

interface Generated { seconds: number; sizeBytes: number; rows: Record<string, number>; totalRows: number; tableBytes: Record<string, number> }

async function generate(server: LocalServer, sizeMb: number, parallel: number): Promise<Generated> {
  const start = now();
  await server.createDatabase(DB);
  await server.query(SCHEMA_SQL, DB);
  const bytes = sizeMb * MB;
  const n = {
    events: Math.max(1000, Math.round(bytes * SHARE.events / BYTES_PER_ROW.events)),
    documents: Math.max(1000, Math.round(bytes * SHARE.documents / BYTES_PER_ROW.documents)),
    line_items: Math.max(1000, Math.round(bytes * SHARE.line_items / BYTES_PER_ROW.line_items)),
  };
  const parts = Math.max(2, parallel) * 2;
  const tasks = [
    ...rangeTasks(n.events, parts, (lo, hi) => `INSERT INTO events
      SELECT g, (hashint4(g::int) & 1048575) % 100000, g % 1000, round((random() * 10000)::numeric, 2),
             substr(repeat(md5(g::text), 3), 1, 20 + (g % 60)::int),
             timestamptz '2020-01-01 00:00:00+00' + g * interval '3 seconds' + random() * interval '1 hour', g % 3 = 0
        FROM generate_series(${lo}::bigint, ${hi}) g`),
    ...rangeTasks(n.documents, parts, (lo, hi) => `INSERT INTO documents
      SELECT g, (hashint8(g) & 1048575) % 50000, 'Document ' || g || ' ' || substr(md5(g::text), 1, 12 + (g % 20)::int),
             jsonb_build_object('sku', 'SKU-' || (g % 100000), 'price', round((random() * 500)::numeric, 2), 'qty', g % 17,
               'attrs', jsonb_build_object('color', (ARRAY['red','green','blue','black','white'])[1 + g % 5],
                 'size', (ARRAY['S','M','L','XL'])[1 + g % 4], 'weight', round((random() * 20)::numeric, 3), 'fragile', g % 11 = 0),
               'history', jsonb_build_array(
                 jsonb_build_object('at', timestamptz '2021-01-01 00:00:00+00' + g * interval '1 minute', 'by', 'user' || (g % 997), 'action', 'created'),
                 jsonb_build_object('at', timestamptz '2021-06-01 00:00:00+00' + g * interval '1 minute', 'by', 'system', 'action', 'updated')),
               'comment', md5((g * 7)::text)),
             ARRAY['tag' || (g % 50), 'cat' || (g % 7), 'x' || (g % 1000)] || CASE WHEN g % 4 = 0 THEN ARRAY['featured'] ELSE '{}'::text[] END,
             timestamptz '2021-01-01 00:00:00+00' + g * interval '1 minute'
        FROM generate_series(${lo}::bigint, ${hi}) g`),
    ...rangeTasks(n.line_items, parts, (lo, hi) => `INSERT INTO line_items
      SELECT 1 + g / 5, 1 + (g % 5)::int, (hashint8(g) & 1048575) % 10000, 'SKU-' || ((hashint8(g) & 1048575) % 10000), 1 + (g % 9)::int,
             round((random() * 200)::numeric, 2), (g % 20)::numeric, round((random() * 30)::numeric, 2),
             (ARRAY['EUR','USD','GBP'])[1 + g % 3], 'Line ' || g || ': ' || substr(md5(g::text), 1, 10 + (g % 30)::int),
             (g % 40)::int, g % 2 = 0, timestamptz '2022-01-01 00:00:00+00' + g * interval '10 seconds',
             CASE WHEN g % 3 = 0 THEN timestamptz '2022-02-01 00:00:00+00' + g * interval '10 seconds' END
        FROM generate_series(${lo - 1}::bigint, ${hi - 1}) g`),
    `INSERT INTO accounts SELECT g, 'user' || g || '@example.com', 'User ' || md5(g::text),
       (ARRAY['DE','FR','US','GB','NL','SE','JP'])[1 + g % 7], timestamptz '2019-01-01 00:00:00+00' + g * interval '1 hour'
       FROM generate_series(1, 20000) g`,
    `INSERT INTO products SELECT g, 'SKU-' || g, 'Product ' || substr(md5(g::text), 1, 16), round((random() * 200)::numeric, 2)
       FROM generate_series(0, 9999) g`,
    `INSERT INTO countries SELECT chr(65 + g / 26) || chr(65 + g % 26), 'Country ' || g FROM generate_series(0, 249) g`,
    `INSERT INTO app_settings (key, value) SELECT 'setting.' || g, md5(g::text) FROM generate_series(1, 200) g`,
  ];
  log(`generating ~${sizeMb} MB: events ${n.events} rows, documents ${n.documents}, line_items ${n.line_items}, 4 small tables (${parallel} sessions)`);
  await runParallel(server, DB, parallel, tasks, ["SET synchronous_commit = off"]);
  log("building keys and indexes on the source");
  await runParallel(server, DB, parallel, [
    `ALTER TABLE events ADD PRIMARY KEY (id)`,
    `ALTER TABLE documents ADD PRIMARY KEY (id)`,
    `ALTER TABLE line_items ADD PRIMARY KEY (order_id, line_no)`,
    `CREATE INDEX events_account_created_idx ON events (account_id, created_at)`,
    `CREATE INDEX events_created_idx ON events (created_at)`,
    `CREATE INDEX documents_owner_idx ON documents (owner_id)`,
    `CREATE INDEX line_items_product_idx ON line_items (product_id)`,
    `CREATE UNIQUE INDEX accounts_email_key ON accounts (email)`,
    `CREATE UNIQUE INDEX products_sku_key ON products (sku)`,
  ], ["SET maintenance_work_mem = '512MB'"]);
  log("VACUUM ANALYZE");
  await runParallel(server, DB, parallel,
    ["events", "documents", "line_items", "accounts", "products", "countries", "app_settings"].map((t) => `VACUUM ANALYZE ${t}`));
  const genSeconds = seconds(start);
  const sizeBytes = Number((await server.query(`SELECT pg_database_size(current_database()) AS b`, DB))[0].b);
  const rows = await rowCounts(server, DB);
  const tableBytes: Record<string, number> = {};
  for (const r of await server.query(`SELECT c.relname, pg_total_relation_size(c.oid) AS b FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'`, DB)) tableBytes[r.relname] = Number(r.b);
  return { seconds: genSeconds, sizeBytes, rows, totalRows: Object.values(rows).reduce((a, b) => a + b, 0), tableBytes };
}

// ---------------------------------------------------------------- verification

const USER_TABLES = `SELECT n.nspname AS schema, c.relname AS name,
    (SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid)::int AS indexes
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgferry')
    AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1, 2`;

async function rowCounts(server: LocalServer, db: string): Promise<Record<string, number>> {
  return withClient(server, db, async (c) => {
    const out: Record<string, number> = {};
    for (const t of (await c.query(USER_TABLES)).rows) {
      const q = qualified(t.schema, t.name);
      out[`${t.schema}.${t.name}`] = Number((await c.query(`SELECT count(*) AS n FROM ${q}`)).rows[0].n);
    }
    return out;
  });
}

async function indexCounts(server: LocalServer, db: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of await server.query(USER_TABLES, db)) out[`${t.schema}.${t.name}`] = t.indexes;
  return out;
}

/** Same tables, same row counts, same number of indexes as the source, or throw. */
async function verifyTarget(contender: string, source: LocalServer, target: LocalServer, expected: Record<string, number>,
  expectedIndexes: Record<string, number>): Promise<void> {
  const got = await rowCounts(target, DB);
  const gotIdx = await indexCounts(target, DB);
  const problems: string[] = [];
  for (const [t, n] of Object.entries(expected)) {
    if (!(t in got)) problems.push(`${t}: missing on the target`);
    else if (got[t] !== n) problems.push(`${t}: ${got[t]} rows on the target, ${n} on the source`);
    else if (gotIdx[t] !== expectedIndexes[t]) problems.push(`${t}: ${gotIdx[t]} indexes on the target, ${expectedIndexes[t]} on the source`);
  }
  for (const t of Object.keys(got)) if (!(t in expected)) problems.push(`${t}: on the target but not on the source`);
  if (problems.length) {
    throw new Error(`VERIFICATION FAILED after ${contender}: the target does not match the source:\n  ${problems.join("\n  ")}`);
  }
  void source;
}

// ---------------------------------------------------------------- contenders

interface RunOutcome { seconds: number; detail?: Record<string, unknown>; cpuBusy?: number }

interface Contender {
  key: string;
  label: string;
  /** Reason it cannot run in this environment (printed, not a failure). */
  skip?: string;
  run: () => Promise<RunOutcome>;
}

interface ContenderResult {
  key: string;
  label: string;
  skipped?: string;
  runs: number[];
  best?: number;
  detail?: Record<string, unknown>;
  /** Share of all cores' time that was busy (machine-wide) during the best run. */
  cpuBusy?: number;
}

class RssSampler {
  peak = 0;
  private timer?: NodeJS.Timeout;
  start(): void {
    this.peak = process.memoryUsage().rss;
    this.timer = setInterval(() => { this.peak = Math.max(this.peak, process.memoryUsage().rss); }, 100);
  }
  stop(): number {
    if (this.timer) clearInterval(this.timer);
    this.peak = Math.max(this.peak, process.memoryUsage().rss);
    return this.peak;
  }
}

function pgferryContender(source: LocalServer, target: LocalServer, jobs: number, peak: { sampledRss: number; maxRssKb: number }): Contender {
  return {
    key: "pgferry",
    label: `pgferry start --jobs ${jobs}`,
    run: async () => {
      const src = parseEndpoint(source.uri(DB), "source");
      const tgt = parseEndpoint(target.uri(DB), "target");
      const phases: { phase: string; at: number }[] = [];
      const postData: { kind: string; object: string; at: number }[] = [];
      const sampler = new RssSampler();
      const start = now();
      const cpu = process.cpuUsage();
      sampler.start();
      let result;
      try {
        result = await startMigration(src, tgt, migrationOptions({ name: "bench", jobs }), (e: MigrationEvent) => {
          if (e.type === "phase") phases.push({ phase: e.phase, at: seconds(start) });
          else if (e.type === "schema") postData.push({ kind: e.kind, object: e.object, at: seconds(start) });
          else if (e.type === "finding" && e.finding.severity === "error") log(`pgferry finding: ${e.finding.message}`);
        });
      } finally {
        const rss = sampler.stop();
        peak.sampledRss = Math.max(peak.sampledRss, rss);
        peak.maxRssKb = process.resourceUsage().maxRSS;
        // Not timed: remove the subscription, slot, publication and control schema.
        await cleanupMigration(src, tgt, "bench").catch((e) => log(`pgferry cleanup failed: ${(e as Error).message}`));
      }
      const total = seconds(start);
      const used = process.cpuUsage(cpu);
      if (result.phase !== "ReadyToCutover") throw new Error(`pgferry ended in phase ${result.phase}, expected ReadyToCutover`);
      // Phase breakdown from the event times: each phase lasts until the next one starts.
      const breakdown: Record<string, number> = {};
      const marks = [{ phase: "start", at: 0 }, ...phases, { phase: "end", at: total }];
      for (let i = 0; i + 1 < marks.length; i++) {
        const name = marks[i].phase === "start" ? "preflight" : marks[i].phase;
        breakdown[name] = (breakdown[name] ?? 0) + (marks[i + 1].at - marks[i].at);
      }
      return {
        seconds: total,
        detail: {
          phaseSeconds: breakdown,
          // CPU of this node process (the COPY relay), excluding the servers and pg_dump.
          nodeCpuSeconds: { user: used.user / 1e6, system: used.system / 1e6 },
          engineLoad: result.load ? { rows: result.load.rows, bytes: result.load.bytes, seconds: result.load.seconds } : undefined,
          tables: result.load?.tables.map((t) => ({ table: t.table, rows: t.rows, bytes: t.bytes, seconds: t.seconds })),
          postData: postData.map((p) => ({ ...p, at: Number(p.at.toFixed(2)) })),
          schema: result.schema,
        },
      };
    },
  };
}

function pgEnv(server: LocalServer, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  // Credentials through the environment only (argv is visible in ps).
  return { ...process.env, PGHOST: "127.0.0.1", PGPORT: String(server.port), PGUSER: "postgres", PGDATABASE: DB,
    PGPASSWORD: server.password, PGCONNECT_TIMEOUT: "15", ...extra };
}

function dumpPsqlContender(source: LocalServer, target: LocalServer, bin: string, skip?: string): Contender {
  return {
    key: "pg_dump|psql",
    label: "pg_dump | psql",
    skip,
    run: async () => {
      const script = `set -o pipefail
PGPASSWORD="$BENCH_SRC_PW" "$BENCH_BIN/pg_dump" -h 127.0.0.1 -p "$BENCH_SRC_PORT" -U postgres -d ${DB} \\
  | PGPASSWORD="$BENCH_TGT_PW" "$BENCH_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$BENCH_TGT_PORT" -U postgres -d ${DB} >/dev/null`;
      const env: NodeJS.ProcessEnv = { ...process.env, BENCH_BIN: bin, BENCH_SRC_PW: source.password, BENCH_TGT_PW: target.password,
        BENCH_SRC_PORT: String(source.port), BENCH_TGT_PORT: String(target.port), PGCONNECT_TIMEOUT: "15" };
      delete env.PGPASSWORD;
      const start = now();
      const r = await runCmd("bash", ["-c", script], env);
      if (r.code !== 0) throw new Error(`pg_dump | psql failed (exit ${r.code}): ${r.stderr.trim().slice(-2000)}`);
      return { seconds: seconds(start) };
    },
  };
}

function dumpRestoreContender(source: LocalServer, target: LocalServer, bin: string, jobs: number, skip?: string): Contender {
  return {
    key: "pg_dump -Fd -j|pg_restore -j",
    label: `pg_dump -Fd -j ${jobs} + pg_restore -j ${jobs}`,
    skip,
    run: async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pgferry-bench-dump-"));
      const out = path.join(dir, "dump");
      try {
        const start = now();
        const d = await runCmd(path.join(bin, "pg_dump"), ["-Fd", "-j", String(jobs), "-f", out], pgEnv(source));
        if (d.code !== 0) throw new Error(`pg_dump -Fd failed (exit ${d.code}): ${d.stderr.trim().slice(-2000)}`);
        const dumpSeconds = seconds(start);
        const r0 = now();
        const r = await runCmd(path.join(bin, "pg_restore"), ["-j", String(jobs), "--exit-on-error", "-d", DB, out], pgEnv(target));
        if (r.code !== 0) throw new Error(`pg_restore -j failed (exit ${r.code}): ${r.stderr.trim().slice(-2000)}`);
        const restoreSeconds = seconds(r0);
        const dumpBytes = Number(spawnSync("du", ["-sb", out], { encoding: "utf8" }).stdout.split(/\s/)[0]);
        return { seconds: dumpSeconds + restoreSeconds, detail: { dumpSeconds, restoreSeconds, dumpBytes } };
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

function pgcopydbContender(source: LocalServer, target: LocalServer, jobs: number, exe: string | undefined, skip?: string): Contender {
  return {
    key: "pgcopydb",
    label: `pgcopydb clone --table-jobs ${jobs} --index-jobs ${jobs}`,
    skip: skip ?? (exe ? undefined : "pgcopydb: not installed, skipped"),
    run: async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pgferry-bench-pgcopydb-"));
      try {
        // The URIs carry the passwords: pass them in pgcopydb's environment variables, not argv.
        const env = { ...process.env, PGCOPYDB_SOURCE_PGURI: source.uri(DB), PGCOPYDB_TARGET_PGURI: target.uri(DB) };
        const start = now();
        const r = await runCmd(exe!, ["clone", "--table-jobs", String(jobs), "--index-jobs", String(jobs), "--dir", dir], env);
        if (r.code !== 0) throw new Error(`pgcopydb clone failed (exit ${r.code}): ${r.stderr.trim().slice(-2000)}`);
        return { seconds: seconds(start) };
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

// ---------------------------------------------------------------- target reset

async function resetTarget(source: LocalServer, target: LocalServer): Promise<void> {
  await target.query(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
  await target.query(`CREATE DATABASE ${DB}`);
  // Leftovers of a failed pgferry run must not stay on the source.
  for (const r of await source.query(`SELECT slot_name FROM pg_replication_slots WHERE NOT active`, DB)) {
    await source.query(`SELECT pg_drop_replication_slot(${quoteLiteral(String(r.slot_name))})`, DB);
  }
  await source.query(`CHECKPOINT`);
  await target.query(`CHECKPOINT`);
  // The servers run with fsync=off, so a checkpoint leaves the written data in the OS page cache;
  // flush it now, or its write-back lands in the next contender's time (the first one's, after generation).
  spawnSync("sync");
}

// ---------------------------------------------------------------- report

function fmtRatio(x: number): string { return `${x.toFixed(2)}×`; }

function render(o: BenchOptions, gen: Generated, results: ContenderResult[], peak: { sampledRss: number; maxRssKb: number },
  settings: Record<string, string>, toolsMajor: number | undefined): string {
  const sizeMb = gen.sizeBytes / MB;
  const ferry = results.find((r) => r.key === "pgferry")?.best;
  const lines: string[] = [];
  lines.push(`pgferry full-load benchmark — source PostgreSQL ${o.sourceMajor} → target PostgreSQL ${o.targetMajor}, ` +
    `${os.cpus().length} CPUs, jobs ${o.jobs}, best of ${o.runs} run(s), client tools ${toolsMajor ?? "?"}`);
  lines.push(`server settings (both): ${Object.entries(settings).map(([k, v]) => `${k}=${v}`).join(" ")} fsync=off`);
  lines.push(`source: ${sizeMb.toFixed(0)} MB (pg_database_size), ${gen.totalRows.toLocaleString("en-US")} rows in ` +
    `${Object.keys(gen.rows).length} tables, generated in ${gen.seconds.toFixed(1)} s`);
  lines.push(`  ${Object.entries(gen.tableBytes).sort((a, b) => b[1] - a[1])
    .map(([t, b]) => `${t} ${(b / MB).toFixed(0)} MB/${gen.rows[`public.${t}`]?.toLocaleString("en-US")} rows`).join(", ")}`);
  lines.push("");
  const head = ["contender", "seconds", "MB/s", "rows/s", "CPU busy", "vs pgferry"];
  const rows: string[][] = [];
  for (const r of results) {
    if (r.best === undefined) { rows.push([r.label, "-", "-", "-", "-", r.skipped ? "skipped (below)" : "failed"]); continue; }
    const ratio = r.key === "pgferry" ? "1.00× (baseline)" : ferry ? `${fmtRatio(r.best / ferry)} pgferry's time` : "-";
    rows.push([r.label, r.best.toFixed(1), (sizeMb / r.best).toFixed(1), Math.round(gen.totalRows / r.best).toLocaleString("en-US"),
      r.cpuBusy === undefined ? "-" : `${(r.cpuBusy * 100).toFixed(0)}%`, ratio]);
  }
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const fmt = (r: string[]) => r.map((c, i) => (i === 0 || i === 5 ? c.padEnd(w[i]) : c.padStart(w[i]))).join("  ").trimEnd();
  lines.push(fmt(head));
  lines.push(w.map((n) => "-".repeat(n)).join("  "));
  for (const r of rows) lines.push(fmt(r));
  lines.push(`(CPU busy: share of all ${os.cpus().length} cores busy during the run, any process on this machine — ` +
    `other load on the machine shows up here and skews the times)`);
  lines.push("");
  for (const r of results) {
    if (r.runs.length > 1) lines.push(`${r.label}: runs ${r.runs.map((s) => s.toFixed(1)).join(", ")} s`);
  }
  const fr = results.find((r) => r.key === "pgferry");
  const d = fr?.detail as { phaseSeconds?: Record<string, number>; engineLoad?: { rows: number; bytes: number; seconds: number };
    nodeCpuSeconds?: { user: number; system: number } } | undefined;
  if (d?.phaseSeconds) {
    lines.push(`pgferry phases (best run): ${Object.entries(d.phaseSeconds).map(([k, v]) => `${k} ${v.toFixed(1)} s`).join(", ")}`);
  }
  if (d?.nodeCpuSeconds) {
    lines.push(`pgferry node process CPU: ${d.nodeCpuSeconds.user.toFixed(1)} s user + ${d.nodeCpuSeconds.system.toFixed(1)} s system`);
  }
  if (d?.engineLoad) {
    const l = d.engineLoad;
    lines.push(`pgferry engine load: ${l.rows.toLocaleString("en-US")} rows, ${(l.bytes / MB).toFixed(0)} MB of COPY text in ` +
      `${l.seconds.toFixed(1)} s (${(l.bytes / MB / l.seconds).toFixed(1)} MB/s, ${Math.round(l.rows / l.seconds).toLocaleString("en-US")} rows/s)`);
  }
  const dr = results.find((r) => r.key.startsWith("pg_dump -Fd"))?.detail as { dumpSeconds: number; restoreSeconds: number; dumpBytes: number } | undefined;
  if (dr) {
    lines.push(`pg_dump -Fd -j ${o.jobs}: ${dr.dumpSeconds.toFixed(1)} s (${(dr.dumpBytes / MB).toFixed(0)} MB on disk), ` +
      `pg_restore -j ${o.jobs}: ${dr.restoreSeconds.toFixed(1)} s`);
  }
  for (const r of results) if (r.skipped) lines.push(r.skipped);
  if (fr?.best !== undefined) {
    lines.push(`pgferry peak RSS: ${(peak.sampledRss / MB).toFixed(0)} MB (sampled every 100 ms during the run; ` +
      `process maxRSS ${(peak.maxRssKb / 1024).toFixed(0)} MB)`);
  }
  const ran = results.filter((r) => r.best !== undefined).sort((a, b) => a.best! - b.best!);
  if (ran.length > 1) {
    lines.push(`fastest: ${ran[0].label} (${ran[0].best!.toFixed(1)} s), ${fmtRatio(ran[1].best! / ran[0].best!)} faster than ` +
      `${ran[1].label} (${ran[1].best!.toFixed(1)} s)`);
  }
  return lines.join("\n");
}

// ---------------------------------------------------------------- main

/** Same settings on both servers; generous WAL so checkpoints do not dominate a 1 GB load. */
const SERVER_SETTINGS: Record<string, string> = {
  shared_buffers: "1GB", max_wal_size: "8GB", checkpoint_timeout: "30min", maintenance_work_mem: "256MB",
};

async function main(): Promise<void> {
  const o = parseOptions(process.argv);
  const servers: LocalServer[] = [];
  let stopping = false;
  const stopAll = async () => { await Promise.all(servers.map((s) => s.stop().catch(() => undefined))); };
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    log(`${sig}: stopping child processes and servers`);
    killChildren();
    stopAll().finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  try {
    const tools = await findPgTools();
    const bin = tools.pgDump ? path.dirname(tools.pgDump.path) : undefined;
    const toolsMajor = tools.pgDump?.major;
    let toolSkip: string | undefined;
    if (!bin) toolSkip = "pg_dump/pg_restore not installed";
    else if (toolsMajor! < o.sourceMajor) {
      toolSkip = `pg_dump here is ${toolsMajor}, older than the source's PostgreSQL ${o.sourceMajor}: it refuses to dump it; ` +
        `use --source-major 15 or point PGFERRY_PG_BIN at pg_dump ${o.sourceMajor}+`;
    }
    if (bin && !fs.existsSync(path.join(bin, "psql"))) toolSkip ??= `psql not found next to ${tools.pgDump!.path}`;

    let pgcopydb = onPath("pgcopydb");
    if (!pgcopydb && o.installPgcopydb) {
      log("installing pgcopydb (apt-get install -y pgcopydb)");
      let r = spawnSync("apt-get", ["install", "-y", "pgcopydb"], { stdio: ["ignore", "ignore", "pipe"], encoding: "utf8" });
      if (r.status !== 0) {
        spawnSync("apt-get", ["update"], { stdio: "ignore" });
        r = spawnSync("apt-get", ["install", "-y", "pgcopydb"], { stdio: ["ignore", "ignore", "pipe"], encoding: "utf8" });
      }
      if (r.status !== 0) log(`apt-get install pgcopydb failed: ${(r.stderr ?? "").trim().slice(-500)}`);
      pgcopydb = onPath("pgcopydb");
    }

    if (toolSkip && !pgcopydb) throw new Error(`no contender can run here: ${toolSkip}; pgcopydb is not installed either`);
    log(`starting PostgreSQL ${o.sourceMajor} (source) and ${o.targetMajor} (target)`);
    const [source, target] = await Promise.all([
      LocalServer.start({ major: o.sourceMajor, settings: SERVER_SETTINGS }),
      LocalServer.start({ major: o.targetMajor, settings: SERVER_SETTINGS }),
    ]);
    servers.push(source, target);

    const gen = await generate(source, o.sizeMb, Math.max(2, Math.min(o.jobs, 8)));
    log(`generated in ${gen.seconds.toFixed(1)} s: source database ${(gen.sizeBytes / MB).toFixed(0)} MB, ${gen.totalRows} rows`);
    const expectedIndexes = await indexCounts(source, DB);

    const peak = { sampledRss: 0, maxRssKb: 0 };
    const contenders: Contender[] = [
      { ...pgferryContender(source, target, o.jobs, peak), skip: toolSkip ? `pgferry: skipped (it needs pg_dump for the schema): ${toolSkip}` : undefined },
      dumpPsqlContender(source, target, bin ?? "", toolSkip ? `pg_dump | psql: skipped: ${toolSkip}` : undefined),
      dumpRestoreContender(source, target, bin ?? "", o.jobs, toolSkip ? `pg_dump -Fd | pg_restore: skipped: ${toolSkip}` : undefined),
      pgcopydbContender(source, target, o.jobs, pgcopydb, pgcopydb && toolSkip ? `pgcopydb: skipped: ${toolSkip}` : undefined),
    ];
    const results: ContenderResult[] = contenders.map((c) => ({ key: c.key, label: c.label, skipped: c.skip, runs: [] }));
    for (const c of contenders) if (c.skip) log(c.skip);

    for (let run = 1; run <= o.runs; run++) {
      for (const [i, c] of contenders.entries()) {
        if (c.skip) continue;
        await resetTarget(source, target);
        log(`run ${run}/${o.runs}: ${c.label}`);
        const cpu0 = cpuTimes();
        const out = await c.run();
        const cpu1 = cpuTimes();
        if (cpu0 && cpu1 && cpu1.total > cpu0.total) out.cpuBusy = (cpu1.busy - cpu0.busy) / (cpu1.total - cpu0.total);
        log(`${c.label}: ${out.seconds.toFixed(1)} s; verifying row counts`);
        await verifyTarget(c.label, source, target, gen.rows, expectedIndexes);
        const r = results[i];
        r.runs.push(out.seconds);
        if (r.best === undefined || out.seconds < r.best) { r.best = out.seconds; r.detail = out.detail; r.cpuBusy = out.cpuBusy; }
      }
    }
    await target.query(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);

    if (o.json) {
      const sizeMb = gen.sizeBytes / MB;
      const ferry = results.find((r) => r.key === "pgferry")?.best;
      process.stdout.write(JSON.stringify({
        options: o, cpus: os.cpus().length, clientToolsMajor: toolsMajor, serverSettings: { ...SERVER_SETTINGS, fsync: "off" },
        source: { major: o.sourceMajor, bytes: gen.sizeBytes, rows: gen.totalRows, tables: gen.rows, tableBytes: gen.tableBytes,
          generationSeconds: gen.seconds },
        target: { major: o.targetMajor },
        results: results.map((r) => ({
          contender: r.key, label: r.label, skipped: r.skipped ?? null, runs: r.runs, seconds: r.best ?? null,
          mbPerSecond: r.best ? sizeMb / r.best : null, rowsPerSecond: r.best ? gen.totalRows / r.best : null,
          ratioToPgferry: r.best && ferry ? r.best / ferry : null, cpuBusy: r.cpuBusy ?? null, detail: r.detail ?? null,
        })),
        pgferryPeakRss: { sampledBytes: peak.sampledRss, maxRssKb: peak.maxRssKb },
      }, null, 2) + "\n");
    } else {
      process.stdout.write(render(o, gen, results, peak, SERVER_SETTINGS, toolsMajor) + "\n");
    }
  } finally {
    if (!stopping) {
      stopping = true;
      killChildren();
      log("stopping servers");
      await stopAll();
    }
  }
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
