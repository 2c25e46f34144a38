/**
 * Bad input: each case is refused with an error that names the problem and its fix, and leaves nothing
 * behind — no slot, no publication, no subscription, no control schema, no tables on the target.
 */
import { LocalServer } from "../provider/embedded/localServer";
import { migrationOptions, parseEndpoint, PgferryError, startMigration } from "../provider/engine";
import { leftovers, startServers } from "./support/servers";

let s15: LocalServer, s17: LocalServer;

beforeAll(async () => {
  [s15, s17] = await startServers(15, 17);
  for (const s of [s15, s17]) {
    await s.createDatabase("app");
    await s.query(`CREATE TABLE item (id int PRIMARY KEY, v text); INSERT INTO item SELECT g, 'v' || g FROM generate_series(1, 100) g`, "app");
  }
  await s17.createDatabase("empty");
  await s15.createDatabase("empty");
});
afterAll(async () => { await s15?.stop(); await s17?.stop(); });

async function refusal(sourceUri: string, targetUri: string, extra: Parameters<typeof migrationOptions>[0] = {}): Promise<PgferryError> {
  try {
    await startMigration(parseEndpoint(sourceUri, "source"), parseEndpoint(targetUri, "target"), migrationOptions({ name: "bad", ...extra }));
  } catch (e) {
    expect(e).toBeInstanceOf(PgferryError);
    return e as PgferryError;
  }
  throw new Error("start was expected to refuse");
}

async function nothingCreated(source: LocalServer, target: LocalServer, targetDb = "empty") {
  expect(await leftovers(source, target, "app")).toEqual([]);
  expect(await target.query(`SELECT nspname FROM pg_namespace WHERE nspname = 'pgferry'`, targetDb)).toEqual([]);
  expect(await target.query(`SELECT relname FROM pg_class WHERE relname = 'item'`, targetDb)).toEqual([]);
}

test("wrong password: names the user and server, never the password", async () => {
  const e = await refusal(s15.uri("app", "postgres", "not-the-password"), s17.uri("empty"));
  expect(e.code).toBe("auth_failed");
  expect(e.message).toMatch(/password authentication failed for user "postgres" on the source 127\.0\.0\.1:\d+; fix: correct the password/);
  expect(e.message).not.toContain("not-the-password");
  await nothingCreated(s15, s17);
});

test("unreachable host: names host and port and what to check", async () => {
  const e = await refusal(s15.uri("app"), "postgresql://postgres:secret@127.0.0.1:1/app");
  expect(e.code).toBe("unreachable");
  expect(e.message).toMatch(/cannot reach the target 127\.0\.0\.1:1 .*fix: check host and port/);
  expect(e.message).not.toContain("secret");
});

test("wal_level=replica on the source: refused with the ALTER SYSTEM fix", async () => {
  const low = await LocalServer.start({ major: 15, settings: { wal_level: "replica" } });
  try {
    await low.createDatabase("app");
    await low.query(`CREATE TABLE item (id int PRIMARY KEY)`, "app");
    const e = await refusal(low.uri("app"), s17.uri("empty"));
    expect(e.code).toBe("preflight");
    const f = e.findings.find((x) => x.code === "wal_level")!;
    expect(f.message).toContain("wal_level is 'replica'");
    expect(f.fix).toContain("ALTER SYSTEM SET wal_level = logical");
    await nothingCreated(low, s17);
  } finally {
    await low.stop();
  }
});

test("a table without key: refused, listing it, unless --replica-identity-full or excluded", async () => {
  await s15.query(`CREATE TABLE nokey (k int, v text); INSERT INTO nokey VALUES (1, 'a'), (1, 'a')`, "app");
  try {
    const e = await refusal(s15.uri("app"), s17.uri("empty"));
    const f = e.findings.find((x) => x.code === "no_replica_identity")!;
    expect(f.objects).toEqual(["public.nokey"]);
    expect(f.fix).toMatch(/--replica-identity-full.*--exclude/);
    await nothingCreated(s15, s17);
  } finally {
    await s15.query(`DROP TABLE nokey`, "app");
  }
});

test("target older than source (17 → 15): refused", async () => {
  const e = await refusal(s17.uri("app"), s15.uri("empty"));
  const f = e.findings.find((x) => x.code === "target_older")!;
  expect(f.message).toMatch(/target runs PostgreSQL 15, older than the source's 17/);
  await nothingCreated(s17, s15);
});

test("every finding is reported at once", async () => {
  await s15.query(`CREATE TABLE nokey2 (k int)`, "app");
  try {
    // target 'app' already has table item; source has a key-less table
    const e = await refusal(s15.uri("app"), s17.uri("app"));
    expect(e.findings.map((f) => f.code).sort()).toEqual(["no_replica_identity", "target_not_empty"]);
  } finally {
    await s15.query(`DROP TABLE nokey2`, "app");
  }
});

test("bad URIs and options are rejected before connecting", () => {
  expect(() => parseEndpoint("mysql://x", "source")).toThrow(/--source must be a libpq URI/);
  expect(() => parseEndpoint("postgresql://u:pw@h:0/db", "target")).toThrow(/port must be/);
  expect(() => migrationOptions({ name: "Bad Name" })).toThrow(/--name/);
  expect(() => migrationOptions({ jobs: 0 })).toThrow(/--jobs/);
});
