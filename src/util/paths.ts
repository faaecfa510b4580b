import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

let cached: string | undefined;

/** The peft-ts package root (the folder with its package.json), found from this file's location. */
export function packageRoot(): string {
  if (cached) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pj = join(dir, "package.json");
    if (existsSync(pj)) {
      try {
        if ((JSON.parse(readFileSync(pj, "utf8")) as { name?: string }).name === "peft-ts") return (cached = dir);
      } catch {
        // not a readable package.json: keep walking up
      }
    }
    const up = dirname(dir);
    if (up === dir) return (cached = resolve(process.cwd()));
    dir = up;
  }
}

/** Path of a file under test/fixtures (the copied reference data). */
export function fixturePath(...parts: string[]): string {
  return join(packageRoot(), "test", "fixtures", ...parts);
}
