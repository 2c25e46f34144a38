/**
 * What the source holds: the tables a migration moves (with the columns COPY may name), their
 * sequences and foreign keys. Read from the system catalogs, once, by preflight and start.
 */
import { Client } from "pg";
import { qualified, quoteIdent } from "../core/endpoint";

export interface TableSelection {
  /** Schemas to migrate; empty = every user schema. */
  schemas: string[];
  /** Only these tables ("schema.table" or "table"); empty = all tables of the schemas. */
  include: string[];
  /** Never these tables ("schema.table" or "table"). */
  exclude: string[];
}

export interface TableInfo {
  schema: string;
  name: string;
  /** "r" plain table or leaf partition, "p" partitioned table. */
  kind: "r" | "p";
  /** Set for partitions: the top-level partitioned table (schema.name) they belong to. */
  partitionRoot?: { schema: string; name: string };
  unlogged: boolean;
  /** d(efault) / n(othing) / f(ull) / i(ndex) */
  replicaIdentity: string;
  hasPrimaryKey: boolean;
  hasIdentityIndex: boolean;
  /** Columns COPY and replication carry: not dropped, not generated. */
  columns: string[];
  /** Single-column integer primary key, usable to split a large table into ranges. */
  splitKey?: string;
  /**
   * Every copied column has a built-in scalar type (no arrays, enums, domains, composites, extension
   * types): binary COPY is then safe across major versions and much cheaper than text.
   */
  binaryCopySafe: boolean;
  bytes: number;
  estimatedRows: number;
}

export const CONTROL_SCHEMA = "pgferry";

const SYSTEM_SCHEMA_FILTER = `n.nspname NOT IN ('pg_catalog', 'information_schema', '${CONTROL_SCHEMA}')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'`;

/** "schema.table" → {schema, table}; a bare name matches that table in any selected schema. */
function matches(patterns: string[], t: { schema: string; name: string }): boolean {
  return patterns.some((p) => {
    const dot = splitQualified(p);
    return dot.schema === undefined ? dot.name === t.name : dot.schema === t.schema && dot.name === t.name;
  });
}

/** Split "schema.table" (either part may be double-quoted) into its parts. */
export function splitQualified(p: string): { schema?: string; name: string } {
  const parts: string[] = [];
  const re = /"((?:[^"]|"")*)"|([^.]+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(p))) parts.push(m[1] !== undefined ? m[1].replace(/""/g, '"') : m[2]);
  return parts.length >= 2 ? { schema: parts[0], name: parts.slice(1).join(".") } : { name: parts[0] ?? p };
}

export async function userSchemas(c: Client): Promise<string[]> {
  const r = await c.query(`SELECT n.nspname FROM pg_namespace n WHERE ${SYSTEM_SCHEMA_FILTER}
    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid AND d.deptype = 'e')
    ORDER BY 1`);
  return r.rows.map((x) => x.nspname);
}

