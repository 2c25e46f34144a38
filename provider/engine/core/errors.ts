/**
 * Errors the engine raises on purpose. Every one names the problem and its fix, and never carries a
 * password or connection string (messages go to logs, CLI output and Pulumi state).
 */
export interface Finding {
  /** Stable machine-readable code, e.g. "wal_level", "no_replica_identity". */
  code: string;
  severity: "error" | "warning";
  /** Which server the finding is about. */
  server: "source" | "target" | "local";
  message: string;
  fix: string;
  /** Objects involved (qualified table names, settings…), for --json consumers. */
  objects?: string[];
}

export class PgferryError extends Error {
  constructor(
    public readonly code: string,
    message: string,
    public readonly findings: Finding[] = [],
  ) {
    super(message);
    this.name = "PgferryError";
  }
}

/** One line per finding, errors first: what the CLI prints on refusal. */
export function formatFindings(findings: Finding[]): string {
  const order = (f: Finding) => (f.severity === "error" ? 0 : 1);
  return [...findings]
    .sort((a, b) => order(a) - order(b))
    .map((f) => `  ${f.severity === "error" ? "✗" : "!"} [${f.server}] ${f.message}\n      fix: ${f.fix}`)
    .join("\n");
}

/**
 * Test-only fault injection: throws when the environment variable PGFERRY_TEST_FAIL_AT names this point
 * (preflight, pre-data, load, post-data, cdc-setup, foreign-keys, foreign-key-added). Used by test/start.resume.test.ts and
 * test/cutover.downtime.test.ts where no real cause
 * can fail that phase on demand; unset in normal use, when this does nothing.
 */
export function testFailpoint(point: string): void {
  if (process.env.PGFERRY_TEST_FAIL_AT === point) {
    throw new PgferryError("test_failpoint", `injected failure at ${point} (PGFERRY_TEST_FAIL_AT=${point}, a test setting)`);
  }
}
