/**
 * The one declared spec of pgferry's options and outputs. Everything else is generated from it:
 * - the `pgferry` command's options (provider/cli/main.ts builds its commander definitions from COMMANDS),
 * - the Pulumi `Migration` resource's args, handler inputs, defaults and outputs (provider/resources/migration*.ts),
 * - the root stack's config keys `pgferry:<input>` (program/stack.ts),
 * - the engine's defaults (core/options.ts migrationOptions),
 * - docs/cli.md, from the program's own `--help` (`npm run docs`; test/spec.test.ts fails when it is stale).
 *
 * Flag names, aliases, defaults and `--no-x` forms are contracts that scripts rely on: change them only on purpose.
 * This module is data and types only (no commander, no Pulumi), so the engine stays free of both.
 */

/** How a setting's value is read: on the command line (parser) and in Pulumi (type). */
export type ValueKind =
  | "string"
  /** A whole number ≥ 1 (--jobs, --timeout, --stall-timeout, --scale). */
  | "positiveInt"
  /** Seconds, 0 or more, fractions allowed (--grace, --snapshot-timeout). */
  | "seconds"
  /** Seconds ≥ 0.2 between status reads (--interval). */
  | "interval"
  /** A TCP port, 0 picks a free one (--serve). */
  | "port"
  | "boolean"
  /** Repeatable flag collected into a list (--schema, --include, --exclude). */
  | "list"
  /** Pulumi's `distribution` object (Hyperscale (Citus) target); the CLI gives it as --distribute/--reference/--colocate. */
  | "distribution";

export interface CliFlag {
  /** commander flags, exactly as users type them ("--jobs <n>", "--no-large-objects"). */
  flags: string;
  /** Help text, unless a command gives its own. */
  help: string;
}

export interface SettingSpec {
  kind: ValueKind;
  /** Allowed values (the CLI shows them as choices; the engine and Pulumi's check refuse others). */
  choices?: readonly string[];
  /** Default when not given, wherever the setting is read. */
  default?: string | number | boolean | readonly string[];
  /** On the command line; absent for Pulumi-only settings. */
  cli?: CliFlag;
  /** Pulumi Migration input: its doc comment (one paragraph). Absent for CLI-only settings. */
  pulumi?: {
    doc: string;
    /** A change means another migration (new slot, new target data): replace, never update. */
    replaces?: boolean;
    /** Required input (source, target): a secret URI. */
    required?: boolean;
    /** The root stack passes the default explicitly when the config key is unset (false: leaves it unset). */
    stackDefault?: boolean;
  };
}

const setting = <const S extends SettingSpec>(s: S): S => s;

/**
 * Hyperscale (Citus) target: tables "schema.table" (unqualified: public) to distribute by a column, reference tables,
 * and co-located pairs. Checked by copy/distribution.ts (parseDistributionInput); docs/citus.md.
 */
export interface DistributionInput {
  distribute?: Record<string, string>;
  reference?: string[];
  colocate?: Record<string, string>;
}

/**
 * Every Pulumi `Migration` input, in the order the resource lists them (replacing ones first). Config key in the
 * root stack: `pgferry:<input>`. Where one has a CLI flag, it is the same setting: same choices, same default.
 * Each property's doc comment repeats its `pulumi.doc` so that editors show it on MigrationArgs (a mapped type keeps
 * the comments of the properties it maps); `pulumi.doc` is what docs/pulumi.md prints.
 */
