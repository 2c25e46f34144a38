/**
 * The pgoutput decoder: PostgreSQL's built-in output plugin, protocol version 1 ("Logical Replication
 * Message Formats" in the PostgreSQL docs). Our own parser — no library internals: values stay the
 * source's text output (lossless), an unchanged TOAST value stays `undefined` (filled from the old row
 * under REPLICA IDENTITY FULL, where the server sends it), and anything malformed or unknown raises a
 * PgferryError naming the message, never a TypeError or RangeError.
 *
 * Needs a publication (pgoutput reads its membership through the slot's historic snapshot at each
 * change, so the publication must exist before the slot). Messages for types (Y), origins (O) and
 * logical decoding messages (M) carry nothing to apply and decode to nothing.
 */
import { Client } from "pg";
import { Endpoint, quoteIdent, SESSION_GUCS } from "../../core/endpoint";
import { PgferryError } from "../../core/errors";
import type { Change, ChangeRelation, ReplicaIdentity, RowValues } from "./change";
import { newRowValues } from "./change";
import type { Decoder, DecoderProbe, DecoderSession, FenceChanges, StreamSetup } from "./decoder";

/** (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY: pgoutput's timestamps count from 2000-01-01. */
const PG_EPOCH_US = 946684800000000n;

const IDENTITY: Record<number, ReplicaIdentity> = { 0x64: "default", 0x6e: "nothing", 0x66: "full", 0x69: "index" };

/** A malformed or unsupported message: what was wrong, and what to do. */
function decodeError(what: string): PgferryError {
  return new PgferryError("decode_failed", `could not decode a pgoutput message: ${what}. Nothing from it was applied or acknowledged. ` +
    `Fix: check that the slot was created with the pgoutput plugin and that the source runs a supported PostgreSQL (13+); ` +
    `if it persists, run pgferry cleanup and start again, and report the message`);
}

class Reader {
  private p = 0;
  /** `tag` is the message's type letter, quoted only when an error names it (per message, JSON.stringify was a measured cost). */
  constructor(private b: Buffer, private letter: string) {}
  private get tag(): string { return JSON.stringify(this.letter); }
  private need(n: number): void {
    if (n < 0 || this.p + n > this.b.length) throw decodeError(`${this.tag} message ends early (${this.b.length} bytes)`);
  }
  u8(): number { this.need(1); return this.b[this.p++]; }
  u16(): number { this.need(2); const v = this.b.readUInt16BE(this.p); this.p += 2; return v; }
  i32(): number { this.need(4); const v = this.b.readInt32BE(this.p); this.p += 4; return v; }
  u32(): number { this.need(4); const v = this.b.readUInt32BE(this.p); this.p += 4; return v; }
  u64(): bigint { const h = this.u32(); return (BigInt(h) << 32n) | BigInt(this.u32()); }
  /** An LSN as PostgreSQL prints it (no BigInt on the way: two u32 halves, as per transaction it was a measured cost). */
  lsn(): string | null {
    const hi = this.u32(), lo = this.u32();
    return hi === 0 && lo === 0 ? null : `${hi.toString(16).toUpperCase()}/${lo.toString(16).toUpperCase()}`;
  }
  time(): bigint { return this.u64() + PG_EPOCH_US; }
  str(): string {
    const end = this.b.indexOf(0, this.p);
    if (end < 0) throw decodeError(`${this.tag} message has an unterminated string`);
    const s = this.b.toString("utf8", this.p, end);
    this.p = end + 1;
    return s;
  }
  /**
   * n bytes as UTF-8 text, decoded in place (no subarray): invalid bytes become U+FFFD, never an error, and a
   * leading U+FEFF stays (TextDecoder, used before, dropped it: a value beginning with a BOM lost it).
   */
  text(n: number): string { this.need(n); const v = this.b.toString("utf8", this.p, this.p + n); this.p += n; return v; }
  bytes(n: number): Buffer { this.need(n); const v = this.b.subarray(this.p, this.p + n); this.p += n; return v; }
  /** A count of items each at least `min` bytes long: refuse counts the rest of the message cannot hold. */
  count(n: number, min: number): number {
    if (n < 0 || n * min > this.b.length - this.p) throw decodeError(`${this.tag} message announces ${n} items in ${this.b.length - this.p} bytes`);
    return n;
  }
}

