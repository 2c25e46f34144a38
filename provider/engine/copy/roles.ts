/**
 * `start --roles`: the roles the migrated objects need, created on the target before pre-data so that
 * pg_dump's ownership, grants, default privileges and policies apply as on the source.
 *
 * Which roles: those pg_shdepend names for objects of the migrated database and schemas (owners, ACL
 * grantees and grantors, policy roles, default-privilege roles), then every role that is a member of
 * those (transitively: their logins reach the objects through them), then every group those belong to
 * (transitively: the memberships are carried, so the groups must exist). The bootstrap superuser and
 * predefined roles (OIDs below 16384) exist on every server and are never created.
 *
 * What: attributes (SUPERUSER, CREATEDB, CREATEROLE, INHERIT, LOGIN, REPLICATION, BYPASSRLS, CONNECTION
 * LIMIT, VALID UNTIL), memberships (ADMIN; INHERIT and SET from PostgreSQL 16 on both sides), settings
 * (ALTER ROLE … SET; those IN DATABASE of the migrated database travel with the database's own settings at
 * cutover, start.ts databaseProperties), and the password verifier (SCRAM or md5) when the source session
 * may read pg_authid (superuser). A role that exists on the target already is never changed: a difference
 * in attributes or memberships is a finding naming it.
 *
 * Everything in one target transaction with the record of the created roles (state/createdRoles.ts):
 * a killed run leaves either all of it or nothing. Roles are global: cleanup prints DROP statements, never runs them.
 */
import { Client } from "pg";
import { quoteIdent, quoteLiteral, settingAssignment } from "../core/endpoint";
import { Finding, PgferryError } from "../core/errors";
import { serverVersionNum } from "../catalog/catalog";
import { readCreatedRoles, recordCreatedRoles } from "../state/createdRoles";

export interface RoleSync {
  /** Roles created on the target by this run. */
  created: string[];
  /** Roles the migrated objects need that the target already had (left as they are). */
  existing: string[];
  /** Memberships granted ("group → member"). */
  memberships: string[];
  /** ALTER ROLE … SET statements run (role: setting). */
  settings: string[];
  /** Created roles whose password verifier was copied. */
  passwords: string[];
  /** Roles differing on the target, login roles created without password. */
  findings: Finding[];
}

interface SourceRole {
  oid: number; name: string; super: boolean; inherit: boolean; createrole: boolean; createdb: boolean; login: boolean;
  replication: boolean; bypassrls: boolean; connlimit: number; validuntil: string | null;
}

const ATTRIBUTES: [keyof SourceRole, string, string][] = [
  ["super", "SUPERUSER", "NOSUPERUSER"], ["createdb", "CREATEDB", "NOCREATEDB"], ["createrole", "CREATEROLE", "NOCREATEROLE"],
  ["inherit", "INHERIT", "NOINHERIT"], ["login", "LOGIN", "NOLOGIN"], ["replication", "REPLICATION", "NOREPLICATION"],
  ["bypassrls", "BYPASSRLS", "NOBYPASSRLS"],
];


const ROLE_COLUMNS = `r.oid::int AS oid, r.rolname AS name, r.rolsuper AS super, r.rolinherit AS inherit, r.rolcreaterole AS createrole,
  r.rolcreatedb AS createdb, r.rolcanlogin AS login, r.rolreplication AS replication, r.rolbypassrls AS bypassrls,
  r.rolconnlimit AS connlimit, r.rolvaliduntil::text AS validuntil`;

/** The roles the migrated objects (of these schemas, or of none) need, with their member and group closure. */
export async function rolesNeeded(src: Client, schemas: string[]): Promise<SourceRole[]> {
  const r = await src.query(`
    WITH RECURSIVE base AS (
      SELECT DISTINCT d.refobjid AS oid FROM pg_shdepend d
       WHERE d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) AND d.refclassid = 'pg_authid'::regclass
         AND d.deptype IN ('o', 'a', 'r')
         AND coalesce((pg_identify_object(d.classid, d.objid, d.objsubid)).schema = ANY($1), true)
         AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = d.classid AND e.objid = d.objid AND e.deptype = 'e')),
    members AS (SELECT oid FROM base UNION SELECT m.member FROM pg_auth_members m JOIN members ON m.roleid = members.oid),
    groups AS (SELECT oid FROM members UNION SELECT m.roleid FROM pg_auth_members m JOIN groups ON m.member = groups.oid)
    SELECT ${ROLE_COLUMNS} FROM pg_roles r WHERE r.oid IN (SELECT oid FROM groups) AND r.oid >= 16384 ORDER BY r.rolname`, [schemas]);
  return r.rows;
}

