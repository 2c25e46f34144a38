/**
 * Preflight: every reason a migration would fail or lose data, checked on both servers before
 * anything is created, reported all at once, each with its fix.
 */
import { Client } from "pg";
import {
  copyableTables, displayName, ExclusionPlan, listTables, planExclusion, publishedTables, serverVersionNum, TableInfo,
  TableSelection, tablesWithoutReplicaIdentity, userSchemas,
} from "../catalog/catalog";
import { connectReplication, Endpoint, qualified, quoteIdent, quoteLiteral } from "../core/endpoint";
import { Finding, PgferryError } from "../core/errors";
import { findPgTools, largeObjectFix, rolesMissingOnTarget } from "../copy/schema";
import { decoderFor } from "../cdc/decoders";
import { Decoder } from "../cdc/decoders/decoder";
import { captureSql } from "../cdc/ddl/capture";
import { Cdc, cdcFor } from "../cdc/cdc";
import { Distribution } from "../copy/distribution";
import { CITUS_CHECKS } from "./citus";
import { Wal2jsonProbe } from "../cdc/decoders/wal2json";

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
  /** --ddl replicate: an event trigger on the source captures DDL (needs a superuser there and PostgreSQL 14+). */
  ddl?: "detect" | "replicate";
  /** Large objects are carried (default) or, false (--no-large-objects), left out with a warning. */
  largeObjects?: boolean;
  /** Hyperscale (Citus) target: tables to distribute or make reference tables (./citus.ts checks them). */
  distribution?: Distribution;
  /** --roles: missing roles are created before pre-data (copy/roles.ts), so they are no finding here and ownership is kept. */
  roles?: boolean;
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
  /** What --exclude/--include leave out, dependencies followed. */
  exclusion: ExclusionPlan;
}

const major = (v: number) => Math.floor(v / 10000);
const names = (ts: { schema: string; name: string }[]) => ts.map((t) => displayName(t.schema, t.name));
const list = (xs: string[], n = 8) => (xs.length > n ? `${xs.slice(0, n).join(", ")} and ${xs.length - n} more` : xs.join(", "));

/** Facts the checks share: each is read by the check that first needs it (the order of the list), then kept here. */
export interface PreflightRun {
  src: Client;
  tgt: Client;
  source: Endpoint;
  target: Endpoint;
  o: PreflightOptions;
  add: (f: Omit<Finding, "severity"> & { severity?: Finding["severity"] }) => void;
  sourceVersion: number;
  targetVersion: number;
  /** The output plugin's decoder (whether it needs a publication; its probe). */
  decoder: Decoder;
  /** The CDC mode (what it needs of the tables and the target: its requirements). */
  cdc: Cdc;
  /** The source's replication settings and privileges (source-settings). */
  s?: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  schemas?: string[];
  exclusion?: ExclusionPlan;
  tables?: TableInfo[];
  needReplicaIdentityFull?: TableInfo[];
  copyUnlogged?: boolean;
  wal2jsonProbe?: Wal2jsonProbe;
  missingRoles?: string[];
  pgDumpMajor?: number;
}

export interface PreflightCheck {
  name: string;
  /** Adds its findings with r.add, and the facts later checks read to r. */
  run: (r: PreflightRun) => Promise<void>;
}

export async function preflight(src: Client, tgt: Client, source: Endpoint, target: Endpoint, o: PreflightOptions): Promise<PreflightResult> {
  const findings: Finding[] = [];
  const add = (f: Omit<Finding, "severity"> & { severity?: Finding["severity"] }) => { findings.push({ severity: "error", ...f }); };
  const r: PreflightRun = { src, tgt, source, target, o, add, sourceVersion: await serverVersionNum(src), targetVersion: await serverVersionNum(tgt),
    decoder: decoderFor(o.plugin),
    cdc: cdcFor(o.mode ?? "subscription") };
  for (const check of PREFLIGHT_CHECKS) await check.run(r);
  return {
    findings, ok: !findings.some((f) => f.severity === "error"), sourceVersion: r.sourceVersion, targetVersion: r.targetVersion, schemas: r.schemas!,
    tables: r.tables!, needReplicaIdentityFull: r.needReplicaIdentityFull!, keepOwnership: r.missingRoles!.length === 0, pgDumpMajor: r.pgDumpMajor,
    wal2json: r.wal2jsonProbe, exclusion: r.exclusion!,
  };
}

