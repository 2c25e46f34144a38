import { readFileSync } from "fs";
import { join } from "path";
import { CDC_MODES, migrationOptions, OUTPUT_PLUGINS } from "../core/options";
import { cdcFor } from "./cdc";

test("the plugin rule is each mode's own statement: a mode accepts exactly the plugins it lists, and a refusal names the modes that take it", () => {
  for (const mode of CDC_MODES) {
    const { requirements } = cdcFor(mode);
    expect(requirements.plugins.length).toBeGreaterThan(0);
    for (const plugin of OUTPUT_PLUGINS) {
      const takers = CDC_MODES.filter((m) => cdcFor(m).requirements.plugins.includes(plugin));
      if (requirements.plugins.includes(plugin)) {
        expect(migrationOptions({ mode, plugin })).toMatchObject({ mode, plugin });
      } else {
        expect(() => migrationOptions({ mode, plugin })).toThrow(`--plugin ${plugin} needs --mode ${takers.join(" or ")}`);
      }
    }
  }
});

test("preflight and the options never branch on the CDC mode or the plugin by name (a new mode or plugin is one file)", () => {
  for (const file of ["../preflight/preflight.ts", "../core/options.ts"]) {
    const code = readFileSync(join(__dirname, file), "utf8").replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, "");
    expect({ file, branches: code.match(/mode\s*[!=]==\s*"|plugin\s*[!=]==\s*"|"(stream|subscription)"\s*[!=]==|wal2json_/g) ?? [] }).toEqual({ file, branches: [] });
  }
});
