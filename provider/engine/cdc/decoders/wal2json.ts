/**
 * Stream mode with the `wal2json` output plugin: for sources where a publication cannot be created
 * (pgoutput needs one), e.g. a role that may replicate but not CREATE in the database, or a managed
 * source that offers wal2json. One applier serves both plugins: this decoder turns wal2json's
 * format-version 2 output into pgferry's change type (./change.ts: begin / relation / insert / update /
 * delete / truncate / commit), as the pgoutput decoder does, so StreamApplier applies them unchanged,
 * with the same exactly-once and ack rules.
 *
 * What wal2json 2.x emits (wal2json.c, checked against real output of 2.5 in the unit tests):
 *  - one JSON object per XLogData: {"action":"B"|"C", "xid", "timestamp", "lsn", "nextlsn"} with
 *    include-lsn: B/C "lsn" is the commit record's start (pgoutput's commitLsn), "nextlsn" its end
 *    (commitEndLsn: what we store as applied and acknowledge);
 *  - I/U/D: "schema", "table" (the leaf partition), "columns" [{name, typeoid, value}] (new tuple),
 *    "identity" [{name, typeoid, value}] (UPDATE/DELETE: the old replica identity; for an UPDATE that
 *    kept its key, taken from the new tuple). Unchanged TOAST values are left out of both: they stay
 *    `undefined` here, which the applier leaves alone. Generated columns are included (pgoutput leaves
 *    them out): dropped here, the target computes them;
 *  - T: one object per truncated table, without CASCADE / RESTART IDENTITY flags (sequences are
 *    synced at cutover anyway);
 *  - values: int/float/numeric as bare JSON numbers (parsed losslessly here: raw text, never a JS
 *    number), booleans as true/false, bytea as hex without the leading \x, NULL as null, everything
 *    else as the type's text output in a JSON string (jsonb text, arrays, enums, domains, timestamps
 *    with µs and infinity stay exact);
 *  - float4/float8/numeric NaN and ±Infinity are written as null, like SQL NULL, unless the plugin has
 *    `numeric-data-types-as-string` (wal2json 2.6+), which quotes every number. Without that option, a
 *    null in such a column is ambiguous: it is resolved by reading the row's current value on the
 *    source by its key (see `resolve`). Exact once the source stops changing, which is what cutover
 *    and verification compare; tables that cannot be read by a key are refused by preflight.
 * wal2json sends no relation messages: replica identity, key and generated columns come from the
 * source catalog, read once per session for the migrated tables, and a synthetic `relation` message
 * is handed to the applier before a table's first change (that is how it learns column types).
 */
import { parse as losslessParse } from "lossless-json";
import { Client } from "pg";
import { CONTROL_SCHEMA, copyableTables, displayName, migratedTables, TableInfo, TableSelection } from "../../catalog/catalog";
import { connect, Endpoint, qualified, quoteIdent, quoteLiteral, SESSION_GUCS } from "../../core/endpoint";
import { PgferryError } from "../../core/errors";
import type { OutputPlugin } from "../../core/options";
import type { Change, ChangeRelation, ReplicaIdentity, RowChange } from "./change";
import { newRowValues } from "./change";
import type { Decoder, DecoderProbe, DecoderSession, FenceChanges, StreamSetup } from "./decoder";
import type { AddFinding } from "../cdc";
import { readMigration } from "../../state/state";


/** Type OIDs wal2json prints as bare numbers; of these, float4, float8 and numeric can be NaN/±Infinity. */
const AMBIGUOUS_NULL_TYPES = new Set([700, 701, 1700]);
const BYTEA = 17;

/** The fix named whenever the plugin is missing on the source. */
export function wal2jsonInstallFix(sourceMajor?: number): string {
  const v = sourceMajor ?? "NN";
  return `install the wal2json output plugin on the source server (Debian/Ubuntu: apt-get install postgresql-${v}-wal2json; ` +
    `RHEL: dnf install wal2json_${v}; no restart needed), or use --plugin pgoutput (the default) where a publication can be created`;
}

