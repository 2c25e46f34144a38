/**
 * pgoutput text values are the source's bytes exactly: the parser decodes them in place (Buffer#toString),
 * where TextDecoder, used before, silently dropped a leading U+FEFF (byte order mark) from every value.
 * Messages are built here as the protocol defines them (Relation, then Insert).
 */
import { PgoutputParser } from "./pgoutput";
import type { ChangeInsert } from "./change";

const u8 = (n: number) => Buffer.from([n]);
const u16 = (n: number) => { const b = Buffer.alloc(2); b.writeUInt16BE(n); return b; };
const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };
const cstr = (s: string) => Buffer.concat([Buffer.from(s, "utf8"), u8(0)]);

function relation(oid: number, columns: string[]): Buffer {
  return Buffer.concat([Buffer.from("R"), u32(oid), cstr("public"), cstr("t"), Buffer.from("d"), u16(columns.length),
    ...columns.flatMap((c, n) => [u8(n === 0 ? 1 : 0), cstr(c), u32(25 /* text */), u32(0xffffffff)])]);
}

function insert(oid: number, values: (string | null)[]): Buffer {
  return Buffer.concat([Buffer.from("I"), u32(oid), Buffer.from("N"), u16(values.length),
    ...values.flatMap((v) => v === null ? [Buffer.from("n")] : [Buffer.from("t"), u32(Buffer.byteLength(v)), Buffer.from(v, "utf8")])]);
}

test("pgoutput: text values keep every character, a leading byte order mark included", () => {
  const p = new PgoutputParser();
  p.parse(relation(16384, ["id", "v", "w"]));
  const values = ["\uFEFF1", "\uFEFFstarts with a BOM", "ü, 'quoted', \\ and \u{1F600}"];
  const [m] = p.parse(insert(16384, values)) as ChangeInsert[];
  expect([m.new.id, m.new.v, m.new.w]).toEqual(values);
});

test("pgoutput: invalid UTF-8 bytes decode to U+FFFD, never an error", () => {
  const p = new PgoutputParser();
  p.parse(relation(7, ["id"]));
  const raw = Buffer.concat([Buffer.from("I"), u32(7), Buffer.from("N"), u16(1), Buffer.from("t"), u32(3), Buffer.from([0x61, 0xff, 0x62])]);
  const [m] = p.parse(raw) as ChangeInsert[];
  expect(m.new.id).toBe("a\uFFFDb");
});
