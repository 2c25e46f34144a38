/**
 * The schema as start recorded it (pgferry.schema_entry), by section: pre-data, post-data, cutover (held
 * back until writes stop), final, preamble (the dump's SET statements), not-carried (what start could not
 * carry, with its reason and fix as JSON). Each entry is marked applied in the transaction that applies it.
 */
import { Client } from "pg";
import { CONTROL_SCHEMA, NotCarried } from "../catalog/catalog";
import { quoteLiteral } from "../core/endpoint";
import type { SchemaEntry } from "../copy/schema";

const S = CONTROL_SCHEMA;

export interface StoredEntry extends SchemaEntry { ordinal: number; applied: boolean }

/** Store entries of a section in the control schema (once; a re-run keeps the stored ones). */
export async function storeEntries(c: Client, migration: string, section: string, entries: SchemaEntry[]): Promise<void> {
  const existing = await c.query(`SELECT count(*)::int AS n FROM ${S}.schema_entry WHERE migration = $1 AND section = $2`, [migration, section]);
  if (existing.rows[0].n > 0 || !entries.length) return;
  // One statement for the whole section (a row per entry was a round trip per schema object).
  await c.query(`INSERT INTO ${S}.schema_entry (migration, section, ordinal, kind, object, sql, parallel)
                 SELECT $1, $2, x.ordinal - 1, x.kind, x.object, x.sql, x.parallel
                 FROM unnest($3::text[], $4::text[], $5::text[], $6::bool[]) WITH ORDINALITY AS x(kind, object, sql, parallel, ordinal)`,
    [migration, section, entries.map((e) => e.kind), entries.map((e) => e.object), entries.map((e) => e.sql), entries.map((e) => !!e.parallel)]);
}

export async function readEntries(c: Client, migration: string, section: string): Promise<StoredEntry[]> {
  const r = await c.query(`SELECT * FROM ${S}.schema_entry WHERE migration = $1 AND section = $2 ORDER BY ordinal`, [migration, section]);
  return r.rows.map((x) => ({ ordinal: x.ordinal, kind: x.kind, object: x.object, sql: x.sql, parallel: x.parallel, applied: x.applied }));
}

/** Mark one entry applied: call it in the transaction that applied the entry. */
export async function markEntryApplied(c: Client, migration: string, section: string, ordinal: number): Promise<void> {
  await c.query(`UPDATE ${S}.schema_entry SET applied = true WHERE migration = $1 AND section = $2 AND ordinal = $3`, [migration, section, ordinal]);
}

/** markEntryApplied as SQL text with literals, to send in the same round trip as the entry itself. */
export function markEntryAppliedSql(migration: string, section: string, ordinal: number): string {
  return `UPDATE ${S}.schema_entry SET applied = true WHERE migration = ${quoteLiteral(migration)} AND section = ${quoteLiteral(section)} ` +
    `AND ordinal = ${Math.trunc(ordinal)}`;
}

/** markEntryAppliedSql for several entries of a section, one statement (sent in the transaction that applies them). */
export function markEntriesAppliedSql(migration: string, section: string, ordinals: number[]): string {
  return `UPDATE ${S}.schema_entry SET applied = true WHERE migration = ${quoteLiteral(migration)} AND section = ${quoteLiteral(section)} ` +
    `AND ordinal IN (${ordinals.map((o) => Math.trunc(o)).join(", ")})`;
}

/** How many entries of a section were applied. */
export async function countAppliedEntries(c: Client, migration: string, section: string): Promise<number> {
  const r = await c.query(`SELECT count(*)::int AS n FROM ${S}.schema_entry WHERE migration = $1 AND section = $2 AND applied`, [migration, section]);
  return r.rows[0].n;
}

/** How many entries of each of these sections are not applied yet (0 for a section with none), in one statement. */
export async function countUnappliedEntries(c: Client, migration: string, sections: string[]): Promise<Map<string, number>> {
  const r = await c.query(`SELECT s AS section, (SELECT count(*)::int FROM ${S}.schema_entry e WHERE e.migration = $1 AND e.section = s AND NOT e.applied) AS n
    FROM unnest($2::text[]) AS s`, [migration, sections]);
  return new Map(r.rows.map((x) => [x.section as string, x.n as number]));
}

