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
  private sql: string[] = [];
  private statements = 0;
  private stats = new Map<string, ApplyCounters>();
  /** GENERATED ALWAYS identity columns per target table, read when the relation is announced. */
  private identity = new Map<string, Set<string>>();
  private done!: Promise<bigint>;
  private resolveDone!: (l: bigint) => void;
  private rejectDone!: (e: unknown) => void;
  private stopped = false;
  private timer?: NodeJS.Timeout;
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

    const svc = new LogicalReplicationService(
      { ...clientConfig(this.source, { application_name: `pgferry_${this.o.migration}` }) } as never,
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
      try { await this.handle(m); } catch (e) { await this.fail(e); }
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
    svc.subscribe(plugin, this.o.slot, bigIntToLsn(this.applied)).catch((e) => this.fail(e));
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
        this.sql.push(changeSql(c, m, this.identity.get(tableOf(m.relation))));
        this.count(m.relation, m.tag === "insert" ? "inserts" : m.tag === "update" ? "updates" : "deletes");
        this.changes++;
        if (this.sql.length >= 500) await this.flush();
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
        if (this.statements + this.sql.length >= (this.o.batchStatements ?? 5000) || this.nothingQueued() || atFence) await this.commitTarget();
        if (atFence) await this.finish();
        return;
      }
      case "relation": {
        const r = await c.query(`SELECT attname FROM pg_attribute WHERE attrelid = to_regclass($1) AND attidentity = 'a'`, [tableOf(m)]);
        this.identity.set(tableOf(m), new Set(r.rows.map((x) => x.attname)));
        return;
      }
      default:
        return; // type, origin, message: nothing to apply
    }
  }

  private async flush(): Promise<void> {
    if (!this.sql.length) return;
    const batch = this.sql;
    this.sql = [];
    this.statements += batch.length;
    const res = await this.target!.query(batch.join(";\n"));
    for (const r of Array.isArray(res) ? res : [res]) {
      if ((r.command === "UPDATE" || r.command === "DELETE") && r.rowCount !== 1) this.conflicts++;
    }
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
  }
}

