/**
 * Change data capture behind one interface: what start, cutover, abort and status ask of a CDC mode.
 * Two implementations, one file each: `subscription` (the target's own apply worker consumes the slot,
 * ./subscription/cdc.ts) and `stream` (pgferry's applier, run by `pgferry agent` or inline, ./stream/cdc.ts).
 * A new mode is one more file and one more entry in `cdcFor`; the output plugin (pgoutput, wal2json) is
 * the decoders' concern, not the mode's.
 *
 * The slot, the publication and the migration's record are shared by every mode and stay with their
 * owners (copy/snapshot.ts, state/); a mode says only how the slot is consumed.
 */
import { Client } from "pg";
import { Endpoint } from "../core/endpoint";
import { PgferryError } from "../core/errors";
import type { Finding } from "../core/errors";
import type { CdcMode, OutputPlugin } from "../core/options";
import type { TableInfo } from "../catalog/catalog";
import type { SubscriptionInfo } from "./subscription/subscription";
import { streamCdc } from "./stream/cdc";
import { subscriptionCdc } from "./subscription/cdc";

/** Sessions and endpoints a mode works with: `src` on the source, `tgt` on the target (pgferry's control connection). */
export interface CdcContext {
  src: Client;
  tgt: Client;
  source: Endpoint;
  target: Endpoint;
  /** The migration's name (its slot, publication and subscription are objectNames(name)). */
  name: string;
}

export interface DrainOptions {
  timeoutSec: number;
  /** The target is frozen by pgferry (the reverse migration of a rollback window): pgferry's applier writes through the freeze. */
  writeThroughFreeze?: boolean;
  stallTimeoutSec?: number;
}

/** The mode-specific half of the lag: what the consumer has applied (status adds the slot's view). */
export interface CdcLag {
  /** Stream mode: the source position applied on the target (stored with the changes). */
  appliedLsn?: string;
  /** Stream mode: changes applied per table. */
  applied?: { table: string; inserts: number; updates: number; deletes: number; truncates: number }[];
  /** Subscription mode: the subscription and its apply worker. */
  subscription?: SubscriptionInfo;
}

/** Adds a preflight finding (an error unless `severity` says otherwise). */
export type AddFinding = (f: Omit<Finding, "severity"> & { severity?: Finding["severity"] }) => void;

/**
 * What a mode needs of the servers and options, asked by the option checks and preflight (which never
 * branch on the mode): a new mode states its own here.
 */
export interface CdcRequirements {
  /** The output plugins the mode decodes with; another is refused by migrationOptions with `pluginRefusal`. */
  readonly plugins: readonly OutputPlugin[];
  /** Why another plugin is refused (the reason in the error). */
  readonly pluginRefusal?: string;
  /** Why the target role must be allowed to SET session_replication_role (the finding says it); undefined: it need not. */
  readonly replicaRole?: string;
  /** Preflight: what the mode needs of the replicated tables (`fullIdentity`: those replicated with REPLICA IDENTITY FULL). */
  checkTables?(x: { src: Client; tables: TableInfo[]; fullIdentity: TableInfo[]; add: AddFinding }): Promise<void>;
  /** Preflight: what the mode needs of the target role and settings (`superuser`: the target role is one). */
  checkTarget?(x: { tgt: Client; target: Endpoint; targetVersion: number; superuser: boolean; add: AddFinding }): Promise<void>;
}

export interface Cdc {
  readonly mode: CdcMode;
  /** What the options and preflight check for this mode. */
  readonly requirements: CdcRequirements;
  /** What start says when CDC begins (the phase event's message). */
  readonly startMessage: string;
  /**
   * Before the slot and the load: what must exist when the slot is created (subscription mode: the subscription,
   * disabled, which also proves the target reaches the source before anything expensive happens).
   */
  create(c: CdcContext, o: { sourceHostForTarget?: string }): Promise<void>;
  /** After post-data: begin consuming the slot (subscription: enable it; stream: apply what the load left, up to now). */
  start(c: CdcContext): Promise<void>;
  /** The slot still has its consumer: the subscription exists (subscription mode) or the slot does (stream mode). */
  replicating(c: CdcContext): Promise<boolean>;
  /** Stop the slot's consumer and wait until the slot is inactive (the caller records the intent first). */
  pause(c: CdcContext): Promise<void>;
  /** Let the consumer go on (the caller records that it is no longer paused). */
  resume(c: CdcContext): Promise<void>;
  /** Wait until the target has applied everything up to `fence` (an LSN); fail naming why it does not. */
  drain(c: CdcContext, fence: string, o: DrainOptions): Promise<void>;
  /** What the consumer has applied, for status. */
  lag(tgt: Client, name: string): Promise<CdcLag>;
  /** End the consumer for good (the slot and publication are dropped after it by the caller). */
  end(c: CdcContext): Promise<void>;
  /** How long dropping the slot after `end` waits for its consumer to let go before ending it. */
  readonly slotDropWaitMs: number;
}

export function cdcFor(mode: string): Cdc {
  if (mode === "subscription") return subscriptionCdc;
  if (mode === "stream") return streamCdc;
  throw new PgferryError("bad_mode", `unknown CDC mode "${mode}"; pgferry knows subscription and stream`);
}
