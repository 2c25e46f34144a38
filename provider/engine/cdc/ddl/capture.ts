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
 *   and the columns it added with a default that is not immutable or as identity. Those are backfilled right after the
 *   row (every row of the table updated once, so their source values follow as row changes), then a second row
 *   (kind "after-backfill") tells the target to put GENERATED ALWAYS and the owned sequences' position in place; a table
 *   the backfill cannot serve (no key, …) gets the reason in the payload and the applier refuses the statement.
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
import { CONTROL_SCHEMA, splitQualified } from "../../catalog/catalog";
import { quoteIdent, quoteLiteral } from "../../core/endpoint";
import { recordSourceChange, SourceChange } from "../../state/sourceChanges";
import { captureOwnersSql } from "./owners";


const S = quoteIdent(CONTROL_SCHEMA);

/** The capture's log table (in the control schema's name), whose inserts the applier runs as DDL. */
export function ddlLogTableName(migration: string): string { return `ddl_log_${migration}`; }

/** Object names of one migration's capture on the source. */
export function captureNames(migration: string): { endTrigger: string; dropTrigger: string; endFunction: string; dropFunction: string; log: string; leftOut: string } {
  return {
    endTrigger: `pgferry_ddl_${migration}`, dropTrigger: `pgferry_ddl_drop_${migration}`, log: `${S}.${quoteIdent(ddlLogTableName(migration))}`,
    endFunction: `${S}.${quoteIdent(`ddl_capture_${migration}`)}`, dropFunction: `${S}.${quoteIdent(`ddl_dropped_${migration}`)}`,
    // Relations (tables, their indexes and owned sequences) the migration leaves out, by oid: a DROP of only those is not logged.
    leftOut: `${S}.${quoteIdent(`ddl_left_out_${migration}`)}`,
  };
}

