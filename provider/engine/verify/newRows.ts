/**
 * The cutover gate's check of a table written until the freeze that the check by key (./byKey.ts) cannot take — no
 * primary key or replica identity index (pgbench_history), a key type it does not read back — when what was written is
 * new rows: only the row versions written since a snapshot taken just before the freeze are hashed at the fence, not
 * every row.
 *
 * Why it is exact (per server, on its own: nothing is assumed about the other side, nor about how the rows came there).
 * The gate's hash is additive (./byKey.ts): sums over a table's rows. In a snapshot X taken while streaming, let h be
 * X's xmin: every transaction id that precedes h had completed when X was taken. Split the table's live row versions by
 * their xmin (the inserting transaction): A = xmin precedes h, B = the rest. At the fence:
 *  - A(fence) ⊆ A(X): a version live at the fence whose inserter precedes h committed before X (an aborted one's rows
 *    are not live), and no deletion of it committed (it is live now), so X saw it. Row versions never change (an
 *    UPDATE writes a new version, with a new xmin).
 *  - So A(fence) = A(X) exactly when their counts are equal, and then sums(fence) = sums(A(X)) + sums(B(fence)).
 * sums(A(X)) and its count are read in X before the freeze; at the fence one scan counts A and hashes only B — the rows
 * inserted (or updated) since X, a few seconds of writes. A count that differs (a row older than X was updated or
 * deleted since) sends the table to the whole hash, as before, named with the reason; so does a rewrite, TRUNCATE or
 * column change (relfilenode and attributes, compared as ./byKey.ts does), and any read that fails. Nothing is held
 * open between X and the fence.
 *
 * Xids are compared on their low 32 bits as TransactionIdPrecedes does (ids 0–2, invalid/bootstrap/frozen, precede
 * every normal id); a version written after X can only seem to precede h after 2^31 transactions, which the server's
 * wraparound protection forbids within one cutover's window. A tuple frozen long ago (its raw xmin kept) that seems
 * not to precede h is merely counted in B: A(fence) then falls short of A(X) and the table is hashed whole — never a
 * wrong verdict.
 */
import { createHash } from "crypto";
import { Client } from "pg";
import { qualified } from "../core/endpoint";
import { shapes } from "./byKey";
import { hashHalfSumSql, KnownContents, rowHashSql, VerifySessionPair } from "./verify";

interface Sums { n: bigint; a: bigint; b: bigint }
const add = (x: Sums, y: Sums): Sums => ({ n: x.n + y.n, a: x.a + y.a, b: x.b + y.b });
const hashOf = (s: Sums) => createHash("md5").update(`${s.n}:${s.a}:${s.b}`).digest("hex");
const sumsOf = (r: any): Sums => ({ n: BigInt(r.n), a: BigInt(r.a), b: BigInt(r.b) });

/** This side's X: its xmin (low 32 bits), the table's shape and the sums of A(X). */
interface Base { h: bigint; shape?: string; old: Sums }

interface Table {
  raw: string;
  schema: string;
  name: string;
  cols: string[]; // sorted by name COLLATE "C" (as verify.ts)
  src?: Base;
  tgt?: Base;
}

export interface NewRowsOutcome {
  /** Tables compared at the fence by the rows written since the snapshot before the freeze, with how many there were per side. */
  tables: { table: string; sourceNewRows: number; targetNewRows: number }[];
  /** Tables that were to be checked so and were hashed whole at the fence instead, and why. */
  fallback: { table: string; reason: string }[];
}

export interface NewRowsResult extends NewRowsOutcome { known: Map<string, KnownContents> }

/** The row version's inserter precedes h (TransactionIdPrecedes on 32 bits; ids below 3 precede every normal id). */
const oldSql = (h: bigint) => `(_v_.xmin::text::bigint < 3 OR ((_v_.xmin::text::bigint - ${h} + 4294967296) % 4294967296) >= 2147483648)`;

export class NewRowsCheck {
  private tables: Table[] = [];
  private fallback: { table: string; reason: string }[] = [];

