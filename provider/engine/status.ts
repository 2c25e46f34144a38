/**
 * Status: what the DMS monitor shows — phase, per-table load progress, and during CDC the lag in
 * bytes and seconds and whether anything is pending. Read-only on both servers.
 */
import { Client } from "pg";
import { SubscriptionInfo } from "./cdc/subscription/subscription";
import { rewrittenPartitions } from "./copy/partitionTruncates";
import { cdcFor } from "./cdc/cdc";
import { connect, Endpoint } from "./core/endpoint";
import { lsnDiff } from "./core/lsn";
import { objectNames } from "./core/options";
import { slotInfo, SlotInfo, slotLostError } from "./copy/snapshot";
import { changesAfterFence } from "./cdc/decoders";
import { CutoverTimings, MigrationRecord, Phase, readMigration, readTableProgress, TableProgress } from "./state/state";
import { SchemaDifference, schemaDifferences } from "./catalog/drift";
import { newTablesState } from "./cdc/ddl/newTables";
import { tablesLeftOutByDdl } from "./cdc/ddl/capture";
import { readDdlRefusal } from "./cdc/ddl/refusal";
import { rollbackWindowStatus, RollbackWindowStatus } from "./rollback/rollback";
import { NotCarried } from "./catalog/catalog";
import { readNotCarried } from "./copy/schema";
import { largeObjectTotals } from "./copy/largeObjects";
import { listSourceChanges, SourceChange } from "./state/sourceChanges";


export interface MigrationStatus {
  name: string;
  /** "NotFound" when the target has no record of the migration. */
  phase: Phase | "NotFound";
  mode?: string;
  error?: string;
  tables: TableProgress[];
  rowsCopied: number;
  bytesCopied: number;
  /** Source WAL not yet confirmed by the consumer of our slot (bytes). */
  lagBytes?: number;
  /** Time since the last applied change was committed on the source, as the source's walsender measures it. */
  lagSeconds?: number;
  /** True when the consumer has confirmed everything written on the source so far. */
  caughtUp?: boolean;
  /**
   * Row changes waiting in the slot: 0 once caught up; counted by decoding the slot when nobody consumes it
   * (stream mode without an agent; up to PENDING_PEEK_LIMIT decoded messages); unknown while a consumer runs.
   */
  pendingChanges?: number;
  pendingByTable?: { table: string; changes: number }[];
  sourceLsn?: string;
  confirmedLsn?: string;
  /** Stream mode: the source position applied on the target (stored with the changes). */
  appliedLsn?: string;
  /**
   * Stream mode: the applier's last failure (kind divergence: an UPDATE/DELETE found no row or too many;
   * cutover refuses until a later commit clears it). Subscription mode with --ddl replicate: the DDL the target's
   * trigger refused, where the apply worker stops (code, the source's statement, the fix; no time: PostgreSQL keeps none).
   */
  applyError?: { kind: string; code?: string; message: string; at?: string };
  /** Stream mode: changes applied per table. */
  applied?: { table: string; inserts: number; updates: number; deletes: number; truncates: number }[];
  slot?: SlotInfo;
  /** The slot was invalidated (wal_status lost): what happened and the way back (cleanup, start again). */
  slotLost?: string;
  subscription?: SubscriptionInfo;
  consistentPoint?: string;
  fenceLsn?: string;
  /** Writes stopped → Completed, verification included. */
  downtimeMs?: number;
  /** Where the cutover's time went (freeze, drain, fence check, verify, end of replication, sequences, held-back objects). */
  cutoverTimings?: CutoverTimings;
  sourceFrozen?: boolean;
  /** Cutover has paused the slot's consumer (post-fence check, verification gate). */
  replicationPaused?: boolean;
  /**
   * DDL made on the source during the migration that the target lacks (or the reverse), per object; cutover
   * refuses while this is not empty. Computed when the source is given and the migration streams.
   */
  schemaDifferences?: SchemaDifference[];
  /**
   * Large objects: whether the migration carries them (not with --no-large-objects), and their count and
   * bytes on the target and, when the source is given, on the source.
   */
  largeObjects?: { carried: boolean; targetCount: number; targetBytes?: number; sourceCount?: number; sourceBytes?: number };
  /**
   * Leaf partitions truncated alone (or rewritten) on the source since the load: such a TRUNCATE is not replicated
   * (publish_via_partition_root), so the target may hold their old rows until the cutover copies them again.
   */
  truncatedPartitions?: string[];
  /**
   * --ddl replicate, subscription mode: tables created on the source while streaming that the subscription does not
   * list yet (their rows are not applied until the cutover's new-tables step refreshes it and PostgreSQL copies them),
   * or lists and is still synchronising (state: i, d, f, s).
   */
  newTablesAwaitingSync?: { table: string; state: string }[];
  /**
   * --ddl replicate: tables created on the source while streaming that start's selection leaves out (--exclude names them,
   * or they are partitions of a left-out table), left out like at start: not created on the target, not replicated, not compared.
   */
  newTablesLeftOut?: string[];
  /** What the target does not get from the source, with why and the fix (recorded by start). */
  notCarried?: NotCarried[];
  /** What pgferry changed on the source and undoes at cutover/cleanup (e.g. REPLICA IDENTITY FULL, with its warning). */
  sourceChanges?: SourceChange[];
  /** After a cutover with reverseReplication: the rollback window (state; while open, the reverse lag and applied position). */
  rollbackWindow?: RollbackWindowStatus;
  timestamps: Pick<MigrationRecord, "createdAt" | "loadStartedAt" | "loadFinishedAt" | "streamingSince" | "completedAt">;
}

