/**
 * The browser entry `peft-ts/web` bundles for a browser with esbuild and no polyfills: the
 * package.json `browser` field swaps the platform modules, and no Node built-in (nor
 * onnxruntime-node) reaches the bundle.
 */
import assert from "node:assert/strict";
import { builtinModules } from "node:module";
import { test } from "node:test";
import * as esbuild from "esbuild";
import { packageRoot } from "../util/paths.js";

test("peft-ts/web bundles for the browser with no Node built-in and onnxruntime-web inside", async () => {
  const nodeOnly: string[] = [];
  const r = await esbuild.build({
    stdin: { contents: 'export * from "peft-ts/web";', resolveDir: packageRoot() },
    bundle: true,
    platform: "browser",
    format: "esm",
    write: false,
    metafile: true,
    logLevel: "silent",
    plugins: [
      {
        name: "node-only",
        setup(b) {
          b.onResolve({ filter: /.*/ }, (a) => {
            const bare = a.path.replace(/^node:/, "").split("/")[0]!;
            if (a.path.startsWith("node:") || builtinModules.includes(bare) || a.path === "onnxruntime-node") {
              nodeOnly.push(`${a.path} (imported by ${a.importer})`);
              return { path: a.path, external: true };
            }
            return undefined;
          });
        },
      },
    ],
  });
  assert.deepEqual(nodeOnly, []);
  const inputs = Object.keys(r.metafile.inputs);
  assert.ok(inputs.some((p) => p.includes("onnxruntime-web/")), "onnxruntime-web is bundled");
  assert.ok(inputs.some((p) => p.endsWith("platform/fs.browser.js")), "the browser field swapped the file-system seam");
  assert.ok(!inputs.some((p) => /platform\/(fs|ort|crypto)\.js$/.test(p)), "no Node side of a seam is bundled");
  // runtime/index re-exports the matmul ceiling (peft demo's MFU): it reaches onnxruntime only through the seam
  assert.ok(inputs.some((p) => p.endsWith("runtime/matmul-ceiling.js")), "the matmul ceiling is part of peft-ts/web");
  const js = r.outputFiles[0]!.text;
  assert.ok(!js.includes("process.cpuUsage"), "no Node process clock in the bundle (platform cpuTimeMs)");
});
