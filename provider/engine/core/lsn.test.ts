/** Pure logic, no servers: LSN arithmetic. */
import { bigIntToLsn, lsnDiff, lsnToBigInt } from "./lsn";

test("LSN arithmetic", () => {
  expect(lsnToBigInt("16/B374D848")).toBe((0x16n << 32n) | 0xb374d848n);
  expect(bigIntToLsn(lsnToBigInt("0/12B8DE08"))).toBe("0/12B8DE08");
  expect(lsnDiff("1/0", "0/FFFFFFFF")).toBe(1);
  expect(lsnDiff("0/10", "0/20")).toBe(0);
  expect(() => lsnToBigInt("nope")).toThrow();
});