export const MIGRATION_INPUTS = {
  /** Source libpq URI. Pass a secret (pulumi.secret or `pulumi config set --secret`). */
  source: setting({ kind: "string", cli: { flags: "--source <uri>", help: "source libpq URI (or PGFERRY_SOURCE)" },
    pulumi: { doc: "Source libpq URI. Pass a secret (pulumi.secret or `pulumi config set --secret`).", replaces: true, required: true } }),
  /** Target libpq URI (secret). */
  target: setting({ kind: "string", cli: { flags: "--target <uri>", help: "target libpq URI (or PGFERRY_TARGET)" },
    pulumi: { doc: "Target libpq URI (secret).", replaces: true, required: true } }),
  /** Migration name (a-z, 0-9, _): names the slot, publication and subscription. Default "main". */
  name: setting({ kind: "string", default: "main",
    cli: { flags: "--name <name>", help: "migration name: names the slot, publication and subscription" },
    pulumi: { doc: "Migration name (a-z, 0-9, _): names the slot, publication and subscription. Default \"main\".", replaces: true } }),
  /** Change data capture mode: "subscription" (default; the target applies) or "stream" (pgferry applies; the default when `distribution` names tables). */
  mode: setting({ kind: "string", choices: ["subscription", "stream"], default: "subscription",
    cli: { flags: "--mode <mode>", help: "change data capture: subscription (the target applies) or stream (pgferry applies); default subscription, stream when --distribute/--reference name tables" },
    pulumi: { doc: "Change data capture mode: \"subscription\" (default; the target applies) or \"stream\" (pgferry applies; the default when `distribution` names tables).", replaces: true } }),
  /**
   * Stream mode's logical decoding plugin: "pgoutput" (default; needs a publication on the source) or
   * "wal2json" (for sources where no publication can be created; the plugin must be installed there).
   */
  plugin: setting({ kind: "string", choices: ["pgoutput", "wal2json"], default: "pgoutput",
    cli: { flags: "--plugin <plugin>", help: "stream mode's output plugin: pgoutput (needs a publication) or wal2json (for sources without publications)" },
    pulumi: { doc: "Stream mode's logical decoding plugin: \"pgoutput\" (default; needs a publication on the source) or \"wal2json\" " +
      "(for sources where no publication can be created; the plugin must be installed there).", replaces: true, stackDefault: false } }),
  /** Schemas to migrate (default: all user schemas). */
  schemas: setting({ kind: "list", default: [],
    cli: { flags: "--schema <schema>", help: "migrate this schema (repeatable; default: all user schemas)" },
    pulumi: { doc: "Schemas to migrate (default: all user schemas).", replaces: true } }),
  /** Only these tables, schema.table. */
  include: setting({ kind: "list", default: [],
    cli: { flags: "--include <table>", help: "only these tables, schema.table (repeatable)" },
    pulumi: { doc: "Only these tables, schema.table.", replaces: true } }),
  /** Never these tables, schema.table (what depends on them is skipped and listed in notCarried). */
  exclude: setting({ kind: "list", default: [],
    cli: { flags: "--exclude <table>", help: "never these tables, schema.table (repeatable)" },
    pulumi: { doc: "Never these tables, schema.table (what depends on them is skipped and listed in notCarried).", replaces: true } }),
  /**
   * Hyperscale (Citus) target: `{ distribute: {"schema.table": "column"}, reference: ["schema.table"], colocate: {"schema.table":
   * "schema.other"} }`. After the schema and before the load, reference tables are created first, then distributed tables
   * (colocate_with the named table). Needs mode "stream" (docs/citus.md). The CLI's --distribute, --reference, --colocate.
   */
  distribution: setting({ kind: "distribution",
    pulumi: { doc: "Hyperscale (Citus) target: `{ distribute: {\"schema.table\": \"column\"}, reference: [\"schema.table\"], colocate: {\"schema.table\": " +
      "\"schema.other\"} }`. After the schema and before the load, reference tables are created first, then distributed tables " +
      "(colocate_with the named table). Needs mode \"stream\" (docs/citus.md). The CLI's --distribute, --reference, --colocate.", replaces: true, stackDefault: false } }),
  /**
   * Several databases of the source server in one migration (docs/databases.md): each its own slot, publication, load and
   * CDC, one cutover for all. The source and target URIs then name the servers (their database, if any, must be postgres or
   * one of these). The CLI's repeatable --database.
   */
  databases: setting({ kind: "list", default: [],
    cli: { flags: "--database <name>", help: "migrate this database of the source server (repeatable; several make one migration with one cutover; docs/databases.md)" },
    pulumi: { doc: "Several databases of the source server in one migration (docs/databases.md): each its own slot, publication, load and " +
      "CDC, one cutover for all. The source and target URIs then name the servers (their database, if any, must be postgres or " +
      "one of these). The CLI's repeatable --database.", replaces: true } }),
  /**
   * Every database of the source server the role may connect to, except the templates, postgres and those without tables (docs/databases.md);
   * after start, the databases the migration was started with. The CLI's --all-databases.
   */
  allDatabases: setting({ kind: "boolean", default: false,
    cli: { flags: "--all-databases", help: "every connectable database of the source server except template0, template1, postgres and those without tables " +
      "(after start: the databases the migration was started with)" },
    pulumi: { doc: "Every database of the source server the role may connect to, except the templates, postgres and those without tables (docs/databases.md); " +
      "after start, the databases the migration was started with. The CLI's --all-databases.", replaces: true } }),
  /**
   * DDL on the source while streaming: "detect" (default; cutover refuses while the schemas differ) or "replicate" (an
   * event trigger on the source captures it and the target runs it at its place, in either mode; needs plugin pgoutput
   * and a superuser on the source; docs/ddl.md).
   */
  ddl: setting({ kind: "string", choices: ["detect", "replicate"], default: "detect",
    cli: { flags: "--ddl <how>", help: "DDL on the source while streaming: detect (cutover refuses while schemas differ) or replicate (applied on the target in order; docs/ddl.md)" },
    pulumi: { doc: "DDL on the source while streaming: \"detect\" (default; cutover refuses while the schemas differ) or \"replicate\" (an " +
      "event trigger on the source captures it and the target runs it at its place, in either mode; needs plugin pgoutput " +
      "and a superuser on the source; docs/ddl.md).", replaces: true, stackDefault: false } }),
  /** Set REPLICA IDENTITY FULL on source tables without a key instead of refusing them. */
  replicaIdentityFull: setting({ kind: "boolean", default: false,
    cli: { flags: "--replica-identity-full", help: "set REPLICA IDENTITY FULL on source tables without a key instead of refusing" },
    pulumi: { doc: "Set REPLICA IDENTITY FULL on source tables without a key instead of refusing them.", replaces: true } }),
  /** How the target reaches the source ("host" or "host:port") when that differs from the source URI's host. */
  sourceHostForTarget: setting({ kind: "string",
    cli: { flags: "--source-host-for-target <host[:port]>", help: "how the target server reaches the source, when not as pgferry does" },
    pulumi: { doc: "How the target reaches the source (\"host\" or \"host:port\") when that differs from the source URI's host.", replaces: true } }),
  /** Parallel COPY workers and index builders, and at cutover parallel verification (default 4). */
  jobs: setting({ kind: "positiveInt", default: 4,
    cli: { flags: "--jobs <n>", help: "parallel COPY workers and index builders" },
    pulumi: { doc: "Parallel COPY workers and index builders, and at cutover parallel verification (default 4)." } }),
  /**
   * Unlogged tables, whose changes logical replication cannot see: "copy" (default) copies them again at
   * cutover while writes are stopped; "skip" loads them once and leaves them out of the cutover gate.
   */
  unlogged: setting({ kind: "string", choices: ["copy", "skip"], default: "copy",
    cli: { flags: "--unlogged <how>", help: "unlogged tables (logical replication cannot see their changes): copy them again at cutover " +
      "while the source is frozen, or skip them in the cutover gate and verify" },
    pulumi: { doc: "Unlogged tables, whose changes logical replication cannot see: \"copy\" (default) copies them again at cutover while " +
      "writes are stopped; \"skip\" loads them once and leaves them out of the cutover gate." } }),
  /**
   * Large objects (default true): copied in the load's snapshot and, where changed during CDC, again at cutover
   * while writes are stopped. false: left out, listed in notCarried (the CLI's --no-large-objects).
   */
  largeObjects: setting({ kind: "boolean", default: true,
    cli: { flags: "--no-large-objects", help: "leave large objects out (listed as not carried); default: copied in the load's snapshot and, " +
      "where changed, again at cutover" },
    pulumi: { doc: "Large objects (default true): copied in the load's snapshot and, where changed during CDC, again at cutover while " +
      "writes are stopped. false: left out, listed in notCarried (the CLI's --no-large-objects)." } }),
  /**
   * Create on the target, before the schema, the roles that own or hold privileges on the migrated objects (and their members
   * and groups) with attributes, memberships, settings and (superuser source) passwords, so ownership, grants, default
   * privileges and policies match the source. Existing target roles are never changed (a difference is a finding).
   */
  roles: setting({ kind: "boolean", default: false,
    cli: { flags: "--roles", help: "create the roles the migrated objects need on the target (attributes, memberships, settings, " +
      "passwords when readable) and keep ownership and grants; existing roles are not changed" },
    pulumi: { doc: "Create on the target, before the schema, the roles that own or hold privileges on the migrated objects (and their " +
      "members and groups) with attributes, memberships, settings and (superuser source) passwords, so ownership, grants, default " +
      "privileges and policies match the source. Existing target roles are never changed (a difference is a finding)." } }),
  /** At cutover, make the source read-only for every role and end its other sessions. */
  freezeWrites: setting({ kind: "boolean", default: false,
    cli: { flags: "--freeze-writes", help: "make the source read-only for every role and end other sessions (default: the application has stopped)" },
    pulumi: { doc: "At cutover, make the source read-only for every role and end its other sessions." } }),
  /** false: start and stream. true: cut over (false → true is the cutover; true → false is refused). */
  cutover: setting({ kind: "boolean", default: false,
    pulumi: { doc: "false: start and stream. true: cut over (false → true is the cutover; true → false is refused)." } }),
  /** Seconds the cutover waits for the target to apply up to the fence (default 300). */
  cutoverTimeoutSec: setting({ kind: "positiveInt", default: 300,
    cli: { flags: "--timeout <sec>", help: "seconds to wait for the target to apply up to the fence" },
    pulumi: { doc: "Seconds the cutover waits for the target to apply up to the fence (default 300)." } }),
  /** The gate before Completed: "counts" (row counts per table, default) or "hashes" (counts and content hashes). */
  verify: setting({ kind: "string", choices: ["counts", "hashes"], default: "counts",
    cli: { flags: "--verify <mode>", help: "gate before Completed: row counts, or counts and content hashes" },
    pulumi: { doc: "The gate before Completed: \"counts\" (row counts per table, default) or \"hashes\" (counts and content hashes)." } }),
  /** Seconds sessions get to finish at the freeze (without freezeWrites: for writes to stop) before cutover acts; default 5. */
  cutoverGraceSec: setting({ kind: "seconds", default: 5,
    cli: { flags: "--grace <sec>", help: "with --freeze-writes: seconds sessions get to finish their transaction before they are ended; " +
      "without: seconds to wait for writes to stop" },
    pulumi: { doc: "Seconds sessions get to finish at the freeze (without freezeWrites: for writes to stop) before cutover acts; default 5." } }),
  /** On "no pg_hba.conf entry for replication connection", add the `<name>_replrule` rule on the source and retry. */
  autoReplicationRule: setting({ kind: "boolean", default: false,
    pulumi: { doc: "On \"no pg_hba.conf entry for replication connection\", add the `<name>_replrule` rule on the source and retry." } }),
  /**
   * At cutover, open a rollback window: changes on the target (the new server) are replicated back to the
   * source, so the application can return to it without losing writes. Run `pgferry agent --reverse` to apply
   * them continuously, `pgferry rollback` to move back. Must be set when cutover happens (cannot be added after).
   */
  reverseReplication: setting({ kind: "boolean", default: false,
    cli: { flags: "--reverse-replication", help: "open a rollback window: the target's changes are replicated back to the source until pgferry finish" },
    pulumi: { doc: "At cutover, open a rollback window: changes on the target (the new server) are replicated back to the source, so the " +
      "application can return to it without losing writes. Run `pgferry agent --reverse` to apply them continuously, `pgferry rollback` " +
      "to move back. Must be set when cutover happens (cannot be added after)." } }),
  /** With reverseReplication: true (default) keeps the window open; setting it to false ends the window (`pgferry finish`). */
  rollbackWindow: setting({ kind: "boolean", default: true,
    pulumi: { doc: "With reverseReplication: true (default) keeps the window open; setting it to false ends the window (`pgferry finish`)." } }),
};