/** Decodes one slot's pgoutput stream, in order (relation messages define what later changes mean). */
export class PgoutputParser {
  private relations = new Map<number, ChangeRelation>();

  /** One pgoutput message → pgferry changes (none for types, origins and logical messages). */
  parse(buf: Buffer): Change[] {
    if (!buf.length) throw decodeError("empty message");
    const tag = String.fromCharCode(buf[0]);
    const r = new Reader(buf, tag);
    r.u8();
    switch (tag) {
      case "B":
        return [{ tag: "begin", commitLsn: r.lsn(), commitTime: r.time(), xid: r.u32() }];
      case "C":
        return [{ tag: "commit", flags: r.u8(), commitLsn: r.lsn(), commitEndLsn: r.lsn(), commitTime: r.time() }];
      case "O": // origin of a replicated transaction
        r.lsn(); r.str();
        return [];
      case "Y": // a non-built-in type's name: the applier reads target column types itself
        r.u32(); r.str(); r.str();
        return [];
      case "M": { // logical decoding message (only sent with messages 'true', which pgferry never asks for)
        r.u8(); r.lsn(); r.str(); r.bytes(r.i32());
        return [];
      }
      case "R": {
        const relationOid = r.u32();
        const schema = r.str() || "pg_catalog"; // an empty namespace means pg_catalog (protocol docs)
        const name = r.str();
        const ri = r.u8();
        const replicaIdentity = IDENTITY[ri];
        if (!replicaIdentity) throw decodeError(`relation ${name} has an unknown replica identity ${JSON.stringify(String.fromCharCode(ri))}`);
        const n = r.count(r.u16(), 10);
        const columns = [];
        for (let i = 0; i < n; i++) columns.push({ flags: r.u8(), name: r.str(), typeOid: r.u32(), typeMod: r.i32() });
        const rel: ChangeRelation = { tag: "relation", relationOid, schema, name, replicaIdentity, columns,
          keyColumns: columns.filter((c) => c.flags & 1).map((c) => c.name) };
        this.relations.set(relationOid, rel);
        return [rel];
      }
      case "I": {
        const relation = this.relation(r.u32(), "INSERT");
        this.expect(r, "N", "INSERT");
        return [{ tag: "insert", relation, new: this.tuple(r, relation) }];
      }
      case "U": {
        const relation = this.relation(r.u32(), "UPDATE");
        const sub = String.fromCharCode(r.u8());
        let key: RowValues | null = null;
        let old: RowValues | null = null;
        if (sub === "K") key = this.keyOnly(this.tuple(r, relation), relation);
        else if (sub === "O") old = this.tuple(r, relation);
        else if (sub !== "N") throw decodeError(`UPDATE has an unknown part ${JSON.stringify(sub)}`);
        if (sub !== "N") this.expect(r, "N", "UPDATE");
        return [{ tag: "update", relation, key, old, new: this.tuple(r, relation, old) }];
      }
      case "D": {
        const relation = this.relation(r.u32(), "DELETE");
        const sub = String.fromCharCode(r.u8());
        if (sub === "K") return [{ tag: "delete", relation, key: this.keyOnly(this.tuple(r, relation), relation), old: null }];
        if (sub === "O") return [{ tag: "delete", relation, key: null, old: this.tuple(r, relation) }];
        throw decodeError(`DELETE has an unknown part ${JSON.stringify(sub)}`);
      }
      case "T": {
        const n = r.count(r.i32(), 4);
        const flags = r.u8();
        const relations: ChangeRelation[] = [];
        for (let i = 0; i < n; i++) relations.push(this.relation(r.u32(), "TRUNCATE"));
        return [{ tag: "truncate", cascade: (flags & 1) !== 0, restartIdentity: (flags & 2) !== 0, relations }];
      }
      default:
        // Stream (S E c A) and two-phase (b P K r p) messages need protocol options pgferry never requests.
        throw decodeError(`unknown message type ${JSON.stringify(tag)}`);
    }
  }

  private relation(oid: number, what: string): ChangeRelation {
    const rel = this.relations.get(oid);
    if (!rel) throw decodeError(`${what} of relation ${oid}, which no relation message described before`);
    return rel;
  }

  private expect(r: Reader, want: string, what: string): void {
    const got = String.fromCharCode(r.u8());
    if (got !== want) throw decodeError(`${what} has ${JSON.stringify(got)} where ${JSON.stringify(want)} belongs`);
  }