/** "LOGIN on the source, NOLOGIN on the target; …" for a role both have ("" when equal). */
function attributeDifferences(s: SourceRole, t: SourceRole & { same_validuntil: boolean }): string[] {
  const out: string[] = [];
  for (const [k, yes, no] of ATTRIBUTES) if (s[k] !== t[k]) out.push(`${s[k] ? yes : no} on the source, ${t[k] ? yes : no} on the target`);
  if (s.connlimit !== t.connlimit) out.push(`CONNECTION LIMIT ${s.connlimit} on the source, ${t.connlimit} on the target`);
  if (!t.same_validuntil) out.push(`VALID UNTIL ${s.validuntil ?? "(none)"} on the source, ${t.validuntil ?? "(none)"} on the target`);
  return out;
}

function createStatement(x: SourceRole): string {
  const attrs = ATTRIBUTES.map(([k, yes, no]) => (x[k] ? yes : no));
  return `CREATE ROLE ${quoteIdent(x.name)} WITH ${attrs.join(" ")} CONNECTION LIMIT ${x.connlimit}` +
    `${x.validuntil !== null ? ` VALID UNTIL ${quoteLiteral(x.validuntil)}` : ""}`;
}

/**
 * Create the needed roles missing on the target, with memberships, settings and passwords, in one
 * transaction on `tgt` together with their record for migration `migration`.
 */
