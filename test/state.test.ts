/**
 * The state module (provider/engine/state) against a real PostgreSQL 17: numbered control-schema
 * migrations (fresh, run twice, run concurrently, upgrading the shapes earlier releases made), the
 * phase-transition table as the one writer of the phase enforces it, the typed record options, and the
 * records written by the stream applier and the load.
 */
import { Client } from "pg";
import { LocalServer } from "../provider/embedded/localServer";
import { PgferryError } from "../provider/engine/core/errors";
import { CONTROL_SCHEMA_MIGRATIONS, CONTROL_SCHEMA_VERSION, controlSchemaVersion, ensureControlSchema } from "../provider/engine/state/controlSchema";
import {
  deleteMigration, dropControlSchemaIfEmpty, insertMigration, mayFollow, mergeMigrationOptions, Phase, PHASE_TRANSITIONS, PHASES,
  readMigration, updateMigration,
} from "../provider/engine/state/state";
import { appliedPositionSql, readAppliedLsn, readApplyStats, recordApplyError, tablesApplied } from "../provider/engine/state/applyProgress";
import { readActivityBaseline, saveActivityBaseline } from "../provider/engine/state/activityBaseline";
import { loadedTables, markTablesCopied, readTableProgress, resetTableProgress } from "../provider/engine/state/tableProgress";
import { countAppliedEntries, markEntryApplied, readEntries, readNotCarried, readPreamble, replaceNotCarried, storeEntries } from "../provider/engine/state/schemaEntries";
import { listSourceChanges } from "../provider/engine/state/sourceChanges";
import { startServers } from "./support/servers";

/** The control schema as the first release made it (ef4377e, provider/engine/state.ts: ensureControlSchema). */
const FIRST_RELEASE_SHAPE = `
    CREATE SCHEMA IF NOT EXISTS pgferry;
    COMMENT ON SCHEMA pgferry IS 'pgferry migration state; safe to drop once every migration here is Completed or Aborted';
    CREATE TABLE IF NOT EXISTS pgferry.migration (
      name text PRIMARY KEY, phase text NOT NULL, mode text NOT NULL, slot_name text NOT NULL,
      publication text NOT NULL, subscription text NOT NULL, consistent_point text, fence_lsn text, error text,
      options jsonb NOT NULL DEFAULT '{}', created_at timestamptz NOT NULL DEFAULT now(),
      load_started_at timestamptz, load_finished_at timestamptz, streaming_since timestamptz,
      freeze_started_at timestamptz, completed_at timestamptz, downtime_ms double precision,
      source_frozen boolean NOT NULL DEFAULT false, updated_at timestamptz NOT NULL DEFAULT now());
    CREATE TABLE IF NOT EXISTS pgferry.table_progress (
      migration text NOT NULL REFERENCES pgferry.migration ON DELETE CASCADE, schema_name text NOT NULL,
      table_name text NOT NULL, status text NOT NULL DEFAULT 'pending', rows bigint NOT NULL DEFAULT 0,
      bytes bigint NOT NULL DEFAULT 0, estimated_rows bigint NOT NULL DEFAULT 0, estimated_bytes bigint NOT NULL DEFAULT 0,
      seconds double precision NOT NULL DEFAULT 0, PRIMARY KEY (migration, schema_name, table_name));
    CREATE TABLE IF NOT EXISTS pgferry.schema_entry (
      migration text NOT NULL REFERENCES pgferry.migration ON DELETE CASCADE, section text NOT NULL, ordinal int NOT NULL,
      kind text NOT NULL, object text NOT NULL, sql text NOT NULL, parallel boolean NOT NULL DEFAULT false,
      applied boolean NOT NULL DEFAULT false, PRIMARY KEY (migration, section, ordinal));`;

/**
 * The last release before versions (a197596): its ensureControlSchema, plus the tables made lazily by
 * state/sourceChanges.ts (source_change) and verify/touched.ts (table_activity).
 */