/**
 * Every check, in the order their findings are reported. A check reads what earlier ones found (the source's
 * settings, the selected tables) from the run; a new check is one more entry.
 */
export const PREFLIGHT_CHECKS: PreflightCheck[] = [
  {
    /** The source and target PostgreSQL versions. */
    name: "versions",
    async run(r) {
      const { add, sourceVersion, targetVersion } = r;
      if (major(sourceVersion) < 13) {
        add({ code: "source_version", server: "source", message: `source runs PostgreSQL ${major(sourceVersion)}; pgferry needs 13 or newer on the source`,
          fix: "upgrade the source to 13+ in place first, or use pg_dump/pg_restore with downtime" });
      }
      if (major(targetVersion) < major(sourceVersion)) {
        add({ code: "target_older", server: "target", message: `target runs PostgreSQL ${major(targetVersion)}, older than the source's ${major(sourceVersion)}`,
          fix: `use a target running PostgreSQL ${major(sourceVersion)} or newer (downgrades are not supported)` });
      }
    },
  },
  {
    /** The source's replication settings and privileges. */
    name: "source-settings",
    async run(r) {
      const { src, source, o, add, decoder } = r;
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
      if (!s.can_create && !s.superuser && decoder.needsPublication) {
        add({ code: "publication_privilege", server: "source", message: `role "${source.user}" cannot create a publication (needs CREATE on database "${source.database}")`,
          fix: `GRANT CREATE ON DATABASE "${source.database}" TO "${source.user}";` });
      }
      r.s = s;
    },
  },
  {
    /** --ddl replicate: creating event triggers needs a superuser (or a managed service's admin role where it allows them). */
    name: "ddl-capture",
    async run(r) {
      const { o, add, source } = r;
      if (o.ddl !== "replicate") return;
      // The right itself, tried: create the capture in a transaction and roll it back (a superuser passes; a managed
      // service's admin role passes only where the service lets it create event triggers).
      await r.src.query("BEGIN");
      try {
        for (const sql of captureSql("preflight_probe", ["public"], o.slotName)) await r.src.query(sql);
      } catch (e) {
        add({ code: "ddl_capture", server: "source", message: `--ddl replicate creates an event trigger on the source, which role ` +
          `"${source.user}" may not (${(e as Error).message}); event triggers need a superuser (or a managed service's admin role where it allows them)`,
          fix: `run start as a superuser of the source, or use --ddl detect (cutover refuses while the schemas differ; docs/ddl.md)` });
      } finally {
        await r.src.query("ROLLBACK");
      }
      // What a table created while streaming needs of the CDC mode (subscription: a tablesync worker, slot and WAL sender).
      await r.cdc.requirements.checkNewTables?.({ src: r.src, tgt: r.tgt, slotName: o.slotName, add });
    },
  },
  {
    /** Large objects: readable on the source, none on the target already. */
    name: "large-objects",
    async run(r) {
      const { src, tgt, source, o, add } = r;
      const s = r.s!;
      if (Number(s.large_objects) > 0 && o.largeObjects === false) {
        add({ severity: "warning", code: "large_objects", server: "source", message: `${s.large_objects} large objects exist on the source; logical replication does not carry them and pgferry does not copy them (--no-large-objects)`,
          fix: `omit --no-large-objects to carry them, or copy them after writes stop: ${largeObjectFix((await findPgTools()).pgDump?.major)}` });
      }
      if (o.largeObjects !== false && Number(s.large_objects) > 0) {
        // lo_get needs SELECT on each object (or ownership, membership in its owner, superuser, lo_compat_privileges):
        // one the source role cannot read would stop the load part-way.
        const unreadable = (await src.query(`SELECT count(*)::int AS n, (array_agg(m.oid::text ORDER BY m.oid))[1:5] AS some FROM pg_largeobject_metadata m
          WHERE NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AND current_setting('lo_compat_privileges') = 'off'
            AND NOT pg_has_role(current_user, m.lomowner, 'USAGE')
            AND NOT EXISTS (SELECT FROM aclexplode(m.lomacl) a WHERE a.privilege_type = 'SELECT' AND (a.grantee = 0 OR pg_has_role(current_user, a.grantee, 'USAGE')))`)).rows[0];
        if (unreadable.n > 0) {
          add({ code: "large_objects_unreadable", server: "source", message: `role "${source.user}" may not read ${unreadable.n} large object(s) of the source ` +
            `(e.g. OID ${unreadable.some.join(", ")}), so they cannot be copied`,
            fix: `GRANT SELECT ON LARGE OBJECT <oid> TO "${source.user}" for each (as their owner), or run as their owner or a superuser, ` +
              `or set lo_compat_privileges = on on the source, or pass --no-large-objects to leave large objects out` });
        }
      }
      if (o.largeObjects !== false && !o.resuming) {
        // The load gives every source large object its OID on the target and the cutover unlinks the ones the source lacks:
        // large objects the target has already would be replaced or removed.
        const n = Number((await tgt.query(`SELECT count(*) AS n FROM pg_largeobject_metadata`)).rows[0].n);
        if (n > 0) {
          add({ code: "target_large_objects", server: "target", message: `the target database already has ${n} large object(s); pgferry carries the source's ` +
            `large objects with their OIDs and at cutover removes the target's others, so these would be overwritten or unlinked`,
            fix: "migrate into an empty database, or unlink them on the target (SELECT lo_unlink(oid) FROM pg_largeobject_metadata), or pass --no-large-objects" });
        }
      }
    },
  },
  {
    /** A replication connection to the source (its own pg_hba entry). */
    name: "replication-connection",
    async run(r) {
      const { source, add } = r;
      const s = r.s!;
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
    },
  },
  {
    /** The selected schemas and tables, and what --exclude/--include leave out. */
    name: "tables",
    async run(r) {
      const { src, o, add } = r;
      const schemas = o.selection.schemas.length ? o.selection.schemas : await userSchemas(src);
      const exclusion = await planExclusion(src, o.selection, schemas);
      if (exclusion.unknown.length) {
        add({ code: "unknown_relation", server: "source", objects: exclusion.unknown,
          message: `--exclude/--include name(s) ${list(exclusion.unknown)} match no table, view, materialized view, sequence or foreign table of the migrated schemas (${list(schemas.map((x) => displayName(x)))})`,
          fix: "correct the name (schema.table; quote parts with capitals or dots: '\"My Schema\".\"T\"'), or add its schema with --schema" });
      }
      if (exclusion.blocking.length) {
        add({ code: "exclusion_blocked", server: "source", objects: exclusion.blocking,
          message: `what --exclude/--include leave out is used inside tables that are migrated: ${list(exclusion.blocking, 6)}`,
          fix: "--exclude those tables too, or keep what they use (a sequence in a default, a function in a CHECK or generated column)" });
      }
      if (exclusion.partitionsOfMigrated.length) {
        const parts = exclusion.partitionsOfMigrated;
        add({ code: "exclusion_partition", server: "source", objects: parts.map((x) => x.partition),
          message: `--exclude/--include leave out ${list(parts.map((x) => `partition ${x.partition} of ${x.root}`), 6)}, whose partitioned table is ` +
            `migrated: changes to the partition's rows are replicated through ${parts.length === 1 ? "it" : "their partitioned tables"} and would reach a ` +
            `target that lacks the partition (an error, or rows landing in another partition)`,
          fix: `leave out the partitioned table itself (--exclude ${parts[0].root}), or detach the partition on the source first ` +
            `(ALTER TABLE ${parts[0].root} DETACH PARTITION ${parts[0].partition}; then --exclude it as a table of its own)` });
      }
      const excludedKeys = new Set(exclusion.relations.map((x) => `${x.schema}\u0000${x.name}`));
      const tables = (await listTables(src, { ...o.selection, schemas })).filter((t) => !excludedKeys.has(`${t.schema}\u0000${t.name}`));
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
      r.schemas = schemas;
      r.exclusion = exclusion;
      r.tables = tables;
    },
  },
  {
    /** Every table's UPDATEs and DELETEs can be replicated. */
    name: "replica-identity",
    async run(r) {
      const { o, add } = r;
      const tables = r.tables!;
      const noKey = tablesWithoutReplicaIdentity(tables);
      const needReplicaIdentityFull = o.replicaIdentityFull ? noKey : [];
      if (noKey.length && !o.replicaIdentityFull) {
        add({ code: "no_replica_identity", server: "source", objects: names(noKey),
          message: `${noKey.length} table(s) have no primary key and no replica identity, so their UPDATEs and DELETEs cannot be replicated: ${list(names(noKey))}`,
          fix: "add a primary key, or pass --replica-identity-full (pgferry sets REPLICA IDENTITY FULL on them), or --exclude them" });
      }
      r.needReplicaIdentityFull = needReplicaIdentityFull;
    },
  },
  {
    /** What the CDC mode needs of the replicated tables (subscription: REPLICA IDENTITY FULL rows are found by equality). */
    name: "cdc-tables",
    async run(r) {
      const { src, add, cdc } = r;
      const tables = r.tables!;
      const needReplicaIdentityFull = r.needReplicaIdentityFull!;
      const fullIdentity = tables.filter((t) => t.kind === "r" && !t.unlogged && (t.replicaIdentity === "f" || needReplicaIdentityFull.includes(t)));
      await cdc.requirements.checkTables?.({ src, tables, fullIdentity, add });
    },
  },
  {
    /** Unlogged tables are named, with what happens to them. */
    name: "unlogged",
    async run(r) {
      const { o, add } = r;
      const tables = r.tables!;
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
      r.copyUnlogged = copyUnlogged;
    },
  },
  {
    /** The source role reads every table. */
    name: "select-privilege",
    async run(r) {
      const { src, source, add } = r;
      const tables = r.tables!;
      const unreadable = (await src.query(`SELECT t FROM unnest($1::text[]) t WHERE NOT has_table_privilege(t::regclass, 'SELECT')`,
        [copyableTables(tables).map((t) => qualified(t.schema, t.name))])).rows.map((x) => x.t);
      if (unreadable.length) {
        add({ code: "select_privilege", server: "source", objects: unreadable, message: `role "${source.user}" cannot read ${list(unreadable)}`,
          fix: `GRANT SELECT ON ALL TABLES IN SCHEMA … TO "${source.user}";` });
      }
    },
  },
  {
    /** The source role may publish every table. */
    name: "publication-owner",
    async run(r) {
      const { src, source, add, decoder } = r;
      const s = r.s!;
      const tables = r.tables!;
      if (!s.superuser && decoder.needsPublication) {
        const notOwned = (await src.query(`SELECT t FROM unnest($1::text[]) t
            WHERE NOT pg_has_role((SELECT relowner FROM pg_class WHERE oid = t::regclass), 'USAGE')`,
          [publishedTables(tables).map((t) => qualified(t.schema, t.name))])).rows.map((x) => x.t);
        if (notOwned.length) {
          add({ code: "publication_owner", server: "source", objects: notOwned,
            message: `a publication may only name tables the role owns; "${source.user}" does not own ${list(notOwned)}`,
            fix: `connect to the source as the tables' owner or a superuser, or GRANT the owner role to "${source.user}"` });
        }
      }
    },
  },
  {
    /** The output plugin can be used on the source and what it writes can be read back (the decoder's own checks: wal2json's). */
    name: "output-plugin",
    async run(r) {
      const { src, add, sourceVersion, decoder } = r;
      const s = r.s!;
      if (decoder.checkSource && s.wal_level === "logical" && s.can_replicate) {
        r.wal2jsonProbe = await decoder.checkSource({ src, sourceVersion, maxSlots: s.max_slots, tables: r.tables!, add });
      }
    },
  },
  {
    /** The target role's privileges and settings. */
    name: "target-settings",
    async run(r) {
      const { tgt, target, add, targetVersion, cdc } = r;
      const s = r.s!;
      const copyUnlogged = r.copyUnlogged!;
      const t = (await tgt.query(`SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
          has_database_privilege(current_database(), 'CREATE') AS can_create,
          pg_encoding_to_char(encoding) AS encoding FROM pg_database WHERE datname = current_database()`)).rows[0];
      if (!t.superuser && !t.can_create) {
        add({ code: "target_create", server: "target", message: `role "${target.user}" cannot create schemas in target database "${target.database}"`,
          fix: `GRANT CREATE ON DATABASE "${target.database}" TO "${target.user}";` });
      }
      // Why the role must set session_replication_role: the mode's applier, else the cutover's copy of unlogged tables.
      const replicaRoleReason = cdc.requirements.replicaRole ?? (copyUnlogged ? "the cutover's copy of unlogged tables runs with (no user triggers)" : undefined);
      if (replicaRoleReason && !t.superuser) {
        try {
          await tgt.query("BEGIN");
          await tgt.query("SET LOCAL session_replication_role = replica");
        } catch {
          add({ code: "replica_role", server: "target", message: `role "${target.user}" may not set session_replication_role, which ${replicaRoleReason}`,
            fix: `GRANT SET ON PARAMETER session_replication_role TO "${target.user}"; (PostgreSQL 15+) or use a superuser on the target` });
        } finally {
          await tgt.query("ROLLBACK").catch(() => undefined);
        }
      }
      await cdc.requirements.checkTarget?.({ tgt, target, targetVersion, superuser: !!t.superuser, add });
      if (t.encoding !== s.encoding) {
        add({ severity: s.encoding === "SQL_ASCII" ? "error" : "warning", code: "encoding", server: "target",
          message: `source encoding ${s.encoding} differs from target database encoding ${t.encoding}`,
          fix: `create the target database with ENCODING '${s.encoding}' (CREATE DATABASE … TEMPLATE template0 ENCODING '${s.encoding}')` });
      }
    },
  },
  {
    /** The source's extensions are available on the target. */
    name: "extensions",
    async run(r) {
      const { src, tgt, add } = r;
      const ext = (await src.query(`SELECT extname, extversion FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1`)).rows as { extname: string; extversion: string }[];
      if (ext.length) {
        const avail = (await tgt.query(`SELECT a.name, array_agg(v.version) AS versions, (SELECT extversion FROM pg_extension WHERE extname = a.name) AS installed
            FROM pg_available_extensions a LEFT JOIN pg_available_extension_versions v ON v.name = a.name WHERE a.name = ANY($1) GROUP BY a.name`,
          [ext.map((x) => x.extname)])).rows;
        const byName = new Map(avail.map((x) => [x.name as string, x]));
        const missing = ext.filter((x) => !byName.has(x.extname));
        if (missing.length) {
          add({ code: "extensions", server: "target", objects: missing.map((x) => x.extname),
            message: `extension(s) used on the source are not available on the target: ${list(missing.map((x) => `${displayName(x.extname)} ${x.extversion}`))}`,
            fix: "install them on the target server (e.g. the postgresql-contrib or the extension's package; Azure: allow-list them in azure.extensions), or drop them from the source" });
        }
        const otherVersion = ext.filter((x) => byName.has(x.extname) && !(byName.get(x.extname)!.versions as string[]).includes(x.extversion));
        if (otherVersion.length) {
          add({ severity: "warning", code: "extension_version", server: "target", objects: otherVersion.map((x) => x.extname),
            message: `the target does not offer the source's version of ${list(otherVersion.map((x) => `${displayName(x.extname)} ${x.extversion} ` +
              `(target: ${(byName.get(x.extname)!.versions as string[]).join(", ")})`))}; pgferry creates them at the target's default version`,
            fix: "install that version on the target, or update the extension on the source first (ALTER EXTENSION … UPDATE TO a version both have)" });
        }
      }
    },
  },
  {
    /** What pg_upgrade checks (C libraries, lz4, generated children, tablespaces, clashing objects). */
    name: "upgrade",
    async run(r) {
      const { src, tgt, o, add, targetVersion } = r;
      const schemas = r.schemas!;
      const tables = r.tables!;
      await upgradeChecks(src, tgt, schemas, tables, targetVersion, o.resuming, add);
    },
  },
  {
    /** The selected tables do not exist on the target yet. */
    name: "target-empty",
    async run(r) {
      const { tgt, o, add } = r;
      const tables = r.tables!;
      if (!o.resuming) {
        const existing = (await tgt.query(`SELECT t FROM unnest($1::text[]) t WHERE to_regclass(t) IS NOT NULL`,
          [tables.map((x) => qualified(x.schema, x.name))])).rows.map((x) => x.t);
        if (existing.length) {
          add({ code: "target_not_empty", server: "target", objects: existing,
            message: `${existing.length} selected table(s) already exist on the target: ${list(existing)}`,
            fix: "migrate into an empty database (pgferry creates the schema), drop those tables on the target, or --exclude them" });
        }
      }
    },
  },
  {
    /** Roles the migrated objects name exist on the target. */
    name: "roles",
    async run(r) {
      const { src, tgt, target, add } = r;
      const schemas = r.schemas!;
      const roleUses = await rolesMissingOnTarget(src, tgt, schemas);
      const missingRoles = roleUses.map((x) => x.role);
      if (r.o.roles) {
        // --roles creates them (the start step "roles", before pre-data): the target user must be allowed to.
        const may = (await tgt.query(`SELECT rolsuper OR rolcreaterole AS ok FROM pg_roles WHERE rolname = current_user`)).rows[0].ok;
        if (missingRoles.length && !may) {
          add({ code: "roles_create", server: "target", objects: missingRoles,
            message: `--roles must create role(s) ${list(missingRoles.map((x) => displayName(x)))} on the target, but "${target.user}" is neither ` +
              `superuser nor has CREATEROLE there`,
            fix: `connect to the target as a superuser or a role with CREATEROLE, or create the roles there yourself and start without --roles` });
        }
        r.missingRoles = [];
        return;
      }
      const createRoles = (rs: string[]) => rs.map((x) => `CREATE ROLE ${quoteIdent(x)};`).join(" ");
      // A policy's TO list and a user mapping name the role in the statement itself: no --no-owner can drop it.
      const named = roleUses.filter((x) => x.named.length);
      if (named.length) {
        add({ code: "roles_named", server: "target", objects: named.map((x) => x.role),
          message: `role(s) ${list(named.map((x) => displayName(x.role)))} do not exist on the target, and objects name them: ` +
            list(named.flatMap((x) => x.named), 6),
          fix: `start with --roles (pgferry creates them with their attributes, memberships and settings), or create them on the target first: ` +
            `${createRoles(named.map((x) => x.role))} (or pg_dumpall --roles-only on the source, applied to the target)` });
      }
      const others = roleUses.filter((x) => !x.named.length);
      if (others.length) {
        add({ severity: "warning", code: "roles", server: "target", objects: others.map((x) => x.role),
          message: `role(s) ${list(others.map((x) => displayName(x.role)))} own or are granted objects on the source but do not exist on the target; ` +
            `objects will be owned by "${target.user}" and no grants are copied (${list(others.flatMap((x) => x.owns), 4)})`,
          fix: `start with --roles to create them and keep ownership and grants, or create the roles on the target first: ${createRoles(others.map((x) => x.role))} ` +
            `(or pg_dumpall --roles-only on the source, applied to the target)` });
      }
      r.missingRoles = missingRoles;
    },
  },
  {
    /** Pg_dump and pg_restore here, new enough for the source. */
    name: "local-tools",
    async run(r) {
      const { add, sourceVersion } = r;
      const tools = await findPgTools();
      if (!tools.pgDump) {
        add({ code: "pg_dump_missing", server: "local", message: "pg_dump and pg_restore are not installed on this machine",
          fix: "install the PostgreSQL client programs (apt-get install postgresql-client) or set PGFERRY_PG_BIN to their folder" });
      } else if (tools.pgDump.major < major(sourceVersion)) {
        add({ code: "pg_dump_old", server: "local", message: `the newest pg_dump here is ${tools.pgDump.major}, older than the source's PostgreSQL ${major(sourceVersion)}`,
          fix: `install postgresql-client-${major(sourceVersion)} (or newer) or set PGFERRY_PG_BIN to the bin folder of pg_dump ${major(sourceVersion)}+` });
      }
      r.pgDumpMajor = tools.pgDump?.major;
    },
  },
  ...CITUS_CHECKS,
];

