/**
 * The cutover gate's per-key check: a table written until the freeze is compared at the fence by reading only the
 * rows whose keys changed since the pre-check, not every row (a 10M-row table under load: seconds of hashing on both
 * servers inside the freeze become a few thousand index lookups).
 *
 * The gate's content hash is additive: per row md5 of its text, split in two 64-bit halves, each summed as numeric,
 * with the row count (verify.ts probeSql, verify.sh's "sum" mode). So for a table T, a set K of keys and two states
 * X, Y of T that differ only in rows whose key is in K:  sums(Y) = sums(X) − sums(X, K) + sums(Y, K), where sums(X, K)
 * covers the rows of X whose key is in K (a key names at most one row: it is T's primary key or replica identity index).
 *  - Source: X = S, the snapshot a "witness" slot exported when it was created (TEMPORARY, on its own replication
 *    connection, pgoutput with the migration's publication); Y = the source at the fence. K = every key of every
 *    INSERT, UPDATE (old key too when it changed) and DELETE the witness decodes after S: every committed change of
 *    T after S, since a slot decodes exactly what commits after its exported snapshot.
 *  - Target: X = P, a snapshot taken once the target has applied past S; Y = the target at the fence. Every change
 *    the target applied after P is a source change committed after S (both apply paths apply source transactions in
 *    commit order), applied by its key: its key is in K.
 * The source's S and the target's P are read in REPEATABLE READ transactions held open until the fence, which read
 * sums(S, K) and sums(P, K) — for the keys known before the freeze, before it. At the fence, sums(·, K) of both
 * servers are read in fresh snapshots, and the two results are compared exactly like two whole-table hashes (the
 * same md5 of "count:sum1:sum2"), so the gate's message and strength are those of a hash of every row: a change the
 * target lost or applied wrongly leaves a key of K different on the two sides.
 *
 * Not by key, the table is hashed whole at the fence as before (and the cutover names it with the reason): no primary
 * key or replica identity index, a key column of a type whose text form is not checked here, a partition (its changes
 * are published through its root), unlogged; a TRUNCATE, a rewrite (relfilenode) or a column change in the window; the
 * publication altered in the window (a table briefly out of it, or its actions changed, hides changes from every slot,
 * this one included); a key value the slot did not send; any read that fails; and all of them when the witness slot
 * cannot be created (e.g. max_replication_slots reached: named).
 */
import { createHash } from "crypto";
import { Client } from "pg";
import { lsnToBigInt } from "../core/lsn";
import { connectReplication, endClient, Endpoint, quoteIdent, quoteLiteral, qualified, redact } from "../core/endpoint";
import { PgoutputParser } from "../cdc/decoders/pgoutput";
import { openVerifySessions, VerifySessionPair, KnownContents, closeVerifySessions, rowHashSql, hashHalfSumSql } from "./verify";

interface Sums { n: bigint; a: bigint; b: bigint }
const ZERO: Sums = { n: 0n, a: 0n, b: 0n };
const add = (x: Sums, y: Sums, sign = 1n): Sums => ({ n: x.n + sign * y.n, a: x.a + sign * y.a, b: x.b + sign * y.b });
/** The hash verify.ts's probeSql computes on the server, from the same three numbers. */
const hashOf = (s: Sums) => createHash("md5").update(`${s.n}:${s.a}:${s.b}`).digest("hex");

/** Key column types whose text output, cast back, names the same value on both servers (others: hashed whole). */
const KEY_TYPES = new Set(["smallint", "integer", "bigint", "text", "character varying", "uuid", "numeric", "oid"]);

/** Keys per lookup statement. */
const KEYS_PER_STATEMENT = 20000;

interface Keyed {
  raw: string; // "schema.name"
  schema: string;
  name: string;
  oid: number;
  cols: string[]; // sorted by name COLLATE "C" (as verify.ts)
  keyCols: string[];
  keyTypes: string[];
  srcShape: string;
  tgtShape?: string;
  base?: { src: Sums; tgt: Sums };
  /** K: every key seen changed since S, by its JSON form, with the last transaction that changed it (commit LSN, xid). */
  keys: Map<string, { k: string[]; lsn: bigint; xid: number }>;
  /** Each key's row hash (null: no row) in a snapshot taken just before the freeze (preRead), with that snapshot, per side. */
  t1?: { src?: Map<string, Seen>; tgt?: Map<string, Seen> };
  /** Keys whose S and P rows are already summed (oldSrc, oldTgt). */
  read: Set<string>;
  oldSrc: Sums;
  oldTgt: Sums;
  fallback?: string;
}

