/** Pure logic, no servers: Migration options: defaults, validation, object names. */
import { migrationOptions, objectNames } from "./options";

test("migration options: defaults, validation, deterministic object names", () => {
  expect(migrationOptions({})).toMatchObject({ name: "main", mode: "subscription", jobs: 4, replicaIdentityFull: false,
    selection: { schemas: [], include: [], exclude: [] } });
  expect(objectNames("dvd_1")).toEqual({ slot: "pgferry_dvd_1", publication: "pgferry_dvd_1", subscription: "pgferry_dvd_1" });
  expect(() => migrationOptions({ mode: "magic" as never })).toThrow(/--mode/);
  expect(migrationOptions({}).stallTimeoutSec).toBe(30);
  expect(() => migrationOptions({ stallTimeoutSec: 0 })).toThrow(/--stall-timeout must be a whole number of seconds/);
  expect(() => migrationOptions({ name: "Shop" })).toThrow(/a-z, 0-9 and _/);
  expect(() => migrationOptions({ name: "shop_rev" })).toThrow(/reserved for rollback windows/);
  expect(migrationOptions({ name: "shop_revision" }).name).toBe("shop_revision");
  expect(migrationOptions({}).plugin).toBe("pgoutput");
  expect(migrationOptions({ mode: "stream", plugin: "wal2json" })).toMatchObject({ mode: "stream", plugin: "wal2json" });
  expect(() => migrationOptions({ plugin: "wal2json" })).toThrow(/--plugin wal2json needs --mode stream/);
  expect(() => migrationOptions({ mode: "stream", plugin: "test_decoding" as never })).toThrow(/--plugin must be one of pgoutput, wal2json/);
  expect(migrationOptions({}).unlogged).toBe("copy");
  expect(migrationOptions({ unlogged: "skip" }).unlogged).toBe("skip");
  expect(() => migrationOptions({ unlogged: "ignore" as never })).toThrow(/--unlogged must be one of copy, skip/);
});