  /**
   * TupleData: text values kept as text; 'u' (unchanged TOAST) stays undefined unless the old row has
   * it (REPLICA IDENTITY FULL); binary values are refused (pgferry never requests them).
   */
  private tuple(r: Reader, rel: ChangeRelation, old?: RowValues | null): RowValues {
    const n = r.u16();
    if (n > rel.columns.length) throw decodeError(`a row of ${rel.name} has ${n} columns, its relation message ${rel.columns.length}`);
    const row: RowValues = newRowValues(); // a column may be called __proto__
    for (let i = 0; i < n; i++) {
      const name = rel.columns[i].name;
      const kind = r.u8(); // compared as a byte: a string per value was a measured cost
      if (kind === 0x74 /* t */) row[name] = r.text(r.i32());
      else if (kind === 0x6e /* n */) row[name] = null;
      else if (kind === 0x75 /* u */) row[name] = old?.[name];
      else throw decodeError(`a value of ${rel.name}.${name} has kind ${JSON.stringify(String.fromCharCode(kind))} (only text, null and unchanged are requested)`);
    }
    return row;
  }

  /** A 'K' tuple carries the key columns; the others are null placeholders. */
  private keyOnly(row: RowValues, rel: ChangeRelation): RowValues {
    const key: RowValues = newRowValues();
    for (const k of rel.keyColumns) key[k] = row[k] === null ? undefined : row[k];
    return key;
  }
}

class PgoutputSession implements DecoderSession {
  private parser = new PgoutputParser();
  readonly connectionOptions = SESSION_GUCS;
  constructor(private publication: string) {}
  startReplication(slot: string, lsn: string): string {
    // Only proto_version and publication_names: PostgreSQL 13 rejects the `messages` option.
    return `START_REPLICATION SLOT ${quoteIdent(slot)} LOGICAL ${lsn} (proto_version '1', publication_names ` +
      `'${quoteIdent(this.publication).replace(/'/g, "''")}')`;
  }
  async decode(bytes: Buffer): Promise<Change[]> { return this.parser.parse(bytes); }
  decodeSync(bytes: Buffer): Change[] { return this.parser.parse(bytes); }
  async close(): Promise<void> { /* nothing held */ }
}

export const pgoutputDecoder: Decoder = {
  plugin: "pgoutput",
  needsPublication: true,
  createSlotCommand: (slot: string) => `CREATE_REPLICATION_SLOT ${quoteIdent(slot)} LOGICAL pgoutput EXPORT_SNAPSHOT`,
  async probe(): Promise<DecoderProbe> { return { available: true, numericAsString: false }; }, // built into PostgreSQL 10+
  async open(_source: Endpoint, _setup: StreamSetup, publication: string): Promise<DecoderSession> { return new PgoutputSession(publication); },
  async changesAfterFence(src: Client, _tgt: Client, _setup: StreamSetup, slot: string, publication: string, fence: string,
    uptoChanges?: number): Promise<FenceChanges> {
    // pgoutput messages: B(egin) C(ommit) I U D (relation oid in bytes 2-5) T(runcate: first oid in bytes 7-10).
    // A C row's lsn is its commit record's end: after the fence only when greater (Decoder.changesAfterFence).
    const r = await src.query(`
      WITH c AS (SELECT lsn, xid, data FROM pg_logical_slot_peek_binary_changes($1, NULL, $4::int, 'proto_version', '1', 'publication_names', $2)),
      late AS (SELECT DISTINCT xid FROM c WHERE get_byte(data, 0) = 67 AND lsn > $3::pg_lsn),
      ch AS (SELECT CASE WHEN get_byte(data, 0) = 84 THEN substring(data FROM 7 FOR 4) ELSE substring(data FROM 2 FOR 4) END AS rel
        FROM c WHERE get_byte(data, 0) IN (73, 85, 68, 84) AND xid IN (SELECT xid FROM late))
      SELECT coalesce(n.nspname || '.' || k.relname, 'relation ' || x.oid) AS table, count(*)::int AS changes
      FROM (SELECT ('x' || lpad(encode(rel, 'hex'), 16, '0'))::bit(64)::bigint::oid AS oid FROM ch) x
      LEFT JOIN pg_class k ON k.oid = x.oid LEFT JOIN pg_namespace n ON n.oid = k.relnamespace
      GROUP BY 1 ORDER BY 1`, [slot, publication, fence, uptoChanges ?? null]);
    return r.rows;
  },
};