/** The SQL that removes one migration's capture (and the schema, when nothing else is left in it). */
export function captureUndoSql(migration: string): string {
  const n = captureNames(migration);
  return [`DROP EVENT TRIGGER IF EXISTS ${quoteIdent(n.endTrigger)}`, `DROP EVENT TRIGGER IF EXISTS ${quoteIdent(n.dropTrigger)}`,
    `DROP FUNCTION IF EXISTS ${n.endFunction}()`, `DROP FUNCTION IF EXISTS ${n.dropFunction}()`, identityUndoSql(migration), `DROP TABLE IF EXISTS ${n.log}`, `DROP TABLE IF EXISTS ${n.leftOut}`,
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

/** --include/--exclude names as a JSON literal of {s: schema or null, n: name} (a bare name matches in every schema, as at start). */
function namesLiteral(names: string[]): string {
  return `${quoteLiteral(JSON.stringify(names.map((x) => { const q = splitQualified(x); return { s: q.schema ?? null, n: q.name }; })))}::pg_catalog.jsonb`;
}

/** SQL: does one of the names in `list` (a namesLiteral) name the relation `schema`.`name`? */
function namedIn(list: string, schema: string, name: string): string {
  return `EXISTS (SELECT 1 FROM pg_catalog.jsonb_array_elements(${list}) e WHERE e->>'n' = ${name} AND (e->>'s' IS NULL OR e->>'s' = ${schema}))`;
}

/** How start shaped the migration, which the capture follows. */
export interface CaptureOptions {
  /**
   * Start's --include/--exclude, which a table DDL creates or renames while streaming obeys like one present at start
   * (docs/design.md, "DDL and the table selection").
   */
  selection?: { include: string[]; exclude: string[] };
  /**
   * The migration kept the source's owners (start's rule), so each statement's log row also carries the owners of the
   * objects it listed, which the target gives them after replaying it (./owners.ts).
   */
  keepOwnership?: boolean;
}

/** The statements creating the capture for these schemas and this publication (replaced if present: a re-run converges). */
export function captureSql(migration: string, schemas: string[], publication: string, o: CaptureOptions = {}): string[] {
  const selection = o.selection ?? { include: [], exclude: [] }, keepOwnership = !!o.keepOwnership;
  const n = captureNames(migration);
  const excl = namesLiteral(selection.exclude), incl = namesLiteral(selection.include);
  const arr = `ARRAY[${schemas.map(quoteLiteral).join(", ") || "NULL"}]::text[]`;
  const flag = quoteLiteral(`pgferry.ddl_dropped_${migration}`);
  const inner = quoteLiteral(`pgferry.ddl_inner_${migration}`);
  // Columns (relid.attnum) this transaction already backfilled.
  const handled = quoteLiteral(`pgferry.ddl_backfilled_${migration}`);
  return [
    `CREATE SCHEMA IF NOT EXISTS ${S}`,
    `CREATE TABLE IF NOT EXISTS ${n.log} (id bigserial PRIMARY KEY, payload text NOT NULL)`,
    `REVOKE ALL ON TABLE ${n.log} FROM PUBLIC`,
    `CREATE TABLE IF NOT EXISTS ${n.leftOut} (relid oid PRIMARY KEY)`,
    `REVOKE ALL ON TABLE ${n.leftOut} FROM PUBLIC`,
    // SECURITY DEFINER: it reads the left-out relations, which no other role may read or write.
    `CREATE OR REPLACE FUNCTION ${n.dropFunction}() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $pgferry$
BEGIN
  -- A DROP whose own objects are all relations the migration leaves out (a table --exclude names, or one recorded as left
  -- out: at start, or by the capture since; their indexes and owned sequences too) is not the migration's: the target has
  -- none of them, nothing to replay.
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger_dropped_objects() d WHERE d.object_type = 'schema' AND d.object_name = ANY (${arr}))
     OR (EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger_dropped_objects() d WHERE d.schema_name = ANY (${arr}))
         AND NOT (EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger_dropped_objects() d WHERE d.original AND d.schema_name = ANY (${arr}))
                  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger_dropped_objects() d WHERE d.original AND d.schema_name = ANY (${arr})
                                   AND NOT (d.object_type = 'table' AND ${namedIn(excl, "d.schema_name", "d.object_name")})
                                   AND NOT (d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND EXISTS (SELECT 1 FROM ${n.leftOut} x WHERE x.relid = d.objid))))) THEN
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
  v_volatile jsonb := '[]';
  v_done text; v_reason text; v_bad text; v_setcol text; v_sets text; v_err text; v_prev_role text; v_seqs jsonb; v_seq text; v_col text; v_lastval text; v_called boolean;
  v_vol record;
  v_owners jsonb := '[]';
  v_owners_err text;
  -- The table selection (docs/design.md, "DDL and the table selection"): relations this statement touches that the
  -- migration leaves out (not published, not replayed), the reasons it cannot be carried, what it carries.
  v_skip oid[] := '{}'; v_skipped text[] := '{}'; v_created jsonb := '[]'; v_refuse text[] := '{}'; v_carry int := 0; v_other int := 0;
  v_own boolean; v_rootx boolean; v_left boolean; v_rs text; v_rn text; v_rename boolean; v_selection jsonb;
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
  -- Which relations the statement touches (a column, index, constraint, trigger, rule, policy or owned sequence by its
  -- table), judged against start's --include/--exclude like a table present at start: a new table --exclude names (or a
  -- partition of a table the migration leaves out) is left out: not published, not replayed, not compared. A rename
  -- that moves a migrated table under an --exclude name, or a left-out one out of it, and a new partition --exclude
  -- names of a migrated table (its rows go through the root) cannot follow the selection: the applier refuses the
  -- statement (ddl_selection) before anything of it is applied.
  v_rename := pg_catalog.current_query() ~* '\\mRENAME\\s+TO\\M';
  SELECT pg_catalog.count(*) INTO v_other FROM pg_catalog.pg_event_trigger_ddl_commands() c
   WHERE c.schema_name = ANY (${arr}) AND c.classid NOT IN ('pg_catalog.pg_class'::pg_catalog.regclass, 'pg_catalog.pg_constraint'::pg_catalog.regclass,
     'pg_catalog.pg_trigger'::pg_catalog.regclass, 'pg_catalog.pg_rewrite'::pg_catalog.regclass, 'pg_catalog.pg_policy'::pg_catalog.regclass,
     'pg_catalog.pg_statistic_ext'::pg_catalog.regclass, 'pg_catalog.pg_attrdef'::pg_catalog.regclass);
  FOR t IN SELECT r.rel, r.created, r.altered, k.relkind, k.relpersistence, k.relname, ns.nspname,
                  coalesce((SELECT a.relid FROM pg_catalog.pg_partition_ancestors(r.rel) a JOIN pg_catalog.pg_class ac ON ac.oid = a.relid
                             WHERE NOT ac.relispartition), r.rel) AS root
             FROM (SELECT x.rel, pg_catalog.bool_or(x.created) AS created, pg_catalog.bool_or(x.altered) AS altered FROM (
                     SELECT CASE c.classid
                       WHEN 'pg_catalog.pg_class'::pg_catalog.regclass THEN coalesce(
                         (SELECT i.indrelid FROM pg_catalog.pg_index i WHERE i.indexrelid = c.objid),
                         (SELECT d.refobjid FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.objid
                             AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i') LIMIT 1),
                         c.objid)
                       WHEN 'pg_catalog.pg_constraint'::pg_catalog.regclass THEN (SELECT CASE WHEN x.conrelid <> 0 THEN x.conrelid END FROM pg_catalog.pg_constraint x WHERE x.oid = c.objid)
                       WHEN 'pg_catalog.pg_trigger'::pg_catalog.regclass THEN (SELECT x.tgrelid FROM pg_catalog.pg_trigger x WHERE x.oid = c.objid)
                       WHEN 'pg_catalog.pg_rewrite'::pg_catalog.regclass THEN (SELECT x.ev_class FROM pg_catalog.pg_rewrite x WHERE x.oid = c.objid)
                       WHEN 'pg_catalog.pg_policy'::pg_catalog.regclass THEN (SELECT x.polrelid FROM pg_catalog.pg_policy x WHERE x.oid = c.objid)
                       WHEN 'pg_catalog.pg_statistic_ext'::pg_catalog.regclass THEN (SELECT x.stxrelid FROM pg_catalog.pg_statistic_ext x WHERE x.oid = c.objid)
                       WHEN 'pg_catalog.pg_attrdef'::pg_catalog.regclass THEN (SELECT x.adrelid FROM pg_catalog.pg_attrdef x WHERE x.oid = c.objid)
                     END AS rel,
                     c.command_tag = 'CREATE TABLE' AND c.object_type = 'table' AS created,
                     c.command_tag = 'ALTER TABLE' AND c.object_type = 'table' AS altered
                     FROM pg_catalog.pg_event_trigger_ddl_commands() c WHERE c.schema_name = ANY (${arr})) x
                   WHERE x.rel IS NOT NULL GROUP BY x.rel) r
             JOIN pg_catalog.pg_class k ON k.oid = r.rel JOIN pg_catalog.pg_namespace ns ON ns.oid = k.relnamespace LOOP
    IF t.relkind NOT IN ('r', 'p') THEN v_carry := v_carry + 1; CONTINUE; END IF;
    SELECT rn.nspname, rk.relname INTO v_rs, v_rn FROM pg_catalog.pg_class rk JOIN pg_catalog.pg_namespace rn ON rn.oid = rk.relnamespace WHERE rk.oid = t.root;
    v_own := ${namedIn(excl, "t.nspname", "t.relname")};
    v_rootx := t.root <> t.rel AND ${namedIn(excl, "v_rs", "v_rn")};
    -- Left out: by start (its exclusion plan) or by this capture since, recorded by oid (renamed too).
    v_left := EXISTS (SELECT 1 FROM ${n.leftOut} x WHERE x.relid IN (t.rel, t.root));
    IF t.created AND t.root = t.rel THEN
      IF v_own THEN
        v_skip := v_skip || t.rel; v_skipped := v_skipped || pg_catalog.format('%I.%I', t.nspname, t.relname);
        v_created := v_created || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('oid', t.rel::text, 'table', pg_catalog.format('%I.%I', t.nspname, t.relname)));
      ELSE v_carry := v_carry + 1; END IF;
    ELSIF t.created AND (v_rootx OR v_left) THEN
      -- A partition of a table the migration leaves out goes with it.
      v_skip := v_skip || t.rel; v_skipped := v_skipped || pg_catalog.format('%I.%I', t.nspname, t.relname);
      v_created := v_created || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('oid', t.rel::text, 'table', pg_catalog.format('%I.%I', t.nspname, t.relname),
        'partitionOf', pg_catalog.format('%I.%I', v_rs, v_rn)));
    ELSIF t.created AND v_own THEN
      v_refuse := v_refuse || pg_catalog.format('it creates %I.%I, a partition of %I.%I, which the migration carries, and --exclude names the partition: its rows are published through its root, so it cannot be left out', t.nspname, t.relname, v_rs, v_rn);
    ELSIF t.created THEN
      v_carry := v_carry + 1;
    ELSIF NOT v_left AND (v_own OR v_rootx) THEN
      v_refuse := v_refuse || pg_catalog.format('%I.%I, a table the migration carries, now has a name --exclude names%s: the target would keep replicating a table the selection leaves out, and neither the cutover''s gate nor verify would compare it', t.nspname, t.relname,
        CASE WHEN v_rootx THEN pg_catalog.format(' (its partitioned table %I.%I)', v_rs, v_rn) ELSE '' END);
    ELSIF NOT v_left THEN
      v_carry := v_carry + 1;
    ELSIF v_rename AND t.altered AND NOT v_own AND NOT v_rootx AND (pg_catalog.jsonb_array_length(${incl}) = 0 OR ${namedIn(incl, "v_rs", "v_rn")}) THEN
      v_refuse := v_refuse || pg_catalog.format('it renames a table the migration leaves out (--exclude or --include left it out: it is not on the target) to %I.%I, a name the selection takes: its rows were never copied to the target, and pgferry cannot copy a table while streaming', t.nspname, t.relname);
    ELSE
      -- A table the migration leaves out (--exclude, --include, or what depends on them, at start or since): not on the target.
      v_skip := v_skip || t.rel; v_skipped := v_skipped || pg_catalog.format('%I.%I', t.nspname, t.relname);
    END IF;
  END LOOP;
  IF pg_catalog.array_length(v_skip, 1) > 0 THEN
    INSERT INTO ${n.leftOut} (relid)
      SELECT x FROM pg_catalog.unnest(v_skip) x
      UNION SELECT i.indexrelid FROM pg_catalog.pg_index i WHERE i.indrelid = ANY (v_skip)
      UNION SELECT d.objid FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
              AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = ANY (v_skip) AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
      ON CONFLICT DO NOTHING;
  END IF;
  IF pg_catalog.array_length(v_refuse, 1) > 0 THEN
    v_selection := pg_catalog.jsonb_build_object('action', 'refuse', 'reason', pg_catalog.array_to_string(v_refuse, '; '));
  ELSIF pg_catalog.array_length(v_skip, 1) > 0 AND (v_carry > 0 OR v_other > 0) THEN
    v_selection := pg_catalog.jsonb_build_object('action', 'refuse', 'reason', pg_catalog.format('it changes tables the migration leaves out (%s) together with objects it carries: replayed, it would fail on the target, where those tables are not; left out, the target would miss the rest', pg_catalog.array_to_string(v_skipped, ', ')));
  ELSIF pg_catalog.array_length(v_skip, 1) > 0 THEN
    v_selection := pg_catalog.jsonb_build_object('action', 'skip', 'tables', pg_catalog.to_jsonb(v_skipped), 'created', v_created);
  END IF;
  -- A table created in a migrated schema joins the migration: published from now on, in this transaction
  -- (partitions are published through their root).
  FOR t IN SELECT DISTINCT c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() c JOIN pg_catalog.pg_class k ON k.oid = c.objid
            WHERE c.command_tag = 'CREATE TABLE' AND c.object_type = 'table' AND c.schema_name = ANY (${arr})
              AND k.relkind IN ('r', 'p') AND NOT k.relispartition AND k.relpersistence = 'p' AND NOT c.objid = ANY (v_skip) LOOP
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
              AND k.relkind = 'r' AND k.relpersistence = 'p' AND k.relreplident = 'd' AND NOT c.objid = ANY (v_skip)
              AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index x WHERE x.indrelid = k.oid AND x.indisprimary)
              AND EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = ${quoteLiteral(publication)}) LOOP
    PERFORM pg_catalog.set_config(${inner}, 'on', true);
    EXECUTE pg_catalog.format('ALTER TABLE %s REPLICA IDENTITY FULL', t.objid::regclass);
    PERFORM pg_catalog.set_config(${inner}, '', true);
    identity := identity || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('schema', t.nspname, 'name', t.relname, 'oid', t.objid::text));
  END LOOP;
  -- Columns this transaction added (their catalog row is its own: age() <= 0 is this transaction's xid or a later one, a
  -- subtransaction's too) with a default that is not a constant, or an identity (no pg_attrdef row): the target would
  -- compute other values (now(), random(), nextval(), serial, clock_timestamp(), gen_random_uuid()).
  SELECT coalesce(pg_catalog.jsonb_agg(DISTINCT a.attname), '[]') INTO added
    FROM pg_catalog.pg_event_trigger_ddl_commands() c
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.objid
    LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
   WHERE c.command_tag = 'ALTER TABLE' AND c.object_type IN ('table', 'table column') AND a.attnum > 0 AND NOT a.attisdropped
     AND a.attgenerated = '' AND pg_catalog.age(a.xmin) <= 0
     AND (a.attidentity <> '' OR d.adbin::text ~ '\\{(SQLVALUEFUNCTION|NEXTVALUEEXPR) ' OR EXISTS (
          SELECT 1 FROM pg_catalog.regexp_matches(d.adbin::text, ':(?:op)?funcid (\\d+)', 'g') f(m)
            JOIN pg_catalog.pg_proc p ON p.oid = f.m[1]::oid WHERE p.provolatile <> 'i'));
  -- The same columns per table, each backfilled once per transaction (a later statement of it sees them too): the
  -- source's values reach the target as row changes right after this row (docs/design.md, "Volatile defaults").
  -- Carried only when the rows can be matched on the target without the new column: every table of the tree has a
  -- key (REPLICA IDENTITY DEFAULT with a primary key, or USING INDEX); else the reason goes into the payload and the
  -- applier refuses the statement (ddl_volatile_default).
  v_done := coalesce(pg_catalog.current_setting(${handled}, true), '');
  FOR t IN SELECT c.objid AS rel, pg_catalog.array_agg(a.attname::text ORDER BY a.attnum) AS cols, pg_catalog.array_agg(a.attnum ORDER BY a.attnum) AS nums,
                  coalesce(pg_catalog.array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE a.attidentity = 'a'), '{}') AS always,
                  -- Variable-length ones the backfill writes anew (SET c = (c::text || '')::type; c = c, or a no-op cast such as
                  -- text::text, keeps the stored pointer): pgoutput sends a value stored out of line (TOAST) that an UPDATE kept
                  -- as "unchanged", which would leave the target's own value in place; a new datum gets new TOAST chunks in this
                  -- transaction, which the decoder puts back into the row it sends (checked with test_decoding on 15).
                  coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('column', a.attname, 'type', pg_catalog.format_type(a.atttypid, a.atttypmod)))
                    FILTER (WHERE a.attlen = -1 AND a.attidentity = ''), '[]') AS rewrite
             FROM (SELECT DISTINCT x.objid FROM pg_catalog.pg_event_trigger_ddl_commands() x
                    WHERE x.command_tag = 'ALTER TABLE' AND x.object_type IN ('table', 'table column') AND x.schema_name = ANY (${arr})
                      AND NOT x.objid = ANY (v_skip)) c
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.objid
             LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' AND pg_catalog.age(a.xmin) <= 0
              AND NOT (c.objid::text || '.' || a.attnum::text) = ANY (pg_catalog.string_to_array(v_done, ','))
              -- Added by this statement (an ALTER COLUMN TYPE of a serial column rewrites its catalog row too, but its values stay).
              AND pg_catalog.current_query() ~* ('\\mADD\\s+(COLUMN\\s+)?(IF\\s+NOT\\s+EXISTS\\s+)?(' || pg_catalog.quote_ident(a.attname) || '|"' || pg_catalog.replace(a.attname, '"', '""') || '")(?![[:alnum:]_$])')
              AND (a.attidentity <> '' OR d.adbin::text ~ '\\{(SQLVALUEFUNCTION|NEXTVALUEEXPR) ' OR EXISTS (
                   SELECT 1 FROM pg_catalog.regexp_matches(d.adbin::text, ':(?:op)?funcid (\\d+)', 'g') f(m)
                     JOIN pg_catalog.pg_proc p ON p.oid = f.m[1]::oid WHERE p.provolatile <> 'i'))
            GROUP BY c.objid LOOP
    v_reason := NULL;
    v_setcol := NULL;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_rel r JOIN pg_catalog.pg_publication p ON p.oid = r.prpubid
                    WHERE p.pubname = ${quoteLiteral(publication)} AND r.prrelid = t.rel) THEN
      v_reason := 'the table is not in the migration''s publication';
    END IF;
    -- The backfill's UPDATE must be matched on the target by a key the target already has: under REPLICA IDENTITY FULL
    -- (or without a key) its old row carries the source's new value, which the target lacks. Partitions and inheritance
    -- children are updated through the table: each must have one.
    IF v_reason IS NULL THEN
      SELECT pg_catalog.string_agg(k.oid::regclass::text, ', ') INTO v_bad
        FROM (WITH RECURSIVE tree AS (SELECT t.rel AS oid UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent = tree.oid)
              SELECT oid FROM tree) tr JOIN pg_catalog.pg_class k ON k.oid = tr.oid
       WHERE k.relkind IN ('r', 'p') AND NOT (
             (k.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_catalog.pg_index x WHERE x.indrelid = k.oid AND x.indisprimary))
          OR (k.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_catalog.pg_index x WHERE x.indrelid = k.oid AND x.indisreplident)));
      IF v_bad IS NOT NULL THEN
        v_reason := pg_catalog.format('%s has no key to match the backfill''s rows by (REPLICA IDENTITY FULL or NOTHING, or no primary key): its old rows would carry the new column''s value, which the target lacks', v_bad);
      END IF;
    END IF;
    -- A unique index or exclusion constraint on the new column, made by the same statement: the target computes its own
    -- values first, and setting the source's row by row could collide with a value another row still holds.
    IF v_reason IS NULL AND EXISTS (SELECT 1 FROM pg_catalog.pg_index x WHERE x.indrelid = t.rel AND (x.indisunique OR x.indisexclusion)
                                     AND x.indkey::int2[] && t.nums) THEN
      v_reason := 'a unique index or exclusion constraint on the new column comes with it: the target computes its own values first, and setting the source''s could collide row by row';
    END IF;
    -- The column the backfill sets to itself: a key column first (an identity ALWAYS one can only be set to DEFAULT).
    IF v_reason IS NULL THEN
      SELECT a.attname INTO v_setcol FROM pg_catalog.pg_attribute a
       WHERE a.attrelid = t.rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' AND a.attidentity <> 'a'
       ORDER BY EXISTS (SELECT 1 FROM pg_catalog.pg_index x WHERE x.indrelid = t.rel AND (x.indisprimary OR x.indisreplident) AND a.attnum = ANY (x.indkey::int2[])) DESC,
                a.attlen > 0 DESC, a.attnum LIMIT 1;
      IF v_setcol IS NULL THEN v_reason := 'every column is an identity GENERATED ALWAYS or a generated column: no column can be updated to itself'; END IF;
    END IF;
    v_volatile := v_volatile || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('table', t.rel::regclass::text, 'oid', t.rel::text,
      'columns', pg_catalog.to_jsonb(t.cols), 'always', pg_catalog.to_jsonb(t.always), 'setColumn', v_setcol, 'rewrite', t.rewrite, 'reason', v_reason));
    v_done := v_done || ',' || (SELECT pg_catalog.string_agg(t.rel::text || '.' || n::text, ',') FROM pg_catalog.unnest(t.nums) n);
  END LOOP;
  PERFORM pg_catalog.set_config(${handled}, v_done, true);
  -- The source owners of the objects this command listed (created or altered), given to them on the target after the
  -- statement (./owners.ts); only when the migration keeps ownership.
  -- A failure here must not fail the user's DDL: it goes into the row, and the target refuses the statement (ddl_owner).
  ${keepOwnership ? `BEGIN
    ${captureOwnersSql(arr, "v_owners")};
  EXCEPTION WHEN OTHERS THEN v_owners := NULL; v_owners_err := SQLERRM;
  END;` : "-- not recorded: the migration did not keep ownership (start named it)"}
  INSERT INTO ${n.log} (payload) VALUES (pg_catalog.jsonb_build_object('v', 1, 'sql', current_query(),
    'commands', cmds, 'searchPath', caller_path, 'nonConstantDefaults', added, 'dropped', dropped, 'identityFull', identity,
    'volatile', v_volatile, 'selection', v_selection${keepOwnership ? ", 'owners', v_owners, 'ownersError', v_owners_err" : ""})::text);
  -- The backfill: every row of each such table updated once, in this transaction right after the log row, so the
  -- source's values of the new columns stream to the target at their place. session_replication_role = replica keeps
  -- the source's ordinary triggers and rules (and foreign key checks) from firing: the rows do not change. A failure
  -- (a NOT VALID check the rows break, …) must not fail the user's DDL: it is recorded in the second row and the
  -- applier refuses there (nothing of this transaction applied). The second row carries what the target must put in
  -- place after the values: GENERATED ALWAYS back, and the owned sequences' position (serial, identity).
  FOR v_vol IN SELECT e FROM pg_catalog.jsonb_array_elements(v_volatile) e WHERE e->>'reason' IS NULL LOOP
    v_err := NULL;
    v_prev_role := pg_catalog.current_setting('session_replication_role');
    PERFORM pg_catalog.set_config('session_replication_role', 'replica', true);
    BEGIN
      SELECT pg_catalog.string_agg(pg_catalog.format('%I = (%I::pg_catalog.text OPERATOR(pg_catalog.||) '''')::%s', r->>'column', r->>'column', r->>'type'), ', ')
        INTO v_sets FROM pg_catalog.jsonb_array_elements(v_vol.e->'rewrite') r;
      IF NOT EXISTS (SELECT 1 FROM pg_catalog.jsonb_array_elements(v_vol.e->'rewrite') r WHERE r->>'column' = v_vol.e->>'setColumn') THEN
        v_sets := pg_catalog.concat_ws(', ', pg_catalog.format('%I = %I', v_vol.e->>'setColumn', v_vol.e->>'setColumn'), v_sets);
      END IF;
      EXECUTE pg_catalog.format('UPDATE %s SET %s', (v_vol.e->>'oid')::oid::regclass, v_sets);
    EXCEPTION WHEN OTHERS THEN v_err := SQLERRM;
    END;
    PERFORM pg_catalog.set_config('session_replication_role', v_prev_role, true);
    v_seqs := '[]';
    FOR v_col IN SELECT pg_catalog.jsonb_array_elements_text(v_vol.e->'columns') LOOP
      v_seq := pg_catalog.pg_get_serial_sequence((v_vol.e->>'oid')::oid::regclass::text, v_col);
      IF v_seq IS NOT NULL THEN
        EXECUTE pg_catalog.format('SELECT last_value::text, is_called FROM %s', v_seq) INTO v_lastval, v_called;
        v_seqs := v_seqs || pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object('column', v_col, 'lastValue', v_lastval, 'isCalled', v_called));
      END IF;
    END LOOP;
    INSERT INTO ${n.log} (payload) VALUES (pg_catalog.jsonb_build_object('v', 1, 'kind', 'after-backfill', 'table', v_vol.e->>'table',
      'columns', v_vol.e->'columns', 'always', v_vol.e->'always', 'sequences', v_seqs, 'error', v_err)::text);
  END LOOP;
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
export async function installDdlCapture(src: Client, tgt: Client, migration: string, schemas: string[], publication: string,
  o: CaptureOptions = {}, leftOut: { schema: string; name: string }[] = []): Promise<SourceChange> {
  const n = captureNames(migration);
  const change = await recordSourceChange(tgt, migration, {
    object: `event trigger ${n.endTrigger}`, kind: "ddl_capture",
    change: `event triggers ${n.endTrigger} and ${n.dropTrigger} with their functions and log table ${n.log} (--ddl replicate) capture DDL on ${schemas.join(", ")}`,
    undoSql: captureUndoSql(migration),
  });
  await src.query("BEGIN");
  try {
    for (const sql of captureSql(migration, schemas, publication, o)) await src.query(sql);
    // What start leaves out (--exclude, --include, what depends on them), with their indexes and owned sequences.
    if (leftOut.length) {
      await src.query(`WITH rel AS (SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace
          JOIN ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[])) AS l(s, n) ON l.s = ns.nspname AND l.n = c.relname)
        INSERT INTO ${n.leftOut} (relid) SELECT oid FROM rel UNION SELECT i.indexrelid FROM pg_catalog.pg_index i WHERE i.indrelid IN (SELECT oid FROM rel)
          UNION SELECT d.objid FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
            AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid IN (SELECT oid FROM rel) AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i')
        ON CONFLICT DO NOTHING`, [leftOut.map((x) => x.schema), leftOut.map((x) => x.name)]);
    }
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

/**
 * Tables created on the source while streaming that start's selection leaves out (--exclude names them, or they are
 * partitions of a left-out table), which the capture left out like at start (not published, not created on the
 * target, not compared), by their current name; read from the source's log (the capture writes them into the
 * statement's row).
 */
export async function tablesLeftOutByDdl(src: Client, migration: string): Promise<string[]> {
  const n = captureNames(migration);
  const has = await src.query(`SELECT to_regclass($1) IS NOT NULL AS e`, [n.log]);
  if (!has.rows[0].e) return [];
  const r = await src.query(`SELECT DISTINCT quote_ident(ns.nspname) || '.' || quote_ident(k.relname) AS t
    FROM ${n.log} l, jsonb_array_elements(coalesce(l.payload::jsonb->'selection'->'created', '[]')) e
    JOIN pg_class k ON k.oid = (e->>'oid')::oid JOIN pg_namespace ns ON ns.oid = k.relnamespace
    WHERE l.payload::jsonb->'selection'->>'action' = 'skip' ORDER BY 1`);
  return r.rows.map((x) => x.t as string);
}

/** Is the capture installed and enabled on the source? */
export async function ddlCaptureInstalled(src: Client, migration: string): Promise<boolean> {
  const n = captureNames(migration);
  const r = await src.query(`SELECT count(*)::int AS n FROM pg_event_trigger WHERE evtname IN ($1, $2) AND evtenabled <> 'D'`, [n.endTrigger, n.dropTrigger]);
  return r.rows[0].n === 2;
}
