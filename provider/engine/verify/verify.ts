/**
 * Verification: compare a migrated target database with its source, with the same notion of "equal"
 * as the independent checker tools/verify.sh:
 *
 *  - tables (plain tables, leaf partitions, materialized views): present on the target with the same
 *    kind and column-name set, same row count, same order-independent content hash. Each row is
 *    rendered as ROW(<columns sorted by name, COLLATE "C">)::text under pinned output settings, and
 *    hashed with verify.sh's default "sum" mode (128-bit additive multiset hash of per-row md5s), so
 *    the hashes printed by both tools are the same strings. Partitioned parents are checked for
 *    presence, kind and columns; their contents are covered by their leaves (their row counts here
 *    are sums over the leaves).
 *  - sequences: the next value the target would hand out is not behind the source's.
 *  - constraints (PK/UNIQUE/FK/CHECK/EXCLUDE): same definition; validated on the target whenever
 *    validated on the source.
 *  - user triggers: same definition and same enabled state; internal (FK) triggers not disabled on
 *    the target where they are enabled on the source.
 *
 * Objects that exist only on the target (within the compared schemas) are mismatches too, as in
 * verify.sh. Messages name objects only, never an endpoint's connection string or password.
 */
import { Client } from "pg";
import { displayName, planExclusion, TableSelection, userSchemas } from "../catalog/catalog";
import { connect, endClient, Endpoint, quoteIdent, quoteLiteral, qualified, redact } from "../core/endpoint";
import { PgferryError } from "../core/errors";
import { compareLargeObjects } from "../copy/largeObjects";

export interface VerifyOptions {
  /** Default: every user schema except pg_catalog, information_schema, pg_toast*, pg_temp* and pgferry. */
  schemas?: string[];
  /** Qualified names "schema.table" (unquoted form) to skip (tables, materialized views, sequences). */
  excludeTables?: string[];
  /**
   * start's selection (--include/--exclude, same patterns): what it left out — dependencies followed, as
   * start does — is not expected on the target. A name that matches nothing is refused.
   */
  include?: string[];
  exclude?: string[];
  /** Default true: content hash per table; false: counts only. */
  hashes?: boolean;
  /** Parallel table checks (default 4), each job with its own pair of connections. */
  jobs?: number;
  /**
   * Only these relations ("schema.name", unquoted), and no sequence/constraint/trigger checks: the
   * cutover's gate, which runs before sequences are synced and held-back keys are added.
   */
  onlyTables?: string[];
  /** With hashes false: content hashes for these relations ("schema.name") anyway (the cutover gate: tables changed during CDC). */
  hashTables?: string[];
  /**
   * Sessions opened beforehand (openVerifySessions), used instead of new ones and left open: the cutover warms
   * them before the freeze, so the gate at the fence does not pay for a cold session's first look at every table.
   */
  sessions?: VerifySessionPair[];
  /**
   * Skip unlogged source tables, with a warning naming them: a migration started with `--unlogged skip`
   * does not carry their content (logical replication cannot see it).
   */
  skipUnlogged?: boolean;
  /** Compare large objects (default true): OID sets and sizes, metadata, and with hashes their content hashes. */
  largeObjects?: boolean;
  /**
   * Contents already compared, by relation ("schema.name", unquoted): the cutover's pre-check, made while streaming, of
   * tables that have not changed on either side since (./precheck.ts). Their structure is still compared here; their
   * rows (and hash, when it was taken) are not read again. A table that needs a hash the known result lacks is probed.
   */
  known?: Map<string, KnownContents>;
  /**
   * The relations' catalog read before (the cutover's warm-up, while streaming: preReadCatalogs), used instead of
   * reading it again when a one-statement fingerprint of it is unchanged on both sides. Only with onlyTables.
   */
  catalogs?: PreReadCatalogs;
}

/** A table's contents as compared before (see VerifyOptions.known). */
export interface KnownContents { sourceRows: number; targetRows: number; sourceHash?: string; targetHash?: string }

export interface TableCheck {
  table: string;
  sourceRows: number;
  targetRows: number;
  sourceHash?: string;
  targetHash?: string;
  ok: boolean;
  problem?: string;
}

export interface SequenceCheck {
  sequence: string;
  sourceNext: string;
  targetNext: string;
  ok: boolean;
  problem?: string;
}

export interface ObjectCheck {
  kind: "constraint" | "trigger";
  table: string;
  name: string;
  ok: boolean;
  problem?: string;
}

