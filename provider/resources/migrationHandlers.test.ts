/** Pure logic, no servers: The Migration resource's inputs and diffs; large objects on/off. */
import { formatTimings } from "../cli/output";
import { migrationOptions } from "../engine/core/options";

test("Migration resource: rollbackWindow true → false is an in-place update; reopening or adding reverse replication after cutover is refused", async () => {
  const { diff, pickInputs } = await import("./migrationHandlers");
  const base = { source: "postgresql://u@old/db", target: "postgresql://u@new/db", name: "m", cutover: true, freezeWrites: true };
  const open = { ...base, reverseReplication: true };
  // Defaults: no reverse replication; the window, once there, stays open.
  expect(pickInputs(base)).toMatchObject({ reverseReplication: false, rollbackWindow: true });
  // Closing the window (pulumi config set pgferry:rollbackWindow false): an update, never a replace (the migration is the same).
  expect(await diff("id", open, { ...open, rollbackWindow: false })).toEqual({ changes: true, replaces: [], deleteBeforeReplace: true });
  expect(await diff("id", open, { ...open, rollbackWindow: true })).toEqual({ changes: false, replaces: [], deleteBeforeReplace: true });
  // Before cutover, reverse replication may be switched on or off freely.
  expect((await diff("id", { ...base, cutover: false }, { ...open, cutover: false })).changes).toBe(true);
  // After cutover: a window cannot be added (the application may have written already) nor reopened once closed.
  await expect(diff("id", base, open)).rejects.toThrow(/cut over without reverseReplication/);
  await expect(diff("id", { ...open, rollbackWindow: false }, open)).rejects.toThrow(/was closed .* cannot be reopened/);
});

test("large objects: carried by default; --no-large-objects and the Pulumi input largeObjects: false opt out, as an update", async () => {
  expect(migrationOptions({}).largeObjects).toBe(true);
  expect(migrationOptions({ largeObjects: false }).largeObjects).toBe(false);
  const { diff, pickInputs } = await import("./migrationHandlers");
  const base = { source: "postgresql://u@old/db", target: "postgresql://u@new/db", name: "m" };
  expect(pickInputs(base)).toMatchObject({ largeObjects: true });
  expect(pickInputs({ ...base, largeObjects: false })).toMatchObject({ largeObjects: false });
  expect(await diff("id", base, { ...base, largeObjects: false })).toMatchObject({ changes: true, replaces: [] });
  const { buildProgram } = await import("../cli/main");
  const start = buildProgram().commands.find((c) => c.name() === "start")!;
  expect(start.options.map((o) => o.long)).toContain("--no-large-objects");
  expect(formatTimings({ freezeMs: 10, largeObjectsMs: 1234, verifyMs: 5 })).toMatch(/large objects 1\.23 s/);
});

test("Migration resource: unlogged defaults to copy, skip flows through, and changing it is an update (it only matters at cutover)", async () => {
  const { diff, pickInputs } = await import("./migrationHandlers");
  const base = { source: "postgresql://u@old/db", target: "postgresql://u@new/db", name: "m" };
  expect(pickInputs(base)).toMatchObject({ unlogged: "copy" });
  expect(pickInputs({ ...base, unlogged: "skip" })).toMatchObject({ unlogged: "skip" });
  expect(await diff("id", base, { ...base, unlogged: "skip" })).toMatchObject({ changes: true, replaces: [] });
});

test("Migration outputs show the mode the engine runs: stream when distribution names tables and no mode is given; an explicit mode is kept", async () => {
  const { diff, pickInputs, toOutputs } = await import("./migrationHandlers");
  const base = { source: "postgresql://u@old/db", target: "postgresql://u@new/db", name: "m" };
  const citus = { ...base, distribution: { distribute: { "public.orders": "customer_id" }, reference: ["public.countries"], colocate: {} } };
  // The engine's choice for the same inputs (migrationOptions), which the outputs must repeat.
  expect(migrationOptions({ distribution: { distribute: { "public.orders": "customer_id" }, reference: ["public.countries"], colocate: {} } }).mode).toBe("stream");
  expect(pickInputs(citus)).toMatchObject({ mode: "stream" });
  expect(pickInputs(base)).toMatchObject({ mode: "subscription" });
  expect(pickInputs({ ...citus, mode: "subscription" })).toMatchObject({ mode: "subscription" });
  const status = { name: "m", phase: "Loading" as const, tables: [], rowsCopied: 0, bytesCopied: 0, timestamps: { createdAt: new Date(0) } };
  expect(toOutputs(pickInputs(citus), status).mode).toBe("stream");
  // The recorded mode wins (what the migration really runs, e.g. adopted from an earlier create).
  expect(toOutputs(pickInputs(base), { ...status, mode: "stream" }).mode).toBe("stream");
  // Outputs stored with the chosen mode and the same inputs again: no change, and above all no replace.
  expect(await diff("id", toOutputs(pickInputs(citus), status) as unknown as Record<string, unknown>, citus)).toMatchObject({ changes: false, replaces: [] });
});
