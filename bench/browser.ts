/**
 * `npm run bench -- browser`: USE-lite LoRA training (sentences/s) and single-sentence forward
 * latency in headless Chromium — WASM with 1 thread, WASM with all threads, and WebGPU when the
 * browser gives an adapter (here SwiftShader, a CPU implementation) — each as a ratio to Node CPU
 * (onnxruntime-node, all threads) measured in the same run with the same code (`benchLab` of
 * web/lab.ts), and the size of the `peft-ts/web` bundle (minified, gzip) and of onnxruntime-web's
 * `.wasm`. The page is the app of web/ (scripts/build-web.js), served cross-origin isolated.
 */
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import type { Command } from "commander";
import * as esbuild from "esbuild";
import { useLitePackageDir } from "../src/models/use-lite/weights.js";
import { packageRoot } from "../src/util/paths.js";
import { buildApp, launchChromium, serve } from "./browser-harness.js";
import { type BenchFigures, benchLab, fetchUseLiteFiles, loadLabDataset, splitAndTokenize, useLiteBase } from "../src/web/lab.js";
import { benchEnvironment, emitResult, positiveInt, progress } from "./env.js";

export interface BrowserBenchOptions {
  readonly steps: number;
  readonly batchSize: number;
  readonly forwards: number;
  /** Also measure WebGPU when the browser gives an adapter (SwiftShader on a CPU-only machine: slow). */
  readonly webgpu?: boolean;
}

/** Bytes of the minified `peft-ts/web` bundle (onnxruntime-web's JS included, its .wasm not), raw and gzip. */
export async function webBundleSize(): Promise<{ bytes: number; gzipBytes: number; wasmBytes: number; wasmGzipBytes: number }> {
  const r = await esbuild.build({ stdin: { contents: 'export * from "peft-ts/web";', resolveDir: packageRoot() }, bundle: true, platform: "browser", format: "esm", minify: true, write: false, logLevel: "silent" });
  const js = r.outputFiles[0]!.contents;
  const wasm = readFileSync(join(packageRoot(), "node_modules", "onnxruntime-web", "dist", "ort-wasm-simd-threaded.jsep.wasm"));
  return { bytes: js.byteLength, gzipBytes: gzipSync(js).byteLength, wasmBytes: wasm.byteLength, wasmGzipBytes: gzipSync(wasm).byteLength };
}

async function nodeFigures(o: BrowserBenchOptions): Promise<BenchFigures> {
  const dir = useLitePackageDir();
  const files = await fetchUseLiteFiles(async (n) => new Uint8Array(readFileSync(join(dir, n))));
  const fixtures = join(packageRoot(), "node_modules", "sentiment", "test", "fixtures");
  const ds = await loadLabDataset({ builtin: "uci-amazon" }, async (n) => new Uint8Array(readFileSync(join(fixtures, n))));
  const base = useLiteBase(files, ds.numLabels, 0);
  return benchLab(base, splitAndTokenize(ds, base, 0), o);
}

export async function benchBrowser(o: BrowserBenchOptions): Promise<Record<string, unknown>> {
  const bundle = await webBundleSize();
  progress(`peft-ts/web: ${(bundle.gzipBytes / 1024).toFixed(0)} KiB gzip; node cpu…`);
  const node = await nodeFigures(o);
  progress(`node cpu: ${JSON.stringify(node)}`);
  const app = await buildApp();
  const server = await serve(app.outDir);
  const browser = await launchChromium({ webgpu: o.webgpu ?? false });
  const runs: Record<string, unknown>[] = [];
  try {
    const page0 = await browser.newPage();
    await page0.goto(server.url);
    const cores = await page0.evaluate(() => (globalThis as unknown as { navigator: { hardwareConcurrency: number } }).navigator.hardwareConcurrency);
    const gpu = o.webgpu === true && await page0.evaluate(async () => {
      const g = (globalThis as unknown as { navigator: { gpu?: { requestAdapter(): Promise<unknown> } } }).navigator.gpu;
      return g ? (await g.requestAdapter()) !== null : false;
    });
    await page0.close();
    const configs = [
      { name: "wasm-1-thread", query: "threads=1" },
      { name: `wasm-${cores}-threads`, query: `threads=${cores}` },
      ...(gpu ? [{ name: "webgpu", query: "ep=webgpu" }] : []),
    ];
    for (const c of configs) {
      progress(`${c.name}…`);
      const page = await browser.newPage();
      await page.goto(`${server.url}?${c.query}`);
      await page.waitForFunction(() => (globalThis as unknown as { document: { body: { dataset: Record<string, string> } } }).document.body.dataset.ready === "1", null, { timeout: 300_000 });
      const r = await page.evaluate(
        ([s, b, f]) => (globalThis as unknown as { peftBench(s: number, b: number, f: number): Promise<BenchFigures> }).peftBench(s!, b!, f!),
        [o.steps, o.batchSize, o.forwards],
      );
      runs.push({ config: c.name, ...r, trainingRatioToNode: r.sentencesPerSecond / node.sentencesPerSecond, forwardRatioToNode: r.forwardMs / node.forwardMs });
      progress(`${c.name}: ${JSON.stringify(runs.at(-1))}`);
      await page.close();
    }
    if (!gpu) runs.push({ config: "webgpu", skipped: o.webgpu ? "this Chromium gives no WebGPU adapter" : "not asked (--webgpu)" });
  } finally {
    await browser.close();
    await server.close();
    app.cleanup();
  }
  return { model: "use-lite", adapter: "LoRA r 8 (query, value) + classifier head", data: "uci-amazon", ...o, node, browser: runs, bundle };
}

export function register(program: Command): void {
  program
    .command("browser")
    .description("USE-lite LoRA in headless Chromium (WASM 1 thread / all threads, WebGPU): training sentences/s and forward latency as ratios to Node CPU; peft-ts/web bundle size")
    .option("--steps <n>", "timed training steps", positiveInt("--steps"), 8)
    .option("--batch-size <n>", "sentences per step", positiveInt("--batch-size"), 16)
    .option("--forwards <n>", "timed single-sentence forwards", positiveInt("--forwards"), 20)
    .option("--webgpu", "also measure WebGPU when Chromium gives an adapter (SwiftShader on a CPU-only machine takes minutes)")
    .action(async (opts: BrowserBenchOptions) => {
      const t0 = performance.now();
      const r = await benchBrowser(opts);
      emitResult({ bench: "browser", env: benchEnvironment({ threads: cpus().length, ep: "cpu" }), ...r, wallSeconds: Math.round((performance.now() - t0) / 100) / 10 });
    });
}
