/**
 * A command (start, cutover) as a list of named steps run in order by one runner, so a new step (copy
 * large objects, replicate DDL) is added to the list, not woven into a long function.
 *
 * The runner owns three things the steps used to do by hand:
 *  - resume: a step whose `done` says the recorded state is past it is skipped (a re-run after a kill
 *    continues where the record says; the record itself is written by the steps, inside the transactions
 *    that make it true), and a step whose `when` is false does not apply to this run;
 *  - timings: each step that ran has its duration in the result; a step with `timing` also stores it under
 *    that key of the caller's timings (replacing, or with `accumulate` adding to, what a previous run
 *    recorded), and `clock` lets a step time parts of itself under other keys;
 *  - undo: when a step fails, its own `undo` and those of the steps finished before it in this run are
 *    called, latest first, back to the last step marked `commits` (once it finished, earlier work is kept
 *    whatever fails later). An undo that fails replaces the step's error: the caller sees what was left.
 */

/** What a step returns: "nothing" when it found nothing to do, so no timing is stored under its key. */
export type StepOutcome = void | "nothing";

export interface StepClock {
  /** Time `fn` and add its duration to `key` of the timings. */
  add<T>(key: string, fn: () => Promise<T>): Promise<T>;
  /** Set `key` of the timings. */
  set(key: string, ms: number): void;
}

export interface Step<C> {
  name: string;
  /** False: the step does not apply to this run (an option is off, another mode). */
  when?: (ctx: C) => boolean;
  /** True: the recorded state is past this step already (a re-run skips it). */
  done?: (ctx: C) => boolean | Promise<boolean>;
  run: (ctx: C, clock: StepClock) => Promise<StepOutcome>;
  /** Undo what the step did; called when it or a later step before the next commit point fails. */
  undo?: (ctx: C, error: unknown) => Promise<void>;
  /** Once this step has finished, no later failure undoes it or the steps before it. */
  commits?: boolean;
  /** The timings key this step's duration is stored under. */
  timing?: string;
  /** Add the duration to what the key holds (from an earlier step or run) instead of replacing it. */
  accumulate?: boolean;
}

export interface StepRecord {
  name: string;
  status: "ran" | "skipped" | "not applicable" | "failed";
  /** Duration of a step that ran or failed. */
  ms?: number;
}

export interface PipelineOptions {
  /** Filled in place: each step's `timing` key and what steps time with their clock. Pre-filled with a previous run's. */
  timings?: Record<string, number | undefined>;
  /** After each step that ran (for example to store the timings). */
  afterStep?: (step: StepRecord, timingsChanged: boolean) => Promise<void>;
  /** Before each step that runs (progress, test failpoints). */
  beforeStep?: (name: string) => void;
}

export interface PipelineResult {
  steps: StepRecord[];
  timings: Record<string, number | undefined>;
}

export async function runPipeline<C>(steps: Step<C>[], ctx: C, o: PipelineOptions = {}): Promise<PipelineResult> {
  const timings = o.timings ?? {};
  const records: StepRecord[] = [];
  /** Finished steps of this run since the last commit point, for undo. */
  let undoable: Step<C>[] = [];
  for (const step of steps) {
    if (step.when && !step.when(ctx)) { records.push({ name: step.name, status: "not applicable" }); continue; }
    if (step.done && (await step.done(ctx))) { records.push({ name: step.name, status: "skipped" }); continue; }
    o.beforeStep?.(step.name);
    let changed = false;
    const clock: StepClock = {
      add: async (key, fn) => {
        const t = Date.now();
        const r = await fn();
        timings[key] = (timings[key] ?? 0) + (Date.now() - t);
        changed = true;
        return r;
      },
      set: (key, ms) => { timings[key] = ms; changed = true; },
    };
    const started = Date.now();
    let outcome: StepOutcome;
    try {
      outcome = await step.run(ctx, clock);
    } catch (e) {
      records.push({ name: step.name, status: "failed", ms: Date.now() - started });
      for (const s of [...undoable, step].reverse()) if (s.undo) await s.undo(ctx, e);
      throw e;
    }
    const ms = Date.now() - started;
    if (step.timing && outcome !== "nothing") {
      timings[step.timing] = step.accumulate ? (timings[step.timing] ?? 0) + ms : ms;
      changed = true;
    }
    const record: StepRecord = { name: step.name, status: "ran", ms };
    records.push(record);
    undoable = step.commits ? [] : [...undoable, step];
    await o.afterStep?.(record, changed);
  }
  return { steps: records, timings };
}