/** Catalogs whose objects pg_dump creates without IF NOT EXISTS: one of the same identity on the target stops pre-data. */
const CLASH_CATALOGS = ["pg_type", "pg_proc", "pg_collation", "pg_conversion", "pg_operator", "pg_opclass", "pg_opfamily", "pg_ts_config",
  "pg_ts_dict", "pg_ts_parser", "pg_ts_template", "pg_statistic_ext", "pg_cast", "pg_transform", "pg_am", "pg_foreign_data_wrapper",
  "pg_foreign_server", "pg_event_trigger", "pg_publication"];

/**
 * What pg_upgrade checks before it changes anything, for the same reasons: C functions whose library
 * the target cannot load, lz4-compressed columns on a target built without lz4, inheritance children
 * with a generation expression of their own (refused from PostgreSQL 16 on), and objects that already
 * exist on the target under the same name.
 */
async function upgradeChecks(src: Client, tgt: Client, schemas: string[], tables: TableInfo[], targetVersion: number, resuming: boolean,
  add: (f: Omit<Finding, "severity"> & { severity?: Finding["severity"] }) => void): Promise<void> {
  const notExtension = (cls: string, alias: string) =>
    `NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '${cls}'::regclass AND e.objid = ${alias}.oid AND e.deptype = 'e')`;
  // C functions: LOAD each library on the target, as pg_upgrade does (it runs the library's _PG_init, nothing else).
  const libs = (await src.query(`SELECT p.probin, array_agg(p.oid::regprocedure::text ORDER BY p.oid) AS functions
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE p.prolang = 13 AND p.probin IS NOT NULL AND n.nspname = ANY($1) AND ${notExtension("pg_proc", "p")} GROUP BY 1 ORDER BY 1`, [schemas])).rows;
  const unloadable: string[] = [], unchecked: string[] = [];
  for (const l of libs) {
    try {
      await tgt.query(`LOAD ${quoteLiteral(l.probin)}`);
    } catch (e) {
      // only a superuser may LOAD outside $libdir/plugins: then the check cannot be made
      if ((e as { code?: string }).code === "42501") unchecked.push(l.probin);
      else unloadable.push(`${l.probin} (${(e as Error).message}; used by ${list(l.functions, 3)})`);
    }
  }
  if (unchecked.length) {
    add({ severity: "warning", code: "c_library_unchecked", server: "target", objects: unchecked,
      message: `functions on the source use C librar${unchecked.length > 1 ? "ies" : "y"} ${list(unchecked, 4)}; only a superuser can check that the target loads them`,
      fix: "make sure the library is installed on the target server (pre-data fails otherwise), or run start as a superuser on the target" });
  }
  if (unloadable.length) {
    add({ code: "c_library", server: "target", objects: libs.map((l) => l.probin),
      message: `the target cannot load the C librar${unloadable.length > 1 ? "ies" : "y"} of functions on the source: ${list(unloadable, 4)}`,
      fix: "install the library on the target server (a build for the target's PostgreSQL version, at the same path or in $libdir), " +
        "or drop those functions on the source (or --schema to leave their schema out)" });
  }
  // lz4: COPY carries the values (decompressed); only the columns' COMPRESSION lz4 clause needs the target to know lz4.
  const lz4 = (await src.query(`SELECT a.attrelid::regclass::text || '.' || quote_ident(a.attname) AS col FROM pg_attribute a
      JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped AND ${(await serverVersionNum(src)) >= 140000 ? "a.attcompression = 'l'" : "false"}
       AND c.relkind IN ('r', 'p', 'm') ORDER BY 1`, [schemas])).rows.map((x) => x.col);
  if (lz4.length) {
    const has = (await tgt.query(`SELECT 'lz4' = ANY(enumvals) AS has FROM pg_settings WHERE name = 'default_toast_compression'`)).rows[0]?.has;
    if (!has) {
      add({ code: "lz4", server: "target", objects: lz4,
        message: `${lz4.length} column(s) use lz4 compression on the source but the target server was built without lz4: ${list(lz4, 6)}`,
        fix: `on the source, ALTER TABLE … ALTER COLUMN … SET COMPRESSION pglz for them (values already stored stay readable; COPY decompresses), ` +
          `or use a target built with lz4 (--with-lz4)` });
    }
  }
  if (Math.floor(targetVersion / 10000) >= 16) {
    // PostgreSQL 16+ refuses a generated child column whose parent column is not generated (CREATE TABLE … INHERITS
    // and ALTER TABLE … INHERIT alike), and, for plain inheritance, one whose expression differs from the parent's.
    const gen = (await src.query(`SELECT c.oid::regclass::text || '.' || quote_ident(a.attname) AS col, pc.oid::regclass::text AS parent,
             pa.attgenerated = '' AS parent_plain
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> ''
        JOIN pg_class pc ON pc.oid = i.inhparent
        JOIN pg_attribute pa ON pa.attrelid = pc.oid AND pa.attname = a.attname
        JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
        LEFT JOIN pg_attrdef pd ON pd.adrelid = pc.oid AND pd.adnum = pa.attnum
       WHERE n.nspname = ANY($1)
         AND (pa.attgenerated = '' OR (NOT c.relispartition AND pg_get_expr(d.adbin, d.adrelid) <> pg_get_expr(pd.adbin, pd.adrelid)))
       ORDER BY 1`, [schemas])).rows;
    if (gen.length) {
      add({ code: "generated_child", server: "source", objects: gen.map((x) => x.col),
        message: `inheritance child column(s) have a generation expression of their own, which PostgreSQL ${Math.floor(targetVersion / 10000)} refuses: ` +
          list(gen.map((x) => `${x.col} (parent ${x.parent}${x.parent_plain ? ", where it is not generated" : ", with another expression"})`), 6),
        // (15 cannot drop the expression of an inherited column: the child must leave the parent, or stay behind)
        fix: `--exclude the child table(s), or on the source detach them first (ALTER TABLE ${gen[0].col.replace(/\.[^.]*$/, "")} NO INHERIT ${gen[0].parent};)` });
    }
  }
  if (resuming) return;
  // pg_restore sets default_tablespace for each relation: the target needs the same tablespaces.
  const spaces = (await src.query(`SELECT t.spcname, count(*)::int AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_tablespace t ON t.oid = c.reltablespace WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p', 'm', 'i', 'I') GROUP BY 1 ORDER BY 1`, [schemas])).rows;
  if (spaces.length) {
    const have = new Set((await tgt.query(`SELECT spcname FROM pg_tablespace`)).rows.map((x) => x.spcname));
    const lacking = spaces.filter((x) => !have.has(x.spcname));
    if (lacking.length) {
      add({ code: "tablespaces", server: "target", objects: lacking.map((x) => x.spcname),
        message: `tablespace(s) the source's tables and indexes use do not exist on the target: ${list(lacking.map((x) => `${displayName(x.spcname)} (${x.n} relation(s))`))}`,
        fix: `create them on the target first: ${lacking.map((x) => `CREATE TABLESPACE ${quoteIdent(x.spcname)} LOCATION '…';`).join(" ")} ` +
          "(on a managed server without tablespaces, move the relations to the default tablespace on the source first: ALTER TABLE … SET TABLESPACE pg_default)" });
    }
  }
  const identities = async (c: Client) => {
    const parts = CLASH_CATALOGS.map((cat) => `SELECT '${cat}'::regclass AS classid, x.oid FROM ${cat} x WHERE x.oid >= 16384 AND ${notExtension(cat, "x")}`);
    const r = await c.query(`SELECT i.type, i.schema, i.identity FROM (${parts.join(" UNION ALL ")}) o,
        LATERAL pg_identify_object(o.classid, o.oid, 0) i
       WHERE (i.schema IS NULL OR i.schema = ANY($1)) AND i.type NOT IN ('table type', 'view type', 'materialized view type', 'foreign table type')
         AND NOT (i.type = 'type' AND EXISTS (SELECT 1 FROM pg_type t WHERE t.oid = o.oid AND (t.typrelid <> 0 OR t.typelem <> 0 AND t.typlen = -1)))
         AND NOT (i.type = 'publication' AND i.identity ~ '^pgferry_[a-z0-9_]+$')`, [schemas]);
    return r.rows.map((x) => `${x.type} ${x.identity}`);
  };
  const there = new Set(await identities(tgt));
  const clash = (await identities(src)).filter((x) => there.has(x));
  if (clash.length) {
    add({ code: "target_objects", server: "target", objects: clash,
      message: `${clash.length} object(s) of the source already exist on the target under the same name: ${list(clash, 6)}`,
      fix: "migrate into an empty database, or drop them on the target (pgferry creates them as the source has them)" });
  }
}
