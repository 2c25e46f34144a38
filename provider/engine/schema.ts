/**
 * Schema sync with pg_dump. One custom-format schema dump of the source is rendered by pg_restore
 * into its TOC entries, then split three ways:
 *  - pre-data (types, functions, tables, sequences) applied in one transaction before the load;
 *  - post-data (indexes, PK/unique, triggers, rules) applied after the load, index builds in parallel;
 *  - held back for cutover: foreign keys (added NOT VALID, then VALIDATE) and materialized view data.
 * Entries are stored in the control schema and marked applied in the same transaction as their
 * effect, so an interrupted step resumes exactly where it stopped.
 */
import { spawn } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Client } from "pg";
import { CONTROL_SCHEMA, ForeignKeyInfo } from "./catalog";
import { connect, Endpoint, libpqEnv, qualified, quoteIdent, redact } from "./endpoint";
import { PgferryError } from "./errors";

export interface SchemaEntry {
  kind: string;
  object: string;
  sql: string;
  /** Independent index/constraint builds that may run concurrently with each other. */
  parallel?: boolean;
}

export interface SchemaDump {
  preamble: string;
  preData: SchemaEntry[];
  postData: SchemaEntry[];
}

export interface PgTool { path: string; major: number }

/** Entry kinds that never travel: replication objects belong to each server. */
const SKIPPED_KINDS = new Set(["PUBLICATION", "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA", "SUBSCRIPTION",
  "SUBSCRIPTION TABLE", "FK CONSTRAINT"]);
const PARALLEL_KINDS = new Set(["INDEX", "CONSTRAINT"]);

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    const out: Buffer[] = [], err: Buffer[] = [];
    p.stdout.on("data", (d) => out.push(d));
    p.stderr.on("data", (d) => err.push(d));
    p.once("error", reject);
    p.once("close", (code) => resolve({ code: code ?? -1, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }));
  });
}

