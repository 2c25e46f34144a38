/**
 * `Migration`: an online PostgreSQL migration as a Pulumi resource. `pulumi up` starts it and returns
 * once changes stream (status ReadyToCutover); setting `cutover: true` and running `pulumi up` again cuts
 * over (Completed); `pulumi refresh` reports live status; `pulumi destroy` removes slots, publications
 * and subscriptions, never target data.
 */
import * as pulumi from "@pulumi/pulumi";
import { handlerProvider } from "./handlerProvider";

export interface MigrationArgs {
  /** Source libpq URI. Pass a secret (pulumi.secret or `pulumi config set --secret`). */
  source: pulumi.Input<string>;
  /** Target libpq URI (secret). */
  target: pulumi.Input<string>;
  /** Migration name (a-z, 0-9, _): names the slot, publication and subscription. Default "main". */
  name?: pulumi.Input<string>;
  /** Change data capture mode. */
  mode?: pulumi.Input<"subscription" | "stream">;
  /**
   * Stream mode's logical decoding plugin: "pgoutput" (default; needs a publication on the source) or
   * "wal2json" (for sources where no publication can be created; the plugin must be installed there).
   */
  plugin?: pulumi.Input<"pgoutput" | "wal2json">;
  /** Parallel COPY workers and index builders (default 4). */
  jobs?: pulumi.Input<number>;
  schemas?: pulumi.Input<pulumi.Input<string>[]>;
  include?: pulumi.Input<pulumi.Input<string>[]>;
  exclude?: pulumi.Input<pulumi.Input<string>[]>;
  /** Set REPLICA IDENTITY FULL on source tables without a key instead of refusing them. */
  replicaIdentityFull?: pulumi.Input<boolean>;
  /**
   * Unlogged tables, whose changes logical replication cannot see: "copy" (default) copies them again at
   * cutover while writes are stopped; "skip" loads them once and leaves them out of the cutover gate.
   */
  unlogged?: pulumi.Input<"copy" | "skip">;
  /**
   * Large objects (default true): copied in the load's snapshot and, where changed during CDC, again at cutover
   * while writes are stopped. false: left out, listed in notCarried (the CLI's --no-large-objects).
   */
  largeObjects?: pulumi.Input<boolean>;
  /** At cutover, make the source read-only for every role and end its other sessions. */
  freezeWrites?: pulumi.Input<boolean>;
  /** false: start and stream. true: cut over (false → true is the cutover; true → false is refused). */
  cutover?: pulumi.Input<boolean>;
  /** Seconds the cutover waits for the target to apply up to the fence (default 300). */
  cutoverTimeoutSec?: pulumi.Input<number>;
  /** The gate before Completed: "counts" (row counts per table, default) or "hashes" (counts and content hashes). */
  verify?: pulumi.Input<"counts" | "hashes">;
  /** Seconds sessions get to finish at the freeze (without freezeWrites: for writes to stop) before cutover acts; default 5. */
  cutoverGraceSec?: pulumi.Input<number>;
  /** On "no pg_hba.conf entry for replication connection", add the `<name>_replrule` rule on the source and retry. */
  autoReplicationRule?: pulumi.Input<boolean>;
  /** How the target reaches the source ("host" or "host:port") when that differs from the source URI's host. */
  sourceHostForTarget?: pulumi.Input<string>;
  /**
   * At cutover, open a rollback window: changes on the target (the new server) are replicated back to the
   * source, so the application can return to it without losing writes. Run `pgferry agent --reverse` to apply
   * them continuously, `pgferry rollback` to move back. Must be set when cutover happens (cannot be added after).
   */
  reverseReplication?: pulumi.Input<boolean>;
  /** With reverseReplication: true (default) keeps the window open; setting it to false ends the window (`pgferry finish`). */
  rollbackWindow?: pulumi.Input<boolean>;
}

export const migrationProvider = handlerProvider("pgferry/dist/provider/resources/migrationHandlers");

export class Migration extends pulumi.dynamic.Resource {
  /** One line: phase and the figure that matters in it. */
  declare public readonly status: pulumi.Output<string>;
  /** SchemaSync | Loading | IndexBuild | ReadyToCutover | CuttingOver | VerifyFailed | Completed | Failed */
  declare public readonly phase: pulumi.Output<string>;
  declare public readonly lagBytes: pulumi.Output<number | null>;
  declare public readonly lagSeconds: pulumi.Output<number | null>;
  declare public readonly pendingChanges: pulumi.Output<number | null>;
  /** True once the target has confirmed everything written on the source. */
  declare public readonly caughtUp: pulumi.Output<boolean | null>;
  declare public readonly confirmedLsn: pulumi.Output<string | null>;
  /** Stream mode: changes applied per table; null with a native subscription (it does not count them). */
  declare public readonly appliedChanges: pulumi.Output<{ table: string; inserts: number; updates: number; deletes: number; truncates: number }[] | null>;
  declare public readonly rowsCopied: pulumi.Output<number>;
  declare public readonly bytesCopied: pulumi.Output<number>;
  declare public readonly tables: pulumi.Output<{ table: string; status: string; rows: number; bytes: number; estimatedRows: number }[]>;
  declare public readonly downtimeMs: pulumi.Output<number | null>;
  /** Where the downtime went (ms): freezeMs, drainMs, fenceCheckMs, unloggedCopyMs, largeObjectsMs, verifyMs, endReplicationMs, sequencesMs, heldBackMs. */
  declare public readonly cutoverTimings: pulumi.Output<Record<string, number> | null>;
  /** DDL made on the source that the target lacks; cutover refuses while not empty. */
  declare public readonly schemaDifferences: pulumi.Output<string[]>;
  /** What the target does not get from the source (large objects, objects depending on excluded tables…), each with the reason and the fix. */
  declare public readonly notCarried: pulumi.Output<{ kind: string; object: string; reason: string; fix: string }[]>;
  declare public readonly fenceLsn: pulumi.Output<string | null>;
  declare public readonly migrationName: pulumi.Output<string>;
  /** The rollback window in one line: open (with how far the old server is behind), rolledBack, closed; null without one. */
  declare public readonly rollbackWindowStatus: pulumi.Output<string | null>;

  constructor(name: string, args: MigrationArgs, opts?: pulumi.CustomResourceOptions) {
    super(migrationProvider, name, {
      ...args,
      status: undefined, phase: undefined, lagBytes: undefined, lagSeconds: undefined, pendingChanges: undefined, rowsCopied: undefined,
      caughtUp: undefined, confirmedLsn: undefined, appliedChanges: undefined,
      bytesCopied: undefined, tables: undefined, downtimeMs: undefined, cutoverTimings: undefined, schemaDifferences: undefined, notCarried: undefined, fenceLsn: undefined, migrationName: undefined, error: undefined,
      rollbackWindowStatus: undefined,
    }, {
      ...opts,
      // Connection strings stay secret in state even when the program passed plain strings.
      additionalSecretOutputs: ["source", "target"],
      // Slot, publication and subscription names are unique: the old one must go before the new one is made.
      deleteBeforeReplace: true,
    }, "pgferry", "Migration");
  }
}
