/** Pure logic, no servers: The unfreeze SQL. */
import { CUTOVER_STEPS, RELEASE_STEPS, undoSql } from "./cutover";
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

test("the cutover's timings are where the downtime went: no step after Completed (nor a re-run's release) is timed", () => {
  const complete = CUTOVER_STEPS.findIndex((s) => s.name === "complete");
  expect(complete).toBeGreaterThan(0);
  expect(CUTOVER_STEPS.slice(complete + 1).map((s) => s.name)).toEqual(RELEASE_STEPS.map((s) => s.name));
  expect([...CUTOVER_STEPS.slice(complete + 1), ...RELEASE_STEPS].filter((s) => s.timing).map((s) => s.name)).toEqual([]);
  // Inside the downtime (a rollback window or event triggers on the source keep the drop there), it is timed as before.
  expect(CUTOVER_STEPS.slice(0, complete).filter((s) => s.name === "drop-slot").map((s) => s.timing)).toEqual(["endReplicationMs"]);
});
