/**
 * Security: TLS sslmode=verify-full end to end against a server certificate made here (a test CA, a server
 * certificate with SAN 127.0.0.1/localhost): pgferry's sessions, pg_dump and the target's subscription all
 * verify it; without the CA the connection is refused with the fix named. And a scan: a migration run through
 * the CLI with distinctive passwords, whose every log line, error, status document (--json), metric
 * (/metrics of status --serve) and control-schema row is searched for them.
 */
import { spawn, spawnSync } from "child_process";
import * as crypto from "crypto";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { Client } from "pg";
import { LocalServer } from "../provider/embedded/localServer";
import { plainRefused, startTlsServers } from "./support/servers";
import { parseEndpoint, PgferryError, startMigration, migrationOptions } from "../provider/engine";
import { CLI, ensureBuilt } from "./support/build";
import { until } from "./support/agents";

const haveOpenssl = spawnSync("openssl", ["version"]).status === 0;
if (!haveOpenssl) console.warn("skipping the TLS verify-full test: openssl is not installed");
const maybe = haveOpenssl ? test : test.skip;

let src: LocalServer, tgt: LocalServer, certDir: string, ca: string;
const SRC_PW = `SrcPw-${crypto.randomBytes(9).toString("hex")}`, TGT_PW = `TgtPw-${crypto.randomBytes(9).toString("hex")}`;

function openssl(args: string[]) {
  const r = spawnSync("openssl", args, { encoding: "utf8", cwd: certDir });
  if (r.status !== 0) throw new Error(`openssl ${args.join(" ")}: ${r.stderr}`);
}

beforeAll(async () => {
  if (!haveOpenssl) return;
  ensureBuilt();
  certDir = fs.mkdtempSync(path.join(os.tmpdir(), "pgferry-verify-full-"));
  openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=pgferry test CA", "-keyout", "ca.key", "-out", "ca.crt"]);
  openssl(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr"]);
  fs.writeFileSync(path.join(certDir, "san.cnf"), "subjectAltName = IP:127.0.0.1, DNS:localhost\n");
  openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", "san.cnf",
    "-out", "server.crt"]);
  ca = path.join(certDir, "ca.crt");
  const key = path.join(certDir, "server.key"), crt = path.join(certDir, "server.crt");
  fs.chmodSync(certDir, 0o755);
  fs.chmodSync(key, 0o600);
  fs.chmodSync(ca, 0o644);
  [src, tgt] = await startTlsServers(crt, key);
  await src.query(`CREATE ROLE ferry LOGIN SUPERUSER REPLICATION PASSWORD '${SRC_PW}'`);
  await tgt.query(`CREATE ROLE ferry LOGIN SUPERUSER PASSWORD '${TGT_PW}'`);
  await src.query(`CREATE TABLE acct (id int PRIMARY KEY, n int, note text); INSERT INTO acct SELECT g, g, 'n' || g FROM generate_series(1, 2000) g;
    CREATE TABLE log (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())`, "app");
  // From here on, only TLS connections from loopback: plain ones get no pg_hba entry.
  const hba = path.join(src.dataDir, "pg_hba.conf");
  fs.writeFileSync(hba, fs.readFileSync(hba, "utf8").replace(/^host(\s)/gm, "hostssl$1"));
  await src.query(`SELECT pg_reload_conf()`);
  await plainRefused(src);
}, 120000);
afterAll(async () => {
  await src?.stop(); await tgt?.stop();
  if (certDir) fs.rmSync(certDir, { recursive: true, force: true });
});

const srcUri = (q: string) => `postgresql://ferry:${SRC_PW}@127.0.0.1:${src.port}/app?${q}`;
const tgtUri = () => `postgresql://ferry:${TGT_PW}@127.0.0.1:${tgt.port}/app`;

/** A query on the source over verified TLS (plain connections are refused). */
async function srcQuery(sql: string): Promise<any[]> {
  const c = new Client({ connectionString: `postgresql://postgres:${encodeURIComponent(src.password)}@127.0.0.1:${src.port}/app`,
    ssl: { ca: fs.readFileSync(ca, "utf8") } });
  await c.connect();
  try { return (await c.query(sql)).rows; } finally { await c.end(); }
}

