/**
 * Materialized views and DDL while streaming (`--ddl replicate`, both CDC modes, real servers 15 → 17). The cutover
 * refreshes on the target every materialized view the source has populated (start holds their REFRESH back until then:
 * the target's copy then equals its definition on the source's final data, which is what verify compares). Before,
 * only the views start had seen were refreshed: a view created while streaming kept the contents of its creation on the
 * target while the rows it reads moved on (verify: "contents differ"; the gate does not read views), and the refresh of
 * a view dropped while streaming was still run.
 */
import { LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, cutoverMigration, migrationOptions, parseEndpoint, startMigration, verifyMigration } from "../provider/engine";
import { ensureBuilt } from "./support/build";
import { leftovers, startServers } from "./support/servers";

let src: LocalServer, tgt: LocalServer;
const MODES = ["stream", "subscription"] as const;

beforeAll(async () => {
  ensureBuilt();
  [src, tgt] = await startServers(15, 17);
});
afterAll(async () => { await src?.stop(); await tgt?.stop(); });

test.each(MODES)("mode %s: a view created while streaming is refreshed at cutover, one dropped is not; verify finds them equal", async (mode) => {
  const db = `mv_${mode}`;
  await src.createDatabase(db); await tgt.createDatabase(db);
  await src.query(`CREATE TABLE item (id int PRIMARY KEY, kind text NOT NULL, price numeric NOT NULL);
    INSERT INTO item SELECT g, 'k' || (g % 5), g / 10.0 FROM generate_series(1, 1000) g;
    CREATE MATERIALIZED VIEW by_kind AS SELECT kind, count(*) AS n, sum(price) AS total FROM item GROUP BY kind;
    CREATE MATERIALIZED VIEW soon_gone AS SELECT max(id) AS top FROM item;`, db);
  const source = parseEndpoint(src.uri(db), "source"), target = parseEndpoint(tgt.uri(db), "target");
  expect((await startMigration(source, target, migrationOptions({ name: db, mode, ddl: "replicate", jobs: 2 }))).phase).toBe("ReadyToCutover");

  // While streaming: a new view (populated on creation, on the target at the statement's place in the stream: over the
  // rows as they were then), then the rows it reads change; a view start knew is dropped.
  await src.query(`CREATE MATERIALIZED VIEW expensive AS SELECT id, price FROM item WHERE price > 90`, db);
  await src.query(`DROP MATERIALIZED VIEW soon_gone`, db);
  await src.query(`INSERT INTO item SELECT g, 'k9', 100 + g FROM generate_series(1001, 1100) g; UPDATE item SET price = price + 50 WHERE id <= 100`, db);

  const said: string[] = [];
  const cut = await cutoverMigration(source, target, { name: db, freezeWrites: true, timeoutSec: 120, jobs: 2, onProgress: (m) => said.push(m) });
  expect(cut.phase).toBe("Completed");
  expect(said.join("\n")).toMatch(/refreshing 1 materialized view\(s\) created since start too: public\.expensive/);
  expect(said.join("\n")).toMatch(/not refreshing 1 materialized view\(s\) dropped or emptied on the source since start: public\.soon_gone/);
  // The target's views are their definitions over the final rows: the new one holds the rows changed after its creation.
  const expensive = async (s: LocalServer) => (await s.query(`SELECT count(*)::int AS n FROM expensive`, db))[0].n;
  expect(await expensive(tgt)).toBe((await src.query(`SELECT count(*)::int AS n FROM item WHERE price > 90`, db))[0].n);
  expect(await expensive(tgt)).toBe(200); // 100 at its creation
  expect((await verifyMigration(source, target, { hashes: true })).problems).toEqual([]);

  await src.query(cut.undoFreezeSql.join("\n"), db);
  await cleanupMigration(source, target, db);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});
