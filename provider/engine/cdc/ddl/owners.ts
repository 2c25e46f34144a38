/**
 * `--ddl replicate`: the owners of the objects a replayed statement created or altered (docs/design.md, "DDL replication:
 * ownership"). The target runs the source's statement as its own connecting role, so everything it creates belongs to
 * that role; when the migration keeps ownership (every role owning migrated objects existed on the target at start, or
 * --roles created them: the same rule as the schema copy's OWNER TO), each object the statement listed in
 * pg_event_trigger_ddl_commands() is given its source owner, right after the statement, in the same target transaction
 * (a killed applier re-runs both or neither). When the migration did not keep ownership (start named it under "not
 * carried"), the capture records no owners and the target keeps its role as owner, as for every other migrated object.
 *
 * Then the privileges: the object's effective ACL is made the source's (grantStepsSql), the grants the source creator's default
 * privileges gave included.
 *
 * The capture (./capture.ts) records, per object with an owner (tables, partitioned tables, sequences, views, materialized
 * views, foreign tables, functions, procedures, aggregates, types and domains, schemas, collations, conversions,
 * operators, operator classes and families, text search configurations and dictionaries, statistics objects), its
 * address (pg_identify_object_as_address: type, names, args — found again on the target by pg_get_object_address) and
 * its owner's name. Tables come before sequences: a sequence owned by a column (serial, identity) follows its table's
 * ALTER … OWNER TO and refuses one of its own. The target alters only what differs, so a statement on an object whose
 * owner already matches needs no right.
 *
 * A role the target lacks, or one the target's role may not give objects to, stops replication before the statement
 * (ddl_owner, naming the role, the object and the fix) exactly like a statement the target refuses: nothing of its
 * source transaction is applied, and once the role exists (or is granted), the applier retries and goes on.
 */
import { Client } from "pg";
import { PgferryError } from "../../core/errors";

/** One object's source owner, as the capture records it. */
export interface DdlOwner {
  /** pg_identify_object_as_address's type (table, sequence, view, function, type, schema …). */
  type: string;
  names: string[];
  args: string[];
  /** The owner role's name on the source. */
  owner: string;
  /**
   * The object's effective privileges on the source ([grantee ("" for PUBLIC), privilege, grantable]; the owner's
   * defaults when it has no ACL), for kinds with privileges; absent for the others and from older captures.
   */
  acl?: [string, string, boolean][];
  /** The privilege types the source knows for this kind (17's MAINTAIN is left alone on a 15 source's objects). */
  privs?: string[];
}

/**
 * The object's effective ACL (its owner's defaults when it has none; aclitem[]), for the kinds with privileges, and
 * (`defaults`) only its owner's defaults; NULL for the others.
 */
function aclSql(classid: string, objid: string, defaults = false): string {
  const acl = (column: string, kind: string, owner: string) => defaults ? `pg_catalog.acldefault(${kind}, x.${owner})`
    : `coalesce(x.${column}, pg_catalog.acldefault(${kind}, x.${owner}))`;
  return `CASE ${classid}
    WHEN 'pg_catalog.pg_class'::pg_catalog.regclass THEN (SELECT ${acl("relacl", `CASE WHEN x.relkind = 'S' THEN 's' ELSE 'r' END::"char"`, "relowner")}
      FROM pg_catalog.pg_class x WHERE x.oid = ${objid} AND x.relkind IN ('r', 'p', 'S', 'v', 'm', 'f'))
    WHEN 'pg_catalog.pg_proc'::pg_catalog.regclass THEN (SELECT ${acl("proacl", `'f'::"char"`, "proowner")} FROM pg_catalog.pg_proc x WHERE x.oid = ${objid})
    WHEN 'pg_catalog.pg_type'::pg_catalog.regclass THEN (SELECT ${acl("typacl", `'T'::"char"`, "typowner")} FROM pg_catalog.pg_type x WHERE x.oid = ${objid})
    WHEN 'pg_catalog.pg_namespace'::pg_catalog.regclass THEN (SELECT ${acl("nspacl", `'n'::"char"`, "nspowner")} FROM pg_catalog.pg_namespace x WHERE x.oid = ${objid})
  END`;
}

