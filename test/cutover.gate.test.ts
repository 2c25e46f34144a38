/**
 * The cutover that cannot lose data, on real servers (PostgreSQL 15 → 17), in both CDC modes:
 *  - the write fence holds for every role: roles whose own setting (ALTER ROLE … SET / … IN DATABASE … SET
 *    default_transaction_read_only = off) overrides the database's are made read-only for the freeze, writers
 *    that keep reconnecting (two such roles and a superuser) land nothing after the fence, and the settings
 *    come back exactly; without --freeze-writes, cutover refuses while writes arrive, naming the writer;
 *  - the verification gate: a difference injected on the target stops the cutover naming the table, the source
 *    stays frozen with the slot kept, a retry re-verifies, --abort unfreezes and streaming resumes, nothing lost;
 *  - DDL on the source mid-migration is reported by status and refused by cutover until the target matches;
 *  - a drain timeout (an agent SIGSTOPped while it holds the slot; a disabled subscription) rolls the freeze back;
 *  - the grace period lets a transaction open at the freeze commit; a cutover killed mid-drain is aborted
 *    (settings restored exactly) and re-run over the CLI.
 * Every test ends with cleanup and no slot, publication or subscription left.
 */
import { spawn, spawnSync } from "child_process";
import { Client } from "pg";
import { LocalServer } from "../provider/embedded/localServer";
import {
  abortCutover, cleanupMigration, cutoverMigration, migrationOptions, migrationStatus, parseEndpoint, PgferryError, startMigration, verifyMigration,
} from "../provider/engine";
import { CLI, ensureBuilt } from "./support/build";
import { until } from "./support/until";
import { leftovers, startServers, Writer } from "./support/servers";
import { killAgents, spawnAgent } from "./support/agents";

let src: LocalServer, tgt: LocalServer;
const MODES = ["subscription", "stream"] as const;

beforeAll(async () => {
  ensureBuilt();
  [src, tgt] = await startServers(15, 17);
  for (const s of [src, tgt]) {
    await s.query(`CREATE ROLE app_writer LOGIN PASSWORD 'pw_writer'; CREATE ROLE app_local LOGIN PASSWORD 'pw_local';`);
  }
  // The override that beats ALTER DATABASE … SET default_transaction_read_only = on, for every database of the server.
  await src.query(`ALTER ROLE app_writer SET default_transaction_read_only = off`);
});
afterAll(async () => { killAgents(); await src?.stop(); await tgt?.stop(); });

/** A small schema with a held-back FK, a sequence and a matview; app_local overrides read-only in this database only. */
async function makeDb(db: string): Promise<{ source: ReturnType<typeof parseEndpoint>; target: ReturnType<typeof parseEndpoint> }> {
  await src.createDatabase(db);
  await tgt.createDatabase(db);
  await src.query(`
    CREATE TABLE account (id int PRIMARY KEY, name text);
    CREATE TABLE item (id bigserial PRIMARY KEY, account int REFERENCES account, who text NOT NULL DEFAULT current_user, v int,
      at timestamptz NOT NULL DEFAULT clock_timestamp());
    CREATE TABLE quiet (id int PRIMARY KEY, v text);
    INSERT INTO account SELECT g, 'a' || g FROM generate_series(1, 50) g;
    INSERT INTO item (account, v) SELECT 1 + g % 50, g FROM generate_series(1, 5000) g;
    INSERT INTO quiet SELECT g, 'q' || g FROM generate_series(1, 1000) g;
    CREATE MATERIALIZED VIEW item_count AS SELECT account, count(*) AS n FROM item GROUP BY account;
    GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app_writer, app_local;
    GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO app_writer, app_local;
    ALTER ROLE app_local IN DATABASE "${db}" SET default_transaction_read_only = off;`, db);
  return { source: parseEndpoint(src.uri(db), "source"), target: parseEndpoint(tgt.uri(db), "target") };
}

/** pg_db_role_setting of the database and of our two roles, as text: must come back exactly after an unfreeze. */
async function settings(db: string): Promise<string[]> {
  return (await src.query(`SELECT coalesce(r.rolname, '-') || '@' || coalesce(d.datname, '*') || ' ' || array_to_string(s.setconfig, ',') AS s
    FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole LEFT JOIN pg_database d ON d.oid = s.setdatabase
    WHERE (d.datname = '${db}' OR s.setdatabase = 0)`, db)).map((x) => x.s as string).sort();
}

