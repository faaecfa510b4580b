/**
 * peft-ts: parameter-efficient fine-tuning, composition, compression and serving of pre-trained
 * models in TypeScript, on ONNX Runtime, with Hugging Face PEFT's file formats. This file is the
 * package's only entry point (`import { PeftModel, loadModel } from "peft-ts"`); each folder's
 * index lists its public names.
 */
export * from "./errors.js";
export { PEFT_TS_VERSION, PEFT_FORMAT_VERSION } from "./util/version.js";
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
export * from "./runs/index.js";
export * from "./generate/index.js";
export * from "./search/index.js";
export * from "./queue/index.js";
