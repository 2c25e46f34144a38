/**
 * Preflight: every reason a migration would fail or lose data, checked on both servers before
 * anything is created, reported all at once, each with its fix.
 */
import { Client } from "pg";
import {
  columnsWithoutEquality, copyableTables, listTables, publishedTables, serverVersionNum, TableInfo, TableSelection, tablesWithoutReplicaIdentity, userSchemas,
} from "./catalog";
import { connectReplication, Endpoint, qualified, quoteLiteral } from "./endpoint";
import { Finding, PgferryError } from "./errors";
import { findPgTools, rolesMissingOnTarget } from "./schema";
import { probeWal2json, readWal2jsonTables, unresolvableTables, wal2jsonInstallFix, Wal2jsonProbe } from "./wal2json";

export interface PreflightOptions {
  selection: TableSelection;
  /** Set REPLICA IDENTITY FULL on source tables that have no key, instead of refusing. */
  replicaIdentityFull: boolean;
  /** Resuming an existing migration: its own slot, publication and target tables are expected. */
  resuming: boolean;
  slotName: string;
  mode?: "subscription" | "stream";
  /** Stream mode's output plugin; wal2json needs no publication but must be installed on the source. */
  plugin?: "pgoutput" | "wal2json";
  /** Unlogged tables: copied again at cutover (default) or skipped by the gate and verify. */
  unlogged?: "copy" | "skip";
}

export interface PreflightResult {
  findings: Finding[];
  ok: boolean;
  sourceVersion: number;
  targetVersion: number;
  schemas: string[];
  tables: TableInfo[];
  /** Tables that need REPLICA IDENTITY FULL set on the source before publishing. */
  needReplicaIdentityFull: TableInfo[];
  /** Ownership and grants are kept only when every role they name exists on the target. */
  keepOwnership: boolean;
  pgDumpMajor?: number;
  /** With --plugin wal2json: whether the source loads it, and whether it can quote numbers (2.6+). */
  wal2json?: Wal2jsonProbe;
}

const major = (v: number) => Math.floor(v / 10000);
const names = (ts: { schema: string; name: string }[]) => ts.map((t) => `${t.schema}.${t.name}`);
const list = (xs: string[], n = 8) => (xs.length > n ? `${xs.slice(0, n).join(", ")} and ${xs.length - n} more` : xs.join(", "));

