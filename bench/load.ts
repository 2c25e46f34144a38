/**
 * Full-load benchmark (`npm run bench`): pgferry against the tools a user would pick instead, on the
 * same two throwaway servers in the same run. Each contender loads the same generated source
 * database into a fresh, empty target database (schema + data + indexes, wall clock end to end);
 * after each one the target is checked to hold every source table with the same row count and the
 * same number of indexes. Prints seconds, MB/s, rows/s, how busy the machine's cores were, each
 * contender's time relative to pgferry's, and pgferry's peak RSS (this process). Not a test: jest
 * never runs it (it lives outside test/ and is not named *.test.ts).
 *
 * Datasets (each one in turn, all in one run by default): `mixed` (the generated ~1 GB database below),
 * `pgbench` (pgbench -i -s 100 --foreign-keys) and `tables` (2,000 small tables, each with a serial key, a
 * foreign key and two indexes). Beside the tools, the floor: a raw parallel COPY of every table plus the
 * post-data builds, nothing else. Every contender ends with every index and validated foreign key in place.
 * A summary states issue 11's goals per dataset (speed-up over the best peer, ratio to the floor, peak RSS).
 *
 *   node dist/bench/load.js [--datasets mixed,pgbench,tables] [--size-mb 1024] [--scale 100] [--tables 2000]
 *                           [--jobs 4] [--runs 1] [--no-floor] [--source-major 15] [--target-major 17]
 *                           [--no-install-pgcopydb] [--json]
 */
import { ChildProcess, spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Client } from "pg";
import { pipeline } from "stream/promises";
import { from as copyFrom, to as copyTo } from "pg-copy-streams";
import { Command, InvalidArgumentError } from "commander";
import { EmbeddedMajor, LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, migrationOptions, MigrationEvent, parseEndpoint, startMigration } from "../provider/engine";
import { findPgTools } from "../provider/engine/copy/schema";
import { qualified, quoteLiteral } from "../provider/engine/core/endpoint";
import { manyTablesSql } from "./datasets";

// ---------------------------------------------------------------- options

type DatasetKey = "mixed" | "pgbench" | "tables";
const DATASETS: DatasetKey[] = ["mixed", "pgbench", "tables"];