const LAST_UNVERSIONED_SHAPE = `${FIRST_RELEASE_SHAPE}
    ALTER TABLE pgferry.migration ADD COLUMN IF NOT EXISTS applied_lsn text;
    CREATE TABLE IF NOT EXISTS pgferry.apply_stats (
      migration text NOT NULL REFERENCES pgferry.migration ON DELETE CASCADE, table_name text NOT NULL,
      inserts bigint NOT NULL DEFAULT 0, updates bigint NOT NULL DEFAULT 0, deletes bigint NOT NULL DEFAULT 0,
      truncates bigint NOT NULL DEFAULT 0, PRIMARY KEY (migration, table_name));
    ALTER TABLE pgferry.migration ADD COLUMN IF NOT EXISTS freeze_saved jsonb;
    ALTER TABLE pgferry.migration ADD COLUMN IF NOT EXISTS replication_paused boolean NOT NULL DEFAULT false;
    ALTER TABLE pgferry.migration ADD COLUMN IF NOT EXISTS cutover_timings jsonb;
    ALTER TABLE pgferry.migration ADD COLUMN IF NOT EXISTS rollback_window text;
    ALTER TABLE pgferry.migration ADD COLUMN IF NOT EXISTS rollback_opened_at timestamptz;
    ALTER TABLE pgferry.migration ADD COLUMN IF NOT EXISTS rollback_closed_at timestamptz;
    ALTER TABLE pgferry.migration ADD COLUMN IF NOT EXISTS apply_error jsonb;
    CREATE TABLE IF NOT EXISTS pgferry.source_change (
      migration text NOT NULL REFERENCES pgferry.migration ON DELETE CASCADE, object text NOT NULL, kind text NOT NULL,
      change text NOT NULL, undo_sql text NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (migration, kind, object));
    CREATE TABLE IF NOT EXISTS pgferry.table_activity (
      migration text NOT NULL REFERENCES pgferry.migration ON DELETE CASCADE, table_name text NOT NULL,
      changes numeric NOT NULL, PRIMARY KEY (migration, table_name));`;

/** Every column and table of the control schema, to compare shapes. */
async function shape(c: Client): Promise<string[]> {
  const r = await c.query(`SELECT c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END AS col
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'pgferry' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1`);
  return r.rows.map((x) => x.col);
}

let server: LocalServer;
let dbCount = 0;
const clients: Client[] = [];

/** A fresh database and a session on it. */
async function freshDb(): Promise<Client> {
  const uri = await server.createDatabase(`state_${++dbCount}`);
  const c = new Client({ connectionString: uri });
  await c.connect();
  clients.push(c);
  return c;
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(PgferryError);
    return (e as PgferryError).code;
  }
  return "no error";
}

beforeAll(async () => {
  [server] = await startServers(17);
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.end().catch(() => undefined)));
  await server?.stop();
});

