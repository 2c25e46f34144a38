/** PostgreSQL LSNs ("16/B374D848") as bigints, for comparison and arithmetic. */
export function lsnToBigInt(lsn: string): bigint {
  const m = /^([0-9A-Fa-f]+)\/([0-9A-Fa-f]+)$/.exec(lsn.trim());
  if (!m) throw new Error(`not an LSN: ${lsn}`);
  // Halves of at most 8 hex digits (always, as PostgreSQL prints them) go through Number: the stream applier converts two LSNs per transaction.
  if (m[1].length <= 8 && m[2].length <= 8) return (BigInt(parseInt(m[1], 16)) << 32n) | BigInt(parseInt(m[2], 16));
  return (BigInt("0x" + m[1]) << 32n) | BigInt("0x" + m[2]);
}

export function bigIntToLsn(n: bigint): string {
  return `${(n >> 32n).toString(16).toUpperCase()}/${(n & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** a - b in bytes, never negative. */
export function lsnDiff(a: string, b: string): number {
  const d = lsnToBigInt(a) - lsnToBigInt(b);
  return d > 0n ? Number(d) : 0;
}
