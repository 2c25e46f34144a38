/**
 * Properties of the stream applier's statements (batchSql/changeSql/checkStatement) over random batches with
 * arbitrary names and values. That they apply correctly is test/stream.property.test.ts's part (real servers);
 * here: no name or value ever leaves its quotes, every change is accounted for, merged statements never name a
 * key twice, tables keep the order of their first change, and checkStatement accepts exactly the right rows.
 */
import fc from "fast-check";
import { Client } from "pg";
import { sqlTokens } from "../../../../test/support/sqlTokens";
import { qualified } from "../../core/endpoint";
import { batchSql, checkStatement, DivergenceError, TableMeta } from "./stream";

const text = fc.string({ unit: fc.oneof(fc.constantFrom("'", '"', "\\", "\n", ",", "(", ")", " ", "E", "$", "-"), fc.fullUnicode()) })
  .map((s) => s.replace(/\0/g, ""));
const value = fc.option(text, { nil: null, freq: 5 });

interface Table { schema: string; name: string; key: string; cols: string[]; full: boolean }
const table = fc.record({ schema: text, name: text, full: fc.boolean(), names: fc.uniqueArray(text, { minLength: 2, maxLength: 4 }) })
  .map(({ schema, name, full, names }): Table => ({ schema, name, full, key: names[0], cols: names.slice(1) }));
const tables = fc.uniqueArray(table, { minLength: 1, maxLength: 3, selector: (t) => qualified(t.schema, t.name) });
// One change: which table, what, on which of a few keys (so runs repeat and change keys), the new values.
const op = fc.record({ t: fc.nat(), kind: fc.constantFrom("insert", "update", "update", "delete"), key: fc.constantFrom("1", "2", "3", "x'y"),
  newKey: fc.option(fc.constantFrom("1", "2", "4"), { nil: undefined, freq: 4 }), values: fc.array(value, { minLength: 4, maxLength: 4 }) });

type Op = { t: number; kind: string; key: string; newKey?: string; values: (string | null)[] };
function changes(ts: Table[], ops: Op[]) {
  const rel = ts.map((t) => ({ tag: "relation", schema: t.schema, name: t.name, replicaIdentity: t.full ? "full" : "default",
    keyColumns: t.full ? [] : [t.key], columns: [t.key, ...t.cols].map((name) => ({ name })) }));
  return ops.map((o) => {
    const t = ts[o.t % ts.length], relation = rel[o.t % ts.length];
    const row = (k: string) => Object.fromEntries([[t.key, k], ...t.cols.map((c, i) => [c, o.values[i]])]);
    if (o.kind === "insert") return { tag: "insert", relation, new: row(o.key) };
    const old = t.full ? row(o.key) : null;
    if (o.kind === "delete") return { tag: "delete", relation, key: t.full ? null : { [t.key]: o.key }, old };
    const newKey = o.newKey ?? o.key;
    return { tag: "update", relation, key: !t.full && newKey !== o.key ? { [t.key]: o.key } : null, old, new: row(newKey) };
  });
}
const metaOf = (ts: Table[]) => (q: string): TableMeta | undefined => {
  const t = ts.find((x) => qualified(x.schema, x.name) === q);
  if (!t) return undefined;
  const all = [t.key, ...t.cols];
  return { types: new Map(all.map((c) => [c, "text"])), alwaysIdentity: new Set(), columns: new Map(all.map((c) => [c, { type: "text", eq: true }])) };
};

const batch = fc.tuple(tables, fc.array(op, { maxLength: 25 })).map(([ts, ops]) => ({ ts, list: changes(ts, ops) as any[] }));

test("every name and value stays inside its quotes: what the SQL reads back is only what was put in", () => {
  fc.assert(fc.property(batch, ({ ts, list }) => {
    const names = new Set(ts.flatMap((t) => [t.schema, t.name, t.key, ...t.cols]));
    const values = new Set(list.flatMap((m) => [...Object.values(m.new ?? {}), ...Object.values(m.key ?? {}), ...Object.values(m.old ?? {})]).map(String));
    for (const s of batchSql(new Client(), list, metaOf(ts))) {
      const { literals, identifiers } = sqlTokens(s.sql);
      for (const x of literals) expect(values).toContain(x);
      for (const x of identifiers) if (x !== "C") expect(names).toContain(x);
    }
  }));
});

test("every change is accounted for; merged statements never name a key twice; tables keep the order of their first change", () => {
  fc.assert(fc.property(batch, ({ ts, list }) => {
    const out = batchSql(new Client(), list, metaOf(ts));
    const tableOf = (m: any) => qualified(m.relation.schema, m.relation.name);
    const tableOrder = [...new Set(list.map(tableOf))];
    const stmtTable = (s: { sql: string; table?: string }) => s.table ?? tableOrder.find((q) => s.sql.startsWith(`INSERT INTO ${q} `))!;
    // grouped by table, in the order each table first appears
    const seen = out.map(stmtTable).filter((q, i, a) => i === 0 || a[i - 1] !== q);
    expect(seen).toEqual(tableOrder.filter((q) => out.some((s) => stmtTable(s) === q)));
    for (const q of tableOrder) {
      const mine = list.filter((m) => tableOf(m) === q);
      const stmts = out.filter((s) => stmtTable(s) === q);
      // inserts: one VALUES row per change
      const inserted = stmts.filter((s) => s.expect === null)
        .reduce((n, s) => n + (sqlTokens(s.sql).unquoted.split(" VALUES ")[1].match(/\(/g) ?? []).length, 0);
      expect(inserted).toBe(mine.filter((m) => m.tag === "insert").length);
      // deletes never collapse: each must find its row
      expect(stmts.filter((s) => s.kind === "delete").reduce((n, s) => n + s.expect!, 0)).toBe(mine.filter((m) => m.tag === "delete").length);
      // updates: at most one statement row per change (consecutive updates of a key collapse to the last), at least one per key touched
      const updated = stmts.filter((s) => s.kind === "update").reduce((n, s) => n + s.expect!, 0);
      expect(updated).toBeLessThanOrEqual(mine.filter((m) => m.tag === "update").length);
      if (mine.some((m) => m.tag === "update")) expect(updated).toBeGreaterThan(0);
      for (const s of stmts) {
        if (s.keys) {
          expect(new Set(s.keys).size).toBe(s.keys.length);
          expect(s.expect).toBe(s.keys.length);
        } else if (s.kind) expect(s.expect).toBe(1);
      }
    }
  }));
});

test("checkStatement accepts a merged statement's keys back exactly once each, in any order, and refuses a missing or repeated one", () => {
  fc.assert(fc.property(batch, fc.nat(), ({ ts, list }, pick) => {
    for (const s of batchSql(new Client(), list, metaOf(ts))) {
      if (!s.kind) { expect(() => checkStatement(s, 0)).not.toThrow(); continue; }
      if (!s.keys) {
        expect(() => checkStatement(s, 1)).not.toThrow();
        expect(() => checkStatement(s, 0)).toThrow(DivergenceError);
        expect(() => checkStatement(s, 2)).toThrow(DivergenceError);
        continue;
      }
      const rows = s.keys.map((k) => ({ k0: k })).reverse();
      expect(() => checkStatement(s, rows.length, rows)).not.toThrow();
      const i = pick % rows.length;
      expect(() => checkStatement(s, rows.length - 1, rows.filter((_, j) => j !== i))).toThrow(DivergenceError);
      expect(() => checkStatement(s, rows.length + 1, [...rows, rows[i]])).toThrow(DivergenceError);
    }
  }));
});
