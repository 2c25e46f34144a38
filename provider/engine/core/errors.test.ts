/** Pure logic, no servers: Findings as printed. */
import { formatFindings } from "./errors";

test("findings print errors first, each with its fix", () => {
  const text = formatFindings([
    { code: "w", severity: "warning", server: "source", message: "unlogged", fix: "SET LOGGED" },
    { code: "e", severity: "error", server: "source", message: "wal_level", fix: "ALTER SYSTEM" },
  ]);
  expect(text.split("\n")).toEqual(["  ✗ [source] wal_level", "      fix: ALTER SYSTEM", "  ! [source] unlogged", "      fix: SET LOGGED"]);
});