export interface ByKeyOutcome {
  /** Tables whose contents the fence compared by key, with the keys read (0: unchanged since the pre-check). */
  tables: { table: string; keys: number }[];
  /** Tables that needed a hash but were hashed whole at the fence, and why. */
  fallback: { table: string; reason: string }[];
  /** How long the fence's part took (the rest of the gate: counts, whole hashes, structure). */
  seconds?: number;
}

export interface ByKeyResult extends ByKeyOutcome { known: Map<string, KnownContents> }

const SHAPE_SQL = `SELECT n.nspname || '.' || c.relname AS t, c.relfilenode::text || '/' ||
    (SELECT string_agg(a.attname || ':' || a.atttypid || ':' || a.atttypmod, ',' ORDER BY a.attnum) FROM pg_attribute a
      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS s
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname || '.' || c.relname = ANY($1::text[])`;

/** The publication as it filters changes: its actions, and its member rows (a table dropped and added again gets a new row). */
const PUBLICATION_SQL = `SELECT p.pubinsert AND p.pubupdate AND p.pubdelete AS all_actions, p.xmin::text || ';' ||
    coalesce((SELECT string_agg(r.oid::text || '/' || r.xmin::text, ',' ORDER BY r.oid) FROM pg_publication_rel r WHERE r.prpubid = p.oid), '') AS f
  FROM pg_publication p WHERE p.pubname = $1`;

export async function shapes(c: Client, names: string[]): Promise<Map<string, string>> {
  return new Map((await c.query(SHAPE_SQL, [names])).rows.map((x) => [x.t as string, x.s as string]));
}