function cli(args: string[], source: string, target = tgtUri()) {
  let out = "", err = "";
  const proc = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, PGFERRY_SOURCE: source, PGFERRY_TARGET: target }, stdio: ["ignore", "pipe", "pipe"] });
  proc.stdout!.on("data", (d) => { out += d; });
  proc.stderr!.on("data", (d) => { err += d; });
  const exit = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)));
  return { proc, out: () => out, err: () => err, exit };
}

maybe("verify-full end to end with the CA; refused without it; no password anywhere pgferry writes", async () => {
  const texts: string[] = [];
  // Without the CA (system CAs only): refused, naming the fix; the error carries no password.
  const refused = await startMigration(parseEndpoint(srcUri("sslmode=verify-full"), "source"), parseEndpoint(tgtUri(), "target"),
    migrationOptions({ name: "nocafile" })).then(() => undefined, (e) => e as PgferryError);
  expect(refused?.code).toBe("tls");
  expect(refused!.message).toMatch(/certificate was not accepted with sslmode=verify-full[\s\S]*sslrootcert=<file>/);
  texts.push(refused!.message);

  const source = srcUri(`sslmode=verify-full&sslrootcert=${encodeURIComponent(ca)}`);
  const run = async (args: string[], code = 0) => {
    const c = cli(args, source);
    const exit = await c.exit;
    texts.push(c.out(), c.err());
    expect({ args, exit, err: exit === code ? "" : c.err() }).toEqual({ args, exit: code, err: "" });
    return c;
  };
  await run(["start", "--name", "sec", "--jobs", "2"]);
  // Every session on the source verified TLS: pgferry's, and the target's walsender connection (subscription mode).
  const sessions = await srcQuery(`SELECT a.backend_type, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s ON s.pid = a.pid
    WHERE a.datname = 'app' AND a.usename = 'ferry'`);
  expect(sessions.some((x) => x.backend_type === "walsender")).toBe(true);
  expect(sessions.every((x) => x.ssl)).toBe(true);
  await srcQuery(`UPDATE acct SET n = n + 1 WHERE id <= 100; INSERT INTO log DEFAULT VALUES`);

  // An error: the agent refuses a subscription-mode migration.
  await run(["agent", "--name", "sec"], 1);
  // A bad password: the error names the user and the fix, never the password given.
  const bad = cli(["status", "--name", "sec", "--json"], source, tgtUri().replace(TGT_PW, `${TGT_PW}x`));
  expect(await bad.exit).not.toBe(0);
  texts.push(bad.out(), bad.err());
  expect(bad.out() + bad.err()).toMatch(/password authentication failed/);

  const st = await run(["status", "--name", "sec", "--json"]);
  expect(JSON.parse(st.out()).phase).toBe("ReadyToCutover");
  // The web monitor: /api/status and /metrics.
  const serve = cli(["status", "--name", "sec", "--serve", "0", "--interval", "0.5"], source);
  let url = "";
  await until("the monitor's URL", async () => !!(url = /(http:\/\/127\.0\.0\.1:\d+\/)/.exec(serve.err())?.[1] ?? ""), 30000);
  await until("metrics", async () => /pgferry_up\{[^}]*\} 1/.test(await (await fetch(url + "metrics")).text()), 30000);
  texts.push(await (await fetch(url + "metrics")).text(), await (await fetch(url + "api/status")).text(), await (await fetch(url)).text());
  serve.proc.kill("SIGTERM");
  expect(await serve.exit).toBe(0);
  texts.push(serve.out(), serve.err());

  await run(["cutover", "--name", "sec", "--json"]);
  const v = await run(["verify", "--name", "sec", "--json"]);
  expect(JSON.parse(v.out()).ok).toBe(true);
  // The control schema's rows, every table of it.
  const tables = await tgt.query(`SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) AS t FROM information_schema.tables
    WHERE table_schema = 'pgferry'`, "app");
  expect(tables.length).toBeGreaterThan(0);
  for (const { t } of tables) texts.push(JSON.stringify(await tgt.query(`SELECT * FROM ${t}`, "app")));
  await run(["cleanup", "--name", "sec", "--json"]);

  const all = texts.join("\n");
  expect(all.length).toBeGreaterThan(1000);
  for (const pw of [SRC_PW, TGT_PW]) expect(all).not.toContain(pw);
  expect(await srcQuery(`SELECT slot_name FROM pg_replication_slots UNION ALL SELECT pubname FROM pg_publication`)).toEqual([]);
  expect(await tgt.query(`SELECT subname FROM pg_subscription`, "app")).toEqual([]);
}, 240000);
