/**
 * Change data capture, mode `stream`: pgferry reads the slot itself (pg-logical-replication, pgoutput)
 * and applies the changes with pg, for targets that cannot host a subscription or reach the source.
 *
 * The library is wrapped so none of its traps (../shared/notes/cdc.md §2) can lose data:
 *  - acknowledge { auto: false, timeoutSeconds: 0 }: no library ack, no timer ack of unapplied LSNs;
 *  - our acks compensate its +1 (it reports lsn+1), and only report what the target committed;
 *  - every (re)start passes the stored applied LSN explicitly, on a new service each time;
 *  - START_REPLICATION is sent without the `messages` option (PostgreSQL 13 rejects it);
 *  - values stay raw text (the default parsers lose microseconds, big jsonb numbers, JSON null…);
 *  - flowControl on: the socket pauses while we apply, so memory stays bounded whatever the
 *    transaction size; a failing handler stops the stream instead of skipping to the next message.
 * Exactly once: the applied position is written on the target in the same transaction as the
 * changes it covers; source transactions at or below it are skipped after a restart.
 */
import { Client } from "pg";
import { LogicalReplicationService, Pgoutput, PgoutputPlugin } from "pg-logical-replication";
import { CONTROL_SCHEMA } from "./catalog";
import { clientConfig, connect, Endpoint, qualified, quoteIdent } from "./endpoint";
import { PgferryError } from "./errors";
import { bigIntToLsn, lsnToBigInt } from "./lsn";
import { openStreamDecoder, Wal2jsonDecoder } from "./wal2json";

export interface ApplyCounters { inserts: number; updates: number; deletes: number; truncates: number }

export interface StreamOptions {
  migration: string;
  slot: string;
  publication: string;
  /** Stop once this LSN is applied (cutover drain); undefined = run until stop(). */
  until?: bigint;
  /** Most statements in one target transaction before it commits (several source transactions per target one). */
  batchStatements?: number;
  onApplied?: (lsn: bigint) => void;
}

type Relation = Pgoutput.MessageRelation;
const lit = (c: Client, v: unknown) => (v === null ? "NULL" : c.escapeLiteral(String(v)));
const tableOf = (r: Relation) => qualified(r.schema, r.name);

export async function readAppliedLsn(c: Client, migration: string): Promise<bigint> {
  const r = await c.query(`SELECT applied_lsn, consistent_point FROM ${CONTROL_SCHEMA}.migration WHERE name = $1`, [migration]);
  const row = r.rows[0];
  return lsnToBigInt(row?.applied_lsn ?? row?.consistent_point ?? "0/0");
}

/** SQL for one change. Keys use `=` (index usable); REPLICA IDENTITY FULL rows match one physical row by text. */
export function changeSql(c: Client, m: Pgoutput.MessageInsert | Pgoutput.MessageUpdate | Pgoutput.MessageDelete,
  alwaysIdentity: Set<string> = new Set()): string {
  const r = m.relation;
  if (m.tag === "insert") {
    const cols = Object.keys(m.new).filter((k) => m.new[k] !== undefined);
    // The source's value for GENERATED ALWAYS identity columns wins, as in a native subscription.
    return `INSERT INTO ${tableOf(r)} (${cols.map(quoteIdent).join(", ")})${alwaysIdentity.size ? " OVERRIDING SYSTEM VALUE" : ""} ` +
      `VALUES (${cols.map((k) => lit(c, m.new[k])).join(", ")})`;
  }
  const full = r.replicaIdentity === "full";
  const ident: Record<string, unknown> = m.tag === "update"
    ? (m.old ?? m.key ?? Object.fromEntries(r.keyColumns.map((k) => [k, m.new[k]])))
    : ((m.old ?? m.key) as Record<string, unknown>);
  const keyCols = full ? Object.keys(ident) : r.keyColumns;
  const where = full
    ? `ctid = (SELECT ctid FROM ${tableOf(r)} WHERE ${keyCols.map((k) => ident[k] === undefined || ident[k] === null
        ? `${quoteIdent(k)} IS NULL` : `${quoteIdent(k)}::text = ${lit(c, ident[k])}::${"text"}`).join(" AND ")} LIMIT 1)`
    : keyCols.map((k) => `${quoteIdent(k)} = ${lit(c, ident[k])}`).join(" AND ");
  if (m.tag === "delete") return `DELETE FROM ${tableOf(r)} WHERE ${where}`;
  // undefined = unchanged TOAST value: leave it as it is, never write NULL. GENERATED ALWAYS identity
  // columns cannot be SET; they change only with the key (then the key change is applied and fails loudly).
  const keyChanged = (k: string) => keyCols.includes(k) && String(ident[k]) !== String(m.new[k]);
  const set = Object.keys(m.new).filter((k) => m.new[k] !== undefined && (!alwaysIdentity.has(k) || keyChanged(k)));
  return `UPDATE ${tableOf(r)} SET ${set.map((k) => `${quoteIdent(k)} = ${lit(c, m.new[k])}`).join(", ")} WHERE ${where}`;
}

