/**
 * pg_hba.conf rules on a self-managed server, through SQL only: read with pg_read_file, written
 * byte-exact with lo_from_bytea + lo_export (COPY would escape tabs), reloaded, then checked in
 * pg_hba_file_rules. A rule that does not parse is rolled back. Rules carry a marker comment
 * (`# pgferry:<name>`) so they can be found, updated and removed. Needs a superuser (or
 * pg_read_server_files + pg_write_server_files).
 */
import { Client } from "pg";
import { PgferryError } from "../core/errors";

export interface HbaRule {
  /** Identifies the rule; replication rules end in `_replrule` (Azure's naming, kept everywhere). */
  name: string;
  /**
   * Database name or "all". Logical replication connections are matched by their database name:
   * the `replication` keyword covers physical replication only (PostgreSQL 10+).
   */
  database: string;
  user: string;
  /** CIDR, e.g. 10.1.2.3/32 */
  address: string;
  method: string;
}

export interface HbaState { hbaFile: string; lineNumber: number; line: string }

const MARK = (name: string) => `# pgferry:${name}`;

export function ruleLine(r: HbaRule): string {
  return `host\t${r.database}\t${r.user}\t${r.address}\t${r.method}\t${MARK(r.name)}`;
}

export function validateRule(r: HbaRule): string[] {
  const problems: string[] = [];
  if (!/^[A-Za-z0-9_.-]{1,80}$/.test(r.name)) problems.push("name must be 1-80 characters of letters, digits, _ . -");
  if (!/^[0-9a-fA-F:.]+\/\d{1,3}$/.test(r.address)) problems.push(`address must be a CIDR such as 10.0.0.5/32 (got "${r.address}")`);
  for (const [k, v] of [["database", r.database], ["user", r.user], ["method", r.method]] as const) {
    if (!/^[A-Za-z0-9_.+-]+$/.test(v)) problems.push(`${k} "${v}" must be a plain pg_hba word (no spaces or quotes)`);
  }
  if (!["scram-sha-256", "md5", "password", "cert", "trust", "reject"].includes(r.method)) problems.push(`method "${r.method}" is not supported here`);
  return problems;
}

async function readHba(c: Client): Promise<{ file: string; text: string }> {
  try {
    const r = await c.query(`SELECT current_setting('hba_file') AS f, pg_read_file(current_setting('hba_file')) AS t`);
    return { file: r.rows[0].f, text: r.rows[0].t };
  } catch (e) {
    throw new PgferryError("hba_privilege", `cannot read pg_hba.conf (${(e as Error).message}); fix: connect as a superuser, ` +
      `or GRANT pg_read_server_files, pg_write_server_files to the role`);
  }
}

async function writeHba(c: Client, file: string, text: string): Promise<void> {
  await c.query("BEGIN");
  try {
    const lo = (await c.query(`SELECT lo_from_bytea(0, convert_to($1, 'UTF8')) AS oid`, [text])).rows[0].oid;
    await c.query(`SELECT lo_export($1, $2)`, [lo, file]);
    await c.query(`SELECT lo_unlink($1)`, [lo]);
    await c.query("COMMIT");
  } catch (e) {
    await c.query("ROLLBACK").catch(() => undefined);
    throw new PgferryError("hba_write", `cannot write ${file} (${(e as Error).message}); fix: connect as a superuser`);
  }
  await c.query(`SELECT pg_reload_conf()`);
}

function withoutRule(text: string, name: string): string {
  return text.split("\n").filter((l) => !l.endsWith(MARK(name))).join("\n");
}

/**
 * Insert (or replace) the rule before every other rule — pg_hba is first-match — reload, and check
 * PostgreSQL parsed it. Returns where it landed.
 */
export async function ensureHbaRule(c: Client, rule: HbaRule): Promise<HbaState> {
  const problems = validateRule(rule);
  if (problems.length) throw new PgferryError("bad_rule", `pg_hba rule "${rule.name}": ${problems.join("; ")}`);
  const { file, text } = await readHba(c);
  const lines = withoutRule(text, rule.name).split("\n");
  const firstRule = lines.findIndex((l) => /^\s*(local|host|hostssl|hostnossl|hostgssenc|hostnogssenc)\s/.test(l));
  const at = firstRule < 0 ? lines.length : firstRule;
  lines.splice(at, 0, ruleLine(rule));
  await writeHba(c, file, lines.join("\n"));
  const state = await findRule(c, rule.name);
  const errors = (await c.query(`SELECT line_number, error FROM pg_hba_file_rules WHERE error IS NOT NULL`)).rows;
  if (errors.length || !state) {
    await writeHba(c, file, text); // put the original back
    throw new PgferryError("bad_rule", `PostgreSQL rejected pg_hba rule "${rule.name}"` +
      (errors.length ? `: line ${errors[0].line_number}: ${errors[0].error}` : "") + `; the original pg_hba.conf was restored`);
  }
  return state;
}

export async function findRule(c: Client, name: string): Promise<HbaState | undefined> {
  const { file, text } = await readHba(c);
  const idx = text.split("\n").findIndex((l) => l.endsWith(MARK(name)));
  if (idx < 0) return undefined;
  const line = text.split("\n")[idx];
  // Loaded and in force? pg_hba_file_rules shows the file as PostgreSQL parses it (line numbers are 1-based).
  const r = await c.query(`SELECT 1 FROM pg_hba_file_rules WHERE line_number = $1 AND error IS NULL`, [idx + 1]);
  return r.rowCount ? { hbaFile: file, lineNumber: idx + 1, line } : undefined;
}

export async function removeHbaRule(c: Client, name: string): Promise<boolean> {
  const { file, text } = await readHba(c);
  const next = withoutRule(text, name);
  if (next === text) return false;
  await writeHba(c, file, next);
  return true;
}
