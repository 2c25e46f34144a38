/**
 * Large objects (pg_largeobject): neither logical replication nor a schema dump carries them. The load
 * copies them inside its exported snapshot, with their OIDs (oid columns keep pointing at them), owners,
 * grants and comments; the cutover, while the source is frozen, compares OID sets, sizes, content hashes
 * and metadata on both sides and copies what differs, unlinking what the source no longer has.
 *
 * Contents are read with lo_get(oid, offset, len) and written with lo_put in CHUNK pieces, so neither
 * pgferry nor either server holds a whole object in memory; hashes are md5 over per-chunk md5s, computed
 * in SQL on each side. lo_get works for the object's owner, holders of SELECT on it, and everyone with
 * lo_compat_privileges; pg_largeobject itself would need a superuser.
 */
import { Client } from "pg";
import { connect, Endpoint, quoteIdent, quoteLiteral } from "../core/endpoint";
import { PgferryError } from "../core/errors";
import { snapshotSession } from "./load";
import type { MigrationRecordOptions } from "../state/state";

/** Bytes per lo_get/lo_put and per hashed piece: bounds memory in pgferry and on both servers. */
export const CHUNK = 1024 * 1024;
/** lo_open's INV_READ: a read-only descriptor reads as of the transaction's snapshot. */
const INV_READ = 0x40000;

export interface LargeObjectInfo {
  oid: string;
  size: number;
  /** md5 over the md5 of each CHUNK (absent when not hashed). */
  hash?: string;
  owner: string;
  comment: string | null;
  /** Explicit grants other than the owner's own, as "grantee:privilege[:grantable]" sorted; PUBLIC as "-". */
  grants: string[];
}

/**
 * Owner, comment, and grants other than the owner's own ("grantee:privilege[:g]", PUBLIC as "-") of m: sorted
 * to compare; in ACL order to copy, so the target's ACL reads as the source's.
 */
const metaColumns = (sorted: boolean) => `pg_get_userbyid(m.lomowner) AS owner, obj_description(m.oid, 'pg_largeobject') AS comment,
      (SELECT array_agg(g ORDER BY ${sorted ? `g COLLATE "C"` : "n"}) FROM (SELECT CASE WHEN a.grantee = 0 THEN '-' ELSE pg_get_userbyid(a.grantee) END || ':' ||
         a.privilege_type || CASE WHEN a.is_grantable THEN ':g' ELSE '' END AS g, n FROM aclexplode(m.lomacl) WITH ORDINALITY a(grantor, grantee, privilege_type, is_grantable, n)
         WHERE a.grantee <> m.lomowner) x) AS grants`;

/**
 * Every large object of the session's database (of partition `part` of `parts`, by oid) with size,
 * metadata and, when `hashes`, its content hash. Read-only: the descriptors opened to measure sizes close
 * with the caller's transaction.
 */
export async function readLargeObjects(c: Client, hashes: boolean, part = 0, parts = 1, oids?: string[]): Promise<LargeObjectInfo[]> {
  const r = await c.query(`
    SELECT m.oid::text AS oid, sz.size::float8 AS size, ${metaColumns(true)},
      CASE WHEN $1 THEN (SELECT md5(string_agg(md5(lo_get(m.oid, k * ${CHUNK}, ${CHUNK})), '' ORDER BY k))
        FROM generate_series(0::bigint, greatest(sz.size - 1, 0) / ${CHUNK}) k) END AS hash
    FROM pg_largeobject_metadata m CROSS JOIN LATERAL (SELECT lo_lseek64(lo_open(m.oid, ${INV_READ}), 0, 2) AS size) sz
    WHERE m.oid::bigint % $2 = $3 AND ($4::oid[] IS NULL OR m.oid = ANY ($4::oid[]))
    ORDER BY m.oid`, [hashes, parts, part, oids ?? null]);
  return r.rows.map((x) => ({ oid: x.oid, size: Number(x.size), hash: x.hash ?? undefined, owner: x.owner, comment: x.comment, grants: x.grants ?? [] }));
}

/** Read all of them over `jobs` read-only snapshot sessions (one per oid partition), in parallel. */
async function readAll(ep: Endpoint, hashes: boolean, jobs: number): Promise<Map<string, LargeObjectInfo>> {
  const parts = Math.max(1, jobs);
  const lists = await Promise.all(Array.from({ length: parts }, async (_, part) => {
    const c = await snapshotSession(ep, undefined);
    try { return await readLargeObjects(c, hashes, part, parts); } finally { await c.query("COMMIT").catch(() => undefined); await c.end().catch(() => undefined); }
  }));
  return new Map(lists.flat().map((x) => [x.oid, x]));
}

