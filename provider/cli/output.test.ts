/** Pure logic, no servers: Downtime breakdown as printed. */
import { formatTimings } from "./output";

test("downtime breakdown reads in step order and skips steps that did not run", () => {
  expect(formatTimings({ freezeMs: 1234, drainMs: 50, verifyMs: 800, heldBackMs: 10 }))
    .toBe("freeze 1.23 s, drain 0.05 s, verify 0.80 s, held-back objects 0.01 s");
});
