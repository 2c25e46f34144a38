/**
 * pgferry's own change type: what every decoder (one per output plugin) turns the slot's bytes into,
 * and the only thing the stream applier (../stream/stream.ts) reads. It follows pgoutput's logical
 * replication messages (begin / relation / insert / update / delete / truncate / commit), since
 * that protocol is the richest of the plugins; a decoder for another plugin fills in what its
 * plugin leaves out (wal2json: relation messages from the source catalog).
 *
 * Values are always the column's text output, exactly as the source printed it (never parsed into
 * JS numbers or dates: lossless). `null` is SQL NULL; `undefined` is "not sent" — an unchanged
 * TOAST value, which the applier leaves as it is (never writes NULL for it).
 */

export type ReplicaIdentity = "default" | "nothing" | "full" | "index";

export interface RelationColumn {
  name: string;
  /** 1 = part of the replica identity (key) */
  flags: number;
  typeOid: number;
  typeMod: number;
}

/** Column name → text value; null = SQL NULL, undefined = unchanged TOAST value (leave as is). */
export type RowValues = Record<string, string | null | undefined>;

/**
 * Rows are objects whose prototype has no properties at all, so a column called __proto__ (or constructor, or
 * toString) is an ordinary own property. Made this way rather than with Object.create(null): V8 keeps
 * null-prototype objects in dictionary mode, which made building and reading every decoded row ~10× slower
 * (measured in the stream applier's drain profile).
 */
const ROW_PROTO: object = Object.freeze(Object.create(null));
export function newRowValues(): RowValues {
  return Object.create(ROW_PROTO) as RowValues;
}

export interface ChangeBegin {
  tag: "begin";
  /** Where the transaction's commit record starts (null when the plugin does not say). */
  commitLsn: string | null;
  /** Microseconds since the Unix epoch. */
  commitTime: bigint;
  xid: number;
}

export interface ChangeCommit {
  tag: "commit";
  flags: number;
  commitLsn: string | null;
  /** The end of the commit record: what the applier stores as applied and acknowledges. */
  commitEndLsn: string | null;
  commitTime: bigint;
}

export interface ChangeRelation {
  tag: "relation";
  relationOid: number;
  /** Where the rows are applied (a partition root when published through it). */
  schema: string;
  name: string;
  replicaIdentity: ReplicaIdentity;
  columns: RelationColumn[];
  /** The replica identity's columns; every column under REPLICA IDENTITY FULL. */
  keyColumns: string[];
}

export interface ChangeInsert { tag: "insert"; relation: ChangeRelation; new: RowValues }

export interface ChangeUpdate {
  tag: "update";
  relation: ChangeRelation;
  /** The old key (replica identity DEFAULT/INDEX, only when it changed); null otherwise. */
  key: RowValues | null;
  /** The whole old row (REPLICA IDENTITY FULL); null otherwise. */
  old: RowValues | null;
  new: RowValues;
}

export interface ChangeDelete { tag: "delete"; relation: ChangeRelation; key: RowValues | null; old: RowValues | null }

export interface ChangeTruncate { tag: "truncate"; relations: ChangeRelation[]; cascade: boolean; restartIdentity: boolean }

/** A row change: what becomes INSERT / UPDATE / DELETE on the target. */
export type RowChange = ChangeInsert | ChangeUpdate | ChangeDelete;

export type Change = ChangeBegin | ChangeCommit | ChangeRelation | RowChange | ChangeTruncate;
