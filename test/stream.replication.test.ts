/**
 * pgferry's own replication client (provider/engine/cdc/stream/replication.ts) against a real walsender,
 * on the rules exactly-once rests on (../shared/notes/cdc.md §2.3, the traps of the library it replaced):
 *  - a status update confirms exactly the position given: acknowledging the end of transaction 1 leaves
 *    transaction 2 in the slot (the library's +1 skipped it);
 *  - nothing is confirmed unless the applier says so (no timer acknowledges what was merely received);
 *  - flow control: while a payload is in hand nothing else is handed over, and the queue drains in order;
 *  - a handler that throws stops the stream (reported once) instead of moving on.
 */
import { Client } from "pg";
import { LocalServer } from "../provider/embedded/localServer";
import type { ChangeCommit } from "../provider/engine/cdc/decoders/change";
import { decoderFor } from "../provider/engine/cdc/decoders";
import { ReplicationStream } from "../provider/engine/cdc/stream/replication";
import { clientConfig, parseEndpoint } from "../provider/engine/core/endpoint";
import { bigIntToLsn, lsnToBigInt } from "../provider/engine/core/lsn";
import { startServers } from "./support/servers";
import { until } from "./support/agents";

let src: LocalServer | undefined;
let c: Client;

beforeAll(async () => {
  [src] = await startServers(15);
  await src.createDatabase("app");
  c = await src.client("app");
  await c.query(`CREATE TABLE t (id int PRIMARY KEY, v text); CREATE PUBLICATION pub FOR TABLE t`);
});
afterAll(async () => {
  await c?.query(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots`).catch(() => undefined);
  await c?.end();
  await src?.stop();
});

const confirmed = async (slot: string) => (await c.query(`SELECT confirmed_flush_lsn::text AS l FROM pg_replication_slots WHERE slot_name = $1`,
  [slot])).rows[0].l as string;
/** The walsender ends a moment after its client: wait for the slot to be free, then drop it. */
const drop = async (slot: string) => {
  await until(`slot ${slot} released`, async () => !(await c.query(`SELECT active FROM pg_replication_slots WHERE slot_name = $1`, [slot])).rows[0].active, 30000);
  await c.query(`SELECT pg_drop_replication_slot($1)`, [slot]);
};
const pending = async (slot: string) => Number((await c.query(`SELECT count(*) AS n FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
  'proto_version', '1', 'publication_names', 'pub')`, [slot])).rows[0].n);

async function open(slot: string, onChange: (commits: ChangeCommit[], inHand: () => number) => Promise<void> | void, onError: (e: unknown) => void) {
  const session = await decoderFor("pgoutput").open(parseEndpoint(src!.uri("app"), "source"), undefined as never, "pub");
  const commits: ChangeCommit[] = [];
  let inHand = 0;
  const stream: ReplicationStream = new ReplicationStream(clientConfig(parseEndpoint(src!.uri("app"), "source")), {
    onData: async (payload) => {
      inHand++;
      try {
        for (const m of await session.decode(payload)) if (m.tag === "commit") commits.push(m);
        await onChange(commits, () => inHand);
      } finally { inHand--; }
    },
    onKeepalive: () => undefined,
    onError,
  });
  const ended = stream.run(session.startReplication(slot, "0/0"));
  return { stream, commits, ended };
}

test("a status update confirms exactly the given position; nothing else is confirmed", async () => {
  const start = (await c.query(`SELECT lsn::text AS l FROM pg_create_logical_replication_slot('exact', 'pgoutput')`)).rows[0].l as string;
  await c.query(`INSERT INTO t VALUES (1, 'a')`);
  await c.query(`INSERT INTO t VALUES (2, 'b')`);
  const errors: unknown[] = [];
  const overlap: number[] = [];
  const s = await open("exact", async (_commits, inHand) => {
    overlap.push(inHand());
    await new Promise((r) => setTimeout(r, 5)); // a slow handler: nothing more may be handed over meanwhile
  }, (e) => errors.push(e));
  await until("both commits decoded", async () => s.commits.length === 2, 30000);
  expect(Math.max(...overlap)).toBe(1);
  expect(lsnToBigInt(s.commits[0].commitEndLsn!)).toBeLessThan(lsnToBigInt(s.commits[1].commitEndLsn!));
  // Received, not acknowledged: the slot has not moved (the library's timer would have confirmed it).
  await new Promise((r) => setTimeout(r, 1500));
  expect(await confirmed("exact")).toBe(start);
  const end1 = lsnToBigInt(s.commits[0].commitEndLsn!);
  s.stream.sendStatus(end1, true);
  await until("the first commit confirmed", async () => lsnToBigInt(await confirmed("exact")) === end1, 30000);
  await s.stream.close();
  await s.ended;
  expect(errors).toEqual([]);
  // Exactly the end of transaction 1: transaction 2 is still in the slot (B, R, I, C).
  expect(bigIntToLsn(lsnToBigInt(await confirmed("exact")))).toBe(bigIntToLsn(end1));
  await until("the slot released", async () => !(await c.query(`SELECT active FROM pg_replication_slots WHERE slot_name = 'exact'`)).rows[0].active, 30000);
  expect(await pending("exact")).toBe(4);
  await drop("exact");
});

test("a handler that throws stops the stream, reported once, nothing after it handed over", async () => {
  await c.query(`SELECT pg_create_logical_replication_slot('fails', 'pgoutput')`);
  await c.query(`INSERT INTO t VALUES (3, 'c')`);
  await c.query(`INSERT INTO t VALUES (4, 'd')`);
  const errors: unknown[] = [];
  let calls = 0;
  const s = await open("fails", () => { calls++; throw new Error("apply failed"); }, (e) => errors.push(e));
  await until("the failure reported", async () => errors.length > 0, 30000);
  await c.query(`INSERT INTO t VALUES (5, 'e')`); // more to stream: none of it may reach the failed handler
  await new Promise((r) => setTimeout(r, 1000));
  expect(errors.map((e) => (e as Error).message)).toEqual(["apply failed"]);
  expect(calls).toBe(1);
  await s.stream.close();
  await s.ended;
  await drop("fails");
});
