/**
 * The cutover gate's check by key (verify/byKey.ts) against a commit caught between its commit record and its
 * visibility. The check reads every changed key's row in a snapshot T1 just before the freeze and, at the fence, reads
 * again only the keys changed after T1: on the source, those whose commit record lies at or after the WAL position read
 * before T1, or whose transaction T1 does not see. A transaction that has written its commit record but not yet left
 * the procarray (flushing WAL — on a busy 2-core CI machine this failed stream.agent's cutover with "contents differ" —
 * or waiting for a synchronous standby) and holds the newest xid is not in T1's xip list, yet T1 does not see it
 * (xmax = latestCompletedXid + 1). Treated as seen, its key's stale T1 row stood for the source at the fence.
 *
 * Made exact here with a synchronous standby that never comes: the writer's COMMIT waits after its commit record
 * (SyncRep) while T1 is taken, and completes once the setting is reset. Real servers 15 → 17, subscription mode (the
 * target applies by itself; the source-side rule is the same in both modes).
 */
import { Client } from "pg";
import { LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, migrationOptions, parseEndpoint, startMigration } from "../provider/engine";
import { lsnToBigInt } from "../provider/engine/core/lsn";
import { objectNames } from "../provider/engine/core/options";
import { KeyCheck } from "../provider/engine/verify/byKey";
import { closeVerifySessions, openVerifySessions } from "../provider/engine/verify/verify";
import { leftovers, reloadConf, startServers } from "./support/servers";
import { until } from "./support/until";

let src: LocalServer, tgt: LocalServer;
const db = "bykeyrace", name = "bykeyrace";
beforeAll(async () => {
  [src, tgt] = await startServers(15, 17);
  await src.createDatabase(db); await tgt.createDatabase(db);
  await src.query(`CREATE TABLE big (id int PRIMARY KEY, v text); INSERT INTO big SELECT g, 'v' || g FROM generate_series(1, 1000) g`, db);
});
afterAll(async () => {
  await src?.query(`ALTER SYSTEM RESET synchronous_standby_names`).catch(() => undefined);
  await src?.stop(); await tgt?.stop();
});

test("a commit whose record is written but not yet visible when T1 is taken is read again at the fence (source = target)", async () => {
  const source = parseEndpoint(src.uri(db), "source"), target = parseEndpoint(tgt.uri(db), "target");
  expect((await startMigration(source, target, migrationOptions({ name, mode: "subscription", jobs: 1 }))).phase).toBe("ReadyToCutover");
  const names = objectNames(name);
  const confirmed = async () => lsnToBigInt((await src.query(`SELECT confirmed_flush_lsn::text AS l FROM pg_replication_slots
    WHERE slot_name = '${names.slot}'`))[0]?.l ?? "0/0");
  const drainTo = async (lsn: string) => { await until(`the target to apply up to ${lsn}`, async () => (await confirmed()) >= lsnToBigInt(lsn), 60000); };
  const drained = async () => drainTo((await src.query(`SELECT pg_current_wal_lsn()::text AS l`, db))[0].l);

  const said: string[] = [];
  const control = new Client({ connectionString: src.uri(db) });
  await control.connect();
  const check = (await KeyCheck.open({ src: control, source, target, slot: names.slot, publication: names.publication, say: (m) => said.push(m),
    drainTo, targetApplied: { before: confirmed } }, ["public.big"]))!;
  const pair = (await openVerifySessions(source, target, 1))[0];
  const limbo = new Client({ connectionString: src.uri(db) });
  try {
    expect(check.keyed).toEqual(["public.big"]);
    await check.baseline();
    // Changes after S: known before T1, and unchanged after it.
    await src.query(`UPDATE big SET v = 'early' WHERE id IN (1, 2)`, db);
    await drained();
    await check.collect();
    await check.readOld();

    // Row 5's commit: its record written, the backend waiting for a synchronous standby — not visible yet.
    await src.query(`ALTER SYSTEM SET synchronous_standby_names = 'pgferry_test_nobody'`);
    await reloadConf(src, db);
    await limbo.connect();
    const pid = (await limbo.query(`SELECT pg_backend_pid() AS p`)).rows[0].p;
    const committing = limbo.query(`UPDATE big SET v = 'limbo' WHERE id = 5`);
    await until("the commit to wait for the standby", async () =>
      (await src.query(`SELECT wait_event FROM pg_stat_activity WHERE pid = ${pid}`))[0]?.wait_event === "SyncRep", 30000);
    // Decoded (its record is flushed) and applied by the subscription, but not visible on the source.
    expect((await src.query(`SELECT v FROM big WHERE id = 5`, db))[0].v).toBe("v5");
    await drained();
    await check.collect();
    await check.readOld();
    await check.preRead(pair);

    // The commit completes; the target has it already. The fence.
    await src.query(`ALTER SYSTEM RESET synchronous_standby_names`);
    await reloadConf(src, db);
    await committing;
    expect((await src.query(`SELECT v FROM big WHERE id = 5`, db))[0].v).toBe("limbo");
    await drained();
    const result = await check.finish(pair);
    expect(result.fallback).toEqual([]);
    const big = result.known.get("public.big")!;
    expect(big).toMatchObject({ sourceRows: 1000, targetRows: 1000 });
    expect(big.targetHash).toBe(big.sourceHash);
    // And it is the hash of every row, read whole on each side now.
    const whole = `SELECT md5(count(*)::text || ':' || coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint::numeric), 0)::text || ':' ||
      coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint::numeric), 0)::text) AS h FROM (SELECT md5(ROW(_v_.id, _v_.v)::text) AS h FROM big _v_) s`;
    expect((await src.query(whole, db))[0].h).toBe(big.sourceHash);
    expect((await tgt.query(whole, db))[0].h).toBe(big.sourceHash);
  } finally {
    await src.query(`ALTER SYSTEM RESET synchronous_standby_names`).catch(() => undefined);
    await reloadConf(src, db).catch(() => undefined);
    await limbo.end().catch(() => undefined);
    await closeVerifySessions([pair]);
    await check.close();
    await control.end();
  }
  await cleanupMigration(source, target, name);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});

