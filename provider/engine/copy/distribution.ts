/**
 * Hyperscale (Citus) as a target: which tables are distributed (by which column), which are reference tables,
 * and which distributed tables are co-located with which (issue #17). Pure: parsing and validating the inputs
 * (--distribute TABLE=COLUMN, --reference TABLE, --colocate TABLE=TABLE; Pulumi's `distribution` object), and the
 * Citus SQL that start runs on the target after pre-data and before the load.
 *
 * Why then: pre-data holds the tables without keys, unique indexes, triggers or foreign keys (pgferry builds those
 * in post-data after the load, and adds foreign keys while streaming), so create_distributed_table meets plain
 * tables; reference tables go first so that no foreign key to them exists yet (one would turn its neighbours into
 * "citus local" tables). Identity columns block create_distributed_table: preflight refuses them with the fix.
 */
import { qualified, quoteLiteral } from "../core/endpoint";
import { PgferryError } from "../core/errors";

/** Table names are "schema.table" (an unqualified name means public.table), as --include takes them. */
export interface Distribution {
  /** Distributed table → its distribution column. */
  distribute: Record<string, string>;
  /** Reference tables (a full copy on every node). */
  reference: string[];
  /** Distributed table → the distributed table it is co-located with (colocate_with). */
  colocate: Record<string, string>;
}

export const NO_DISTRIBUTION: Distribution = { distribute: {}, reference: [], colocate: {} };

export function hasDistribution(d: Distribution | undefined): d is Distribution {
  return !!d && (Object.keys(d.distribute).length > 0 || d.reference.length > 0);
}

/** Every table the distribution names (distributed and reference). */
export function distributionTables(d: Distribution): string[] {
  return [...d.reference, ...Object.keys(d.distribute)];
}

const NAME = /^[^\s.=]+(\.[^\s.=]+)?$/;

function tableName(flag: string, value: string, whole: string, fix: string): string {
  if (!NAME.test(value)) {
    throw new PgferryError("bad_distribution", `${flag} "${whole}": "${value}" is not a table name (schema.table, or table for public.table); fix: ${fix}`);
  }
  return value.includes(".") ? value : `public.${value}`;
}

function pair(flag: string, v: string, shape: string): [string, string] {
  const eq = v.indexOf("=");
  if (eq <= 0 || eq === v.length - 1 || v.indexOf("=", eq + 1) >= 0) {
    throw new PgferryError("bad_distribution", `${flag} "${v}" is not ${shape}; fix: give it as ${flag} ${shape} (e.g. ${flag} ` +
      `${shape === "TABLE=COLUMN" ? "public.orders=customer_id" : "public.order_lines=public.orders"})`);
  }
  return [v.slice(0, eq).trim(), v.slice(eq + 1).trim()];
}

/** The CLI's repeatable flags → a checked Distribution (bad_distribution naming the flag and the fix). */
export function parseDistributionFlags(flags: { distribute?: string[]; reference?: string[]; colocate?: string[] }): Distribution {
  const distribute: Record<string, string> = {};
  for (const v of flags.distribute ?? []) {
    const [t, col] = pair("--distribute", v, "TABLE=COLUMN");
    if (/\s/.test(col)) throw new PgferryError("bad_distribution", `--distribute "${v}": "${col}" is not a column name; fix: give --distribute TABLE=COLUMN`);
    const table = tableName("--distribute", t, v, "give --distribute schema.table=column");
    if (distribute[table] !== undefined && distribute[table] !== col) {
      throw new PgferryError("bad_distribution", `--distribute names ${table} twice, by "${distribute[table]}" and by "${col}"; fix: give one distribution column per table`);
    }
    distribute[table] = col;
  }
  const reference = (flags.reference ?? []).map((v) => tableName("--reference", v.trim(), v, "give --reference schema.table"));
  const colocate: Record<string, string> = {};
  for (const v of flags.colocate ?? []) {
    const [a, b] = pair("--colocate", v, "TABLE=TABLE");
    colocate[tableName("--colocate", a, v, "give --colocate schema.table=schema.other_table")] = tableName("--colocate", b, v, "give --colocate schema.table=schema.other_table");
  }
  return checkDistribution({ distribute, reference: [...new Set(reference)], colocate });
}

