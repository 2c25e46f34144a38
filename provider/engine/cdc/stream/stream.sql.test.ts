/** Pure logic, no servers: The stream applier's statements (batchSql, checkStatement). */

test("stream batches: grouped by table in order, consecutive changes merged, unsafe ones kept apart", () => {
  const { batchSql } = require("./stream") as typeof import("./stream");
  const { Client } = require("pg");
  const c = new Client();
  const rel = (name: string, ri = "default") => ({ tag: "relation", schema: "public", name, replicaIdentity: ri, keyColumns: ["id"], columns: [] }) as any;
  const acc = rel("acc"), log = rel("log"), full = rel("nokey", "full");
  const meta = () => ({ types: new Map([["id", "integer"], ["bal", "integer"], ["note", "text"]]), alwaysIdentity: new Set<string>(),
    columns: new Map([["id", { type: "integer", eq: true }], ["note", { type: "json", eq: false }]]) });
  const upd = (id: number, bal: number, r = acc, key?: object) => ({ tag: "update", relation: r, key: key ?? null, old: null, new: { id: String(id), bal: String(bal) } });
  const ins = (id: number) => ({ tag: "insert", relation: log, new: { id: String(id), note: `n'${id}` } });
  const del = (id: number) => ({ tag: "delete", relation: acc, key: { id: String(id) }, old: null });
  const out = batchSql(c, [upd(1, 10), ins(1), upd(2, 20), ins(2), upd(1, 11), del(3), del(4),
    upd(5, 50, acc, { id: "4" }), { tag: "delete", relation: full, old: { id: "1", note: null }, key: null }] as any, meta);
  expect(out).toEqual([
    // acc: updates of 1 and 2 merged, the second update of 1 replacing the first; deletes merged; a key change alone
    // (merged statements return the keys they touched: each must come back exactly once)
    { sql: `UPDATE "public"."acc" t SET "bal" = v.s0::integer FROM (VALUES ('2', '20'), ('1', '11')) AS v(k0, s0) WHERE t."id" = v.k0::integer ` +
      `RETURNING v.k0 AS k0`, expect: 2, table: `"public"."acc"`, kind: "update", keys: ["2", "1"] },
    { sql: `DELETE FROM "public"."acc" t USING (VALUES ('3'), ('4')) AS v(k0) WHERE t."id" = v.k0::integer RETURNING v.k0 AS k0`, expect: 2,
      table: `"public"."acc"`, kind: "delete", keys: ["3", "4"] },
    { sql: `UPDATE "public"."acc" SET "id" = '5', "bal" = '50' WHERE "id" = '4'`, expect: 1, table: `"public"."acc"`, kind: "update", one: `(id="4")` },
    // log: inserts merged into one multi-row INSERT
    { sql: `INSERT INTO "public"."log" ("id", "note") VALUES ('1', 'n''1'), ('2', 'n''2')`, expect: null },
    // REPLICA IDENTITY FULL: one physical row per change (tableoid too: ctids repeat across partitions), found by the value read
    // through the column's own type — `=` where the type has one (index usable), and its canonical text, byte-wise
    { sql: `DELETE FROM "public"."nokey" WHERE (tableoid, ctid) = (SELECT tableoid, ctid FROM "public"."nokey" WHERE "id" = '1'::integer AND ` +
      `"id"::text COLLATE "C" = ('1'::integer)::text COLLATE "C" AND "note" IS NULL LIMIT 1)`, expect: 1, table: `"public"."nokey"`, kind: "delete",
      one: `(id="1", note=NULL)` },
  ]);
  // A merged statement's RETURNING rows must name each key exactly once; a single change must touch exactly one row.
  const { checkStatement } = require("./stream") as typeof import("./stream");
  expect(() => checkStatement(out[0], 2, [{ k0: "2" }, { k0: "1" }])).not.toThrow();
  expect(() => checkStatement(out[0], 1, [{ k0: "2" }])).toThrow(/divergence on "public"."acc": the source's UPDATE of the row with key 1 found no such row/);
  expect(() => checkStatement(out[1], 3, [{ k0: "3" }, { k0: "4" }, { k0: "4" }])).toThrow(/DELETE of the row with key 4 matched 2 rows \(expected 1\)/);
  expect(() => checkStatement(out[4], 0)).toThrow(/DELETE of the row \(id="1", note=NULL\) found no such row/);
  expect(() => checkStatement(out[3], 2)).not.toThrow(); // INSERT: nothing to check
});

test("stream batches: a table with a trigger or rule firing under the replica role keeps the source's order across tables", () => {
  const { batchSql } = require("./stream") as typeof import("./stream");
  const { Client } = require("pg");
  const c = new Client();
  const rel = (name: string) => ({ tag: "relation", schema: "public", name, replicaIdentity: "default", keyColumns: ["id"], columns: [] }) as any;
  const a = rel("a"), b = rel("b");
  const meta = (observed: string) => (t: string) => ({ types: new Map([["id", "integer"], ["v", "integer"]]), alwaysIdentity: new Set<string>(),
    observesOrder: t === observed });
  const upd = (r: any, id: number) => ({ tag: "update", relation: r, key: null, old: null, new: { id: String(id), v: "1" } });
  const changes = [upd(a, 1), upd(b, 1), upd(b, 2), upd(a, 2), upd(a, 3), upd(b, 3)] as any;
  const tablesOf = (out: { sql: string }[]) => out.map((s) => s.sql.match(/"public"\."(\w)"/)![1]);
  // Nothing observes the order: one merged UPDATE per table.
  expect(tablesOf(batchSql(c, changes, meta("none")))).toEqual(["a", "b"]);
  // b has an ALWAYS trigger: runs of consecutive changes of one table, in the source's order (a's too, since b sees them).
  const kept = batchSql(c, changes, meta('"public"."b"'));
  expect(tablesOf(kept)).toEqual(["a", "b", "a", "b"]);
  expect(kept.map((s) => s.expect)).toEqual([1, 2, 2, 1]);
});

test("stream batches: rows carrying different columns (an unchanged TOAST value left out) are merged only with rows carrying the same ones", () => {
  // The merge class is derived once per list of carried columns (batchSql caches it): alternating lists must still split
  // runs, never SET a column a row did not carry, and come back to the first list's class.
  const { batchSql } = require("./stream") as typeof import("./stream");
  const { Client } = require("pg");
  const c = new Client();
  const acc = { tag: "relation", schema: "public", name: "acc", replicaIdentity: "default", keyColumns: ["id"], columns: [] } as any;
  const log = { tag: "relation", schema: "public", name: "log", replicaIdentity: "default", keyColumns: ["id"], columns: [] } as any;
  const meta = () => ({ types: new Map([["id", "integer"], ["bal", "integer"], ["doc", "text"]]), alwaysIdentity: new Set<string>() });
  const upd = (id: number, doc?: string) => ({ tag: "update", relation: acc, key: null, old: null, new: { id: String(id), bal: "1", doc } });
  const ins = (id: number, doc?: string) => ({ tag: "insert", relation: log, new: { id: String(id), bal: "1", doc } });
  const out = batchSql(c, [upd(1, "a"), upd(2, "b"), upd(3), upd(4), upd(5, "c"), upd(6, "d"), ins(1, "x"), ins(2), ins(3, "y")] as any, meta);
  expect(out.map((s) => s.sql)).toEqual([
    `UPDATE "public"."acc" t SET "bal" = v.s0::integer, "doc" = v.s1::text FROM (VALUES ('1', '1', 'a'), ('2', '1', 'b')) AS v(k0, s0, s1) ` +
      `WHERE t."id" = v.k0::integer RETURNING v.k0 AS k0`,
    `UPDATE "public"."acc" t SET "bal" = v.s0::integer FROM (VALUES ('3', '1'), ('4', '1')) AS v(k0, s0) WHERE t."id" = v.k0::integer RETURNING v.k0 AS k0`,
    `UPDATE "public"."acc" t SET "bal" = v.s0::integer, "doc" = v.s1::text FROM (VALUES ('5', '1', 'c'), ('6', '1', 'd')) AS v(k0, s0, s1) ` +
      `WHERE t."id" = v.k0::integer RETURNING v.k0 AS k0`,
    `INSERT INTO "public"."log" ("id", "bal", "doc") VALUES ('1', '1', 'x')`,
    `INSERT INTO "public"."log" ("id", "bal") VALUES ('2', '1')`,
    `INSERT INTO "public"."log" ("id", "bal", "doc") VALUES ('3', '1', 'y')`,
  ]);
});