/** Settings of the command line only (no Pulumi input). */
export const CLI_ONLY = {
  snapshotTimeout: setting({ kind: "seconds", default: 600,
    cli: { flags: "--snapshot-timeout <sec>", help: "seconds to wait for transactions open on the source to end before the consistent snapshot " +
      "(0: no limit); past it, start refuses naming them" } }),
  stallTimeout: setting({ kind: "positiveInt", default: 30,
    cli: { flags: "--stall-timeout <sec>", help: "seconds without an answer from the source or target after which that link counts as stalled" } }),
  json: setting({ kind: "boolean", cli: { flags: "--json", help: "print JSON" } }),
  watch: setting({ kind: "boolean", cli: { flags: "--watch", help: "redraw every --interval seconds until interrupted (without a terminal: append snapshots)" } }),
  serve: setting({ kind: "port", cli: { flags: "--serve <port>",
    help: "serve a web monitor, /api/status and Prometheus /metrics on 127.0.0.1:PORT (0: any free port) until interrupted" } }),
  interval: setting({ kind: "interval", default: 2, cli: { flags: "--interval <sec>", help: "seconds between status reads with --watch or --serve" } }),
  abort: setting({ kind: "boolean", cli: { flags: "--abort", help: "give up a cutover that stopped (VerifyFailed, or killed): unfreeze the source and go back to streaming" } }),
  reverse: setting({ kind: "boolean", cli: { flags: "--reverse",
    help: "rollback window: apply the target's changes to the source (give --source/--target as for the migration)" } }),
  countsOnly: setting({ kind: "boolean", cli: { flags: "--counts-only", help: "row counts without content hashes" } }),
  distribute: setting({ kind: "list", default: [],
    cli: { flags: "--distribute <table=column>", help: "Hyperscale (Citus) target: distribute this table by this column (repeatable; docs/citus.md)" } }),
  reference: setting({ kind: "list", default: [],
    cli: { flags: "--reference <table>", help: "Hyperscale (Citus) target: make this table a reference table (repeatable)" } }),
  colocate: setting({ kind: "list", default: [],
    cli: { flags: "--colocate <table=table>", help: "Hyperscale (Citus) target: co-locate the first distributed table with the second (repeatable)" } }),
  until: setting({ kind: "string", choices: ["schema"],
    cli: { flags: "--until <step>", help: "stop after this step: schema (the schema is copied, no slot exists yet; a later start continues with the load)" } }),
  scale: setting({ kind: "positiveInt", default: 1, cli: { flags: "--scale <n>", help: "data size (1 ≈ 50k rows)" } }),
};

