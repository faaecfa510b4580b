import assert from "node:assert/strict";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { test } from "node:test";
import { packageRoot } from "./util/paths.js";

/**
 * Imports point downward only (docs/architecture.md): cli/serve → queue → search → runs → generate → compose → train →
 * compress → peft → tuners → models → runtime → graph/io/data → errors/tensor/util. Files may
 * import their own layer and any layer below. Gaps between the numbers leave room for new layers.
 */
const LAYERS: Record<string, number> = {
  "errors.ts": 0,
  "tensor.ts": 0,
  util: 0,
  platform: 0,
  graph: 10,
  io: 10,
  data: 10,
  runtime: 20,
  models: 30,
  tuners: 40,
  peft: 50,
  compress: 60,
  train: 70,
  compose: 80,
  generate: 85,
  runs: 90,
  search: 92,
  queue: 95,
  serve: 100,
  cli: 100,
  "index.ts": 110,
  web: 110,
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

const IMPORT = /^\s*(?:import|export)[^"']*from\s+["'](\.[^"']+)["']/gm;
/** `await import("./x.js")`: lazily loaded modules follow the same rule. */
const DYNAMIC_IMPORT = /\bimport\(\s*["'](\.[^"']+)["']\s*\)/g;

/** Relative imports of every non-test `.ts` file under `dir`: [importing file, imported file], both absolute. */
function importsUnder(dir: string): [string, string][] {
  const out: [string, string][] = [];
  for (const file of walk(dir)) {
    if (file.endsWith(".test.ts")) continue; // tests may reach up to build fixtures
    const text = readFileSync(file, "utf8");
    for (const m of [...text.matchAll(IMPORT), ...text.matchAll(DYNAMIC_IMPORT)]) out.push([file, resolve(dirname(file), m[1]!.replace(/\.js$/, ".ts"))]);
  }
  return out;
}

test("imports point downward only", () => {
  const src = join(packageRoot(), "src");
  const violations: string[] = [];
  let checked = 0;
  for (const [file, target] of importsUnder(src)) {
    const rel = relative(src, file);
    const to = relative(src, target);
    if (to.startsWith("..")) {
      violations.push(`src/${rel} imports ${relative(packageRoot(), target)} (outside src/)`);
      continue;
    }
    checked++;
    if (layerOf(to) > layerOf(rel)) violations.push(`src/${rel} imports src/${to}`);
  }
  assert.ok(checked > 100, `only ${checked} imports checked`);
  assert.deepEqual(violations, []);
});

test("bench/ imports src/ and itself only; src/ never imports bench/", () => {
  const root = packageRoot();
  const bench = join(root, "bench");
  const bad = importsUnder(bench)
    .filter(([, target]) => {
      const to = relative(root, target);
      return !to.startsWith("src/") && !to.startsWith("bench/");
    })
    .map(([file, target]) => `${relative(root, file)} imports ${relative(root, target)}`);
  assert.deepEqual(bad, []);
});
