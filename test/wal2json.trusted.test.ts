/**
 * PostgreSQL builds that only let the output plugins listed in output_plugin_libraries be used (Debian's
 * 15.20 here; default "pgoutput, test_decoding") refuse wal2json even where it is installed: preflight names
 * the setting and the fix, and the fix works (a reload, no restart). Skips where the server has no such
 * setting or wal2json is not installed.
 */
import { spawnSync } from "child_process";
import * as path from "path";
import { LocalServer } from "../provider/embedded/localServer";
import { parseEndpoint, preflight } from "../provider/engine";
import { connect } from "../provider/engine/core/endpoint";
import { startServers, SYSTEM_PG15, wal2jsonMissing } from "./support/servers";

const missing = wal2jsonMissing() ?? (/^output_plugin_libraries\t/m.test(spawnSync(path.join(SYSTEM_PG15, "postgres"), ["--describe-config"],
  { encoding: "utf8" }).stdout ?? "") ? undefined : "the source server has no output_plugin_libraries setting");
if (missing) console.warn(`skipping wal2json.trusted: ${missing}`);
const maybe = missing ? test.skip : test;

let src: LocalServer | undefined, tgt: LocalServer | undefined;
afterAll(async () => { await src?.stop(); await tgt?.stop(); });

maybe("wal2json installed but not a trusted output plugin: preflight names output_plugin_libraries and the fix, which works", async () => {
  [src, [tgt]] = await Promise.all([LocalServer.start({ major: 15, binDir: SYSTEM_PG15 }), startServers(17)]);
  await src.createDatabase("app");
  await src.query(`CREATE TABLE t (id int PRIMARY KEY)`, "app");
  const source = parseEndpoint(src.uri("app"), "source"), target = parseEndpoint(tgt.uri("postgres"), "target");
  const run = async () => {
    const [s, t] = [await connect(source), await connect(target)];
    try {
      return await preflight(s, t, source, target, { selection: { schemas: [], include: [], exclude: [] }, replicaIdentityFull: false,
        resuming: false, slotName: "pgferry_x", mode: "stream", plugin: "wal2json" });
    } finally { await s.end(); await t.end(); }
  };
  const before = await run();
  const f = before.findings.find((x) => x.code === "wal2json_not_trusted");
  expect(f?.fix).toBe(`on the source: ALTER SYSTEM SET output_plugin_libraries = 'pgoutput', 'test_decoding', 'wal2json'; SELECT pg_reload_conf(); (no restart needed)`);
  // The fix as printed, one statement at a time (ALTER SYSTEM cannot run inside a multi-statement query's transaction).
  for (const stmt of f!.fix.replace(/^on the source: /, "").replace(/ \(no restart needed\)$/, "").split(/;\s*/).filter(Boolean)) await src.query(stmt, "app");
  const after = await run();
  expect(after.findings.filter((x) => x.code.startsWith("wal2json"))).toEqual([]);
  expect(after.ok).toBe(true);
});
