/**
 * The cutover's fence: a WAL position such that every transaction the source shows as committed ended at or before it.
 *
 * Not pg_current_wal_lsn(): that is how far WAL was WRITTEN, and an asynchronous commit (synchronous_commit = off, a
 * common setting for busy applications) is visible to every new snapshot as soon as its record is inserted, before the
 * WAL writer writes it (up to 3 × wal_writer_delay later). A fence read from the written position lay before such a
 * commit; the slot decodes only flushed WAL, so the after-fence check did not see it either; and the gate then compared
 * a source that shows it with a target that never got it — "contents differ" or a row count off, for a change that was
 * not lost. The insert position covers every inserted record; the drain then waits (as for any fence) until the
 * walsender has decoded up to it, which it does once the WAL writer has flushed it.
 *
 * The insert position points where the NEXT record would start: when the last record ended exactly at a page
 * boundary, that is past the next page's header (24 bytes; 40 on a segment's first page), a position no record ends
 * at and no consumer would ever report on a quiet (frozen) source. The fence is the end of the last record, so that
 * header is taken off (no record ends right after a page header: a record continued onto a page has data there).
 */
import { Client } from "pg";
import { bigIntToLsn, lsnToBigInt } from "../core/lsn";

/** MAXALIGN'd sizes of PostgreSQL's WAL page headers (XLogPageHeaderData, XLogLongPageHeaderData) on 64-bit platforms. */
const SHORT_PAGE_HEADER = 24n, LONG_PAGE_HEADER = 40n;

export async function readFence(src: Client): Promise<string> {
  // Pages and segments are aligned on the LSN itself: the offset within the segment is the LSN modulo its size.
  const r = (await src.query(`SELECT pg_current_wal_insert_lsn()::text AS l, current_setting('wal_block_size')::int AS bs,
      pg_size_bytes(current_setting('wal_segment_size'))::text AS seg`)).rows[0];
  const lsn = lsnToBigInt(r.l);
  return bigIntToLsn(lsn - pageHeaderBefore(Number(lsn % BigInt(r.seg)), r.bs as number));
}

/** The bytes of page header just before an insert position at this offset within its WAL segment (0 if it is not right after one). */
export function pageHeaderBefore(offsetInSegment: number, blockSize: number): bigint {
  if (offsetInSegment === Number(LONG_PAGE_HEADER)) return LONG_PAGE_HEADER;
  if (offsetInSegment > blockSize && offsetInSegment % blockSize === Number(SHORT_PAGE_HEADER)) return SHORT_PAGE_HEADER;
  return 0n;
}