type RowChange = Pgoutput.MessageInsert | Pgoutput.MessageUpdate | Pgoutput.MessageDelete;

/** Per target table: column types (for casts in merged statements) and GENERATED ALWAYS identity columns. */
export interface TableMeta { types: Map<string, string>; alwaysIdentity: Set<string> }

export interface BatchStatement { sql: string; /** rows an UPDATE/DELETE must touch; null for INSERT */ expect: number | null }

const keyOf = (m: RowChange): Record<string, unknown> => m.tag === "insert" ? {}
  : m.tag === "update" ? (m.old ?? m.key ?? Object.fromEntries(m.relation.keyColumns.map((k) => [k, m.new[k]])))
  : ((m.old ?? m.key) as Record<string, unknown>);

/**
 * The SQL for a batch of row changes inside one target transaction. Changes are grouped by table
 * (each table's own order kept: with no triggers or FK checks during apply, changes to different
 * tables commute), and consecutive changes of one kind are merged: multi-row INSERT, and UPDATE/DELETE
 * joined to a VALUES list on the key. Merging stops at a repeated key, a key change, a different column
 * set, or REPLICA IDENTITY FULL, which keep one statement per change.
 */
export function batchSql(c: Client, changes: RowChange[], meta: (table: string) => TableMeta | undefined): BatchStatement[] {
  const byTable = new Map<string, RowChange[]>();
  for (const m of changes) {
    const t = tableOf(m.relation);
    (byTable.get(t) ?? byTable.set(t, []).get(t)!).push(m);
  }
  const out: BatchStatement[] = [];
  for (const [table, list] of byTable) {
    const info = meta(table);
    const single = (m: RowChange) => out.push({ sql: changeSql(c, m, info?.alwaysIdentity), expect: m.tag === "insert" ? null : 1 });
    const setCols = (m: Pgoutput.MessageUpdate) => Object.keys(m.new).filter((k) => m.new[k] !== undefined && !m.relation.keyColumns.includes(k)
      && !info?.alwaysIdentity.has(k));
    const signature = (m: RowChange): string | undefined => {
      if (m.tag === "insert") return "i:" + Object.keys(m.new).filter((k) => m.new[k] !== undefined).join("");
      if (m.relation.replicaIdentity === "full" || !info) return undefined;
      const key = keyOf(m);
      if (m.tag === "delete") return "d";
      if (m.relation.keyColumns.some((k) => String(key[k]) !== String(m.new[k]))) return undefined; // key change
      const cols = setCols(m);
      return cols.length && cols.every((k) => info.types.has(k)) ? "u:" + cols.join("") : undefined;
    };
    for (let i = 0; i < list.length;) {
      const sig = signature(list[i]);
      let j = i + 1;
      const seen = new Set<string>();
      const keyText = (m: RowChange) => JSON.stringify(m.relation.keyColumns.map((k) => keyOf(m)[k]));
      if (sig && sig !== "i") {
        if (!sig.startsWith("i:")) seen.add(keyText(list[i]));
        while (j < list.length && signature(list[j]) === sig && (sig.startsWith("i:") || !seen.has(keyText(list[j])))) {
          if (!sig.startsWith("i:")) seen.add(keyText(list[j]));
          j++;
        }
      }
      const run = list.slice(i, j);
      i = j;
      if (run.length === 1 || !sig) { run.forEach(single); continue; }
      const first = run[0];
      const r = first.relation;
      if (first.tag === "insert") {
        const cols = Object.keys(first.new).filter((k) => first.new[k] !== undefined);
        out.push({ sql: `INSERT INTO ${table} (${cols.map(quoteIdent).join(", ")})${info?.alwaysIdentity.size ? " OVERRIDING SYSTEM VALUE" : ""} VALUES ` +
          run.map((m) => `(${cols.map((k) => lit(c, (m as Pgoutput.MessageInsert).new[k])).join(", ")})`).join(", "), expect: null });
        continue;
      }
      const keys = r.keyColumns;
      const cast = (col: string, alias: string) => `v.${alias}::${info!.types.get(col) ?? "text"}`;
      const keyJoin = keys.map((k, n) => `t.${quoteIdent(k)} = ${cast(k, `k${n}`)}`).join(" AND ");
      if (first.tag === "delete") {
        const rows = run.map((m) => `(${keys.map((k) => lit(c, keyOf(m)[k])).join(", ")})`).join(", ");
        out.push({ sql: `DELETE FROM ${table} t USING (VALUES ${rows}) AS v(${keys.map((_, n) => `k${n}`).join(", ")}) WHERE ${keyJoin}`, expect: run.length });
        continue;
      }
      const cols = setCols(first as Pgoutput.MessageUpdate);
      const rows = run.map((m) => {
        const u = m as Pgoutput.MessageUpdate;
        return `(${[...keys.map((k) => lit(c, keyOf(u)[k])), ...cols.map((k) => lit(c, u.new[k]))].join(", ")})`;
      }).join(", ");
      out.push({ sql: `UPDATE ${table} t SET ${cols.map((k, n) => `${quoteIdent(k)} = ${cast(k, `s${n}`)}`).join(", ")} FROM (VALUES ${rows}) ` +
        `AS v(${[...keys.map((_, n) => `k${n}`), ...cols.map((_, n) => `s${n}`)].join(", ")}) WHERE ${keyJoin}`, expect: run.length });
    }
  }
  return out;
}