/**
 * The second look before the freeze (preRead again, the cutover's last warm-up step): only the keys changed after the
 * snapshot their row was read in are read, each in the new snapshot from then on; at the fence only those changed after
 * that are read again. A change the target lost after the second look still makes the two sides differ, and each side's
 * result is its whole-table hash.
 */
test("a second look reads only the keys changed since the first; the fence reads only those changed after it, and a lost change still differs", async () => {
  const db2 = "bykeyagain", name2 = "bykeyagain";
  await src.createDatabase(db2); await tgt.createDatabase(db2);
  await src.query(`CREATE TABLE big (id int PRIMARY KEY, v text); INSERT INTO big SELECT g, 'v' || g FROM generate_series(1, 1000) g`, db2);
  const source = parseEndpoint(src.uri(db2), "source"), target = parseEndpoint(tgt.uri(db2), "target");
  expect((await startMigration(source, target, migrationOptions({ name: name2, mode: "subscription", jobs: 1 }))).phase).toBe("ReadyToCutover");
  const names = objectNames(name2);
  const confirmed = async () => lsnToBigInt((await src.query(`SELECT confirmed_flush_lsn::text AS l FROM pg_replication_slots
    WHERE slot_name = '${names.slot}'`))[0]?.l ?? "0/0");
  const drainTo = async (lsn: string) => { await until(`the target to apply up to ${lsn}`, async () => (await confirmed()) >= lsnToBigInt(lsn), 60000); };
  const drained = async () => drainTo((await src.query(`SELECT pg_current_wal_lsn()::text AS l`, db2))[0].l);
  const control = new Client({ connectionString: src.uri(db2) });
  await control.connect();
  const check = (await KeyCheck.open({ src: control, source, target, slot: names.slot, publication: names.publication, say: () => undefined,
    drainTo, targetApplied: { before: confirmed } }, ["public.big"]))!;
  const pair = (await openVerifySessions(source, target, 1))[0];
  try {
    expect(check.keyed).toEqual(["public.big"]);
    await check.baseline();
    await src.query(`UPDATE big SET v = 'first' WHERE id <= 10`, db2);
    await drained();
    await check.collect();
    await check.readOld();
    expect(await check.preRead(pair)).toBe(10);
    // After the first look: ten new keys, and one of the first ten again.
    await src.query(`UPDATE big SET v = 'second' WHERE id BETWEEN 11 AND 20 OR id = 1`, db2);
    await drained();
    await check.collect();
    expect(await check.preRead(pair, true)).toBe(11);
    expect(await check.preRead(pair, true)).toBe(0);
    // After the second look: row 3 changes on the source; the target loses that change (its row set back).
    await src.query(`UPDATE big SET v = 'third' WHERE id = 3`, db2);
    await drained();
    await tgt.query(`UPDATE big SET v = 'first' WHERE id = 3`, db2);
    const result = await check.finish(pair);
    expect(result.fallback).toEqual([]);
    expect(check.reread).toBe(1);
    const big = result.known.get("public.big")!;
    expect(big).toMatchObject({ sourceRows: 1000, targetRows: 1000 });
    expect(big.targetHash).not.toBe(big.sourceHash);
    const whole = `SELECT md5(count(*)::text || ':' || coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint::numeric), 0)::text || ':' ||
      coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint::numeric), 0)::text) AS h FROM (SELECT md5(ROW(_v_.id, _v_.v)::text) AS h FROM big _v_) s`;
    expect((await src.query(whole, db2))[0].h).toBe(big.sourceHash);
    expect((await tgt.query(whole, db2))[0].h).toBe(big.targetHash);
  } finally {
    await closeVerifySessions([pair]);
    await check.close();
    await control.end();
  }
  await cleanupMigration(source, target, name2);
  expect(await leftovers(src, tgt, db2)).toEqual([]);
});

