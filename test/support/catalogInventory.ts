/**
 * A catalog inventory of one database: every user object of every catalog that holds objects (oid >=
 * FirstNormalObjectId, 16384), named by pg_identify_object(classid, objid, objsubid) — the names pg_dump
 * and event triggers use, stable across servers and versions — with the properties that must travel:
 * definition, owner, ACL, comment; per column type, typmod, NOT NULL, default, collation, identity,
 * generated, storage, compression, statistics target, options; database settings and comment; trigger
 * and rule enabled states; constraint validated states; large objects' owners, ACLs and comments.
 *
 * Two inventories are compared entry by entry (diffInventories): an entry only on one side, or the same
 * entry with another value. It enumerates the catalogs themselves (no pg_depend walk), so an object
 * nothing depends on is still seen. Objects made by an extension are listed too (they come with
 * CREATE EXTENSION on the other side, and then must be equal).
 *
 * Meant to become `pgferry verify --objects`; kept free of jest so the CLI can import it.
 */
import { Client } from "pg";

/** Inventory entry key → its properties (a JSON object, keys in a fixed order). */
export type Inventory = Map<string, Record<string, unknown>>;

/** Session settings under which definitions are rendered the same way on every server. */
const PINNED = [
  "SET search_path = pg_catalog", "SET TimeZone = 'UTC'", "SET DateStyle = 'ISO, YMD'", "SET IntervalStyle = 'postgres'",
  "SET extra_float_digits = 1", "SET bytea_output = 'hex'", "SET statement_timeout = 0",
].join("; ");

/**
 * One query per catalog: `cls` (the catalog's regclass), `oid`, `sub` (objsubid) and `props` (jsonb), and
 * optionally `ident`, an identity of our own where pg_identify_object's text changes between major versions
 * (17 quotes a column named json, a new keyword; it reworded transforms) — an entry must keep its name across
 * versions, or a missing object would hide behind a renamed one. Only objects with oid >= 16384 (user objects).
 */