/** Every table of the selection: plain tables, partitioned tables and their leaf partitions. */
export async function listTables(c: Client, sel: TableSelection): Promise<TableInfo[]> {
  const schemas = sel.schemas.length ? sel.schemas : await userSchemas(c);
  const r = await c.query(
    `SELECT c.oid, n.nspname AS schema, c.relname AS name, c.relkind AS kind, c.relpersistence = 'u' AS unlogged,
            c.relreplident AS ri, c.relispartition AS is_partition,
            EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) AS has_pk,
            EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident) AS has_ri_index,
            pg_relation_size(c.oid) AS bytes, greatest(c.reltuples, 0)::bigint AS est_rows,
            (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '') AS columns,
            (SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
              WHERE i.indrelid = c.oid AND i.indisprimary AND i.indnatts = 1 AND a.atttypid IN (20, 21, 23)) AS split_key,
            NOT EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                AND (ty.oid >= 16384 OR ty.typtype <> 'b' OR ty.typcategory = 'A' OR ty.typelem <> 0)) AS binary_safe,
            rn.nspname AS root_schema, rc.relname AS root_name
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_class rc ON c.relispartition AND rc.oid = (SELECT a.relid FROM pg_partition_ancestors(c.oid) a
             JOIN pg_class ac ON ac.oid = a.relid WHERE NOT ac.relispartition)
       LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
      WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY($1)
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
      ORDER BY n.nspname, c.relname`,
    [schemas],
  );
  const tables: TableInfo[] = r.rows.map((x) => ({
    schema: x.schema, name: x.name, kind: x.kind, unlogged: x.unlogged, replicaIdentity: x.ri,
    hasPrimaryKey: x.has_pk, hasIdentityIndex: x.has_ri_index, columns: x.columns ?? [],
    splitKey: x.split_key ?? undefined, binaryCopySafe: x.binary_safe, bytes: Number(x.bytes), estimatedRows: Number(x.est_rows),
    partitionRoot: x.root_schema ? { schema: x.root_schema, name: x.root_name } : undefined,
  }));
  // include/exclude apply to a partitioned table as a whole: a partition follows its root.
  const unit = (t: TableInfo) => t.partitionRoot ?? t;
  return tables.filter((t) => (!sel.include.length || matches(sel.include, unit(t)) || matches(sel.include, t)) &&
    !matches(sel.exclude, unit(t)) && !matches(sel.exclude, t));
}

/**
 * The tables a selection migrates: listTables without what the exclusion plan leaves out through
 * dependencies (children of an excluded table, tables of its row type). What start, the cutover's gate,
 * drift detection and the slot filters must agree on.
 */
export async function migratedTables(c: Client, sel: TableSelection): Promise<TableInfo[]> {
  const schemas = sel.schemas.length ? sel.schemas : await userSchemas(c);
  const tables = await listTables(c, { ...sel, schemas });
  if (!sel.exclude.length && !sel.include.length) return tables;
  const plan = await planExclusion(c, sel, schemas);
  const out = new Set(plan.relations.map((x) => `${x.schema}\u0000${x.name}`));
  return tables.filter((t) => !out.has(`${t.schema}\u0000${t.name}`));
}

/** Tables whose rows COPY reads and writes: plain tables and leaf partitions. */
export function copyableTables(tables: TableInfo[]): TableInfo[] {
  return tables.filter((t) => t.kind === "r");
}

/**
 * Tables named in the publication: plain logged tables, and partitioned tables by their root
 * (published with publish_via_partition_root, so the target may partition differently).
 */
export function publishedTables(tables: TableInfo[]): TableInfo[] {
  return tables.filter((t) => !t.unlogged && !t.partitionRoot && (t.kind === "p" || t.kind === "r"));
}

/**
 * UPDATE/DELETE on these tables cannot be replicated (and would fail on the source once published).
 * Partitioned tables count too: changes are published through the root (publish_via_partition_root),
 * so the root's replica identity is the one the changes carry — FULL on the leaves alone is not enough.
 */
export function tablesWithoutReplicaIdentity(tables: TableInfo[]): TableInfo[] {
  return tables.filter((t) => (t.kind === "r" || t.kind === "p") && !t.unlogged &&
    (t.replicaIdentity === "n" || (t.replicaIdentity === "d" && !t.hasPrimaryKey) || (t.replicaIdentity === "i" && !t.hasIdentityIndex)));
}

export interface SequenceInfo { schema: string; name: string }

export async function listSequences(c: Client, schemas: string[]): Promise<SequenceInfo[]> {
  const r = await c.query(
    `SELECT n.nspname AS schema, c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'S' AND n.nspname = ANY($1)
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
      ORDER BY 1, 2`, [schemas]);
  return r.rows;
}

/**
 * The sequences a migration carries: those of its schemas, less the ones its --include/--exclude leave out
 * (a sequence excluded by name, or owned by an excluded table: planExclusion's relations).
 */
export async function migratedSequences(c: Client, sel: TableSelection): Promise<SequenceInfo[]> {
  const schemas = sel.schemas?.length ? sel.schemas : await userSchemas(c);
  const all = await listSequences(c, schemas);
  const excluded = new Set<string>();
  if (sel.include.length || sel.exclude.length) {
    const plan = await planExclusion(c, sel, schemas);
    for (const r of plan.relations) if (r.kind === "S") excluded.add(`${r.schema}.${r.name}`);
  }
  return all.filter((s) => !excluded.has(`${s.schema}.${s.name}`));
}