/**
 * The held snapshots moved forward (rebase, during the cutover's warm-up) so vacuum and pruning are not held back from the
 * witness's creation to the fence: a change made just before the move (not yet decoded) and one after it are both counted
 * exactly — each side's result is its whole-table hash — and the old sessions are gone.
 */
test("moving the held snapshots forward keeps the result exact: a change just before the move and one after it", async () => {
  const db3 = "bykeyrebase", name3 = "bykeyrebase";
  await src.createDatabase(db3); await tgt.createDatabase(db3);
  await src.query(`CREATE TABLE big (id int PRIMARY KEY, v text); INSERT INTO big SELECT g, 'v' || g FROM generate_series(1, 1000) g`, db3);
  const source = parseEndpoint(src.uri(db3), "source"), target = parseEndpoint(tgt.uri(db3), "target");
  expect((await startMigration(source, target, migrationOptions({ name: name3, mode: "subscription", jobs: 1 }))).phase).toBe("ReadyToCutover");
  const names = objectNames(name3);
  const confirmed = async () => lsnToBigInt((await src.query(`SELECT confirmed_flush_lsn::text AS l FROM pg_replication_slots
    WHERE slot_name = '${names.slot}'`))[0]?.l ?? "0/0");
  const drainTo = async (lsn: string) => { await until(`the target to apply up to ${lsn}`, async () => (await confirmed()) >= lsnToBigInt(lsn), 60000); };
  const drained = async () => drainTo((await src.query(`SELECT pg_current_wal_lsn()::text AS l`, db3))[0].l);
  const control = new Client({ connectionString: src.uri(db3) });
  await control.connect();
  const check = (await KeyCheck.open({ src: control, source, target, slot: names.slot, publication: names.publication, say: () => undefined,
    drainTo, targetApplied: { before: confirmed } }, ["public.big"]))!;
  const pair = (await openVerifySessions(source, target, 1))[0];
  try {
    await check.baseline();
    await src.query(`UPDATE big SET v = 'early' WHERE id <= 5`, db3);
    await drained();
    await check.collect();
    await check.readOld();
    // Not decoded yet when the move begins: the move must decode it before it lets the old snapshots go.
    await src.query(`UPDATE big SET v = 'before the move' WHERE id = 40; DELETE FROM big WHERE id = 41; INSERT INTO big VALUES (2000, 'new')`, db3);
    await drained();
    const oldPid = check.heldSourcePid!;
    const pid = await check.rebase();
    expect(pid).toBeDefined();
    expect(pid).not.toBe(oldPid);
    expect(check.heldSourcePid).toBe(pid);
    await until("the old held session to end", async () => !(await src.query(`SELECT 1 FROM pg_stat_activity WHERE pid = ${oldPid}`)).length, 30000);
    await src.query(`UPDATE big SET v = 'after the move' WHERE id IN (40, 50); DELETE FROM big WHERE id = 51`, db3);
    await drained();
    await check.collect();
    await check.readOld();
    await check.preRead(pair);
    const result = await check.finish(pair);
    expect(result.fallback).toEqual([]);
    const big = result.known.get("public.big")!;
    expect(big).toMatchObject({ sourceRows: 999, targetRows: 999 });
    const whole = `SELECT md5(count(*)::text || ':' || coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::bigint::numeric), 0)::text || ':' ||
      coalesce(sum(('x' || substr(h, 17, 16))::bit(64)::bigint::numeric), 0)::text) AS h FROM (SELECT md5(ROW(_v_.id, _v_.v)::text) AS h FROM big _v_) s`;
    expect((await src.query(whole, db3))[0].h).toBe(big.sourceHash);
    expect((await tgt.query(whole, db3))[0].h).toBe(big.targetHash);
    expect(big.targetHash).toBe(big.sourceHash);
  } finally {
    await closeVerifySessions([pair]);
    await check.close();
    await control.end();
  }
  await cleanupMigration(source, target, name3);
  expect(await leftovers(src, tgt, db3)).toEqual([]);
});