interface BenchOptions {
  datasets: DatasetKey[];
  scale: number;
  tables: number;
  floor: boolean;
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
    .option("--datasets <list>", `datasets to load, comma-separated: ${DATASETS.join(", ")} (mixed: the generated ~--size-mb database; ` +
      `pgbench: pgbench -i -s --scale --foreign-keys; tables: --tables small tables, each with a serial key, a foreign key and 2 indexes)`,
      (v: string) => {
        const l = v.split(",").map((x) => x.trim()).filter(Boolean);
        const bad = l.filter((x) => !DATASETS.includes(x as DatasetKey));
        if (bad.length || !l.length) throw new InvalidArgumentError(`unknown dataset ${bad.join(", ") || "(none)"}; pick from ${DATASETS.join(", ")}`);
        return l as DatasetKey[];
      }, DATASETS)
    .option("--scale <n>", "pgbench dataset: pgbench -i -s scale (100 = 10M accounts, ~1.5 GB)", intArg("--scale", 1, 100000), 100)
    .option("--tables <n>", "tables dataset: how many tables", intArg("--tables", 1, 100000), 2000)
    .option("--no-floor", "skip the floor (raw parallel COPY of every table, then the index and key builds)")
    .option("--size-mb <n>", "mixed dataset: approximate size of the generated source database (MB)", intArg("--size-mb", 10, 1024 * 1024), 1024)
    .option("--jobs <n>", "parallel jobs for every contender (pgferry --jobs, pg_dump/pg_restore -j, pgcopydb)", intArg("--jobs", 1, 64), 4)
    .option("--runs <n>", "runs per contender; the best is reported", intArg("--runs", 1, 100), 1)
    .option("--source-major <n>", "source PostgreSQL major (15|17)", majorArg, 15 as EmbeddedMajor)
    .option("--target-major <n>", "target PostgreSQL major (15|17)", majorArg, 17 as EmbeddedMajor)
    .option("--no-install-pgcopydb", "do not apt-get install pgcopydb when it is not on PATH (then it is skipped, with a message)")
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


/** A fresh source database holding the dataset, and what it holds. */
async function generate(server: LocalServer, o: BenchOptions, dataset: DatasetKey, parallel: number, bin: string | undefined): Promise<Generated> {
  const start = now();
  await server.query(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
  await server.createDatabase(DB);
  if (dataset === "pgbench") {
    log(`generating pgbench -i -s ${o.scale} --foreign-keys`);
    const exe = bin && fs.existsSync(path.join(bin, "pgbench")) ? path.join(bin, "pgbench") : "pgbench";
    const r = await runCmd(exe, ["-i", "-q", "-s", String(o.scale), "--foreign-keys"], pgEnv(server));
    if (r.code !== 0) throw new Error(`pgbench -i failed (exit ${r.code}): ${r.stderr.trim().slice(-2000)}`);
    await server.query(`VACUUM ANALYZE`, DB);
  } else if (dataset === "tables") {
    log(`generating ${o.tables} tables (serial key, foreign key, 2 indexes, 50-200 rows each)`);
    // In transactions of 100 tables: one for all would need more locks than max_locks_per_transaction allows.
    for (let i = 0; i < o.tables; i += 100) await server.query(manyTablesSql(i, Math.min(o.tables, i + 100)), DB);
    await server.query(`VACUUM ANALYZE`, DB);
  } else {
    await generateMixed(server, o.sizeMb, parallel);
  }
  const genSeconds = seconds(start);
  const sizeBytes = Number((await server.query(`SELECT pg_database_size(current_database()) AS b`, DB))[0].b);
  const rows = await rowCounts(server, DB);
  const tableBytes: Record<string, number> = {};
  for (const r of await server.query(`SELECT c.relname, pg_total_relation_size(c.oid) AS b FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'`, DB)) tableBytes[r.relname] = Number(r.b);
  return { seconds: genSeconds, sizeBytes, rows, totalRows: Object.values(rows).reduce((a, b) => a + b, 0), tableBytes };
}

async function generateMixed(server: LocalServer, sizeMb: number, parallel: number): Promise<void> {
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
}

// ---------------------------------------------------------------- verification

const USER_TABLES = `SELECT n.nspname AS schema, c.relname AS name,
    (SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid)::int
      + 1000 * (SELECT count(*) FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'f' AND k.convalidated)::int AS indexes
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
    // indexes + 1000 × validated foreign keys (USER_TABLES): end to end means with every key in place.
    else if (gotIdx[t] !== expectedIndexes[t]) problems.push(`${t}: ${gotIdx[t] % 1000} indexes and ${Math.floor(gotIdx[t] / 1000)} validated ` +
      `foreign keys on the target, ${expectedIndexes[t] % 1000} and ${Math.floor(expectedIndexes[t] / 1000)} on the source`);
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
        // --replica-identity-full: pgbench_history has no key (its inserts still replicate).
        result = await startMigration(src, tgt, migrationOptions({ name: "bench", jobs, replicaIdentityFull: true }), (e: MigrationEvent) => {
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

/** Tables above this size are split into block (CTID) ranges by the floor, so one big table does not serialise it. */
const FLOOR_SPLIT_BYTES = 64 * MB;

/**
 * The floor: what any tool must at least do. The schema's tables are created first (not timed); then, timed:
 * every table copied with a raw `COPY … TO STDOUT (FORMAT binary)` → `COPY … FROM STDIN (FORMAT binary)` on
 * `jobs` connection pairs (big tables split into CTID block ranges), then the post-data section (indexes, keys,
 * foreign keys) by pg_restore -j. Nothing else: no snapshot, no slot, no checks.
 */
function floorContender(source: LocalServer, target: LocalServer, bin: string, jobs: number, skip?: string): Contender {
  return {
    key: "floor",
    label: `floor: raw parallel COPY (${jobs} pairs) + pg_restore -j ${jobs} post-data`,
    skip,
    run: async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pgferry-bench-floor-"));
      try {
        const pre = path.join(dir, "pre.sql"), post = path.join(dir, "post.dump");
        for (const [args, what] of [[["--section=pre-data", "-f", pre], "pre-data"], [["-Fc", "--section=post-data", "-f", post], "post-data"]] as const) {
          const d = await runCmd(path.join(bin, "pg_dump"), [...args], pgEnv(source));
          if (d.code !== 0) throw new Error(`pg_dump ${what} failed (exit ${d.code}): ${d.stderr.trim().slice(-2000)}`);
        }
        const p = await runCmd(path.join(bin, "psql"), ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", pre], pgEnv(target));
        if (p.code !== 0) throw new Error(`psql pre-data failed (exit ${p.code}): ${p.stderr.trim().slice(-2000)}`);
        const tables = await source.query(`SELECT format('%I.%I', n.nspname, c.relname) AS q, c.relpages::bigint AS pages,
            pg_relation_size(c.oid) AS bytes FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'`, DB);
        const parts: { q: string; where: string; bytes: number }[] = [];
        for (const t of tables) {
          const pages = Number(t.pages), bytes = Number(t.bytes);
          const n = bytes > FLOOR_SPLIT_BYTES ? Math.min(jobs * 4, Math.ceil(bytes / FLOOR_SPLIT_BYTES)) : 1;
          if (n === 1) { parts.push({ q: t.q, where: "", bytes }); continue; }
          const step = Math.ceil((pages + 1) / n);
          for (let a = 0; a < pages + 1; a += step) {
            const last = a + step >= pages + 1;
            parts.push({ q: t.q, where: ` WHERE ctid >= '(${a},0)'::tid${last ? "" : ` AND ctid < '(${a + step},0)'::tid`}`, bytes: bytes / n });
          }
        }
        parts.sort((a, b) => b.bytes - a.bytes);
        const start = now();
        let failure: unknown;
        await Promise.all(Array.from({ length: Math.max(1, Math.min(jobs, parts.length)) }, async () => {
          const [src, dst] = [await source.client(DB), await target.client(DB)];
          try {
            await src.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
            await dst.query("SET synchronous_commit = off");
            for (let part; !failure && (part = parts.shift());) {
              const out = part.where ? `COPY (SELECT * FROM ONLY ${part.q}${part.where}) TO STDOUT (FORMAT binary)` : `COPY ${part.q} TO STDOUT (FORMAT binary)`;
              try { await pipeline(src.query(copyTo(out)), dst.query(copyFrom(`COPY ${part.q} FROM STDIN (FORMAT binary)`))); }
              catch (e) { failure ??= new Error(`floor COPY of ${part.q} failed: ${(e as Error).message}`); }
            }
          } finally { await Promise.all([src.end(), dst.end()].map((x) => x.catch(() => undefined))); }
        }));
        if (failure) throw failure;
        const copySeconds = seconds(start);
        const r0 = now();
        const r = await runCmd(path.join(bin, "pg_restore"), ["-j", String(jobs), "--exit-on-error", "-d", DB, post], pgEnv(target));
        if (r.code !== 0) throw new Error(`pg_restore post-data failed (exit ${r.code}): ${r.stderr.trim().slice(-2000)}`);
        return { seconds: seconds(start), detail: { copySeconds, postDataSeconds: seconds(r0) } };
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

function datasetLabel(o: BenchOptions, d: DatasetKey): string {
  return d === "pgbench" ? `pgbench -i -s ${o.scale} --foreign-keys` : d === "tables" ? `${o.tables} tables (serial key + FK + 2 indexes, 50-200 rows)`
    : `mixed ~${o.sizeMb} MB (generated)`;
}

const PEERS = ["pg_dump|psql", "pg_dump -Fd -j|pg_restore -j", "pgcopydb"];

/** Issue 11's goals for one dataset: pgferry ≥ 1.25× faster than the best peer, within 1.15× of the floor, peak RSS < 256 MB. */
function summaryOf(results: ContenderResult[], peak: { sampledRss: number }) {
  const ferry = results.find((r) => r.key === "pgferry")?.best;
  const peers = results.filter((r) => PEERS.includes(r.key) && r.best !== undefined).sort((a, b) => a.best! - b.best!);
  const floor = results.find((r) => r.key === "floor")?.best;
  return {
    pgferrySeconds: ferry ?? null,
    bestPeer: peers[0] ? { label: peers[0].label, seconds: peers[0].best! } : null,
    /** best peer's time / pgferry's: the speed-up over the best peer (goal ≥ 1.25) */
    speedupOverBestPeer: ferry && peers[0] ? peers[0].best! / ferry : null,
    floorSeconds: floor ?? null,
    /** pgferry's time / the floor's (goal ≤ 1.15) */
    pgferryOverFloor: ferry && floor ? ferry / floor : null,
    pgferryPeakRssMb: peak.sampledRss ? peak.sampledRss / MB : null,
  };
}

function renderSummary(o: BenchOptions, done: { dataset: DatasetKey; results: ContenderResult[]; peak: { sampledRss: number } }[]): string {
  const lines = [`summary (issue 11 goals: pgferry ≥ 1.25× faster than the best peer, ≤ 1.15× the floor, peak RSS < 256 MB; ` +
    `jobs ${o.jobs}, one machine, peers and floor in the same run):`];
  for (const d of done) {
    const x = summaryOf(d.results, d.peak);
    const f = (v: number | null, unit = " s") => v === null ? "-" : `${v.toFixed(1)}${unit}`;
    lines.push(`  ${datasetLabel(o, d.dataset)}: pgferry ${f(x.pgferrySeconds)}; best peer ${x.bestPeer ? `${x.bestPeer.label} ${f(x.bestPeer.seconds)}` : "-"} ` +
      `→ pgferry's speed-up ${x.speedupOverBestPeer === null ? "-" : fmtRatio(x.speedupOverBestPeer)} (goal ≥ 1.25×); floor ${f(x.floorSeconds)} → ` +
      `pgferry takes ${x.pgferryOverFloor === null ? "-" : fmtRatio(x.pgferryOverFloor)} the floor's time (goal ≤ 1.15×); pgferry peak RSS ` +
      `${f(x.pgferryPeakRssMb, " MB")} (goal < 256 MB)`);
  }
  return lines.join("\n");
}

function render(o: BenchOptions, dataset: string, gen: Generated, results: ContenderResult[], peak: { sampledRss: number; maxRssKb: number },
  settings: Record<string, string>, toolsMajor: number | undefined): string {
  const sizeMb = gen.sizeBytes / MB;
  const ferry = results.find((r) => r.key === "pgferry")?.best;
  const lines: string[] = [];
  lines.push(`pgferry full-load benchmark, dataset ${dataset} — source PostgreSQL ${o.sourceMajor} → target PostgreSQL ${o.targetMajor}, ` +
    `${os.cpus().length} CPUs, jobs ${o.jobs}, best of ${o.runs} run(s), client tools ${toolsMajor ?? "?"}`);
  lines.push(`server settings (both): ${Object.entries(settings).map(([k, v]) => `${k}=${v}`).join(" ")} fsync=off`);
  lines.push(`source: ${sizeMb.toFixed(0)} MB (pg_database_size), ${gen.totalRows.toLocaleString("en-US")} rows in ` +
    `${Object.keys(gen.rows).length} tables, generated in ${gen.seconds.toFixed(1)} s`);
  lines.push(`  ${Object.entries(gen.tableBytes).sort((a, b) => b[1] - a[1]).slice(0, 6)
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
  const fl = results.find((r) => r.key === "floor")?.detail as { copySeconds: number; postDataSeconds: number } | undefined;
  if (fl) lines.push(`floor: COPY ${fl.copySeconds.toFixed(1)} s, then post-data (indexes, keys, foreign keys) ${fl.postDataSeconds.toFixed(1)} s`);
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

    const done: { dataset: DatasetKey; gen: Generated; results: ContenderResult[]; peak: { sampledRss: number; maxRssKb: number } }[] = [];
    for (const dataset of o.datasets) {
      const gen = await generate(source, o, dataset, Math.max(2, Math.min(o.jobs, 8)), bin);
      log(`${dataset}: generated in ${gen.seconds.toFixed(1)} s: source database ${(gen.sizeBytes / MB).toFixed(0)} MB, ${gen.totalRows} rows`);
      await source.query(`CHECKPOINT`);
      const expectedIndexes = await indexCounts(source, DB);

      const peak = { sampledRss: 0, maxRssKb: 0 };
      const contenders: Contender[] = [
        { ...pgferryContender(source, target, o.jobs, peak), skip: toolSkip ? `pgferry: skipped (it needs pg_dump for the schema): ${toolSkip}` : undefined },
        dumpPsqlContender(source, target, bin ?? "", toolSkip ? `pg_dump | psql: skipped: ${toolSkip}` : undefined),
        dumpRestoreContender(source, target, bin ?? "", o.jobs, toolSkip ? `pg_dump -Fd | pg_restore: skipped: ${toolSkip}` : undefined),
        pgcopydbContender(source, target, o.jobs, pgcopydb, pgcopydb && toolSkip ? `pgcopydb: skipped: ${toolSkip}` : undefined),
        floorContender(source, target, bin ?? "", o.jobs, !o.floor ? "floor: skipped (--no-floor)" : toolSkip ? `floor: skipped: ${toolSkip}` : undefined),
      ];
      const results: ContenderResult[] = contenders.map((c) => ({ key: c.key, label: c.label, skipped: c.skip, runs: [] }));
      for (const c of contenders) if (c.skip) log(c.skip);

      for (let run = 1; run <= o.runs; run++) {
        for (const [i, c] of contenders.entries()) {
          if (c.skip) continue;
          await resetTarget(source, target);
          log(`${dataset} run ${run}/${o.runs}: ${c.label}`);
          const cpu0 = cpuTimes();
          const out = await c.run();
          const cpu1 = cpuTimes();
          if (cpu0 && cpu1 && cpu1.total > cpu0.total) out.cpuBusy = (cpu1.busy - cpu0.busy) / (cpu1.total - cpu0.total);
          log(`${c.label}: ${out.seconds.toFixed(1)} s; verifying row, index and foreign key counts`);
          await verifyTarget(c.label, source, target, gen.rows, expectedIndexes);
          const r = results[i];
          r.runs.push(out.seconds);
          if (r.best === undefined || out.seconds < r.best) { r.best = out.seconds; r.detail = out.detail; r.cpuBusy = out.cpuBusy; }
        }
      }
      await target.query(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
      done.push({ dataset, gen, results, peak });
      // Each dataset's table as soon as it is done (a long run shows its figures before the next dataset is generated).
      if (!o.json) process.stdout.write(render(o, datasetLabel(o, dataset), gen, results, peak, SERVER_SETTINGS, toolsMajor) + "\n\n");
    }

    if (o.json) {
      process.stdout.write(JSON.stringify({
        options: o, cpus: os.cpus().length, clientToolsMajor: toolsMajor, serverSettings: { ...SERVER_SETTINGS, fsync: "off" },
        source: { major: o.sourceMajor }, target: { major: o.targetMajor },
        datasets: done.map(({ dataset, gen, results, peak }) => {
          const sizeMb = gen.sizeBytes / MB;
          const ferry = results.find((r) => r.key === "pgferry")?.best;
          return {
            dataset, label: datasetLabel(o, dataset),
            source: { bytes: gen.sizeBytes, rows: gen.totalRows, tables: Object.keys(gen.rows).length, generationSeconds: gen.seconds },
            results: results.map((r) => ({
              contender: r.key, label: r.label, skipped: r.skipped ?? null, runs: r.runs, seconds: r.best ?? null,
              mbPerSecond: r.best ? sizeMb / r.best : null, rowsPerSecond: r.best ? gen.totalRows / r.best : null,
              ratioToPgferry: r.best && ferry ? r.best / ferry : null, cpuBusy: r.cpuBusy ?? null, detail: r.detail ?? null,
            })),
            summary: summaryOf(results, peak),
          };
        }),
      }, null, 2) + "\n");
    } else {
      process.stdout.write(renderSummary(o, done) + "\n");
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