const readOnlyDefault = async (db: string) => (await src.query(`SELECT current_setting('default_transaction_read_only') AS ro`, db))[0].ro;

/**
 * An application connection that does not give up: on a read-only refusal it retries, on a terminated
 * session it reconnects. Counts what committed and what was refused, with the time of the last commit.
 */
class PersistentWriter {
  private running = true;
  private loop?: Promise<void>;
  committed = 0;
  readOnlyRefusals = 0;
  reconnects = 0;
  lastCommitAt = 0;
  errors: string[] = [];
  /** bypass: the session lifts read-only itself (SET default_transaction_read_only = off), which no setting can prevent. */
  constructor(private uri: string, private account: number, private bypass = false) {}
  start(): this {
    active.add(this);
    this.loop = (async () => {
      while (this.running) {
        const c = new Client({ connectionString: this.uri });
        c.on("error", () => undefined);
        try {
          await c.connect();
          if (this.bypass) await c.query(`SET default_transaction_read_only = off`);
          for (let i = 0; this.running; i++) {
            try {
              await c.query(`BEGIN; INSERT INTO item (account, v) VALUES (${this.account}, ${i});
                UPDATE item SET v = v + 1 WHERE id = (SELECT max(id) FROM item WHERE account = ${this.account}); COMMIT;`);
              this.committed++;
              this.lastCommitAt = Date.now();
            } catch (e) {
              await c.query("ROLLBACK").catch(() => undefined);
              if ((e as { code?: string }).code === "25006") this.readOnlyRefusals++;
              else { this.errors.push((e as Error).message); throw e; }
            }
            await new Promise((r) => setTimeout(r, 5));
          }
        } catch {
          this.reconnects++;
          await new Promise((r) => setTimeout(r, 20));
        } finally {
          await c.end().catch(() => undefined);
        }
      }
    })();
    return this;
  }
  async stop(): Promise<void> { this.running = false; await this.loop; active.delete(this); }
}
const active = new Set<{ stop(): Promise<void> }>();
// A failed assertion must not leave writers running into the next test or past the servers' end.
afterEach(async () => { await Promise.all([...active].map((w) => w.stop())); });


async function rejection(p: Promise<unknown>): Promise<PgferryError> {
  try { await p; } catch (e) { return e as PgferryError; }
  throw new Error("expected a refusal, the call succeeded");
}

