/**
 * The decoders on committed output of a real server (test/fixtures/decoders, captured by
 * scripts/capture-decoder-fixtures.js from PostgreSQL 15 with wal2json 2.5): no server and no wal2json
 * needed. One workload, decoded by both plugins' decoders into pgferry's change type: every message kind,
 * unchanged TOAST, NaN/±Infinity, arrays, jsonb, bytea, enums, generated columns, partitions published
 * through the root, REPLICA IDENTITY FULL, key changes, odd identifiers (a column called __proto__), a
 * replication origin, TRUNCATE … RESTART IDENTITY CASCADE. Then the fuzz: each decoder raises only a
 * PgferryError on arbitrary and mutated input.
 */
import * as fs from "fs";
import * as path from "path";
import fc from "fast-check";
import type { Change, ChangeCommit, ChangeDelete, ChangeInsert, ChangeRelation, ChangeTruncate, ChangeUpdate, RowChange } from "../provider/engine/cdc/decoders/change";
import { PgoutputParser } from "../provider/engine/cdc/decoders/pgoutput";
import { Wal2jsonConverter, Wal2jsonTable } from "../provider/engine/cdc/decoders/wal2json";
import { PgferryError } from "../provider/engine/core/errors";
import { lsnToBigInt } from "../provider/engine/core/lsn";

const FIXTURES = path.join(__dirname, "fixtures/decoders");
interface Fixture { messages: { lsn: string; xid: string; data: string }[]; tables?: (Omit<Wal2jsonTable, "generated"> & { generated: string[] })[] }
const load = (name: string): Fixture => JSON.parse(fs.readFileSync(path.join(FIXTURES, name), "utf8"));
const pgoutputFixture = load("pgoutput.json");
const wal2jsonFixture = load("wal2json.json");

const wal2jsonTables = () => new Map(wal2jsonFixture.tables!.map((t) => [`${t.schema}.${t.name}`, { ...t, generated: new Set(t.generated) }]));

/** Each fixture row decoded, with the slot's LSN of the row. */
function decodePgoutput(): { lsn: string; changes: Change[] }[] {
  const p = new PgoutputParser();
  return pgoutputFixture.messages.map((r) => ({ lsn: r.lsn, changes: p.parse(Buffer.from(r.data, "hex")) }));
}
function decodeWal2json(): { lsn: string; changes: Change[] }[] {
  const conv = new Wal2jsonConverter(wal2jsonTables(), false);
  return wal2jsonFixture.messages.map((r) => ({ lsn: r.lsn, changes: conv.decode(Buffer.from(r.data, "utf8")) }));
}

const label = (m: Change) => m.tag === "relation" ? `relation ${m.schema}.${m.name}` : m.tag === "truncate"
  ? `truncate ${m.relations.map((r) => `${r.schema}.${r.name}`).join(",")}${m.cascade ? " cascade" : ""}${m.restartIdentity ? " restart" : ""}`
  : "relation" in m ? `${m.tag} ${m.relation.schema}.${m.relation.name}` : m.tag;
const rowChanges = (all: { changes: Change[] }[]) => all.flatMap((x) => x.changes).filter((m): m is RowChange => "relation" in m);