const CATALOG_QUERIES: Record<string, string> = {
  pg_namespace: `SELECT 'pg_namespace'::regclass cls, n.oid, 0 sub, jsonb_build_object('owner', pg_get_userbyid(n.nspowner), 'acl', n.nspacl::text) props
    FROM pg_namespace n WHERE n.oid >= 16384 AND n.nspname !~ '^pg_(toast_)?temp_'`,
  pg_class: `SELECT 'pg_class'::regclass cls, c.oid, 0 sub, jsonb_strip_nulls(jsonb_build_object(
      'kind', c.relkind, 'owner', pg_get_userbyid(c.relowner), 'acl', c.relacl::text, 'persistence', c.relpersistence,
      'am', (SELECT amname FROM pg_am WHERE oid = c.relam), 'tablespace', (SELECT spcname FROM pg_tablespace WHERE oid = c.reltablespace),
      'options', c.reloptions::text, 'toastoptions', (SELECT t.reloptions::text FROM pg_class t WHERE t.oid = c.reltoastrelid), 'replident', c.relreplident, 'rowsecurity', c.relrowsecurity, 'forcerowsecurity', c.relforcerowsecurity,
      'partbound', pg_get_expr(c.relpartbound, c.oid), 'partkey', CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END,
      'inherits', (SELECT string_agg(i.inhparent::regclass::text, ', ' ORDER BY i.inhseqno) FROM pg_inherits i WHERE i.inhrelid = c.oid),
      'viewdef', CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END,
      'populated', CASE WHEN c.relkind = 'm' THEN c.relispopulated END,
      'indexdef', CASE WHEN c.relkind IN ('i', 'I') THEN pg_get_indexdef(c.oid) END,
      'index', (SELECT jsonb_build_object('clustered', x.indisclustered, 'replident', x.indisreplident, 'valid', x.indisvalid)
                FROM pg_index x WHERE x.indexrelid = c.oid),
      'sequence', (SELECT jsonb_build_object('type', format_type(s.seqtypid, NULL), 'start', s.seqstart, 'increment', s.seqincrement,
                   'max', s.seqmax, 'min', s.seqmin, 'cache', s.seqcache, 'cycle', s.seqcycle) FROM pg_sequence s WHERE s.seqrelid = c.oid),
      'foreign', (SELECT jsonb_build_object('server', (SELECT srvname FROM pg_foreign_server WHERE oid = f.ftserver), 'options', f.ftoptions::text)
                  FROM pg_foreign_table f WHERE f.ftrelid = c.oid))) props
    FROM pg_class c WHERE c.oid >= 16384 AND c.relkind <> 't' AND c.relnamespace <> 'pg_toast'::regnamespace
      AND c.relpersistence <> 't'`,
  // Columns: position among live columns (dropped ones leave holes that a dump closes). Debian's 15.20 server
  // stamps every new column with an attoptions entry pg_attver=<number> of its own making (a restore gets new
  // numbers): it is the server's, not the database's, so it is left out.
  pg_attribute: `SELECT 'pg_class'::regclass cls, a.attrelid oid, a.attnum sub,
      (pg_identify_object('pg_class'::regclass, a.attrelid, 0)).identity || '.' || a.attname AS ident, jsonb_strip_nulls(jsonb_build_object(
      'position', row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum), 'type', format_type(a.atttypid, a.atttypmod),
      'notnull', a.attnotnull, 'default', pg_get_expr(d.adbin, d.adrelid),
      'collation', (SELECT collname FROM pg_collation WHERE oid = a.attcollation AND a.attcollation <> t.typcollation),
      'identity', nullif(a.attidentity, ''), 'generated', nullif(a.attgenerated, ''), 'storage', nullif(a.attstorage, t.typstorage),
      'compression', nullif(a.attcompression, ''), 'stattarget', nullif(a.attstattarget, -1), 'acl', a.attacl::text,
      'options', (SELECT array_agg(o ORDER BY o) FROM unnest(a.attoptions) o WHERE o NOT LIKE 'pg\\_attver=%')::text, 'fdwoptions', a.attfdwoptions::text, 'local', a.attislocal, 'inhcount', a.attinhcount)) props
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.oid >= 16384 AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
      AND c.relpersistence <> 't'`,
  // Index columns: per-column options and statistics targets (ALTER INDEX … ALTER COLUMN n SET STATISTICS).
  pg_attribute_index: `SELECT 'pg_class'::regclass cls, a.attrelid oid, a.attnum sub,
      (pg_identify_object('pg_class'::regclass, a.attrelid, 0)).identity || '.' || a.attname AS ident, jsonb_build_object('stattarget', a.attstattarget) props
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    WHERE c.oid >= 16384 AND a.attnum > 0 AND c.relkind IN ('i', 'I') AND a.attstattarget <> -1`,
  pg_proc: `SELECT 'pg_proc'::regclass cls, p.oid, 0 sub, jsonb_strip_nulls(jsonb_build_object(
      'kind', p.prokind, 'owner', pg_get_userbyid(p.proowner), 'acl', p.proacl::text,
      'language', (SELECT lanname FROM pg_language WHERE oid = p.prolang), 'result', pg_get_function_result(p.oid),
      'args', pg_get_function_arguments(p.oid), 'src', p.prosrc, 'bin', p.probin,
      'body', CASE WHEN p.prosqlbody IS NOT NULL THEN pg_get_function_sqlbody(p.oid) END,
      'volatile', p.provolatile, 'strict', p.proisstrict, 'secdef', p.prosecdef, 'leakproof', p.proleakproof,
      'parallel', p.proparallel, 'cost', p.procost, 'rows', p.prorows, 'config', p.proconfig::text,
      'support', nullif(p.prosupport, 0)::regproc::text,
      'aggregate', (SELECT to_jsonb(x) FROM (SELECT g.aggkind, g.aggnumdirectargs, g.aggtransfn::regproc::text AS trans,
        g.aggfinalfn::regproc::text AS final, g.aggcombinefn::regproc::text AS combine, g.aggserialfn::regproc::text AS serial,
        g.aggdeserialfn::regproc::text AS deserial, g.aggmtransfn::regproc::text AS mtrans, g.aggminvtransfn::regproc::text AS minvtrans,
        g.aggmfinalfn::regproc::text AS mfinal, g.aggfinalextra, g.aggmfinalextra, g.aggfinalmodify, g.aggmfinalmodify,
        g.aggsortop::regoperator::text AS sortop, format_type(g.aggtranstype, NULL) AS transtype, g.aggtransspace,
        format_type(nullif(g.aggmtranstype, 0), NULL) AS mtranstype, g.aggmtransspace, g.agginitval, g.aggminitval
        FROM pg_aggregate g WHERE g.aggfnoid = p.oid) x))) props
    FROM pg_proc p WHERE p.oid >= 16384`,
  pg_type: `SELECT 'pg_type'::regclass cls, t.oid, 0 sub, jsonb_strip_nulls(jsonb_build_object(
      'kind', t.typtype, 'owner', pg_get_userbyid(t.typowner), 'acl', t.typacl::text,
      'base', CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END, 'notnull', t.typnotnull,
      'default', t.typdefault, 'collation', (SELECT collname FROM pg_collation WHERE oid = nullif(t.typcollation, 0)),
      'io', CASE WHEN t.typtype = 'b' THEN concat_ws(' ', t.typinput::text, t.typoutput::text, t.typreceive::text, t.typsend::text,
        t.typmodin::text, t.typmodout::text, t.typanalyze::text, t.typsubscript::text, t.typlen, t.typbyval, t.typalign, t.typstorage,
        t.typcategory, t.typispreferred, t.typdelim) END,
      'element', CASE WHEN t.typelem <> 0 THEN format_type(t.typelem, NULL) END,
      'labels', CASE WHEN t.typtype = 'e' THEN (SELECT string_agg(e.enumlabel, ', ' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid) END,
      'range', (SELECT concat_ws(' ', format_type(r.rngsubtype, NULL), (SELECT collname FROM pg_collation WHERE oid = nullif(r.rngcollation, 0)),
        (SELECT n.nspname || '.' || o.opcname FROM pg_opclass o JOIN pg_namespace n ON n.oid = o.opcnamespace WHERE o.oid = r.rngsubopc), r.rngcanonical::text,
        r.rngsubdiff::text, format_type(nullif(r.rngmultitypid, 0), NULL)) FROM pg_range r WHERE r.rngtypid = t.oid))) props
    FROM pg_type t WHERE t.oid >= 16384`,
  pg_constraint: `SELECT 'pg_constraint'::regclass cls, k.oid, 0 sub, jsonb_build_object('def', pg_get_constraintdef(k.oid),
      'validated', k.convalidated, 'deferrable', k.condeferrable, 'deferred', k.condeferred, 'noinherit', k.connoinherit,
      'local', k.conislocal, 'inhcount', k.coninhcount) props
    FROM pg_constraint k WHERE k.oid >= 16384`,
  // Internal triggers (those of foreign keys) are named by OID: their keys carry them.
  pg_trigger: `SELECT 'pg_trigger'::regclass cls, g.oid, 0 sub, jsonb_build_object('def', pg_get_triggerdef(g.oid), 'enabled', g.tgenabled) props
    FROM pg_trigger g WHERE g.oid >= 16384 AND NOT g.tgisinternal`,
  pg_rewrite: `SELECT 'pg_rewrite'::regclass cls, r.oid, 0 sub, jsonb_build_object('def', pg_get_ruledef(r.oid), 'enabled', r.ev_enabled) props
    FROM pg_rewrite r WHERE r.oid >= 16384`,
  pg_policy: `SELECT 'pg_policy'::regclass cls, p.oid, 0 sub, jsonb_build_object('cmd', p.polcmd, 'permissive', p.polpermissive,
      'roles', (SELECT string_agg(CASE WHEN r = 0 THEN 'public' ELSE pg_get_userbyid(r) END, ', ' ORDER BY 1) FROM unnest(p.polroles) r),
      'using', pg_get_expr(p.polqual, p.polrelid), 'check', pg_get_expr(p.polwithcheck, p.polrelid)) props
    FROM pg_policy p WHERE p.oid >= 16384`,
  pg_cast: `SELECT 'pg_cast'::regclass cls, c.oid, 0 sub, jsonb_build_object('func', nullif(c.castfunc, 0)::regprocedure::text,
      'context', c.castcontext, 'method', c.castmethod) props FROM pg_cast c WHERE c.oid >= 16384`,
  pg_operator: `SELECT 'pg_operator'::regclass cls, o.oid, 0 sub, jsonb_strip_nulls(jsonb_build_object('owner', pg_get_userbyid(o.oprowner),
      'kind', o.oprkind, 'code', o.oprcode::regprocedure::text, 'result', format_type(o.oprresult, NULL),
      'commutator', nullif(o.oprcom, 0)::regoperator::text, 'negator', nullif(o.oprnegate, 0)::regoperator::text,
      'restrict', nullif(o.oprrest, 0)::regproc::text, 'join', nullif(o.oprjoin, 0)::regproc::text,
      'hashes', o.oprcanhash, 'merges', o.oprcanmerge)) props FROM pg_operator o WHERE o.oid >= 16384`,
  pg_opfamily: `SELECT 'pg_opfamily'::regclass cls, f.oid, 0 sub, jsonb_build_object('owner', pg_get_userbyid(f.opfowner)) props
    FROM pg_opfamily f WHERE f.oid >= 16384`,
  pg_opclass: `SELECT 'pg_opclass'::regclass cls, c.oid, 0 sub, jsonb_strip_nulls(jsonb_build_object('owner', pg_get_userbyid(c.opcowner),
      'family', (SELECT n.nspname || '.' || f.opfname FROM pg_opfamily f JOIN pg_namespace n ON n.oid = f.opfnamespace WHERE f.oid = c.opcfamily),
      'type', format_type(c.opcintype, NULL), 'default', c.opcdefault, 'keytype', format_type(nullif(c.opckeytype, 0), NULL))) props
    FROM pg_opclass c WHERE c.oid >= 16384`,
  pg_amop: `SELECT 'pg_amop'::regclass cls, o.oid, 0 sub, jsonb_strip_nulls(jsonb_build_object('purpose', o.amoppurpose,
      'sortfamily', (SELECT n.nspname || '.' || f.opfname FROM pg_opfamily f JOIN pg_namespace n ON n.oid = f.opfnamespace WHERE f.oid = nullif(o.amopsortfamily, 0)))) props FROM pg_amop o WHERE o.oid >= 16384`,
  pg_amproc: `SELECT 'pg_amproc'::regclass cls, p.oid, 0 sub, '{}'::jsonb props FROM pg_amproc p WHERE p.oid >= 16384`,
  pg_collation: `SELECT 'pg_collation'::regclass cls, c.oid, 0 sub, to_jsonb(x) - 'oid' props FROM pg_collation c,
      LATERAL (SELECT pg_get_userbyid(c.collowner) AS owner, c.collprovider AS provider, c.collisdeterministic AS deterministic,
               c.collencoding AS encoding, c.collcollate AS collate, c.collctype AS ctype) x WHERE c.oid >= 16384`,
  pg_conversion: `SELECT 'pg_conversion'::regclass cls, c.oid, 0 sub, jsonb_build_object('owner', pg_get_userbyid(c.conowner),
      'from', pg_encoding_to_char(c.conforencoding), 'to', pg_encoding_to_char(c.contoencoding), 'proc', c.conproc::regprocedure::text,
      'default', c.condefault) props FROM pg_conversion c WHERE c.oid >= 16384`,
  pg_extension: `SELECT 'pg_extension'::regclass cls, e.oid, 0 sub, jsonb_build_object('version', e.extversion,
      'schema', e.extnamespace::regnamespace::text, 'relocatable', e.extrelocatable,
      'config', (SELECT string_agg(r::regclass::text, ', ' ORDER BY r::regclass::text) FROM unnest(e.extconfig) r), 'condition', e.extcondition::text) props
    FROM pg_extension e WHERE e.oid >= 16384`,
  pg_language: `SELECT 'pg_language'::regclass cls, l.oid, 0 sub, jsonb_build_object('owner', pg_get_userbyid(l.lanowner), 'acl', l.lanacl::text,
      'trusted', l.lanpltrusted, 'handler', l.lanplcallfoid::regprocedure::text, 'inline', nullif(l.laninline, 0)::regprocedure::text,
      'validator', nullif(l.lanvalidator, 0)::regprocedure::text) props FROM pg_language l WHERE l.oid >= 16384`,
  pg_am: `SELECT 'pg_am'::regclass cls, a.oid, 0 sub, jsonb_build_object('type', a.amtype, 'handler', a.amhandler::regprocedure::text) props
    FROM pg_am a WHERE a.oid >= 16384`,
  pg_foreign_data_wrapper: `SELECT 'pg_foreign_data_wrapper'::regclass cls, w.oid, 0 sub, jsonb_build_object('owner', pg_get_userbyid(w.fdwowner),
      'acl', w.fdwacl::text, 'handler', nullif(w.fdwhandler, 0)::regprocedure::text, 'validator', nullif(w.fdwvalidator, 0)::regprocedure::text,
      'options', w.fdwoptions::text) props FROM pg_foreign_data_wrapper w WHERE w.oid >= 16384`,
  pg_foreign_server: `SELECT 'pg_foreign_server'::regclass cls, s.oid, 0 sub, jsonb_build_object('owner', pg_get_userbyid(s.srvowner),
      'acl', s.srvacl::text, 'type', s.srvtype, 'version', s.srvversion, 'options', s.srvoptions::text) props
    FROM pg_foreign_server s WHERE s.oid >= 16384`,
  pg_user_mapping: `SELECT 'pg_user_mapping'::regclass cls, u.oid, 0 sub, jsonb_build_object('options', u.umoptions::text) props
    FROM pg_user_mapping u WHERE u.oid >= 16384`,
  pg_default_acl: `SELECT 'pg_default_acl'::regclass cls, d.oid, 0 sub, jsonb_build_object('acl', d.defaclacl::text) props
    FROM pg_default_acl d WHERE d.oid >= 16384`,
  pg_publication: `SELECT 'pg_publication'::regclass cls, p.oid, 0 sub, jsonb_build_object('owner', pg_get_userbyid(p.pubowner),
      'alltables', p.puballtables, 'actions', concat_ws(',', CASE WHEN p.pubinsert THEN 'insert' END, CASE WHEN p.pubupdate THEN 'update' END,
      CASE WHEN p.pubdelete THEN 'delete' END, CASE WHEN p.pubtruncate THEN 'truncate' END), 'viaroot', p.pubviaroot) props
    FROM pg_publication p WHERE p.oid >= 16384`,
  pg_publication_rel: `SELECT 'pg_publication_rel'::regclass cls, r.oid, 0 sub, jsonb_strip_nulls(jsonb_build_object(
      'where', pg_get_expr(r.prqual, r.prrelid),
      -- by name: attribute numbers differ where the source table has dropped columns
      'columns', (SELECT string_agg(a.attname, ', ' ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = r.prrelid AND a.attnum = ANY (r.prattrs)))) props
    FROM pg_publication_rel r WHERE r.oid >= 16384`,
  pg_publication_namespace: `SELECT 'pg_publication_namespace'::regclass cls, n.oid, 0 sub, '{}'::jsonb props
    FROM pg_publication_namespace n WHERE n.oid >= 16384`,
  pg_event_trigger: `SELECT 'pg_event_trigger'::regclass cls, e.oid, 0 sub, jsonb_build_object('owner', pg_get_userbyid(e.evtowner),
      'event', e.evtevent, 'function', e.evtfoid::regprocedure::text, 'enabled', e.evtenabled, 'tags', e.evttags::text) props
    FROM pg_event_trigger e WHERE e.oid >= 16384`,
  pg_statistic_ext: `SELECT 'pg_statistic_ext'::regclass cls, s.oid, 0 sub, jsonb_build_object('owner', pg_get_userbyid(s.stxowner),
      'def', pg_get_statisticsobjdef(s.oid), 'stattarget', s.stxstattarget) props FROM pg_statistic_ext s WHERE s.oid >= 16384`,
  pg_ts_config: `SELECT 'pg_ts_config'::regclass cls, c.oid, 0 sub, jsonb_build_object('owner', pg_get_userbyid(c.cfgowner),
      'parser', (SELECT n.nspname || '.' || p.prsname FROM pg_ts_parser p JOIN pg_namespace n ON n.oid = p.prsnamespace WHERE p.oid = c.cfgparser),
      'map', (SELECT string_agg(m.maptokentype || ':' || m.mapseqno || ':' || m.mapdict::regdictionary::text, ' ' ORDER BY m.maptokentype, m.mapseqno)
              FROM pg_ts_config_map m WHERE m.mapcfg = c.oid)) props FROM pg_ts_config c WHERE c.oid >= 16384`,
  pg_ts_dict: `SELECT 'pg_ts_dict'::regclass cls, d.oid, 0 sub, jsonb_build_object('owner', pg_get_userbyid(d.dictowner),
      'template', (SELECT n.nspname || '.' || t.tmplname FROM pg_ts_template t JOIN pg_namespace n ON n.oid = t.tmplnamespace WHERE t.oid = d.dicttemplate), 'options', d.dictinitoption) props
    FROM pg_ts_dict d WHERE d.oid >= 16384`,
  pg_ts_parser: `SELECT 'pg_ts_parser'::regclass cls, p.oid, 0 sub, jsonb_build_object('start', p.prsstart::regproc::text,
      'token', p.prstoken::regproc::text, 'end', p.prsend::regproc::text, 'lextype', p.prslextype::regproc::text,
      'headline', nullif(p.prsheadline, 0)::regproc::text) props FROM pg_ts_parser p WHERE p.oid >= 16384`,
  pg_ts_template: `SELECT 'pg_ts_template'::regclass cls, t.oid, 0 sub, jsonb_build_object('init', nullif(t.tmplinit, 0)::regproc::text,
      'lexize', t.tmpllexize::regproc::text) props FROM pg_ts_template t WHERE t.oid >= 16384`,
  pg_transform: `SELECT 'pg_transform'::regclass cls, t.oid, 0 sub,
      'for ' || format_type(t.trftype, NULL) || ' language ' || (SELECT lanname FROM pg_language WHERE oid = t.trflang) AS ident, jsonb_build_object('fromsql', nullif(t.trffromsql, 0)::regprocedure::text,
      'tosql', nullif(t.trftosql, 0)::regprocedure::text) props FROM pg_transform t WHERE t.oid >= 16384`,
  // Large objects keep their OIDs through pg_dump: the OID is the name. Their contents are data no table holds:
  // the inventory hashes them (md5 of the whole object).
  pg_largeobject_metadata: `SELECT 'pg_largeobject'::regclass cls, l.oid, 0 sub, jsonb_build_object('owner', pg_get_userbyid(l.lomowner),
      'acl', l.lomacl::text, 'md5', md5(lo_get(l.oid))) props FROM pg_largeobject_metadata l`,
};