test.each(MODES)("mode %s: the freeze fences roles that override read-only, and superusers' sessions are named", async (mode) => {
  const db = `fence_${mode}`;
  const { source, target } = await makeDb(db);
  expect((await startMigration(source, target, migrationOptions({ name: `fence_${mode}`, mode, jobs: 2 }))).phase).toBe("ReadyToCutover");
  const before = await settings(db);
  expect(before).toEqual([`app_local@${db} default_transaction_read_only=off`, "app_writer@* default_transaction_read_only=off"]);

  const roleWide = new PersistentWriter(src.uri(db, "app_writer", "pw_writer"), 1).start();
  const inDb = new PersistentWriter(src.uri(db, "app_local", "pw_local"), 2).start();
  const superuser = new PersistentWriter(src.uri(db), 3).start();
  await until("every writer to commit", async () => roleWide.committed > 20 && inDb.committed > 20 && superuser.committed > 20);

  // Without --freeze-writes pgferry waits for the application to stop, and refuses naming who still writes.
  const busy = await rejection(cutoverMigration(source, target, { name: `fence_${mode}`, freezeWrites: false, timeoutSec: 30, jobs: 2, graceSec: 2 }));
  expect(busy.code).toBe("writes_active");
  expect({ errors: [roleWide.errors, inDb.errors], message: busy.message }).toMatchObject({ errors: [[], []], message: expect.stringMatching(/app_writer/) });
  expect(busy.message).toMatch(/app_local/);
  expect((await migrationStatus(source, target, `fence_${mode}`)).phase).toBe("ReadyToCutover");
  expect(await readOnlyDefault(db)).toBe("off");

  const cut = await cutoverMigration(source, target, { name: `fence_${mode}`, freezeWrites: true, timeoutSec: 120, jobs: 2, graceSec: 1,
    verify: mode === "stream" ? "hashes" : "counts" });
  const doneAt = Date.now();
  expect(cut.phase).toBe("Completed");
  expect(cut.neutralisedRoles).toEqual(["app_local", "app_writer"]);
  expect(new Set(cut.endedSessions.map((s) => s.user))).toEqual(new Set(["app_writer", "app_local", "postgres"]));
  expect(cut.endedSessions.find((s) => s.user === "postgres")?.superuser).toBe(true);
  expect(cut.verification).toMatchObject({ mode: mode === "stream" ? "hashes" : "counts", tables: 3 });
  expect(cut.timings).toMatchObject({ freezeMs: expect.any(Number), drainMs: expect.any(Number), verifyMs: expect.any(Number),
    sequencesMs: expect.any(Number), heldBackMs: expect.any(Number) });
  expect(cut.downtimeMs!).toBeGreaterThanOrEqual(cut.timings!.freezeMs! + cut.timings!.verifyMs!);

  // The writers keep trying (each at least five more attempts): every role is refused (the superuser's reconnected
  // session is read-only by default too, and reported as still connected), so nothing lands on the source after the fence.
  const committedAtCutover = [roleWide.committed, inDb.committed, superuser.committed];
  const attempts = (w: PersistentWriter) => w.committed + w.readOnlyRefusals + w.reconnects;
  const attemptsAtCutover = [roleWide, inDb, superuser].map(attempts);
  await until("every writer to try again after the cutover", async () => [roleWide, inDb, superuser].every((w, i) => attempts(w) >= attemptsAtCutover[i] + 5));
  await Promise.all([roleWide.stop(), inDb.stop(), superuser.stop()]);
  expect([roleWide.committed, inDb.committed, superuser.committed]).toEqual(committedAtCutover);
  expect(Math.max(roleWide.lastCommitAt, inDb.lastCommitAt, superuser.lastCommitAt)).toBeLessThan(doneAt);
  expect(roleWide.readOnlyRefusals).toBeGreaterThan(0);
  expect(inDb.readOnlyRefusals).toBeGreaterThan(0);
  expect(roleWide.reconnects + inDb.reconnects + superuser.reconnects).toBeGreaterThanOrEqual(3);
  expect(cut.stillConnected.some((s) => s.user === "postgres" && s.superuser)).toBe(true);
  const report = await verifyMigration(source, target);
  expect(report.problems).toEqual([]);
  for (const who of ["app_writer", "app_local"]) {
    expect((await tgt.query(`SELECT count(*)::int AS n FROM item WHERE who = '${who}'`, db))[0].n).toBeGreaterThan(20);
  }

  // After a completed cutover the source stays read-only for those roles too; the printed SQL restores it exactly.
  expect(await settings(db)).toEqual([`-@${db} default_transaction_read_only=on`, `app_local@${db} default_transaction_read_only=on`,
    "app_writer@* default_transaction_read_only=off", `app_writer@${db} default_transaction_read_only=on`]);
  expect(cut.undoFreezeSql).toHaveLength(5); // BEGIN READ WRITE, the database and the two roles, COMMIT
  await src.query(cut.undoFreezeSql.join("\n"), db);
  expect(await settings(db)).toEqual(before);

  await cleanupMigration(source, target, `fence_${mode}`);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});

test.each(MODES)("mode %s: a session that lifts read-only itself is caught after the fence; the freeze is rolled back, nothing lost", async (mode) => {
  const db = `bypass_${mode}`;
  const { source, target } = await makeDb(db);
  expect((await startMigration(source, target, migrationOptions({ name: `bypass_${mode}`, mode, jobs: 2 }))).phase).toBe("ReadyToCutover");
  const before = await settings(db);
  const rogue = new PersistentWriter(src.uri(db, "app_writer", "pw_writer"), 4, true).start();
  await until("the rogue writer", async () => rogue.committed > 20);

  // Ended at the freeze, it reconnects and writes again: every fence finds changes committed after it.
  const refused = await rejection(cutoverMigration(source, target, { name: `bypass_${mode}`, freezeWrites: true, timeoutSec: 60, jobs: 2, graceSec: 0 }));
  expect(refused.code).toBe("writes_after_fence");
  expect(refused.message).toMatch(/after 3 fences: \d+ change\(s\) to public\.item committed after the fence/);
  expect(refused.message).toMatch(/app_writer\/- pid \d+/);
  expect(rogue.reconnects).toBeGreaterThanOrEqual(3);
  const st = await migrationStatus(source, target, `bypass_${mode}`);
  expect(st).toMatchObject({ phase: "ReadyToCutover", sourceFrozen: false, replicationPaused: false });
  expect(await settings(db)).toEqual(before);
  await rogue.stop();

  // Once that writer is stopped the cutover completes, with every row it wrote during the attempts.
  const cut = await cutoverMigration(source, target, { name: `bypass_${mode}`, freezeWrites: true, timeoutSec: 120, jobs: 2, graceSec: 0 });
  expect(cut.fenceAttempts).toBe(1);
  expect((await tgt.query(`SELECT count(*)::int AS n FROM item WHERE account = 4 AND v >= 0`, db))[0].n).toBe(
    (await src.query(`SELECT count(*)::int AS n FROM item WHERE account = 4 AND v >= 0`, db))[0].n);
  expect((await verifyMigration(source, target)).problems).toEqual([]);
  await src.query(cut.undoFreezeSql.join("\n"), db);
  await cleanupMigration(source, target, `bypass_${mode}`);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});

