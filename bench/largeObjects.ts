/**
 * Large-object benchmark (not a test), PostgreSQL 15 → 17 embedded servers on loopback:
 *  (a) load: N large objects of S bytes each (random bytes, so TOAST-free pg_largeobject pages hold them
 *      as the application wrote them) copied by copyLargeObjects with --jobs workers: objects/s and MB/s;
 *  (b) cutover step: K of them changed on the source (lo_put of 16 bytes at a random offset), then the
 *      cutover's syncLargeObjects (hash both sides, copy the K, unlink none): its time, and the same step
 *      with nothing changed (the cost of the comparison alone, paid by every cutover).
 *
 *   node dist/bench/largeObjects.js [--objects 2000] [--size 65536] [--changed 100] [--jobs 4] [--json]
 */
import { Command } from "commander";
import { LocalServer } from "../provider/embedded/localServer";
import { parseEndpoint } from "../provider/engine";
import { copyLargeObjects, syncLargeObjects } from "../provider/engine/copy/largeObjects";

const opts = new Command("largeObjects")
  .option("--objects <n>", "large objects on the source", (v) => Number(v), 2000)
  .option("--size <bytes>", "bytes per object", (v) => Number(v), 65536)
  .option("--changed <n>", "objects changed before the cutover step", (v) => Number(v), 100)
  .option("--jobs <n>", "workers", (v) => Number(v), 4)
  .option("--json", "print JSON")
  .parse(process.argv).opts();

async function main() {
  const [src, tgt] = await Promise.all([LocalServer.start({ major: 15 }), LocalServer.start({ major: 17 })]);
  try {
    await src.createDatabase("lob");
    await tgt.createDatabase("lob");
    const source = parseEndpoint(src.uri("lob"), "source"), target = parseEndpoint(tgt.uri("lob"), "target");
    // gen_random_bytes is pgcrypto's; plain SQL random bytes: md5 digests of random() decoded, 16 bytes each.
    const per = Math.ceil(opts.size / 16);
    await src.query(`SELECT lo_from_bytea(0, substr((SELECT string_agg(decode(md5(random()::text || k), 'hex'), ''::bytea) FROM generate_series(1, ${per}) k), 1, ${opts.size}))
      FROM generate_series(1, ${opts.objects}) g`, "lob");
    await src.query(`CHECKPOINT`);
    const total = opts.objects * opts.size;
    const load = await copyLargeObjects(source, target, undefined, opts.jobs);
    const idle = Date.now();
    const none = await syncLargeObjects(source, target, opts.jobs);
    const idleMs = Date.now() - idle;
    await src.query(`SELECT lo_put(oid, (random() * ${Math.max(0, opts.size - 16)})::bigint, decode(md5(random()::text), 'hex'))
      FROM (SELECT oid FROM pg_largeobject_metadata ORDER BY random() LIMIT ${opts.changed}) x`, "lob");
    const t = Date.now();
    const sync = await syncLargeObjects(source, target, opts.jobs);
    const syncMs = Date.now() - t;
    const out = {
      objects: opts.objects, size: opts.size, jobs: opts.jobs, totalMB: +(total / 1048576).toFixed(1),
      load: { seconds: +load.seconds.toFixed(2), objectsPerSec: Math.round(load.objects / load.seconds), MBps: +(load.bytes / 1048576 / load.seconds).toFixed(1) },
      cutoverUnchanged: { ms: idleMs, copied: none.copied },
      cutoverChanged: { changed: opts.changed, ms: syncMs, copied: sync.copied, unlinked: sync.unlinked },
    };
    if (opts.json) process.stdout.write(JSON.stringify(out) + "\n");
    else {
      process.stdout.write(`${opts.objects} large objects × ${opts.size} bytes (${out.totalMB} MB), ${opts.jobs} jobs, PostgreSQL 15 → 17\n` +
        `  load: ${out.load.seconds} s, ${out.load.objectsPerSec} objects/s, ${out.load.MBps} MB/s\n` +
        `  cutover step, nothing changed: ${idleMs} ms\n` +
        `  cutover step, ${opts.changed} changed: ${syncMs} ms (${sync.copied} copied)\n`);
    }
  } finally {
    await Promise.all([src.stop(), tgt.stop()]);
  }
}

main().catch((e) => { process.stderr.write(`${e.stack ?? e}\n`); process.exitCode = 1; });
