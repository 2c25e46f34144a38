/**
 * Endpoints: a source or target server given as a libpq URI. Parsing, safe labels, connections with
 * lossless text settings, environments for pg_dump, and connection errors turned into findings that
 * name the fix. The URI (which may hold a password) never appears in any message.
 */
import { Client, ClientConfig, escapeIdentifier } from "pg";
import { parse } from "pg-connection-string";
import { PgferryError } from "./errors";
import { CLI_ONLY } from "./optionSpec";

export type Role = "source" | "target";

export interface Endpoint {
  role: Role;
  host: string;
  port: number;
  user: string;
  /** Absent when it comes from PGPASSWORD or ~/.pgpass (libpq rules, honoured by pg). */
  password?: string;
  database: string;
  /** libpq sslmode; undefined means the server decides (no TLS requested). */
  sslmode?: string;
  /** libpq sslrootcert: file of the CA certificate(s) a verify-ca / verify-full connection trusts. */
  sslrootcert?: string;
  /** role user@host:port/db — the only way an endpoint is ever printed. */
  label: string;
}

const SSL_MODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];

/**
 * Settings every pgferry session uses: the ones PostgreSQL's own walreceiver forces, so text values
 * (dates, intervals, floats) round-trip exactly, plus UTC so hashes agree on both sides.
 */
// standard_conforming_strings=on: quoteLiteral's '…' form keeps backslashes literal on every session we open,
// whatever the server's or the database's setting.
export const SESSION_GUCS = "-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3 -c timezone=UTC -c standard_conforming_strings=on";

export function parseEndpoint(uri: string | undefined, role: Role): Endpoint {
  if (!uri || !/^postgres(ql)?:\/\//.test(uri)) {
    throw new PgferryError(
      "bad_uri",
      `--${role} must be a libpq URI like postgresql://user@host:5432/dbname (got ${uri ? "a value that is not one" : "nothing"})`,
    );
  }
  let p: ReturnType<typeof parse>;
  // Checked before parsing: the parser reads the file, and its failure would read as a malformed URI.
  const rootcert = /[?&]sslrootcert=([^&]*)/.exec(uri)?.[1];
  const sslrootcert = rootcert !== undefined ? decodeURIComponent(rootcert) : process.env.PGSSLROOTCERT;
  if (sslrootcert && !require("fs").existsSync(sslrootcert)) {
    throw new PgferryError("bad_uri", `--${role}: sslrootcert ${sslrootcert} does not exist; fix: give the path of the CA certificate ` +
      `that signed the server's certificate`);
  }
  try {
    p = parse(uri);
  } catch {
    throw new PgferryError("bad_uri", `--${role} is not a valid libpq URI; expected postgresql://user@host:5432/dbname`);
  }
  const host = p.host || process.env.PGHOST || "localhost";
  const port = Number(p.port || process.env.PGPORT || 5432);
  const user = p.user || process.env.PGUSER || require("os").userInfo().username;
  const database = p.database || process.env.PGDATABASE || user;
  const sslmode = (p as Record<string, unknown>).sslmode as string | undefined ?? process.env.PGSSLMODE;
  if (sslmode && !SSL_MODES.includes(sslmode)) {
    throw new PgferryError("bad_uri", `--${role}: sslmode=${sslmode} is not one of ${SSL_MODES.join(", ")}`);
  }
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new PgferryError("bad_uri", `--${role}: port must be a number between 1 and 65535`);
  }
  return {
    role, host, port, user, database, sslmode, sslrootcert,
    password: p.password || undefined,
    label: `${role} ${user}@${host}:${port}/${database}`,
  };
}

/** pg ClientConfig for an endpoint, sslmode interpreted as libpq does. */
export function clientConfig(ep: Endpoint, extra: Partial<ClientConfig> = {}): ClientConfig {
  let ssl: ClientConfig["ssl"] = undefined;
  switch (ep.sslmode) {
    case "require": case "prefer": case "allow": ssl = { rejectUnauthorized: false }; break;
    case "verify-ca": ssl = { rejectUnauthorized: true, checkServerIdentity: () => undefined, ca: rootCa(ep) }; break;
    case "verify-full": ssl = { rejectUnauthorized: true, ca: rootCa(ep) }; break;
  }
  return {
    host: ep.host, port: ep.port, user: ep.user, password: ep.password, database: ep.database, ssl,
    options: SESSION_GUCS,
    connectionTimeoutMillis: 15000,
    // TCP keepalives: a peer that vanished (host down, NAT state lost) errors the socket instead of
    // leaving a read waiting forever. Stalls keepalives cannot see (a live middlebox that stopped
    // forwarding) are caught by the application timeouts (watchStall, the applier's replication timeout).
    keepAlive: true,
    keepAliveInitialDelayMillis: 10000,
    application_name: "pgferry",
    ...extra,
  };
}

