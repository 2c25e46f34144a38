/**
 * The generated datasets the benches share, so each figure is on the same data (docs/performance.md names them).
 */

/**
 * The "2,000 tables" dataset, tables t_from … t_(to-1): t_i has a serial key, a foreign key to t_(i/2) (t_0 to
 * itself, so every key has a parent table with rows 1..50 at least), two secondary indexes and 50–200 rows.
 */
export function manyTablesSql(from: number, to: number): string {
  return `DO $$ BEGIN FOR i IN ${from}..${to - 1} LOOP
    EXECUTE format('CREATE TABLE t_%s (id serial PRIMARY KEY, ref int REFERENCES t_%s (id), a int NOT NULL, b text NOT NULL)', i, i / 2);
    EXECUTE format('CREATE INDEX ON t_%s (a)', i);
    EXECUTE format('CREATE INDEX ON t_%s (b)', i);
    EXECUTE format('INSERT INTO t_%s (ref, a, b) SELECT CASE WHEN %s = 0 THEN NULL ELSE 1 + g %% 50 END, g * 7 %% 1000, md5(g::text) FROM generate_series(1, %s) g',
      i, i, 50 + (i * 37) % 151);
  END LOOP; END $$`;
}