/** One change of wal2json format-version 2 as parsed: numbers stay raw text. */
export interface Wal2jsonColumn { name: string; typeoid?: string | number; value: string | boolean | null }
export interface Wal2jsonMessage {
  action: "B" | "C" | "I" | "U" | "D" | "T" | "M";
  xid?: string | number;
  timestamp?: string;
  lsn?: string;
  nextlsn?: string;
  schema?: string;
  table?: string;
  columns?: Wal2jsonColumn[];
  identity?: Wal2jsonColumn[];
}

/**
 * Parse one wal2json message. JSON.parse would turn 12345678901234567890.120 into 12345678901234567000;
 * lossless-json hands every number to us as its source text instead.
 */
export function parseWal2json(text: string): Wal2jsonMessage {
  return losslessParse(text, null, (raw: string) => raw) as Wal2jsonMessage;
}

/** START_REPLICATION options (wal2json's option names; values in SQL string literals). */
export function wal2jsonOptions(tables: { schema: string; name: string }[], numericAsString: boolean): [string, string][] {
  const opts: [string, string][] = [
    ["format-version", "2"], ["include-transaction", "1"], ["include-xids", "1"], ["include-timestamp", "1"],
    ["include-lsn", "1"], ["include-types", "0"], ["include-type-oids", "1"], ["include-pk", "0"],
    ["actions", "insert,update,delete,truncate"],
    ["add-tables", tables.map((t) => `${addTablesEscape(t.schema)}.${addTablesEscape(t.name)}`).join(",")],
  ];
  if (numericAsString) opts.push(["numeric-data-types-as-string", "1"]);
  return opts;
}

/** add-tables / filter-tables syntax: space, comma, period, asterisk, quote and backslash are escaped with \. */
export function addTablesEscape(ident: string): string {
  return ident.replace(/[^A-Za-z0-9_\u0080-\uffff]/g, (ch) => `\\${ch}`);
}

/** What the decoder knows about one source table (a plain table or a leaf partition). */
export interface Wal2jsonTable {
  /** The table wal2json names (a leaf for partitions). */
  schema: string;
  name: string;
  /** Where its rows are applied: the partition root (so target partitioning may differ), else itself. */
  applyTo: { schema: string; name: string };
  replicaIdentity: ReplicaIdentity;
  /** Replica identity columns; every column under REPLICA IDENTITY FULL (as pgoutput reports them). */
  keyColumns: string[];
  columns: { name: string; typeOid: number }[];
  generated: Set<string>;
}

const RI: Record<string, ReplicaIdentity> = { d: "default", n: "nothing", f: "full", i: "index" };

/** Catalog facts for the given tables (leaves and plain tables), on the source. */
export async function readWal2jsonTables(src: Client, tables: { schema: string; name: string }[]): Promise<Map<string, Wal2jsonTable>> {
  const r = await src.query(`SELECT n.nspname AS schema, c.relname AS name, c.relreplident AS ri,
      rn.nspname AS root_schema, rc.relname AS root_name,
      (SELECT coalesce(json_agg(json_build_object('name', a.attname, 'type', a.atttypid::int, 'generated', a.attgenerated <> '')
         ORDER BY a.attnum), '[]') FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
      (SELECT coalesce(array_agg(a.attname::text ORDER BY k.ord), '{}') FROM pg_index i
         CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
         WHERE i.indrelid = c.oid AND k.ord <= i.indnkeyatts
           AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))) AS key_columns
    FROM unnest($1::text[]) AS t(q) JOIN pg_class c ON c.oid = t.q::regclass JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_class rc ON rc.oid = CASE WHEN c.relispartition THEN pg_partition_root(c.oid) END
    LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace`, [tables.map((t) => qualified(t.schema, t.name))]);
  const out = new Map<string, Wal2jsonTable>();
  for (const x of r.rows) {
    const cols = x.columns as { name: string; type: number; generated: boolean }[];
    const stored = cols.filter((c) => !c.generated);
    const replicaIdentity = RI[x.ri] ?? "default";
    out.set(`${x.schema}.${x.name}`, {
      schema: x.schema, name: x.name,
      applyTo: x.root_name ? { schema: x.root_schema, name: x.root_name } : { schema: x.schema, name: x.name },
      replicaIdentity,
      keyColumns: replicaIdentity === "full" ? stored.map((c) => c.name) : x.key_columns,
      columns: stored.map((c) => ({ name: c.name, typeOid: c.type })),
      generated: new Set(cols.filter((c) => c.generated).map((c) => c.name)),
    });
  }
  return out;
}