/** Count and total size, for status; bytes undefined when the role may not open some of them (status must not fail for that). */
export async function largeObjectTotals(c: Client): Promise<{ count: number; bytes?: number }> {
  await c.query("BEGIN READ ONLY");
  try {
    const r = await c.query(`SELECT count(*)::float8 AS n, coalesce(sum(lo_lseek64(lo_open(oid, ${INV_READ}), 0, 2)), 0)::float8 AS bytes FROM pg_largeobject_metadata`);
    return { count: Number(r.rows[0].n), bytes: Number(r.rows[0].bytes) };
  } catch (e) {
    if ((e as { code?: string }).code !== "42501") throw e;
    await c.query("ROLLBACK");
    return { count: Number((await c.query(`SELECT count(*)::float8 AS n FROM pg_largeobject_metadata`)).rows[0].n) };
  } finally {
    await c.query("COMMIT").catch(() => undefined);
  }
}

export interface LargeObjectCopy { objects: number; bytes: number; seconds: number }

/** Objects up to this size travel in batches (one round trip per side for many), bigger ones chunk by chunk. */
const SMALL = 256 * 1024;
/** A batch: at most this many objects and this many bytes (memory stays bounded). */
const BATCH_OBJECTS = 200;
const BATCH_BYTES = 4 * 1024 * 1024;

type Meta = { owner: string; comment: string | null; grants: string[] | null };

/** GRANTs (ACL order), COMMENT, then the owner (the grants are pgferry's while it owns the object; the owner change rewrites their grantor). */
function metaStatements(oid: string, meta: Meta, roles: Set<string>): string[] {
  const out: string[] = [];
  for (const g of meta.grants ?? []) {
    const [grantee, priv, grantable] = g.split(":");
    if (grantee !== "-" && !roles.has(grantee)) continue;
    out.push(`GRANT ${priv} ON LARGE OBJECT ${oid} TO ${grantee === "-" ? "PUBLIC" : quoteIdent(grantee)}${grantable ? " WITH GRANT OPTION" : ""}`);
  }
  if (meta.comment !== null) out.push(`COMMENT ON LARGE OBJECT ${oid} IS ${quoteLiteral(meta.comment)}`);
  if (roles.has(meta.owner)) out.push(`ALTER LARGE OBJECT ${oid} OWNER TO ${quoteIdent(meta.owner)}`);
  return out;
}

/**
 * Copy large objects source → target with `jobs` workers, each with a source session in `snapshot` (the
 * load's; undefined at cutover, when the source is frozen) and a target session. Each object is replaced
 * whole in a target transaction (unlinked if it exists, created with the same OID, written, granted,
 * commented, given its owner), so a killed copy re-runs to the same result. Small objects go in batches (a
 * few round trips for up to BATCH_OBJECTS of them), big ones in CHUNK pieces. `oids`: only these (default:
 * all of the snapshot); one the source no longer has is unlinked on the target. Grants to, and ownership
 * by, roles missing on the target are left out: start lists them as not carried.
 */
