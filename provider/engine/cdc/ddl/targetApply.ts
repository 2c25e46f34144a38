/**
 * `--ddl replicate` in subscription mode, the target half: the capture's log table (./capture.ts) is published, so the
 * subscription's apply worker inserts each captured statement into the target's copy of `pgferry.ddl_log_<name>` at
 * its place in the source transaction. An `ENABLE ALWAYS` row trigger on that table (apply workers run with
 * session_replication_role = replica, where ordinary triggers do not fire) judges the statement as ./statement.ts does
 * and runs it inside the apply worker's transaction: between the changes before and after it, exactly once (the
 * worker's origin progress commits with it). A refusal raises: the worker stops before the statement and retries that
 * transaction, nothing after it is applied; the refusal is also kept in a sequence (./refusal.ts), which status and
 * cutover read to name its code, the source's statement and the fix.
 *
 * A row of kind "after-backfill" (a column added with a non-immutable default or identity: the backfill's row changes
 * came before it) puts GENERATED ALWAYS and the owned sequences' position in place; the apply worker sets identity
 * columns like any other, so the backfill needs no BY DEFAULT step here (the stream applier's UPDATE does).
 *
 * CREATE TABLE runs here like any DDL (the table exists from its place on); the worker skips the new table's changes
 * until the subscription lists it, which REFRESH PUBLICATION (copy_data = true) does from outside the worker's
 * transaction: the cutover's new-tables steps (./newTables.ts; docs/design.md, "DDL replication").
 */
import { Client } from "pg";
import { CONTROL_SCHEMA } from "../../catalog/catalog";
import { quoteIdent, quoteLiteral } from "../../core/endpoint";
import { ddlLogTableName } from "./capture";
import { refusalHandlerSql, refusalSequence, refusalSequenceSql } from "./refusal";
import { targetOwnersPlpgsql } from "./owners";
import { SELECTION_FIX } from "./statement";

const S = quoteIdent(CONTROL_SCHEMA);

function names(migration: string) {
  return { log: `${S}.${quoteIdent(ddlLogTableName(migration))}`, fn: `${S}.${quoteIdent(`ddl_apply_${migration}`)}`, trigger: "pgferry_ddl_apply" };
}