/** Comments on any user object (pg_description); large objects are named by OID (their OIDs travel). */
const COMMENTS = `SELECT d.classoid cls, d.objoid oid, d.objsubid sub, d.description FROM pg_description d
  WHERE d.objoid >= 16384 OR d.classoid = 'pg_largeobject'::regclass`;

/** The database itself: owner, ACL, comment, settings (ALTER DATABASE … SET, ALTER ROLE … IN DATABASE … SET). */
const DATABASE = `SELECT pg_get_userbyid(d.datdba) AS owner, d.datacl::text AS acl, pg_encoding_to_char(d.encoding) AS encoding,
    d.datcollate AS collate, d.datctype AS ctype, d.datconnlimit AS connlimit, d.datallowconn AS allowconn,
    shobj_description(d.oid, 'pg_database') AS comment,
    (SELECT jsonb_object_agg(CASE WHEN s.setrole = 0 THEN '(database)' ELSE pg_get_userbyid(s.setrole) END, s.setconfig::text)
       FROM pg_db_role_setting s WHERE s.setdatabase = d.oid) AS settings
  FROM pg_database d WHERE d.datname = current_database()`;

interface Row { cls: number; oid: number; sub: number; props: Record<string, unknown> }

/**
 * The inventory of the database `c` is connected to. `exclude` drops entries whose key matches (e.g. the
 * migration tool's own control schema while it still exists).
 */
