/**
 * The one spec of options and outputs (provider/engine/core/optionSpec.ts) and the typed error codes: what is
 * generated from them stays generated (docs/cli.md, the CLI's options, the Pulumi inputs, defaults and outputs),
 * the flags scripts rely on stay exactly as they are, and errors reach `--json` as {code, message, fix}.
 * No servers: the CLI is run only where it fails before connecting.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { CLI, ensureBuilt, ROOT } from "./support/build";
import { buildProgram } from "../provider/cli/main";
import { COMMANDS, MIGRATION_INPUTS, MIGRATION_OUTPUTS, SETTINGS } from "../provider/engine/core/optionSpec";
import { ERROR_CODES, fixOf, PgferryError } from "../provider/engine/core/errors";
import { CDC_MODES, migrationOptions, OUTPUT_PLUGINS, UNLOGGED_HANDLING } from "../provider/engine/core/options";
import { VERIFY_MODES } from "../provider/engine/cutover/cutover";
import { INPUT_KEYS, pickInputs, REPLACE_ON, toOutputs } from "../provider/resources/migrationHandlers";

beforeAll(() => ensureBuilt());

/**
 * Every command's flags with their defaults, as scripts call them today: a contract. A change here is a change
 * of the CLI's interface and must be made on purpose (and named in the release notes).
 */
const CONTRACT: Record<string, [flags: string, defaultValue?: unknown][]> = {
  start: [["--source <uri>"], ["--target <uri>"], ["--name <name>", "main"], ["--database <name>", []], ["--all-databases"], ["--mode <mode>", "subscription"], ["--plugin <plugin>", "pgoutput"], ["--ddl <how>", "detect"],
    ["--jobs <n>", 4], ["--schema <schema>", []], ["--include <table>", []], ["--exclude <table>", []], ["--replica-identity-full"],
    ["--source-host-for-target <host[:port]>"], ["--unlogged <how>", "copy"], ["--snapshot-timeout <sec>", 600], ["--no-large-objects"], ["--roles"],
    ["--distribute <table=column>", []], ["--reference <table>", []], ["--colocate <table=table>", []], ["--until <step>"],
    ["--stall-timeout <sec>", 30], ["--json"]],
  status: [["--source <uri>"], ["--target <uri>"], ["--name <name>", "main"], ["--database <name>", []], ["--all-databases"], ["--json"], ["--watch"], ["--serve <port>"], ["--interval <sec>", 2]],
  cutover: [["--source <uri>"], ["--target <uri>"], ["--name <name>", "main"], ["--database <name>", []], ["--all-databases"], ["--freeze-writes"], ["--timeout <sec>", 300], ["--grace <sec>", 5],
    ["--verify <mode>", "counts"], ["--abort"], ["--reverse-replication"], ["--jobs <n>", 4], ["--stall-timeout <sec>", 30], ["--json"]],
  rollback: [["--source <uri>"], ["--target <uri>"], ["--name <name>", "main"], ["--timeout <sec>", 300], ["--grace <sec>", 5],
    ["--verify <mode>", "counts"], ["--abort"], ["--jobs <n>", 4], ["--json"]],
  finish: [["--source <uri>"], ["--target <uri>"], ["--name <name>", "main"], ["--json"]],
  cleanup: [["--source <uri>"], ["--target <uri>"], ["--name <name>", "main"], ["--database <name>", []], ["--all-databases"], ["--json"]],
  agent: [["--source <uri>"], ["--target <uri>"], ["--name <name>", "main"], ["--database <name>", []], ["--all-databases"], ["--json"], ["--reverse"], ["--stall-timeout <sec>", 30]],
  verify: [["--source <uri>"], ["--target <uri>"], ["--schema <schema>", []], ["--include <table>", []], ["--exclude <table>", []], ["--counts-only"],
    ["--jobs <n>", 4], ["--unlogged <how>"], ["--name <name>", "main"], ["--database <name>", []], ["--all-databases"], ["--json"]],
  demo: [["--scale <n>", 1], ["--mode <mode>", "subscription"], ["--json"]],
};

test("the CLI's commands, flags and defaults are the contract, in order", () => {
  const program = buildProgram();
  const actual = Object.fromEntries(program.commands.map((c) => [c.name(),
    c.options.map((o) => (o.defaultValue === undefined || o.negate ? [o.flags] : [o.flags, o.defaultValue]))]));
  expect(actual).toEqual(CONTRACT);
  expect(program.commands.map((c) => c.name())).toEqual(COMMANDS.map((c) => c.name));
});

