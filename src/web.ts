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
export * from "./errors.js";
export * from "./tensor.js";
export * from "./graph/index.js";
export * from "./runtime/index.js";
export * from "./io/index.js";
export * from "./models/index.js";
export * from "./tuners/index.js";
export * from "./peft/index.js";
export * from "./data/index.js";
export * from "./train/index.js";
export * from "./compose/index.js";
export * from "./compress/index.js";
/** onnxruntime itself (onnxruntime-web in a browser bundle): set `ort.env.wasm.wasmPaths` / `numThreads` before the first session. */
export { ort, ortDescription } from "./platform/ort.js";