/** The statements creating the target's log table and its trigger (replaced if present). */
export function targetApplySql(migration: string): string[] {
  const n = names(migration);
  return [
    `CREATE TABLE IF NOT EXISTS ${n.log} (id bigint PRIMARY KEY, payload text NOT NULL)`,
    refusalSequenceSql(migration),
    `CREATE OR REPLACE FUNCTION ${n.fn}() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $pgferry$
DECLARE
  p jsonb := NEW.payload::jsonb;
  q text := p->>'sql';
  code text := '';
  stmts int := 0;
  cur text := '';
  i int := 1;
  n int := length(q);
  ch text; nx text; tag text; j int; depth int;
  verb text;
  col text;
  summary text := left(regexp_replace(q, '\\s+', ' ', 'g'), 200);
  v_seq jsonb;
  v_why text;
  v_owner jsonb;
  v_step record;
BEGIN
  -- The capture's row after a backfill: the source's values of the new columns are in (the backfill's row changes came
  -- before it, in this transaction). GENERATED ALWAYS (the apply worker's UPDATE sets identity columns like any other)
  -- and the owned sequences' position as on the source; a backfill the source could not run stops the worker here.
  IF p->>'kind' = 'after-backfill' THEN
    IF p->>'error' IS NOT NULL THEN
      RAISE EXCEPTION 'ddl_volatile_default: DDL replication stopped: the source could not backfill % (column(s) %, added with a default that is not immutable): %. Nothing from its source transaction or after it was applied. Fix: run pgferry cleanup and start again', p->>'table', p->'columns', p->>'error';
    END IF;
    FOR col IN SELECT jsonb_array_elements_text(p->'always') LOOP
      EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET GENERATED ALWAYS', p->>'table', col);
    END LOOP;
    FOR v_seq IN SELECT jsonb_array_elements(p->'sequences') LOOP
      PERFORM setval(pg_get_serial_sequence(p->>'table', v_seq->>'column'), (v_seq->>'lastValue')::bigint, (v_seq->>'isCalled')::boolean);
    END LOOP;
    RETURN NULL;
  END IF;
  -- Start's --include/--exclude, applied by the capture (./capture.ts): a statement on tables the migration leaves out only
  -- is not the target's (they are not here); one moving a table across the selection stops the worker (./statement.ts).
  IF p->'selection'->>'action' = 'skip' THEN RETURN NULL; END IF;
  IF p->'selection'->>'action' = 'refuse' THEN
    RAISE EXCEPTION 'ddl_selection: DDL replication stopped before the source''s query "%": %. Nothing from it or after it was applied. Fix: %', summary, p->'selection'->>'reason', ${quoteLiteral(SELECTION_FIX)};
  END IF;
  -- Split at top-level semicolons: quotes, quoted identifiers, dollar quotes and comments kept whole (./statement.ts).
  WHILE i <= n LOOP
    ch := substr(q, i, 1); nx := substr(q, i + 1, 1);
    IF ch = '-' AND nx = '-' THEN
      j := strpos(substr(q, i), E'\\n'); i := CASE WHEN j = 0 THEN n + 1 ELSE i + j - 1 END; cur := cur || ' ';
    ELSIF ch = '/' AND nx = '*' THEN
      depth := 1; i := i + 2;
      WHILE i <= n AND depth > 0 LOOP
        IF substr(q, i, 2) = '/*' THEN depth := depth + 1; i := i + 2;
        ELSIF substr(q, i, 2) = '*/' THEN depth := depth - 1; i := i + 2;
        ELSE i := i + 1; END IF;
      END LOOP;
      cur := cur || ' ';
    ELSIF ch = '''' OR ch = '"' THEN
      j := i + 1;
      WHILE j <= n LOOP
        IF ch = '''' AND substr(q, j, 1) = '\\' AND upper(substr(q, i - 1, 1)) = 'E' THEN j := j + 2; CONTINUE; END IF;
        IF substr(q, j, 1) = ch THEN
          IF substr(q, j + 1, 1) = ch THEN j := j + 2; CONTINUE; END IF;
          EXIT;
        END IF;
        j := j + 1;
      END LOOP;
      cur := cur || substr(q, i, j - i + 1); i := j + 1;
    ELSIF ch = '$' AND (i = 1 OR substr(q, i - 1, 1) !~ '[A-Za-z0-9_]') AND substr(q, i) ~ '^\\$([A-Za-z_][A-Za-z0-9_]*)?\\$' THEN
      tag := substring(substr(q, i) FROM '^(\\$([A-Za-z_][A-Za-z0-9_]*)?\\$)');
      j := strpos(substr(q, i + length(tag)), tag);
      j := CASE WHEN j = 0 THEN n + 1 ELSE i + length(tag) + j - 1 + length(tag) END;
      cur := cur || substr(q, i, j - i); i := j;
    ELSIF ch = ';' THEN
      IF btrim(cur) <> '' THEN stmts := stmts + 1; code := btrim(cur); END IF;
      cur := ''; i := i + 1;
    ELSE
      cur := cur || ch; i := i + 1;
    END IF;
  END LOOP;
  IF btrim(cur) <> '' THEN stmts := stmts + 1; code := btrim(cur); END IF;
  IF stmts <> 1 THEN
    RAISE EXCEPTION 'ddl_multi_statement: DDL replication stopped before the source''s query "%": it holds % statements in one query string; nothing from it or after it was applied. Fix: run pgferry cleanup and start again; send DDL as a statement of its own', summary, stmts;
  END IF;
  verb := upper(substring(code FROM '^[A-Za-z]+'));
  IF verb IS NULL OR verb NOT IN ('CREATE', 'ALTER', 'DROP', 'COMMENT', 'GRANT', 'REVOKE', 'REFRESH', 'REINDEX', 'SECURITY', 'IMPORT') THEN
    RAISE EXCEPTION 'ddl_not_top_level: DDL replication stopped before the source''s query "%": the DDL ran inside it (function, DO block, procedure); nothing from it or after it was applied. Fix: run pgferry cleanup and start again; run DDL as top-level statements', summary;
  END IF;
  IF EXISTS (SELECT 1 FROM jsonb_array_elements(p->'commands') c WHERE c->>'tag' IN ('CREATE TABLE AS', 'SELECT INTO')) THEN
    RAISE EXCEPTION 'ddl_unsupported: DDL replication stopped before the source''s query "%": the rows it wrote are not in the stream (the table joins the publication after them); nothing from it or after it was applied. Fix: run pgferry cleanup and start again; from then on, use CREATE TABLE and then INSERT … SELECT (the rows replicate)', summary;
  END IF;
  -- A column added with a non-immutable default is carried when the capture backfilled it (its values follow as row changes).
  FOR col IN SELECT jsonb_array_elements_text(coalesce(p->'nonConstantDefaults', '[]')) LOOP
    IF code ~* ('\\mADD\\s+(COLUMN\\s+)?(IF\\s+NOT\\s+EXISTS\\s+)?(' || quote_ident(col) || '|"' || replace(col, '"', '""') || '")(?![[:alnum:]_$])')
       AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(coalesce(p->'volatile', '[]')) v WHERE v->>'reason' IS NULL AND v->'columns' ? col) THEN
      SELECT string_agg(DISTINCT v->>'reason', '; ') INTO v_why FROM jsonb_array_elements(coalesce(p->'volatile', '[]')) v WHERE v->'columns' ? col;
      RAISE EXCEPTION 'ddl_volatile_default: DDL replication stopped before the source''s query "%": it adds column % with a default that is not immutable, and the source could not send its values as row changes (%); the target would compute other values. Nothing from it or after it was applied. Fix: run pgferry cleanup and start again; give such a table a primary key before adding such a column, add a unique constraint on it in a statement of its own, or add the column without a default, then SET DEFAULT and UPDATE', summary, col, coalesce(v_why, 'the capture found no backfill for it');
    END IF;
  END LOOP;
  -- The source session's search_path (transaction-local: the apply worker's transaction), then the statement as sent.
  PERFORM set_config('search_path', p->>'searchPath', true);
  EXECUTE regexp_replace(btrim(q), '^((\\s|--[^\\n]*\\n|/\\*.*?\\*/)*(CREATE\\s+(UNIQUE\\s+)?INDEX|DROP\\s+INDEX|REINDEX\\s+[A-Za-z]+))\\s+CONCURRENTLY\\M', '\\1', 'i');
  PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
  -- The objects it made get their source owners, in this transaction (./owners.ts); a role the target lacks stops here (ddl_owner).
  ${targetOwnersPlpgsql("p", "summary")}
  -- A key-less new table (the source gave it REPLICA IDENTITY FULL): the apply and tablesync workers match its rows
  -- with each column's default equality; a column type without one (json, point, xml) would stop them at its first
  -- UPDATE/DELETE. Refused here, before anything of its transaction is applied (stream mode matches such rows exactly).
  SELECT string_agg(format('%I.%I.%I (%s)', e->>'schema', e->>'name', a.attname, format_type(a.atttypid, a.atttypmod)), ', ') INTO col
    FROM jsonb_array_elements(coalesce(p->'identityFull', '[]')) e
    JOIN pg_namespace ns ON ns.nspname = e->>'schema' JOIN pg_class k ON k.relnamespace = ns.oid AND k.relname = e->>'name'
    JOIN pg_attribute a ON a.attrelid = k.oid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_type at ON at.oid = a.atttypid
    JOIN pg_type ty ON ty.oid = CASE WHEN at.typtype = 'd' THEN at.typbasetype ELSE at.oid END
   WHERE NOT EXISTS (SELECT 1 FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod
                      WHERE oc.opcdefault AND am.amname IN ('btree', 'hash')
                        AND (oc.opcintype = CASE WHEN ty.typelem <> 0 AND ty.typlen = -1 THEN ty.typelem ELSE ty.oid END
                             OR (oc.opcintype = 'anyenum'::regtype AND ty.typtype = 'e') OR (oc.opcintype = 'anyrange'::regtype AND ty.typtype = 'r')
                             OR (oc.opcintype = 'record'::regtype AND ty.typtype = 'c')));
  IF col IS NOT NULL THEN
    RAISE EXCEPTION 'ddl_unsupported: DDL replication stopped before the source''s query "%": it creates a table without a key (REPLICA IDENTITY FULL on the source) with column(s) % whose type has no equality, which the subscription cannot match rows by; nothing from it or after it was applied. Fix: run pgferry cleanup and start again; give the table a primary key, or use --mode stream', summary, col;
  END IF;
  RETURN NULL;
${refusalHandlerSql(migration)}
END $pgferry$`,
    `DROP TRIGGER IF EXISTS ${n.trigger} ON ${n.log}`,
    `CREATE TRIGGER ${n.trigger} AFTER INSERT ON ${n.log} FOR EACH ROW EXECUTE FUNCTION ${n.fn}()`,
    `ALTER TABLE ${n.log} ENABLE ALWAYS TRIGGER ${n.trigger}`,
  ];
}

/** Create the target's half (before the subscription: CREATE SUBSCRIPTION needs every published table on the target). */
export async function installTargetApply(tgt: Client, migration: string): Promise<void> {
  await tgt.query("BEGIN");
  try {
    for (const sql of targetApplySql(migration)) await tgt.query(sql);
    await tgt.query("COMMIT");
  } catch (e) {
    await tgt.query("ROLLBACK").catch(() => undefined);
    throw e;
  }
}

/** Remove the target's half (after the subscription is gone). */
export async function dropTargetApply(tgt: Client, migration: string): Promise<void> {
  const n = names(migration);
  await tgt.query(`DROP TABLE IF EXISTS ${n.log}; DROP FUNCTION IF EXISTS ${n.fn}(); DROP SEQUENCE IF EXISTS ${refusalSequence(migration)}`);
}
