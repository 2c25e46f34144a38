/**
 * The output plugins pgferry streams with, each one decoder (./decoder.ts). A new plugin is one file
 * implementing Decoder, added here.
 */
import type { Client } from "pg";
import { PgferryError } from "../../core/errors";
import type { OutputPlugin } from "../../core/options";
import type { Decoder, FenceChanges } from "./decoder";
import { pgoutputDecoder } from "./pgoutput";
import { readStreamSetup, wal2jsonDecoder } from "./wal2json";

const DECODERS: Record<OutputPlugin, Decoder> = { pgoutput: pgoutputDecoder, wal2json: wal2jsonDecoder };

/** The decoder of an output plugin (pgoutput when none is given: records made before the option existed). */
export function decoderFor(plugin: OutputPlugin | undefined): Decoder {
  const d = DECODERS[plugin ?? "pgoutput"];
  if (!d) {
    throw new PgferryError("bad_plugin", `unknown output plugin ${JSON.stringify(plugin)}; fix: use one of ${Object.keys(DECODERS).join(", ")}`);
  }
  return d;
}

/**
 * Changes to migrated tables that committed at or after the fence and were not applied: read from the
 * slot itself (peeked, not consumed) with the migration's own plugin, so only changes that would be
 * replicated count — our own records, autovacuum and checkpoints do not. Empty = the fence held.
 */
export async function changesAfterFence(src: Client, tgt: Client, migration: string, slot: string, publication: string, fence: string,
  uptoChanges?: number): Promise<FenceChanges> {
  const setup = await readStreamSetup(tgt, migration);
  return decoderFor(setup.plugin).changesAfterFence(src, tgt, setup, slot, publication, fence, uptoChanges);
}

export type { Decoder, DecoderProbe, DecoderSession, FenceChanges, StreamSetup } from "./decoder";
export type { Change, ChangeRelation, RowChange } from "./change";