async function toolMajor(file: string): Promise<number | undefined> {
  try {
    const r = await run(file, ["--version"], process.env);
    const m = /\(PostgreSQL\)\s+(\d+)/.exec(r.stdout);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The newest pg_dump/pg_restore pair available: $PGFERRY_PG_BIN, then PATH, then the usual
 * versioned install folders (Debian /usr/lib/postgresql/N/bin, RPM /usr/pgsql-N/bin).
 */
export async function findPgTools(): Promise<{ pgDump?: PgTool; pgRestore?: PgTool }> {
  const dirs = [process.env.PGFERRY_PG_BIN, ...(process.env.PATH ?? "").split(path.delimiter)].filter(Boolean) as string[];
  for (const base of ["/usr/lib/postgresql", "/usr/local/pgsql"]) {
    try { for (const v of fs.readdirSync(base)) dirs.push(path.join(base, v, "bin")); } catch { /* absent */ }
  }
  try { for (const d of fs.readdirSync("/usr")) if (/^pgsql-\d+$/.test(d)) dirs.push(path.join("/usr", d, "bin")); } catch { /* absent */ }
  let best: { pgDump?: PgTool; pgRestore?: PgTool } = {};
  const seen = new Set<string>();
  for (const dir of dirs) {
    const dump = path.join(dir, "pg_dump"), restore = path.join(dir, "pg_restore");
    if (seen.has(dump) || !fs.existsSync(dump) || !fs.existsSync(restore)) continue;
    seen.add(dump);
    const major = await toolMajor(dump);
    if (major !== undefined && (!best.pgDump || major > best.pgDump.major)) {
      best = { pgDump: { path: dump, major }, pgRestore: { path: restore, major } };
    }
  }
  return best;
}

export interface DumpOptions {
  schemas: string[];
  /** Qualified tables left out of the dump (quoted identifiers). */
  excludeTables: { schema: string; name: string }[];
  /** Keep OWNER TO / GRANT statements (only when every role they name exists on the target). */
  keepOwnership: boolean;
}

/** Dump the source schema once and split it into the three groups above. */
export async function dumpSchema(source: Endpoint, opts: DumpOptions): Promise<SchemaDump> {
  const tools = await findPgTools();
  if (!tools.pgDump || !tools.pgRestore) {
    throw new PgferryError("no_pg_dump", "pg_dump/pg_restore not found; fix: install the PostgreSQL client programs " +
      "(e.g. apt-get install postgresql-client) or point PGFERRY_PG_BIN at their folder");
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pgferry-dump-"));
  try {
    const file = path.join(dir, "schema.dump");
    // Names are passed as exact patterns: quote them so case and dots survive pg_dump's pattern rules.
    const pattern = (s: string) => '"' + s.replace(/"/g, '""') + '"';
    const args = ["--schema-only", "--format=custom", `--file=${file}`, "--no-subscriptions", "--no-publications",
      `--exclude-schema=${CONTROL_SCHEMA}`];
    for (const s of opts.schemas) args.push(`--schema=${pattern(s)}`);
    for (const t of opts.excludeTables) args.push(`--exclude-table=${pattern(t.schema)}.${pattern(t.name)}`);
    const dump = await run(tools.pgDump.path, args, libpqEnv(source));
    if (dump.code !== 0) {
      throw new PgferryError("pg_dump_failed", `pg_dump of the ${source.label} failed: ${redact(dump.stderr.trim(), source)}`);
    }
    const ownership = opts.keepOwnership ? [] : ["--no-owner", "--no-privileges"];
    const render = async (section: string) => {
      const r = await run(tools.pgRestore!.path, [`--section=${section}`, ...ownership, "--file=-", file], process.env);
      if (r.code !== 0) throw new PgferryError("pg_restore_failed", `pg_restore could not render the ${section} schema: ${r.stderr.trim()}`);
      return splitDump(r.stdout);
    };
    const pre = await render("pre-data");
    const post = await render("post-data");
    return {
      preamble: pre.preamble,
      preData: pre.entries.filter((e) => !SKIPPED_KINDS.has(e.kind)),
      postData: post.entries.filter((e) => !SKIPPED_KINDS.has(e.kind) && e.kind !== "MATERIALIZED VIEW DATA")
        .map((e) => ({ ...e, parallel: PARALLEL_KINDS.has(e.kind) })),
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const HEADER = /^-- Name: (.*); Type: (.*); Schema: (.*); Owner: (.*)$/;

/**
 * Split pg_restore's plain SQL into TOC entries by their "-- Name: …; Type: …" comment headers.
 * psql-only lines (\restrict, \unrestrict) are dropped: we execute the SQL through the protocol.
 */
export function splitDump(sql: string): { preamble: string; entries: SchemaEntry[] } {
  const lines = sql.split("\n").filter((l) => !/^\\(un)?restrict\b/.test(l));
  const entries: SchemaEntry[] = [];
  const preamble: string[] = [];
  let current: { kind: string; object: string; body: string[] } | undefined;
  const flush = () => {
    if (current) {
      const body = current.body.join("\n").trim();
      if (body) entries.push({ kind: current.kind, object: current.object, sql: body });
    }
  };
  for (let i = 0; i < lines.length; i++) {
    const m = HEADER.exec(lines[i]);
    if (m && lines[i - 1] === "--") {
      // drop the "--" line already pushed before the header, then close the previous entry
      if (current) current.body.pop(); else preamble.pop();
      flush();
      current = { kind: m[2], object: m[3] === "-" ? m[1] : `${m[3]}.${m[1]}`, body: [] };
      if (lines[i + 1] === "--") i++;
      continue;
    }
    (current ? current.body : preamble).push(lines[i]);
  }
  flush();
  return { preamble: preamble.filter((l) => l && !l.startsWith("--")).join("\n"), entries };
}

/** A schema-only dump has no materialized view data: refresh, at cutover, those populated on the source. */
export function matviewEntries(views: { schema: string; name: string }[]): SchemaEntry[] {
  return views.map((v) => ({ kind: "MATERIALIZED VIEW DATA", object: `${v.schema}.${v.name}`,
    sql: `REFRESH MATERIALIZED VIEW ${qualified(v.schema, v.name)};` }));
}

/** Foreign keys as cutover entries: NOT VALID first (no long lock), then VALIDATE where the source had it validated. */
export function foreignKeyEntries(fks: ForeignKeyInfo[], migrated: Set<string>): SchemaEntry[] {
  const out: SchemaEntry[] = [];
  for (const fk of fks) {
    const table = qualified(fk.schema, fk.table);
    const object = `${fk.schema}.${fk.table}.${fk.name}`;
    if (!migrated.has(`${fk.refSchema}.${fk.refTable}`)) continue; // referenced table excluded from the migration
    if (fk.onPartitioned) {
      // PostgreSQL < 18 refuses NOT VALID foreign keys on partitioned tables: add it validated.
      out.push({ kind: "FK CONSTRAINT", object, sql: `ALTER TABLE ${table} ADD CONSTRAINT ${quoteIdent(fk.name)} ${fk.definition};` });
      continue;
    }
    const def = fk.validated ? `${fk.definition} NOT VALID` : fk.definition;
    out.push({ kind: "FK CONSTRAINT", object, sql: `ALTER TABLE ONLY ${table} ADD CONSTRAINT ${quoteIdent(fk.name)} ${def};` });
    if (fk.validated) out.push({ kind: "FK VALIDATE", object, sql: `ALTER TABLE ONLY ${table} VALIDATE CONSTRAINT ${quoteIdent(fk.name)};` });
  }
  return out;
}

/** Roles that own or are granted objects in the schemas on the source but do not exist on the target. */
export async function rolesMissingOnTarget(src: Client, tgt: Client, schemas: string[]): Promise<string[]> {
  const r = await src.query(`
    WITH ns AS (SELECT oid, nspowner FROM pg_namespace WHERE nspname = ANY($1))
    SELECT DISTINCT pg_get_userbyid(o) AS role FROM (
      SELECT nspowner AS o FROM ns
      UNION SELECT relowner FROM pg_class WHERE relnamespace IN (SELECT oid FROM ns)
      UNION SELECT proowner FROM pg_proc WHERE pronamespace IN (SELECT oid FROM ns)
      UNION SELECT typowner FROM pg_type WHERE typnamespace IN (SELECT oid FROM ns)
      UNION SELECT (aclexplode(relacl)).grantee FROM pg_class WHERE relnamespace IN (SELECT oid FROM ns) AND relacl IS NOT NULL
    ) x WHERE o <> 0`, [schemas]);
  const roles = r.rows.map((x) => x.role as string);
  const t = await tgt.query(`SELECT rolname FROM pg_roles WHERE rolname = ANY($1)`, [roles]);
  const have = new Set(t.rows.map((x) => x.rolname));
  return roles.filter((x) => !have.has(x)).sort();
}

/** Store entries of a section in the control schema (once; a re-run keeps the stored ones). */
export async function storeEntries(c: Client, migration: string, section: string, entries: SchemaEntry[]): Promise<void> {
  const existing = await c.query(`SELECT count(*)::int AS n FROM ${CONTROL_SCHEMA}.schema_entry WHERE migration = $1 AND section = $2`, [migration, section]);
  if (existing.rows[0].n > 0) return;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i];
    await c.query(`INSERT INTO ${CONTROL_SCHEMA}.schema_entry (migration, section, ordinal, kind, object, sql, parallel)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)`, [migration, section, i, e.kind, e.object, e.sql, !!e.parallel]);
  }
}

export interface StoredEntry extends SchemaEntry { ordinal: number; applied: boolean }

export async function readEntries(c: Client, migration: string, section: string): Promise<StoredEntry[]> {
  const r = await c.query(`SELECT * FROM ${CONTROL_SCHEMA}.schema_entry WHERE migration = $1 AND section = $2 ORDER BY ordinal`, [migration, section]);
  return r.rows.map((x) => ({ ordinal: x.ordinal, kind: x.kind, object: x.object, sql: x.sql, parallel: x.parallel, applied: x.applied }));
}

/**
 * Apply the not-yet-applied entries of a section, each in its own transaction together with its
 * "applied" mark. Parallel entries (index and constraint builds) run on `jobs` connections first;
 * the rest follow in dump order on one connection.
 */
export async function applyEntries(target: Endpoint, migration: string, section: string, preamble: string, jobs: number,
  onEntry?: (e: StoredEntry) => void): Promise<number> {
  const all = (await withControl(target, (c) => readEntries(c, migration, section))).filter((e) => !e.applied);
  const parallel = await biggestTableFirst(target, all.filter((e) => e.parallel));
  const serial = all.filter((e) => !e.parallel);
  const worker = async (queue: StoredEntry[]) => {
    const c = await connect(target);
    try {
      if (preamble) await c.query(preamble);
      for (let e; (e = queue.shift());) {
        await applyOne(c, migration, section, e);
        onEntry?.(e);
      }
    } finally {
      await c.end().catch(() => undefined);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(jobs, parallel.length)) }, () => worker(parallel)));
  await worker(serial);
  return all.length;
}

/** The table an index or constraint entry builds on, as pg_dump wrote it (schema-qualified). */
export function entryTable(sql: string): string | undefined {
  return /^CREATE (?:UNIQUE )?INDEX (?:"(?:[^"]|"")*"|\S+) ON (?:ONLY )?(.+?) USING /m.exec(sql)?.[1] ?? /^ALTER TABLE (?:ONLY )?(.+?)\s+ADD CONSTRAINT /ms.exec(sql)?.[1];
}

/**
 * The longest builds start first so the last one to finish is short; within a table the key
 * constraint (which locks the table exclusively) goes before its other indexes.
 */
async function biggestTableFirst(target: Endpoint, entries: StoredEntry[]): Promise<StoredEntry[]> {
  if (entries.length < 2) return entries;
  const tables = [...new Set(entries.map((e) => entryTable(e.sql)).filter(Boolean))] as string[];
  const sizes = new Map<string, number>();
  await withControl(target, async (c) => {
    if (tables.length) {
      const r = await c.query(`SELECT t, coalesce(pg_relation_size(to_regclass(t)), 0)::float8 AS b FROM unnest($1::text[]) t`, [tables]);
      for (const x of r.rows) sizes.set(x.t, x.b);
    }
  });
  const size = (e: StoredEntry) => sizes.get(entryTable(e.sql) ?? "") ?? 0;
  return [...entries].sort((a, b) => size(b) - size(a) || (a.kind === "CONSTRAINT" ? 0 : 1) - (b.kind === "CONSTRAINT" ? 0 : 1) || a.ordinal - b.ordinal);
}

async function applyOne(c: Client, migration: string, section: string, e: StoredEntry): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await c.query("BEGIN");
      await c.query(e.sql);
      await c.query(`UPDATE ${CONTROL_SCHEMA}.schema_entry SET applied = true WHERE migration = $1 AND section = $2 AND ordinal = $3`,
        [migration, section, e.ordinal]);
      await c.query("COMMIT");
      return;
    } catch (err) {
      await c.query("ROLLBACK").catch(() => undefined);
      const code = (err as { code?: string }).code;
      // Parallel builds on one table can deadlock (ALTER TABLE vs CREATE INDEX): PostgreSQL aborts one; retry it.
      if ((code === "40P01" || code === "40001") && attempt < 5) continue;
      throw new PgferryError("schema_apply_failed", `applying ${e.kind} ${e.object} on the target failed: ${(err as Error).message}`);
    }
  }
}

async function withControl<T>(ep: Endpoint, fn: (c: Client) => Promise<T>): Promise<T> {
  const c = await connect(ep);
  try { return await fn(c); } finally { await c.end().catch(() => undefined); }
}