export interface VerifyReport {
  ok: boolean;
  tables: TableCheck[];
  sequences: SequenceCheck[];
  objects: ObjectCheck[];
  problems: string[];
  /** Not differences: what was not compared and why (e.g. unlogged tables skipped). */
  warnings: string[];
  /** Large objects on both sides (absent when not compared); hashed: content hashes were compared too. */
  largeObjects?: { sourceCount: number; targetCount: number; sourceBytes: number; targetBytes: number; hashed: boolean; ok: boolean };
  seconds: number;
}

/** Output settings pinned on every verify session (identical to verify.sh's). */
const VERIFY_SETTINGS = [
  "SET TimeZone = 'UTC'", "SET DateStyle = 'ISO, YMD'", "SET IntervalStyle = 'postgres'",
  "SET extra_float_digits = 1", "SET bytea_output = 'hex'", "SET lc_monetary = 'C'",
  "SET xmloption = content", "SET statement_timeout = 0", "SET idle_in_transaction_session_timeout = 0",
  "SET search_path = pg_catalog",
].join("; ");

const BEGIN_SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

/** Schema filter over pg_namespace n; $1 is the explicit schema list (text[]) or NULL for the default. */
const SCHEMA_FILTER = `n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
  AND CASE WHEN $1::text[] IS NULL THEN n.nspname <> 'pgferry' ELSE n.nspname = ANY ($1::text[]) END`;

const SEP = "\x1f";

interface RelInfo {
  schema: string;
  name: string;
  kind: string; // r, p, m
  populated: boolean;
  cols: string[]; // sorted by name COLLATE "C" on the server
  leaves: string[]; // partitioned parents: keys of leaf partitions
  unlogged: boolean;
}
interface SeqInfo { schema: string; name: string }
interface ConInfo { schema: string; table: string; name: string; type: string; def: string; validated: boolean }
interface TrgInfo { schema: string; table: string; name: string; enabled: string; def: string }
interface Catalog {
  rels: Map<string, RelInfo>;
  seqs: Map<string, SeqInfo>;
  cons: Map<string, ConInfo>;
  trgs: Map<string, TrgInfo>;
  /** table key -> number of disabled internal triggers */
  internalDisabled: Map<string, number>;
}

const key = (...parts: string[]) => parts.join(SEP);
/** Shown in problems: quoted where a name needs it. */
const display = (schema: string, name: string) => displayName(schema, name);
/** Matched against excludeTables/onlyTables ("schema.name", unquoted). */
const rawName = (schema: string, name: string) => `${schema}.${name}`;

async function openSession(ep: Endpoint): Promise<Client> {
  const c = await connect(ep, { application_name: "pgferry verify" });
  try {
    await c.query(VERIFY_SETTINGS);
  } catch (e) {
    await c.end().catch(() => undefined);
    throw e;
  }
  return c;
}

/**
 * One value for everything the relations' part of the catalog read (readCatalog, tablesOnly) depends on: every table,
 * partitioned table and materialized view of the schemas (oid, name, kind, populated, persistence), their columns
 * (number, name, dropped) and every inheritance link (child, parent, the child's kind and name). One statement with one
 * row: no per-relation subquery, nothing shipped but the digest.
 */
const CATALOG_FINGERPRINT_SQL = `SELECT md5(coalesce(string_agg(x, E'\n' ORDER BY x COLLATE "C"), '')) AS h FROM (
    SELECT 'r' || ROW(c.oid, n.nspname, c.relname, c.relkind, c.relispopulated, c.relpersistence)::text AS x
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p', 'm') AND c.relpersistence <> 't' AND ${SCHEMA_FILTER}
    UNION ALL
    SELECT 'a' || ROW(a.attrelid, a.attnum, a.attname, a.attisdropped)::text
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE a.attnum > 0 AND c.relkind IN ('r', 'p', 'm') AND c.relpersistence <> 't' AND ${SCHEMA_FILTER}
    UNION ALL
    SELECT 'i' || ROW(i.inhrelid, i.inhparent, k.relkind, kn.nspname, k.relname)::text
      FROM pg_inherits i JOIN pg_class k ON k.oid = i.inhrelid JOIN pg_namespace kn ON kn.oid = k.relnamespace) s`;

/** The relations' catalog of both sides as the gate reads it, with the fingerprint of each taken in the same snapshot. */
export interface PreReadCatalogs { schemas: string[] | null; source: Catalog; target: Catalog; sourceFingerprint: string; targetFingerprint: string }

/** Read the gate's catalogs ahead (the cutover's warm-up, on its gate sessions), for VerifyOptions.catalogs. */
export async function preReadCatalogs(pair: VerifySessionPair, schemas?: string[]): Promise<PreReadCatalogs> {
  const sch = schemas && schemas.length ? schemas : null;
  const withPrint = async (c: Client) => { const print: string[] = []; const cat = await readCatalog(c, sch, true, print); return { cat, print: print[0] }; };
  const [s, t] = await Promise.all([withPrint(pair.source), withPrint(pair.target)]);
  return { schemas: sch, source: s.cat, target: t.cat, sourceFingerprint: s.print, targetFingerprint: t.print };
}