/**
 * The CA certificates a verifying connection trusts, as libpq picks them: sslrootcert, else
 * ~/.postgresql/root.crt if present, else (unlike libpq, which then refuses) the system's CAs.
 */
function rootCa(ep: Endpoint): string | undefined {
  const fs = require("fs") as typeof import("fs");
  const file = ep.sslrootcert ?? require("path").join(require("os").homedir(), ".postgresql", "root.crt");
  return ep.sslrootcert || fs.existsSync(file) ? fs.readFileSync(file, "utf8") : undefined;
}

/** Connect, or throw a PgferryError naming the server and the fix. */
export async function connect(ep: Endpoint, extra: Partial<ClientConfig> = {}): Promise<Client> {
  const client = new Client(clientConfig(ep, extra));
  // An idle client whose server goes away emits 'error'; unhandled, that would kill the process.
  client.on("error", () => undefined);
  try {
    await client.connect();
  } catch (e) {
    await client.end().catch(() => undefined);
    throw connectionError(ep, e, !!(extra as { replication?: unknown }).replication);
  }
  return client;
}

/** A replication-protocol connection (CREATE_REPLICATION_SLOT, START_REPLICATION). */
export function connectReplication(ep: Endpoint): Promise<Client> {
  return connect(ep, { replication: "database" } as Partial<ClientConfig>);
}

export function connectionError(ep: Endpoint, e: unknown, replication = false): PgferryError {
  const err = e as { code?: string; message?: string };
  const where = `${ep.role} ${ep.host}:${ep.port}`;
  const code = err.code ?? "";
  const text = redact(err.message ?? String(e), ep);
  if (code === "28P01") {
    return new PgferryError("auth_failed", `password authentication failed for user "${ep.user}" on the ${where}; ` +
      `fix: correct the password in --${ep.role} (or PGPASSWORD / ~/.pgpass)`);
  }
  if (code === "28000" && /no encryption|SSL off/.test(err.message ?? "") && !ep.sslmode) {
    return new PgferryError("pg_hba", `the ${where} refused an unencrypted connection for user "${ep.user}" (its pg_hba.conf ` +
      `only allows TLS for this client); fix: add ?sslmode=require to --${ep.role}`);
  }
  if (code === "28000") {
    const m = /host "([^"]+)", user "([^"]+)"/.exec(err.message ?? "");
    const client = m?.[1] ?? "this machine", user = m?.[2] ?? ep.user;
    const kind = replication ? "replication" : ep.database;
    return new PgferryError("pg_hba", `the ${where} has no pg_hba.conf entry for ${replication ? "a replication" : "a"} connection ` +
      `from host "${client}", user "${user}"; fix: add "host ${kind} ${user} ${client}/32 scram-sha-256" to pg_hba.conf ` +
      `and reload (SELECT pg_reload_conf()); with Pulumi: new pgferry.FirewallRule("source_replrule", { server: <source admin URI>, ` +
      `address: "${client}/32", user: "${user}"${replication ? ", replication: true" : ""} }) or autoReplicationRule: true on the Migration; ` +
      `on Azure a firewall rule named "<name>_replrule" for ${client}`);
  }
  if (code === "3D000") {
    return new PgferryError("no_database", `database "${ep.database}" does not exist on the ${where}; fix: create it ` +
      `(CREATE DATABASE "${ep.database}") or name an existing one in --${ep.role}`);
  }
  if (["ECONNREFUSED", "ENOTFOUND", "EHOSTUNREACH", "ETIMEDOUT", "ECONNRESET", "EAI_AGAIN"].includes(code) ||
      /timeout/i.test(text)) {
    return new PgferryError("unreachable", `cannot reach the ${where} (${code || text}); fix: check host and port in --${ep.role}, ` +
      `that the server is running with listen_addresses covering this host, and that firewalls allow it`);
  }
  if (/certificate|self[- ]signed|altnames|Hostname\/IP does not match/i.test(text)) {
    return new PgferryError("tls", `the ${where}'s TLS certificate was not accepted with sslmode=${ep.sslmode} (${text}); fix: give the CA ` +
      `that signed it with sslrootcert=<file> in --${ep.role} (or PGSSLROOTCERT), and connect by a name or address the certificate lists`);
  }
  if (/does not support SSL|SSL/i.test(text)) {
    return new PgferryError("tls", `TLS negotiation with the ${where} failed (${text}); fix: set sslmode in --${ep.role} ` +
      `to what the server supports (managed clouds need sslmode=require)`);
  }
  return new PgferryError("connect_failed", `cannot connect to the ${where}: ${text}`);
}