  /**
   * X on each side of `pair` (a REPEATABLE READ transaction per side, committed before returning): for every candidate
   * (raw "schema.name") that is a permanent plain table, h, its shape and sums(A(X)). A side that fails leaves the table to
   * the whole hash. Undefined when there is no candidate.
   */
  static async open(pair: VerifySessionPair, candidates: string[]): Promise<NewRowsCheck | undefined> {
    if (!candidates.length) return undefined;
    const k = new NewRowsCheck();
    const r = await pair.source.query(`
      SELECT n.nspname AS schema, c.relname AS name, n.nspname || '.' || c.relname AS raw, c.relkind::text AS kind, c.relpersistence::text AS persistence,
             (SELECT array_agg(a.attname::text ORDER BY a.attname COLLATE "C") FROM pg_attribute a
               WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS cols
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname || '.' || c.relname = ANY($1::text[])`, [candidates]);
    for (const x of r.rows) {
      if (x.kind !== "r" || x.persistence !== "p" || !x.cols?.length) continue;
      k.tables.push({ raw: x.raw, schema: x.schema, name: x.name, cols: x.cols });
    }
    if (!k.tables.length) return undefined;
    const names = k.tables.map((t) => t.raw);
    const read = async (c: Client, side: "src" | "tgt") => {
      await c.query(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`);
      try {
        const h = BigInt((await c.query(`SELECT pg_snapshot_xmin(pg_current_snapshot())::text AS x`)).rows[0].x) & 0xffffffffn;
        const shape = await shapes(c, names);
        for (const t of k.tables) {
          const s = (await c.query(`SELECT count(*)::text AS n, ${hashHalfSumSql(1)} AS a, ${hashHalfSumSql(2)} AS b
            FROM (SELECT ${rowHashSql(t.cols)} AS h FROM ONLY ${qualified(t.schema, t.name)} _v_ WHERE ${oldSql(h)}) s`)).rows[0];
          t[side] = { h, shape: shape.get(t.raw), old: sumsOf(s) };
        }
      } finally {
        await c.query("COMMIT").catch(() => undefined);
      }
    };
    const results = await Promise.allSettled([read(pair.source, "src"), read(pair.target, "tgt")]);
    const failed = results.find((x) => x.status === "rejected") as PromiseRejectedResult | undefined;
    if (failed) {
      for (const t of k.tables) k.fallback.push({ table: t.raw, reason: `cannot read it before the freeze: ${(failed.reason as Error).message}` });
      k.tables = [];
    }
    return k;
  }

  /** Tables this check will compare (raw names). */
  get checked(): string[] { return this.tables.map((t) => t.raw); }

  /**
   * At the fence (writes stopped, the target drained and paused), on `pair` (idle gate sessions): per side and table, one
   * scan counting A and hashing B in a fresh snapshot; the contents as a whole-table hash would have found them.
   */
  async finish(pair: VerifySessionPair): Promise<NewRowsResult> {
    const known = new Map<string, KnownContents>();
    const tables: NewRowsOutcome["tables"] = [];
    if (!this.tables.length) return { known, tables, fallback: this.fallback };
    const read = async (c: Client, side: "src" | "tgt") => {
      const out = new Map<string, { sums: Sums; newRows: number } | string>();
      await c.query(`BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`);
      try {
        const shape = await shapes(c, this.tables.map((t) => t.raw));
        for (const t of this.tables) {
          const base = t[side]!;
          if (shape.get(t.raw) !== base.shape) { out.set(t.raw, "rewritten or its columns changed during the cutover's warm-up"); continue; }
          const r = (await c.query(`SELECT count(*) FILTER (WHERE h IS NULL)::text AS old, count(h)::text AS n, ${hashHalfSumSql(1)} AS a, ${hashHalfSumSql(2)} AS b
            FROM (SELECT CASE WHEN ${oldSql(base.h)} THEN NULL ELSE ${rowHashSql(t.cols)} END AS h FROM ONLY ${qualified(t.schema, t.name)} _v_) s`)).rows[0];
          if (BigInt(r.old) !== base.old.n) {
            out.set(t.raw, `${base.old.n - BigInt(r.old)} row(s) on the ${side === "src" ? "source" : "target"} older than the snapshot before the freeze ` +
              `were updated or deleted since`);
            continue;
          }
          out.set(t.raw, { sums: add(base.old, sumsOf(r)), newRows: Number(r.n) });
        }
      } finally {
        await c.query("COMMIT").catch(() => undefined);
      }
      return out;
    };
    const [s, g] = await Promise.allSettled([read(pair.source, "src"), read(pair.target, "tgt")]);
    for (const t of this.tables) {
      if (s.status === "rejected" || g.status === "rejected") {
        const e = (s.status === "rejected" ? s.reason : (g as PromiseRejectedResult).reason) as Error;
        this.fallback.push({ table: t.raw, reason: `cannot read it at the fence: ${e.message}` });
        continue;
      }
      const a = s.value.get(t.raw), b = g.value.get(t.raw);
      if (typeof a === "string" || typeof b === "string" || !a || !b) {
        this.fallback.push({ table: t.raw, reason: typeof a === "string" ? a : typeof b === "string" ? b : "not read" });
        continue;
      }
      known.set(t.raw, { sourceRows: Number(a.sums.n), targetRows: Number(b.sums.n), sourceHash: hashOf(a.sums), targetHash: hashOf(b.sums) });
      tables.push({ table: t.raw, sourceNewRows: a.newRows, targetNewRows: b.newRows });
    }
    return { known, tables, fallback: this.fallback };
  }
}