/**
 * tablesOnly: relations only (the cutover gate compares no sequences, constraints or triggers: reading them is its downtime).
 * fingerprint: receives CATALOG_FINGERPRINT_SQL's value, read in the same snapshot.
 */
async function readCatalog(c: Client, schemas: string[] | null, tablesOnly = false, fingerprint?: string[]): Promise<Catalog> {
  const cat: Catalog = { rels: new Map(), seqs: new Map(), cons: new Map(), trgs: new Map(), internalDisabled: new Map() };
  await c.query(BEGIN_SNAPSHOT);
  try {
    if (fingerprint) fingerprint.push((await c.query(CATALOG_FINGERPRINT_SQL, [schemas])).rows[0].h);
    const rels = await c.query(`
      SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS kind, c.relispopulated AS populated, c.relpersistence = 'u' AS unlogged,
             coalesce((SELECT array_agg(a.attname::text ORDER BY a.attname COLLATE "C")
                       FROM pg_attribute a
                       WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '{}'::text[]) AS cols,
             CASE WHEN c.relkind = 'p' THEN
               coalesce((SELECT array_agg(ln.nspname || E'\\x1f' || lc.relname)
                         FROM pg_partition_tree(c.oid) t
                         JOIN pg_class lc ON lc.oid = t.relid
                         JOIN pg_namespace ln ON ln.oid = lc.relnamespace
                         WHERE t.isleaf AND lc.relkind = 'r'), '{}'::text[])
             ELSE '{}'::text[] END AS leaves
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind IN ('r', 'p', 'm') AND c.relpersistence <> 't' AND ${SCHEMA_FILTER}`, [schemas]);
    for (const r of rels.rows) {
      cat.rels.set(key(r.schema, r.name), { schema: r.schema, name: r.name, kind: r.kind, populated: r.populated, cols: r.cols, leaves: r.leaves, unlogged: r.unlogged });
    }
    if (tablesOnly) {
      await c.query("COMMIT");
      return cat;
    }
    const seqs = await c.query(`
      SELECT n.nspname AS schema, c.relname AS name
      FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relpersistence <> 't' AND ${SCHEMA_FILTER}`, [schemas]);
    for (const r of seqs.rows) cat.seqs.set(key(r.schema, r.name), { schema: r.schema, name: r.name });
    const cons = await c.query(`
      SELECT n.nspname AS schema, c.relname AS table, con.conname AS name, con.contype::text AS type,
             regexp_replace(pg_get_constraintdef(con.oid), ' NOT VALID$', '') AS def, con.convalidated AS validated
      FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE con.contype IN ('p', 'u', 'f', 'c', 'x') AND ${SCHEMA_FILTER}`, [schemas]);
    for (const r of cons.rows) cat.cons.set(key(r.schema, r.table, r.name), r as ConInfo);
    const trgs = await c.query(`
      SELECT n.nspname AS schema, c.relname AS table, t.tgname AS name, t.tgenabled::text AS enabled,
             pg_get_triggerdef(t.oid) AS def
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND ${SCHEMA_FILTER}`, [schemas]);
    // Clones of a partitioned table's trigger (tgparentid <> 0) are compared through their parent:
    // PostgreSQL 13 marks them internal, 15+ does not, so counting them would differ across versions.
    for (const r of trgs.rows) cat.trgs.set(key(r.schema, r.table, r.name), r as TrgInfo);
    const internal = await c.query(`
      SELECT n.nspname AS schema, c.relname AS table, count(*) FILTER (WHERE t.tgenabled <> 'O')::int AS disabled
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE t.tgisinternal AND ${SCHEMA_FILTER}
      GROUP BY n.nspname, c.relname`, [schemas]);
    for (const r of internal.rows) cat.internalDisabled.set(key(r.schema, r.table), r.disabled);
    await c.query("COMMIT");
  } catch (e) {
    await c.query("ROLLBACK").catch(() => undefined);
    throw e;
  }
  return cat;
}

