/** unionAlls: many SELECTs in few round trips, none lost, none repeated, order kept. */
import fc from "fast-check";
import { unionAlls } from "./verify";

test("unionAlls splits branches into statements of at most 50, and joining them back gives every branch once, in order", () => {
  fc.assert(fc.property(fc.array(fc.string({ unit: fc.fullUnicode() }).filter((s) => !s.includes("\nUNION ALL\n")), { maxLength: 240 }), (branches) => {
    const statements = unionAlls(branches);
    expect(statements.length).toBe(Math.ceil(branches.length / 50));
    const back = statements.map((s) => s.split("\nUNION ALL\n"));
    for (const part of back) expect(part.length).toBeLessThanOrEqual(50);
    expect(back.flat()).toEqual(branches);
  }));
});