export async function copyLargeObjects(source: Endpoint, target: Endpoint, snapshot: string | undefined, jobs: number,
  oids?: string[]): Promise<LargeObjectCopy> {
  const t0 = Date.now();
  let listed: { oid: string; size: number }[];
  {
    const c = await snapshotSession(source, snapshot);
    try {
      listed = (await c.query(`SELECT oid::text AS oid, lo_lseek64(lo_open(oid, ${INV_READ}), 0, 2)::float8 AS size FROM pg_largeobject_metadata
        WHERE $1::oid[] IS NULL OR oid = ANY ($1::oid[]) ORDER BY oid`, [oids ?? null])).rows.map((x) => ({ oid: x.oid, size: Number(x.size) }));
    } finally { await c.query("COMMIT").catch(() => undefined); await c.end().catch(() => undefined); }
  }
  type Work = { oids: string[]; big: boolean };
  const queue: Work[] = [];
  // Asked for but gone from the source: an empty batch of them unlinks them on the target.
  const have = new Set(listed.map((x) => x.oid));
  const gone = (oids ?? []).filter((o) => !have.has(o));
  if (gone.length) queue.push({ oids: gone, big: false });
  for (const x of listed.filter((x) => x.size > SMALL).sort((a, b) => b.size - a.size)) queue.push({ oids: [x.oid], big: true });
  let batch: string[] = [], batchBytes = 0;
  for (const x of listed.filter((x) => x.size <= SMALL)) {
    if (batch.length && (batch.length >= BATCH_OBJECTS || batchBytes + x.size > BATCH_BYTES)) { queue.push({ oids: batch, big: false }); batch = []; batchBytes = 0; }
    batch.push(x.oid);
    batchBytes += x.size;
  }
  if (batch.length) queue.push({ oids: batch, big: false });
  if (!queue.length) return { objects: 0, bytes: 0, seconds: 0 };
  let objects = 0, bytes = 0;
  let failure: unknown;
  const clients = new Set<Client>();
  const worker = async () => {
    const src = await snapshotSession(source, snapshot);
    clients.add(src);
    const dst = await connect(target, { application_name: "pgferry large objects" });
    clients.add(dst);
    // A rollback's target is the frozen old server, which pgferry's own sessions write through.
    await dst.query("SET default_transaction_read_only = off; SET synchronous_commit = off");
    const roles = new Set((await dst.query(`SELECT rolname FROM pg_roles`)).rows.map((x) => x.rolname as string));
    for (let work; !failure && (work = queue.shift());) {
      try {
        await dst.query("BEGIN");
        await dst.query(`SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = ANY ($1::oid[])`, [work.oids]);
        if (!work.big) {
          const rows = (await src.query(`SELECT m.oid::text AS oid, lo_get(m.oid) AS d, ${metaColumns(false)} FROM pg_largeobject_metadata m
            WHERE m.oid = ANY ($1::oid[])`, [work.oids])).rows as (Meta & { oid: string; d: Buffer })[];
          if (rows.length) {
            await dst.query(`SELECT lo_from_bytea(o, d) FROM unnest($1::oid[], $2::bytea[]) u(o, d)`, [rows.map((r) => r.oid), rows.map((r) => r.d)]);
            const meta = rows.flatMap((r) => metaStatements(r.oid, r, roles));
            if (meta.length) await dst.query(meta.join(";\n"));
          }
          objects += rows.length;
          bytes += rows.reduce((a, r) => a + r.d.length, 0);
        } else {
          const oid = work.oids[0];
          const meta = (await src.query(`SELECT ${metaColumns(false)} FROM pg_largeobject_metadata m WHERE m.oid = $1::oid`, [oid])).rows[0] as Meta | undefined;
          if (meta) {
            await dst.query(`SELECT lo_create($1::oid)`, [oid]);
            for (let off = 0; ; off += CHUNK) {
              const data: Buffer = (await src.query(`SELECT lo_get($1::oid, $2::bigint, ${CHUNK}) AS d`, [oid, off])).rows[0].d;
              if (data.length) await dst.query(`SELECT lo_put($1::oid, $2::bigint, $3::bytea)`, [oid, off, data]);
              bytes += data.length;
              if (data.length < CHUNK) break;
            }
            for (const q of metaStatements(oid, meta, roles)) await dst.query(q);
            objects++;
          }
        }
        await dst.query("COMMIT");
      } catch (e) {
        await dst.query("ROLLBACK").catch(() => undefined);
        const which = work.oids.length === 1 ? `large object ${work.oids[0]}` : `large objects ${work.oids[0]}…${work.oids[work.oids.length - 1]} (${work.oids.length})`;
        throw new PgferryError("large_object_copy_failed", `copying ${which} failed: ${(e as Error).message}. Fix: the source role needs ` +
          `SELECT on them (GRANT SELECT ON LARGE OBJECT … TO …, or lo_compat_privileges = on) and the target role must be allowed to ` +
          `replace them (their owner or a superuser); then run the same command again, which copies them anew`);
      }
    }
    await src.query("COMMIT");
  };
  const workers = Array.from({ length: Math.max(1, Math.min(jobs, queue.length)) }, () => worker().catch((e) => {
    failure ??= e;
    for (const c of clients) (c as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
  }));
  try {
    await Promise.all(workers);
  } finally {
    await Promise.all([...clients].map((c) => c.end().catch(() => undefined)));
  }
  if (failure) throw failure instanceof PgferryError ? failure : new PgferryError("large_object_copy_failed", `copying large objects failed: ${(failure as Error).message ?? failure}`);
  return { objects, bytes, seconds: (Date.now() - t0) / 1000 };
}

export interface LargeObjectComparison {
  sourceCount: number;
  targetCount: number;
  sourceBytes: number;
  targetBytes: number;
  /** OIDs missing on the target, or whose size, hash (when compared) or metadata differ. */
  differing: string[];
  /** OIDs only the target has. */
  extra: string[];
  problems: string[];
}

/**
 * Compare both sides: OID sets, sizes, metadata (owner and grantees only where the role exists on the
 * target: start lists the others as not carried), and with `hashes` the content hashes. Each side is
 * read by `jobs` sessions in parallel.
 */
export async function compareLargeObjects(source: Endpoint, target: Endpoint, hashes: boolean, jobs: number): Promise<LargeObjectComparison> {
  const [s, t, roles] = await Promise.all([readAll(source, hashes, jobs), readAll(target, hashes, jobs), (async () => {
    const c = await connect(target);
    try { return new Set((await c.query(`SELECT rolname FROM pg_roles`)).rows.map((x) => x.rolname as string)); } finally { await c.end().catch(() => undefined); }
  })()]);
  const differing: string[] = [], extra: string[] = [], problems: string[] = [];
  const grantsOf = (x: LargeObjectInfo) => x.grants.filter((g) => { const who = g.split(":")[0]; return who === "-" || roles.has(who); }).join(",");
  for (const [oid, a] of s) {
    const b = t.get(oid);
    let why: string | undefined;
    if (!b) why = "missing on target";
    else if (a.size !== b.size) why = `size ${a.size} on source, ${b.size} on target`;
    else if (hashes && a.hash !== b.hash) why = "content differs";
    else if (roles.has(a.owner) && a.owner !== b.owner) why = `owner ${a.owner} on source, ${b.owner} on target`;
    else if (a.comment !== b.comment) why = "comment differs";
    else if (grantsOf(a) !== grantsOf(b)) why = `grants differ (source: ${grantsOf(a) || "none"}; target: ${grantsOf(b) || "none"})`;
    if (why) { differing.push(oid); problems.push(`large object ${oid}: ${why}`); }
  }
  for (const oid of t.keys()) if (!s.has(oid)) { extra.push(oid); problems.push(`large object ${oid}: exists only on target`); }
  const sum = (m: Map<string, LargeObjectInfo>) => [...m.values()].reduce((x, y) => x + y.size, 0);
  // One line per problem is unreadable for thousands: the first 20, then a count.
  const shown = problems.length > 20 ? [...problems.slice(0, 20), `… and ${problems.length - 20} more large object difference(s)`] : problems;
  return { sourceCount: s.size, targetCount: t.size, sourceBytes: sum(s), targetBytes: sum(t), differing, extra, problems: shown };
}

export interface LargeObjectSync { compared: number; copied: number; unlinked: number; bytes: number }

/**
 * The cutover's step, with the source frozen: compare both sides with content hashes (cheap next to a
 * copy: the servers hash, only digests travel), copy what differs, unlink what only the target has.
 */
export async function syncLargeObjects(source: Endpoint, target: Endpoint, jobs: number): Promise<LargeObjectSync> {
  const cmp = await compareLargeObjects(source, target, true, jobs);
  const copied = cmp.differing.length ? await copyLargeObjects(source, target, undefined, jobs, cmp.differing) : { objects: 0, bytes: 0 };
  if (cmp.extra.length) {
    const c = await connect(target);
    try {
      await c.query("SET default_transaction_read_only = off");
      await c.query(`SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = ANY ($1::oid[])`, [cmp.extra]);
    } finally { await c.end().catch(() => undefined); }
  }
  return { compared: cmp.sourceCount, copied: copied.objects, unlinked: cmp.extra.length, bytes: copied.bytes };
}

/**
 * The cutover's large-object step (between the fence check and the gate): unless the migration was started
 * with --no-large-objects, carry what changed during CDC. Returns whether they are carried (the gate then
 * compares them) and what was done; the caller times it as largeObjectsMs.
 */
export async function largeObjectsAtCutover(source: Endpoint, target: Endpoint, migrationOptions: MigrationRecordOptions | undefined, jobs: number,
  say: (message: string) => void): Promise<{ carried: boolean; sync?: LargeObjectSync }> {
  const opts = migrationOptions;
  if (opts?.largeObjects === false) return { carried: false };
  if (opts?.reverseOf) {
    // A rollback (reverse migration): not carried back yet; said, never silent.
    say("warning: large objects are not carried back by a rollback: large objects created or changed on the new server during the rollback " +
      "window are not on the old server (copy them with pg_dump --data-only --large-objects --exclude-table='*.*' | pg_restore)");
    return { carried: false };
  }
  say("comparing large objects (logical replication does not carry them) and copying what changed");
  const sync = await syncLargeObjects(source, target, jobs);
  if (sync.copied || sync.unlinked) say(`large objects: ${sync.copied} copied (${sync.bytes} bytes), ${sync.unlinked} unlinked, of ${sync.compared}`);
  return { carried: true, sync };
}
