/**
 * sslmode is honoured end to end: a source that accepts only TLS connections (hostssl in pg_hba, a
 * self-signed certificate made here with openssl), migrated with sslmode=require — pgferry's sessions,
 * pg_dump, the replication connection and the target's subscription all encrypted.
 */
import { spawnSync } from "child_process";
import { Client } from "pg";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { LocalServer } from "../provider/embedded/localServer";
import { plainRefused, startTlsServers } from "./support/servers";
import {
  cleanupMigration, cutoverMigration, migrationOptions, parseEndpoint, startMigration, verifyMigration,
} from "../provider/engine";

const haveOpenssl = spawnSync("openssl", ["version"]).status === 0;
if (!haveOpenssl) console.warn("skipping the TLS test: openssl is not installed");
const maybe = haveOpenssl ? test : test.skip;

let src: LocalServer, tgt: LocalServer, certDir: string;
beforeAll(async () => {
  if (!haveOpenssl) return;
  certDir = fs.mkdtempSync(path.join(os.tmpdir(), "pgferry-tls-"));
  const key = path.join(certDir, "server.key"), crt = path.join(certDir, "server.crt");
  const r = spawnSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
    "-keyout", key, "-out", crt], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(r.stderr);
  fs.chmodSync(certDir, 0o755);
  fs.chmodSync(key, 0o600);
  [src, tgt] = await startTlsServers(crt, key);
  // Only TLS connections from loopback: plain ones get no pg_hba entry.
  const hba = path.join(src.dataDir, "pg_hba.conf");
  fs.writeFileSync(hba, fs.readFileSync(hba, "utf8").replace(/^host(\s)/gm, "hostssl$1"));
  await src.query(`SELECT pg_reload_conf()`);
  await plainRefused(src);
});
afterAll(async () => {
  await src?.stop(); await tgt?.stop();
  if (certDir) fs.rmSync(certDir, { recursive: true, force: true });
});

maybe("sslmode=require end to end; without it the source refuses", async () => {
  const tls = `${src.uri("app")}?sslmode=require`;
  const admin = new Client({ connectionString: tls.replace("sslmode=require", "sslmode=no-verify") });
  admin.on("error", () => undefined);
  await admin.connect();
  await admin.query(`CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g`);

  // Plain connection: refused by pg_hba (no hostnossl rule), with the pg_hba fix named.
  await expect(startMigration(parseEndpoint(src.uri("app"), "source"), parseEndpoint(tgt.uri("app"), "target"),
    migrationOptions({ name: "plain" }))).rejects.toThrow(/refused an unencrypted connection .*fix: add \?sslmode=require to --source/);

  const source = parseEndpoint(tls, "source"), target = parseEndpoint(tgt.uri("app"), "target");
  const started = await startMigration(source, target, migrationOptions({ name: "tls" }));
  expect(started.phase).toBe("ReadyToCutover");
  // Every session on the source is encrypted, including the target's walsender connection.
  const sessions = (await admin.query(`SELECT a.application_name, a.backend_type, s.ssl FROM pg_stat_activity a
    JOIN pg_stat_ssl s ON s.pid = a.pid WHERE a.datname = 'app' AND a.pid <> pg_backend_pid()`)).rows;
  expect(sessions.some((x) => x.backend_type === "walsender")).toBe(true);
  expect(sessions.every((x) => x.ssl)).toBe(true);

  await admin.query(`UPDATE t SET v = 'tls' WHERE id <= 10`);
  await cutoverMigration(source, target, { name: "tls", freezeWrites: false, timeoutSec: 60, jobs: 2 });
  expect((await verifyMigration(source, target)).problems).toEqual([]);
  await cleanupMigration(source, target, "tls");
  expect((await admin.query(`SELECT slot_name FROM pg_replication_slots UNION ALL SELECT pubname FROM pg_publication`)).rows).toEqual([]);
  await admin.end();
  expect(await tgt.query(`SELECT subname FROM pg_subscription`, "app")).toEqual([]);
});
