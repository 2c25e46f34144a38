/**
 * Wait for a condition instead of sleeping a fixed time: poll `f` until it gives a truthy value (returned),
 * as soon as it holds; fail naming `what` once `ms` have passed. Tests never assert timings, so a generous
 * deadline costs nothing when the condition holds and only bounds how long a failure takes to report.
 */
export async function until<T>(what: string, f: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  ms = 120000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