/** [grantee, privilege, grantable] of an aclitem[] expression, as jsonb ("" for PUBLIC), or NULL for NULL. */
function aclJsonSql(acl: string): string {
  return `(SELECT coalesce(pg_catalog.jsonb_agg(DISTINCT pg_catalog.jsonb_build_array(CASE WHEN e.grantee = 0 THEN '' ELSE pg_catalog.pg_get_userbyid(e.grantee) END,
      e.privilege_type, e.is_grantable)), '[]') FROM pg_catalog.aclexplode(${acl}) e HAVING ${acl} IS NOT NULL)`;
}

/** The owner (a role oid) of object (classid, objid) for the catalogs whose objects have one; NULL for the rest (indexes, columns …). */
export function ownerOidSql(classid: string, objid: string): string {
  const one = (catalog: string, column: string, extra = "") =>
    `WHEN 'pg_catalog.${catalog}'::pg_catalog.regclass THEN (SELECT x.${column} FROM pg_catalog.${catalog} x WHERE x.oid = ${objid}${extra})`;
  return `CASE ${classid} ${[
    // Indexes, TOAST tables and a composite type's relation (its pg_type row is the object) follow their owner.
    one("pg_class", "relowner", ` AND x.relkind IN ('r', 'p', 'S', 'v', 'm', 'f')`),
    one("pg_proc", "proowner"),
    // Enums, ranges, domains, composite and base types (a table's row type is not listed: it follows its table).
    one("pg_type", "typowner"),
    one("pg_namespace", "nspowner"), one("pg_collation", "collowner"), one("pg_conversion", "conowner"), one("pg_operator", "oprowner"),
    one("pg_opclass", "opcowner"), one("pg_opfamily", "opfowner"), one("pg_ts_config", "cfgowner"), one("pg_ts_dict", "dictowner"),
    one("pg_statistic_ext", "stxowner"),
  ].join(" ")} END`;
}

/**
 * The capture's PL/pgSQL: the owners of the objects in the migrated schemas `arr` that this command listed, into `into`
 * (a jsonb variable), tables first, then in the order listed. Runs under search_path pg_catalog, pg_temp.
 */
export function captureOwnersSql(arr: string, into: string): string {
  return `WITH listed AS MATERIALIZED (
      SELECT c.classid, c.objid, pg_catalog.min(c.ord) AS ord FROM pg_catalog.pg_event_trigger_ddl_commands() WITH ORDINALITY c(
          classid, objid, objsubid, command_tag, object_type, schema_name, object_identity, in_extension, command, ord)
       WHERE c.objid <> 0 AND c.objsubid = 0
         AND (c.schema_name = ANY (${arr}) OR (c.object_type = 'schema' AND c.object_identity = ANY (SELECT pg_catalog.quote_ident(x) FROM pg_catalog.unnest(${arr}) x)))
       GROUP BY c.classid, c.objid),
    owned AS MATERIALIZED (SELECT l.*, ${ownerOidSql("l.classid", "l.objid")} AS owner FROM listed l)
  SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('type', a.type, 'names', a.object_names, 'args', a.object_args,
           'owner', pg_catalog.pg_get_userbyid(o.owner), 'acl', ${aclJsonSql(aclSql("o.classid", "o.objid"))},
           'privs', (SELECT pg_catalog.jsonb_agg(DISTINCT e.privilege_type) FROM pg_catalog.aclexplode(${aclSql("o.classid", "o.objid", true)}) e)) ORDER BY o.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
             AND (SELECT k.relkind FROM pg_catalog.pg_class k WHERE k.oid = o.objid) = 'S', o.ord), '[]')
    INTO ${into}
    FROM owned o, LATERAL pg_catalog.pg_identify_object_as_address(o.classid, o.objid, 0) a
   WHERE o.owner IS NOT NULL`;
}

