/**
 * What the `SchemaSync` dynamic resource does: preflight and the schema's pre-data on the target
 * (types, functions, tables, sequences), recording what post-data (indexes, keys, triggers) will
 * follow the load and what is held back for cutover (foreign keys, materialized view data). The
 * Migration of the same name continues from there. Delete leaves the schema: it is target data.
 */
import { Client } from "pg";
import { connect, migrationOptions, parseEndpoint, startMigration } from "../engine";
import { formatFindings, PgferryError } from "../engine/core/errors";
import { readEntries } from "../engine/copy/schema";
import { readMigration } from "../engine/state/state";

export interface SchemaSyncInputs {
  source: string; target: string; name?: string; schemas?: string[]; include?: string[]; exclude?: string[]; replicaIdentityFull?: boolean;
}

const KEYS = ["source", "target", "name", "schemas", "include", "exclude", "replicaIdentityFull"] as const;
const pick = (p: Record<string, unknown>): SchemaSyncInputs => {
  const out: Record<string, unknown> = {};
  for (const k of KEYS) if (p[k] != null) out[k] = p[k];
  return out as unknown as SchemaSyncInputs;
};
const nameOf = (i: SchemaSyncInputs) => i.name ?? "main";

async function outputs(i: SchemaSyncInputs) {
  const c: Client = await connect(parseEndpoint(i.target, "target"));
  try {
    const m = await readMigration(c, nameOf(i));
    if (!m) return undefined;
    const list = async (section: string) => (await readEntries(c, nameOf(i), section)).map((e) => ({ kind: e.kind, object: e.object, applied: e.applied }));
    return { ...i, migrationName: nameOf(i), phase: m.phase, postData: await list("post-data"), heldBack: await list("cutover") };
  } finally {
    await c.end().catch(() => undefined);
  }
}

export async function check(_olds: Record<string, unknown>, news: Record<string, unknown>) {
  const failures: { property: string; reason: string }[] = [];
  for (const k of ["source", "target"] as const) {
    try { parseEndpoint(news[k] as string, k); } catch (e) { failures.push({ property: k, reason: (e as Error).message }); }
  }
  return { inputs: news, failures };
}

export async function diff(_id: string, olds: Record<string, unknown>, news: Record<string, unknown>) {
  const changed = KEYS.filter((k) => JSON.stringify(olds[k] ?? null) !== JSON.stringify(news[k] ?? null));
  return { changes: changed.length > 0, replaces: [...changed], deleteBeforeReplace: true };
}

export async function create(inputs: Record<string, unknown>) {
  const i = pick(inputs);
  try {
    await startMigration(parseEndpoint(i.source, "source"), parseEndpoint(i.target, "target"),
      migrationOptions({ name: i.name, schemas: i.schemas ?? [], include: i.include ?? [], exclude: i.exclude ?? [],
        replicaIdentityFull: !!i.replicaIdentityFull }), undefined, "SchemaSync");
  } catch (e) {
    if (e instanceof PgferryError && e.findings.length) throw new Error(`${e.message}\n${formatFindings(e.findings)}`);
    throw e;
  }
  return { id: `pgferry-schema-${nameOf(i)}`, outs: (await outputs(i))! };
}

export async function read(id: string, props: Record<string, unknown>) {
  const i = pick(props);
  const out = await outputs(i);
  // Once the Migration is destroyed its state is gone, but the schema stays on the target: keep the last outputs.
  // No `inputs`: the engine keeps the program's own on refresh (see migrationHandlers.read).
  return { id, props: out ?? props };
}

export async function update(_id: string, _olds: Record<string, unknown>, news: Record<string, unknown>) {
  const i = pick(news);
  return { outs: (await outputs(i)) ?? { ...i } };
}

export async function remove(): Promise<void> {
  // The schema on the target is target data: never dropped.
}
