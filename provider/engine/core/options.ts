/** Migration options shared by the CLI, the Pulumi resources and the tests; their defaults and choices come from the spec (optionSpec.ts). */
import { TableSelection } from "../catalog/catalog";
import { checkDistribution, Distribution, hasDistribution, NO_DISTRIBUTION } from "../copy/distribution";
import { DEFAULT_STALL_TIMEOUT_SEC } from "./endpoint";
import { PgferryError } from "./errors";
// The modes' requirements (cdc.ts imports this module back, for types only and inside functions: the cycle is load-safe).
import { cdcFor } from "../cdc/cdc";
import { decoderFor } from "../cdc/decoders";
import { CLI_ONLY, MIGRATION_INPUTS as SPEC } from "./optionSpec";

/** subscription: the target's own apply worker consumes the slot. stream: pgferry reads and applies it. */
export type CdcMode = (typeof SPEC.mode.choices)[number];
export const CDC_MODES: CdcMode[] = [...SPEC.mode.choices];

/**
 * Logical decoding output plugin of stream mode: pgoutput (needs a publication) or wal2json, the
 * fallback for sources where no publication can be created (provider/engine/cdc/decoders/wal2json.ts).
 */
export type OutputPlugin = (typeof SPEC.plugin.choices)[number];
export const OUTPUT_PLUGINS: OutputPlugin[] = [...SPEC.plugin.choices];

/**
 * Unlogged tables: logical replication cannot see their changes. copy (default): loaded with the rest and
 * copied again at cutover, while the source is frozen; skip: loaded once, then ignored by the cutover
 * gate and verify (with a warning naming them).
 */
export type UnloggedHandling = (typeof SPEC.unlogged.choices)[number];
export const UNLOGGED_HANDLING: UnloggedHandling[] = [...SPEC.unlogged.choices];

/** DDL on the source while streaming: detect (cutover refuses while schemas differ) or replicate (stream mode, pgoutput). */
export type DdlHandling = (typeof SPEC.ddl.choices)[number];
export const DDL_HANDLING: DdlHandling[] = [...SPEC.ddl.choices];

export interface MigrationOptions {
  /** Identifies the migration; slot, publication and subscription names derive from it. */
  name: string;
  mode: CdcMode;
  /** Stream mode's output plugin (subscription mode always uses pgoutput). */
  plugin: OutputPlugin;
  /** Parallel COPY workers and index builders. */
  jobs: number;
  selection: TableSelection;
  replicaIdentityFull: boolean;
  /** DDL on the source while streaming: detected (cutover refuses) or replicated by the stream applier (cdc/ddl). */
  ddl: DdlHandling;
  unlogged: UnloggedHandling;
  /**
   * Large objects (default true): copied in the load's snapshot and again, where changed, at cutover while the
   * source is frozen. false (--no-large-objects): left out and listed as not carried.
   */
  largeObjects: boolean;
  /** --roles: create the roles the migrated objects need on the target, then keep ownership and grants (copy/roles.ts). */
  roles?: boolean;
  /**
   * How the target reaches the source for the subscription ("host" or "host:port"), when that differs
   * from how pgferry reaches it (other network, private endpoint). Default: the source URI's host.
   */
  sourceHostForTarget?: string;
  /**
   * Seconds start waits for the consistent snapshot (older transactions open on the source must end
   * first) before it refuses, naming them; 0 = no limit. Default DEFAULT_SNAPSHOT_TIMEOUT_SEC.
   */
  snapshotTimeoutSec?: number;
  /**
   * Seconds a load COPY may go without a byte from the source or one taken by the target before that link
   * counts as stalled and start fails naming it (--stall-timeout). Default DEFAULT_STALL_TIMEOUT_SEC.
   */
  stallTimeoutSec?: number;
  /**
   * Hyperscale (Citus) target: tables distributed (by a column), reference tables, co-located pairs (copy/distribution.ts).
   * Recorded in the migration's options: the stream applier moves a row whose distribution column changes (DELETE + INSERT).
   */
  distribution: Distribution;
}

export const DEFAULT_SNAPSHOT_TIMEOUT_SEC: number = CLI_ONLY.snapshotTimeout.default;

export const DEFAULT_NAME: string = SPEC.name.default;

/**
 * The CDC mode when none is given: stream when distributed or reference tables (a Citus target) are named, else the spec's
 * default. Also what the Pulumi outputs show for an unset mode (the mode the engine actually runs).
 */
export function defaultMode(distribution: Distribution | undefined): CdcMode {
  // Distributed or reference tables (a Citus target) default to stream mode: a subscription writes into the coordinator's
  // local copy of such a table, which Citus never reads (docs/citus.md), so it is refused there.
  return hasDistribution(checkDistribution(distribution ?? NO_DISTRIBUTION)) ? "stream" : SPEC.mode.default;
}