describe("control-schema migrations", () => {
  test("a fresh database gets every migration once; running them again changes nothing", async () => {
    const c = await freshDb();
    expect(await controlSchemaVersion(c)).toBe(0);
    await ensureControlSchema(c);
    expect(await controlSchemaVersion(c)).toBe(CONTROL_SCHEMA_VERSION);
    const rows = (await c.query(`SELECT version FROM pgferry.schema_version ORDER BY 1`)).rows.map((x) => x.version);
    expect(rows).toEqual(CONTROL_SCHEMA_MIGRATIONS.map((m) => m.version));
    expect(rows).toEqual(Array.from({ length: CONTROL_SCHEMA_VERSION }, (_, i) => i + 1));
    const before = await shape(c);
    await ensureControlSchema(c);
    expect(await shape(c)).toEqual(before);
    expect((await c.query(`SELECT count(*)::int AS n FROM pgferry.schema_version`)).rows[0].n).toBe(CONTROL_SCHEMA_VERSION);
  });

  test("processes upgrading the same database at once wait for each other (advisory lock): each migration applied once", async () => {
    const first = await freshDb();
    const db = (await first.query(`SELECT current_database() AS d`)).rows[0].d;
    const others = await Promise.all([1, 2, 3].map(async () => {
      const c = new Client({ connectionString: server.uri(db) });
      await c.connect();
      clients.push(c);
      return c;
    }));
    await Promise.all([first, ...others].map((c) => ensureControlSchema(c)));
    expect((await first.query(`SELECT count(*)::int AS n, count(DISTINCT version)::int AS d FROM pgferry.schema_version`)).rows[0])
      .toEqual({ n: CONTROL_SCHEMA_VERSION, d: CONTROL_SCHEMA_VERSION });
  });

  test.each([["the first release", FIRST_RELEASE_SHAPE], ["the last release before versions", LAST_UNVERSIONED_SHAPE]])(
    "a control schema made by %s upgrades to the current shape, its records read back", async (_, oldShape) => {
      const reference = await freshDb();
      await ensureControlSchema(reference);
      const c = await freshDb();
      await c.query(oldShape);
      // A record as start wrote it then (options as they were), in mid-stream.
      await c.query(`INSERT INTO pgferry.migration (name, phase, mode, slot_name, publication, subscription, options, consistent_point, streaming_since)
        VALUES ('old', 'ReadyToCutover', 'stream', 'pgferry_old', 'pgferry_old', 'pgferry_old',
          '{"jobs": 3, "selection": {"schemas": ["public"], "include": [], "exclude": ["public.skip"]}, "replicaIdentityFull": false}', '0/1A2B3C', now())`);
      await c.query(`INSERT INTO pgferry.table_progress (migration, schema_name, table_name, status, rows) VALUES ('old', 'public', 't', 'copied', 42)`);
      await c.query(`INSERT INTO pgferry.schema_entry (migration, section, ordinal, kind, object, sql) VALUES
        ('old', 'preamble', 0, 'PREAMBLE', '-', 'SET x = 1'), ('old', 'cutover', 0, 'FK CONSTRAINT', 'public t t_fk', 'ALTER TABLE …')`);
      const before = (await readMigration(c, "old"))!;   // readers need no upgrade (status is read-only)
      expect(before.replicationPaused).toBe(false);

      await ensureControlSchema(c);
      expect(await controlSchemaVersion(c)).toBe(CONTROL_SCHEMA_VERSION);
      expect(await shape(c)).toEqual(await shape(reference));
      const m = (await readMigration(c, "old"))!;
      expect(m).toMatchObject({ name: "old", phase: "ReadyToCutover", mode: "stream", slot: "pgferry_old", consistentPoint: "0/1A2B3C",
        sourceFrozen: false, replicationPaused: false });
      expect(m.options).toEqual({ jobs: 3, selection: { schemas: ["public"], include: [], exclude: ["public.skip"] }, replicaIdentityFull: false });
      expect(m.applyError).toBeUndefined();
      expect(m.rollbackWindow).toBeUndefined();
      expect(await readTableProgress(c, "old")).toEqual([expect.objectContaining({ schema: "public", table: "t", status: "copied", rows: 42 })]);
      expect(await readPreamble(c, "old")).toBe("SET x = 1");
      // The columns and tables later releases added are usable on the upgraded record.
      expect(await readAppliedLsn(c, "old")).toBe(0x1A2B3Cn);
      await recordApplyError(c, "old", { kind: "divergence", code: "divergence", message: "no row", at: "2026-12-06T00:00:00Z", appliedLsn: "0/1A2B3C" });
      await updateMigration(c, "old", { phase: "CuttingOver", replicationPaused: true, cutoverTimings: { freezeMs: 5 }, freezeSaved: [{ role: null, previous: null }] });
      await updateMigration(c, "old", { rollbackWindow: "opening" });
      expect(await readMigration(c, "old")).toMatchObject({ phase: "CuttingOver", replicationPaused: true, cutoverTimings: { freezeMs: 5 },
        freezeSaved: [{ role: null, previous: null }], rollbackWindow: "opening", applyError: { kind: "divergence", message: "no row" } });
      await saveActivityBaseline(c, "old", new Map([["public.t", 7n]]));
      expect(await readActivityBaseline(c, "old")).toEqual(new Map([["public.t", 7n]]));
      expect(await listSourceChanges(c, "old")).toEqual([]);
      await ensureControlSchema(c); // and again: nothing to do
      expect(await controlSchemaVersion(c)).toBe(CONTROL_SCHEMA_VERSION);
    });

  test("a load resumed on a first-release control schema upgrades it when it records its activity baseline", async () => {
    const c = await freshDb();
    await c.query(FIRST_RELEASE_SHAPE);
    await c.query(`INSERT INTO pgferry.migration (name, phase, mode, slot_name, publication, subscription) VALUES ('r', 'Loading', 'subscription', 's', 'p', 'u')`);
    await saveActivityBaseline(c, "r", new Map([["public.a", 1n], ["public.b", 123456789012345678n]]));
    expect(await controlSchemaVersion(c)).toBe(CONTROL_SCHEMA_VERSION);
    expect(await readActivityBaseline(c, "r")).toEqual(new Map([["public.a", 1n], ["public.b", 123456789012345678n]]));
  });
});

