/**
 * End to end on real servers, PostgreSQL 15 → 17, in both CDC modes (subscription: the target applies;
 * stream: pgferry applies), each in its own database: the scenario in support/e2eScenario.ts.
 */
import { LocalServer } from "../provider/embedded/localServer";
import { modeEndToEnd, MODES, prepareModeDatabases } from "./support/e2eScenario";
import { startServers } from "./support/servers";

let src: LocalServer, tgt: LocalServer;

beforeAll(async () => {
  [src, tgt] = await startServers(15, 17);
  await prepareModeDatabases(src, tgt);
});
afterAll(async () => { await src?.stop(); await tgt?.stop(); });

test.each(MODES)("mode %s, 15 → 17 under concurrent writes: start, stream, cutover, verify equal, nothing left", (mode) => modeEndToEnd(src, tgt, mode));
