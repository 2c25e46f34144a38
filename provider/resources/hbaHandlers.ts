/**
 * What the `FirewallRule` dynamic resource does: a pg_hba.conf rule on a self-managed server, written,
 * reloaded and checked through pg_hba_file_rules, removed on delete. Also the automatic replication
 * rule a Migration with `autoReplicationRule: true` adds when the source refuses its replication
 * connection with 28000.
 */
import { connect, parseEndpoint } from "../engine";
import { ensureHbaRule, findRule, HbaRule, removeHbaRule, validateRule } from "../engine/preflight/hba";

export interface FirewallRuleInputs {
  /** Admin URI of the server whose pg_hba.conf is edited (secret). */
  server: string;
  /** Rule name; with replication: true it must end in "_replrule" (added when missing). */
  name: string;
  /** CIDR allowed to connect, e.g. 10.1.2.3/32. */
  address: string;
  user?: string;
  database?: string;
  method?: string;
  /**
   * The rule for a replication client (the target server, or pgferry): named `<name>_replrule`.
   * Logical replication connections match pg_hba by database name, so `database` applies as usual.
   */
  replication?: boolean;
}

export function ruleOf(i: FirewallRuleInputs): HbaRule {
  const replication = !!i.replication;
  const name = replication && !i.name.endsWith("_replrule") ? `${i.name}_replrule` : i.name;
  return { name, database: i.database ?? "all", user: i.user ?? "all", address: i.address,
    method: i.method ?? "scram-sha-256" };
}

const pick = (p: Record<string, unknown>): FirewallRuleInputs => ({
  server: p.server as string, name: p.name as string, address: p.address as string,
  ...(p.user != null ? { user: p.user as string } : {}), ...(p.database != null ? { database: p.database as string } : {}),
  ...(p.method != null ? { method: p.method as string } : {}), ...(p.replication != null ? { replication: p.replication as boolean } : {}),
});

async function withServer<T>(uri: string, fn: (c: import("pg").Client) => Promise<T>): Promise<T> {
  const c = await connect(parseEndpoint(uri, "source"));
  try { return await fn(c); } finally { await c.end().catch(() => undefined); }
}

export async function check(_olds: Record<string, unknown>, news: Record<string, unknown>) {
  const i = pick(news);
  const failures: { property: string; reason: string }[] = [];
  if (typeof i.name !== "string" || typeof i.address !== "string") {
    failures.push({ property: "name", reason: "name and address are required" });
  } else {
    for (const p of validateRule(ruleOf(i))) failures.push({ property: /address/.test(p) ? "address" : "name", reason: p });
  }
  return { inputs: news, failures };
}

export async function diff(_id: string, olds: Record<string, unknown>, news: Record<string, unknown>) {
  const keys = ["server", "name", "address", "user", "database", "method", "replication"];
  const changed = keys.filter((k) => JSON.stringify(olds[k] ?? null) !== JSON.stringify(news[k] ?? null));
  // A new name or server is another rule; the rest rewrites the same line in place.
  return { changes: changed.length > 0, replaces: changed.filter((k) => k === "name" || k === "server" || k === "replication"), deleteBeforeReplace: true };
}

async function apply(i: FirewallRuleInputs) {
  const rule = ruleOf(i);
  const state = await withServer(i.server, (c) => ensureHbaRule(c, rule));
  return { ...i, ruleName: rule.name, hbaFile: state.hbaFile, lineNumber: state.lineNumber, line: state.line };
}

export async function create(inputs: Record<string, unknown>) {
  const i = pick(inputs);
  return { id: `pgferry-hba-${ruleOf(i).name}`, outs: await apply(i) };
}

export async function update(_id: string, _olds: Record<string, unknown>, news: Record<string, unknown>) {
  return { outs: await apply(pick(news)) };
}

export async function read(id: string, props: Record<string, unknown>) {
  const i = pick(props);
  const state = await withServer(i.server, (c) => findRule(c, ruleOf(i).name));
  if (!state) return { id: "", props: {} };
  // No `inputs`: the engine keeps the program's own on refresh (see migrationHandlers.read).
  return { id, props: { ...i, ruleName: ruleOf(i).name, ...state } };
}

export async function remove(_id: string, props: Record<string, unknown>) {
  const i = pick(props);
  await withServer(i.server, (c) => removeHbaRule(c, ruleOf(i).name));
}

/**
 * The fix for `28000: no pg_hba.conf entry for replication connection from host "X", user "Y"`:
 * a `<migration>_replrule` replication rule for X, added through the source's own connection.
 */
export async function addReplicationRuleFor(sourceUri: string, message: string, migration: string): Promise<void> {
  const m = /from host "([^"]+)", user "([^"]+)"/.exec(message);
  if (!m) throw new Error(`cannot tell the client address from: ${message}`);
  const address = m[1].includes(":") ? `${m[1]}/128` : `${m[1]}/32`;
  const database = parseEndpoint(sourceUri, "source").database;
  await withServer(sourceUri, (c) => ensureHbaRule(c, ruleOf({ server: sourceUri, name: `${migration}_replrule`, address, user: m[2], database, replication: true })));
}