/**
 * For one owner entry `o` (a jsonb expression), on the target after the statement ran: the ALTER that gives the object
 * its source owner (NULL when it already has it), whether that role exists, and the object's name. Evaluated per entry,
 * after the ones before it (a table's ALTER moves its owned sequences too).
 */
export function ownerStepSql(o: string): string {
  return `SELECT i.identity, pg_catalog.pg_get_userbyid(${ownerOidSql("a.classid", "a.objid")}) AS current,
    EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = ${o}->>'owner') AS role_exists,
    pg_catalog.format('ALTER %s %s OWNER TO %I', CASE WHEN i.type IN ('function', 'procedure', 'aggregate') THEN 'ROUTINE'
      WHEN i.type = 'statistics object' THEN 'STATISTICS' ELSE pg_catalog.upper(i.type) END, i.identity, ${o}->>'owner') AS stmt
    FROM pg_catalog.pg_get_object_address(${o}->>'type', ARRAY(SELECT pg_catalog.jsonb_array_elements_text(${o}->'names')),
           ARRAY(SELECT pg_catalog.jsonb_array_elements_text(${o}->'args'))) a,
         LATERAL pg_catalog.pg_identify_object(a.classid, a.objid, 0) i`;
}

/**
 * For one entry `o` with privileges, on the target after its owner is set: the GRANT and REVOKE statements (REVOKEs
 * first) that make the object's effective privileges, among the privilege types the source knows, the source's — the
 * grants the source's default privileges gave it too (the target created it as its own role, whose defaults applied
 * instead). With each, the grantee and whether it exists on the target. Grantors are not compared (a superuser's GRANT
 * is recorded as the owner's).
 */
export function grantStepsSql(o: string): string {
  return `WITH obj AS (SELECT a.classid, a.objid, i.identity, CASE WHEN i.type IN ('function', 'procedure', 'aggregate') THEN 'ROUTINE'
           WHEN i.type = 'sequence' THEN 'SEQUENCE' WHEN i.type IN ('type', 'schema') THEN pg_catalog.upper(i.type) ELSE 'TABLE' END AS kw
      FROM pg_catalog.pg_get_object_address(${o}->>'type', ARRAY(SELECT pg_catalog.jsonb_array_elements_text(${o}->'names')),
             ARRAY(SELECT pg_catalog.jsonb_array_elements_text(${o}->'args'))) a, LATERAL pg_catalog.pg_identify_object(a.classid, a.objid, 0) i),
    want AS (SELECT e->>0 AS grantee, e->>1 AS priv, (e->>2)::boolean AS g FROM pg_catalog.jsonb_array_elements(${o}->'acl') e),
    have AS (SELECT DISTINCT CASE WHEN x.grantee = 0 THEN '' ELSE pg_catalog.pg_get_userbyid(x.grantee) END AS grantee, x.privilege_type AS priv,
                    x.is_grantable AS g
               FROM obj, LATERAL pg_catalog.aclexplode(${aclSql("obj.classid", "obj.objid")}) x
              WHERE x.privilege_type IN (SELECT pg_catalog.jsonb_array_elements_text(${o}->'privs'))),
    steps AS (
      SELECT 1 AS ord, h.grantee, h.priv, pg_catalog.format('REVOKE %s ON %s %s FROM %s', h.priv, obj.kw, obj.identity,
               CASE WHEN h.grantee = '' THEN 'PUBLIC' ELSE pg_catalog.quote_ident(h.grantee) END) AS stmt
        FROM have h, obj WHERE NOT EXISTS (SELECT 1 FROM want w WHERE w.grantee = h.grantee AND w.priv = h.priv AND w.g = h.g)
      UNION ALL
      SELECT 2, w.grantee, w.priv, pg_catalog.format('GRANT %s ON %s %s TO %s%s', w.priv, obj.kw, obj.identity,
               CASE WHEN w.grantee = '' THEN 'PUBLIC' ELSE pg_catalog.quote_ident(w.grantee) END, CASE WHEN w.g THEN ' WITH GRANT OPTION' ELSE '' END)
        FROM want w, obj WHERE NOT EXISTS (SELECT 1 FROM have h WHERE h.grantee = w.grantee AND h.priv = w.priv AND h.g = w.g))
  SELECT s.stmt, s.grantee, s.priv, obj.identity, s.grantee = '' OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = s.grantee) AS role_exists
    FROM steps s, obj WHERE ${o} ? 'acl' AND pg_catalog.jsonb_typeof(${o}->'acl') = 'array' ORDER BY s.ord, s.grantee, s.priv`;
}