describe("the migration record", () => {
  let c: Client;
  beforeAll(async () => {
    c = await freshDb();
    await ensureControlSchema(c);
  });
  const insert = (name: string) => insertMigration(c, { name, mode: "subscription", slot: `pgferry_${name}`, publication: `pgferry_${name}`,
    subscription: `pgferry_${name}`, options: { jobs: 2, selection: { schemas: [], include: [], exclude: [] } } });

  test("a start's path through the phases is legal, each step recorded", async () => {
    await insert("path");
    const path: Phase[] = ["Loading", "Failed", "Loading", "IndexBuild", "IndexBuild", "ReadyToCutover", "CuttingOver", "VerifyFailed",
      "CuttingOver", "ReadyToCutover", "CuttingOver", "Completed"];
    for (const phase of path) {
      await updateMigration(c, "path", { phase });
      expect((await readMigration(c, "path"))!.phase).toBe(phase);
    }
  });

  test("an illegal transition throws naming both phases, and records nothing of the update", async () => {
    await insert("illegal");
    await updateMigration(c, "illegal", { phase: "Loading" });
    let err: PgferryError | undefined;
    await updateMigration(c, "illegal", { phase: "Completed", error: "should not be written", downtimeMs: 1 }).catch((e) => { err = e; });
    expect(err).toBeInstanceOf(PgferryError);
    expect(err!.code).toBe("illegal_phase_transition");
    expect(err!.message).toContain("phase Loading");
    expect(err!.message).toContain("phase Completed");
    const m = (await readMigration(c, "illegal"))!;
    expect(m.phase).toBe("Loading");
    expect(m.error).toBeUndefined();
    expect(m.downtimeMs).toBeUndefined();
  });

  test("every pair of phases: the write succeeds exactly when the table allows it", async () => {
    await insert("pairs");
    for (const from of PHASES) {
      for (const to of PHASES) {
        await c.query(`UPDATE pgferry.migration SET phase = $2 WHERE name = $1`, ["pairs", from]);
        const got = await code(updateMigration(c, "pairs", { phase: to }));
        expect([from, to, got]).toEqual([from, to, mayFollow(from, to) ? "no error" : "illegal_phase_transition"]);
      }
    }
    // The final phases stay final; going back to loading or schema sync is never allowed.
    expect(PHASE_TRANSITIONS.Completed).toEqual([]);
    expect(PHASE_TRANSITIONS.Aborted).toEqual([]);
    expect(PHASES.filter((p) => p !== "SchemaSync" && mayFollow(p, "SchemaSync"))).toEqual([]);
    expect(mayFollow("ReadyToCutover", "Loading")).toBe(false);
  });

  test("fields other than the phase update without a phase check; a missing record is an error, not silence", async () => {
    await insert("fields");
    await updateMigration(c, "fields", { consistentPoint: "0/10", error: "e" });
    await updateMigration(c, "fields", { error: null });
    expect(await readMigration(c, "fields")).toMatchObject({ consistentPoint: "0/10", error: undefined });
    expect(await code(updateMigration(c, "nobody", { error: "x" }))).toBe("not_found");
    expect(await code(updateMigration(c, "nobody", { phase: "Loading" }))).toBe("not_found");
    expect(await code(mergeMigrationOptions(c, "nobody", { plugin: "wal2json" }))).toBe("not_found");
  });

  test("options are typed: merged, parsed once, and a value this pgferry does not know is refused by name", async () => {
    await insert("opts");
    await mergeMigrationOptions(c, "opts", { plugin: "wal2json", wal2jsonNumericAsString: true, unlogged: "skip", largeObjects: false });
    expect((await readMigration(c, "opts"))!.options).toEqual({ jobs: 2, selection: { schemas: [], include: [], exclude: [] }, plugin: "wal2json",
      wal2jsonNumericAsString: true, unlogged: "skip", largeObjects: false });
    await c.query(`UPDATE pgferry.migration SET options = options || '{"plugin": "decoderbufs"}' WHERE name = 'opts'`);
    let err: PgferryError | undefined;
    await readMigration(c, "opts").catch((e) => { err = e; });
    expect(err?.code).toBe("state_corrupt");
    expect(err?.message).toContain("options.plugin");
    expect(err?.message).toContain("decoderbufs");
    await c.query(`UPDATE pgferry.migration SET options = '{}', mode = 'logical' WHERE name = 'opts'`);
    expect(await code(readMigration(c, "opts"))).toBe("state_corrupt");
  });

  test("a reverse record goes from SchemaSync straight to ReadyToCutover and may be aborted, in the caller's transaction", async () => {
    await c.query("BEGIN");
    await insertMigration(c, { name: "rev", mode: "stream", slot: "s", publication: "p", subscription: "", options: { reverseOf: "fwd", plugin: "pgoutput" } });
    await resetTableProgress(c, "rev", [{ schema: "public", name: "a" }, { schema: "public", name: "b" }], "copied");
    await updateMigration(c, "rev", { phase: "ReadyToCutover", consistentPoint: "0/5" });
    await c.query("COMMIT");
    expect((await readMigration(c, "rev"))!.options.reverseOf).toBe("fwd");
    expect((await loadedTables(c, "rev")).sort()).toEqual(["public.a", "public.b"]);
    await updateMigration(c, "rev", { phase: "Aborted" });
    expect(await code(updateMigration(c, "rev", { phase: "ReadyToCutover" }))).toBe("illegal_phase_transition");
  });
});

