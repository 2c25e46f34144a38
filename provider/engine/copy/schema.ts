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
import { CONTROL_SCHEMA, ForeignKeyInfo } from "../catalog/catalog";
import { connect, Endpoint, libpqEnv, qualified, quoteIdent, quoteLiteral, redact } from "../core/endpoint";
import { PgferryError } from "../core/errors";
import { markEntriesAppliedSql, markEntryAppliedSql, readEntries, readPreamble, StoredEntry } from "../state/schemaEntries";

export interface SchemaEntry {
  kind: string;
  object: string;
  sql: string;
  /** Independent index/constraint builds that may run concurrently with each other. */
  parallel?: boolean;
}

export interface PgTool { path: string; major: number }

/**
 * Entry kinds that never travel as dumped: subscriptions belong to each server (a copy would replicate
 * twice); foreign keys are rebuilt from the catalog at cutover (foreignKeyEntries).
 */
const SKIPPED_KINDS = new Set(["SUBSCRIPTION", "SUBSCRIPTION TABLE", "FK CONSTRAINT"]);
/** Event triggers are created at the end of the cutover: before, they would fire on pgferry's own DDL on the target. */
const HELD_KINDS = new Set(["EVENT TRIGGER"]);
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

/**
 * `--version` of each pg_dump found, per process: preflight and pre-data both look for the tools, and running every
 * installed pg_dump twice cost ~0.1 s of each start. Keyed by the file's identity and time, so a replaced binary is asked again.
 */
const toolMajors = new Map<string, Promise<number | undefined>>();

function toolMajor(file: string): Promise<number | undefined> {
  let id: string;
  try { const st = fs.statSync(file); id = `${file}\u0000${st.ino}\u0000${st.mtimeMs}\u0000${st.size}`; } catch { return Promise.resolve(undefined); }
  let major = toolMajors.get(id);
  if (!major) toolMajors.set(id, major = askToolMajor(file));
  return major;
}

async function askToolMajor(file: string): Promise<number | undefined> {
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
  const found: { dump: string; restore: string }[] = [];
  for (const dir of dirs) {
    const dump = path.join(dir, "pg_dump"), restore = path.join(dir, "pg_restore");
    if (seen.has(dump) || !fs.existsSync(dump) || !fs.existsSync(restore)) continue;
    seen.add(dump);
    found.push({ dump, restore });
  }
  // Every candidate asked at once; the first of the newest major wins, as when they were asked in order.
  const majors = await Promise.all(found.map((f) => toolMajor(f.dump)));
  for (const [i, { dump, restore }] of found.entries()) {
    const major = majors[i];
    if (major !== undefined && (!best.pgDump || major > best.pgDump.major)) {
      best = { pgDump: { path: dump, major }, pgRestore: { path: restore, major } };
    }
  }
  return best;
}

export interface DumpOptions {
  /** User schemas that are not migrated: left out of the (otherwise whole-database) dump. */
  excludeSchemas: string[];
  /** Relations left out of the dump (tables, views, sequences… of the exclusion plan). */
  excludeTables: { schema: string; name: string }[];
  /** Other objects left out, by catalog id (functions on an excluded row type, pgferry's own publications…). */
  excludeObjects: { classid: number; objid: number; dumpTag?: string }[];
  /** Foreign keys (created at cutover from the catalog, comment included): their dumped comments are left out. */
  foreignKeys: { schema: string; quotedTable: string; quotedName: string }[];
  /** Keep OWNER TO / GRANT statements (only when every role they name exists on the target). */
  keepOwnership: boolean;
}

export interface SchemaDump {
  preamble: string;
  preData: SchemaEntry[];
  postData: SchemaEntry[];
  /** Entries applied at the end of the cutover: event triggers (they would fire on pgferry's own DDL before). */
  atCutover: SchemaEntry[];
}

