/** Properties of the dump splitter: pg_restore's outputs (SQL script, --list) parsed back into what was written. */
import fc from "fast-check";
import { parseTocList, planToc, splitDump, TocLine } from "./schema";

// pg_restore's header fields and --list columns: any text on one line, but not the header's own separators
// (the format cannot tell those apart inside a name) nor a lone "-" (its "none").
const SEPARATORS = ["; Type: ", "; Schema: ", "; Owner: "];
const field = fc.string({ unit: fc.oneof(fc.constantFrom(";", ":", " ", ".", '"', "'", "-", "\\", "ü", "Type"), fc.fullUnicode()), minLength: 1 })
  .filter((s) => !/[\n\r\0]/.test(s) && s !== "-" && !SEPARATORS.some((x) => s.includes(x)));
const kind = fc.constantFrom("TABLE", "INDEX", "CONSTRAINT", "FUNCTION", "TRIGGER", "EVENT TRIGGER", "MATERIALIZED VIEW", "TEXT SEARCH CONFIGURATION");
// A line of an entry's SQL: anything but what the splitter reads as structure (a header after "--", psql's
// \restrict lines, the session settings it carries from entry to entry).
const sqlLine = fc.string({ unit: fc.oneof(fc.constantFrom("-", ";", "'", "\\", " ", "$"), fc.fullUnicode()) })
  .filter((l) => !/[\n\r]/.test(l) && !/^-- Name: /.test(l) && !/^\\(un)?restrict\b/.test(l) && !/^SET default_ta/.test(l));
const body = fc.array(sqlLine, { minLength: 1, maxLength: 5 }).map((ls) => ls.join("\n").trim()).filter((b) => b.length > 0);
const setting = fc.option(fc.tuple(fc.constantFrom("default_tablespace", "default_table_access_method"), fc.constantFrom("''", "heap", "fast space")), { nil: undefined });
const entry = fc.record({ kind, name: field, schema: fc.option(field, { nil: undefined }), owner: fc.option(field, { nil: undefined }), body, setting });

test("splitDump(render(entries)) gives back every entry, each with the session settings in force at its place", () => {
  fc.assert(fc.property(fc.array(entry, { maxLength: 8 }), (list) => {
    let dump = "--\n-- PostgreSQL database dump\n--\n\n\\restrict k3y\n\nSET statement_timeout = 0;\nSET client_encoding = 'UTF8';\n\n";
    const state = new Map<string, string>();
    const expected = list.map((e) => {
      if (e.setting) {
        const line = `SET ${e.setting[0]} = ${e.setting[1]};`;
        dump += `${line}\n\n`;
        state.set(e.setting[0], line);
      }
      dump += `--\n-- Name: ${e.name}; Type: ${e.kind}; Schema: ${e.schema ?? "-"}; Owner: ${e.owner ?? "-"}\n--\n\n${e.body}\n\n\n`;
      return { kind: e.kind, object: e.schema === undefined ? e.name : `${e.schema}.${e.name}`, sql: [...state.values(), e.body].join("\n") };
    });
    dump += "\\unrestrict k3y\n";
    const { preamble, entries } = splitDump(dump);
    expect(preamble).toBe("SET statement_timeout = 0;\nSET client_encoding = 'UTF8';");
    expect(entries).toEqual(expected);
  }));
});

// --list columns: schema and owner are single words (pg_restore prints names unquoted), tags anything on one line.
const word = fc.stringMatching(/^[a-z_][a-z0-9_]{0,8}$/);
const TOC_KINDS = ["ACL", "COMMENT", "CONSTRAINT", "DEFAULT ACL", "EVENT TRIGGER", "FK CONSTRAINT", "FUNCTION", "INDEX", "MATERIALIZED VIEW",
  "MATERIALIZED VIEW DATA", "PUBLICATION TABLES IN SCHEMA", "SECURITY LABEL", "SEQUENCE", "SEQUENCE OWNED BY", "SEQUENCE SET", "SUBSCRIPTION",
  "SUBSCRIPTION TABLE", "TABLE", "TABLE ATTACH", "TABLE DATA", "TEXT SEARCH DICTIONARY", "TRIGGER", "VIEW"];
const tocItem = fc.record({ tableoid: fc.nat(), oid: fc.nat(), kind: fc.constantFrom(...TOC_KINDS), schema: fc.oneof(word, fc.constant("-")), tag: field, owner: word });

test("parseTocList reads back every --list line's ids, kind (the longest that fits) and the rest; comments skipped", () => {
  fc.assert(fc.property(fc.array(tocItem, { maxLength: 12 }), (items) => {
    const lines = items.map((x, i) => `${i + 1}; ${x.tableoid} ${x.oid} ${x.kind} ${x.schema} ${x.tag} ${x.owner}`);
    const list = [";", "; Archive created at 2026-12-06 11:00:00 UTC", ";     dbname: shop", ";", ...lines, ""].join("\n");
    expect(parseTocList(list)).toEqual(items.map((x, i) => ({ line: lines[i], tableoid: x.tableoid, oid: x.oid, kind: x.kind, rest: `${x.schema} ${x.tag} ${x.owner}` })));
  }));
});

const objectKind = fc.constantFrom("TABLE", "FUNCTION", "VIEW", "INDEX", "EVENT TRIGGER", "SUBSCRIPTION", "FK CONSTRAINT");
const tocObject = fc.record({ kind: objectKind, schema: fc.oneof(word, fc.constant("-")), tag: field, owner: word, excluded: fc.boolean(),
  dependents: fc.subarray(["COMMENT", "SECURITY LABEL", "ACL"]) });

test("planToc: excluded and never-carried objects stay behind with their comments, labels and grants; held ones wait with theirs; order kept", () => {
  fc.assert(fc.property(fc.array(tocObject, { maxLength: 10 }), fc.boolean(), (objects, shuffleDependents) => {
    let oid = 1000;
    const toc: TocLine[] = [];
    const where = new Map<TocLine, "keep" | "atCutover" | "behind">();
    const dependents: TocLine[] = [];
    objects.forEach((o, i) => {
      const tag = `${o.tag} #${i}`; // one object per tag
      const line = (kind: string, rest: string): TocLine => ({ line: `${toc.length + 1}; 1 ${oid} ${kind} ${rest}`, tableoid: 1, oid: oid++, kind, rest });
      const self = line(o.kind, `${o.schema} ${tag} ${o.owner}`);
      const fate = o.excluded || o.kind === "SUBSCRIPTION" || o.kind === "FK CONSTRAINT" ? "behind" : o.kind === "EVENT TRIGGER" ? "atCutover" : "keep";
      toc.push(self);
      where.set(self, fate);
      if (o.excluded) self.tableoid = 42;
      for (const d of o.dependents) {
        const dep = line(d, `${o.schema} ${o.kind} ${tag} ${o.owner}`);
        where.set(dep, fate);
        (shuffleDependents ? dependents : toc).push(dep);
      }
    });
    toc.push(...dependents); // pg_restore lists comments and grants after every object: both orders must work
    const excludeObjects = toc.filter((x) => x.tableoid === 42).map((x) => ({ classid: 42, objid: x.oid }));
    const { keep, atCutover } = planToc(toc, { excludeObjects, foreignKeys: [] });
    expect(keep).toEqual(toc.filter((x) => where.get(x) === "keep"));
    expect(atCutover).toEqual(toc.filter((x) => where.get(x) === "atCutover"));
  }));
});