/**
 * Tables whose rows could not be read back by a key, while they have float/numeric columns whose
 * NaN/±Infinity an older wal2json (without numeric-data-types-as-string) writes as null: replica
 * identity FULL or NOTHING, or a key column of such a type.
 */
export function unresolvableTables(tables: Iterable<Wal2jsonTable>): string[] {
  const out: string[] = [];
  for (const t of tables) {
    const ambiguous = t.columns.filter((c) => AMBIGUOUS_NULL_TYPES.has(c.typeOid)).map((c) => c.name);
    if (!ambiguous.length) continue;
    const keyed = (t.replicaIdentity === "default" || t.replicaIdentity === "index") && t.keyColumns.length > 0;
    if (!keyed || t.keyColumns.some((k) => ambiguous.includes(k))) out.push(displayName(t.schema, t.name));
  }
  return out;
}

export type Wal2jsonProbe = DecoderProbe;

/**
 * Is wal2json loadable on the source, and does it know numeric-data-types-as-string (2.6+)? A
 * temporary slot is the only reliable test (the plugin is a shared library, not an extension):
 * creating it loads the library; peeking with our options runs its startup, which rejects unknown
 * options. The slot disappears with the session. Creating a slot waits for running transactions,
 * so the wait is bounded by `timeoutMs`.
 */
export async function probeWal2json(src: Client, timeoutMs = 20000): Promise<Wal2jsonProbe> {
  const slot = `pgferry_probe_${process.pid}_${Date.now() % 100000}`;
  await src.query(`SET statement_timeout = ${Math.round(timeoutMs)}`);
  try {
    try {
      await src.query(`SELECT pg_create_logical_replication_slot($1, 'wal2json', true)`, [slot]);
    } catch (e) {
      const err = e as { code?: string; message: string };
      if (err.code === "58P01" || /could not access file|wal2json/i.test(err.message)) return { available: false, numericAsString: false, error: err.message };
      throw e;
    }
    // upto_lsn 0/1: the startup callback (option check) runs, nothing is decoded.
    const peek = (opts: [string, string][]) => src.query(`SELECT count(*) FROM pg_logical_slot_peek_changes(${quoteLiteral(slot)}, '0/1', NULL
      ${opts.map(([k, v]) => `, ${quoteLiteral(k)}, ${quoteLiteral(v)}`).join("")})`);
    await peek(wal2jsonOptions([], false));
    // An error drops a temporary slot, so the option only wal2json 2.6+ knows is tried last.
    let numericAsString = true;
    try {
      await peek(wal2jsonOptions([], true));
    } catch (e) {
      if (!/numeric-data-types-as-string/.test((e as Error).message)) throw e;
      numericAsString = false;
    }
    await src.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, [slot]);
    return { available: true, numericAsString };
  } finally {
    await src.query(`RESET statement_timeout`).catch(() => undefined);
  }
}

type Relation = ChangeRelation;

/** Columns whose null may stand for NaN/±Infinity, per converted change. */
const ambiguousOf = new WeakMap<RowChange, string[]>();

/**
 * Converts wal2json messages for one stream session. `tables` is keyed by "schema.name" of the
 * tables wal2json names (leaves).
 */
export class Wal2jsonConverter {
  private relations = new Map<string, Relation>();
  private announced = new Set<string>();
  private truncateRelations = new Map<string, Relation>();

  constructor(private tables: Map<string, Wal2jsonTable>, private numericAsString: boolean) {}

  private table(m: Wal2jsonMessage): Wal2jsonTable {
    const key = `${m.schema}.${m.table}`;
    const t = this.tables.get(key);
    if (!t) {
      throw new PgferryError("wal2json_unknown_table", `wal2json sent a change for ${qualified(m.schema ?? "?", m.table ?? "?")}, ` +
        `which is not one of the migrated tables (created or renamed on the source after start?); DDL is not replicated: ` +
        `fix: run pgferry cleanup and start again, or undo the change on the source`);
    }
    return t;
  }