/** The refusal's text, one for both modes (%s: statement summary, object, role, target role[, target's error]); a format() template. */
const MISSING = `ddl_owner: DDL replication stopped at the source's query "%s": it made %s, owned on the source by role "%s", which the ` +
  `target lacks (the migration keeps ownership, so the object would otherwise belong to "%s" silently). Nothing from its source transaction ` +
  `or after it was applied. Fix: create the role on the target (CREATE ROLE; pg_dumpall --roles-only on the source has its attributes); ` +
  `replication retries the statement by itself and goes on`;
const GRANTEE = `ddl_owner: DDL replication stopped at the source's query "%s": it made %s, on which the source grants %s to role "%s", ` +
  `which the target lacks (the migration keeps grants). Nothing from its source transaction or after it was applied. Fix: create the role on ` +
  `the target (CREATE ROLE; pg_dumpall --roles-only on the source has its attributes); replication retries the statement by itself and goes on`;
const UNRECORDED = `ddl_owner: DDL replication stopped at the source's query "%s": the source could not record the owners of what it ` +
  `made (%s), so the target would give them to its own role silently. Nothing from its source transaction or after it was applied. Fix: run ` +
  `pgferry cleanup and start again (the load copies owners and grants), and report the error`;
const REFUSED = `ddl_owner: DDL replication stopped at the source's query "%s": it made %s, owned on the source by role "%s", and the ` +
  `target's role "%s" may not give it to that role (%s). Nothing from its source transaction or after it was applied. Fix: on the target, ` +
  `GRANT that role TO the target's role (or connect pgferry as a superuser there); replication retries the statement by itself and goes on`;

/** format()'s %s and %% in JavaScript, so both modes say the same words. */
function fill(template: string, args: string[]): string {
  let k = 0;
  return template.replace(/%[s%]/g, (m) => (m === "%%" ? "%" : args[k++] ?? ""));
}

/** PL/pgSQL for the target's trigger (subscription mode): `p` the payload (jsonb), `summary` the statement's summary. */
export function targetOwnersPlpgsql(p: string, summary: string): string {
  const lit = (s: string) => `'${s.replace(/'/g, "''")}'`;
  return `IF ${p}->>'ownersError' IS NOT NULL THEN
    RAISE EXCEPTION '%', format(${lit(UNRECORDED)}, ${summary}, ${p}->>'ownersError');
  END IF;
  FOR v_owner IN SELECT jsonb_array_elements(coalesce(${p}->'owners', '[]')) LOOP
    ${ownerStepSql("v_owner")} INTO v_step;
    CONTINUE WHEN v_step.current IS NOT DISTINCT FROM v_owner->>'owner';
    IF NOT v_step.role_exists THEN
      RAISE EXCEPTION '%', format(${lit(MISSING)}, ${summary}, v_step.identity, v_owner->>'owner', current_user);
    END IF;
    BEGIN
      EXECUTE v_step.stmt;
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE EXCEPTION '%', format(${lit(REFUSED)}, ${summary}, v_step.identity, v_owner->>'owner', current_user, SQLERRM);
    END;
  END LOOP;
  FOR v_owner IN SELECT jsonb_array_elements(coalesce(${p}->'owners', '[]')) LOOP
    FOR v_step IN ${grantStepsSql("v_owner")} LOOP
      IF NOT v_step.role_exists THEN
        RAISE EXCEPTION '%', format(${lit(GRANTEE)}, ${summary}, v_step.identity, v_step.priv, v_step.grantee);
      END IF;
      EXECUTE v_step.stmt;
    END LOOP;
  END LOOP;`;
}