/** Pulumi's `distribution` input ({distribute: {table: column}, reference: [table], colocate: {table: table}}) → a checked Distribution. */
export function parseDistributionInput(input: unknown): Distribution {
  if (input === undefined || input === null) return NO_DISTRIBUTION;
  const fix = `give distribution as { distribute: { "schema.table": "column" }, reference: ["schema.table"], colocate: { "schema.table": "schema.other" } }`;
  const bad = (what: string) => new PgferryError("bad_distribution", `distribution: ${what}; fix: ${fix}`);
  if (typeof input !== "object" || Array.isArray(input)) throw bad("not an object");
  const o = input as Record<string, unknown>;
  const unknownKeys = Object.keys(o).filter((k) => !["distribute", "reference", "colocate"].includes(k));
  if (unknownKeys.length) throw bad(`unknown key(s) ${unknownKeys.join(", ")}`);
  const map = (k: string): Record<string, unknown> => {
    const v = o[k] ?? {};
    if (typeof v !== "object" || Array.isArray(v)) throw bad(`${k} is not an object of table → ${k === "distribute" ? "column" : "table"}`);
    return v as Record<string, unknown>;
  };
  const strings = (k: string, m: Record<string, unknown>) => Object.entries(m).map(([a, b]) => {
    if (typeof b !== "string" || !b) throw bad(`${k}["${a}"] is not a non-empty string`);
    return `${a}=${b}`;
  });
  const ref = o.reference ?? [];
  if (!Array.isArray(ref) || ref.some((x) => typeof x !== "string")) throw bad("reference is not a list of table names");
  return parseDistributionFlags({ distribute: strings("distribute", map("distribute")), reference: ref as string[], colocate: strings("colocate", map("colocate")) });
}

/** A table both distributed and reference, a colocation naming a table not distributed, or a colocation cycle: refused with the fix. */
export function checkDistribution(d: Distribution): Distribution {
  const both = d.reference.filter((t) => d.distribute[t] !== undefined);
  if (both.length) {
    throw new PgferryError("bad_distribution", `${both.join(", ")} named by both --distribute and --reference; fix: a table is either ` +
      `distributed or a reference table: drop one of the two`);
  }
  for (const [a, b] of Object.entries(d.colocate)) {
    for (const t of [a, b]) {
      if (d.distribute[t] === undefined) {
        throw new PgferryError("bad_distribution", `--colocate ${a}=${b}: ${t} is not distributed; fix: give --distribute ${t}=COLUMN ` +
          `as well (only distributed tables are co-located)`);
      }
    }
    if (a === b) throw new PgferryError("bad_distribution", `--colocate ${a}=${b} co-locates a table with itself; fix: drop it`);
  }
  colocationOrder(d); // refuses a cycle
  return d;
}

/** Distributed tables, each after the table it is co-located with (colocate_with must name a distributed table). */
function colocationOrder(d: Distribution): string[] {
  const out: string[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = (t: string, path: string[]) => {
    if (state.get(t) === "done") return;
    if (state.get(t) === "visiting") {
      throw new PgferryError("bad_distribution", `--colocate forms a cycle (${[...path, t].join(" → ")}); fix: co-locate every table of ` +
        `the group with one of them (e.g. --colocate B=A --colocate C=A)`);
    }
    state.set(t, "visiting");
    const with_ = d.colocate[t];
    if (with_ !== undefined) visit(with_, [...path, t]);
    state.set(t, "done");
    out.push(t);
  };
  for (const t of Object.keys(d.distribute).sort()) visit(t, []);
  return out;
}

/** "schema.table" → "schema"."table" (names given without quotes are taken as they are spelled). */
export function quotedTable(name: string): string {
  const dot = name.indexOf(".");
  return qualified(name.slice(0, dot), name.slice(dot + 1));
}

/**
 * The Citus statements, in the order they must run: reference tables, then distributed tables, each after the
 * table it is co-located with. Each is guarded by Citus's own catalog (citus_tables), so a re-run of start
 * (killed after some of them) skips the tables already done.
 */
export function distributionStatements(d: Distribution): string[] {
  const guard = (t: string, type: "reference" | "distributed") =>
    `WHERE NOT EXISTS (SELECT 1 FROM citus_tables WHERE table_name = ${quoteLiteral(quotedTable(t))}::regclass AND citus_table_type = '${type}')`;
  const reference = [...d.reference].sort().map((t) => `SELECT create_reference_table(${quoteLiteral(quotedTable(t))}) ${guard(t, "reference")}`);
  const distributed = colocationOrder(d).map((t) => {
    const with_ = d.colocate[t];
    return `SELECT create_distributed_table(${quoteLiteral(quotedTable(t))}, ${quoteLiteral(d.distribute[t])}` +
      `${with_ !== undefined ? `, colocate_with => ${quoteLiteral(quotedTable(with_))}` : ""}) ${guard(t, "distributed")}`;
  });
  return [...reference, ...distributed];
}