test("pgoutput: a real server's messages decode into pgferry changes, every kind, values exact", () => {
  const decoded = decodePgoutput();
  const all = decoded.flatMap((x) => x.changes);
  expect(all.map(label)).toEqual([
    "begin", "relation public.t", "insert public.t", "insert public.t", "commit",
    "begin", "update public.t", "commit",                                  // unchanged TOAST
    "begin", "update public.t", "commit",                                  // key change
    "begin", "delete public.t", "commit",
    "begin", "relation public.full1", "insert public.full1", "insert public.full1", "insert public.full1", "update public.full1",
    "delete public.full1", "delete public.full1", "commit",
    // a partition move arrives as DELETE + INSERT through the root (leaf relation messages come too, unused)
    "begin", "relation public.m", "relation public.m1", "insert public.m", "delete public.m", "relation public.m", "relation public.m2",
    "insert public.m", "commit",
    "begin", "relation Sch. x.Tab, ü*", "insert Sch. x.Tab, ü*", "insert Sch. x.Tab, ü*", "update Sch. x.Tab, ü*", "commit",
    "begin", "relation public.parent", "insert public.parent", "insert public.parent", "relation public.child", "insert public.child", "commit",
    "begin", "relation public.empty_cols", "insert public.empty_cols", "commit",
    "begin", "relation public.parent", "relation public.child", "truncate public.parent,public.child cascade restart", "commit",
    // TRUNCATE m1 (a leaf, published through its root) is not sent by pgoutput at all
    "begin", "relation public.t", "relation public.full1", "truncate public.t,public.full1", "commit",
  ]);
  // The type (enum) and origin messages were there, and decode to nothing.
  const kinds = pgoutputFixture.messages.map((r) => String.fromCharCode(parseInt(r.data.slice(0, 2), 16)));
  expect(kinds).toContain("Y");
  expect(kinds).toContain("O");
  // A commit's end is the position the slot reports for it: what the applier stores and acknowledges.
  for (const x of decoded) {
    for (const m of x.changes) if (m.tag === "commit") expect(lsnToBigInt(m.commitEndLsn!)).toBe(lsnToBigInt(x.lsn));
  }
  const begin = all[0] as Extract<Change, { tag: "begin" }>;
  expect(lsnToBigInt(begin.commitLsn!)).toBe(lsnToBigInt((all[4] as ChangeCommit).commitLsn!));
  expect(begin.commitTime).toBeGreaterThan(1_600_000_000_000_000n); // µs since the Unix epoch

  const rel = all[1] as ChangeRelation;
  // The generated column g is not sent (the target computes it).
  expect(rel.columns.map((c) => c.name)).toEqual(["id", "n", "f", "r", "b", "j", "jn", "arr", "tarr", "ts", "d", "raw", "m", "iv", "big"]);
  expect(rel).toMatchObject({ replicaIdentity: "default", keyColumns: ["id"] });
  const [ins1, ins2] = [all[2], all[3]] as ChangeInsert[];
  expect({ ...ins1.new, big: ins1.new.big?.length }).toEqual({ id: "1", n: "12345678901234567890.120", f: "NaN", r: "-Infinity", b: "t",
    j: '{"x": 12345678901234567890, "y": 2.50}', jn: "null", arr: "{1,NULL}", tarr: '{a,"b c",NULL,"q\\"uote"}', ts: "2024-01-01 00:00:00.123456+00",
    d: "infinity", raw: "\\x00ff", m: "happy", iv: "1 day 02:03:04.5", big: 5000 });
  expect(ins2.new).toEqual({ id: "2", n: "NaN", f: "Infinity", r: "1.5", b: "f", j: null, jn: null, arr: "{}", tarr: "{}", ts: "-infinity",
    d: "2024-02-29", raw: "\\x", m: "sad", iv: "-1 mons", big: "small" });
  // Unchanged TOAST: undefined (leave as is), never null; no key tuple when the key did not change.
  const toast = all[6] as ChangeUpdate;
  expect(toast).toMatchObject({ key: null, old: null });
  expect("big" in toast.new && toast.new.big === undefined).toBe(true);
  expect(toast.new.n).toBe("1");
  const keyChange = all[9] as ChangeUpdate;
  expect(keyChange.key).toEqual({ id: "1" });
  expect(keyChange.new.id).toBe("10");
  expect(keyChange.new.big).toBeUndefined();
  expect((all[12] as ChangeDelete).key).toEqual({ id: "2" });
  // REPLICA IDENTITY FULL: every column is a key column; UPDATE and DELETE carry the whole old row.
  const full = all.filter((m) => "relation" in m && m.relation.name === "full1") as RowChange[];
  expect(full[0].relation).toMatchObject({ replicaIdentity: "full", keyColumns: ["k", "v", "x"] });
  expect(full[3]).toMatchObject({ tag: "update", key: null, old: { k: "2", v: null, x: "1.5" }, new: { k: "2", v: "b", x: "1.5" } });
  expect(full[4]).toMatchObject({ tag: "delete", key: null, old: { k: "1", v: "a", x: "0" } });
  // Partitions: rows named by the root, the move as DELETE of the old row and INSERT of the new.
  const moved = rowChanges(decoded).filter((m) => m.relation.name === "m");
  expect(moved.map((m) => [m.tag, m.tag === "delete" ? m.key : m.new])).toEqual([
    ["insert", { id: "1", at: "2024-05-05" }], ["delete", { id: "1", at: "2024-05-05" }], ["insert", { id: "1", at: "2025-05-05" }]]);
  // A column called __proto__ is a column like any other.
  const odd = rowChanges(decoded).filter((m) => m.relation.name === "Tab, ü*");
  expect(odd.map((m) => m.tag !== "delete" && [Object.keys(m.new), m.new.__proto__])).toEqual([
    [["K", "__proto__"], "proto"], [["K", "__proto__"], null], [["K", "__proto__"], "x"]]);
  // A table without columns still gains a row.
  expect(rowChanges(decoded).find((m) => m.relation.name === "empty_cols")).toMatchObject({ tag: "insert", new: {} });
  const cascade = all.find((m) => m.tag === "truncate") as ChangeTruncate;
  expect(cascade).toMatchObject({ cascade: true, restartIdentity: true });
});

