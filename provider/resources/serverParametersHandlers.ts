/**
 * What the `ServerParameters` dynamic resource does on a self-managed server: ALTER SYSTEM the
 * replication settings (sized from the server's current use when not given) and extra settings,
 * reload, and report what is in force and what waits for a restart. Delete leaves the server as it
 * is: resetting wal_level or slot limits could break other replication users of the server.
 */
import { connect, parseEndpoint } from "../engine";
import { ensureParameters, ParametersResult, readParameters, recommendedReplicationSettings } from "../engine/preflight/parameters";

export interface ServerParametersInputs {
  server: string;
  walLevel?: string;
  maxReplicationSlots?: number;
  maxWalSenders?: number;
  /** Concurrent migrations to size slots and WAL senders for (default 1). */
  migrations?: number;
  settings?: Record<string, string>;
}

const pick = (p: Record<string, unknown>): ServerParametersInputs => {
  const out: Record<string, unknown> = {};
  for (const k of ["server", "walLevel", "maxReplicationSlots", "maxWalSenders", "migrations", "settings"]) if (p[k] != null) out[k] = p[k];
  return out as unknown as ServerParametersInputs;
};

async function withServer<T>(uri: string, fn: (c: import("pg").Client) => Promise<T>): Promise<T> {
  const c = await connect(parseEndpoint(uri, "source"));
  try { return await fn(c); } finally { await c.end().catch(() => undefined); }
}

async function wantedOf(c: import("pg").Client, i: ServerParametersInputs): Promise<Record<string, string>> {
  const rec = await recommendedReplicationSettings(c, i.migrations ?? 1);
  return {
    wal_level: i.walLevel ?? "logical",
    max_replication_slots: String(i.maxReplicationSlots ?? rec.max_replication_slots),
    max_wal_senders: String(i.maxWalSenders ?? rec.max_wal_senders),
    ...(i.settings ?? {}),
  };
}

function outputs(i: ServerParametersInputs, wanted: Record<string, string>, r: ParametersResult) {
  return {
    ...i, wanted,
    effective: Object.fromEntries(r.parameters.map((p) => [p.name, p.value])),
    pendingRestart: r.pendingRestart,
    pendingRestartParameters: r.parameters.filter((p) => p.pendingRestart).map((p) => p.name),
    changed: r.changed,
  };
}

export async function check(_olds: Record<string, unknown>, news: Record<string, unknown>) {
  const failures: { property: string; reason: string }[] = [];
  for (const k of ["maxReplicationSlots", "maxWalSenders", "migrations"]) {
    const v = news[k];
    if (v != null && (!Number.isInteger(v) || (v as number) < 1)) failures.push({ property: k, reason: `${k} must be a positive whole number` });
  }
  if (news.walLevel != null && !["logical", "replica"].includes(news.walLevel as string)) {
    failures.push({ property: "walLevel", reason: "walLevel must be logical (or replica)" });
  }
  return { inputs: news, failures };
}

export async function diff(_id: string, olds: Record<string, unknown>, news: Record<string, unknown>) {
  const a = pick(olds), b = pick(news);
  const replaces = a.server !== b.server ? ["server"] : [];
  return { changes: JSON.stringify(a) !== JSON.stringify(b), replaces, deleteBeforeReplace: false };
}

async function apply(i: ServerParametersInputs) {
  return withServer(i.server, async (c) => {
    const wanted = await wantedOf(c, i);
    return outputs(i, wanted, await ensureParameters(c, wanted));
  });
}

export async function create(inputs: Record<string, unknown>) {
  const i = pick(inputs);
  const out = await apply(i);
  const host = parseEndpoint(i.server, "source");
  return { id: `pgferry-parameters-${host.host}-${host.port}`, outs: out };
}

export async function update(_id: string, _olds: Record<string, unknown>, news: Record<string, unknown>) {
  return { outs: await apply(pick(news)) };
}

export async function read(id: string, props: Record<string, unknown>) {
  const i = pick(props);
  const wanted = (props.wanted as Record<string, string>) ?? {};
  const r = await withServer(i.server, (c) => readParameters(c, wanted));
  // No `inputs`: the engine keeps the program's own on refresh (see migrationHandlers.read).
  return { id, props: outputs(i, wanted, { ...r, changed: (props.changed as string[]) ?? [] }) };
}

export async function remove(): Promise<void> {
  // Deliberately nothing: see the module comment.
}