test("docs/cli.md is the program's own --help (npm run docs regenerates it)", () => {
  const r = spawnSync(process.execPath, [path.join(ROOT, "scripts/cli-docs.js"), "--check"], { encoding: "utf8" });
  expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: "" });
  const doc = fs.readFileSync(path.join(ROOT, "docs/cli.md"), "utf8");
  // Every flag of every command appears in the reference.
  for (const [cmd, flags] of Object.entries(CONTRACT)) {
    expect(doc).toContain(`$ pgferry ${cmd} --help`);
    for (const [f] of flags) expect(doc).toContain(f);
  }
});

test("engine choices and defaults are the spec's", () => {
  expect(CDC_MODES).toEqual([...SETTINGS.mode.choices]);
  expect(OUTPUT_PLUGINS).toEqual([...SETTINGS.plugin.choices]);
  expect(UNLOGGED_HANDLING).toEqual([...SETTINGS.unlogged.choices]);
  expect(VERIFY_MODES).toEqual([...SETTINGS.verify.choices]);
  const o = migrationOptions({});
  expect(o).toMatchObject({ name: SETTINGS.name.default, mode: SETTINGS.mode.default, plugin: SETTINGS.plugin.default, jobs: SETTINGS.jobs.default,
    unlogged: SETTINGS.unlogged.default, largeObjects: SETTINGS.largeObjects.default, snapshotTimeoutSec: SETTINGS.snapshotTimeout.default,
    stallTimeoutSec: SETTINGS.stallTimeout.default, replicaIdentityFull: false });
});

test("Pulumi inputs, defaults, replace-on and outputs are the spec's", () => {
  expect([...INPUT_KEYS]).toEqual(Object.keys(MIGRATION_INPUTS));
  expect([...REPLACE_ON]).toEqual(["source", "target", "name", "mode", "plugin", "schemas", "include", "exclude", "distribution", "databases", "allDatabases", "ddl", "replicaIdentityFull",
    "sourceHostForTarget"]);
  // An unset input reads as its default (what the outputs show and diff compares).
  expect(pickInputs({ source: "s", target: "t" })).toEqual({ source: "s", target: "t", name: "main", mode: "subscription", plugin: "pgoutput", ddl: "detect", jobs: 4,
    schemas: [], include: [], exclude: [], databases: [], allDatabases: false, replicaIdentityFull: false, unlogged: "copy", largeObjects: true, roles: false, freezeWrites: false, cutover: false,
    cutoverTimeoutSec: 300, verify: "counts", cutoverGraceSec: 5, autoReplicationRule: false, reverseReplication: false, rollbackWindow: true });
  const outs = toOutputs({ source: "s", target: "t" }, { name: "main", phase: "Loading", rowsCopied: 1, bytesCopied: 2, tables: [] } as never);
  const keys = Object.keys(outs).sort();
  // Every input (sourceHostForTarget and distribution have no default: absent when unset) and every declared output.
  expect(keys).toEqual([...INPUT_KEYS.filter((k) => k !== "sourceHostForTarget" && k !== "distribution"), ...Object.keys(MIGRATION_OUTPUTS)].sort());
});

