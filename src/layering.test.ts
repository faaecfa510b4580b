import assert from "node:assert/strict";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { test } from "node:test";
import { packageRoot } from "./util/paths.js";

/**
 * Imports point downward only (DEVELOPERS.md): cli → runs → train/compose/compress → peft → tuners →
 * models → graph/runtime/io. Files may import their own layer and any layer below.
 */
const LAYERS: Record<string, number> = {
  "errors.ts": 0,
  "tensor.ts": 0,
  util: 0,
  graph: 1,
  runtime: 1,
  io: 1,
  data: 1,
  models: 2,
  tuners: 3,
  peft: 4,
  train: 5,
  compose: 5,
  compress: 5,
  runs: 6,
  generate: 6,
  serve: 7,
  cli: 7,
  "index.ts": 8,
};

function layerOf(pathInSrc: string): number {
  const top = pathInSrc.split("/")[0]!;
  const l = LAYERS[top];
  if (l === undefined) throw new Error(`src/${pathInSrc}: folder '${top}' has no layer; add it to LAYERS`);
  return l;
}

function walk(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (name.endsWith(".ts") && !name.endsWith(".d.ts")) out.push(p);
  }
  return out;
}

test("imports point downward only", () => {
  const src = join(packageRoot(), "src");
  const violations: string[] = [];
  let checked = 0;
  for (const file of walk(src)) {
    const rel = relative(src, file);
    if (rel.endsWith(".test.ts")) continue; // tests may reach up to build fixtures
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(/^\s*(?:import|export)[^"']*from\s+["'](\.[^"']+)["']/gm)) {
      const target = relative(src, resolve(dirname(file), m[1]!.replace(/\.js$/, ".ts")));
      if (target.startsWith("..")) continue;
      checked++;
      if (layerOf(target) > layerOf(rel)) violations.push(`src/${rel} imports src/${target}`);
    }
  }
  assert.ok(checked > 100, `only ${checked} imports checked`);
  assert.deepEqual(violations, []);
});
