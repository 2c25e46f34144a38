/** Pure logic, no servers: which of the gate's pre-check verdicts still stand at the fence. */
import { preCheckFrom, stillValid } from "./precheck";
import type { VerifyReport } from "./verify";

const fp = (entries: [string, string][]) => new Map(entries);

test("a verdict stands only for a table that matched and kept its fingerprint on both sides through all three readings", () => {
  const report = {
    tables: [
      { table: "public.quiet", sourceRows: 5, targetRows: 5, ok: true },
      { table: "public.moved", sourceRows: 5, targetRows: 5, ok: true },
      { table: "public.differs", sourceRows: 5, targetRows: 4, ok: false, problem: "…" },
      { table: '"Odd"."T"', sourceRows: 1, targetRows: 1, sourceHash: "h", targetHash: "h", ok: true },
      { table: "public.nostats", sourceRows: 0, targetRows: 0, ok: true },
      { table: "public.later", sourceRows: 2, targetRows: 2, ok: true },
    ],
  } as unknown as VerifyReport;
  const names = new Map([["public.quiet", "public.quiet"], ["public.moved", "public.moved"], ["public.differs", "public.differs"],
    ['"Odd"."T"', "Odd.T"], ["public.nostats", "public.nostats"], ["public.later", "public.later"]]);
  const before = { source: fp([["public.quiet", "1:0"], ["public.moved", "2:7"], ["public.differs", "3:0"], ["Odd.T", "4:1"], ["public.later", "5:0"]]),
    target: fp([["public.quiet", "9:0"], ["public.moved", "8:7"], ["public.differs", "7:0"], ["Odd.T", "6:1"], ["public.later", "5:0"]]) };
  // During the comparison public.moved changed on the source: its verdict is not kept.
  const after = { source: new Map([...before.source, ["public.moved", "2:8"]]), target: before.target };
  const pre = preCheckFrom(report, names, before, after);
  expect([...pre.matched.keys()].sort()).toEqual(["Odd.T", "public.later", "public.quiet"]);
  expect(pre.matched.get("Odd.T")).toEqual({ sourceRows: 1, targetRows: 1, sourceHash: "h", targetHash: "h" });
  expect(pre.compared).toBe(6);
  // At the fence public.later moved on the target only (a write there, or the applier): compared again.
  const now = { source: after.source, target: new Map([...after.target, ["public.later", "5:1"]]) };
  expect([...stillValid(pre, now).keys()].sort()).toEqual(["Odd.T", "public.quiet"]);
  // A table gone from the statistics (no fingerprint now) is compared again; no pre-check: nothing stands.
  expect([...stillValid(pre, { source: fp([["public.quiet", "1:0"]]), target: now.target }).keys()]).toEqual(["public.quiet"]);
  expect(stillValid(undefined, now).size).toBe(0);
});