export const SETTINGS = { ...MIGRATION_INPUTS, ...CLI_ONLY };
export type SettingKey = keyof typeof SETTINGS;
export type MigrationInputKey = keyof typeof MIGRATION_INPUTS;

/** One option of one command: a setting, with this command's own help or default where they differ. */
export interface CommandOption {
  setting: SettingKey;
  help?: string;
  /** false: no default on this command (verify's --unlogged reads the started migration's). */
  default?: false;
}

export interface CommandSpec {
  name: string;
  description: string;
  /** In the order `--help` lists them. */
  options: CommandOption[];
}

const opt = (setting: SettingKey, help?: string, extra: Omit<CommandOption, "setting" | "help"> = {}): CommandOption => ({ setting, help, ...extra });
const endpointsAndName = [opt("source"), opt("target"), opt("name")];
/** Several databases in one migration (../databases.ts): on start, status, cutover, verify, cleanup and agent. */
const databaseFlags = [opt("databases"), opt("allDatabases")];

export const PROGRAM = {
  name: "pgferry",
  description: "Move a live PostgreSQL database to another PostgreSQL server with minimal downtime.",
};

/** Every command and its options, in the order `pgferry --help` lists them. */
export const COMMANDS: CommandSpec[] = [
  { name: "start", description: "preflight, copy the schema, load every table consistently, then stream changes (returns once ReadyToCutover)",
    options: [...endpointsAndName, ...databaseFlags, opt("mode"), opt("plugin"), opt("ddl"), opt("jobs"), opt("schemas"), opt("include"), opt("exclude"), opt("replicaIdentityFull"),
      opt("sourceHostForTarget"), opt("unlogged"), opt("snapshotTimeout"), opt("largeObjects"), opt("roles"),
      opt("distribute"), opt("reference"), opt("colocate"), opt("until"),
      opt("stallTimeout", "seconds a load COPY may go without data from the source or taken by the target after which " +
        "that link counts as stalled and start stops naming it (re-run start to reload)"),
      opt("json", "print one JSON document instead of progress")] },
  { name: "status", description: "phase, per-table progress, lag and pending changes; --watch to follow, --serve for a web monitor",
    options: [...endpointsAndName, ...databaseFlags, opt("json"), opt("watch"), opt("serve"), opt("interval")] },
  { name: "cutover", description: "stop writes, wait for the fence, verify, end replication, sync sequences, add foreign keys",
    options: [...endpointsAndName, ...databaseFlags, opt("freezeWrites"), opt("cutoverTimeoutSec"), opt("cutoverGraceSec"), opt("verify"), opt("abort"),
      opt("reverseReplication"), opt("jobs", "parallel verification and foreign key validation"),
      opt("stallTimeout", "seconds without an answer from the source or target after which that link counts as stalled " +
        "and the cutover stops naming it (resumable)"),
      opt("json")] },
  { name: "rollback", description: "rollback window: move the application back to the source — freeze the target, drain its changes to the source, " +
      "verify, sync sequences, unfreeze the source",
    options: [...endpointsAndName,
      opt("cutoverTimeoutSec", "seconds to wait for the source to apply the target's changes up to the fence"),
      opt("cutoverGraceSec", "seconds sessions on the target get to finish their transaction before they are ended"),
      opt("verify", "gate before the source is unfrozen: row counts, or counts and content hashes"),
      opt("abort", "give up a rollback that stopped (VerifyFailed, or killed): unfreeze the target and keep the window open"),
      opt("jobs", "parallel verification"), opt("json")] },
  { name: "finish", description: "end the rollback window: drop the reverse slot and publication on the target and pgferry's state on the source",
    options: [...endpointsAndName, opt("json")] },
  { name: "cleanup", description: "remove the migration's slot, publication, subscription and state (never target data)",
    options: [...endpointsAndName, ...databaseFlags, opt("json")] },
  { name: "agent", description: "stream mode: apply changes from the slot continuously (reconnects; SIGTERM stops after the current transaction)",
    options: [...endpointsAndName, ...databaseFlags, opt("json", "log JSON lines"), opt("reverse"),
      opt("stallTimeout", "seconds without an answer on the replication or target connection after which the agent " +
        "treats the link as stalled and reconnects")] },
  { name: "verify", description: "compare source and target: row counts, content hashes, sequences, constraints, triggers",
    options: [opt("source"), opt("target"), opt("schemas", "only this schema (repeatable)"),
      opt("include", "only these tables, schema.table (repeatable; as given to start)"),
      opt("exclude", "not these tables, schema.table (repeatable; as given to start: what depends on them is skipped too)"),
      opt("countsOnly"), opt("jobs", "tables checked in parallel"),
      opt("unlogged", "skip: do not compare unlogged tables (default: what migration --name was started with, else compare them)", { default: false }),
      opt("name"), ...databaseFlags, opt("json")] },
  { name: "demo", description: "two embedded servers (PostgreSQL 15 → 17), a DVD-rental database under live writes: start, stream, cut over, verify",
    options: [opt("scale"), opt("mode", "change data capture: subscription (the target applies) or stream (pgferry's agent applies)"),
      opt("json", "print the report as JSON")] },
];