  private relation(t: Wal2jsonTable): Relation {
    const key = `${t.schema}.${t.name}`;
    let r = this.relations.get(key);
    if (!r) {
      r = {
        tag: "relation", relationOid: 0, schema: t.applyTo.schema, name: t.applyTo.name, replicaIdentity: t.replicaIdentity,
        keyColumns: t.keyColumns,
        columns: t.columns.map((c) => ({ name: c.name, flags: t.keyColumns.includes(c.name) ? 1 : 0, typeOid: c.typeOid, typeMod: -1 })),
      };
      this.relations.set(key, r);
    }
    return r;
  }

  /** Column values as the text the applier writes; `ambiguous` collects float/numeric nulls. */
  private values(t: Wal2jsonTable, cols: Wal2jsonColumn[], ambiguous?: string[]): Record<string, string | null> {
    const out: Record<string, string | null> = newRowValues() as Record<string, string | null>; // a column may be called __proto__
    for (const c of cols) {
      if (t.generated.has(c.name)) continue;
      const oid = Number(c.typeoid);
      const v = c.value;
      if (v === null) {
        out[c.name] = null;
        if (!this.numericAsString && AMBIGUOUS_NULL_TYPES.has(oid)) ambiguous?.push(c.name);
      } else if (typeof v === "boolean") out[c.name] = v ? "t" : "f";
      else if (oid === BYTEA) out[c.name] = `\\x${v}`;
      else out[c.name] = String(v);
    }
    return out;
  }

  /**
   * One XLogData payload of the slot (a wal2json format-version 2 object) → pgferry changes. Raises only
   * PgferryError: text that is not such an object, or fields of the wrong type, are refused by name.
   */
  decode(bytes: Buffer): Change[] {
    let m: unknown;
    try {
      m = parseWal2json(bytes.toString("utf8"));
    } catch (e) {
      throw wal2jsonDecodeError(`not JSON (${(e as Error).message})`);
    }
    return this.convert(checkWal2json(m));
  }

  /** The changes for one wal2json message (a relation message first, once per table). */
  convert(m: Wal2jsonMessage): Change[] {
    switch (m.action) {
      case "B":
        return [{ tag: "begin", commitLsn: m.lsn ?? null, commitTime: micros(m.timestamp), xid: Number(m.xid ?? 0) }];
      case "C":
        if (!m.nextlsn) throw new PgferryError("wal2json_no_lsn", "wal2json sent a commit without nextlsn (include-lsn is required)");
        return [{ tag: "commit", flags: 0, commitLsn: m.lsn ?? null, commitEndLsn: m.nextlsn, commitTime: micros(m.timestamp) }];
      case "T": {
        // Truncate exactly the table the source truncated (a leaf stays a leaf: truncating the root would empty every partition).
        const t = this.table(m);
        const key = `${t.schema}.${t.name}`;
        const r = this.truncateRelations.get(key) ?? { ...this.relation(t), schema: t.schema, name: t.name };
        this.truncateRelations.set(key, r);
        return [{ tag: "truncate", cascade: false, restartIdentity: false, relations: [r] }];
      }
      case "I": case "U": case "D": {
        const t = this.table(m);
        const relation = this.relation(t);
        const out: Change[] = [];
        const key = `${t.schema}.${t.name}`;
        if (!this.announced.has(key)) { this.announced.add(key); out.push(relation); }
        const ambiguous: string[] = [];
        const identityAmbiguous: string[] = [];
        let change: RowChange;
        if (m.action === "I") {
          change = { tag: "insert", relation, new: this.values(t, m.columns ?? [], ambiguous) };
        } else {
          const ident = this.values(t, m.identity ?? [], identityAmbiguous);
          const full = t.replicaIdentity === "full";
          if (identityAmbiguous.length) {
            throw new PgferryError("wal2json_ambiguous_key", `wal2json wrote null for ${identityAmbiguous.join(", ")} in the key of a row of ` +
              `${qualified(t.schema, t.name)}: NaN, Infinity and NULL cannot be told apart without numeric-data-types-as-string; ` +
              `fix: upgrade wal2json on the source to 2.6+, or use --plugin pgoutput`);
          }
          change = m.action === "U"
            ? { tag: "update", relation, key: full ? null : ident, old: full ? ident : null, new: this.values(t, m.columns ?? [], ambiguous) }
            : { tag: "delete", relation, key: full ? null : ident, old: full ? ident : null };
        }
        if (ambiguous.length) ambiguousOf.set(change, ambiguous);
        out.push(change);
        return out;
      }
      default:
        return []; // "M" (logical decoding messages): nothing to apply
    }
  }