export async function catalogInventory(c: Client, exclude?: RegExp): Promise<Inventory> {
  await c.query(PINNED);
  const inv: Inventory = new Map();
  const named = new Map<string, string>(); // "cls/oid/sub" → key, for comments
  const server = Number((await c.query(`SELECT current_setting('server_version_num') v`)).rows[0].v);
  for (const [catalog, sql] of Object.entries(CATALOG_QUERIES)) {
    if (catalog === "pg_publication_namespace" && server < 150000) continue;
    const ident = /\bAS ident\b/.test(sql) ? "x.ident" : "NULL::text";
    const rows = (await c.query(`WITH x AS (${sql}) SELECT x.cls::oid::int AS cls, x.oid::oid::bigint AS oid, x.sub::int AS sub, x.props,
        (pg_identify_object(x.cls, x.oid, x.sub)).type, coalesce(${ident}, (pg_identify_object(x.cls, x.oid, x.sub)).identity) AS identity
        FROM x`)).rows as (Row & { type: string; identity: string })[];
    for (const r of rows) {
      // The catalog prefixes the key: a composite type is named the same in pg_class and pg_type.
      const key = `${catalog}: ${r.type} ${r.identity}`;
      if (exclude?.test(key)) continue;
      if (inv.has(key)) throw new Error(`inventory: two objects named "${key}" (${catalog}) — the naming is not unique`);
      inv.set(key, normalize(r.props));
      named.set(`${r.cls}/${r.oid}/${r.sub}`, key);
    }
  }
  const comments = (await c.query(`WITH x AS (${COMMENTS}) SELECT x.cls::int AS cls, x.oid::bigint AS oid, x.sub, x.description,
      (pg_identify_object(x.cls, x.oid, x.sub)).* FROM x`)).rows;
  for (const r of comments) {
    const key = named.get(`${r.cls}/${r.oid}/${r.sub}`) ?? `pg_description: ${r.type} ${r.identity}`;
    if (exclude?.test(key)) continue;
    const entry = inv.get(key);
    if (entry) entry.comment = r.description;
    else inv.set(key, { comment: r.description }); // a comment on an object the catalogs above do not list
  }
  const db = (await c.query(DATABASE)).rows[0];
  inv.set("pg_database: database (current)", normalize(db));
  return inv;
}