test.each(MODES)("mode %s: a difference on the target stops the cutover frozen; retry re-verifies; --abort resumes streaming", async (mode) => {
  const db = `gate_${mode}`;
  const { source, target } = await makeDb(db);
  expect((await startMigration(source, target, migrationOptions({ name: `gate_${mode}`, mode, jobs: 2 }))).phase).toBe("ReadyToCutover");
  const before = await settings(db);
  const writer = new Writer(src.uri(db), (i) => `INSERT INTO item (account, v) VALUES (${1 + (i % 50)}, ${i})`).start();
  await until("the writer", async () => writer.transactions > 20);
  // The fault: a row of a table the source no longer changes goes missing (counts) or changes (hashes) on the target.
  const verify = mode === "stream" ? "hashes" : "counts";
  await tgt.query(mode === "stream" ? `UPDATE quiet SET v = 'tampered' WHERE id = 7` : `DELETE FROM quiet WHERE id = 7`, db);

  const failed = await rejection(cutoverMigration(source, target, { name: `gate_${mode}`, freezeWrites: true, timeoutSec: 120, jobs: 2, graceSec: 1, verify }));
  await writer.stop();
  expect(failed.code).toBe("verify_failed");
  expect(failed.message).toMatch(/in public\.quiet:/);
  expect(failed.message).toMatch(mode === "stream" ? /public\.quiet: contents differ/ : /public\.quiet: 1000 rows on source, 999 on target/);
  expect(failed.message).not.toMatch(/public\.item|public\.account/);

  // Stopped frozen, replication paused, nothing dropped; the source still has every row.
  const st = await migrationStatus(source, target, `gate_${mode}`);
  expect(st).toMatchObject({ phase: "VerifyFailed", sourceFrozen: true, replicationPaused: true });
  expect(st.error).toMatch(/public\.quiet/);
  expect(await readOnlyDefault(db)).toBe("on");
  expect((await leftovers(src, tgt, db)).sort()).toEqual([`publication pgferry_gate_${mode}`, `slot pgferry_gate_${mode}`,
    ...(mode === "subscription" ? [`subscription pgferry_gate_${mode}`] : [])].sort());
  expect((await src.query(`SELECT count(*)::int AS n, max(v) FILTER (WHERE id = 7) AS v FROM quiet`, db))[0]).toEqual({ n: 1000, v: "q7" });
  const itemsAtFreeze = (await src.query(`SELECT count(*)::int AS n FROM item`, db))[0].n;

  // cutover again re-verifies (still different), and stays frozen.
  const again = await rejection(cutoverMigration(source, target, { name: `gate_${mode}`, freezeWrites: true, timeoutSec: 120, jobs: 2, graceSec: 0, verify }));
  expect(again.code).toBe("verify_failed");
  expect((await migrationStatus(source, target, `gate_${mode}`)).phase).toBe("VerifyFailed");

  // --abort: the source is writable again, exactly as before, and changes stream again.
  const ab = await abortCutover(source, target, `gate_${mode}`);
  expect(ab).toMatchObject({ phase: "ReadyToCutover", previousPhase: "VerifyFailed", unfroze: true, resumedReplication: true });
  expect(await settings(db)).toEqual(before);
  expect(await readOnlyDefault(db)).toBe("off");
  await src.query(`INSERT INTO quiet VALUES (5000, 'after abort'); INSERT INTO item (account, v) VALUES (1, -1)`, db);
  if (mode === "subscription") {
    await until("the change to stream", async () => (await tgt.query(`SELECT count(*)::int AS n FROM quiet WHERE id = 5000`, db))[0].n === 1);
  }
  // Repair the target as the message says, then the cutover completes and both sides are equal.
  await tgt.query(mode === "stream" ? `UPDATE quiet SET v = 'q7' WHERE id = 7` : `INSERT INTO quiet VALUES (7, 'q7')`, db);
  const cut = await cutoverMigration(source, target, { name: `gate_${mode}`, freezeWrites: true, timeoutSec: 120, jobs: 2, graceSec: 0, verify });
  expect(cut.phase).toBe("Completed");
  expect((await tgt.query(`SELECT v FROM quiet WHERE id = 5000`, db))).toEqual([{ v: "after abort" }]);
  expect((await tgt.query(`SELECT count(*)::int AS n FROM item`, db))[0].n).toBe(itemsAtFreeze + 1);
  expect((await verifyMigration(source, target)).problems).toEqual([]);
  await src.query(cut.undoFreezeSql.join("\n"), db);
  await cleanupMigration(source, target, `gate_${mode}`);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});