  /**
   * Replace ambiguous nulls (NaN/±Infinity written as null by wal2json < 2.6) with the row's current
   * value on the source, read by its key. If the row is gone or re-keyed, a later change of the
   * stream rewrites it (every UPDATE carries the whole new row), so the target converges on the
   * source; a genuine NULL reads back as NULL.
   */
  async resolve(src: Client, m: Change): Promise<void> {
    if (m.tag !== "insert" && m.tag !== "update") return;
    const cols = ambiguousOf.get(m);
    if (!cols?.length) return;
    const r = m.relation;
    if (!(r.replicaIdentity === "default" || r.replicaIdentity === "index") || !r.keyColumns.length) {
      throw new PgferryError("wal2json_ambiguous_value", `wal2json wrote null for ${cols.join(", ")} of ${qualified(r.schema, r.name)}, ` +
        `which has no key to read the real value back by (NaN, Infinity and NULL look alike without numeric-data-types-as-string); ` +
        `fix: upgrade wal2json on the source to 2.6+, add a primary key, or use --plugin pgoutput`);
    }
    const keys = r.keyColumns.map((k) => m.new[k]);
    const q = await src.query(`SELECT ${cols.map((c) => `${quoteIdent(c)}::text AS ${quoteIdent(c)}`).join(", ")} FROM ${qualified(r.schema, r.name)}
      WHERE ${r.keyColumns.map((k, n) => `${quoteIdent(k)} = $${n + 1}`).join(" AND ")}`, keys);
    const row = q.rows[0];
    if (row) for (const c of cols) m.new[c] = row[c];
  }
}

function micros(ts: string | undefined): bigint {
  if (!ts) return 0n;
  const ms = Date.parse(ts.replace(" ", "T").replace(/([+-]\d\d)$/, "$1:00"));
  return Number.isNaN(ms) ? 0n : BigInt(ms) * 1000n;
}

/** The START_REPLICATION command for wal2json with pgferry's options. */
export function wal2jsonStartReplication(slot: string, lsn: string, tables: { schema: string; name: string }[], numericAsString: boolean): string {
  const opts = wal2jsonOptions(tables, numericAsString).map(([k, v]) => `${quoteIdent(k)} ${quoteLiteral(v)}`);
  return `START_REPLICATION SLOT ${quoteIdent(slot)} LOGICAL ${lsn} (${opts.join(", ")})`;
}

function wal2jsonDecodeError(what: string): PgferryError {
  return new PgferryError("decode_failed", `could not decode a wal2json message: ${what}. Nothing from it was applied or acknowledged. ` +
    `Fix: check that the slot was created with the wal2json plugin (format-version 2); if it persists, run pgferry cleanup and start ` +
    `again, and report the message`);
}

/** The fields pgferry reads, checked for type: anything else in the JSON is refused as a PgferryError, never a TypeError later. */
function checkWal2json(m: unknown): Wal2jsonMessage {
  if (typeof m !== "object" || m === null || Array.isArray(m)) throw wal2jsonDecodeError("not a JSON object");
  const o = m as Record<string, unknown>;
  if (typeof o.action !== "string") throw wal2jsonDecodeError("no action");
  for (const f of ["timestamp", "schema", "table"]) {
    if (o[f] !== undefined && typeof o[f] !== "string") throw wal2jsonDecodeError(`${f} is not a string`);
  }
  for (const f of ["lsn", "nextlsn"]) {
    if (o[f] !== undefined && (typeof o[f] !== "string" || !/^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(o[f] as string))) throw wal2jsonDecodeError(`${f} is not an LSN`);
  }
  if (o.xid !== undefined && typeof o.xid !== "string" && typeof o.xid !== "number") throw wal2jsonDecodeError("xid is not a number");
  if ("IUDT".includes(o.action) && (typeof o.schema !== "string" || typeof o.table !== "string")) {
    throw wal2jsonDecodeError(`a change (${o.action}) without schema and table`);
  }
  for (const f of ["columns", "identity"]) {
    const cols = o[f];
    if (cols === undefined) continue;
    if (!Array.isArray(cols)) throw wal2jsonDecodeError(`${f} is not a list`);

    for (const c of cols) {
      const col = c as Record<string, unknown> | null;
      if (typeof col !== "object" || col === null || typeof col.name !== "string") throw wal2jsonDecodeError(`${f} has an entry without a name`);
      if (!(col.value === null || typeof col.value === "string" || typeof col.value === "boolean")) {
        throw wal2jsonDecodeError(`${f} has a value that is neither text, a number, a boolean nor null`);
      }
      if (col.typeoid !== undefined && typeof col.typeoid !== "string" && typeof col.typeoid !== "number") {
        throw wal2jsonDecodeError(`${f} has a typeoid that is not a number`);
      }
    }
  }
  return o as unknown as Wal2jsonMessage;
}