/** Next value each sequence would hand out (is_called honoured), or an error text per sequence. */
async function readSequences(c: Client, seqs: SeqInfo[], ep: Endpoint): Promise<Map<string, { next?: string; inc?: string; error?: string }>> {
  const out = new Map<string, { next?: string; inc?: string; error?: string }>();
  const one = (s: SeqInfo, i: number) => {
    const q = qualified(s.schema, s.name);
    return `SELECT ${i} AS i, (CASE WHEN s.is_called THEN s.last_value::numeric + p.seqincrement ELSE s.last_value::numeric END)::text AS next,
            p.seqincrement::text AS inc FROM ${q} s, pg_sequence p WHERE p.seqrelid = ${quoteLiteral(q)}::regclass`;
  };
  const CHUNK = 100;
  for (let start = 0; start < seqs.length; start += CHUNK) {
    const chunk = seqs.slice(start, start + CHUNK);
    try {
      const r = await c.query(chunk.map((s, i) => one(s, i)).join("\nUNION ALL\n"));
      for (const row of r.rows) out.set(key(chunk[row.i].schema, chunk[row.i].name), { next: row.next, inc: row.inc });
    } catch {
      // One unreadable sequence spoils the batch: read them one at a time to find it.
      for (const s of chunk) {
        try {
          const r = await c.query(one(s, 0));
          out.set(key(s.schema, s.name), { next: r.rows[0]?.next, inc: r.rows[0]?.inc });
        } catch (e) {
          out.set(key(s.schema, s.name), { error: redact((e as Error).message, ep) });
        }
      }
    }
  }
  return out;
}

export interface VerifySessionPair { source: Client; target: Client; sourcePid: number }

/** `n` pairs of verify sessions (source, target), each with the verify settings. */
export async function openVerifySessions(source: Endpoint, target: Endpoint, n: number): Promise<VerifySessionPair[]> {
  const pairs: VerifySessionPair[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const [s, t] = await Promise.all([openSession(source), openSession(target)]);
      pairs.push({ source: s, target: t, sourcePid: (await s.query(`SELECT pg_backend_pid() AS p`)).rows[0].p });
    }
  } catch (e) {
    await closeVerifySessions(pairs);
    throw e;
  }
  return pairs;
}

export async function closeVerifySessions(pairs: VerifySessionPair[]): Promise<void> {
  // Bounded: after a stalled link a polite end() would wait forever for the peer's answer.
  await Promise.all(pairs.flatMap((p) => [endClient(p.source), endClient(p.target)]));
}

interface Probe { rows: number; hash?: string; error?: string }
interface Work { k: string; s: RelInfo; t: RelInfo; cols: string[] }

/** Tables counted per round trip, and per statement: PostgreSQL plans a long UNION ALL in quadratic time (2,000 branches: seconds). */
const COUNT_BATCH = 500;
const UNION_BRANCHES = 50;

/**
 * Statements sent in one round trip (simple query protocol, one implicit transaction); the rows of each. Used
 * for UNION ALLs kept short enough to plan quickly.
 */
export async function batchedStatements(c: Client, statements: string[]): Promise<any[][]> {
  if (!statements.length) return [];
  const r = (await c.query(statements.join(";\n"))) as unknown;
  return (Array.isArray(r) ? r : [r]).map((x: { rows: any[] }) => x.rows);
}

/** Split into UNION ALLs of at most UNION_BRANCHES branches. */
export function unionAlls(branches: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < branches.length; i += UNION_BRANCHES) out.push(branches.slice(i, i + UNION_BRANCHES).join("\nUNION ALL\n"));
  return out;
}

/**
 * Row counts of plain tables in one round trip; undefined when it fails (a table unreadable or gone), and the
 * caller probes the tables one by one so the error is named per table.
 */
async function countBatch(c: Client, rels: RelInfo[]): Promise<number[] | undefined> {
  try {
    const results = await batchedStatements(c, unionAlls(rels.map((rel, i) => `SELECT ${i} AS i, count(*)::text AS n FROM ONLY ${qualified(rel.schema, rel.name)}`)));
    const out: number[] = new Array(rels.length);
    for (const row of results.flat()) out[row.i] = Number(row.n);
    return out.some((x) => x === undefined) ? undefined : out;
  } catch {
    return undefined;
  }
}

/**
 * One row's hash (verify.sh's "sum" mode): md5 of the row's text, its columns in the given order, the relation aliased `_v_`.
 * The cutover's check by key (./byKey.ts) hashes rows with the same expression, so its sums and these agree.
 */
export function rowHashSql(cols: string[]): string {
  return `md5(ROW(${cols.map((c) => "_v_." + quoteIdent(c)).join(", ")})::text)`;
}

/** One half (the first or second 64 bits) of the row hashes `h`, summed as numeric, as text: the additive part of the content hash. */
export function hashHalfSumSql(half: 1 | 2): string {
  return `coalesce(sum(('x' || substr(h, ${half === 1 ? 1 : 17}, 16))::bit(64)::bigint::numeric), 0)::text`;
}

