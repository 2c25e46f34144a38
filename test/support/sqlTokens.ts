/**
 * The quoted tokens of a SQL text as PostgreSQL's lexer reads them with standard_conforming_strings on:
 * '…' literals ('' is a quote inside) and "…" identifiers ("" is a quote inside); E'…' strings, dollar
 * quotes and comments are not expected in what pgferry generates and are reported as such. Used by the
 * property tests to check that a value or a name can never end its quotes early: every token read back
 * must be one that was put in.
 */
export interface SqlTokens { literals: string[]; identifiers: string[]; unquoted: string }

export function sqlTokens(sql: string): SqlTokens {
  const literals: string[] = [], identifiers: string[] = [];
  let unquoted = "";
  let i = 0;
  while (i < sql.length) {
    const ch = sql[i];
    if (ch === "'" || ch === '"') {
      let value = "";
      let j = i + 1;
      for (;;) {
        if (j >= sql.length) throw new Error(`unterminated ${ch}…${ch} at ${i} in: ${sql}`);
        if (sql[j] === ch) {
          if (sql[j + 1] === ch) { value += ch; j += 2; continue; }
          break;
        }
        value += sql[j++];
      }
      (ch === "'" ? literals : identifiers).push(value);
      unquoted += ch === "'" ? "L" : "I";
      i = j + 1;
      continue;
    }
    if (sql.startsWith("--", i) || sql.startsWith("/*", i) || (ch === "$" && /^\$[A-Za-z_]*\$/.test(sql.slice(i)))) {
      throw new Error(`a comment or dollar quote outside quotes at ${i} in: ${sql}`);
    }
    unquoted += ch;
    i++;
  }
  return { literals, identifiers, unquoted };
}
