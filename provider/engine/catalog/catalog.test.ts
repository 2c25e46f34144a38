/** Pure logic, no servers: Qualified names. */
import { splitQualified } from "./catalog";

test("qualified names split on the dot outside quotes", () => {
  expect(splitQualified("public.film")).toEqual({ schema: "public", name: "film" });
  expect(splitQualified('"Edge Aux"."Mixed.Case"')).toEqual({ schema: "Edge Aux", name: "Mixed.Case" });
  expect(splitQualified("film")).toEqual({ name: "film" });
  expect(splitQualified('"a""b".c')).toEqual({ schema: 'a"b', name: "c" });
});
