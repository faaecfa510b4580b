/** `peft inspect <path>`: picks the report for a model folder, an adapter folder or a .safetensors file. */
import { existsSync, statSync } from "node:fs";
import { basename, dirname, extname, join } from "node:path";
import { MissingFileError, UnsupportedFileTypeError } from "../../errors.js";
import { ADAPTER_CONFIG_NAME } from "../../io/peft-files.js";
import { type AdapterReport, inspectAdapterDir } from "./adapter.js";
import { type ModelReport, type SafetensorsReport, inspectModelDir, inspectSafetensorsFile } from "./model.js";

export type InspectReport = ModelReport | AdapterReport | SafetensorsReport;

export interface InspectOptions {
  /** Include every tensor (name, dtype, shape, size) in the report. */
  tensors?: boolean;
}

const WHAT = "a model folder (config.json + model.safetensors), an adapter folder (adapter_config.json + adapter_model.safetensors) or a .safetensors file";

/**
 * Inspects `path`: a folder with adapter_config.json is an adapter, one with config.json a
 * model; a `.safetensors` file is summarised on its own; a path to `config.json` or
 * `adapter_config.json` means its folder. Only headers are read.
 */
export function inspectPath(path: string, opts: InspectOptions = {}): InspectReport {
  if (!existsSync(path)) throw new MissingFileError(path, `expected ${WHAT}`);
  if (statSync(path).isFile()) {
    const name = basename(path);
    if (name === ADAPTER_CONFIG_NAME) return inspectAdapterDir(dirname(path), opts);
    if (name === "config.json") return inspectModelDir(dirname(path), opts);
    if (extname(path) === ".safetensors") return inspectSafetensorsFile(path, opts);
    throw new UnsupportedFileTypeError(path, WHAT);
  }
  if (existsSync(join(path, ADAPTER_CONFIG_NAME))) return inspectAdapterDir(path, opts);
  if (existsSync(join(path, "config.json"))) return inspectModelDir(path, opts);
  throw new MissingFileError(join(path, "config.json"), `the folder has neither config.json nor ${ADAPTER_CONFIG_NAME}; expected ${WHAT}`);
}