/** The migration's materialized views populated on the source (the selection's schemas, less what it leaves out). */
export async function migratedPopulatedMatviews(c: Client, sel: TableSelection): Promise<{ schema: string; name: string }[]> {
  const schemas = sel.schemas?.length ? sel.schemas : await userSchemas(c);
  const excluded = sel.include.length || sel.exclude.length ? (await planExclusion(c, sel, schemas)).relations : [];
  return listPopulatedMatviews(c, schemas, excluded);
}

export interface ForeignKeyInfo {
  schema: string; table: string; name: string;
  /** pg_get_constraintdef with every name schema-qualified. */
  definition: string;
  validated: boolean; onPartitioned: boolean; refSchema: string; refTable: string;
  /** The referenced table is partitioned. */
  refPartitioned: boolean;
  /** quote_ident of the table and constraint names, as pg_dump writes them in the key's comment entry. */
  quotedTable: string; quotedName: string;
  comment: string | null;
}

/** Foreign keys of the given tables, as pg_get_constraintdef renders them (column order, actions, DEFERRABLE kept). */
export async function listForeignKeys(c: Client, tables: TableInfo[]): Promise<ForeignKeyInfo[]> {
  // Partitions too: a foreign key may be declared on one partition only (Pagila's payment_p2022_01…).
  const names = tables.map((t) => qualified(t.schema, t.name));
  if (!names.length) return [];
  // An empty search_path makes pg_get_constraintdef qualify every name: the definition runs anywhere.
  await c.query("SET search_path = pg_catalog");
  const r = await c.query(
    `SELECT n.nspname AS schema, t.relname AS table, con.conname AS name, pg_get_constraintdef(con.oid) AS definition,
            con.convalidated AS validated, t.relkind = 'p' AS on_partitioned, rn.nspname AS ref_schema, rt.relname AS ref_table,
            rt.relkind = 'p' AS ref_partitioned, quote_ident(t.relname) AS quoted_table, quote_ident(con.conname) AS quoted_name,
            obj_description(con.oid, 'pg_constraint') AS comment
       FROM pg_constraint con JOIN pg_class t ON t.oid = con.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
       JOIN pg_class rt ON rt.oid = con.confrelid JOIN pg_namespace rn ON rn.oid = rt.relnamespace
      WHERE con.contype = 'f' AND con.conparentid = 0 AND con.conrelid = ANY($1::regclass[])
      ORDER BY 1, 2, 3`, [names]);
  await c.query("RESET search_path");
  return r.rows.map((x) => ({ schema: x.schema, table: x.table, name: x.name, definition: x.definition,
    validated: x.validated, onPartitioned: x.on_partitioned, refSchema: x.ref_schema, refTable: x.ref_table,
    refPartitioned: x.ref_partitioned, quotedTable: x.quoted_table, quotedName: x.quoted_name, comment: x.comment }));
}

export async function serverVersionNum(c: Client): Promise<number> {
  return Number((await c.query("SELECT current_setting('server_version_num') AS v")).rows[0].v);
}

/** Materialized views populated on the source, in creation order (dependencies come first). */
export async function listPopulatedMatviews(c: Client, schemas: string[], excluded: { schema: string; name: string }[] = []): Promise<{ schema: string; name: string }[]> {
  const r = await c.query(`SELECT n.nspname AS schema, c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'm' AND c.relispopulated AND n.nspname = ANY($1) ORDER BY c.oid`, [schemas]);
  return r.rows.filter((v) => !excluded.some((x) => x.schema === v.schema && x.name === v.name));
}

/** A name for messages: each part double-quoted only when it must be (as quote_ident does), so `"abc".job` is unambiguous. */
export function displayName(...parts: string[]): string {
  return parts.map((p) => (/^[a-z_][a-z0-9_$]*$/.test(p) ? p : quoteIdent(p))).join(".");
}

