/**
 * `--ddl replicate`, the source half: an event trigger pair that records each DDL statement touching the migrated
 * schemas as a row of `pgferry.ddl_log_<name>`, a table of the migration's publication. The INSERT is a change of
 * the DDL's own transaction, written right after the command, so the stream applier (../stream/stream.ts) sees it
 * exactly between the changes before and after the DDL and runs the statement there (docs/ddl.md; docs/design.md
 * "DDL replication").
 *
 * Why a table and not pg_logical_emit_message: every role may call pg_logical_emit_message, so any user of the source
 * could forge a message that the applier would run on the target with pgferry's rights. The log table belongs to the
 * superuser who installed the capture, in a schema nobody else may create in, and no other role may write it; only
 * the capture function (SECURITY DEFINER) inserts. A table also streams on PostgreSQL 13 (pgoutput's `messages`
 * option is 14+).
 *
 * - ddl_command_end: records the statement when a command created or altered an object in a migrated schema, or
 *   dropped one there (the sql_drop trigger flags that in a transaction-local setting, since
 *   pg_event_trigger_ddl_commands() does not list drops). A table created in a migrated schema joins the
 *   publication in the same transaction, so its rows stream from its creation.
 * - The payload is JSON: the statement's text (current_query(): the client's whole query string, judged at apply
 *   time, ./statement.ts), the commands it ran, the session's search_path (the text may name objects unqualified),
 *   and the columns it added with a default that is not immutable (refused at apply time).
 * - The function runs as its owner, so it reads the caller's search_path first and then works under
 *   `pg_catalog, pg_temp` (no caller's operator or function can stand in for a catalog one), restoring the caller's
 *   setting before it returns.
 *
 * Everything lives in the schema named like the target's control schema (excluded from every migration), one set per
 * migration. It is recorded as a source change with the SQL that drops it BEFORE it is created
 * (state/sourceChanges.ts), so a failed start, cleanup and a completed cutover remove it like every other alteration
 * of the source.
 */
import { Client } from "pg";
import { CONTROL_SCHEMA } from "../../catalog/catalog";
import { quoteIdent, quoteLiteral } from "../../core/endpoint";
import { recordSourceChange, SourceChange } from "../../state/sourceChanges";


const S = quoteIdent(CONTROL_SCHEMA);

/** The capture's log table (in the control schema's name), whose inserts the applier runs as DDL. */
export function ddlLogTableName(migration: string): string { return `ddl_log_${migration}`; }

/** Object names of one migration's capture on the source. */
export function captureNames(migration: string): { endTrigger: string; dropTrigger: string; endFunction: string; dropFunction: string; log: string } {
  return {
    endTrigger: `pgferry_ddl_${migration}`, dropTrigger: `pgferry_ddl_drop_${migration}`, log: `${S}.${quoteIdent(ddlLogTableName(migration))}`,
    endFunction: `${S}.${quoteIdent(`ddl_capture_${migration}`)}`, dropFunction: `${S}.${quoteIdent(`ddl_dropped_${migration}`)}`,
  };
}

/** The SQL that removes one migration's capture (and the schema, when nothing else is left in it). */
export function captureUndoSql(migration: string): string {
  const n = captureNames(migration);
  return [`DROP EVENT TRIGGER IF EXISTS ${quoteIdent(n.endTrigger)}`, `DROP EVENT TRIGGER IF EXISTS ${quoteIdent(n.dropTrigger)}`,
    `DROP FUNCTION IF EXISTS ${n.endFunction}()`, `DROP FUNCTION IF EXISTS ${n.dropFunction}()`, identityUndoSql(migration), `DROP TABLE IF EXISTS ${n.log}`,
    `DO $pgferry$ BEGIN DROP SCHEMA IF EXISTS ${S}; EXCEPTION WHEN dependent_objects_still_exist THEN NULL; END $pgferry$`].join("; ");
}

/**
 * Put back REPLICA IDENTITY DEFAULT on every table the trigger made FULL (listed in the log's payloads, written in the
 * same source transaction as the ALTER, so none is missed even when the applier never read its row), when the table
 * still exists (found by oid: renamed too) and is still FULL. Runs after the event triggers are dropped (not captured itself).
 */