function probeSql(rel: RelInfo, cols: string[], hashes: boolean, definition?: string): string {
  const from = definition ? `(${definition}) _v_` : `${rel.kind === "p" ? "" : "ONLY "}${qualified(rel.schema, rel.name)} _v_`;
  if (!hashes) return `SELECT count(*)::text AS n FROM ${from}`;
  // verify.sh's "sum" mode, character for character.
  return `SELECT count(*)::text AS n, md5(count(*)::text || ':' || ${hashHalfSumSql(1)} || ':' || ${hashHalfSumSql(2)}) AS h
          FROM (SELECT ${rowHashSql(cols)} AS h FROM ${from}) s`;
}

/**
 * On the source, a populated materialized view is compared through its definition: the target's copy
 * is refreshed at cutover, so it must equal what a refresh on the (frozen) source would produce, not
 * the source's possibly stale contents.
 */
async function probe(c: Client, ep: Endpoint, rel: RelInfo, cols: string[], hashes: boolean, viaDefinition = false): Promise<Probe> {
  if (rel.kind === "m" && !rel.populated) return { rows: 0, hash: "UNPOPULATED" };
  try {
    await c.query(BEGIN_SNAPSHOT);
    let definition: string | undefined;
    if (viaDefinition && rel.kind === "m") {
      const d = await c.query(`SELECT pg_get_viewdef($1::regclass) AS d`, [qualified(rel.schema, rel.name)]);
      definition = String(d.rows[0].d).trim().replace(/;$/, "");
    }
    const r = await c.query(probeSql(rel, cols, hashes, definition));
    await c.query("COMMIT");
    return { rows: Number(r.rows[0].n), hash: hashes ? r.rows[0].h : undefined };
  } catch (e) {
    await c.query("ROLLBACK").catch(() => undefined);
    return { rows: 0, error: redact((e as Error).message, ep) };
  }
}

/** Record both sides' contents on the check, and the difference if any (a structural problem already recorded stays). */
function judge(check: TableCheck, withHash: boolean, sp: Probe, tp: Probe): void {
  check.sourceRows = sp.rows;
  check.targetRows = tp.rows;
  if (withHash) { check.sourceHash = sp.hash; check.targetHash = tp.hash; }
  if (check.problem) return; // structural problem already recorded
  if (sp.error) check.problem = `${check.table}: cannot read on source: ${sp.error}`;
  else if (tp.error) check.problem = `${check.table}: cannot read on target: ${tp.error}`;
  else if ((sp.hash === "UNPOPULATED") !== (tp.hash === "UNPOPULATED")) {
    check.problem = `${check.table}: materialized view ${sp.hash === "UNPOPULATED" ? "not populated on source but populated on target" : "populated on source but not on target"}`;
  } else if (sp.rows !== tp.rows) check.problem = `${check.table}: ${sp.rows} rows on source, ${tp.rows} on target`;
  else if (withHash && sp.hash !== tp.hash) check.problem = `${check.table}: contents differ (${sp.rows} rows on both sides, hash ${sp.hash?.slice(0, 12)} on source, ${tp.hash?.slice(0, 12)} on target)`;
  if (check.problem) check.ok = false;
}

const KIND_NAMES: Record<string, string> = { r: "table", p: "partitioned table", m: "materialized view" };

function listDiff(a: string[], b: string[]): string {
  const sb = new Set(b), sa = new Set(a);
  const missing = a.filter((x) => !sb.has(x)), extra = b.filter((x) => !sa.has(x));
  const parts: string[] = [];
  if (missing.length) parts.push(`missing on target: ${missing.join(", ")}`);
  if (extra.length) parts.push(`extra on target: ${extra.join(", ")}`);
  return parts.join("; ");
}

const CONTYPE_NAMES: Record<string, string> = { p: "primary key", u: "unique constraint", f: "foreign key", c: "check constraint", x: "exclusion constraint" };
const TGENABLED_NAMES: Record<string, string> = { O: "enabled", D: "disabled", R: "enabled for replica only", A: "enabled always" };