/** Stream mode: give each object its source owner, in the applier's open transaction, right after the statement. */
export async function applyOwners(c: Client, owners: DdlOwner[] | undefined, summary: string, ownersError?: string | null): Promise<void> {
  if (ownersError) throw new PgferryError("ddl_owner", fill(UNRECORDED, [summary, ownersError]).replace(/^ddl_owner: /, ""));
  for (const o of owners ?? []) {
    const step = (await c.query(ownerStepSql("$1::jsonb"), [JSON.stringify(o)])).rows[0];
    if (step.current === o.owner) continue;
    const me = (await c.query(`SELECT current_user AS u`)).rows[0].u as string;
    if (!step.role_exists) throw new PgferryError("ddl_owner", fill(MISSING, [summary, step.identity, o.owner, me]).replace(/^ddl_owner: /, ""));
    // The open transaction is rolled back by the caller on any error: the statement is retried with its owners.
    try {
      await c.query(step.stmt);
    } catch (e) {
      if ((e as { code?: string }).code !== "42501") throw e;
      throw new PgferryError("ddl_owner", fill(REFUSED, [summary, step.identity, o.owner, me, (e as Error).message]).replace(/^ddl_owner: /, ""));
    }
  }
  // Then their privileges (every owner is set first: a grant names no object whose owner is still to change).
  for (const o of owners ?? []) {
    for (const g of (await c.query(grantStepsSql("$1::jsonb"), [JSON.stringify(o)])).rows) {
      if (!g.role_exists) throw new PgferryError("ddl_owner", fill(GRANTEE, [summary, g.identity, g.priv, g.grantee]).replace(/^ddl_owner: /, ""));
      await c.query(g.stmt);
    }
  }
}

/**
 * Subscription mode, for status and cutover (the apply worker's transaction, object included, was rolled back): which
 * of the statement's owner roles the target lacks or its role may not give objects to, in the refusal's words.
 */
export async function ownerProblemNow(tgt: Client, owners: DdlOwner[] | undefined, summary: string,
  ownersError?: string | null): Promise<string | undefined> {
  if (ownersError) return fill(UNRECORDED, [summary, ownersError]).replace(/^ddl_owner: /, "");
  for (const o of owners ?? []) {
    const r = (await tgt.query(`SELECT current_user AS me, EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) AS e,
        (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) OR (EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)
          AND pg_has_role(current_user, (SELECT oid FROM pg_roles WHERE rolname = $1), 'MEMBER')) AS may`, [o.owner])).rows[0];
    const object = `${o.type} ${o.names.join(".")}${o.args.length ? `(${o.args.join(", ")})` : ""}`;
    if (!r.e) return fill(MISSING, [summary, object, o.owner, r.me]).replace(/^ddl_owner: /, "");
    if (!r.may) return fill(REFUSED, [summary, object, o.owner, r.me, "not a member of it"]).replace(/^ddl_owner: /, "");
  }
  for (const o of owners ?? []) {
    for (const [grantee, priv] of o.acl ?? []) {
      if (!grantee || (await tgt.query(`SELECT 1 FROM pg_roles WHERE rolname = $1`, [grantee])).rowCount) continue;
      const object = `${o.type} ${o.names.join(".")}${o.args.length ? `(${o.args.join(", ")})` : ""}`;
      return fill(GRANTEE, [summary, object, priv, grantee]).replace(/^ddl_owner: /, "");
    }
  }
  return undefined;
}