function identityUndoSql(migration: string): string {
  const n = captureNames(migration);
  return `DO $pgferry$ DECLARE r record; BEGIN
  IF pg_catalog.to_regclass(${quoteLiteral(n.log)}) IS NULL THEN RETURN; END IF;
  -- By oid: the table may have been renamed since.
  FOR r IN SELECT DISTINCT c.oid FROM ${n.log} l, pg_catalog.jsonb_array_elements(coalesce(l.payload::jsonb->'identityFull', '[]')) e
             JOIN pg_catalog.pg_class c ON c.oid = (e->>'oid')::oid AND c.relreplident = 'f' LOOP
    EXECUTE pg_catalog.format('ALTER TABLE %s REPLICA IDENTITY DEFAULT', r.oid::regclass);
  END LOOP;
END $pgferry$`;
}

/** The statements creating the capture for these schemas and this publication (replaced if present: a re-run converges). */
export function captureSql(migration: string, schemas: string[], publication: string): string[] {
  const n = captureNames(migration);
  const arr = `ARRAY[${schemas.map(quoteLiteral).join(", ") || "NULL"}]::text[]`;
  const flag = quoteLiteral(`pgferry.ddl_dropped_${migration}`);
  const inner = quoteLiteral(`pgferry.ddl_inner_${migration}`);
  return [
    `CREATE SCHEMA IF NOT EXISTS ${S}`,
    `CREATE TABLE IF NOT EXISTS ${n.log} (id bigserial PRIMARY KEY, payload text NOT NULL)`,
    `REVOKE ALL ON TABLE ${n.log} FROM PUBLIC`,
    `CREATE OR REPLACE FUNCTION ${n.dropFunction}() RETURNS event_trigger LANGUAGE plpgsql AS $pgferry$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger_dropped_objects() d
             WHERE d.schema_name = ANY (${arr}) OR (d.object_type = 'schema' AND d.object_name = ANY (${arr}))) THEN
    PERFORM pg_catalog.set_config(${flag}, 'on', true);
  END IF;
END $pgferry$`,
    `CREATE OR REPLACE FUNCTION ${n.endFunction}() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER AS $pgferry$
DECLARE
  caller_path text := pg_catalog.current_setting('search_path');
  cmds jsonb;
  added jsonb;
  t record;
  dropped boolean;
  identity jsonb := '[]';
BEGIN
  -- Our own ALTER TABLE … REPLICA IDENTITY FULL below fires this trigger again: not a statement of the source's.
  IF coalesce(pg_catalog.current_setting(${inner}, true), '') = 'on' THEN RETURN; END IF;
  PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
  dropped := coalesce(current_setting(${flag}, true), '') = 'on';
  SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('tag', c.command_tag, 'type', c.object_type, 'identity', c.object_identity)), '[]')
    INTO cmds FROM pg_catalog.pg_event_trigger_ddl_commands() c
   WHERE c.schema_name = ANY (${arr}) OR (c.object_type = 'schema' AND c.object_identity = ANY (SELECT pg_catalog.quote_ident(x) FROM pg_catalog.unnest(${arr}) x));
  IF pg_catalog.jsonb_array_length(cmds) = 0 AND NOT dropped THEN
    PERFORM pg_catalog.set_config('search_path', caller_path, true);
    RETURN;
  END IF;
  IF dropped THEN PERFORM pg_catalog.set_config(${flag}, '', true); END IF;
  -- A table created in a migrated schema joins the migration: published from now on, in this transaction
  -- (partitions are published through their root).
  FOR t IN SELECT DISTINCT c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() c JOIN pg_catalog.pg_class k ON k.oid = c.objid
            WHERE c.command_tag = 'CREATE TABLE' AND c.object_type = 'table' AND c.schema_name = ANY (${arr})
              AND k.relkind IN ('r', 'p') AND NOT k.relispartition AND k.relpersistence = 'p' LOOP
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = ${quoteLiteral(publication)})
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel r JOIN pg_catalog.pg_publication p ON p.oid = r.prpubid
                        WHERE p.pubname = ${quoteLiteral(publication)} AND r.prrelid = t.objid) THEN
      EXECUTE pg_catalog.format('ALTER PUBLICATION %I ADD TABLE %s', ${quoteLiteral(publication)}, t.objid::regclass);
    END IF;
  END LOOP;
  -- A published table without a key makes PostgreSQL refuse every UPDATE/DELETE on it, on the source: a new table
  -- with no primary key and the default identity (partitions too: the check is on the leaf) gets REPLICA IDENTITY
  -- FULL in this transaction. Listed in the payload: the applier records it (with its undo) on the target, and the
  -- capture's undo puts DEFAULT back from the log. Not replayed: the target keeps DEFAULT, the source's final state.
  FOR t IN SELECT DISTINCT c.objid, ns.nspname, k.relname FROM pg_catalog.pg_event_trigger_ddl_commands() c
             JOIN pg_catalog.pg_class k ON k.oid = c.objid JOIN pg_catalog.pg_namespace ns ON ns.oid = k.relnamespace
            WHERE c.command_tag = 'CREATE TABLE' AND c.object_type = 'table' AND c.schema_name = ANY (${arr})
              AND k.relkind = 'r' AND k.relpersistence = 'p' AND k.relreplident = 'd'
              AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index x WHERE x.indrelid = k.oid AND x.indisprimary)
              AND EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = ${quoteLiteral(publication)}) LOOP
    PERFORM pg_catalog.set_config(${inner}, 'on', true);
    EXECUTE pg_catalog.format('ALTER TABLE %s REPLICA IDENTITY FULL', t.objid::regclass);
    PERFORM pg_catalog.set_config(${inner}, '', true);
    identity := identity || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('schema', t.nspname, 'name', t.relname, 'oid', t.objid::text));
  END LOOP;
  -- Columns this transaction added (their catalog row is its own) with a default that is not a constant:
  -- the target would compute it again and get other values (now(), random(), nextval(), clock_timestamp()).
  SELECT coalesce(pg_catalog.jsonb_agg(DISTINCT a.attname), '[]') INTO added
    FROM pg_catalog.pg_event_trigger_ddl_commands() c
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.objid
    JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE c.command_tag = 'ALTER TABLE' AND c.object_type IN ('table', 'table column') AND a.attnum > 0 AND NOT a.attisdropped
     AND a.attgenerated = '' AND a.xmin::text = (pg_catalog.txid_current() % 4294967296)::text
     AND (d.adbin::text ~ '\\{(SQLVALUEFUNCTION|NEXTVALUEEXPR) ' OR EXISTS (
          SELECT 1 FROM pg_catalog.regexp_matches(d.adbin::text, ':(?:op)?funcid (\\d+)', 'g') f(m)
            JOIN pg_catalog.pg_proc p ON p.oid = f.m[1]::oid WHERE p.provolatile <> 'i'));
  INSERT INTO ${n.log} (payload) VALUES (pg_catalog.jsonb_build_object('v', 1, 'sql', current_query(),
    'commands', cmds, 'searchPath', caller_path, 'nonConstantDefaults', added, 'dropped', dropped, 'identityFull', identity)::text);
  PERFORM pg_catalog.set_config('search_path', caller_path, true);
END $pgferry$`,
    `DROP EVENT TRIGGER IF EXISTS ${quoteIdent(n.dropTrigger)}`,
    `CREATE EVENT TRIGGER ${quoteIdent(n.dropTrigger)} ON sql_drop EXECUTE FUNCTION ${n.dropFunction}()`,
    `DROP EVENT TRIGGER IF EXISTS ${quoteIdent(n.endTrigger)}`,
    `CREATE EVENT TRIGGER ${quoteIdent(n.endTrigger)} ON ddl_command_end EXECUTE FUNCTION ${n.endFunction}()`,
  ];
}

