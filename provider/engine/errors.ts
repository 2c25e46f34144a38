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
