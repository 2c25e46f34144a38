/** Pure logic, no servers: pg_restore's output split into TOC entries; foreign keys, matviews, entry tables. */
import { foreignKeyEntries, matviewEntries, splitDump } from "./schema";

const DUMP = `--
-- PostgreSQL database dump
--

\\restrict abc123

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: film film_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.film
    ADD CONSTRAINT film_pkey PRIMARY KEY (film_id);


--
-- Name: idx_title; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX idx_title ON public.film USING btree (title);


--
-- Name: film film_fulltext_trigger; Type: TRIGGER; Schema: public; Owner: postgres
--

CREATE TRIGGER film_fulltext_trigger BEFORE INSERT OR UPDATE ON public.film FOR EACH ROW EXECUTE FUNCTION tsvector_update_trigger('fulltext', 'pg_catalog.english', 'title', 'description');

\\unrestrict abc123
--
-- PostgreSQL database dump complete
--
`;

test("pg_restore output splits into TOC entries; psql-only lines are dropped", () => {
  const { preamble, entries } = splitDump(DUMP);
  expect(preamble).toBe("SET statement_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);");
  expect(entries.map((e) => [e.kind, e.object])).toEqual([
    ["CONSTRAINT", "public.film film_pkey"], ["INDEX", "public.idx_title"], ["TRIGGER", "public.film film_fulltext_trigger"],
  ]);
  expect(entries[0].sql).toBe("ALTER TABLE ONLY public.film\n    ADD CONSTRAINT film_pkey PRIMARY KEY (film_id);");
  expect(entries.some((e) => e.sql.includes("\\"))).toBe(false);
});

test("foreign keys are held back NOT VALID then validated; partitioned ones added directly; excluded targets skipped", () => {
  const fk = (o: Partial<Parameters<typeof foreignKeyEntries>[0][0]>) => ({
    schema: "public", table: "rental", name: "rental_fk", definition: "FOREIGN KEY (a, b) REFERENCES public.inventory(a, b) ON DELETE CASCADE DEFERRABLE",
    validated: true, onPartitioned: false, refSchema: "public", refTable: "inventory", refPartitioned: false,
    quotedTable: "rental", quotedName: "rental_fk", comment: null, ...o });
  const entries = foreignKeyEntries([
    fk({}), fk({ name: "never_checked", validated: false }), fk({ table: "payment", name: "pay_fk", onPartitioned: true }),
    fk({ name: "to_excluded", refTable: "gone" }),
  ], new Set(["public.inventory"]));
  expect(entries.map((e) => e.sql)).toEqual([
    'ALTER TABLE ONLY "public"."rental" ADD CONSTRAINT "rental_fk" FOREIGN KEY (a, b) REFERENCES public.inventory(a, b) ON DELETE CASCADE DEFERRABLE NOT VALID;',
    'ALTER TABLE ONLY "public"."rental" VALIDATE CONSTRAINT "rental_fk";',
    'ALTER TABLE ONLY "public"."rental" ADD CONSTRAINT "never_checked" FOREIGN KEY (a, b) REFERENCES public.inventory(a, b) ON DELETE CASCADE DEFERRABLE;',
    'ALTER TABLE "public"."payment" ADD CONSTRAINT "pay_fk" FOREIGN KEY (a, b) REFERENCES public.inventory(a, b) ON DELETE CASCADE DEFERRABLE;',
  ]);
  expect(matviewEntries([{ schema: "s", name: "Mv" }])[0].sql).toBe('REFRESH MATERIALIZED VIEW "s"."Mv";');
});

test("index and constraint entries name the table they build on", () => {
  const { entryTable } = require("./schema") as typeof import("./schema");
  expect(entryTable("CREATE INDEX idx_title ON public.film USING btree (title);")).toBe("public.film");
  expect(entryTable('CREATE UNIQUE INDEX "Odd Idx" ON ONLY "Edge Aux"."Mixed Case Ü" USING btree ("Key");')).toBe('"Edge Aux"."Mixed Case Ü"');
  expect(entryTable("ALTER TABLE ONLY public.film\n    ADD CONSTRAINT film_pkey PRIMARY KEY (film_id);")).toBe("public.film");
  expect(entryTable("CREATE TRIGGER t BEFORE UPDATE ON public.film FOR EACH ROW EXECUTE FUNCTION f();")).toBeUndefined();
});
