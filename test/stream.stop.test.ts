/**
 * StreamApplier.stop() arriving while run() is still setting up (issue 15, the rare hang after a whole test run):
 * a stop that came while the decoder opened closed what existed, then run() went on to start the replication
 * stream — never consumed, never stopped, its ping and watchdog intervals keeping the process alive for good and
 * the slot held. The window is hit exactly: the test calls stop() from inside the (real) decoder's open.
 * Real servers 15 → 17.
 */
import { createHook } from "async_hooks";
import { LocalServer } from "../provider/embedded/localServer";
import { cleanupMigration, migrationOptions, parseEndpoint, startMigration } from "../provider/engine";
import { lsnToBigInt } from "../provider/engine/core/lsn";
import { objectNames } from "../provider/engine/core/options";
import { pgoutputDecoder } from "../provider/engine/cdc/decoders/pgoutput";
import { StreamApplier } from "../provider/engine/cdc/stream/stream";
import { leftovers, startServers } from "./support/servers";

let src: LocalServer, tgt: LocalServer;
const db = "stoprace", name = "stoprace";
beforeAll(async () => {
  [src, tgt] = await startServers(15, 17);
  await src.createDatabase(db); await tgt.createDatabase(db);
  await src.query(`CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)`, db);
});
afterAll(async () => { await src?.stop(); await tgt?.stop(); });

/**
 * Timers created while `fn` runs that are still pending afterwards (an interval never cleared, a timeout not yet
 * fired). Counting the process's active timers before and after instead is noisy: a pool's idle timer from the start
 * may expire meanwhile (seen in CI: 3 before, 2 after).
 */
async function timersLeftBy(fn: () => Promise<void>): Promise<string[]> {
  // Node's Timeout: _destroyed once cleared or fired, _repeat set for an interval.
  const made: { timer: { _destroyed?: boolean; _repeat?: unknown }; stack: string }[] = [];
  const hook = createHook({
    init(_id, type, _trigger, resource) {
      if (type === "Timeout") made.push({ timer: resource as never, stack: new Error().stack ?? "" });
    },
  }).enable();
  try { await fn(); } finally { hook.disable(); }
  await new Promise((r) => setImmediate(r));
  return made.filter((m) => !m.timer._destroyed).map((m) => `${m.timer._repeat ? "interval" : "timeout"} from ${m.stack.split("\n").filter((l) => /^\s+at /.test(l) && !l.includes("node:internal")).slice(1, 4).map((l) => l.trim()).join(" < ")}`);
}

test("stop() while the decoder opens: run() ends without starting the stream (no timer left, the slot free)", async () => {
  const source = parseEndpoint(src.uri(db), "source"), target = parseEndpoint(tgt.uri(db), "target");
  await startMigration(source, target, migrationOptions({ name, mode: "stream", jobs: 1 }));
  const names = objectNames(name);
  const applier = new StreamApplier(source, target, { migration: name, slot: names.slot, publication: names.publication });
  const open = pgoutputDecoder.open;
  pgoutputDecoder.open = async (...args: Parameters<typeof open>) => { await applier.stop(); return open.apply(pgoutputDecoder, args); };
  let left: string[];
  try {
    left = await timersLeftBy(async () => { await applier.run(); });
  } finally {
    pgoutputDecoder.open = open;
  }
  // Nothing of the applier is left: no ping or watchdog interval (they would keep the process alive), no walsender.
  expect(left).toEqual([]);
  expect(await src.query(`SELECT active FROM pg_replication_slots WHERE slot_name = '${names.slot}'`)).toEqual([{ active: false }]);
  // The slot is free for the next consumer: an applier up to now takes it and ends.
  const next = new StreamApplier(source, target, { migration: name, slot: names.slot, publication: names.publication,
    until: lsnToBigInt((await src.query(`SELECT pg_current_wal_lsn()::text AS l`, db))[0].l) });
  await next.run();

  await cleanupMigration(source, target, name);
  expect(await leftovers(src, tgt, db)).toEqual([]);
});