/** An object the migration leaves behind, with why and what to do about it (start's and the Migration's `notCarried`). */
export interface NotCarried {
  /** What kind of object, e.g. "view", "large objects", "database setting". */
  kind: string;
  object: string;
  reason: string;
  fix: string;
}

/**
 * What --exclude (and --include) leave out, following dependencies: the named relations, their
 * partitions, every relation built on them (views, materialized views, tables of their row type,
 * inheritance children) and every other object that depends on them (functions taking their row
 * type, triggers, policies, foreign keys that reference them).
 */
export interface ExclusionPlan {
  /** Relations left out of the dump and the load (tables, partitions, views, materialized views, sequences, foreign tables). */
  relations: { schema: string; name: string; kind: string }[];
  /** Other objects left out of the dump, by catalog id; `owned` ones belong to an excluded relation and go with it. */
  objects: { classid: number; objid: number; description: string; owned: boolean; foreignKey: boolean;
    /** How pg_dump names a function in its comment and grant entries: "schema FUNCTION name(identity arguments) ". */
    dumpTag?: string }[];
  /** --exclude/--include names that match no relation of the selected schemas. */
  unknown: string[];
  /**
   * Partitions left out whose partitioned root is migrated: changes to their rows are published through the root, so
   * they would reach a target that lacks the partition (refused by preflight: exclusion_partition).
   */
  partitionsOfMigrated: { partition: string; root: string }[];
  /**
   * Parts of kept tables that depend on an excluded object and that pg_dump writes inside CREATE TABLE
   * (column defaults, generation expressions, CHECK constraints): they cannot be left out, so the exclusion is refused.
   */
  blocking: string[];
}

const RELATION_KINDS: Record<string, string> = { r: "table", p: "partitioned table", v: "view", m: "materialized view", f: "foreign table", S: "sequence" };

