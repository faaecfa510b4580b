/**
 * peft-ts in the browser (`import { PeftModel, Trainer } from "peft-ts/web"`): the core layers of
 * `peft-ts` (everything but the run folders of `src/runs`, the server and the CLI) —
 * graph builder, autodiff, tuners, PEFT files from bytes, tokenizers, the trainer, merging,
 * ComPEFT — on onnxruntime-web. Bundlers building for a browser swap the three platform modules
 * for their browser sides through the package.json `browser` field (docs/browser.md): no Node
 * built-in reaches the bundle and no polyfill is needed. Functions that take a path throw
 * `NoFileSystemError`; read files into a `FileMap` (name → bytes) and use the `…FromFiles`
 * functions, `parseSafetensors`, `readZip` / `writeZip`.
 */
export * from "./core.js";
/** The training lab of the web app (pause/resume training, export/import, the parity probe): docs/browser.md. */
export * from "./lab.js";
/** onnxruntime itself (onnxruntime-web in a browser bundle): set `ort.env.wasm.wasmPaths` / `numThreads` before the first session. */
export { ort, ortDescription } from "../platform/ort.js";