describe("the other records", () => {
  test("load progress, schema entries, applied position and counters, and removal of the schema with its last record", async () => {
    const c = await freshDb();
    await ensureControlSchema(c);
    await insertMigration(c, { name: "m", mode: "stream", slot: "s", publication: "p", subscription: "", options: {} });

    await resetTableProgress(c, "m", [{ schema: "public", name: "a", estimatedRows: 10, bytes: 100 }]);
    await resetTableProgress(c, "m", [{ schema: "public", name: "a", estimatedRows: 10, bytes: 100 }, { schema: "x", name: "b" }]);
    await markTablesCopied(c, "m", [{ schema: "public", name: "a", rows: 11, bytes: 120, seconds: 0.5 }]);
    expect(await readTableProgress(c, "m")).toEqual([
      { schema: "public", table: "a", status: "copied", rows: 11, bytes: 120, estimatedRows: 10, estimatedBytes: 100, seconds: 0.5 },
      { schema: "x", table: "b", status: "pending", rows: 0, bytes: 0, estimatedRows: 0, estimatedBytes: 0, seconds: 0 }]);

    await storeEntries(c, "m", "post-data", [{ kind: "INDEX", object: "i1", sql: "CREATE INDEX …", parallel: true }, { kind: "TRIGGER", object: "t1", sql: "CREATE TRIGGER …" }]);
    await storeEntries(c, "m", "post-data", [{ kind: "INDEX", object: "other", sql: "-" }]); // stored once: a re-run keeps them
    await markEntryApplied(c, "m", "post-data", 1);
    expect(await readEntries(c, "m", "post-data")).toEqual([
      { ordinal: 0, kind: "INDEX", object: "i1", sql: "CREATE INDEX …", parallel: true, applied: false },
      { ordinal: 1, kind: "TRIGGER", object: "t1", sql: "CREATE TRIGGER …", parallel: false, applied: true }]);
    expect(await countAppliedEntries(c, "m", "post-data")).toBe(1);
    expect(await readPreamble(c, "m")).toBe("");

    await storeEntries(c, "m", "not-carried", [{ kind: "view", object: "v", sql: JSON.stringify({ reason: "r", fix: "f" }) }]);
    await replaceNotCarried(c, "m", ["large objects"], [{ kind: "large objects", object: "3 large object(s)", reason: "opted out", fix: "copy them" }]);
    await replaceNotCarried(c, "m", ["large objects"], [{ kind: "large objects", object: "4 large object(s)", reason: "opted out", fix: "copy them" }]);
    expect(await readNotCarried(c, "m")).toEqual([{ kind: "view", object: "v", reason: "r", fix: "f" },
      { kind: "large objects", object: "4 large object(s)", reason: "opted out", fix: "copy them" }]);

    // The applier's commit statements, run as it runs them: in its transaction, as text.
    const lit = (v: unknown) => c.escapeLiteral(String(v));
    for (const lsn of [0x100n, 0x200n]) {
      await c.query(["BEGIN", ...appliedPositionSql(lit, "m", lsn, [["public.a", { inserts: 2, updates: 1, deletes: 0, truncates: 0 }],
        ["x.b", { inserts: 0, updates: 0, deletes: 0, truncates: 0 }]]), "COMMIT"].join(";\n"));
    }
    expect(await readAppliedLsn(c, "m")).toBe(0x200n);
    expect(await readApplyStats(c, "m")).toEqual([{ table: "public.a", inserts: 4, updates: 2, deletes: 0, truncates: 0 },
      { table: "x.b", inserts: 0, updates: 0, deletes: 0, truncates: 0 }]);
    expect(await tablesApplied(c, "m")).toEqual(["public.a"]);
    await recordApplyError(c, "m", { kind: "error", code: "apply_failed", message: "boom", at: "now", appliedLsn: "0/200" });
    expect((await readMigration(c, "m"))!.applyError?.message).toBe("boom");
    await c.query(["BEGIN", ...appliedPositionSql(lit, "m", 0x300n, []), "COMMIT"].join(";\n"));
    expect((await readMigration(c, "m"))!.applyError).toBeUndefined(); // a commit clears it

    await insertMigration(c, { name: "n", mode: "subscription", slot: "s2", publication: "p2", subscription: "u2", options: {} });
    expect(await deleteMigration(c, "m")).toBe(true);
    expect(await deleteMigration(c, "m")).toBe(false);
    expect(await readTableProgress(c, "m")).toEqual([]); // cascaded
    expect(await dropControlSchemaIfEmpty(c)).toBe(false); // "n" is still recorded
    await deleteMigration(c, "n");
    expect(await dropControlSchemaIfEmpty(c)).toBe(true);
    expect(await readMigration(c, "n")).toBeUndefined();
    expect(await controlSchemaVersion(c)).toBe(0);
  });
});
