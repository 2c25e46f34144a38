/** Pure logic of several-database migrations (no servers): member names, the group phase, the URI/flag checks. */
import { groupPhase, memberName, serverEndpoints } from "./databases";

test("member names: <name>_<database> when valid, else a SHA-1 suffix; always a valid, distinct migration name", () => {
  expect(memberName("main", "shop")).toBe("main_shop");
  const odd = ["Shop-DB", "a".repeat(60), "rev", "café", "x y"].map((d) => memberName("main", d));
  for (const n of odd) expect(n).toMatch(/^[a-z0-9_]{1,40}$/);
  for (const n of odd) expect(n.endsWith("_rev")).toBe(false);
  expect(new Set(odd).size).toBe(odd.length);
  expect(memberName("main", "Shop-DB")).toBe(memberName("main", "Shop-DB"));
  expect(memberName("n".repeat(40), "shop").length).toBeLessThanOrEqual(40);
});

test("group phase: the common phase, else the least advanced, NotFound/Failed/VerifyFailed first", () => {
  expect(groupPhase(["ReadyToCutover", "ReadyToCutover"])).toBe("ReadyToCutover");
  expect(groupPhase(["Completed", "ReadyToCutover"])).toBe("ReadyToCutover");
  expect(groupPhase(["Loading", "VerifyFailed", "Completed"])).toBe("VerifyFailed");
  expect(groupPhase(["Completed", "NotFound"])).toBe("NotFound");
  expect(groupPhase([])).toBe("NotFound");
});

test("server URIs: no database or postgres or a named one; anything else, or both flags, is a database_conflict", () => {
  expect(serverEndpoints("postgresql://u@h:1/", "postgresql://u@h:2", { databases: ["shop"] }).target.database).toBe("postgres");
  expect(serverEndpoints("postgresql://u@h/shop", "postgresql://u@h/postgres", { databases: ["shop", "billing"] }).source!.database).toBe("shop");
  expect(() => serverEndpoints("postgresql://u@h/other", "postgresql://u@h/", { databases: ["shop"] })).toThrow(expect.objectContaining({ code: "database_conflict" }));
  expect(() => serverEndpoints("postgresql://u@h/", "postgresql://u@h/shop", { allDatabases: true })).toThrow(/--target names database "shop"/);
  expect(() => serverEndpoints("postgresql://u@h/", "postgresql://u@h/", { databases: ["a"], allDatabases: true })).toThrow(/both given/);
  expect(serverEndpoints(undefined, "postgresql://u@h/", { allDatabases: true }, { sourceOptional: true }).source).toBeUndefined();
});