test.each(MODES)("mode %s: DDL on the source is reported by status and refused by cutover until the target matches", async (mode) => {
  const db = `ddl_${mode}`;
  const { source, target } = await makeDb(db);
  expect((await startMigration(source, target, migrationOptions({ name: `ddl_${mode}`, mode, jobs: 2 }))).phase).toBe("ReadyToCutover");
  expect((await migrationStatus(source, target, `ddl_${mode}`)).schemaDifferences).toEqual([]);
  const ddl = `ALTER TABLE quiet ADD COLUMN note text NOT NULL DEFAULT 'n'; CREATE INDEX quiet_note ON quiet (note);`;
  await src.query(ddl + ` INSERT INTO quiet (id, v, note) VALUES (2001, 'x', 'new');`, db);

  const st = await migrationStatus(source, target, `ddl_${mode}`);
  expect(st.schemaDifferences!.map((d) => d.problem)).toEqual([
    "public.quiet: column note (text) exists on the source only",
    "public.quiet: index quiet_note exists on the source only",
  ]);
  expect(st.schemaDifferences![0].fix).toBe(`ALTER TABLE "public"."quiet" ADD COLUMN "note" text NOT NULL; (with the source's DEFAULT, if any)`);
  const shown = cli(db, ["status", "--name", `ddl_${mode}`]).stdout;
  expect(shown).toMatch(/schema changed on the source — cutover refuses until the target matches \(2\)/);
  expect(shown).toMatch(/✗ public\.quiet: index quiet_note exists on the source only\n\s+fix on the target: CREATE INDEX quiet_note ON public\.quiet USING btree \(note\);/);

  const refused = await rejection(cutoverMigration(source, target, { name: `ddl_${mode}`, freezeWrites: true, timeoutSec: 60, jobs: 2, graceSec: 0 }));
  expect(refused.code).toBe("schema_drift");
  expect(refused.message).toMatch(/public\.quiet: column note \(text\) exists on the source only/);
  expect(refused.message).toMatch(/index quiet_note/);
  expect((await migrationStatus(source, target, `ddl_${mode}`)).phase).toBe("ReadyToCutover");
  expect(await readOnlyDefault(db)).toBe("off"); // refused before anything was frozen

  // The user applies the same DDL on the target: the differences are gone and the cutover proceeds.
  await tgt.query(ddl, db);
  expect((await migrationStatus(source, target, `ddl_${mode}`)).schemaDifferences).toEqual([]);
  const cut = await cutoverMigration(source, target, { name: `ddl_${mode}`, freezeWrites: true, timeoutSec: 120, jobs: 2, graceSec: 0, verify: "hashes" });
  expect(cut.phase).toBe("Completed");
  expect(await tgt.query(`SELECT note FROM quiet WHERE id IN (1, 2001) ORDER BY id`, db)).toEqual([{ note: "n" }, { note: "new" }]);
  expect((await verifyMigration(source, target)).problems).toEqual([]);
  await src.query(cut.undoFreezeSql.join("\n"), db);
  await cleanupMigration(source, target, `ddl_${mode}`);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});

const agent = (db: string, name: string) => spawnAgent(["--name", name], { source: src.uri(db), target: tgt.uri(db) });