test("each input's and output's doc comment (shown by editors) says what its doc string (printed in docs/pulumi.md) says", () => {
  const source = fs.readFileSync(path.join(ROOT, "provider/engine/core/optionSpec.ts"), "utf8");
  const squash = (t: string) => t.replace(/`/g, "").replace(/\s+/g, " ").trim();
  const comments = new Map<string, string>();
  for (const m of source.matchAll(/\/\*\*((?:[^*]|\*(?!\/))*)\*\/\s*\n\s*([A-Za-z]+): (?:setting|output)/g)) {
    comments.set(m[2], squash(m[1].replace(/^\s*\* ?/gm, "")));
  }
  const differ: string[] = [];
  for (const [k, s] of Object.entries(MIGRATION_INPUTS)) if (comments.get(k) !== squash(s.pulumi.doc)) differ.push(k);
  for (const [k, o] of Object.entries(MIGRATION_OUTPUTS)) if (comments.get(k) !== squash(o.doc)) differ.push(k);
  expect(differ).toEqual([]);
});

test("error codes: each has a meaning; an unknown code does not compile", () => {
  for (const [code, e] of Object.entries(ERROR_CODES)) {
    expect(code).toMatch(/^[a-z0-9_]+$/);
    expect(e.meaning.length).toBeGreaterThan(10);
  }
  // The message's own fix wins; else the code's general one.
  expect(new PgferryError("unreachable", "cannot reach the target (ECONNREFUSED); fix: check host and port in --target").fix)
    .toBe("check host and port in --target");
  expect(new PgferryError("bad_jobs", "--jobs must be a whole number from 1 to 64").fix).toBe(ERROR_CODES.bad_jobs.fix);
  expect(fixOf("the source is busy. Fix: stop it, then retry")).toBe("stop it, then retry");
  expect(fixOf("--name \"x_rev\": names ending in _rev are reserved")).toBeUndefined();

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pgferry-spec-"));
  try {
    const file = path.join(dir, "unknown.ts");
    fs.writeFileSync(file, `import { PgferryError } from ${JSON.stringify(path.join(ROOT, "provider/engine/core/errors"))};\n` +
      `export const e = new PgferryError("no_such_code", "x");\n`);
    const r = spawnSync(process.execPath, [require.resolve("typescript/bin/tsc"), "--noEmit", "--strict", "--skipLibCheck", "--types", "node", file],
      { encoding: "utf8", cwd: ROOT });
    expect(r.status).not.toBe(0);
    expect(r.stdout).toMatch(/"no_such_code".*not assignable to parameter of type 'ErrorCode'|TS2345/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("--json errors carry {code, message, fix}; text errors print the fix", () => {
  const env = { ...process.env, PGFERRY_SOURCE: "postgresql://m@127.0.0.1:1/s", PGFERRY_TARGET: "postgresql://m@127.0.0.1:1/t" };
  const j = spawnSync(process.execPath, [CLI, "start", "--name", "Bad-Name", "--json"], { encoding: "utf8", env });
  expect(j.status).toBe(1);
  expect(JSON.parse(j.stdout)).toEqual({ ok: false, error: { code: "bad_name",
    message: "--name \"Bad-Name\" must be 1-40 characters of a-z, 0-9 and _ (it names the replication slot)",
    fix: ERROR_CODES.bad_name.fix, findings: [] } });
  const t = spawnSync(process.execPath, [CLI, "start", "--name", "Bad-Name"], { encoding: "utf8", env });
  expect(t.status).toBe(1);
  expect(t.stderr).toBe(`pgferry: --name "Bad-Name" must be 1-40 characters of a-z, 0-9 and _ (it names the replication slot)\n` +
    `  fix: ${ERROR_CODES.bad_name.fix}\n`);
  // A message that names its own fix: the JSON's fix is that text, and nothing is printed twice.
  const u = spawnSync(process.execPath, [CLI, "status", "--json"], { encoding: "utf8", env });
  const err = JSON.parse(u.stdout).error;
  expect(err.code).toBe("unreachable");
  expect(err.fix).toMatch(/^check host and port in --target/);
  expect(err.message).toContain(`fix: ${err.fix}`);
});

test("README within 16 kB; every relative link in README and docs/ resolves", () => {
  expect(fs.statSync(path.join(ROOT, "README.md")).size).toBeLessThanOrEqual(16 * 1024);
  const files = ["README.md", ...fs.readdirSync(path.join(ROOT, "docs")).filter((f) => f.endsWith(".md")).map((f) => `docs/${f}`)];
  const broken: string[] = [];
  for (const f of files) {
    const text = fs.readFileSync(path.join(ROOT, f), "utf8");
    for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      const [target, anchor] = m[1].split("#");
      if (/^[a-z]+:/.test(target)) continue;
      const resolved = target ? path.join(ROOT, path.dirname(f), target) : path.join(ROOT, f);
      if (!fs.existsSync(resolved)) { broken.push(`${f}: ${m[1]}`); continue; }
      if (anchor && resolved.endsWith(".md")) {
        const slugs = fs.readFileSync(resolved, "utf8").split("\n").filter((l) => /^#+ /.test(l))
          .map((l) => l.replace(/^#+ /, "").toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, "").replace(/ /g, "-"));
        if (!slugs.includes(anchor)) broken.push(`${f}: ${m[1]} (no such heading)`);
      }
    }
  }
  expect(broken).toEqual([]);
});