export async function verifyMigration(source: Endpoint, target: Endpoint, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const started = Date.now();
  const hashes = opts.hashes ?? true;
  const jobs = Math.max(1, Math.floor(opts.jobs ?? 4));
  const schemas = opts.schemas && opts.schemas.length ? opts.schemas : null;
  const excluded = new Set(opts.excludeTables ?? []);
  /** Constraints start leaves out with what they reference (foreign keys to excluded tables): "schema.table.name". */
  const excludedConstraints = new Set<string>();
  if (opts.include?.length || opts.exclude?.length) {
    const sel = await selectionExclusions(source, { schemas: schemas ?? [], include: opts.include ?? [], exclude: opts.exclude ?? [] });
    for (const r of sel.relations) excluded.add(r);
    for (const r of sel.constraints) excludedConstraints.add(r);
  }
  const only = opts.onlyTables ? new Set(opts.onlyTables) : undefined;
  const hashAnyway = new Set(opts.hashTables ?? []);
  const isExcluded = (schema: string, name: string) => excluded.has(rawName(schema, name)) || (!!only && !only.has(rawName(schema, name)));

  // 1. Catalogs, one snapshot per side; then sequences on the same sessions.
  let src: Catalog, tgt: Catalog;
  let srcSeq: Map<string, { next?: string; inc?: string; error?: string }>;
  let tgtSeq: Map<string, { next?: string; inc?: string; error?: string }>;
  {
    const given = opts.sessions?.[0];
    const sessions = given ? [] : await Promise.allSettled([openSession(source), openSession(target)]);
    const clients = sessions.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
    try {
      for (const s of sessions) if (s.status === "rejected") throw s.reason;
      const [sc, tc] = given ? [given.source, given.target] : clients;
      // Read ahead (while streaming) and unchanged since on both sides: one fingerprint statement per side instead of the read.
      const pre = opts.catalogs;
      const reuse = !!only && !!pre && JSON.stringify(pre.schemas) === JSON.stringify(schemas) &&
        (await Promise.all([sc.query(CATALOG_FINGERPRINT_SQL, [schemas]), tc.query(CATALOG_FINGERPRINT_SQL, [schemas])]))
          .every((r, i) => r.rows[0].h === (i === 0 ? pre.sourceFingerprint : pre.targetFingerprint));
      [src, tgt] = reuse ? [pre!.source, pre!.target] : await Promise.all([readCatalog(sc, schemas, !!only), readCatalog(tc, schemas, !!only)]);
      const seqsOf = (cat: Catalog) => [...cat.seqs.values()].filter((s) => !only && !isExcluded(s.schema, s.name));
      [srcSeq, tgtSeq] = await Promise.all([readSequences(sc, seqsOf(src), source), readSequences(tc, seqsOf(tgt), target)]);
    } finally {
      await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
    }
  }

  // 2. Tables: structure from the catalogs, contents probed in parallel.
  const tableChecks = new Map<string, TableCheck>();
  const relKeys = [...new Set([...src.rels.keys(), ...tgt.rels.keys()])].sort();
  const work: Work[] = [];
  const parents: { k: string; s: RelInfo }[] = [];
  const skippedUnlogged: string[] = [];
  for (const k of relKeys) {
    const s = src.rels.get(k), t = tgt.rels.get(k);
    const info = (s ?? t)!;
    if (isExcluded(info.schema, info.name)) continue;
    if (opts.skipUnlogged && s?.unlogged && s.kind === "r") { skippedUnlogged.push(display(info.schema, info.name)); continue; }
    const table = display(info.schema, info.name);
    const check: TableCheck = { table, sourceRows: 0, targetRows: 0, ok: true };
    tableChecks.set(k, check);
    if (!t) check.problem = `${table}: ${KIND_NAMES[s!.kind]} missing on target`;
    else if (!s) check.problem = `${table}: ${KIND_NAMES[t.kind]} exists only on target`;
    else if (s.kind !== t.kind) check.problem = `${table}: ${KIND_NAMES[s.kind]} on source, ${KIND_NAMES[t.kind]} on target`;
    else if (s.cols.join(SEP) !== t.cols.join(SEP)) check.problem = `${table}: columns differ (${listDiff(s.cols, t.cols)})`;
    if (s && t && s.kind === t.kind && s.kind === "p") {
      parents.push({ k, s });
    } else if (s && t && s.kind === t.kind) {
      // Columns differing: counts only (the hash could not agree anyway).
      work.push({ k, s, t, cols: s.cols });
    }
    if (check.problem) check.ok = false;
  }

  const columnsMatch = (w: { s: RelInfo; t: RelInfo }) => w.s.cols.join(SEP) === w.t.cols.join(SEP);
  // hashTables names relations "schema.name" unquoted (as onlyTables does), not as displayed.
  const withHashOf = (w: Work) => (hashes || hashAnyway.has(rawName(w.s.schema, w.s.name)) || hashAnyway.has(tableChecks.get(w.k)!.table)) &&
    columnsMatch(w);
  /** Plain tables whose contents were compared before (the cutover's pre-check) with what this check needs: not read again. */
  const knownOf = (w: Work) => {
    const kn = opts.known?.get(rawName(w.s.schema, w.s.name));
    return kn && w.s.kind === "r" && columnsMatch(w) && (!withHashOf(w) || (kn.sourceHash !== undefined && kn.targetHash !== undefined)) ? kn : undefined;
  };
  for (const w of work.filter((x) => knownOf(x))) {
    const kn = knownOf(w)!, withHash = withHashOf(w);
    judge(tableChecks.get(w.k)!, withHash, { rows: kn.sourceRows, hash: withHash ? kn.sourceHash : undefined },
      { rows: kn.targetRows, hash: withHash ? kn.targetHash : undefined });
  }
  const toRead = work.filter((w) => !knownOf(w));
  // Row counts of plain tables go in batches, one statement per side for up to COUNT_BATCH tables: the cost of
  // counting many small tables is round trips, not rows. Hashes and materialized views go one by one.
  const units: Work[][] = toRead.filter((w) => withHashOf(w) || w.s.kind !== "r").map((w) => [w]);
  const countable = toRead.filter((w) => !withHashOf(w) && w.s.kind === "r");
  for (let i = 0; i < countable.length; i += COUNT_BATCH) units.push(countable.slice(i, i + COUNT_BATCH));
  let next = 0;
  const runJob = async (job: number) => {
    if (next >= units.length) return;
    const given = opts.sessions?.[job];
    const pair = given ? [] : await Promise.allSettled([openSession(source), openSession(target)]);
    const clients = pair.flatMap((p) => (p.status === "fulfilled" ? [p.value] : []));
    try {
      for (const p of pair) if (p.status === "rejected") throw p.reason;
      const [sc, tc] = given ? [given.source, given.target] : clients;
      while (next < units.length) {
        const unit = units[next++];
        const batched = unit.length > 1 ? await Promise.all([countBatch(sc, unit.map((w) => w.s)), countBatch(tc, unit.map((w) => w.t))]) : undefined;
        for (let i = 0; i < unit.length; i++) {
          const w = unit[i];
          const check = tableChecks.get(w.k)!;
          const withHash = withHashOf(w);
          const [sp, tp] = batched?.[0] && batched[1] ? [{ rows: batched[0][i] }, { rows: batched[1][i] }] as Probe[]
            : await Promise.all([probe(sc, source, w.s, w.cols, withHash, true), probe(tc, target, w.t, w.cols, withHash)]);
          judge(check, withHash, sp, tp);
        }
      }
    } finally {
      await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
    }
  };
  const results = await Promise.allSettled(Array.from({ length: Math.min(jobs, Math.max(1, units.length)) }, (_, job) => runJob(job)));
  for (const r of results) if (r.status === "rejected") throw r.reason;

  // Partitioned parents: row counts are the sums over their leaves (their contents are checked there).
  for (const { k, s } of parents) {
    const check = tableChecks.get(k)!;
    for (const leaf of s.leaves) {
      const lc = tableChecks.get(leaf);
      if (lc) { check.sourceRows += lc.sourceRows; check.targetRows += lc.targetRows; }
    }
  }

  // 3. Sequences.
  const sequences: SequenceCheck[] = [];
  for (const k of only ? [] : [...new Set([...src.seqs.keys(), ...tgt.seqs.keys()])].sort()) {
    const info = (src.seqs.get(k) ?? tgt.seqs.get(k))!;
    if (isExcluded(info.schema, info.name)) continue;
    const sequence = display(info.schema, info.name);
    const s = srcSeq.get(k), t = tgtSeq.get(k);
    const check: SequenceCheck = { sequence, sourceNext: s?.next ?? "", targetNext: t?.next ?? "", ok: true };
    if (!src.seqs.has(k)) check.problem = `${sequence}: sequence exists only on target`;
    else if (!tgt.seqs.has(k)) check.problem = `${sequence}: sequence missing on target`;
    else if (s?.error || !s?.next) check.problem = `${sequence}: cannot read on source: ${s?.error ?? "no value"}`;
    else if (t?.error || !t?.next) check.problem = `${sequence}: cannot read on target: ${t?.error ?? "no value"}`;
    else {
      const sn = BigInt(s.next), tn = BigInt(t.next);
      const descending = (s.inc ?? "1").startsWith("-");
      if (descending ? tn > sn : tn < sn) {
        check.problem = `${sequence}: target would hand out ${t.next} next, behind the source's ${s.next}`;
      }
    }
    if (check.problem) check.ok = false;
    sequences.push(check);
  }

  // 4. Constraints and triggers.
  const objects: ObjectCheck[] = [];
  for (const k of only ? [] : [...new Set([...src.cons.keys(), ...tgt.cons.keys()])].sort()) {
    const s = src.cons.get(k), t = tgt.cons.get(k);
    const info = (s ?? t)!;
    if (isExcluded(info.schema, info.table) || excludedConstraints.has(`${info.schema}.${info.table}.${info.name}`)) continue;
    const table = display(info.schema, info.table);
    const what = `${CONTYPE_NAMES[info.type] ?? "constraint"} ${quoteIdent(info.name)}`;
    const check: ObjectCheck = { kind: "constraint", table, name: info.name, ok: true };
    if (!t) check.problem = `${table}: ${what} missing on target`;
    else if (!s) check.problem = `${table}: ${what} exists only on target`;
    else if (s.def !== t.def) check.problem = `${table}: ${what} differs (source: ${s.def}; target: ${t.def})`;
    else if (s.validated && !t.validated) check.problem = `${table}: ${what} is NOT VALID on target (validated on source)`;
    if (check.problem) check.ok = false;
    objects.push(check);
  }
  for (const k of only ? [] : [...new Set([...src.trgs.keys(), ...tgt.trgs.keys()])].sort()) {
    const s = src.trgs.get(k), t = tgt.trgs.get(k);
    const info = (s ?? t)!;
    if (isExcluded(info.schema, info.table)) continue;
    const table = display(info.schema, info.table);
    const what = `trigger ${quoteIdent(info.name)}`;
    const check: ObjectCheck = { kind: "trigger", table, name: info.name, ok: true };
    if (!t) check.problem = `${table}: ${what} missing on target`;
    else if (!s) check.problem = `${table}: ${what} exists only on target`;
    else if (s.def !== t.def) check.problem = `${table}: ${what} definition differs`;
    else if (s.enabled !== t.enabled) {
      check.problem = `${table}: ${what} is ${TGENABLED_NAMES[s.enabled] ?? s.enabled} on source but ${TGENABLED_NAMES[t.enabled] ?? t.enabled} on target`;
    }
    if (check.problem) check.ok = false;
    objects.push(check);
  }
  for (const k of only ? [] : [...tgt.internalDisabled.keys()].sort()) {
    const td = tgt.internalDisabled.get(k) ?? 0, sd = src.internalDisabled.get(k) ?? 0;
    const [schema, name] = k.split(SEP);
    if (isExcluded(schema, name) || td <= sd) continue;
    const table = display(schema, name);
    objects.push({ kind: "trigger", table, name: "(internal foreign-key triggers)", ok: false,
      problem: `${table}: ${td} internal foreign-key trigger(s) disabled on target (source: ${sd})` });
  }

  const tables = [...tableChecks.values()];
  const lobs = opts.largeObjects === false ? undefined : await compareLargeObjects(source, target, hashes, jobs);
  const problems = [
    // As verify.sh: nothing to compare almost certainly means a wrong schema list, not success.
    ...(tables.length === 0 && sequences.length === 0
      ? [`no tables or sequences found to compare in ${schemas ? "schemas " + schemas.join(", ") : "any user schema"}`] : []),
    ...tables.filter((t) => t.problem).map((t) => t.problem!),
    ...sequences.filter((s) => s.problem).map((s) => s.problem!),
    ...objects.filter((o) => o.problem).map((o) => o.problem!),
    ...(lobs?.problems ?? []),
  ];
  return {
    ok: problems.length === 0,
    tables, sequences, objects, problems,
    warnings: skippedUnlogged.length ? [`not compared: ${skippedUnlogged.length} unlogged table(s) whose content the migration does not carry ` +
      `(--unlogged skip): ${skippedUnlogged.join(", ")}`] : [],
    largeObjects: lobs && { sourceCount: lobs.sourceCount, targetCount: lobs.targetCount, sourceBytes: lobs.sourceBytes, targetBytes: lobs.targetBytes,
      hashed: hashes, ok: lobs.problems.length === 0 },
    seconds: (Date.now() - started) / 1000,
  };
}

