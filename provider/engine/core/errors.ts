/**
 * Errors the engine raises on purpose. Every one names the problem and its fix, and never carries a
 * password or connection string (messages go to logs, CLI output and Pulumi state).
 */
export interface Finding {
  /** Stable machine-readable code, e.g. "wal_level", "no_replica_identity". */
  code: string;
  severity: "error" | "warning";
  /** Which server the finding is about. */
  server: "source" | "target" | "local";
  message: string;
  fix: string;
  /** Objects involved (qualified table names, settings…), for --json consumers. */
  objects?: string[];
}

/**
 * Every code a PgferryError may carry, with its one-line meaning and, where one fix fits every case, that fix
 * (a message's own "fix: …" wins: it names the objects). `new PgferryError(code, …)` compiles only with a code listed
 * here; scripts match on these codes (`--json` prints `{code, message, fix}`), so a code is never renamed.
 */
export const ERROR_CODES = {
  bad_uri: { meaning: "--source/--target (or PGFERRY_SOURCE/TARGET) is not a usable libpq URI, or its sslrootcert file is missing" },
  bad_name: { meaning: "--name is not 1-40 characters of a-z, 0-9, _ or ends in the reserved _rev", fix: "choose a name of 1-40 characters of a-z, 0-9 and _, not ending in _rev" },
  bad_mode: { meaning: "--mode is not one of the CDC modes", fix: "give --mode subscription or --mode stream" },
  bad_plugin: { meaning: "--plugin is not an output plugin, or wal2json without --mode stream", fix: "give --plugin pgoutput, or --plugin wal2json with --mode stream" },
  bad_unlogged: { meaning: "--unlogged is not copy or skip", fix: "give --unlogged copy or --unlogged skip" },
  bad_jobs: { meaning: "--jobs is not a whole number from 1 to 64", fix: "give --jobs a whole number from 1 to 64" },
  bad_host: { meaning: "--source-host-for-target is not a host name or address (optionally :port)", fix: "give --source-host-for-target as host or host:port" },
  bad_timeout: { meaning: "--snapshot-timeout or --stall-timeout is out of range", fix: "give a number of seconds in the range the message names" },
  bad_verify: { meaning: "--verify is not counts or hashes", fix: "give --verify counts or --verify hashes" },
  bad_distribution: { meaning: "--distribute/--reference/--colocate (Pulumi: distribution) is malformed or inconsistent", fix: "give --distribute schema.table=column, --reference schema.table, --colocate schema.table=schema.other (docs/citus.md)" },
  bad_ddl: { meaning: "--ddl is not detect or replicate, or replicate with --plugin wal2json", fix: "give --ddl detect, or --ddl replicate with --plugin pgoutput" },
  bad_rule: { meaning: "a FirewallRule's inputs do not make a valid pg_hba.conf line" },
  unknown_parameter: { meaning: "ServerParameters names a setting the server does not have" },
  unknown_relation: { meaning: "an --include/--exclude name matches no relation of the source's schemas" },
  preflight: { meaning: "preflight found problems; nothing was changed (each finding names its fix)", fix: "fix each finding as it says, then run the command again" },
  connect_failed: { meaning: "a connection to the source or target failed" },
  unreachable: { meaning: "the source or target cannot be reached (host, port, network)" },
  auth_failed: { meaning: "the server refused the role's password" },
  no_database: { meaning: "the database named in the URI does not exist" },
  tls: { meaning: "TLS negotiation failed or the server's certificate was not accepted" },
  pg_hba: { meaning: "the source's pg_hba.conf refuses the (target's) replication connection" },
  hba_privilege: { meaning: "pg_hba.conf cannot be read by this role" },
  hba_write: { meaning: "pg_hba.conf cannot be written by this role" },
  alter_system: { meaning: "a server parameter could not be set with ALTER SYSTEM" },
  no_pg_dump: { meaning: "pg_dump/pg_restore are not installed or too old" },
  pg_dump_failed: { meaning: "pg_dump of the source failed" },
  pg_restore_failed: { meaning: "pg_restore could not read the schema dump" },
  schema_apply_failed: { meaning: "creating a schema object on the target failed" },
  post_data_failed: { meaning: "building indexes, keys or triggers after the load failed (the load and slot are kept; re-run start)", fix: "fix the cause, then run pgferry start again: it continues after the load" },
  reload_after_post_data: { meaning: "the tables must be reloaded but post-data objects already exist on the target" },
  load_failed: { meaning: "the consistent load failed (the slot is released; re-run start)", fix: "fix the cause, then run pgferry start again: it reloads" },
  snapshot_timeout: { meaning: "transactions open on the source kept the consistent snapshot from being reached within --snapshot-timeout" },
  stalled: { meaning: "a link (source or target) stopped answering within --stall-timeout", fix: "check the named link, then run the command again (it resumes)" },
  disk_full: { meaning: "the target's disk is full" },
  roles_failed: { meaning: "start --roles could not create the roles on the target (nothing of them was created)" },
  large_object_copy_failed: { meaning: "copying large objects failed" },
  mode_mismatch: { meaning: "the migration was started in another CDC mode" },
  state_corrupt: { meaning: "the control schema's record holds a value this pgferry does not know", fix: "use the pgferry release that wrote it, or run pgferry cleanup and start again" },
  illegal_phase: { meaning: "an internal write named no known phase", fix: "report it as a bug" },
  illegal_phase_transition: { meaning: "the phase asked for may not follow the migration's current phase", fix: "run pgferry status, and the command its phase calls for" },
  decode_failed: { meaning: "a change from the slot could not be decoded (malformed or unexpected plugin output)", fix: "report it with the plugin and server version; nothing past the change was applied" },
  pg_internals: { meaning: "the installed pg driver lacks the connection events the replication stream reads", fix: "reinstall pgferry's pinned dependencies (npm ci)" },
  replication_protocol: { meaning: "the walsender sent a message the replication protocol does not allow here", fix: "report it with the server version; re-run to resume from the stored position" },
  sequence_missing: { meaning: "a migrated sequence does not exist on the target when the cutover sets sequences", fix: "create it on the target, then run pgferry cutover again" },
  not_found: { meaning: "no migration of that --name on the target", fix: "check --name and --target" },
  busy: { meaning: "another pgferry process is working on this migration", fix: "wait for it or stop it, then run the command again" },
  slot_missing: { meaning: "the migration's replication slot is gone from the source (changes since are lost)", fix: "run pgferry cleanup, empty the target, and start again" },
  slot_lost: { meaning: "the source invalidated the slot (max_slot_wal_keep_size); changes since are lost", fix: "run pgferry cleanup, drop the migrated tables on the target, and start again" },
  slot_busy: { meaning: "the slot is still held by another consumer" },
  subscription_failed: { meaning: "the target could not create its subscription" },
  subscription_privilege: { meaning: "the target role may not CREATE SUBSCRIPTION" },
  subscription_idle: { meaning: "the subscription's apply worker did not start on the target" },
  target_cannot_reach_source: { meaning: "the target could not connect to the source for replication", fix: "give --source-host-for-target as the target reaches the source, or use --mode stream" },
  replica_role: { meaning: "stream mode needs session_replication_role = replica on the target" },
  not_stream: { meaning: "the agent was run for a migration not in stream mode" },
  apply_failed: { meaning: "applying changes on the target keeps failing" },
  divergence: { meaning: "an UPDATE or DELETE did not find exactly its row on the target" },
  column_missing: { meaning: "the source sent a column the target table does not have (DDL not replicated)" },
  no_replica_identity: { meaning: "the source sent an UPDATE/DELETE of a table without a key" },
  wal2json_no_lsn: { meaning: "wal2json sent a commit without its LSN" },
  wal2json_unknown_table: { meaning: "wal2json sent a change for a table pgferry does not migrate" },
  wal2json_ambiguous_key: { meaning: "wal2json wrote null in a row's key (NaN/Infinity before wal2json 2.6)" },
  wal2json_ambiguous_value: { meaning: "wal2json wrote null for a value that could be NaN/Infinity and the row cannot be read back" },
  ddl_multi_statement: { meaning: "--ddl replicate: a captured DDL came in a query string of several statements; the stream stopped before it", fix: "run pgferry cleanup and start again; send DDL as its own statement" },
  ddl_not_top_level: { meaning: "--ddl replicate: DDL ran inside a function, DO block or procedure; the stream stopped before it", fix: "run pgferry cleanup and start again; run DDL as top-level statements" },
  ddl_unsupported: { meaning: "--ddl replicate: a DDL command replication cannot carry (CREATE TABLE AS, SELECT INTO); the stream stopped before it", fix: "run pgferry cleanup and start again" },
  new_table_sync_timeout: { meaning: "--ddl replicate, subscription mode: a table created while streaming was not listed or synchronised by the subscription within --timeout (cutover's new-tables step)", fix: "let the subscription catch up (status shows it), then cutover again, with a larger --timeout" },
  ddl_volatile_default: { meaning: "--ddl replicate: ADD COLUMN with a default that is not immutable (or identity) that the source could not backfill (a table without a key, a unique index on the new column, a table outside the publication, a failed backfill); the stream stopped before it", fix: "run pgferry cleanup and start again; give such a table a primary key first, add a unique constraint in a statement of its own, or add the column without a default, then SET DEFAULT and UPDATE" },
  ddl_selection: { meaning: "--ddl replicate: a DDL moved a table across start's --include/--exclude (a migrated table renamed to a name --exclude names, a left-out one renamed to a name the selection takes, a new partition --exclude names of a migrated table, or one statement on both left-out and migrated tables); the stream stopped before it", fix: "run pgferry cleanup and start again (the selection is judged anew); keep such renames and partitions for after the cutover" },
  ddl_failed: { meaning: "--ddl replicate: the target refused a captured DDL statement (or its message was malformed); the stream stopped before it", fix: "make the statement succeed on the target (the message names it), then run the agent again" },
  ddl_owner: { meaning: "--ddl replicate: a replayed statement made an object whose source owner or grantee the target lacks, or whose owner the target's role may not give it to (the migration keeps ownership and grants); the stream stopped before it", fix: "create the role on the target (or GRANT it to the target's role); replication retries the statement by itself" },
  not_ready: { meaning: "cutover needs phase ReadyToCutover", fix: "run pgferry start until it streams" },
  schema_drift: { meaning: "the source's schema changed and the target does not match", fix: "apply the printed DDL on the target, then run cutover again" },
  writes_active: { meaning: "the source is still being written to (cutover without --freeze-writes)", fix: "stop the application (or the named sessions), or use --freeze-writes" },
  freeze_failed: { meaning: "the source could not be made read-only", fix: "run as the database owner with CREATEROLE or a superuser, or reset the named roles' setting" },
  drain_timeout: { meaning: "the target had not applied up to the fence within --timeout", fix: "fix the consumer the message names, or give a larger --timeout; then cutover again" },
  writes_after_fence: { meaning: "writes kept arriving on the source after the fence", fix: "stop the named writer, then cutover again" },
  verify_failed: { meaning: "the cutover's verification gate found differences", fix: "repair the target and run cutover again, or cutover --abort" },
  sequence_read_failed: { meaning: "the source's sequences cannot be read" },
  unfreeze_failed: { meaning: "the source could not be made writable again" },
  restore_failed: { meaning: "what pgferry changed on the source could not be restored" },
  cleanup_incomplete: { meaning: "cleanup could not remove everything (an unreachable server)", fix: "run pgferry cleanup again when both servers answer" },
  not_cutting_over: { meaning: "there is no cutover to abort" },
  already_completed: { meaning: "the migration is Completed: the cutover cannot be aborted" },
  past_point_of_no_return: { meaning: "replication has ended: the cutover can only go forward" },
  rollback_window_unavailable: { meaning: "a rollback window needs a logical replication slot on the target", fix: "set wal_level = logical, free a slot and grant REPLICATION on the target, or cut over without --reverse-replication" },
  rollback_window_failed: { meaning: "the rollback window could not be opened after replication ended", fix: "fix the cause and run cutover --reverse-replication again, or cutover without it" },
  rollback_window_too_late: { meaning: "a rollback window can only be opened by the cutover itself" },
  rollback_window_closed: { meaning: "the rollback window was closed (pgferry finish)" },
  no_rollback_window: { meaning: "the migration has no rollback window" },
  rollback_in_progress: { meaning: "a rollback started and did not finish" },
  finish_incomplete: { meaning: "finish could not remove everything (an unreachable server)", fix: "run pgferry finish again when both servers answer" },
  database_conflict: { meaning: "--database/--all-databases (Pulumi: databases, allDatabases) contradict each other, a database named in --source/--target, or a flag that serves one database only", fix: "give the servers' URIs without a database (or with /postgres), and either --database NAME (repeatable) or --all-databases" },
  database_not_found: { meaning: "a database given with --database does not exist on the source, or may not be connected to (a template, datallowconn off, no CONNECT)" },
  target_database_missing: { meaning: "a database to migrate does not exist on the target server (pgferry does not create databases)" },
  no_databases: { meaning: "--all-databases found no database to migrate (on the source, or recorded by start on the target)" },
  databases_mismatch: { meaning: "the databases given are not those the several-database migration was started with" },
  test_failpoint: { meaning: "a failure injected by a test (PGFERRY_TEST_FAIL_AT)" },
  internal: { meaning: "an unexpected error (not raised on purpose by pgferry)" },
} as const satisfies Record<string, { meaning: string; fix?: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export class PgferryError extends Error {
  constructor(
    public readonly code: ErrorCode,
    message: string,
    public readonly findings: Finding[] = [],
  ) {
    super(message);
    this.name = "PgferryError";
  }

  /** What to do: the message's own "fix: …" (it names the objects), else the code's general fix; undefined when neither. */
  get fix(): string | undefined {
    return fixOf(this.message) ?? (ERROR_CODES[this.code] as { fix?: string }).fix;
  }
}

/** The "fix: …" part of a message ("…; fix: X", "… Fix: X", "— fix: X"), to its end. */
export function fixOf(message: string): string | undefined {
  const m = /(?:^|[\s;.,(—-])fix:\s*([\s\S]+)$/i.exec(message);
  return m ? m[1].trim() : undefined;
}

/** One line per finding, errors first: what the CLI prints on refusal. */
export function formatFindings(findings: Finding[]): string {
  const order = (f: Finding) => (f.severity === "error" ? 0 : 1);
  return [...findings]
    .sort((a, b) => order(a) - order(b))
    .map((f) => `  ${f.severity === "error" ? "✗" : "!"} [${f.server}] ${f.message}\n      fix: ${f.fix}`)
    .join("\n");
}

/**
 * Test-only fault injection: throws when the environment variable PGFERRY_TEST_FAIL_AT names this point
 * (preflight, pre-data, load, post-data, cdc-setup, foreign-keys, foreign-key-added). Used by test/start.resume.test.ts and
 * test/cutover.downtime.test.ts where no real cause
 * can fail that phase on demand; unset in normal use, when this does nothing.
 */
export function testFailpoint(point: string): void {
  if (process.env.PGFERRY_TEST_FAIL_AT === point) {
    throw new PgferryError("test_failpoint", `injected failure at ${point} (PGFERRY_TEST_FAIL_AT=${point}, a test setting)`);
  }
}