test("wal2json: the same workload decodes into the same row changes, apart from what wal2json does not say", () => {
  const decoded = decodeWal2json();
  const all = decoded.flatMap((x) => x.changes);
  // Commits: the row's LSN is the end of the commit record (commitEndLsn).
  for (const x of decoded) for (const m of x.changes) if (m.tag === "commit") expect(m.commitEndLsn).toBe(x.lsn);
  // No relation messages in wal2json: one is made from the source catalog before a table's first change (per leaf,
  // named by the root for partitions); the generated column is dropped from rows.
  expect(all.filter((m) => m.tag === "relation").map(label)).toEqual([
    "relation public.t", "relation public.full1", "relation public.m", "relation public.m", "relation Sch. x.Tab, ü*", "relation public.parent",
    "relation public.child", "relation public.empty_cols"]);
  expect((all.find((m) => m.tag === "relation") as ChangeRelation).columns.map((c) => c.name)).not.toContain("g");
  // Truncate: one message per table, without CASCADE / RESTART IDENTITY flags, the leaf m1 included (pgoutput leaves it out).
  expect(all.filter((m) => m.tag === "truncate").map(label)).toEqual([
    "truncate public.parent", "truncate public.child", "truncate public.m1", "truncate public.t", "truncate public.full1"]);

  const w = rowChanges(decoded);
  const p = rowChanges(decodePgoutput());
  expect(w.map(label)).toEqual(p.map(label));
  // wal2json 2.5 (no numeric-data-types-as-string) writes float/numeric NaN and ±Infinity as null; the stream
  // resolves them from the source by key. Everything else equals pgoutput's text exactly.
  const FLOAT_SPECIAL = /^(-?Infinity|NaN)$/;
  w.forEach((wm, i) => {
    const pm = p[i];
    if (pm.tag !== "delete") {
      const pNew = (pm as ChangeInsert | ChangeUpdate).new, wNew = (wm as ChangeInsert | ChangeUpdate).new;
      const expected = Object.fromEntries(Object.entries(pNew).filter(([, v]) => v !== undefined) // unchanged TOAST: absent in wal2json
        .map(([k, v]) => [k, typeof v === "string" && FLOAT_SPECIAL.test(v) && ["f", "r", "n"].includes(k) ? null : v]));
      expect({ ...wNew }).toEqual(expected);
    } else {
      expect({ ...(wm as ChangeDelete).key ?? (wm as ChangeDelete).old }).toEqual({ ...pm.key ?? pm.old });
    }
  });
});

