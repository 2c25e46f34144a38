/**
 * Tests that run the built package (the CLI, or the dynamic providers, which load
 * `pgferry/dist/provider/...`) need dist/. `npm test` builds first; this covers running one test
 * file on its own after a clean checkout.
 */
import { spawnSync } from "child_process";
import * as fs from "fs";
import * as path from "path";

export const ROOT = path.resolve(__dirname, "../..");
export const CLI = path.join(ROOT, "dist/provider/cli/main.js");

export function ensureBuilt(): void {
  if (fs.existsSync(CLI) && fs.existsSync(path.join(ROOT, "dist/provider/index.js"))) return;
  const b = spawnSync("npx", ["tsc", "-p", "."], { cwd: ROOT, encoding: "utf8" });
  if (b.status !== 0) throw new Error(`build failed: ${b.stdout}${b.stderr}`);
}