/**
 * One stream session: connect, stream from the stored position, apply, until `until` is applied,
 * stop() is called, or an error. Resolves with the last applied LSN.
 */
export class StreamApplier {
  private svc?: LogicalReplicationService;
  private target?: Client;
  private applied = 0n;
  private pendingLsn = 0n;
  private inTarget = false;
  private skipping = false;
  private pending: RowChange[] = [];
  private statements = 0;
  private stats = new Map<string, ApplyCounters>();
  /** Column types and GENERATED ALWAYS identity columns per target table, read when the relation is announced. */
  private meta = new Map<string, TableMeta>();
  private done!: Promise<bigint>;
  private resolveDone!: (l: bigint) => void;
  private rejectDone!: (e: unknown) => void;
  private stopped = false;
  private timer?: NodeJS.Timeout;
  /** Set when the migration streams with wal2json (./wal2json.ts): turns its messages into pgoutput's. */
  private decoder?: Wal2jsonDecoder;
  conflicts = 0;
  changes = 0;

  constructor(private source: Endpoint, private targetEp: Endpoint, private o: StreamOptions) {
    this.done = new Promise((res, rej) => { this.resolveDone = res; this.rejectDone = rej; });
  }

  get appliedLsn(): bigint { return this.applied; }

  async run(): Promise<bigint> {
    this.target = await connect(this.targetEp, { application_name: "pgferry stream" });
    try {
      await this.target.query(`SET session_replication_role = replica`);
    } catch (e) {
      throw new PgferryError("replica_role", `stream mode applies changes with session_replication_role = replica (no user triggers, ` +
        `no FK checks), which the target refused (${(e as Error).message}); fix: use a superuser on the target, or ` +
        `GRANT SET ON PARAMETER session_replication_role TO "${this.targetEp.user}" (PostgreSQL 15+)`);
    }
    await this.target.query(`SET synchronous_commit = on`);
    this.applied = await readAppliedLsn(this.target, this.o.migration);
    if (this.o.until !== undefined && this.applied >= this.o.until) { await this.close(); return this.applied; }

    try {
      this.decoder = await openStreamDecoder(this.source, this.target, this.o.migration);
    } catch (e) {
      await this.close();
      throw e;
    }
    const svc = new LogicalReplicationService(
      { ...clientConfig(this.source, { application_name: `pgferry_${this.o.migration}`, ...this.decoder?.connection }) } as never,
      { acknowledge: { auto: false, timeoutSeconds: 0 }, flowControl: { enabled: true } });
    this.svc = svc;
    const plugin = new PgoutputPlugin({ protoVersion: 1, publicationNames: [this.o.publication] });
    const parser = (plugin as unknown as { parser: { readRelationColumn: (r: unknown) => Record<string, unknown> } }).parser;
    const readColumn = parser.readRelationColumn.bind(parser);
    parser.readRelationColumn = (r: unknown) => ({ ...readColumn(r), parser: (x: string) => x }); // raw text: lossless
    const pub = this.o.publication.replace(/"/g, '""');
    plugin.start = (client: Client, slot: string, lsn: string) =>
      client.query(`START_REPLICATION SLOT ${quoteIdent(slot)} LOGICAL ${lsn} (proto_version '1', publication_names '"${pub}"')`);

    svc.on("data", async (_lsn: string, m: Pgoutput.Message) => {
      if (this.stopped) return;
      try {
        if (!this.decoder) await this.handle(m);
        else for (const x of await this.decoder.prepare(m as never)) await this.handle(x);
      } catch (e) { await this.fail(e); }
    });
    svc.on("heartbeat", async (lsn: string, _ts: number, reply: boolean) => {
      if (this.stopped) return;
      const idle = !this.inTarget && this.queueEmpty();
      try {
        // A keepalive carries the position the walsender has decoded and sent up to. Idle here means
        // every change before it is applied: record that position (throttled), so the fence check and
        // status see "caught up" even when the last WAL records are not ours (e.g. the freeze itself).
        const sent = lsnToBigInt(lsn);
        // (The walsender pings only while our confirmed position is behind what it sent, so this is one
        // small UPDATE per idle period, not one per keepalive.)
        if (idle && sent > this.applied) await this.storeApplied(sent);
        if (reply || idle) await this.ack(this.applied);
        if (this.o.until !== undefined && this.applied >= this.o.until && idle) await this.finish();
      } catch (e) { await this.fail(e); }
    });
    svc.on("error", (e: Error) => { void this.fail(e); });
    this.timer = setInterval(() => { if (!this.stopped) void this.ack(this.applied).catch(() => undefined); }, 5000);
    svc.subscribe(this.decoder?.plugin ?? plugin, this.o.slot, bigIntToLsn(this.applied)).catch((e) => this.fail(e));
    return this.done;
  }

  /** Stop after the current transaction: what was applied stays applied and acknowledged. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    await this.finish();
  }

  /** No parsed message waits behind the one in hand (inside a data handler the library is always "processing"). */
  private nothingQueued(): boolean {
    return (this.svc as unknown as { _messageQueue: unknown[] })._messageQueue.length === 0;
  }

  /** Outside the data handler: no message is being applied or waiting. */
  private queueEmpty(): boolean {
    return !(this.svc as unknown as { _processing: boolean })._processing && this.nothingQueued();
  }

  private async ack(lsn: bigint): Promise<void> {
    if (lsn > 0n && this.svc) await this.svc.acknowledge(bigIntToLsn(lsn - 1n)); // the library sends lsn + 1
  }

  private count(r: Relation, kind: keyof ApplyCounters) {
    const key = `${r.schema}.${r.name}`;
    const s = this.stats.get(key) ?? { inserts: 0, updates: 0, deletes: 0, truncates: 0 };
    s[kind]++;
    this.stats.set(key, s);
  }

  private async handle(m: Pgoutput.Message): Promise<void> {
    const c = this.target!;
    switch (m.tag) {
      case "begin":
        // Already applied before a restart (crash between target COMMIT and ack): skip the whole transaction.
        this.skipping = lsnToBigInt(m.commitLsn ?? "0/0") < this.applied;
        if (!this.skipping && !this.inTarget) { await c.query("BEGIN"); this.inTarget = true; }
        return;
      case "insert": case "update": case "delete":
        if (this.skipping) return;
        this.pending.push(m);
        this.count(m.relation, m.tag === "insert" ? "inserts" : m.tag === "update" ? "updates" : "deletes");
        this.changes++;
        if (this.pending.length >= 2000) await this.flush();
        return;
      case "truncate":
        if (this.skipping) return;
        await this.flush();
        // The message already lists every table the source's CASCADE reached: no CASCADE here.
        await c.query(`TRUNCATE ${m.relations.map(tableOf).join(", ")}${m.restartIdentity ? " RESTART IDENTITY" : ""}`);
        m.relations.forEach((r) => this.count(r, "truncates"));
        this.changes++;
        return;
      case "commit": {
        if (this.skipping) { this.skipping = false; return; }
        this.pendingLsn = lsnToBigInt(m.commitEndLsn ?? "0/0");
        const atFence = this.o.until !== undefined && this.pendingLsn >= this.o.until;
        // Several source transactions share a target transaction while more are queued; commit when none is.
        if (this.statements + this.pending.length >= (this.o.batchStatements ?? 5000) || this.nothingQueued() || atFence) await this.commitTarget();
        if (atFence) await this.finish();
        return;
      }
      case "relation": {
        await this.flush(); // a changed relation (new columns, new replica identity) applies to what follows
        const r = await c.query(`SELECT attname, format_type(atttypid, atttypmod) AS type, attidentity = 'a' AS always
          FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`, [tableOf(m)]);
        this.meta.set(tableOf(m), { types: new Map(r.rows.map((x) => [x.attname, x.type])),
          alwaysIdentity: new Set(r.rows.filter((x) => x.always).map((x) => x.attname)) });
        return;
      }
      default:
        return; // type, origin, message: nothing to apply
    }
  }

  private async flush(): Promise<void> {
    if (!this.pending.length) return;
    const batch = batchSql(this.target!, this.pending, (t) => this.meta.get(t));
    this.statements += this.pending.length;
    this.pending = [];
    const res = await this.target!.query(batch.map((b) => b.sql).join(";\n"));
    const results = Array.isArray(res) ? res : [res];
    results.forEach((r, n) => {
      const want = batch[n]?.expect;
      if (want !== null && want !== undefined && r.rowCount !== want) this.conflicts += Math.abs(want - (r.rowCount ?? 0));
    });
  }

  /** Commit the open target transaction with the applied position in it, then acknowledge it. */
  private async commitTarget(): Promise<void> {
    if (!this.inTarget) return;
    await this.flush();
    const c = this.target!;
    const lsn = this.pendingLsn;
    await c.query(`UPDATE ${CONTROL_SCHEMA}.migration SET applied_lsn = $2, updated_at = now() WHERE name = $1`, [this.o.migration, bigIntToLsn(lsn)]);
    for (const [table, s] of this.stats) {
      await c.query(`INSERT INTO ${CONTROL_SCHEMA}.apply_stats AS a (migration, table_name, inserts, updates, deletes, truncates)
        VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (migration, table_name) DO UPDATE SET inserts = a.inserts + $3,
        updates = a.updates + $4, deletes = a.deletes + $5, truncates = a.truncates + $6`, [this.o.migration, table, s.inserts, s.updates, s.deletes, s.truncates]);
    }
    await c.query("COMMIT");
    this.stats.clear();
    this.inTarget = false;
    this.statements = 0;
    this.applied = lsn;
    this.o.onApplied?.(lsn);
    await this.ack(lsn);
  }

  private async storeApplied(lsn: bigint): Promise<void> {
    await this.target!.query(`UPDATE ${CONTROL_SCHEMA}.migration SET applied_lsn = $2, updated_at = now() WHERE name = $1`, [this.o.migration, bigIntToLsn(lsn)]);
    this.applied = lsn;
  }

  private async finish(): Promise<void> {
    if (this.stopped) return;
    try {
      await this.commitTarget();
    } catch (e) {
      await this.fail(e);
      return;
    }
    this.stopped = true;
    await this.close();
    this.resolveDone(this.applied);
  }

  private async fail(e: unknown): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.target?.query("ROLLBACK").catch(() => undefined);
    await this.close();
    this.rejectDone(e instanceof PgferryError ? e : new PgferryError("apply_failed", `stream apply stopped: ${(e as Error).message ?? e}`));
  }

  private async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.svc?.destroy().catch(() => undefined);
    await this.target?.end().catch(() => undefined);
    await this.decoder?.close();
  }
}