/** A wal2json stream session: the catalog facts of the migrated tables, and a source session to resolve ambiguous nulls. */
class Wal2jsonSession implements DecoderSession {
  /** bytea_output=hex: wal2json strips the first two characters ("\x") of bytea's text output. */
  readonly connectionOptions = `${SESSION_GUCS} -c bytea_output=hex`;
  constructor(private src: Client, private converter: Wal2jsonConverter, private tables: { schema: string; name: string }[],
    private numericAsString: boolean) {}

  startReplication(slot: string, lsn: string): string {
    return wal2jsonStartReplication(slot, lsn, this.tables, this.numericAsString);
  }

  async decode(bytes: Buffer): Promise<Change[]> {
    const out = this.converter.decode(bytes);
    for (const x of out) await this.converter.resolve(this.src, x);
    return out;
  }

  async close(): Promise<void> {
    await this.src.end().catch(() => undefined);
  }
}

/** The migrated tables wal2json names (leaves of partitioned tables), read on the source. */
async function streamedTables(src: Client, setup: StreamSetup): Promise<{ schema: string; name: string }[]> {
  return copyableTables(await migratedTables(src, setup.selection)).map((t: TableInfo) => ({ schema: t.schema, name: t.name }));
}

export const wal2jsonDecoder: Decoder = {
  plugin: "wal2json",
  // wal2json decodes every table of the database (filtered by add-tables): no publication.
  needsPublication: false,
  // docs/design.md "DDL replication" says how it would carry DDL.
  ddlRefusal: "wal2json streams a fixed add-tables list per session: the DDL log and tables created while streaming would need a new session at each captured statement",
  createSlotCommand: (slot: string) => `CREATE_REPLICATION_SLOT ${quoteIdent(slot)} LOGICAL wal2json EXPORT_SNAPSHOT`,
  probe: (src: Client) => probeWal2json(src),
  checkSource: (x) => checkWal2jsonSource(x),
  /**
   * Opens for the tables of a migration: reads their catalog facts once, on a source session of its own
   * (also used to resolve ambiguous nulls). `numericAsString`: what preflight found the plugin supports.
   */
  async open(source: Endpoint, setup: StreamSetup): Promise<DecoderSession> {
    const src = await connect(source, { application_name: "pgferry wal2json catalog" });
    try {
      const leaves = await streamedTables(src, setup);
      const tables = await readWal2jsonTables(src, leaves);
      return new Wal2jsonSession(src, new Wal2jsonConverter(tables, setup.numericAsString), leaves, setup.numericAsString);
    } catch (e) {
      await src.end().catch(() => undefined);
      throw e;
    }
  },
  async changesAfterFence(src: Client, _tgt: Client, setup: StreamSetup, slot: string, _publication: string, fence: string,
    uptoChanges?: number): Promise<FenceChanges> {
    // The slot's wal2json options as the applier streams with them. Format-version 2: one JSON object per
    // row; B/C carry the transaction, I/U/D/T name the table. A C row's lsn is its commit record's end: after the fence
    // only when greater (Decoder.changesAfterFence).
    const opts = wal2jsonOptions(await streamedTables(src, setup), setup.numericAsString).flat();
    const r = await src.query(`
      WITH c AS (SELECT lsn, xid, data::json AS j FROM pg_logical_slot_peek_changes($1, NULL, $4::int, VARIADIC $2::text[])),
      late AS (SELECT DISTINCT xid FROM c WHERE j->>'action' = 'C' AND lsn > $3::pg_lsn)
      SELECT (j->>'schema') || '.' || (j->>'table') AS table, count(*)::int AS changes
      FROM c WHERE j->>'action' IN ('I', 'U', 'D', 'T') AND xid IN (SELECT xid FROM late) GROUP BY 1 ORDER BY 1`, [slot, opts, fence, uptoChanges ?? null]);
    return r.rows;
  },
};