test.each(MODES)("mode %s: a drain timeout rolls the freeze back and the migration keeps streaming", async (mode) => {
  const db = `drain_${mode}`;
  const { source, target } = await makeDb(db);
  expect((await startMigration(source, target, migrationOptions({ name: `drain_${mode}`, mode, jobs: 2 }))).phase).toBe("ReadyToCutover");
  const before = await settings(db);
  let a: ReturnType<typeof agent> | undefined;
  if (mode === "stream") {
    // The agent holds the slot (the single consumer) and then stops making progress.
    a = agent(db, `drain_${mode}`);
    await until("the agent to hold the slot", async () => (await src.query(`SELECT active FROM pg_replication_slots WHERE slot_name = 'pgferry_drain_${mode}'`, db))[0]?.active === true);
    a.proc.kill("SIGSTOP");
  } else {
    // The target's apply worker stops (here: the subscription disabled by hand).
    await tgt.query(`ALTER SUBSCRIPTION pgferry_drain_${mode} DISABLE`, db);
  }
  await src.query(`INSERT INTO quiet SELECT g, 'late' FROM generate_series(3001, 3100) g`, db);

  const timedOut = await rejection(cutoverMigration(source, target, { name: `drain_${mode}`, freezeWrites: true, timeoutSec: 3, jobs: 2, graceSec: 0 }));
  expect(timedOut.code).toBe("drain_timeout");
  expect(timedOut.message).toMatch(mode === "stream" ? /held by pid \d+/ : /subscription is disabled/);
  const st = await migrationStatus(source, target, `drain_${mode}`);
  expect(st).toMatchObject({ phase: "ReadyToCutover", sourceFrozen: false, replicationPaused: false });
  expect(st.error).toMatch(/last cutover attempt: .*fence/);
  expect(await readOnlyDefault(db)).toBe("off");
  expect(await settings(db)).toEqual(before);
  expect((await leftovers(src, tgt, db)).length).toBe(mode === "subscription" ? 3 : 2);

  // The consumer comes back: the late rows arrive, and the next cutover completes.
  if (a) a.proc.kill("SIGCONT");
  else await tgt.query(`ALTER SUBSCRIPTION pgferry_drain_${mode} ENABLE`, db);
  await until("the late rows to stream", async () => (await tgt.query(`SELECT count(*)::int AS n FROM quiet WHERE v = 'late'`, db))[0].n === 100);
  const cut = await cutoverMigration(source, target, { name: `drain_${mode}`, freezeWrites: true, timeoutSec: 120, jobs: 2, graceSec: 0 });
  expect(cut.phase).toBe("Completed");
  if (a) expect(await a.exit).toBe(0); // the agent exits by itself once the migration is cut over
  expect((await verifyMigration(source, target)).problems).toEqual([]);
  await src.query(cut.undoFreezeSql.join("\n"), db);
  await cleanupMigration(source, target, `drain_${mode}`);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});

test("grace period: a transaction open at the freeze commits before sessions are ended, and its row is migrated", async () => {
  const db = "grace";
  const { source, target } = await makeDb(db);
  expect((await startMigration(source, target, migrationOptions({ name: "grace", jobs: 2 }))).phase).toBe("ReadyToCutover");
  const app = new Client({ connectionString: src.uri(db, "app_writer", "pw_writer") });
  await app.connect();
  const pid = (await app.query(`SELECT pg_backend_pid() AS p`)).rows[0].p;
  await app.query(`BEGIN; INSERT INTO quiet VALUES (4242, 'in flight at the freeze')`);
  const finishing = (async () => {
    // Commit 800 ms after the freeze is in place (not after a fixed delay: under load the cutover may
    // take longer than that to reach the freeze, and the transaction would no longer be open at it).
    await until("the freeze to be in place", async () => (await src.query(`SELECT count(*)::int AS n FROM pg_db_role_setting s
      JOIN pg_database d ON d.oid = s.setdatabase
      WHERE d.datname = '${db}' AND s.setrole = 0 AND 'default_transaction_read_only=on' = ANY(s.setconfig)`, db))[0].n > 0, 120000, 20);
    await new Promise((r) => setTimeout(r, 800));
    await app.query("COMMIT");
    await app.end();
  })();
  const cut = await cutoverMigration(source, target, { name: "grace", freezeWrites: true, timeoutSec: 60, jobs: 2, graceSec: 10 });
  await finishing; // its COMMIT succeeded: not ended mid-transaction
  // It may have been ended between its COMMIT and its disconnect, but only once idle.
  expect(cut.endedSessions.filter((s) => s.pid === pid).every((s) => s.state === "idle")).toBe(true);
  expect(cut.timings!.freezeMs!).toBeGreaterThanOrEqual(500);
  expect(cut.timings!.freezeMs!).toBeLessThan(10000); // the grace ended when the transaction did
  expect(await tgt.query(`SELECT v FROM quiet WHERE id = 4242`, db)).toEqual([{ v: "in flight at the freeze" }]);
  expect((await verifyMigration(source, target)).problems).toEqual([]);
  await src.query(cut.undoFreezeSql.join("\n"), db);
  await cleanupMigration(source, target, "grace");
  expect(await leftovers(src, tgt, db)).toEqual([]);
});

