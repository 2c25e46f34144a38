/**
 * A PostgreSQL 13 source (the oldest major pgferry supports) → 17, in both CDC modes: the same scenario
 * as e2e.modes. PostgreSQL 13 rejects the pgoutput `messages` option that pg-logical-replication sends by
 * default; stream mode's START_REPLICATION leaves it out, which this test proves on a real 13.
 * The 13 binaries come from scripts/fetch-pg13.sh (CI runs it); without them the test skips.
 */
import * as fs from "fs";
import * as path from "path";
import { LocalServer } from "../provider/embedded/localServer";
import { ROOT } from "./support/build";
import { modeEndToEnd, MODES, prepareModeDatabases } from "./support/e2eScenario";
import { startServerSet } from "./support/servers";

const binDir = process.env.PGFERRY_PG13_BIN ?? path.join(ROOT, ".cache/pg13/native/bin");
const have = fs.existsSync(path.join(binDir, "postgres"));
if (!have) {
  // eslint-disable-next-line no-console
  console.warn(`skipping the PostgreSQL 13 source tests: no binaries in ${binDir}; run scripts/fetch-pg13.sh (or set PGFERRY_PG13_BIN)`);
}

let src: LocalServer, tgt: LocalServer;

(have ? describe : describe.skip)("PostgreSQL 13 source", () => {
  beforeAll(async () => {
    [src, tgt] = await startServerSet([{ major: 13, binDir }, { major: 17 }]);
    await prepareModeDatabases(src, tgt);
  });
  afterAll(async () => { await src?.stop(); await tgt?.stop(); });

  test.each(MODES)("mode %s, 13 → 17 under concurrent writes: start, stream, cutover, verify equal, nothing left", (mode) => modeEndToEnd(src, tgt, mode));
});