function normalize(props: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(props).sort()) if (props[k] !== null && props[k] !== undefined) out[k] = props[k];
  return out;
}

export interface InventoryDifference {
  key: string;
  kind: "missing" | "extra" | "changed";
  /** For "changed": the property that differs. */
  field?: string;
  source?: unknown;
  target?: unknown;
}

/** Entries of `source` missing from `target`, entries only on `target`, and per-property value differences. */
export function diffInventories(source: Inventory, target: Inventory): InventoryDifference[] {
  const out: InventoryDifference[] = [];
  for (const [key, s] of source) {
    const t = target.get(key);
    if (!t) { out.push({ key, kind: "missing", source: s }); continue; }
    for (const field of [...new Set([...Object.keys(s), ...Object.keys(t)])].sort()) {
      const a = JSON.stringify(s[field]), b = JSON.stringify(t[field]);
      if (a !== b) out.push({ key, kind: "changed", field, source: s[field], target: t[field] });
    }
  }
  for (const [key, t] of target) if (!source.has(key)) out.push({ key, kind: "extra", target: t });
  return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : (a.field ?? "").localeCompare(b.field ?? "")));
}

/** One line per difference, for a failing test's message. */
export function formatDifferences(diffs: InventoryDifference[], limit = 400): string {
  const show = (v: unknown) => { const s = JSON.stringify(v); return s && s.length > 300 ? s.slice(0, 300) + "…" : s; };
  const lines = diffs.slice(0, limit).map((d) =>
    d.kind === "changed" ? `  ~ ${d.key} [${d.field}]: source ${show(d.source)} → target ${show(d.target)}`
      : d.kind === "missing" ? `  - ${d.key} (missing on the target)` : `  + ${d.key} (only on the target)`);
  if (diffs.length > limit) lines.push(`  … and ${diffs.length - limit} more`);
  return lines.join("\n");
}