/** The dump's preamble (its SET statements), run before applying entries; "" when none was recorded. */
export async function readPreamble(c: Client, migration: string): Promise<string> {
  const r = await c.query(`SELECT sql FROM ${S}.schema_entry WHERE migration = $1 AND section = 'preamble'`, [migration]);
  return r.rows[0]?.sql ?? "";
}

/** Foreign keys held back for cutover and not applied yet (their objects, "schema.table.constraint" as stored). */
export async function pendingHeldBackForeignKeys(c: Client, migration: string): Promise<string[]> {
  const r = await c.query(`SELECT object FROM ${S}.schema_entry WHERE migration = $1 AND section = 'cutover'
    AND kind = 'FK CONSTRAINT' AND NOT applied`, [migration]);
  return r.rows.map((x) => x.object as string);
}

/** What start recorded as not carried (section "not-carried"): the Migration's outputs and status show it. */
export async function readNotCarried(c: Client, migration: string): Promise<NotCarried[]> {
  const r = await c.query(`SELECT kind, object, sql FROM ${S}.schema_entry WHERE migration = $1 AND section = 'not-carried' ORDER BY ordinal`,
    [migration]).catch(() => ({ rows: [] as { kind: string; object: string; sql: string }[] }));
  return r.rows.map((x) => ({ kind: x.kind, object: x.object, ...(JSON.parse(x.sql) as { reason: string; fix: string }) }));
}

/** Replace the not-carried entries of these kinds by `fresh`, the others kept, in one transaction. */
export async function replaceNotCarried(c: Client, migration: string, kinds: string[], fresh: NotCarried[]): Promise<void> {
  await c.query("BEGIN");
  try {
    await c.query(`DELETE FROM ${S}.schema_entry WHERE migration = $1 AND section = 'not-carried' AND kind = ANY ($2::text[])`, [migration, kinds]);
    const next = Number((await c.query(`SELECT coalesce(max(ordinal) + 1, 0) AS n FROM ${S}.schema_entry WHERE migration = $1 AND section = 'not-carried'`,
      [migration])).rows[0].n);
    for (const [i, x] of fresh.entries()) {
      await c.query(`INSERT INTO ${S}.schema_entry (migration, section, ordinal, kind, object, sql, parallel) VALUES ($1, 'not-carried', $2, $3, $4, $5, false)`,
        [migration, next + i, x.kind, x.object, JSON.stringify({ reason: x.reason, fix: x.fix })]);
    }
    await c.query("COMMIT");
  } catch (e) {
    await c.query("ROLLBACK").catch(() => undefined);
    throw e;
  }
}

/**
 * The section's materialized-view refreshes made to match `wanted` ("schema.name" → its REFRESH entry), in one
 * transaction: an entry for a view not wanted any more is removed (applied or not), a wanted view without one gets
 * one after the section's last entry (so after the refreshes it may read). Returns the objects added and removed.
 */
export async function reconcileRefreshEntries(c: Client, migration: string, section: string, wanted: SchemaEntry[]): Promise<{ added: string[]; removed: string[] }> {
  const kind = "MATERIALIZED VIEW DATA";
  await c.query("BEGIN");
  try {
    const stored = (await c.query(`SELECT object FROM ${S}.schema_entry WHERE migration = $1 AND section = $2 AND kind = $3`, [migration, section, kind]))
      .rows.map((x) => x.object as string);
    const want = new Set(wanted.map((e) => e.object));
    const removed = stored.filter((o) => !want.has(o));
    const added = wanted.filter((e) => !stored.includes(e.object));
    if (removed.length) {
      await c.query(`DELETE FROM ${S}.schema_entry WHERE migration = $1 AND section = $2 AND kind = $3 AND object = ANY($4::text[])`, [migration, section, kind, removed]);
    }
    if (added.length) {
      await c.query(`INSERT INTO ${S}.schema_entry (migration, section, ordinal, kind, object, sql, parallel)
                     SELECT $1, $2, (SELECT coalesce(max(ordinal), -1) FROM ${S}.schema_entry WHERE migration = $1 AND section = $2) + x.ordinal, x.kind, x.object, x.sql, false
                     FROM unnest($3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS x(kind, object, sql, ordinal)`,
      [migration, section, added.map((e) => e.kind), added.map((e) => e.object), added.map((e) => e.sql)]);
    }
    await c.query("COMMIT");
    return { added: added.map((e) => e.object), removed };
  } catch (e) {
    await c.query("ROLLBACK").catch(() => undefined);
    throw e;
  }
}
