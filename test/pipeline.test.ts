/** The step runner behind start and cutover (provider/engine/core/pipeline.ts): pure, no servers. */
import { runPipeline, Step } from "../provider/engine/core/pipeline";

interface Run { phase: number; log: string[] }

/** Three phased steps, each recording the phase it reaches, as start records its phase on the target. */
const phased = (fail?: string): Step<Run>[] => ["schema", "load", "post-data"].map((name, i) => ({
  name,
  timing: `${name}Ms`,
  done: (c: Run) => c.phase > i,
  run: async (c: Run) => {
    c.log.push(name);
    if (name === fail) throw new Error(`${name} broke`);
    c.phase = i + 1;
  },
}));

test("a re-run skips the steps the recorded state is past, and runs the rest in order", async () => {
  const first: Run = { phase: 0, log: [] };
  await expect(runPipeline(phased("load"), first)).rejects.toThrow("load broke");
  expect(first).toEqual({ phase: 1, log: ["schema", "load"] });

  const again: Run = { phase: first.phase, log: [] };
  const r = await runPipeline(phased(), again);
  expect(again.log).toEqual(["load", "post-data"]);
  expect(r.steps.map((s) => [s.name, s.status])).toEqual([["schema", "skipped"], ["load", "ran"], ["post-data", "ran"]]);
});

test("timings: each step that ran under its key, replacing or adding to a previous run's; skipped steps keep theirs", async () => {
  const timings: Record<string, number | undefined> = { schemaMs: 7, loadMs: 5 };
  const steps: Step<Run>[] = [
    ...phased(),
    { name: "again", timing: "loadMs", accumulate: true, run: async () => undefined },
    { name: "idle", timing: "idleMs", run: async () => "nothing" },
    { name: "parts", run: async (_c, clock) => { await clock.add("partMs", async () => 1); await clock.add("partMs", async () => 2); clock.set("fixedMs", 3); } },
  ];
  const saved: string[] = [];
  const r = await runPipeline(steps, { phase: 1, log: [] }, { timings, afterStep: async (s, changed) => { if (changed) saved.push(s.name); } });
  expect(r.timings).toBe(timings);
  expect(timings.schemaMs).toBe(7); // skipped: the earlier run's value stays
  expect(typeof timings.loadMs).toBe("number");
  expect(timings.loadMs).toBeGreaterThanOrEqual(0);
  expect(typeof timings["post-dataMs"]).toBe("number");
  expect("idleMs" in timings).toBe(false); // nothing done: no timing
  expect(typeof timings.partMs).toBe("number");
  expect(timings.fixedMs).toBe(3);
  expect(saved).toEqual(["load", "post-data", "again", "parts"]);
  expect(r.steps.filter((s) => s.status === "ran").every((s) => typeof s.ms === "number")).toBe(true);
});

test("steps that do not apply are reported, not run", async () => {
  const log: string[] = [];
  const r = await runPipeline([
    { name: "a", run: async () => { log.push("a"); } },
    { name: "b", when: () => false, run: async () => { log.push("b"); } },
  ], {});
  expect(log).toEqual(["a"]);
  expect(r.steps.map((s) => s.status)).toEqual(["ran", "not applicable"]);
});

test("undo: a failure undoes the failing step and those before it, latest first, back to the last commit point", async () => {
  const log: string[] = [];
  const step = (name: string, x: Partial<Step<unknown>> = {}): Step<unknown> => ({
    name, run: async () => { log.push(`run ${name}`); }, undo: async (_c, e) => { log.push(`undo ${name} (${(e as Error).message})`); }, ...x,
  });
  const boom = async () => { log.push("run boom"); throw new Error("boom"); };
  await expect(runPipeline([step("a"), step("b", { commits: true }), step("c"), step("d", { undo: undefined }), step("e", { run: boom })], {}))
    .rejects.toThrow("boom");
  expect(log).toEqual(["run a", "run b", "run c", "run d", "run boom", "undo e (boom)", "undo c (boom)"]);

  // A failing undo replaces the error: the caller learns what was left undone.
  await expect(runPipeline([step("x", { undo: async () => { throw new Error("undo failed"); } }), step("y", { run: boom })], {}))
    .rejects.toThrow("undo failed");
});