/** The relations start's selection leaves out ("schema.name"), as start computes them; unknown names are refused. */
async function selectionExclusions(source: Endpoint, sel: TableSelection): Promise<{ relations: string[]; constraints: string[] }> {
  const c = await connect(source, { application_name: "pgferry verify" });
  try {
    const schemas = sel.schemas.length ? sel.schemas : await userSchemas(c);
    const plan = await planExclusion(c, sel, schemas);
    if (plan.unknown.length) {
      throw new PgferryError("unknown_relation", `--exclude/--include name(s) ${plan.unknown.join(", ")} match no relation of the source's schemas ` +
        `${schemas.map((x) => displayName(x)).join(", ")}; fix: give verify the same --schema/--include/--exclude as start`);
    }
    const fks = plan.objects.filter((o) => o.foreignKey).map((o) => o.objid);
    const cons = fks.length ? (await c.query(`SELECT n.nspname || '.' || t.relname || '.' || con.conname AS k FROM pg_constraint con
        JOIN pg_class t ON t.oid = con.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace WHERE con.oid = ANY($1::oid[])`, [fks])).rows.map((x) => x.k) : [];
    return { relations: plan.relations.map((r) => rawName(r.schema, r.name)), constraints: cons };
  } finally {
    await c.end().catch(() => undefined);
  }
}