export type { StreamSetup } from "./decoder";

/**
 * The output plugin, table selection and wal2json capability a migration was started with (stored in
 * its options by start; pgoutput for records made before the option existed).
 */
export async function readStreamSetup(tgt: Client, migration: string): Promise<StreamSetup> {
  const o = (await readMigration(tgt, migration))?.options ?? {};
  return { plugin: o.plugin ?? "pgoutput", selection: o.selection ?? { schemas: [], include: [], exclude: [] },
    numericAsString: o.wal2jsonNumericAsString === true };
}

/**
 * Preflight with --plugin wal2json (Decoder.checkSource): the source loads it, and what this version writes can be read
 * back. Only a slot shows that (it is a shared library, not an extension), so the probe makes a temporary one and drops it.
 */
async function checkWal2jsonSource({ src, sourceVersion, maxSlots, tables, add }: { src: Client; sourceVersion: number; maxSlots: number;
  tables: TableInfo[]; add: AddFinding }): Promise<Wal2jsonProbe | undefined> {
  const major = Math.floor(sourceVersion / 10000);
  const names = (xs: string[], n = 8) => (xs.length > n ? `${xs.slice(0, n).join(", ")} and ${xs.length - n} more` : xs.join(", "));
  let probe: Wal2jsonProbe | undefined;
  try {
    probe = await probeWal2json(src);
  } catch (e) {
    const err = e as { code?: string; message: string };
    add({ code: "wal2json_check", server: "source", message: `could not check the wal2json plugin on the source: ${err.message}`,
      fix: err.code === "57014" ? "creating a logical slot waits for running transactions: end long-running transactions on the source and run again"
        : err.code === "53400" ? `free a replication slot on the source (max_replication_slots = ${maxSlots}) for the check, or raise max_replication_slots`
        : "check the source's log for the reason and run again" });
  }
  if (probe && !probe.available && /may not be used as an output plugin/.test(probe.error ?? "")) {
    // Installed, but the server only lets the output plugins listed in output_plugin_libraries be used.
    const allowed = (await src.query(`SELECT current_setting('output_plugin_libraries', true) AS v`)).rows[0].v as string | null;
    // A list setting: each library quoted on its own ('a, b' would be one name).
    const list = [...(allowed ?? "").split(",").map((x) => x.trim().replace(/^"|"$/g, "")).filter(Boolean), "wal2json"].map(quoteLiteral).join(", ");
    add({ code: "wal2json_not_trusted", server: "source", message: `the source has wal2json but does not allow it as an output plugin ` +
      `(output_plugin_libraries = '${allowed ?? ""}')`,
      fix: `on the source: ALTER SYSTEM SET output_plugin_libraries = ${list}; SELECT pg_reload_conf(); (no restart needed)` });
  } else if (probe && !probe.available) {
    add({ code: "wal2json_missing", server: "source", message: `the source cannot load the wal2json output plugin (${probe.error})`,
      fix: /may not be used as an output plugin/.test(probe.error ?? "")
        ? "the source restricts which libraries may decode a slot: add wal2json to output_plugin_libraries on the source (ALTER SYSTEM SET " +
          "output_plugin_libraries = 'pgoutput, wal2json'; SELECT pg_reload_conf()), or use --plugin pgoutput"
        : wal2jsonInstallFix(major) });
  } else if (probe && !probe.numericAsString && copyableTables(tables).length) {
    const facts = await readWal2jsonTables(src, copyableTables(tables).map((x) => ({ schema: x.schema, name: x.name })));
    const bad = unresolvableTables(facts.values());
    if (bad.length) {
      add({ code: "wal2json_numeric", server: "source", objects: bad,
        message: `this wal2json (before 2.6) writes float/numeric NaN and Infinity as null, like SQL NULL; pgferry reads such values ` +
          `back by the row's key, which ${names(bad)} cannot offer (no primary key or replica identity index, or a float/numeric key column)`,
        fix: "upgrade wal2json on the source to 2.6+ (numeric-data-types-as-string), add a primary key to those tables, " +
          "--exclude them, or use --plugin pgoutput" });
    }
  }
  return probe;
}