export async function syncRoles(src: Client, tgt: Client, migration: string, schemas: string[]): Promise<RoleSync> {
  const out: RoleSync = { created: [], existing: [], memberships: [], settings: [], passwords: [], findings: [] };
  const needed = await rolesNeeded(src, schemas);
  if (!needed.length) return out;
  const names = needed.map((x) => x.name);
  const [srcVersion, tgtVersion] = [await serverVersionNum(src), await serverVersionNum(tgt)];
  // Roles an earlier (killed) run of this migration created: ours, not "existing".
  const ours = new Set(await readCreatedRoles(tgt, migration));
  const onTarget = new Map<string, SourceRole & { same_validuntil: boolean }>(
    (await tgt.query(`SELECT ${ROLE_COLUMNS}, r.rolvaliduntil IS NOT DISTINCT FROM s.v::timestamptz AS same_validuntil
       FROM pg_roles r JOIN unnest($1::text[], $2::text[]) s(n, v) ON s.n = r.rolname`,
    [names, needed.map((x) => x.validuntil)])).rows.map((x) => [x.name, x]));
  const toCreate = needed.filter((x) => !onTarget.has(x.name));
  out.existing = needed.filter((x) => onTarget.has(x.name) && !ours.has(x.name)).map((x) => x.name);
  const creatable = new Set([...toCreate.map((x) => x.name), ...ours]);

  const differences = new Map<string, string[]>();
  const differ = (role: string, what: string) => differences.set(role, [...(differences.get(role) ?? []), what]);
  for (const x of needed) {
    const t = onTarget.get(x.name);
    if (t && !ours.has(x.name)) for (const d of attributeDifferences(x, t)) differ(x.name, d);
  }

  // Memberships among the needed roles (and into predefined roles the target has).
  const v16 = srcVersion >= 160000 && tgtVersion >= 160000;
  const members = (await src.query(`SELECT g.rolname AS "group", m.rolname AS member, am.admin_option AS admin,
      ${srcVersion >= 160000 ? "am.inherit_option AS inherit, am.set_option AS set" : "NULL::boolean AS inherit, NULL::boolean AS set"}
      FROM pg_auth_members am JOIN pg_roles g ON g.oid = am.roleid JOIN pg_roles m ON m.oid = am.member
     WHERE m.rolname = ANY($1) AND (g.rolname = ANY($1) OR g.oid < 16384) ORDER BY 1, 2`, [names])).rows;
  const tgtMembers = new Set((await tgt.query(`SELECT g.rolname || ' ' || m.rolname AS k FROM pg_auth_members am
      JOIN pg_roles g ON g.oid = am.roleid JOIN pg_roles m ON m.oid = am.member WHERE m.rolname = ANY($1)`, [names])).rows.map((x) => x.k));
  const grants: string[] = [];
  const predefinedOnTarget = new Set((await tgt.query(`SELECT rolname FROM pg_roles WHERE oid < 16384`)).rows.map((x) => x.rolname));
  for (const x of members) {
    if (!names.includes(x.group) && !predefinedOnTarget.has(x.group)) {
      differ(x.member, `member of ${x.group} on the source, a role the target's PostgreSQL does not have`);
      continue;
    }
    if (!creatable.has(x.member)) {
      // An existing role is never changed: a membership it lacks is named.
      if (!tgtMembers.has(`${x.group} ${x.member}`)) differ(x.member, `member of ${x.group} on the source, not on the target`);
      continue;
    }
    const opts = v16 ? ` WITH ADMIN ${x.admin ? "TRUE" : "FALSE"}, INHERIT ${x.inherit ? "TRUE" : "FALSE"}, SET ${x.set ? "TRUE" : "FALSE"}`
      : x.admin ? " WITH ADMIN OPTION" : "";
    grants.push(`GRANT ${quoteIdent(x.group)} TO ${quoteIdent(x.member)}${opts}`);
    out.memberships.push(`${x.group} → ${x.member}`);
  }

  // Settings of the role in every database (setdatabase 0); those IN DATABASE of the migrated one travel at cutover.
  const settings = (await src.query(`SELECT r.rolname AS role, c.setting FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole,
      unnest(s.setconfig) WITH ORDINALITY c(setting, n) WHERE s.setdatabase = 0 AND r.rolname = ANY($1) ORDER BY r.rolname, c.n`, [names])).rows;
  const settingStatements: string[] = [];
  for (const x of settings) {
    if (!creatable.has(x.role)) continue;
    const eq = (x.setting as string).indexOf("=");
    const name = x.setting.slice(0, eq), value = x.setting.slice(eq + 1);
    settingStatements.push(`ALTER ROLE ${quoteIdent(x.role)} SET ${settingAssignment(name, value)}`);
    out.settings.push(`${x.role}: ${name}`);
  }

  // Password verifiers: readable by a superuser only. Never logged, never in an error or the state.
  let verifiers: Map<string, string> | undefined;
  try {
    verifiers = new Map((await src.query(`SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY($1) AND rolpassword IS NOT NULL`,
      [toCreate.map((x) => x.name)])).rows.map((x) => [x.rolname, x.rolpassword]));
  } catch (e) {
    if ((e as { code?: string }).code !== "42501") throw e;
  }
  const noPassword = verifiers ? [] : toCreate.filter((x) => x.login).map((x) => x.name);

  await tgt.query("BEGIN");
  let step = "";
  try {
    for (const x of toCreate) { step = `creating role ${quoteIdent(x.name)}`; await tgt.query(createStatement(x)); }
    for (const g of grants) { step = g; await tgt.query(g); }
    for (const s of settingStatements) { step = s; await tgt.query(s); }
    for (const [role, verifier] of verifiers ?? []) {
      // The statement carries the verifier: its error text (not the statement) is all that is reported.
      step = `setting the password of role ${quoteIdent(role)}`;
      await tgt.query(`ALTER ROLE ${quoteIdent(role)} PASSWORD ${quoteLiteral(verifier)}`);
      out.passwords.push(role);
    }
    await recordCreatedRoles(tgt, migration, toCreate.map((x) => x.name));
    await tgt.query("COMMIT");
  } catch (e) {
    await tgt.query("ROLLBACK").catch(() => undefined);
    throw new PgferryError("roles_failed", `--roles: ${step} on the target failed: ${(e as Error).message}; nothing of the roles was created. ` +
      `Fix: connect to the target as a superuser (or a role with CREATEROLE that may grant these attributes), or create the roles ` +
      `yourself (pg_dumpall --roles-only on the source, applied to the target) and start without --roles`);
  }
  out.created = toCreate.map((x) => x.name);

  if (differences.size) {
    out.findings.push({ code: "role_differs", severity: "warning", server: "target", objects: [...differences.keys()],
      message: `role(s) the migrated objects need exist on the target with other attributes or memberships than on the source, and were ` +
        `left unchanged: ${[...differences].map(([r, d]) => `${quoteIdent(r)} (${d.join("; ")})`).join(", ")}`,
      fix: `if the target should match, run ALTER ROLE / GRANT there yourself; pgferry never changes an existing role` });
  }
  if (noPassword.length) {
    out.findings.push({ code: "role_passwords", severity: "warning", server: "target", objects: noPassword,
      message: `login role(s) ${noPassword.map(quoteIdent).join(", ")} were created on the target without a password: the source user ` +
        `may not read pg_authid (superuser only)`,
      fix: `set their passwords on the target (ALTER ROLE … PASSWORD), or run start as a superuser of the source` });
  }
  return out;
}

/** What cleanup prints for roles `start --roles` created: roles are global, so pgferry does not drop them itself. */
export function dropRoleStatements(roles: string[]): string[] {
  // Members before groups does not matter for DROP ROLE; owned objects must go first (REASSIGN/DROP OWNED, per database).
  return roles.map((r) => `DROP ROLE ${quoteIdent(r)};`);
}