/** A text[] literal of these values (every element quoted). */
function arrayLiteral(values: string[]): string {
  return quoteLiteral(`{${values.map((v) => `"${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`).join(",")}}`);
}

/** The rows of `_v_` whose key is one of these (text values, cast to the key's types). */
function keyCondition(t: Keyed, keys: string[][]): string {
  if (t.keyCols.length === 1) return `_v_.${quoteIdent(t.keyCols[0])} = ANY (${arrayLiteral(keys.map((k) => k[0]))}::text[]::${t.keyTypes[0]}[])`;
  const cols = t.keyCols.map((_, i) => `k${i}`);
  return `(${t.keyCols.map((c) => "_v_." + quoteIdent(c)).join(", ")}) IN (SELECT ${cols.map((c, i) => `u.${c}::${t.keyTypes[i]}`).join(", ")}
    FROM unnest(${t.keyCols.map((_, i) => `${arrayLiteral(keys.map((k) => k[i]))}::text[]`).join(", ")}) AS u(${cols.join(", ")}))`;
}

function sumsSql(t: Keyed, keys?: string[][]): string {
  const where = keys ? ` WHERE ${keyCondition(t, keys)}` : "";
  return `SELECT count(*)::text AS n, ${hashHalfSumSql(1)} AS a, ${hashHalfSumSql(2)} AS b
    FROM (SELECT ${rowHashSql(t.cols)} AS h FROM ONLY ${qualified(t.schema, t.name)} _v_${where}) s`;
}

/** Sums over the rows with these keys, on a session already in the transaction wanted (index lookups: no sequential scan). */
async function sumsByKey(c: Client, t: Keyed, keys: string[][]): Promise<Sums> {
  let out = ZERO;
  for (let i = 0; i < keys.length; i += KEYS_PER_STATEMENT) {
    const r = (await c.query(sumsSql(t, keys.slice(i, i + KEYS_PER_STATEMENT)))).rows[0];
    out = add(out, { n: BigInt(r.n), a: BigInt(r.a), b: BigInt(r.b) });
  }
  return out;
}

/**
 * Each key's row hash, by key id (JSON of the key's text values as the slot sent them), in the session's transaction;
 * undefined when a row's key does not read back as the text the slot sent (then the caller reads it again at the fence).
 */
async function hashesByKey(c: Client, t: Keyed, keys: string[][]): Promise<Map<string, string> | undefined> {
  const out = new Map<string, string>();
  const wanted = new Set(keys.map((k) => JSON.stringify(k)));
  for (let i = 0; i < keys.length; i += KEYS_PER_STATEMENT) {
    const where = keyCondition(t, keys.slice(i, i + KEYS_PER_STATEMENT));
    const r = await c.query(`SELECT json_build_array(${t.keyCols.map((k) => `_v_.${quoteIdent(k)}::text`).join(", ")})::text AS id, ${rowHashSql(t.cols)} AS h
      FROM ONLY ${qualified(t.schema, t.name)} _v_ WHERE ${where}`);
    for (const x of r.rows) {
      const id = JSON.stringify(JSON.parse(x.id));
      if (!wanted.has(id)) return undefined;
      out.set(id, x.h);
    }
  }
  return out;
}

const LOOKUP_SETTINGS = "SET LOCAL enable_seqscan = off; SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off";

/** The T1 snapshots' positions: source, the WAL insert position read before it and its in-progress xids (low 32 bits); target, what it had applied. */
/**
 * The fresh snapshots just before the freeze. On the source, a transaction T1 does not see: its xid in xip, or at or
 * above xmax — a commit whose record is written (its LSN below srcLsn) but whose backend has not yet left the
 * procarray (flushing WAL, waiting for a synchronous standby) when it holds the newest xid is in neither xip nor
 * visible (GetSnapshotData's xmax = latestCompletedXid + 1). Xids are the 32-bit ones pgoutput sends.
 */
interface T1 { srcLsn: bigint; xip: Set<number>; xmax: number; tgtApplied?: bigint }

/** A key's row hash as read in a snapshot T1 (preRead), with T1. */
interface Seen { h: string | null; at: T1 }

/** TransactionIdPrecedes for normal 32-bit xids: a comes before b in the circular xid space. */
const xidPrecedes = (a: number, b: number) => ((a - b) | 0) < 0;

/** A row hash's two halves as PostgreSQL's ('x' || substr(h, …))::bit(64)::bigint reads them. */
function sumsOfHashes(hashes: Iterable<string | null>): Sums {
  let n = 0n, a = 0n, b = 0n;
  for (const h of hashes) {
    if (h === null) continue;
    n++;
    a += BigInt.asIntN(64, BigInt("0x" + h.slice(0, 16)));
    b += BigInt.asIntN(64, BigInt("0x" + h.slice(16, 32)));
  }
  return { n, a, b };
}

export interface KeyCheckContext {
  src: Client;
  source: Endpoint;
  target: Endpoint;
  slot: string;
  publication: string;
  /** Wait until the target has applied everything up to this LSN (the cutover's drain). */
  drainTo: (lsn: string) => Promise<void>;
  say: (m: string) => void;
  /**
   * What the target had applied (an LSN: every source transaction committed before it is visible there): `before` is read
   * before the target's T1 snapshot is taken, `inside` in it (stream mode: the applier's position, written with its changes).
   */
  targetApplied: { before?: () => Promise<bigint>; inside?: (c: Client) => Promise<bigint> };
}

/**
 * One cutover's per-key check: open (witness slot, S and P held) → baseline → changes while streaming → finish at
 * the fence → close. Every failure short of the witness's own connection turns into a fallback, never a wrong verdict.
 */
export class KeyCheck {
  private witness?: Client;
  private held?: VerifySessionPair;
  private parser = new PgoutputParser();
  private tables = new Map<number, Keyed>();
  private fallback: { table: string; reason: string }[] = [];
  private publicationAtStart?: string;
  private witnessSlot: string;
  private txn = { lsn: -1n, xid: 0 };
  private slotMade = false;
  /** Keys read again on the source at the fence (the rest stood from T1). */
  reread = 0;

  private constructor(private c: KeyCheckContext) {
    this.witnessSlot = `${c.slot.slice(0, 48)}_w${process.pid}`.slice(0, 63);
  }

  /**
   * For the tables (raw "schema.name") the gate will hash: those that can be checked by key, the witness created and both
   * snapshots held (none: no witness, every candidate in the fallback with its reason); undefined when there is no candidate.
   */
  static async open(c: KeyCheckContext, candidates: string[]): Promise<KeyCheck | undefined> {
    if (!candidates.length) return undefined;
    const k = new KeyCheck(c);
    try {
      if ((await k.choose(candidates)) && !(await k.hold())) await k.close();
      return k;
    } catch (e) {
      await k.close();
      throw e;
    }
  }

  /** pgferry's own source session holding S (the freeze must not end it). */
  get heldSourcePid(): number | undefined { return this.held?.sourcePid; }

  /** Keyed tables among the candidates; the others go to fallback with their reason. */
  private async choose(candidates: string[]): Promise<boolean> {
    const r = await this.c.src.query(`
      SELECT c.oid::int AS oid, n.nspname AS schema, c.relname AS name, n.nspname || '.' || c.relname AS raw, c.relkind::text AS kind,
             c.relispartition AS part, c.relpersistence::text AS persistence,
             (SELECT array_agg(a.attname::text ORDER BY a.attname COLLATE "C") FROM pg_attribute a
               WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS cols,
             (SELECT array_agg(a.attname::text ORDER BY k.o) FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(att, o)
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.att
               WHERE i.indrelid = c.oid AND CASE WHEN c.relreplident = 'i' THEN i.indisreplident ELSE i.indisprimary END) AS keys,
             (SELECT array_agg(format_type(a.atttypid, NULL) ORDER BY k.o) FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(att, o)
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.att
               WHERE i.indrelid = c.oid AND CASE WHEN c.relreplident = 'i' THEN i.indisreplident ELSE i.indisprimary END) AS types,
             c.relreplident::text AS ident
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname || '.' || c.relname = ANY($1::text[])`, [candidates]);
    const pub = (await this.c.src.query(PUBLICATION_SQL, [this.c.publication])).rows[0];
    const srcShapes = await shapes(this.c.src, candidates);
    for (const x of r.rows) {
      const why = !pub ? "the migration has no publication (its output plugin streams without one)" : x.kind !== "r" ? "not a plain table" : x.part ? "a partition (its changes are published through its root)"
        : x.persistence !== "p" ? "unlogged" : x.ident === "n" ? "replica identity nothing"
          : !x.keys?.length ? "no primary key or replica identity index"
            : (x.types as string[]).find((t) => !KEY_TYPES.has(t)) ? `key column of type ${(x.types as string[]).find((t) => !KEY_TYPES.has(t))}`
              : !pub?.all_actions ? "the publication does not publish every insert, update and delete" : undefined;
      if (why) { this.fallback.push({ table: x.raw, reason: why }); continue; }
      this.tables.set(x.oid, { raw: x.raw, schema: x.schema, name: x.name, oid: x.oid, cols: x.cols, keyCols: x.keys, keyTypes: x.types,
        srcShape: srcShapes.get(x.raw) ?? "", keys: new Map(), read: new Set(), oldSrc: ZERO, oldTgt: ZERO });
    }
    this.publicationAtStart = pub?.f;
    return this.tables.size > 0;
  }

  /** The witness slot and the source snapshot S it exports, held in a transaction; then P on the target once it applied past S. */
  private async hold(): Promise<boolean> {
    [this.held] = await openVerifySessions(this.c.source, this.c.target, 1);
    try {
      this.witness = await connectReplication(this.c.source);
      this.witness.on("error", () => undefined);
      const r = await this.witness.query(`CREATE_REPLICATION_SLOT ${quoteIdent(this.witnessSlot)} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT`);
      this.slotMade = true;
      const { snapshot_name: snapshot, consistent_point: at } = r.rows[0];
      await this.held.source.query(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT ${quoteLiteral(snapshot)}`);
      await this.c.drainTo(at);
      await this.held.target.query(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SELECT 1`);
      const tgtShapes = await shapes(this.held.target, [...this.tables.values()].map((t) => t.raw));
      for (const t of this.tables.values()) t.tgtShape = tgtShapes.get(t.raw);
      return true;
    } catch (e) {
      const why = redact((e as Error).message, this.c.source);
      const reason = /all replication slots are in use|max_replication_slots/.test(why)
        ? `no free replication slot on the source for the gate's witness slot (${why}; raise max_replication_slots by one)`
        : `the gate's witness slot could not be used: ${why}`;
      for (const t of this.tables.values()) this.fallback.push({ table: t.raw, reason });
      this.tables.clear();
      return false;
    }
  }

  /** Tables checked by key (raw names): the pre-check leaves them to baseline(). */
  get keyed(): string[] { return [...this.tables.values()].map((t) => t.raw); }

  /** Whole sums of every keyed table in S and P (while streaming: the pre-check's part for these tables). */
  async baseline(): Promise<void> {
    if (!this.tables.size) return;
    for (const t of this.tables.values()) {
      try {
        const [s, g] = await Promise.all([this.held!.source.query(sumsSql(t)), this.held!.target.query(sumsSql(t))]);
        const sums = (r: any): Sums => ({ n: BigInt(r.rows[0].n), a: BigInt(r.rows[0].a), b: BigInt(r.rows[0].b) });
        t.base = { src: sums(s), tgt: sums(g) };
      } catch (e) {
        this.drop(t, `cannot read it: ${(e as Error).message}`);
        await this.rollback();
        return;
      }
    }
    // The lookups below must use the keys' index, whatever the plan's estimate for thousands of keys.
    await Promise.all([this.held!.source.query(LOOKUP_SETTINGS), this.held!.target.query(LOOKUP_SETTINGS)]);
  }

  private drop(t: Keyed, reason: string): void {
    this.fallback.push({ table: t.raw, reason });
    this.tables.delete(t.oid);
  }

  /** A held transaction failed: every table left falls back (a failed transaction reads nothing more). */
  private async rollback(): Promise<void> {
    for (const t of [...this.tables.values()]) this.drop(t, "a read of the held snapshot failed");
  }

  /**
   * The held snapshots moved forward (S', P' on a new pair of sessions), so vacuum and HOT pruning on both servers are held
   * back from now on, not from the witness's creation (a held P made the subscription's apply worker walk ever longer HOT
   * chains of pgbench_branches and fall seconds behind before the freeze). Nothing in the result changes: the fence uses
   * sums(S) − Σ sums(S_k, k) over K, with each key's old row read in the snapshot held when it joined K; for a key that joins
   * K after this, its row in S' equals its row in S exactly when no change between S and S' touched it — so every change
   * visible in S' (P') must be in K before the swap:
   *  - source: a transaction visible in S' wrote its commit record before S' was taken, so below the WAL insert position I
   *    read after it; once the WAL is flushed to I, a decode of the witness (it reads up to the flush position) has it;
   *  - target: a transaction applied there came through a walsender, which sends only WAL flushed on the source; a decode
   *    that starts after P' was taken reads up to a flush position past it.
   * Then every key of K is read in S and P (readOld), and S', P' are kept instead. Best effort: on any failure the old pair
   * stays held (its result is exact either way). Returns the new source session's pid (the freeze must not end it).
   */
  async rebase(): Promise<number | undefined> {
    if (!this.tables.size || !this.held) return undefined;
    let next: VerifySessionPair | undefined;
    try {
      [next] = await openVerifySessions(this.c.source, this.c.target, 1);
      await Promise.all([next.source.query(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; ${LOOKUP_SETTINGS}`),
        next.target.query(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; ${LOOKUP_SETTINGS}`)]);
      const taken = await Promise.all([next.source.query(`SELECT pg_current_wal_insert_lsn()::text AS l`), next.target.query(`SELECT 1`)]);
      const insertAt = lsnToBigInt(taken[0].rows[0].l);
      const deadline = Date.now() + 5000;
      while (lsnToBigInt((await this.c.src.query(`SELECT pg_current_wal_flush_lsn()::text AS l`)).rows[0].l) < insertAt) {
        if (Date.now() > deadline) throw new Error("the source's WAL was not flushed to the new snapshot's position");
        await new Promise((r) => setTimeout(r, 10));
      }
      await this.collect();
      await this.readOld();
      if (!this.tables.size) throw new Error("no table left to check by key");
      const old = this.held;
      this.held = next;
      next = undefined;
      await closeVerifySessions([old]);
      return this.held.sourcePid;
    } catch {
      return undefined;
    } finally {
      if (next) await closeVerifySessions([next]);
    }
  }

  /** Changes the witness decoded since the last call: their keys join K; a TRUNCATE sends its table to the fallback. */
  async collect(): Promise<void> {
    if (!this.tables.size) return;
    let r;
    try {
      // A replication connection takes the simple query protocol only: no parameters.
      r = await this.witness!.query(`SELECT data FROM pg_logical_slot_get_binary_changes(${quoteLiteral(this.witnessSlot)}, NULL, NULL, ` +
        `'proto_version', '1', 'publication_names', ${quoteLiteral(quoteIdent(this.c.publication))})`);
    } catch (e) {
      for (const t of [...this.tables.values()]) this.drop(t, `the witness slot's changes could not be read: ${redact((e as Error).message, this.c.source)}`);
      return;
    }
    for (const row of r.rows) {
      for (const ch of this.parser.parse(row.data as Buffer)) {
        if (ch.tag === "begin") { this.txn = { lsn: ch.commitLsn ? lsnToBigInt(ch.commitLsn) : -1n, xid: ch.xid }; continue; }
        if (ch.tag === "truncate") {
          for (const rel of ch.relations) { const t = this.tables.get(rel.relationOid); if (t) this.drop(t, "truncated during the cutover's warm-up"); }
          continue;
        }
        if (ch.tag !== "insert" && ch.tag !== "update" && ch.tag !== "delete") continue;
        const t = this.tables.get(ch.relation.relationOid);
        if (!t) continue;
        const rows = ch.tag === "insert" ? [ch.new] : ch.tag === "update" ? [ch.new, ch.key, ch.old] : [ch.key, ch.old];
        for (const v of rows) {
          if (!v) continue;
          const key = t.keyCols.map((k) => v[k]);
          if (key.some((x) => x === undefined || x === null)) { this.drop(t, "a change whose key the slot did not send"); break; }
          // The commit LSN unknown (-1): treated as after every T1 (read again at the fence).
          t.keys.set(JSON.stringify(key), { k: key as string[], lsn: this.txn.lsn < 0n ? 1n << 62n : this.txn.lsn, xid: this.txn.xid });
        }
      }
    }
  }

  /** sums(S, k) and sums(P, k) for the keys of K not read yet, on the held transactions. */
  async readOld(): Promise<void> {
    if (!this.tables.size) return;
    for (const t of [...this.tables.values()]) {
      const fresh = [...t.keys].filter(([id]) => !t.read.has(id));
      if (!fresh.length) continue;
      try {
        const keys = fresh.map(([, x]) => x.k);
        const [s, g] = await Promise.all([sumsByKey(this.held!.source, t, keys), sumsByKey(this.held!.target, t, keys)]);
        t.oldSrc = add(t.oldSrc, s);
        t.oldTgt = add(t.oldTgt, g);
        for (const [id] of fresh) t.read.add(id);
      } catch (e) {
        this.drop(t, `cannot read it: ${(e as Error).message}`);
        await this.rollback();
        return;
      }
    }
  }

  /**
   * Just before the freeze: every key's row hash in a fresh snapshot T1 on each side, so the fence reads again only the
   * keys changed after T1 — on the source, those whose last change's commit record lies at or after the WAL position
   * read before T1, or whose transaction T1 does not see (in progress, or committed but not yet visible: T1); on the target, those whose last change the target had not
   * applied when T1 was taken. Best effort: a side that fails here has all its keys read at the fence.
   * `again`: only the keys the fence would read again (changed after the snapshot their hash was read in, or not read yet)
   * are read, in a new snapshot that each stands for from then on — called after the catch-up before the freeze, so the
   * fence reads only what changed in the last moments instead of since the first pass.
   */
  async preRead(pair: VerifySessionPair, again = false): Promise<number> {
    if (!this.tables.size) return 0;
    let looked = 0;
    const t1: T1 = { srcLsn: 0n, xip: new Set(), xmax: 0 };
    const read = async (c: Client, side: "src" | "tgt") => {
      if (side === "src") t1.srcLsn = lsnToBigInt((await c.query(`SELECT pg_current_wal_insert_lsn()::text AS l`)).rows[0].l);
      else if (this.c.targetApplied.before) t1.tgtApplied = await this.c.targetApplied.before();
      await c.query(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; ${LOOKUP_SETTINGS}`);
      try {
        if (side === "src") {
          const snap = String((await c.query(`SELECT pg_current_snapshot()::text AS s`)).rows[0].s).split(":");
          t1.xmax = Number(BigInt(snap[1]) & 0xffffffffn);
          for (const x of snap[2] ? snap[2].split(",") : []) t1.xip.add(Number(BigInt(x) & 0xffffffffn));
        } else if (this.c.targetApplied.inside) t1.tgtApplied = await this.c.targetApplied.inside(c);
        if (side === "tgt" && t1.tgtApplied === undefined) return;
        for (const t of this.tables.values()) {
          const ids = [...t.keys.keys()].filter((id) => !again || this.changedSince(t, side, id, t.keys.get(id)!));
          if (!ids.length) continue;
          if (side === "src") looked += ids.length;
          const got = await hashesByKey(c, t, ids.map((id) => t.keys.get(id)!.k));
          if (!got) continue;
          t.t1 ??= {};
          // Each key's hash with the snapshot it was read in (a pass that fails later leaves these standing: each is exact).
          const seen = again ? t.t1[side] ?? new Map<string, Seen>() : new Map<string, Seen>();
          for (const id of ids) seen.set(id, { h: got.get(id) ?? null, at: t1 });
          t.t1[side] = seen;
        }
      } finally {
        await c.query("COMMIT").catch(() => undefined);
      }
    };
    const results = await Promise.allSettled([read(pair.source, "src"), read(pair.target, "tgt")]);
    for (const [i, side] of (["src", "tgt"] as const).entries()) {
      if (results[i].status === "rejected" && !again) for (const t of this.tables.values()) if (t.t1) t.t1[side] = undefined;
    }
    return looked;
  }

  /**
   * Whether a key's row may differ from its hash read before the freeze: not read, or its last change not visible in the
   * snapshot it was read in — on the source, a commit record at or after the WAL position read before that snapshot, or a
   * transaction the snapshot does not see (in progress, or committed but not yet visible: xid at or above its xmax); on
   * the target, a change it had not applied when the snapshot was taken.
   */
  private changedSince(t: Keyed, side: "src" | "tgt", id: string, x: { lsn: bigint; xid: number }): boolean {
    const seen = t.t1?.[side]?.get(id);
    if (!seen) return true;
    const at = seen.at;
    return side === "src" ? x.lsn >= at.srcLsn || at.xip.has(x.xid) || !xidPrecedes(x.xid, at.xmax)
      : at.tgtApplied === undefined || x.lsn >= at.tgtApplied;
  }

  /**
   * At the fence (writes stopped, the target drained and paused): the remaining changes, the windows' guards (publication,
   * shapes), sums(·, K) in fresh snapshots on `now` (a pair of gate sessions, idle), and each table's contents as a
   * whole-table hash would have found them.
   */
  async finish(now: VerifySessionPair): Promise<ByKeyResult> {
    await this.prefetched;
    this.prefetched = undefined;
    const known = new Map<string, KnownContents>();
    const tables: ByKeyOutcome["tables"] = [];
    if (!this.tables.size) return { known, tables, fallback: this.fallback };
    const t0 = Date.now();
    let t1Ms = t0, t2Ms = t0;
    try {
      await this.collect();
      t1Ms = Date.now();
      if (this.tables.size) {
        const pub = (await this.c.src.query(PUBLICATION_SQL, [this.c.publication])).rows[0];
        if (pub?.f !== this.publicationAtStart) {
          for (const t of [...this.tables.values()]) this.drop(t, "the publication was altered during the cutover's warm-up");
        }
      }
      const names = [...this.tables.values()].map((t) => t.raw);
      if (names.length) {
        const [s, g] = await Promise.all([shapes(now.source, names), shapes(now.target, names)]);
        for (const t of [...this.tables.values()]) {
          if (s.get(t.raw) !== t.srcShape || g.get(t.raw) !== t.tgtShape) this.drop(t, "rewritten or its columns changed during the cutover's warm-up");
        }
      }
    } catch (e) {
      for (const t of [...this.tables.values()]) this.drop(t, `the witness slot's changes could not be read: ${redact((e as Error).message, this.c.source)}`);
    }
    // Keys whose row may differ from its hash read before the freeze: read now; the others' hashes stand for the fence.
    this.reread = 0;
    const fresh = async (c: Client, side: "src" | "tgt") => {
      const out = new Map<number, Sums>();
      await c.query(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; ${LOOKUP_SETTINGS}`);
      try {
        for (const t of this.tables.values()) {
          if (!t.keys.size) continue;
          const now: string[][] = [], stable: (string | null)[] = [];
          for (const [id, x] of t.keys) {
            if (this.changedSince(t, side, id, x)) now.push(x.k);
            else stable.push(t.t1![side]!.get(id)!.h);
          }
          if (side === "src") this.reread += now.length;
          out.set(t.oid, add(sumsOfHashes(stable), now.length ? await sumsByKey(c, t, now) : ZERO));
        }
      } finally {
        await c.query("COMMIT").catch(() => undefined);
      }
      return { side, out };
    };
    t2Ms = Date.now();
    let newSums: { side: string; out: Map<number, Sums> }[] | undefined;
    try {
      [, ...newSums] = await Promise.all([this.readOld(), fresh(now.source, "src"), fresh(now.target, "tgt")]);
    } catch (e) {
      for (const t of [...this.tables.values()]) this.drop(t, `cannot read it at the fence: ${(e as Error).message}`);
    }
    for (const t of this.tables.values()) {
      if (!t.base || !newSums) continue;
      const srcNew = newSums[0].out.get(t.oid) ?? ZERO, tgtNew = newSums[1].out.get(t.oid) ?? ZERO;
      const src = add(add(t.base.src, t.oldSrc, -1n), srcNew), tgt = add(add(t.base.tgt, t.oldTgt, -1n), tgtNew);
      known.set(t.raw, { sourceRows: Number(src.n), targetRows: Number(tgt.n), sourceHash: hashOf(src), targetHash: hashOf(tgt) });
      tables.push({ table: t.raw, keys: t.keys.size });
    }
    this.phases = `decoding ${((t1Ms - t0) / 1000).toFixed(2)} s, guards ${((t2Ms - t1Ms) / 1000).toFixed(2)} s, reads ${((Date.now() - t2Ms) / 1000).toFixed(2)} s`;
    return { known, tables, fallback: this.fallback };
  }

  /** Where the fence's part went (for the cutover's message). */
  phases = "";

  private prefetched?: Promise<void>;

  /**
   * Once writes are stopped (the fence begins): the witness's changes decoded so far and their rows in the held S and P
   * read while the fence drains the target and pauses its consumer, on connections the fence does not use. Only a head
   * start: finish() decodes again from where this stopped (a change committed meanwhile is decoded then), and both
   * steps keep what they did (collect: keys into K; readOld: each key's S and P sums once), as when called before the freeze.
   */
  prefetch(): void {
    if (this.prefetched || !this.tables.size) return;
    // A failure part-way (the slot's changes consumed but not all decoded) leaves K incomplete: every table then falls back.
    this.prefetched = (async () => { await this.collect(); await this.readOld(); })().catch((e) => {
      for (const t of [...this.tables.values()]) this.drop(t, `the witness slot's changes could not be read: ${redact((e as Error).message, this.c.source)}`);
    });
  }

  async close(): Promise<void> {
    await this.prefetched;
    // Dropped here, so it is gone when the cutover returns (a TEMPORARY slot also goes with its session, but the server
    // ends that session a moment after the client leaves, and also if this process dies). Bounded: the link may be stalled.
    if (this.witness && this.slotMade) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.witness.query(`DROP_REPLICATION_SLOT ${quoteIdent(this.witnessSlot)}`).catch(() => undefined),
        new Promise((r) => { timer = setTimeout(r, 5000); })]);
      clearTimeout(timer);
    }
    await endClient(this.witness);
    this.witness = undefined;
    if (this.held) await closeVerifySessions([this.held]);
    this.held = undefined;
  }
}