export async function planExclusion(c: Client, sel: TableSelection, schemas: string[]): Promise<ExclusionPlan> {
  const r = await c.query(`SELECT c.oid, n.nspname AS schema, c.relname AS name, c.relkind AS kind, c.relispartition AS is_partition,
      (SELECT a.relid::oid FROM pg_partition_ancestors(c.oid) a JOIN pg_class ac ON ac.oid = a.relid WHERE NOT ac.relispartition) AS root
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND n.nspname = ANY($1)
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')`, [schemas]);
  const rels = r.rows as { oid: number; schema: string; name: string; kind: string; is_partition: boolean; root: number | null }[];
  const unknown = [...sel.exclude, ...sel.include].filter((p) => !rels.some((x) => matches([p], x)));
  const byOid = new Map(rels.map((x) => [x.oid, x]));
  const seeds = rels.filter((x) => matches(sel.exclude, x) ||
    // --include: tables (by their partition root) that it does not name are left out like excluded ones
    (sel.include.length > 0 && (x.kind === "r" || x.kind === "p") &&
      !matches(sel.include, x) && !(x.root && byOid.has(x.root) && matches(sel.include, byOid.get(x.root)!))));
  if (!seeds.length) return { relations: [], objects: [], unknown, blocking: [], partitionsOfMigrated: [] };
  // pg_dump names argument types with an empty search_path: so must we, to find its entries
  await c.query(`SELECT set_config('search_path', '', false)`);
  // Dependents, transitively; a view's rewrite rule stands for the view, a composite type's relation for its type.
  const d = await c.query(`WITH RECURSIVE obj(classid, objid) AS (
      SELECT 'pg_class'::regclass::oid, x FROM unnest($1::oid[]) x
      UNION
      SELECT CASE WHEN d.classid = 'pg_rewrite'::regclass THEN 'pg_class'::regclass::oid ELSE d.classid END,
             CASE WHEN d.classid = 'pg_rewrite'::regclass THEN (SELECT ev_class FROM pg_rewrite WHERE oid = d.objid) ELSE d.objid END
        FROM obj JOIN pg_depend d ON d.refclassid = obj.classid AND d.refobjid = obj.objid AND d.deptype IN ('n', 'a', 'i'))
    SELECT o.classid::int, o.objid::int, pg_describe_object(o.classid, o.objid, 0) AS description,
           cl.relkind, cl.reltype::int AS reltype,
           CASE o.classid WHEN 'pg_constraint'::regclass THEN (SELECT conrelid FROM pg_constraint WHERE oid = o.objid)
             WHEN 'pg_trigger'::regclass THEN (SELECT tgrelid FROM pg_trigger WHERE oid = o.objid)
             WHEN 'pg_attrdef'::regclass THEN (SELECT adrelid FROM pg_attrdef WHERE oid = o.objid)
             WHEN 'pg_policy'::regclass THEN (SELECT polrelid FROM pg_policy WHERE oid = o.objid)
             WHEN 'pg_rewrite'::regclass THEN (SELECT ev_class FROM pg_rewrite WHERE oid = o.objid)
             WHEN 'pg_type'::regclass THEN (SELECT coalesce(nullif(t.typrelid, 0), (SELECT e.typrelid FROM pg_type e WHERE e.oid = t.typelem))
                                              FROM pg_type t WHERE t.oid = o.objid)
             WHEN 'pg_class'::regclass THEN (SELECT coalesce(i.indrelid, (SELECT t.oid FROM pg_class t WHERE t.reltoastrelid = o.objid))
                                              FROM pg_class x LEFT JOIN pg_index i ON i.indexrelid = x.oid WHERE x.oid = o.objid)
           END AS owner,
           EXISTS (SELECT 1 FROM pg_depend i WHERE i.classid = o.classid AND i.objid = o.objid AND i.deptype = 'i')
             OR cl.relnamespace = 'pg_toast'::regnamespace AS internal,
           o.classid = 'pg_constraint'::regclass AND (SELECT contype FROM pg_constraint WHERE oid = o.objid) = 'f' AS foreign_key,
           o.classid = 'pg_attrdef'::regclass OR (o.classid = 'pg_constraint'::regclass AND (SELECT contype FROM pg_constraint WHERE oid = o.objid) = 'c') AS inline,
           (SELECT n.nspname || ' ' || CASE p.prokind WHEN 'a' THEN 'AGGREGATE' WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END || ' ' ||
                   quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ') '
              FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE o.classid = 'pg_proc'::regclass AND p.oid = o.objid) AS dump_tag
      FROM obj o LEFT JOIN pg_class cl ON o.classid = 'pg_class'::regclass AND cl.oid = o.objid`, [seeds.map((x) => x.oid)])
    .finally(() => c.query("RESET search_path"));
  const relations: ExclusionPlan["relations"] = [];
  const excludedOids = new Set<number>();
  for (const x of d.rows) {
    if (x.classid === PG_CLASS && byOid.has(x.objid)) {
      const rel = byOid.get(x.objid)!;
      excludedOids.add(x.objid);
      relations.push({ schema: rel.schema, name: rel.name, kind: rel.kind });
    }
  }
  const objects: ExclusionPlan["objects"] = [];
  for (const x of d.rows) {
    if (x.classid === PG_CLASS && byOid.has(x.objid)) continue;
    if (x.classid === PG_CLASS && x.relkind === "c") {
      // a composite type that holds an excluded row type: pg_dump knows it by its pg_type row
      objects.push({ classid: PG_TYPE, objid: x.reltype, description: x.description, owned: false, foreignKey: false });
      continue;
    }
    // internal parts (a key's triggers, a row type) go with the object they belong to
    const owned = x.internal || (x.owner != null && (excludedOids.has(x.owner) || (x.classid === PG_CLASS && x.owner === x.objid)));
    objects.push({ classid: x.classid, objid: x.objid, description: x.description, owned: owned || (x.classid === PG_CLASS && x.owner == null),
      foreignKey: !!x.foreign_key, dumpTag: x.dump_tag ?? undefined });
  }
  relations.sort((a, b) => a.schema.localeCompare(b.schema) || a.name.localeCompare(b.name));
  const blocking = d.rows.filter((x) => x.inline && !x.internal && !(x.owner != null && excludedOids.has(x.owner))).map((x) => x.description as string);
  const partitionsOfMigrated = rels.filter((x) => x.is_partition && excludedOids.has(x.oid) && x.root != null && byOid.has(x.root) && !excludedOids.has(x.root))
    .map((x) => ({ partition: `${displayName(x.schema, x.name)}`, root: displayName(byOid.get(x.root!)!.schema, byOid.get(x.root!)!.name) }));
  return { relations, objects, unknown, blocking, partitionsOfMigrated };
}