function cli(db: string, args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8",
    env: { ...process.env, PGFERRY_SOURCE: src.uri(db), PGFERRY_TARGET: tgt.uri(db) } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

test("CLI: a cutover killed mid-drain leaves the source frozen; --abort restores it exactly; a re-run completes", async () => {
  const db = "killed";
  const { source, target } = await makeDb(db);
  expect((await startMigration(source, target, migrationOptions({ name: "killed", mode: "stream", jobs: 2 }))).phase).toBe("ReadyToCutover");
  const before = await settings(db);
  const a = agent(db, "killed");
  await until("the agent to hold the slot", async () => (await src.query(`SELECT active FROM pg_replication_slots WHERE slot_name = 'pgferry_killed'`, db))[0]?.active === true);
  a.proc.kill("SIGSTOP");
  await src.query(`INSERT INTO quiet SELECT g, 'late' FROM generate_series(3001, 3100) g`, db);

  // kill -9 while it waits for the (stopped) agent to reach the fence.
  const child = spawn(process.execPath, [CLI, "cutover", "--name", "killed", "--freeze-writes", "--grace", "0", "--timeout", "120"], {
    env: { ...process.env, PGFERRY_SOURCE: src.uri(db), PGFERRY_TARGET: tgt.uri(db) }, stdio: "ignore" });
  await until("the cutover to take its fence", async () => (await tgt.query(`SELECT phase, fence_lsn FROM pgferry.migration WHERE name = 'killed'`, db))
    .some((r) => r.phase === "CuttingOver" && r.fence_lsn));
  child.kill("SIGKILL");
  await new Promise((r) => child.once("exit", r));
  expect(await readOnlyDefault(db)).toBe("on");
  expect(await settings(db)).toContain(`app_writer@${db} default_transaction_read_only=on`);

  const status = cli(db, ["status", "--name", "killed"]);
  expect(status.stdout).toMatch(/migration killed: CuttingOver/);
  const ab = cli(db, ["cutover", "--name", "killed", "--abort"]);
  expect({ code: ab.code, stderr: ab.stderr }).toEqual({ code: 0, stderr: expect.stringMatching(/aborted \(was CuttingOver\): source writable again, phase ReadyToCutover/) });
  expect(await settings(db)).toEqual(before);
  expect(await readOnlyDefault(db)).toBe("off");

  // The agent resumes; the cutover run again completes and reports where the downtime went.
  a.proc.kill("SIGCONT");
  const done = cli(db, ["cutover", "--name", "killed", "--freeze-writes", "--grace", "0", "--verify", "hashes", "--json"]);
  expect(done.code).toBe(0);
  const res = JSON.parse(done.stdout);
  expect(res).toMatchObject({ ok: true, phase: "Completed", neutralisedRoles: ["app_local", "app_writer"], verification: { mode: "hashes", tables: 3 } });
  expect(Object.keys(res.timings).sort()).toEqual(["drainMs", "endReplicationMs", "fenceCheckMs", "freezeMs", "heldBackMs", "largeObjectsMs", "sequencesMs", "verifyMs"]);
  expect(await a.exit).toBe(0);
  const text = cli(db, ["status", "--name", "killed"]).stdout;
  expect(text).toMatch(/cutover downtime \d+\.\d\d s \(freeze .* s, drain .* s, fence check .* s, verify .* s, end replication .* s, sequences .* s, held-back objects .* s\)/);
  expect((await tgt.query(`SELECT count(*)::int AS n FROM quiet WHERE v = 'late'`, db))[0].n).toBe(100);
  expect((await verifyMigration(source, target)).problems).toEqual([]);
  await src.query(res.undoFreezeSql.join("\n"), db);
  await cleanupMigration(source, target, "killed");
  expect(await leftovers(src, tgt, db)).toEqual([]);
});