/** Most slot messages decoded to count pending changes (beyond it the count is a lower bound). */
export const PENDING_PEEK_LIMIT = 200000;

/**
 * `countPending`: decode an unconsumed slot to count what waits in it (the default, for one-shot reads).
 * A monitor polling every few seconds passes false: decoding a large backlog on every poll would load
 * the source and keep taking the slot from an agent that is starting.
 */
export async function migrationStatus(source: Endpoint | undefined, target: Endpoint, name: string,
  { countPending = true }: { countPending?: boolean } = {}): Promise<MigrationStatus> {
  const tgt = await connect(target);
  let src: Client | undefined;
  try {
    const m = await readMigration(tgt, name);
    if (!m) return { name, phase: "NotFound", tables: [], rowsCopied: 0, bytesCopied: 0, timestamps: { createdAt: new Date(0) } };
    const tables = await readTableProgress(tgt, name);
    if (m.phase === "Loading") await addInFlight(tgt, tables);
    const st: MigrationStatus = {
      name, phase: m.phase, mode: m.mode, error: m.error, tables,
      rowsCopied: tables.reduce((a, t) => a + t.rows, 0), bytesCopied: tables.reduce((a, t) => a + t.bytes, 0),
      consistentPoint: m.consistentPoint, fenceLsn: m.fenceLsn, downtimeMs: m.downtimeMs, sourceFrozen: m.sourceFrozen,
      cutoverTimings: m.cutoverTimings, replicationPaused: m.replicationPaused,
      applyError: m.applyError ? { kind: m.applyError.kind, code: m.applyError.code, message: m.applyError.message, at: m.applyError.at } : undefined,
      timestamps: { createdAt: m.createdAt, loadStartedAt: m.loadStartedAt, loadFinishedAt: m.loadFinishedAt, streamingSince: m.streamingSince, completedAt: m.completedAt },
      notCarried: await readNotCarried(tgt, name),
      sourceChanges: await listSourceChanges(tgt, name),
    };
    const onTarget = await largeObjectTotals(tgt);
    st.largeObjects = { carried: m.options.largeObjects !== false, targetCount: onTarget.count, targetBytes: onTarget.bytes };
    if (source && m.phase !== "Completed" && m.phase !== "Aborted") {
      src = await connect(source);
      const onSource = await largeObjectTotals(src);
      st.largeObjects.sourceCount = onSource.count;
      st.largeObjects.sourceBytes = onSource.bytes;
    }
    if (m.rollbackWindow) {
      // The old server (the source) holds the reverse applied position; status without --source shows the slot's view only.
      if (source) src ??= await connect(source);
      st.rollbackWindow = await rollbackWindowStatus(tgt, src, m);
    }
    if (m.phase === "Completed" || m.phase === "Aborted") return st;
    const names = objectNames(name);
    // What the mode's consumer has applied (stream: position and per-table counts; subscription: the subscription).
    Object.assign(st, await cdcFor(m.mode).lag(tgt, name));
    if (m.options.ddl === "replicate" && !st.applyError) {
      // Subscription mode: a DDL the target's trigger refused is recorded in a sequence (../cdc/ddl/refusal.ts), not in the record.
      if (source) src ??= await connect(source);
      const refusal = await readDdlRefusal(tgt, src, name);
      if (refusal) st.applyError = { kind: "error", code: refusal.code, message: refusal.message };
    }
    if (source) {
      src ??= await connect(source);
      st.sourceLsn = (await src.query(`SELECT pg_current_wal_lsn()::text AS l`)).rows[0].l;
      st.slot = await slotInfo(src, names.slot);
      if (st.slot?.walStatus === "lost") st.slotLost = slotLostError(name, names.slot).message;
      if (st.slot?.confirmedFlushLsn && st.sourceLsn) {
        st.confirmedLsn = st.slot.confirmedFlushLsn;
        // Stream mode confirms only what it applied, and the WAL end when idle: the later of the two is the position.
        const done = st.appliedLsn && lsnDiff(st.appliedLsn, st.confirmedLsn) > 0 ? st.appliedLsn : st.confirmedLsn;
        st.lagBytes = lsnDiff(st.sourceLsn, done);
        st.caughtUp = st.lagBytes === 0;
        if (st.caughtUp) st.pendingChanges = 0;
        else if (countPending && !st.slot.active && m.phase === "ReadyToCutover") {
          // Nobody consumes the slot (stream mode without an agent, a disabled subscription): count what waits
          // in it exactly, by decoding without consuming — bounded, since a large backlog is slow to decode.
          const pending = await changesAfterFence(src, tgt, name, names.slot, names.publication, done,
            PENDING_PEEK_LIMIT).catch(() => undefined); // the slot may be taken by an agent meanwhile: leave unknown
          if (pending) {
            st.pendingChanges = pending.reduce((a, t) => a + t.changes, 0);
            st.pendingByTable = pending;
          }
        }
      }
      const r = await src.query(`SELECT extract(epoch FROM coalesce(replay_lag, write_lag, '0'))::float8 AS lag
        FROM pg_stat_replication WHERE application_name = $1`, [names.subscription]);
      if (r.rowCount) st.lagSeconds = r.rows[0].lag;
      if (["ReadyToCutover", "CuttingOver", "VerifyFailed"].includes(m.phase)) st.schemaDifferences = await schemaDifferences(src, tgt, name);
      if (["ReadyToCutover", "CuttingOver", "VerifyFailed"].includes(m.phase)) st.truncatedPartitions = await rewrittenPartitions(src, tgt, name);
      if (m.options.ddl === "replicate") {
        const leftOut = await tablesLeftOutByDdl(src, name);
        if (leftOut.length) st.newTablesLeftOut = leftOut;
      }
      if (m.mode === "subscription" && m.options.ddl === "replicate") {
        // Read-only: status does not refresh the subscription (the cutover does, while streaming); it names what waits.
        const nt = await newTablesState(src, tgt, names.publication, names.subscription);
        st.newTablesAwaitingSync = [...nt.unlisted.map((table) => ({ table, state: "not in the subscription" })), ...nt.syncing];
      }
    }
    return st;
  } finally {
    await tgt.end().catch(() => undefined);
    await src?.end().catch(() => undefined);
  }
}

/**
 * table_progress holds what finished COPYs copied; the COPYs still running are in the target's
 * pg_stat_progress_copy (PostgreSQL 14+; older targets show progress per finished COPY only). Its
 * bytes_processed counts the same COPY data bytes as the load's own counter.
 */
async function addInFlight(tgt: Client, tables: TableProgress[]): Promise<void> {
  const r = await tgt.query(`SELECT n.nspname AS schema, c.relname AS name, sum(p.tuples_processed)::float8 AS rows,
      sum(p.bytes_processed)::float8 AS bytes
    FROM pg_stat_progress_copy p JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE p.datname = current_database() AND p.command = 'COPY FROM' GROUP BY 1, 2`).catch((e) => {
    if (e.code === "42P01") return { rows: [] as { schema: string; name: string; rows: number; bytes: number }[] };   // no such view before 14
    throw e;
  });
  for (const x of r.rows) {
    const t = tables.find((t) => t.schema === x.schema && t.table === x.name && t.status !== "copied");
    if (t) { t.rows += x.rows; t.bytes += x.bytes; t.status = "copying"; }
  }
}