/** Entry kinds ("desc") pg_restore --list may show, longest first so a prefix never hides a longer one. */
const TOC_KINDS = ["ACCESS METHOD", "ACL", "AGGREGATE", "BLOB", "BLOBS", "CAST", "CHECK CONSTRAINT", "COLLATION", "COMMENT",
  "CONSTRAINT", "CONVERSION", "DATABASE", "DATABASE PROPERTIES", "DEFAULT", "DEFAULT ACL", "DOMAIN", "ENCODING", "EVENT TRIGGER",
  "EXTENSION", "FK CONSTRAINT", "FOREIGN DATA WRAPPER", "FOREIGN SERVER", "FOREIGN TABLE", "FUNCTION", "INDEX", "INDEX ATTACH",
  "LARGE OBJECT", "MATERIALIZED VIEW", "MATERIALIZED VIEW DATA", "OPERATOR", "OPERATOR CLASS", "OPERATOR FAMILY", "POLICY",
  "PROCEDURE", "PROCEDURAL LANGUAGE", "PUBLICATION", "PUBLICATION TABLE", "PUBLICATION TABLES IN SCHEMA", "ROW SECURITY", "RULE",
  "SCHEMA", "SEARCHPATH", "SECURITY LABEL", "SEQUENCE", "SEQUENCE OWNED BY", "SEQUENCE SET", "SERVER", "SHELL TYPE", "STATISTICS",
  "STDSTRINGS", "SUBSCRIPTION", "SUBSCRIPTION TABLE", "TABLE", "TABLE ATTACH", "TABLE DATA", "TEXT SEARCH CONFIGURATION",
  "TEXT SEARCH DICTIONARY", "TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE", "TRANSFORM", "TRIGGER", "TYPE", "USER MAPPING", "VIEW"]
  .sort((a, b) => b.length - a.length);

export interface TocLine { line: string; tableoid: number; oid: number; kind: string; rest: string }

/** `pg_restore --list` lines: "dumpId; tableoid oid KIND schema tag owner". */
export function parseTocList(list: string): TocLine[] {
  const out: TocLine[] = [];
  for (const line of list.split("\n")) {
    const m = /^\d+; (\d+) (\d+) (.*)$/.exec(line);
    if (!m) continue;
    const kind = TOC_KINDS.find((k) => m[3] === k || m[3].startsWith(k + " ")) ?? m[3].split(" ")[0];
    out.push({ line, tableoid: Number(m[1]), oid: Number(m[2]), kind, rest: m[3].slice(kind.length + 1) });
  }
  return out;
}

const DEPENDENT_KINDS = new Set(["COMMENT", "SECURITY LABEL", "ACL"]);

/**
 * Which TOC lines travel, which wait for the cutover, which stay behind. A left-out or held-back object
 * takes its comment, security label and grants along: their tag is the object's kind and tag
 * ("COMMENT public FUNCTION f(public.t) owner" for "FUNCTION public f(public.t) owner").
 */
export function planToc(toc: TocLine[], o: Pick<DumpOptions, "excludeObjects" | "foreignKeys">): { keep: TocLine[]; atCutover: TocLine[] } {
  const excluded = new Set(o.excludeObjects.map((x) => `${x.classid}/${x.objid}`));
  const dependentKey = (x: TocLine) => {
    const sp = x.rest.indexOf(" ");
    return sp < 0 ? undefined : `${x.rest.slice(0, sp)} ${x.kind} ${x.rest.slice(sp + 1)}`;
  };
  const dropped = new Set<string>(), held = new Set<string>();
  for (const x of toc) {
    if (SKIPPED_KINDS.has(x.kind) || excluded.has(`${x.tableoid}/${x.oid}`)) { const k = dependentKey(x); if (k) dropped.add(k); }
    else if (HELD_KINDS.has(x.kind)) { const k = dependentKey(x); if (k) held.add(k); }
  }
  const fkComments = o.foreignKeys.map((f) => `${f.schema} CONSTRAINT ${f.quotedName} ON ${f.quotedTable} `);
  // functions: their comments and grants name them with argument names, unlike their own entry
  const droppedTags = o.excludeObjects.map((x) => x.dumpTag).filter(Boolean) as string[];
  const keep: TocLine[] = [], atCutover: TocLine[] = [];
  for (const x of toc) {
    if (SKIPPED_KINDS.has(x.kind) || excluded.has(`${x.tableoid}/${x.oid}`)) continue;
    if (DEPENDENT_KINDS.has(x.kind)) {
      if (dropped.has(x.rest) || droppedTags.some((p) => x.rest.startsWith(p))) continue;
      if (x.kind !== "ACL" && fkComments.some((p) => x.rest.startsWith(p))) continue;
      if (held.has(x.rest)) { atCutover.push(x); continue; }
    }
    if (HELD_KINDS.has(x.kind)) atCutover.push(x); else keep.push(x);
  }
  return { keep, atCutover };
}