/** Remove any password of the given endpoints from a text (stderr of child processes, errors). */
export function redact(text: string, ...eps: (Endpoint | undefined)[]): string {
  let out = text;
  for (const ep of eps) {
    if (ep?.password) out = out.split(ep.password).join("********");
  }
  return out.replace(/(postgres(?:ql)?:\/\/[^:@/\s]*:)[^@\s]*@/g, "$1********@");
}

/** Environment for libpq programs (pg_dump): credentials via env, never argv (visible in ps). */
export function libpqEnv(ep: Endpoint): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PGHOST: ep.host, PGPORT: String(ep.port), PGUSER: ep.user,
    PGDATABASE: ep.database, PGAPPNAME: "pgferry", PGOPTIONS: SESSION_GUCS, PGCONNECT_TIMEOUT: "15" };
  if (ep.password) env.PGPASSWORD = ep.password;
  if (ep.sslmode) env.PGSSLMODE = ep.sslmode;
  if (ep.sslrootcert) env.PGSSLROOTCERT = ep.sslrootcert;
  return env;
}

/** libpq keyword/value conninfo, for CREATE SUBSCRIPTION … CONNECTION. */
export function conninfo(ep: Endpoint, hostOverride?: string): string {
  const q = (v: string) => `'${v.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
  let host = ep.host, port = ep.port;
  if (hostOverride) {
    const m = /^(?:\[([^\]]+)\]|([^:]+)|([0-9a-fA-F:]+))(?::(\d+))?$/.exec(hostOverride);
    const bare = /^[0-9a-fA-F:]+$/.test(hostOverride) && hostOverride.includes("::"); // IPv6 without brackets or port
    host = bare ? hostOverride : m?.[1] ?? m?.[2] ?? m?.[3] ?? hostOverride;
    if (!bare && m?.[4]) port = Number(m[4]);
  }
  const parts = [`host=${q(host)}`, `port=${port}`, `user=${q(ep.user)}`, `dbname=${q(ep.database)}`];
  const password = ep.password ?? process.env.PGPASSWORD;
  if (password) parts.push(`password=${q(password)}`);
  if (ep.sslmode) parts.push(`sslmode=${ep.sslmode}`);
  // The target's walreceiver reads this path on the target's host: the CA file must be there too.
  if (ep.sslrootcert) parts.push(`sslrootcert=${q(ep.sslrootcert)}`);
  return parts.join(" ");
}

/**
 * The SQL escaper: every identifier and literal pgferry writes into SQL goes through these two (no other
 * quoting in the engine). Identifiers: pg's own escapeIdentifier. Literals: the standard-conforming form
 * ('' doubled, backslash literal), not pg's escapeLiteral — that one writes E'…' when a backslash is present,
 * which the walsender's replication grammar (START_REPLICATION … (option 'value')) does not accept, and the
 * same literals go into fixes users paste. Correct on our sessions because SESSION_GUCS pins
 * standard_conforming_strings on.
 */
export function quoteIdent(s: string): string {
  return escapeIdentifier(s);
}

export function quoteLiteral(s: string): string {
  return s.indexOf("'") < 0 ? "'" + s + "'" : "'" + s.replace(/'/g, "''") + "'";
}

/** GUC_LIST_QUOTE settings: stored as a list of (possibly quoted) names, written back unquoted as a list. */
const LIST_SETTINGS = new Set(["search_path", "temp_tablespaces", "session_preload_libraries", "local_preload_libraries", "shared_preload_libraries"]);

/** `name = value` for `ALTER … SET`, from a setting as pg_db_role_setting stores it ("name=value"'s two halves). */
export function settingAssignment(name: string, value: string): string {
  return `${quoteIdent(name)} = ${LIST_SETTINGS.has(name) ? value : quoteLiteral(value)}`;
}

/** "schema"."table" */
export function qualified(schema: string, name: string): string {
  return `${quoteIdent(schema)}.${quoteIdent(name)}`;
}

/** Default of --stall-timeout: seconds without an answer after which a connection counts as stalled. */
export const DEFAULT_STALL_TIMEOUT_SEC: number = CLI_ONLY.stallTimeout.default;

/** The socket under a pg client (internal, stable across pg 8). */
export function socketOf(c: Client): import("net").Socket | undefined {
  return (c as unknown as { connection?: { stream?: import("net").Socket } }).connection?.stream;
}

/** The server process of a connected pg client (pg sets processID from BackendKeyData; its types omit it). */
export function backendPid(c: Client): number | undefined {
  return (c as unknown as { processID?: number }).processID;
}

/** Cut a connection at once (no goodbye: a stalled peer would never acknowledge it); its queries fail. */
export function destroyClient(c: Client | undefined): void {
  const s = c && socketOf(c);
  if (s && !s.destroyed) s.destroy();
}

/** End a connection politely, or cut it when the peer does not answer within `ms` (a stalled link). */
export async function endClient(c: Client | undefined, ms = 3000): Promise<void> {
  if (!c) return;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((r) => { timer = setTimeout(() => { destroyClient(c); r(); }, ms); });
  await Promise.race([c.end().catch(() => undefined), late]);
  clearTimeout(timer);
}

/** A connection whose socket is gone (closed, reset, cut): the link to that server broke. */
export function connectionLost(c: Client | undefined): boolean {
  const s = c && socketOf(c);
  return !!s && (s.destroyed || s.readableEnded);
}

/** The error of a link that stopped answering: names the link and the fix. */
export function stallError(ep: Endpoint, what: string, seconds: number): PgferryError {
  return new PgferryError("stalled", `the connection to the ${ep.role} ${ep.host}:${ep.port} stalled: ${what} for ${seconds} s ` +
    `(--stall-timeout); fix: check the network between pgferry and the ${ep.role} (a firewall or NAT dropping the flow, the ` +
    `server hung) — the work resumes from where it stopped once it answers; raise --stall-timeout if one statement legitimately ` +
    `runs longer`);
}

/**
 * Watch a client: while it has a query in progress and no byte arrived for `ms`, the link counts as
 * stalled: onStall runs and the socket is cut, so the query fails instead of waiting forever. Returns
 * the function that stops watching. (A query the server works on silently for longer than `ms` trips it
 * too: the bound must exceed the longest single statement on that connection.)
 */
export function watchStall(c: Client, ms: number, onStall: () => void): () => void {
  let last = Date.now();
  let watched: import("net").Socket | undefined;
  const seen = () => { last = Date.now(); };
  const busy = () => {
    const x = c as unknown as { _activeQuery?: unknown; _queryQueue?: unknown[] };
    return !!x._activeQuery || !!x._queryQueue?.length;
  };
  let wasBusy = false;
  const timer = setInterval(() => {
    const s = socketOf(c);
    if (s && s !== watched) { watched?.off("data", seen); s.on("data", seen); watched = s; }
    const b = busy();
    if (b && !wasBusy) last = Date.now(); // a query just started: its clock starts now
    wasBusy = b;
    if (b && Date.now() - last > ms) { clearInterval(timer); onStall(); destroyClient(c); }
  }, Math.max(50, Math.min(1000, ms / 10)));
  timer.unref();
  return () => { clearInterval(timer); watched?.off("data", seen); };
}

/** Run fn with a connection that is always closed afterwards. */
export async function withClient<T>(ep: Endpoint, fn: (c: Client) => Promise<T>): Promise<T> {
  const c = await connect(ep);
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}