/** Valid messages with bytes flipped, cut or spliced: closer to a real corruption than random bytes. */
function mutated(valid: Buffer[]): fc.Arbitrary<Buffer> {
  return fc.tuple(fc.constantFrom(...valid), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }), fc.option(fc.nat()))
    .map(([b, flips, cut]) => {
      const out = Buffer.from(b);
      for (const [at, v] of flips) if (out.length) out[at % out.length] = v;
      return cut === null ? out : out.subarray(0, cut % (out.length + 1));
    });
}

/** Runs `decode` on each input: it may return anything, or throw a PgferryError; anything else fails the property. */
function onlyPgferryErrors(decode: (b: Buffer) => unknown, input: fc.Arbitrary<Buffer>) {
  fc.assert(fc.property(input, (b) => {
    try {
      decode(b);
    } catch (e) {
      if (!(e instanceof PgferryError)) throw new Error(`not a PgferryError on ${b.toString("hex")}: ${(e as Error)?.stack ?? e}`);
    }
  }), { numRuns: 3000, seed: 1512 });
}

test("fuzz: the pgoutput decoder raises only PgferryError on any input", () => {
  const valid = pgoutputFixture.messages.map((r) => Buffer.from(r.data, "hex"));
  // A parser that has seen the fixture's relation messages, so mutated changes reach the tuple decoding.
  const primed = () => { const p = new PgoutputParser(); for (const b of valid) p.parse(b); return p; };
  const p = primed();
  onlyPgferryErrors((b) => p.parse(b), fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)));
  onlyPgferryErrors((b) => p.parse(b), fc.tuple(fc.constantFrom(..."BCOYMRIUDTSEcAbPKrp".split("")), fc.uint8Array({ maxLength: 80 }))
    .map(([tag, rest]) => Buffer.concat([Buffer.from(tag), Buffer.from(rest)])));
  onlyPgferryErrors((b) => p.parse(b), mutated(valid));
  onlyPgferryErrors((b) => new PgoutputParser().parse(b), mutated(valid));
});

test("fuzz: the wal2json decoder raises only PgferryError on any input", () => {
  const valid = wal2jsonFixture.messages.map((r) => Buffer.from(r.data, "utf8"));
  const conv = new Wal2jsonConverter(wal2jsonTables(), true);
  onlyPgferryErrors((b) => conv.decode(b), fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)));
  onlyPgferryErrors((b) => conv.decode(b), fc.json().map((s) => Buffer.from(s)));
  // Objects shaped like wal2json's, with fields of any JSON type.
  const anyJson = fc.jsonValue();
  const col = fc.record({ name: fc.oneof(fc.constantFrom("id", "n", "f", "big", "__proto__", "k", "v"), anyJson), typeoid: fc.oneof(fc.constantFrom(17, 700, 1700, 23), anyJson), value: anyJson }, { requiredKeys: [] });
  onlyPgferryErrors((b) => conv.decode(b), fc.record({
    action: fc.oneof(fc.constantFrom("B", "C", "I", "U", "D", "T", "M"), anyJson), xid: anyJson, timestamp: fc.oneof(fc.string(), anyJson),
    lsn: fc.oneof(fc.constantFrom("0/1566A90", "16/B374D848"), anyJson), nextlsn: fc.oneof(fc.constantFrom("0/1566A90"), anyJson),
    schema: fc.oneof(fc.constantFrom("public", "Sch. x"), anyJson), table: fc.oneof(fc.constantFrom("t", "full1", "m1", "Tab, ü*", "nope"), anyJson),
    columns: fc.oneof(fc.array(col, { maxLength: 5 }), anyJson), identity: fc.oneof(fc.array(col, { maxLength: 5 }), anyJson),
  }, { requiredKeys: [] }).map((o) => Buffer.from(JSON.stringify(o))));
  onlyPgferryErrors((b) => conv.decode(b), mutated(valid));
});