/**
 * Dump the source schema once and split it into the groups above. A whole-database dump (schemas not
 * migrated are excluded, not the others named) so that what lives outside schemas travels too:
 * extensions, casts, transforms, access methods, foreign-data wrappers and servers, default privileges,
 * publications, event triggers.
 */
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
    const pattern = quoteIdent;
    // Security labels need their provider loaded on the target, which no catalog shows: they are listed as not carried.
    const args = ["--schema-only", "--format=custom", `--file=${file}`, "--no-subscriptions", "--no-security-labels", `--exclude-schema=${CONTROL_SCHEMA}`];
    for (const s of opts.excludeSchemas) args.push(`--exclude-schema=${pattern(s)}`);
    for (const t of opts.excludeTables) args.push(`--exclude-table=${pattern(t.schema)}.${pattern(t.name)}`);
    const dump = await run(tools.pgDump.path, args, libpqEnv(source));
    if (dump.code !== 0) {
      throw new PgferryError("pg_dump_failed", `pg_dump of the ${source.label} failed: ${redact(dump.stderr.trim(), source)}`);
    }
    const listed = await run(tools.pgRestore.path, ["--list", file], process.env);
    if (listed.code !== 0) throw new PgferryError("pg_restore_failed", `pg_restore could not list the schema dump: ${listed.stderr.trim()}`);
    const plan = planToc(parseTocList(listed.stdout), opts);
    const keepList = path.join(dir, "keep.list"), heldList = path.join(dir, "held.list");
    fs.writeFileSync(keepList, plan.keep.map((x) => x.line).join("\n") + "\n");
    fs.writeFileSync(heldList, plan.atCutover.map((x) => x.line).join("\n") + "\n");
    const ownership = opts.keepOwnership ? [] : ["--no-owner", "--no-privileges"];
    const render = async (list: string, section?: string) => {
      const r = await run(tools.pgRestore!.path, [...(section ? [`--section=${section}`] : []), `--use-list=${list}`, ...ownership, "--file=-", file], process.env);
      if (r.code !== 0) throw new PgferryError("pg_restore_failed", `pg_restore could not render the ${section ?? "held-back"} schema: ${r.stderr.trim()}`);
      return splitDump(r.stdout);
    };
    // Three pg_restore runs reading the same file: side by side.
    const [pre, post, held] = await Promise.all([render(keepList, "pre-data"), render(keepList, "post-data"),
      plan.atCutover.length ? render(heldList).then((r) => r.entries) : Promise.resolve([])]);
    return {
      preamble: pre.preamble,
      preData: pre.entries,
      postData: post.entries.filter((e) => e.kind !== "MATERIALIZED VIEW DATA").map((e) => ({ ...e, parallel: PARALLEL_KINDS.has(e.kind) })),
      atCutover: held,
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const HEADER = /^-- Name: (.*); Type: (.*); Schema: (.*); Owner: (.*)$/;
/**
 * Session settings pg_restore writes before the entry that needs them, and only when they change.
 * Entries run on several connections and out of dump order (parallel post-data), so each entry
 * carries the values in force at its place in the script.
 */
const STATE_SET = /^SET (default_tablespace|default_table_access_method) = .*;$/;

/**
 * Split pg_restore's plain SQL into TOC entries by their "-- Name: …; Type: …" comment headers.
 * psql-only lines (\restrict, \unrestrict) are dropped: we execute the SQL through the protocol.
 * The SET lines between two entries belong to the next one (pg_restore writes them before its header).
 */
export function splitDump(sql: string): { preamble: string; entries: SchemaEntry[] } {
  const lines = sql.split("\n").filter((l) => !/^\\(un)?restrict\b/.test(l));
  const entries: SchemaEntry[] = [];
  const preamble: string[] = [];
  const state = new Map<string, string>();
  let current: { kind: string; object: string; body: string[] } | undefined;
  const flush = () => {
    if (current) {
      const body = current.body.join("\n").trim();
      if (body) entries.push({ kind: current.kind, object: current.object, sql: [...state.values(), body].join("\n") });
    }
  };
  for (let i = 0; i < lines.length; i++) {
    const set = STATE_SET.exec(lines[i]);
    if (set) {
      // takes effect from the next entry on: close the current one with the state it was written under
      flush();
      current = current && { ...current, body: [] };
      state.set(set[1], lines[i]);
      continue;
    }
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

/**
 * Foreign keys as cutover entries: NOT VALID first (no long lock), then VALIDATE where the source had it
 * validated. Each takes its comment along (the key does not exist before the cutover, so neither can it).
 */
export function foreignKeyEntries(fks: ForeignKeyInfo[], migrated: Set<string>): SchemaEntry[] {
  const out: SchemaEntry[] = [];
  for (const fk of fks) {
    const table = qualified(fk.schema, fk.table);
    const object = `${fk.schema}.${fk.table}.${fk.name}`;
    if (!migrated.has(`${fk.refSchema}.${fk.refTable}`)) continue; // referenced table excluded from the migration
    const comment = fk.comment == null ? "" : `\nCOMMENT ON CONSTRAINT ${quoteIdent(fk.name)} ON ${table} IS ${quoteLiteral(fk.comment)};`;
    if (fk.onPartitioned || fk.refPartitioned) {
      // PostgreSQL < 18 refuses NOT VALID foreign keys on partitioned tables; one that references a partitioned
      // table, added NOT VALID, stays "not validated" on the referenced partitions' clones after VALIDATE (17):
      // add it validated, as pg_restore does.
      const def = fk.validated || fk.onPartitioned ? fk.definition : `${fk.definition} NOT VALID`;
      out.push({ kind: "FK CONSTRAINT", object, sql: `ALTER TABLE ${fk.onPartitioned ? "" : "ONLY "}${table} ADD CONSTRAINT ${quoteIdent(fk.name)} ${def};${comment}` });
      continue;
    }
    const def = fk.validated ? `${fk.definition} NOT VALID` : fk.definition;
    out.push({ kind: "FK CONSTRAINT", object, sql: `ALTER TABLE ONLY ${table} ADD CONSTRAINT ${quoteIdent(fk.name)} ${def};${comment}` });
    if (fk.validated) out.push({ kind: "FK VALIDATE", object, sql: `ALTER TABLE ONLY ${table} VALIDATE CONSTRAINT ${quoteIdent(fk.name)};` });
  }
  return out;
}

// The records of the schema entries (pgferry.schema_entry) are the state module's; re-exported for this module's users.
export { readEntries, readNotCarried, storeEntries } from "../state/schemaEntries";
export type { StoredEntry } from "../state/schemaEntries";

/**
 * Roles missing on the target that objects of the migrated schemas (or of no schema: extensions, casts,
 * servers, user mappings, default privileges, publications…) depend on, from pg_shdepend: owners,
 * grantees, policy roles. `named`: objects whose statement names the role itself (policy TO, user
 * mapping FOR), which no --no-owner can leave out.
 */
export async function rolesMissingOnTarget(src: Client, tgt: Client, schemas: string[]): Promise<{ role: string; named: string[]; owns: string[] }[]> {
  const r = await src.query(`
    SELECT pg_get_userbyid(d.refobjid) AS role, d.deptype, d.classid = 'pg_user_mapping'::regclass AS user_mapping,
           pg_describe_object(d.classid, d.objid, d.objsubid) AS object
      FROM pg_shdepend d
     WHERE d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND d.refclassid = 'pg_authid'::regclass
       AND d.deptype IN ('o', 'a', 'r') AND d.refobjid <> 10
       AND coalesce((pg_identify_object(d.classid, d.objid, d.objsubid)).schema = ANY($1), true)
       AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = d.classid AND e.objid = d.objid AND e.deptype = 'e')
     ORDER BY 1, 4`, [schemas]);
  const roles = [...new Set(r.rows.map((x) => x.role as string))];
  const t = await tgt.query(`SELECT rolname FROM pg_roles WHERE rolname = ANY($1)`, [roles]);
  const have = new Set(t.rows.map((x) => x.rolname));
  return roles.filter((x) => !have.has(x)).sort().map((role) => {
    const rows = r.rows.filter((x) => x.role === role);
    return { role, named: rows.filter((x) => x.deptype === "r" || x.user_mapping).map((x) => x.object),
      owns: rows.filter((x) => !(x.deptype === "r" || x.user_mapping)).map((x) => x.object) };
  });
}

/** How to copy large objects by hand: `--large-objects` exists from pg_dump 16 on, `--blobs` in every version. */
export function largeObjectFix(pgDumpMajor?: number): string {
  const flag = pgDumpMajor !== undefined && pgDumpMajor >= 16 ? "--large-objects" : "--blobs";
  return `copy them at cutover, after writes stop: pg_dump --format=custom --data-only ${flag} --exclude-table='*.*' --file=lo.dump <source> ` +
    `&& pg_restore --data-only --dbname=<target> lo.dump; or move the data into bytea columns`;
}

/**
 * Apply the not-yet-applied entries of a section, each in its own transaction together with its
 * "applied" mark. Parallel entries (index and constraint builds) run on `jobs` connections first;
 * the rest follow in dump order on one connection.
 */
export async function applyEntries(target: Endpoint, migration: string, section: string, preamble: string, jobs: number,
  onEntry?: (e: StoredEntry) => void): Promise<number> {
  const all = (await withControl(target, (c) => readEntries(c, migration, section))).filter((e) => !e.applied);
  if (!all.length) return 0; // nothing left: no sessions to open (the cutover calls this while writes are stopped)
  const sizes = new Map<StoredEntry, number>();
  const parallel = await biggestTableFirst(target, all.filter((e) => e.parallel), sizes);
  const serial = all.filter((e) => !e.parallel);
  const worker = async (queue: StoredEntry[]) => {
    const c = await connect(target);
    try {
      if (preamble) await c.query(preamble);
      while (queue.length) {
        // Entries on small tables (or on none) go several per transaction; a build on a big table goes alone, so
        // the workers still share the long builds.
        const batch = [queue.shift()!];
        for (let bytes = sizes.get(batch[0]) ?? 0; batch.length < ENTRY_BATCH && queue.length && bytes + (sizes.get(queue[0]) ?? 0) <= ENTRY_BATCH_TABLE_BYTES;) {
          const e = queue.shift()!;
          bytes += sizes.get(e) ?? 0;
          batch.push(e);
        }
        if (batch.length > 1 && await applyBatch(c, migration, section, batch)) { batch.forEach((e) => onEntry?.(e)); continue; }
        for (const e of batch) {
          await applyOne(c, migration, section, e);
          onEntry?.(e);
        }
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
async function biggestTableFirst(target: Endpoint, entries: StoredEntry[], sizeOf: Map<StoredEntry, number>): Promise<StoredEntry[]> {
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
  for (const e of entries) sizeOf.set(e, size(e));
  return [...entries].sort((a, b) => size(b) - size(a) || (a.kind === "CONSTRAINT" ? 0 : 1) - (b.kind === "CONSTRAINT" ? 0 : 1) || a.ordinal - b.ordinal);
}

/**
 * Entries applied per round trip and transaction, with their applied marks (one commit, not one per entry: most of
 * post-data's time on schema-heavy databases was a round trip and a commit per index, constraint or trigger of a
 * small table), as long as their tables hold at most this many bytes together.
 */
const ENTRY_BATCH = 20, ENTRY_BATCH_TABLE_BYTES = 8 * 1024 * 1024;

/**
 * The batch and its marks in one transaction; false when it failed (rolled back): the caller then applies the entries
 * one by one, which retries deadlocks and lock timeouts and names an entry that fails, as before batching.
 */
async function applyBatch(c: Client, migration: string, section: string, batch: StoredEntry[]): Promise<boolean> {
  try {
    // "\n;\n": a newline ends a trailing line comment.
    await c.query(`BEGIN;\n${batch.map((e) => e.sql).join("\n;\n")}\n;\n${markEntriesAppliedSql(migration, section, batch.map((e) => e.ordinal))};\nCOMMIT`);
    return true;
  } catch {
    await c.query("ROLLBACK").catch(() => undefined);
    return false;
  }
}

async function applyOne(c: Client, migration: string, section: string, e: StoredEntry, attempts = 5): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      // One round trip: the entry and its applied mark in one transaction ("\n;\n": a newline ends a trailing line comment).
      await c.query(`BEGIN;\n${e.sql}\n;\n${markEntryAppliedSql(migration, section, e.ordinal)};\nCOMMIT`);
      return;
    } catch (err) {
      await c.query("ROLLBACK").catch(() => undefined);
      const code = (err as { code?: string }).code;
      // Parallel builds on one table can deadlock (ALTER TABLE vs CREATE INDEX): PostgreSQL aborts one; retry it.
      // 55P03: a lock_timeout gave way to an apply session (foreign keys while streaming); retry after a pause.
      if ((code === "40P01" || code === "40001" || code === "55P03") && attempt < attempts) {
        if (code === "55P03") await new Promise((r) => setTimeout(r, Math.min(1000, 20 * attempt)));
        continue;
      }
      throw new PgferryError("schema_apply_failed", `applying ${e.kind} ${e.object} on the target failed: ${(err as Error).message}`);
    }
  }
}

async function withControl<T>(ep: Endpoint, fn: (c: Client) => Promise<T>): Promise<T> {
  const c = await connect(ep);
  try { return await fn(c); } finally { await c.end().catch(() => undefined); }
}


/** The cutover section's foreign-key entries (the key NOT VALID with its comment, then its VALIDATE): applied while streaming. */
export const FOREIGN_KEY_KINDS = ["FK CONSTRAINT", "FK VALIDATE"];

export interface ForeignKeysWhileStreaming {
  /** Entries applied by this call (adds and validations). */
  applied: number;
  /** Keys left for the cutover (which applies them while writes are stopped, as before), each with why. */
  deferred: { object: string; error: string }[];
}

/**
 * Foreign keys, added and validated while CDC streams, so the cutover's freeze holds none of it. Sound
 * because neither apply path fires a key's triggers (the subscription's apply worker and the stream
 * applier run with session_replication_role = replica): a child row applied before its parent, or a
 * deferred or circular key, is never refused on the target. VALIDATE reads one snapshot of the target,
 * which is the source's state at a commit point, where every key the source validated holds.
 * Each entry commits with its applied mark, so a killed run resumes; adds take a brief lock on both
 * tables against the apply session, with a lock_timeout below deadlock_timeout so that on a lock cycle
 * this session gives way (and retries), never the applier. What still fails is left unapplied and
 * returned: the cutover applies it, as it did every key before.
 */
export async function applyForeignKeysWhileStreaming(target: Endpoint, migration: string, jobs: number,
  onEntry?: (e: StoredEntry) => void, onStart?: (pending: number) => void): Promise<ForeignKeysWhileStreaming> {
  const pending = (await withControl(target, (c) => readEntries(c, migration, "cutover")))
    .filter((e) => !e.applied && FOREIGN_KEY_KINDS.includes(e.kind));
  const out: ForeignKeysWhileStreaming = { applied: 0, deferred: [] };
  if (!pending.length) return out;
  onStart?.(pending.length);
  const preamble = await withControl(target, (c) => readPreamble(c, migration));
  const failed = new Set<string>();
  const worker = async (queue: StoredEntry[]) => {
    const c = await connect(target, { application_name: "pgferry foreign keys" });
    try {
      if (preamble) await c.query(preamble);
      const dl = (await c.query(`SELECT setting::int AS ms FROM pg_settings WHERE name = 'deadlock_timeout'`)).rows[0]?.ms ?? 1000;
      await c.query(`SET lock_timeout = ${Math.max(50, Math.floor(dl / 2))}`);
      for (let e; (e = queue.shift());) {
        if (failed.has(e.object)) { out.deferred.push({ object: e.object, error: "its key could not be added while streaming" }); continue; }
        try {
          await applyOne(c, migration, "cutover", e, 200);
        } catch (err) {
          failed.add(e.object);
          out.deferred.push({ object: e.object, error: (err as Error).message });
          continue;
        }
        out.applied++;
        onEntry?.(e);
      }
    } finally {
      await c.end().catch(() => undefined);
    }
  };
  // Adds first, on one session (catalog changes, no scan except for partitioned keys); then the validations in parallel.
  await worker(pending.filter((e) => e.kind === "FK CONSTRAINT"));
  const validations = pending.filter((e) => e.kind === "FK VALIDATE");
  await Promise.all(Array.from({ length: Math.max(1, Math.min(jobs, validations.length)) }, () => worker(validations)));
  return out;
}
