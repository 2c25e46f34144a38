/** Pure logic, no servers: The unfreeze SQL. */
import { undoSql } from "./cutover";
import { parseEndpoint } from "../core/endpoint";

test("unfreeze SQL restores exactly the recorded settings, in one read-write transaction", () => {
  const ep = parseEndpoint("postgresql://u@h/Shop", "source");
  expect(undoSql(ep, [{ role: null, previous: null }, { role: "app", previous: null }, { role: "Ops Team", previous: "off" }])).toEqual([
    "BEGIN READ WRITE;",
    `ALTER DATABASE "Shop" RESET default_transaction_read_only;`,
    `ALTER ROLE "app" IN DATABASE "Shop" RESET default_transaction_read_only;`,
    `ALTER ROLE "Ops Team" IN DATABASE "Shop" SET default_transaction_read_only = 'off';`,
    "COMMIT;",
  ]);
  // A database that had its own setting gets it back; nothing recorded (older state) resets the database's.
  expect(undoSql(ep, [{ role: null, previous: "off" }])[1]).toBe(`ALTER DATABASE "Shop" SET default_transaction_read_only = 'off';`);
  expect(undoSql(ep, undefined)).toEqual(["BEGIN READ WRITE;", `ALTER DATABASE "Shop" RESET default_transaction_read_only;`, "COMMIT;"]);
});