export function migrationOptions(o: Partial<MigrationOptions> & { schemas?: string[]; include?: string[]; exclude?: string[] }): MigrationOptions {
  const name = o.name ?? DEFAULT_NAME;
  if (!/^[a-z0-9_]{1,40}$/.test(name)) {
    throw new PgferryError("bad_name", `--name "${name}" must be 1-40 characters of a-z, 0-9 and _ (it names the replication slot)`);
  }
  if (name.endsWith("_rev")) {
    // <name>_rev is the reverse migration of a rollback window (rollback.ts): a forward one may not take it.
    throw new PgferryError("bad_name", `--name "${name}": names ending in _rev are reserved for rollback windows; choose another name`);
  }
  const mode = o.mode ?? defaultMode(o.distribution);
  if (!CDC_MODES.includes(mode)) throw new PgferryError("bad_mode", `--mode must be one of ${CDC_MODES.join(", ")}`);
  const plugin = o.plugin ?? SPEC.plugin.default;
  if (!OUTPUT_PLUGINS.includes(plugin)) throw new PgferryError("bad_plugin", `--plugin must be one of ${OUTPUT_PLUGINS.join(", ")}`);
  // Which plugins a mode decodes with is the mode's own statement (cdc/cdc.ts CdcRequirements).
  const { requirements } = cdcFor(mode);
  if (!requirements.plugins.includes(plugin)) {
    const modes = CDC_MODES.filter((m) => cdcFor(m).requirements.plugins.includes(plugin));
    throw new PgferryError("bad_plugin", `--plugin ${plugin} needs --mode ${modes.join(" or ")} (${requirements.pluginRefusal ?? `${mode} mode does not decode with it`})`);
  }
  const ddl = o.ddl ?? SPEC.ddl.default;
  if (!DDL_HANDLING.includes(ddl)) throw new PgferryError("bad_ddl", `--ddl must be one of ${DDL_HANDLING.join(", ")}`);
  // Whether a plugin carries captured DDL is the decoder's own statement (cdc/decoders ddlRefusal).
  const ddlRefusal = ddl === "replicate" ? decoderFor(plugin).ddlRefusal : undefined;
  if (ddlRefusal) {
    const carriers = OUTPUT_PLUGINS.filter((p) => !decoderFor(p).ddlRefusal);
    throw new PgferryError("bad_ddl", `--ddl replicate needs --plugin ${carriers.join(" or ")} (given --plugin ${plugin}: ${ddlRefusal}); ` +
      `fix: use --plugin ${carriers.join(" or ")}, or keep --ddl detect, with which cutover refuses while the schemas differ`);
  }
  const unlogged = o.unlogged ?? SPEC.unlogged.default;
  if (!UNLOGGED_HANDLING.includes(unlogged)) throw new PgferryError("bad_unlogged", `--unlogged must be one of ${UNLOGGED_HANDLING.join(", ")}`);
  const jobs: number = o.jobs ?? SPEC.jobs.default;
  if (!Number.isInteger(jobs) || jobs < 1 || jobs > 64) throw new PgferryError("bad_jobs", "--jobs must be a whole number from 1 to 64");
  if (o.sourceHostForTarget !== undefined && !/^(\[[0-9a-fA-F:.]+\]|[^\s:/]+|[0-9a-fA-F:]+)(:\d{1,5})?$/.test(o.sourceHostForTarget)) {
    throw new PgferryError("bad_host", `--source-host-for-target "${o.sourceHostForTarget}" must be a host name or address, optionally with :port`);
  }
  const snapshotTimeoutSec = o.snapshotTimeoutSec ?? DEFAULT_SNAPSHOT_TIMEOUT_SEC;
  if (!Number.isFinite(snapshotTimeoutSec) || snapshotTimeoutSec < 0) {
    throw new PgferryError("bad_timeout", "--snapshot-timeout must be a number of seconds, 0 (no limit) or more");
  }
  const stallTimeoutSec = o.stallTimeoutSec ?? DEFAULT_STALL_TIMEOUT_SEC;
  if (!Number.isInteger(stallTimeoutSec) || stallTimeoutSec < 1) {
    throw new PgferryError("bad_timeout", "--stall-timeout must be a whole number of seconds, 1 or more");
  }
  return {
    snapshotTimeoutSec, stallTimeoutSec, name, mode, plugin, jobs, replicaIdentityFull: !!o.replicaIdentityFull, ddl, unlogged, largeObjects: o.largeObjects ?? SPEC.largeObjects.default, roles: o.roles ?? SPEC.roles.default, sourceHostForTarget: o.sourceHostForTarget,
    distribution: checkDistribution(o.distribution ?? NO_DISTRIBUTION),
    selection: o.selection ?? { schemas: o.schemas ?? [], include: o.include ?? [], exclude: o.exclude ?? [] },
  };
}

/** Replication object names on the servers: deterministic, so a re-run finds what a killed run made. */
export function objectNames(name: string): { slot: string; publication: string; subscription: string } {
  const base = `pgferry_${name}`;
  return { slot: base, publication: base, subscription: base };
}