/**
 * Install the capture on the source for these schemas, recorded first (with its undo) on the target: a run
 * killed in between leaves a record whose undo is harmless, never a trigger without a record.
 */
export async function installDdlCapture(src: Client, tgt: Client, migration: string, schemas: string[], publication: string): Promise<SourceChange> {
  const n = captureNames(migration);
  const change = await recordSourceChange(tgt, migration, {
    object: `event trigger ${n.endTrigger}`, kind: "ddl_capture",
    change: `event triggers ${n.endTrigger} and ${n.dropTrigger} with their functions and log table ${n.log} (--ddl replicate) capture DDL on ${schemas.join(", ")}`,
    undoSql: captureUndoSql(migration),
  });
  await src.query("BEGIN");
  try {
    for (const sql of captureSql(migration, schemas, publication)) await src.query(sql);
    // The log streams with the migrated tables (the publication exists: start creates it first).
    const member = await src.query(`SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3`,
      [publication, CONTROL_SCHEMA, ddlLogTableName(migration)]);
    if (!member.rowCount) await src.query(`ALTER PUBLICATION ${quoteIdent(publication)} ADD TABLE ${n.log}`);
    await src.query("COMMIT");
  } catch (e) {
    await src.query("ROLLBACK").catch(() => undefined);
    throw e;
  }
  return change;
}

/** Is the capture installed and enabled on the source? */
export async function ddlCaptureInstalled(src: Client, migration: string): Promise<boolean> {
  const n = captureNames(migration);
  const r = await src.query(`SELECT count(*)::int AS n FROM pg_event_trigger WHERE evtname IN ($1, $2) AND evtenabled <> 'D'`, [n.endTrigger, n.dropTrigger]);
  return r.rows[0].n === 2;
}
