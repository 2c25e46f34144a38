/** Pure logic, no servers: wal2json's options (add-tables escaping). */
import { addTablesEscape, wal2jsonOptions } from "./wal2json";

test("wal2json options: add-tables escapes what its parser treats specially, numbers quoted only when asked", () => {
  expect(addTablesEscape("Tab, ü*")).toBe("Tab\\,\\ ü\\*");
  expect(addTablesEscape("a.b'c\\d")).toBe("a\\.b\\'c\\\\d");
  const opts = new Map(wal2jsonOptions([{ schema: "Sch. x", name: "t" }, { schema: "public", name: "m1" }], false));
  expect(opts.get("add-tables")).toBe("Sch\\.\\ x.t,public.m1");
  expect(opts.get("format-version")).toBe("2");
  expect(opts.get("include-lsn")).toBe("1");
  expect(opts.has("numeric-data-types-as-string")).toBe(false);
  expect(new Map(wal2jsonOptions([], true)).get("numeric-data-types-as-string")).toBe("1");
});
