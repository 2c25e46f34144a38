/** A small schema that exercises every hard case: partitions, quoted/unicode names, generated and identity
 * columns, composite and deferrable FKs, descending and unowned sequences, TOAST, triggers, matviews. */
export const EDGE_SCHEMA = `
CREATE SCHEMA "Edge Aux";
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE SEQUENCE ticket_seq START 100;
CREATE SEQUENCE countdown_seq INCREMENT BY -1 START 1000 MAXVALUE 1000;
CREATE TABLE parent (a int, b int, label text, PRIMARY KEY (a, b));
CREATE TABLE child (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, a int, b int, ticket int DEFAULT nextval('ticket_seq'),
  countdown int DEFAULT nextval('countdown_seq'),
  FOREIGN KEY (a, b) REFERENCES parent (a, b) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE doc (id serial PRIMARY KEY, body text, n int, twice int GENERATED ALWAYS AS (n * 2) STORED, m mood,
  tags text[], j jsonb, ts timestamptz, raw bytea, last_update timestamptz DEFAULT now());
ALTER TABLE doc ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.last_update = now(); RETURN NEW; END $$;
CREATE TRIGGER doc_touch BEFORE UPDATE ON doc FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TABLE measure (id int, at date NOT NULL, v numeric, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE measure_2024 PARTITION OF measure FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE measure_2025 PARTITION OF measure FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE "Edge Aux"."Mixed Case Ü" ("Key" int PRIMARY KEY, "Wert ä" text);
CREATE MATERIALIZED VIEW doc_stats AS SELECT m, count(*) AS n FROM doc GROUP BY m;
INSERT INTO parent SELECT g, g % 7, 'p' || g FROM generate_series(1, 2000) g;
INSERT INTO child (a, b) SELECT g, g % 7 FROM generate_series(1, 2000) g;
INSERT INTO doc (body, n, m, tags, j, ts, raw)
  SELECT repeat(md5(g::text), 200), g, (ARRAY['sad','ok','happy'])[1 + g % 3]::mood, ARRAY['a' || g, NULL, 'q"x'],
         jsonb_build_object('n', 12345678901234567890, 'p', 2.50, 'z', 'null'::jsonb), '2024-05-05 10:00:00.123456+00', '\\x00ff'
  FROM generate_series(1, 300) g;
INSERT INTO measure SELECT g, DATE '2024-01-01' + (g % 700), g / 3.0 FROM generate_series(1, 5000) g;
INSERT INTO "Edge Aux"."Mixed Case Ü" SELECT g, 'wert ' || g FROM generate_series(1, 100) g;
REFRESH MATERIALIZED VIEW doc_stats;
`;

/** One transaction's worth of every change kind on EDGE_SCHEMA; i makes keys unique per call. */
export function edgeChanges(i: number): string {
  const k = 100000 + i;
  return `BEGIN;
  INSERT INTO parent VALUES (${k}, 1, 'new');
  INSERT INTO child (a, b) VALUES (${k}, 1);
  UPDATE doc SET n = n + 1 WHERE id = ${1 + (i % 300)};
  UPDATE doc SET body = body || 'x' WHERE id = ${1 + ((i * 7) % 300)};
  UPDATE "Edge Aux"."Mixed Case Ü" SET "Key" = "Key" + 1000000 WHERE "Key" = ${1 + (i % 100)};
  UPDATE measure SET at = at + 365 WHERE id = ${1 + (i % 5000)} AND at < '2025-01-01';
  DELETE FROM child WHERE id = ${1 + (i % 2000)};
  DELETE FROM parent WHERE a = ${2 + (i % 1990)} AND b = ${(2 + (i % 1990)) % 7};
  COMMIT;`;
}

/**
 * --exclude and DDL while streaming (ddl.stream, ddl.subscription): arch.cache is excluded at start by the bare name
 * "cache", which also names public.cache created later; old_log is excluded with its partition; events is migrated.
 */
export const EXCLUDE_SCHEMA = `CREATE TABLE acct (id int PRIMARY KEY, v text); INSERT INTO acct SELECT g, 'a' || g FROM generate_series(1, 60) g;
    CREATE SCHEMA arch; CREATE TABLE arch.cache (id int PRIMARY KEY, v text); INSERT INTO arch.cache SELECT g, 'c' FROM generate_series(1, 5) g;
    CREATE TABLE old_log (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
    CREATE TABLE old_log_2024 PARTITION OF old_log FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
    CREATE TABLE events (id int, at date, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
    CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
    INSERT INTO events VALUES (1, '2024-03-03')`;

/**
 * The table-selection moves --ddl replicate refuses (ddl_selection) on EXCLUDE_SCHEMA with --exclude cache, each on a
 * fresh database: a rename into an --exclude name, one out of it, a new partition --exclude names of a migrated table.
 */
export const SELECTION_REFUSALS: { ddl: string[]; names: RegExp }[] = [
  { ddl: [`CREATE TABLE tmp (id int PRIMARY KEY)`, `INSERT INTO tmp VALUES (1)`, `ALTER TABLE tmp RENAME TO cache`],
    names: /ALTER TABLE tmp RENAME TO cache[\s\S]*public\.cache, a table the migration carries, now has a name --exclude names/ },
  { ddl: [`ALTER TABLE arch.cache RENAME TO cache_v2`],
    names: /ALTER TABLE arch\.cache RENAME TO cache_v2[\s\S]*renames a table the migration leaves out[\s\S]*arch\.cache_v2/ },
  { ddl: [`CREATE TABLE cache PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')`],
    names: /CREATE TABLE cache PARTITION OF events[\s\S]*public\.cache, a partition of public\.events, which the migration carries/ },
];
