/**
 * One decoder per logical decoding output plugin (as pgcopydb has one per plugin): everything that
 * differs between plugins lives behind this interface, so the stream applier, slot creation, the
 * cutover's after-fence check and status never branch on the plugin. A new plugin is one file
 * implementing `Decoder`, registered in ./index.ts (`decoderFor`).
 */
import type { Client } from "pg";
import type { TableSelection } from "../../catalog/catalog";
import type { Endpoint } from "../../core/endpoint";
import type { OutputPlugin } from "../../core/options";
import type { Change } from "./change";
import type { TableInfo } from "../../catalog/catalog";
import type { AddFinding } from "../cdc";

/** How a migration streams: the plugin, the tables, and what preflight found the plugin supports. */
export interface StreamSetup { plugin: OutputPlugin; selection: TableSelection; numericAsString: boolean }

/** Whether the source can load the plugin; `numericAsString`: wal2json 2.6+'s option (false for other plugins). */
export interface DecoderProbe { available: boolean; numericAsString: boolean; error?: string }

/** Changes per table that committed at or after a fence and were not applied (empty: the fence held). */
export type FenceChanges = { table: string; changes: number }[];

/** One stream session's decoding state (pgoutput: the relations announced so far). */
export interface DecoderSession {
  /** The replication connection's `options` (GUCs the plugin's output depends on). */
  readonly connectionOptions: string;
  /** The START_REPLICATION command for the slot from `lsn` ("X/Y"), with the plugin's options. */
  startReplication(slot: string, lsn: string): string;
  /**
   * One XLogData payload → pgferry changes, in stream order. Raises only PgferryError (malformed or
   * unexpected input included). Async: a decoder may consult the source (wal2json's ambiguous nulls).
   */
  decode(bytes: Buffer): Promise<Change[]>;
  /**
   * The same, synchronously, for a decoder that never consults the source (pgoutput): the applier then handles a
   * message without a promise per message (a measured share of the drain's CPU). Absent: decode() is used.
   */
  decodeSync?(bytes: Buffer): Change[];
  close(): Promise<void>;
}

export interface Decoder {
  readonly plugin: OutputPlugin;
  /** The plugin reads a publication (created before the slot); otherwise it filters by its own options. */
  readonly needsPublication: boolean;
  /**
   * Why DDL captured by `--ddl replicate` cannot be carried by this plugin (it reaches the target as rows of a
   * published log table, and new tables join the stream); absent: it can.
   */
  readonly ddlRefusal?: string;
  /** The replication command creating the slot with an exported snapshot (the pre-15 syntax PG 13/14 accept). */
  createSlotCommand(slot: string): string;
  /** Is the plugin usable on this source (loadable, allowed), and with which capabilities? */
  probe(src: Client): Promise<DecoderProbe>;
  /**
   * Preflight, on a source that can replicate (wal_level logical, a replication role): can this source decode with the
   * plugin, and can what it writes be read back for `tables`? Adds findings with their fix; returns the probe.
   * Absent: nothing to check (pgoutput is built into every server).
   */
  checkSource?(x: { src: Client; sourceVersion: number; maxSlots: number; tables: TableInfo[]; add: AddFinding }): Promise<DecoderProbe | undefined>;
  /** A decoding session for a migration's stream; `publication` is its name (for plugins that need one). */
  open(source: Endpoint, setup: StreamSetup, publication: string): Promise<DecoderSession>;
  /**
   * The changes committed after `fence` still in the slot, peeked (not consumed): the cutover's
   * after-fence check and status' pending count. `uptoChanges` bounds how many slot rows are read.
   * A commit message's LSN is the END of its commit record (logical decoding's write_location for a
   * commit is the transaction's end_lsn), so a commit is after the fence only when that LSN is greater
   * than the fence: one whose record ends exactly at it (the last WAL record when the fence was read)
   * lies wholly before it, and the drain (applied end LSN ≥ fence) applied it.
   */
  changesAfterFence(src: Client, tgt: Client, setup: StreamSetup, slot: string, publication: string, fence: string,
    uptoChanges?: number): Promise<FenceChanges>;
}

