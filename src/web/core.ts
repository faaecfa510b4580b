/** The browser-safe layers of peft-ts (everything but src/runs, src/generate, src/serve and the CLI), as `peft-ts/web` exports them. */
export * from "../errors.js";
export * from "../tensor.js";
export * from "../graph/index.js";
export * from "../runtime/index.js";
export * from "../io/index.js";
export * from "../models/index.js";
export * from "../tuners/index.js";
export * from "../peft/index.js";
export * from "../data/index.js";
export * from "../train/index.js";
export * from "../compose/index.js";
export * from "../compress/index.js";