/** The flag's long name without dashes or a `no-` prefix ("--no-large-objects" → "large-objects"). */
export function flagName(flags: string): string {
  return /--(?:no-)?([a-z0-9-]+)/.exec(flags)![1];
}

/** Defaults of the Pulumi inputs that have one (what the resource's outputs show for an unset input). */
export function inputDefaults(): Record<string, unknown> {
  return Object.fromEntries(Object.entries(MIGRATION_INPUTS as Record<string, SettingSpec>)
    .filter(([, s]) => s.default !== undefined).map(([k, s]) => [k, Array.isArray(s.default) ? [...s.default] : s.default]));
}

// ---- Types derived from the spec ----

type Spec = typeof MIGRATION_INPUTS;
/** The plain value of a setting: its choices as a union, else by kind. */
export type ValueOf<S> = S extends { choices: readonly (infer C)[] } ? C
  : S extends { kind: "list" } ? string[]
  : S extends { kind: "distribution" } ? DistributionInput
  : S extends { kind: "boolean" } ? boolean
  : S extends { kind: "positiveInt" | "seconds" | "interval" | "port" } ? number
  : string;
export type RequiredInputKey = { [K in keyof Spec]: Spec[K] extends { pulumi: { required: true } } ? K : never }[keyof Spec];
type AllInputValues = { -readonly [K in keyof Spec]: ValueOf<Spec[K]> };
/** The Migration inputs as plain values (what the dynamic provider's handlers receive). */
export type MigrationInputValues = Partial<Omit<AllInputValues, RequiredInputKey>> & Pick<AllInputValues, RequiredInputKey>;