export async function preflight(src: Client, tgt: Client, source: Endpoint, target: Endpoint, o: PreflightOptions): Promise<PreflightResult> {
  const findings: Finding[] = [];
  const add = (f: Omit<Finding, "severity"> & { severity?: Finding["severity"] }) => findings.push({ severity: "error", ...f });
  const sourceVersion = await serverVersionNum(src);
  const targetVersion = await serverVersionNum(tgt);

  // --- versions
  if (major(sourceVersion) < 13) {
    add({ code: "source_version", server: "source", message: `source runs PostgreSQL ${major(sourceVersion)}; pgferry needs 13 or newer on the source`,
      fix: "upgrade the source to 13+ in place first, or use pg_dump/pg_restore with downtime" });
  }
  if (major(targetVersion) < major(sourceVersion)) {
    add({ code: "target_older", server: "target", message: `target runs PostgreSQL ${major(targetVersion)}, older than the source's ${major(sourceVersion)}`,
      fix: `use a target running PostgreSQL ${major(sourceVersion)} or newer (downgrades are not supported)` });
  }

  // --- source replication settings
  const s = (await src.query(`SELECT current_setting('wal_level') AS wal_level,
      (SELECT pending_restart FROM pg_settings WHERE name = 'wal_level') AS wal_level_pending,
      current_setting('max_replication_slots')::int AS max_slots,
      (SELECT count(*) FROM pg_replication_slots)::int AS used_slots,
      (SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1)::int AS own_slot,
      current_setting('max_wal_senders')::int AS max_senders,
      (SELECT count(*) FROM pg_stat_replication)::int AS used_senders,
      (SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user) AS can_replicate,
      (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
      has_database_privilege(current_database(), 'CREATE') AS can_create,
      current_setting('server_encoding') AS encoding,
      (SELECT count(*) FROM pg_largeobject_metadata)::bigint AS large_objects`, [o.slotName])).rows[0];
  if (s.wal_level !== "logical" && s.wal_level_pending) {
    add({ code: "restart_pending", server: "source", message: `wal_level was changed on the source but the server has not been restarted (still '${s.wal_level}')`,
      fix: "restart the source server (pg_ctl restart, systemctl restart postgresql, or the Azure restart), then run again" });
  } else if (s.wal_level !== "logical") {
    add({ code: "wal_level", server: "source", message: `wal_level is '${s.wal_level}' on the source; logical replication needs 'logical'`,
      fix: "ALTER SYSTEM SET wal_level = logical; then restart the source (Azure: server parameter wal_level=logical + restart; " +
        "pgferry's ServerParameters resource does both)" });
  }
  const freeSlots = s.max_slots - s.used_slots + (o.resuming ? s.own_slot : 0);
  if (freeSlots < 1) {
    add({ code: "replication_slots", server: "source", message: `no free replication slot on the source (max_replication_slots = ${s.max_slots}, ${s.used_slots} in use)`,
      fix: `ALTER SYSTEM SET max_replication_slots = ${s.max_slots + 2}; then restart the source` });
  }
  if (s.max_senders - s.used_senders < 2) {
    add({ code: "wal_senders", server: "source", message: `too few free WAL senders on the source (max_wal_senders = ${s.max_senders}, ${s.used_senders} in use; pgferry needs 2: snapshot and stream)`,
      fix: `ALTER SYSTEM SET max_wal_senders = ${s.used_senders + 4}; then restart the source` });
  }
  if (!s.can_replicate) {
    add({ code: "replication_privilege", server: "source", message: `role "${source.user}" may not use replication on the source`,
      fix: `ALTER ROLE "${source.user}" WITH REPLICATION; (Azure Flexible Server: GRANT azure_pg_admin and set the REPLICATION attribute)` });
  }
  const wal2json = o.plugin === "wal2json";
  if (!s.can_create && !s.superuser && !wal2json) {
    add({ code: "publication_privilege", server: "source", message: `role "${source.user}" cannot create a publication (needs CREATE on database "${source.database}")`,
      fix: `GRANT CREATE ON DATABASE "${source.database}" TO "${source.user}";` });
  }
  if (Number(s.large_objects) > 0) {
    add({ severity: "warning", code: "large_objects", server: "source", message: `${s.large_objects} large objects exist on the source; logical replication does not carry them and pgferry does not copy them`,
      fix: "copy them separately at cutover (pg_dump --large-objects --data-only), or move the data into bytea columns" });
  }

  // The replication connection is a separate pg_hba entry ("replication" database): try it now, so a
  // missing rule is reported before anything is created.
  if (s.can_replicate) {
    try {
      const rc = await connectReplication(source);
      await rc.end().catch(() => undefined);
    } catch (e) {
      const err = e as PgferryError;
      add({ code: err.code === "pg_hba" ? "pg_hba" : "replication_connection", server: "source",
        message: err.message.replace(/; fix: .*$/s, ""), fix: /; fix: (.*)$/s.exec(err.message)?.[1] ?? "check the source's pg_hba.conf for replication connections" });
    }
  }

  // --- tables
  const schemas = o.selection.schemas.length ? o.selection.schemas : await userSchemas(src);
  const tables = await listTables(src, { ...o.selection, schemas });
  const missingSchemas = o.selection.schemas.filter((x) => !schemas.includes(x) || !tables.some((t) => t.schema === x));
  if (o.selection.schemas.length) {
    const have = new Set((await userSchemas(src)));
    const absent = o.selection.schemas.filter((x) => !have.has(x));
    if (absent.length) add({ code: "no_schema", server: "source", message: `schema(s) ${list(absent)} do not exist on the source`, fix: "correct --schema" });
  }
  if (!copyableTables(tables).length) {
    add({ code: "no_tables", server: "source", message: `no tables selected on the source (schemas: ${list(schemas) || "none"})`,
      fix: "check --schema/--include/--exclude" });
  }
  void missingSchemas;
  const noKey = tablesWithoutReplicaIdentity(tables);
  const needReplicaIdentityFull = o.replicaIdentityFull ? noKey : [];
  if (noKey.length && !o.replicaIdentityFull) {
    add({ code: "no_replica_identity", server: "source", objects: names(noKey),
      message: `${noKey.length} table(s) have no primary key and no replica identity, so their UPDATEs and DELETEs cannot be replicated: ${list(names(noKey))}`,
      fix: "add a primary key, or pass --replica-identity-full (pgferry sets REPLICA IDENTITY FULL on them), or --exclude them" });
  }
  if (o.mode !== "stream") {
    // A subscription finds REPLICA IDENTITY FULL rows with each column's equality operator; a type without one
    // fails every UPDATE/DELETE of the table in the apply worker. (Stream mode compares such values exactly itself.)
    const full = tables.filter((t) => t.kind === "r" && !t.unlogged && (t.replicaIdentity === "f" || needReplicaIdentityFull.includes(t)));
    const noEq = await columnsWithoutEquality(src, full);
    if (noEq.length) {
      add({ code: "full_identity_no_equality", server: "source", objects: noEq,
        message: `${noEq.length} column(s) of tables replicated with REPLICA IDENTITY FULL have a type without an equality operator, so a ` +
          `subscription cannot find their rows for UPDATE/DELETE (its apply worker would fail): ${list(noEq)}`,
        fix: "give those tables a primary key, or a unique index on NOT NULL columns and ALTER TABLE … REPLICA IDENTITY USING INDEX …; " +
          "or use --mode stream (it matches such values exactly); or --exclude them" });
    }
  }
  const unlogged = tables.filter((t) => t.unlogged);
  const copyUnlogged = unlogged.length > 0 && o.unlogged !== "skip";
  if (unlogged.length) {
    add(o.unlogged === "skip"
      ? { severity: "warning", code: "unlogged", server: "source", objects: names(unlogged),
        message: `${unlogged.length} unlogged table(s) are loaded once and then not carried (--unlogged skip: logical replication cannot see their ` +
          `changes; the cutover gate and verify skip them): ${list(names(unlogged))}`,
        fix: "omit --unlogged skip to copy them again at cutover, or make them logged (ALTER TABLE … SET LOGGED) to stream them" }
      : { severity: "warning", code: "unlogged", server: "source", objects: names(unlogged),
        message: `${unlogged.length} unlogged table(s): logical replication cannot see their changes, so the cutover copies them again while ` +
          `the source is frozen (their copy time adds to the downtime): ${list(names(unlogged))}`,
        fix: "make them logged (ALTER TABLE … SET LOGGED) to stream them instead, or pass --unlogged skip to leave their content out, or --exclude them" });
  }
  const unreadable = (await src.query(`SELECT t FROM unnest($1::text[]) t WHERE NOT has_table_privilege(t::regclass, 'SELECT')`,
    [copyableTables(tables).map((t) => qualified(t.schema, t.name))])).rows.map((x) => x.t);
  if (unreadable.length) {
    add({ code: "select_privilege", server: "source", objects: unreadable, message: `role "${source.user}" cannot read ${list(unreadable)}`,
      fix: `GRANT SELECT ON ALL TABLES IN SCHEMA … TO "${source.user}";` });
  }
  if (!s.superuser && !wal2json) {
    const notOwned = (await src.query(`SELECT t FROM unnest($1::text[]) t
        WHERE NOT pg_has_role((SELECT relowner FROM pg_class WHERE oid = t::regclass), 'USAGE')`,
      [publishedTables(tables).map((t) => qualified(t.schema, t.name))])).rows.map((x) => x.t);
    if (notOwned.length) {
      add({ code: "publication_owner", server: "source", objects: notOwned,
        message: `a publication may only name tables the role owns; "${source.user}" does not own ${list(notOwned)}`,
        fix: `connect to the source as the tables' owner or a superuser, or GRANT the owner role to "${source.user}"` });
    }
  }

  // --- wal2json (stream mode without a publication): the plugin must load on the source. Only a
  // slot shows that (it is a shared library, not an extension), so a temporary one is made and dropped.
  let wal2jsonProbe: Wal2jsonProbe | undefined;
  if (wal2json && s.wal_level === "logical" && s.can_replicate) {
    try {
      wal2jsonProbe = await probeWal2json(src);
    } catch (e) {
      const err = e as { code?: string; message: string };
      add({ code: "wal2json_check", server: "source", message: `could not check the wal2json plugin on the source: ${err.message}`,
        fix: err.code === "57014" ? "creating a logical slot waits for running transactions: end long-running transactions on the source and run again"
          : err.code === "53400" ? `free a replication slot on the source (max_replication_slots = ${s.max_slots}) for the check, or raise max_replication_slots`
          : "check the source's log for the reason and run again" });
    }
    if (wal2jsonProbe && !wal2jsonProbe.available && /may not be used as an output plugin/.test(wal2jsonProbe.error ?? "")) {
      // Installed, but the server only lets the output plugins listed in output_plugin_libraries be used.
      const allowed = (await src.query(`SELECT current_setting('output_plugin_libraries', true) AS v`)).rows[0].v as string | null;
      // A list setting: each library quoted on its own ('a, b' would be one name).
      const list = [...(allowed ?? "").split(",").map((x) => x.trim().replace(/^"|"$/g, "")).filter(Boolean), "wal2json"].map(quoteLiteral).join(", ");
      add({ code: "wal2json_not_trusted", server: "source", message: `the source has wal2json but does not allow it as an output plugin ` +
        `(output_plugin_libraries = '${allowed ?? ""}')`,
        fix: `on the source: ALTER SYSTEM SET output_plugin_libraries = ${list}; SELECT pg_reload_conf(); (no restart needed)` });
    } else if (wal2jsonProbe && !wal2jsonProbe.available) {
      add({ code: "wal2json_missing", server: "source", message: `the source cannot load the wal2json output plugin (${wal2jsonProbe.error})`,
        fix: /may not be used as an output plugin/.test(wal2jsonProbe.error ?? "")
          ? "the source restricts which libraries may decode a slot: add wal2json to output_plugin_libraries on the source (ALTER SYSTEM SET " +
            "output_plugin_libraries = 'pgoutput, wal2json'; SELECT pg_reload_conf()), or use --plugin pgoutput"
          : wal2jsonInstallFix(major(sourceVersion)) });
    } else if (wal2jsonProbe && !wal2jsonProbe.numericAsString && copyableTables(tables).length) {
      const facts = await readWal2jsonTables(src, copyableTables(tables).map((x) => ({ schema: x.schema, name: x.name })));
      const bad = unresolvableTables(facts.values());
      if (bad.length) {
        add({ code: "wal2json_numeric", server: "source", objects: bad,
          message: `this wal2json (before 2.6) writes float/numeric NaN and Infinity as null, like SQL NULL; pgferry reads such values ` +
            `back by the row's key, which ${list(bad)} cannot offer (no primary key or replica identity index, or a float/numeric key column)`,
          fix: "upgrade wal2json on the source to 2.6+ (numeric-data-types-as-string), add a primary key to those tables, " +
            "--exclude them, or use --plugin pgoutput" });
      }
    }
  }

  // --- target
  const t = (await tgt.query(`SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
      has_database_privilege(current_database(), 'CREATE') AS can_create,
      CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pg_create_subscription')  -- PG 16+
           THEN pg_has_role(current_user, 'pg_create_subscription', 'USAGE') ELSE false END AS can_subscribe,
      current_setting('max_logical_replication_workers')::int AS max_workers,
      pg_encoding_to_char(encoding) AS encoding FROM pg_database WHERE datname = current_database()`)).rows[0];
  if (!t.superuser && !t.can_create) {
    add({ code: "target_create", server: "target", message: `role "${target.user}" cannot create schemas in target database "${target.database}"`,
      fix: `GRANT CREATE ON DATABASE "${target.database}" TO "${target.user}";` });
  }
  if ((o.mode === "stream" || copyUnlogged) && !t.superuser) {
    try {
      await tgt.query("BEGIN");
      await tgt.query("SET LOCAL session_replication_role = replica");
    } catch {
      add({ code: "replica_role", server: "target", message: `role "${target.user}" may not set session_replication_role, which ` +
        `${o.mode === "stream" ? "stream mode applies changes with" : "the cutover's copy of unlogged tables runs with (no user triggers)"}`,
        fix: `GRANT SET ON PARAMETER session_replication_role TO "${target.user}"; (PostgreSQL 15+) or use a superuser on the target` });
    } finally {
      await tgt.query("ROLLBACK").catch(() => undefined);
    }
  }
  if (o.mode !== "stream" && !t.superuser && !t.can_subscribe) {
    add({ code: "subscription_privilege", server: "target", message: `role "${target.user}" may not create subscriptions on the target` +
        (major(targetVersion) < 16 ? ` (PostgreSQL ${major(targetVersion)} requires a superuser)` : ""),
      fix: major(targetVersion) >= 16 ? `GRANT pg_create_subscription TO "${target.user}";` : "connect to the target as a superuser, or use --mode stream" });
  }
  if (o.mode !== "stream" && t.max_workers < 1) {
    add({ code: "target_workers", server: "target", message: "max_logical_replication_workers is 0 on the target", fix: "ALTER SYSTEM SET max_logical_replication_workers = 4; then restart the target" });
  }
  if (t.encoding !== s.encoding) {
    add({ severity: s.encoding === "SQL_ASCII" ? "error" : "warning", code: "encoding", server: "target",
      message: `source encoding ${s.encoding} differs from target database encoding ${t.encoding}`,
      fix: `create the target database with ENCODING '${s.encoding}' (CREATE DATABASE … TEMPLATE template0 ENCODING '${s.encoding}')` });
  }
  const ext = (await src.query(`SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1`)).rows.map((x) => x.extname);
  if (ext.length) {
    const avail = new Set((await tgt.query(`SELECT name FROM pg_available_extensions WHERE name = ANY($1)`, [ext])).rows.map((x) => x.name));
    const missing = ext.filter((x: string) => !avail.has(x));
    if (missing.length) {
      add({ code: "extensions", server: "target", objects: missing, message: `extension(s) used on the source are not available on the target: ${list(missing)}`,
        fix: "install them on the target server (Azure: allow-list them in azure.extensions), or drop them from the source" });
    }
  }
  if (!o.resuming) {
    const existing = (await tgt.query(`SELECT t FROM unnest($1::text[]) t WHERE to_regclass(t) IS NOT NULL`,
      [tables.map((x) => qualified(x.schema, x.name))])).rows.map((x) => x.t);
    if (existing.length) {
      add({ code: "target_not_empty", server: "target", objects: existing,
        message: `${existing.length} selected table(s) already exist on the target: ${list(existing)}`,
        fix: "migrate into an empty database (pgferry creates the schema), drop those tables on the target, or --exclude them" });
    }
  }
  const missingRoles = await rolesMissingOnTarget(src, tgt, schemas);
  if (missingRoles.length) {
    add({ severity: "warning", code: "roles", server: "target", objects: missingRoles,
      message: `role(s) ${list(missingRoles)} own or are granted objects on the source but do not exist on the target; objects will be owned by "${target.user}" and grants are not copied`,
      fix: "create the roles on the target first (pg_dumpall --roles-only on the source, applied to the target) to keep ownership and grants" });
  }

  // --- local tools
  const tools = await findPgTools();
  if (!tools.pgDump) {
    add({ code: "pg_dump_missing", server: "local", message: "pg_dump and pg_restore are not installed on this machine",
      fix: "install the PostgreSQL client programs (apt-get install postgresql-client) or set PGFERRY_PG_BIN to their folder" });
  } else if (tools.pgDump.major < major(sourceVersion)) {
    add({ code: "pg_dump_old", server: "local", message: `the newest pg_dump here is ${tools.pgDump.major}, older than the source's PostgreSQL ${major(sourceVersion)}`,
      fix: `install postgresql-client-${major(sourceVersion)} (or newer) or set PGFERRY_PG_BIN to the bin folder of pg_dump ${major(sourceVersion)}+` });
  }

  return {
    findings, ok: !findings.some((f) => f.severity === "error"), sourceVersion, targetVersion, schemas, tables,
    needReplicaIdentityFull, keepOwnership: missingRoles.length === 0, pgDumpMajor: tools.pgDump?.major, wal2json: wal2jsonProbe,
  };
}
