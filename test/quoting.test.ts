/**
 * The SQL escaper against a real server: any text quoted by quoteLiteral/quoteIdent reads back unchanged, on
 * pgferry's sessions even in a database whose default is standard_conforming_strings = off (SESSION_GUCS pins
 * it on), and quoteLiteral's form is accepted by the walsender's replication grammar (which has no E'…' strings:
 * pg's escapeLiteral would be refused there).
 */
import fc from "fast-check";
import { escapeLiteral } from "pg";
import { LocalServer } from "../provider/embedded/localServer";
import { connect, connectReplication, parseEndpoint, quoteIdent, quoteLiteral } from "../provider/engine/core/endpoint";
import { startServers } from "./support/servers";

let server: LocalServer;
beforeAll(async () => {
  [server] = await startServers(15);
  await server.createDatabase("app");
  await server.query(`ALTER DATABASE app SET standard_conforming_strings = off`);
}, 120000);
afterAll(async () => { await server?.stop(); });

const text = fc.string({ unit: fc.oneof(fc.constantFrom("'", '"', "\\", "\n", "E", "$", "-", "*", ";"), fc.fullUnicode()), maxLength: 40 })
  .map((s) => s.replace(/\0/g, ""));

test("quoted literals and identifiers read back unchanged on pgferry's sessions, standard_conforming_strings off by default there", async () => {
  const ep = parseEndpoint(server.uri("app"), "target");
  const c = await connect(ep);
  try {
    expect((await c.query(`SELECT current_setting('standard_conforming_strings') AS s`)).rows).toEqual([{ s: "on" }]);
    await fc.assert(fc.asyncProperty(text, text.filter((s) => s.length > 0 && Buffer.byteLength(s) <= 63), async (value, name) => {
      // Rows as arrays: the generated name may equal the first column's.
      const r = await c.query({ text: `SELECT ${quoteLiteral(value)}::text AS v, 1 AS ${quoteIdent(name)}`, rowMode: "array" });
      expect(r.rows[0][0]).toBe(value);
      expect(r.fields[1].name).toBe(name);
    }), { numRuns: 200 });
  } finally {
    await c.end();
  }
});

test("the replication grammar takes quoteLiteral's form, backslashes included, and refuses pg's E'…'", async () => {
  const ep = parseEndpoint(server.uri("app"), "source");
  const tryOption = async (literal: string) => {
    const c = await connectReplication(ep);
    try {
      await c.query(`START_REPLICATION SLOT ${quoteIdent("no such slot")} LOGICAL 0/0 (proto_version ${literal})`);
      return "started";
    } catch (e) {
      return (e as Error).message;
    } finally {
      await c.end();
    }
  };
  // Parsed, then refused for the slot alone: the literal itself was understood.
  expect(await tryOption(quoteLiteral("a\\,b'c"))).toBe(`replication slot "no such slot" does not exist`);
  expect(await tryOption(escapeLiteral("a\\,b'c"))).toMatch(/syntax error/);
});