// ---- Outputs of the Migration resource ----

export interface TableOutput { table: string; status: string; rows: number; bytes: number; estimatedRows: number }
export interface AppliedOutput { table: string; inserts: number; updates: number; deletes: number; truncates: number }
export interface NotCarriedOutput { kind: string; object: string; reason: string; fix: string }

/** An output's doc line, typed by its value (the type is carried, not stored). */
const output = <T>(doc: string) => ({ doc }) as { doc: string; readonly __value?: { v: T } };

/** Every output of the Migration resource besides its inputs (which it echoes, defaults filled in). */
export const MIGRATION_OUTPUTS = {
  /** The migration's name ("main" when unset). */
  migrationName: output<string>("The migration's name (\"main\" when unset)."),
  /** One line: phase and the figure that matters in it. */
  status: output<string>("One line: phase and the figure that matters in it."),
  /** SchemaSync | Loading | IndexBuild | ReadyToCutover | CuttingOver | VerifyFailed | Completed | Failed */
  phase: output<string>("SchemaSync | Loading | IndexBuild | ReadyToCutover | CuttingOver | VerifyFailed | Completed | Failed"),
  /** Bytes of WAL the target has not confirmed (null without a slot to measure). */
  lagBytes: output<number | null>("Bytes of WAL the target has not confirmed (null without a slot to measure)."),
  /** Seconds since the last change the target confirmed was written (null when not measured). */
  lagSeconds: output<number | null>("Seconds since the last change the target confirmed was written (null when not measured)."),
  /** Changes not yet applied, when known (0 once caught up; null while a consumer holds the slot). */
  pendingChanges: output<number | null>("Changes not yet applied, when known (0 once caught up; null while a consumer holds the slot)."),
  /** True once the target has confirmed everything written on the source. */
  caughtUp: output<boolean | null>("True once the target has confirmed everything written on the source."),
  /** The slot's confirmed position on the source. */
  confirmedLsn: output<string | null>("The slot's confirmed position on the source."),
  /** Stream mode: changes applied per table; null with a native subscription (it does not count them). */
  appliedChanges: output<AppliedOutput[] | null>("Stream mode: changes applied per table; null with a native subscription (it does not count them)."),
  /** Rows copied by the full load. */
  rowsCopied: output<number>("Rows copied by the full load."),
  /** Bytes copied by the full load. */
  bytesCopied: output<number>("Bytes copied by the full load."),
  /** Per table: `{table, status, rows, bytes, estimatedRows}`. */
  tables: output<TableOutput[]>("Per table: `{table, status, rows, bytes, estimatedRows}`."),
  /** Cutover downtime in ms (writes stopped → Completed), once cut over. */
  downtimeMs: output<number | null>("Cutover downtime in ms (writes stopped → Completed), once cut over."),
  /** Where the downtime went (ms): freezeMs, drainMs, fenceCheckMs, unloggedCopyMs, largeObjectsMs, verifyMs, endReplicationMs, sequencesMs, heldBackMs. */
  cutoverTimings: output<Record<string, number> | null>("Where the downtime went (ms): freezeMs, drainMs, fenceCheckMs, unloggedCopyMs, " +
    "largeObjectsMs, verifyMs, endReplicationMs, sequencesMs, heldBackMs."),
  /** DDL made on the source that the target lacks (one line each); cutover refuses while not empty. */
  schemaDifferences: output<string[]>("DDL made on the source that the target lacks (one line each); cutover refuses while not empty."),
  /** What the target does not get from the source (large objects, objects depending on excluded tables…): `{kind, object, reason, fix}`. */
  notCarried: output<NotCarriedOutput[]>("What the target does not get from the source (large objects, objects depending on excluded " +
    "tables…): `{kind, object, reason, fix}`."),
  /** The fence position of the cutover. */
  fenceLsn: output<string | null>("The fence position of the cutover."),
  /** The error that stopped the migration (Failed, VerifyFailed, a lost slot); null otherwise. */
  error: output<string | null>("The error that stopped the migration (Failed, VerifyFailed, a lost slot); null otherwise."),
  /** The rollback window in one line: open (with how far the old server is behind), rolledBack, closed; null without one. */
  rollbackWindowStatus: output<string | null>("The rollback window in one line: open (with how far the old server is behind), rolledBack, " +
    "closed; null without one."),
};

export type MigrationOutputValues = { [K in keyof typeof MIGRATION_OUTPUTS]: NonNullable<(typeof MIGRATION_OUTPUTS)[K]["__value"]>["v"] };
