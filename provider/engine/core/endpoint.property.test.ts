/** Properties of the SQL escaper (pure; that the server reads the same value back is test/verify.test.ts's and the e2e tests' part). */
import fc from "fast-check";
import { escapeIdentifier } from "pg";
import { sqlTokens } from "../../../test/support/sqlTokens";
import { qualified, quoteIdent, quoteLiteral } from "./endpoint";

// Any text, quotes, backslashes, newlines and astral characters included (NUL cannot reach a server).
const text = fc.string({ unit: fc.oneof(fc.constantFrom("'", '"', "\\", "\n", ".", " ", "E", "$", "-", "*"), fc.fullUnicode()) })
  .map((s) => s.replace(/\0/g, ""));

test("quoteIdent is pg's escapeIdentifier, and reads back as exactly one identifier equal to its input", () => {
  fc.assert(fc.property(text, (s) => {
    expect(quoteIdent(s)).toBe(escapeIdentifier(s));
    expect(sqlTokens(quoteIdent(s))).toEqual({ literals: [], identifiers: [s], unquoted: "I" });
  }));
});

test("quoteLiteral reads back as exactly one literal equal to its input, backslashes literal", () => {
  fc.assert(fc.property(text, (s) => {
    expect(sqlTokens(quoteLiteral(s))).toEqual({ literals: [s], identifiers: [], unquoted: "L" });
  }));
});

test("a statement built from quoted parts never lets a part out of its quotes", () => {
  fc.assert(fc.property(text, text, text, (schema, name, value) => {
    const sql = `SELECT ${quoteLiteral(value)} AS v FROM ${qualified(schema, name)} WHERE x = ${quoteLiteral(value)}`;
    expect(sqlTokens(sql)).toEqual({ literals: [value, value], identifiers: [schema, name], unquoted: "SELECT L AS v FROM I.I WHERE x = L" });
  }));
});
