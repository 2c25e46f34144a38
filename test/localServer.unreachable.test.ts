/**
 * Issue 9, case 8: run as root from a checkout the OS user postgres cannot enter (a clone in /root, mode
 * 0700), initdb failed with EACCES, so the demo and every test did. Simulated with a copy of the
 * embedded PostgreSQL 15 installation in a root-owned 0700 folder: LocalServer must still start a server
 * (from a copy it makes where postgres can reach it). Only meaningful as root; skips otherwise.
 */
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { binariesReachableBy, embeddedBinDir, LocalServer } from "../provider/embedded/localServer";

const root = typeof process.getuid === "function" && process.getuid() === 0;
if (!root) console.warn("skipping localServer.unreachable: only root runs the servers as another OS user (postgres)");
const maybe = root ? test : test.skip;

let privateDir: string | undefined, copy: string | undefined, server: LocalServer | undefined;
afterAll(async () => {
  await server?.stop();
  if (privateDir) fs.rmSync(privateDir, { recursive: true, force: true });
  if (copy) fs.rmSync(copy, { recursive: true, force: true });
});

maybe("a PostgreSQL installation inside a 0700 root-owned folder still starts a server", async () => {
  privateDir = fs.mkdtempSync(path.join(os.tmpdir(), "pgferry-private-checkout-"));
  fs.chmodSync(privateDir, 0o700);
  const install = path.join(privateDir, "native");
  fs.cpSync(path.dirname(embeddedBinDir(15)), install, { recursive: true, verbatimSymlinks: true });
  const binDir = path.join(install, "bin");
  server = await LocalServer.start({ major: 15, binDir });
  expect(await server.query(`SELECT current_setting('server_version_num')::int / 10000 AS major`)).toEqual([{ major: 15 }]);
  // It runs from a copy the postgres user can reach (made once, reused).
  const uid = Number(require("child_process").execFileSync("id", ["-u", "postgres"]).toString());
  const gid = Number(require("child_process").execFileSync("id", ["-g", "postgres"]).toString());
  copy = path.dirname(binariesReachableBy(binDir, { uid, gid }, 15));
  expect(copy.startsWith(os.tmpdir())).toBe(true);
  expect(copy).not.toContain(privateDir);
});