const PG_CLASS = 1259, PG_TYPE = 1247;

/** The exclusion plan as output lines: the relations and the objects left out because they depend on an excluded one. */
export function exclusionNotCarried(plan: ExclusionPlan, sel: TableSelection): NotCarried[] {
  const out: NotCarried[] = [];
  for (const r of plan.relations) {
    const named = matches(sel.exclude, r);
    if (named) continue; // what the user excluded by name needs no explanation
    out.push({ kind: RELATION_KINDS[r.kind] ?? "relation", object: displayName(r.schema, r.name),
      reason: sel.include.length && (r.kind === "r" || r.kind === "p") && !named ? "not named by --include, or depends on an excluded relation" : "depends on an excluded relation (or is a partition of one)",
      fix: "migrate it separately, or do not exclude what it depends on" });
  }
  for (const o of plan.objects.filter((x) => !x.owned)) {
    out.push({ kind: o.foreignKey ? "foreign key" : "dependent object", object: o.description,
      reason: o.foreignKey ? "references an excluded table" : "depends on an excluded relation",
      fix: "create it on the target after the migration if it still applies, or do not exclude what it depends on" });
  }
  return out;
}

/**
 * Columns ("schema.table.column (type)") of the given tables whose type has no equality a native
 * subscription can use to find a REPLICA IDENTITY FULL row: the apply worker looks up the type's default
 * btree or hash opclass (a domain's base type's; an array's element type's) and, without one, fails on
 * every UPDATE/DELETE of the table ("could not identify an equality operator for type point"): json,
 * point, xml, and the like. Enums, ranges and composites have generic ones.
 */
export async function columnsWithoutEquality(c: Client, tables: { schema: string; name: string }[]): Promise<string[]> {
  if (!tables.length) return [];
  const cols = (await c.query(`SELECT n.nspname AS schema, cl.relname AS name, a.attname AS col, a.atttypid::int AS typ,
      format_type(a.atttypid, a.atttypmod) AS type
    FROM pg_attribute a JOIN pg_class cl ON cl.oid = a.attrelid JOIN pg_namespace n ON n.oid = cl.relnamespace
    WHERE a.attrelid = ANY($1::regclass[]) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
    ORDER BY 1, 2, a.attnum`, [tables.map((t) => qualified(t.schema, t.name))])).rows;
  const types = new Map((await c.query(`SELECT t.oid::int AS oid, t.typtype, t.typbasetype::int AS base, t.typelem::int AS elem,
      t.typcategory = 'A' AS is_array,
      EXISTS (SELECT 1 FROM pg_opclass oc JOIN pg_am am ON am.oid = oc.opcmethod
        WHERE am.amname IN ('btree', 'hash') AND oc.opcdefault AND (oc.opcintype = t.oid
          -- binary-coercible, as the type cache finds them (varchar uses text's)
          OR EXISTS (SELECT 1 FROM pg_cast ca WHERE ca.castsource = t.oid AND ca.casttarget = oc.opcintype AND ca.castmethod = 'b'))) AS direct
    FROM pg_type t`)).rows.map((x) => [x.oid as number, x]));
  const hasEq = (oid: number, depth = 0): boolean => {
    const t = types.get(oid);
    if (!t || depth > 10) return false;
    if (t.direct || t.typtype === "e" || t.typtype === "r" || t.typtype === "m" || t.typtype === "c") return true;
    if (t.typtype === "d") return hasEq(t.base, depth + 1);
    if (t.is_array && t.elem) return hasEq(t.elem, depth + 1);
    return false;
  };
  return cols.filter((x) => !hasEq(x.typ)).map((x) => `${x.schema}.${x.name}.${x.col} (${x.type})`);
}
