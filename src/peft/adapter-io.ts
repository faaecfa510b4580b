/** Reading and writing adapters in PEFT's on-disk format, validated against the base model. */
import { AdapterMismatchError, ConfigError, ShapeMismatchError } from "../errors.js";
import { ADAPTER_CONFIG_NAME, type AdapterFiles, formatAdapterConfig, readAdapterDir, writeAdapterDir } from "../io/peft-files.js";
import { adapterToFiles } from "../io/file-map.js";
import { safetensorsFileWriter } from "../io/safetensors.js";
import { type Tensor, assertFinite } from "../tensor.js";
import type { AdapterInstance, BaseModelInfo } from "../tuners/common/types.js";
import { tunerFor } from "../tuners/registry.js";

/** Prefix PEFT puts before module names in adapter state dicts. */
export const STATE_DICT_PREFIX = "base_model.model.";

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Check an adapter's tensors against the base model: every expected tensor present with its
 * shape, no tuner tensor for a module the model lacks, and base-parameter copies
 * (`modules_to_save`, biases) that exist in the base with the same shape.
 */
export function validateAdapter(adapter: AdapterInstance, model: BaseModelInfo, file: string): void {
  const expected = adapter.tuner.expectedTensors(adapter.config, model);
  for (const [key, shape] of expected) {
    const t = adapter.tensors.get(key);
    if (!t) throw new AdapterMismatchError(file, key, "missing from the adapter file (the config says this module is adapted)");
    if (!sameShape(t.shape, shape)) throw new ShapeMismatchError(key, shape, t.shape, `${file} does not fit the base model`);
  }
  for (const [key, t] of adapter.tensors) {
    if (expected.has(key)) continue;
    if (model.has(key)) {
      const base = model.weight(key);
      if (!sameShape(base.shape, t.shape)) throw new ShapeMismatchError(key, base.shape, t.shape, `${file}: copy of a base parameter`);
      continue;
    }
    throw new AdapterMismatchError(
      file,
      key,
      `the base ${model.modelType} model has no such module or parameter; is this adapter for another architecture?`,
    );
  }
}

/**
 * Runs `fn` (a tuner's `resolve`/`init`/`expectedTensors`, which only know the generic name
 * `adapter_config.json`) so that a ConfigError names the real config: its path, or the adapter.
 */
export function inConfig<T>(file: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ConfigError && e.file === ADAPTER_CONFIG_NAME && file !== ADAPTER_CONFIG_NAME) throw new ConfigError(file, e.path, e.issue, { cause: e });
    throw e;
  }
}

/** Prefix of copied base parameters (`modules_to_save`) in prompt-learning adapters: PEFT wraps the model itself there. */
const PROMPT_COPY_PREFIX = "base_model.";

function stripPrefix(weights: Map<string, Tensor>, kind: "module" | "prompt"): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const [k, v] of weights) {
    // PEFT saves adapter tensors without the adapter name, under `base_model.model.` (module
    // tuners) or, for prompt learning, copied modules under `base_model.` (`base_model.classifier.weight`)
    const prefix = k.startsWith(STATE_DICT_PREFIX) ? STATE_DICT_PREFIX : kind === "prompt" && k.startsWith(PROMPT_COPY_PREFIX) ? PROMPT_COPY_PREFIX : "";
    out.set(k.slice(prefix.length), v);
  }
  return out;
}

export interface LoadAdapterOptions {
  /** Accept NaN/±Infinity in the adapter's tensors (default: a `NonFiniteValueError` naming the tensor). */
  readonly allowNonFinite?: boolean;
}

const FLOAT_DTYPES: ReadonlySet<string> = new Set(["float32", "float64", "float16", "bfloat16"]);

/** Adapter tensors are floating point and (unless allowed) finite; the error names the tensor and the file. */
export function checkAdapterTensors(weights: ReadonlyMap<string, Tensor>, file: string, opts: LoadAdapterOptions = {}): void {
  for (const [key, t] of weights) {
    if (!FLOAT_DTYPES.has(t.dtype)) throw new AdapterMismatchError(file, key, `has dtype ${t.dtype}; adapter tensors are floating point (float32, float16, bfloat16 or float64)`);
  }
  if (!opts.allowNonFinite) assertFinite(weights, `the adapter ${file} (allowNonFinite / --allow-non-finite accepts it)`);
}

/** Load an adapter folder as an adapter instance for `model`. */
export function loadAdapterDir(dir: string, name: string, model: BaseModelInfo, opts: LoadAdapterOptions = {}): AdapterInstance {
  return adapterFromParts(readAdapterDir(dir), name, model, opts);
}

/** An adapter instance from a read adapter folder (`readAdapterDir`, or `adapterFromFiles` in memory). */
export function adapterFromParts(files: AdapterFiles, name: string, model: BaseModelInfo, opts: LoadAdapterOptions = {}): AdapterInstance {
  checkAdapterTensors(files.weights, files.weightsFile, opts);
  const peftType = files.configRaw.peft_type;
  const tuner = tunerFor(typeof peftType === "string" ? peftType : String(peftType), files.configFile);
  return inConfig(files.configFile, () => {
    const config = tuner.resolve(tuner.parseConfig(files.configRaw, files.configFile), model);
    const read = stripPrefix(files.weights, tuner.kind);
    const adapter: AdapterInstance = { name, tuner, config, tensors: tuner.fromFile?.(config, model, read) ?? read };
    validateAdapter(adapter, model, files.weightsFile);
    return adapter;
  });
}

/** PEFT state-dict keys for an adapter's tensors. */
export function adapterStateDict(adapter: AdapterInstance): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  // module tuners' tensors live under `base_model.model.`; keys already rooted at `base_model.`
  // (VeRA's shared `base_model.vera_A`) are written as they are. Prompt learning: the tuner's own
  // tensors (`prompt_embeddings`) as they are, copied modules under `base_model.` — PEFT's
  // PeftModel holds the model itself as `base_model` there (`base_model.classifier.weight`)
  const t = adapter.tuner;
  for (const [k, v] of t.savedTensors?.(adapter) ?? adapter.tensors) {
    if (t.kind === "module") out.set(k.startsWith("base_model.") ? k : STATE_DICT_PREFIX + k, v);
    else out.set(t.role(k) === null ? PROMPT_COPY_PREFIX + k : k, v);
  }
  return out;
}

/** The adapter_config.json fields written for an adapter. */
function savedConfig(adapter: AdapterInstance): Record<string, unknown> {
  const raw = adapter.tuner.toRaw(adapter.config);
  raw.inference_mode = true;
  return raw;
}

/** Throws what `saveAdapterDir` would throw for a bad tensor or config, without touching the disk. */
export function checkAdapterSavable(adapter: AdapterInstance): void {
  formatAdapterConfig(savedConfig(adapter));
  safetensorsFileWriter(adapterStateDict(adapter));
}

export function saveAdapterDir(dir: string, adapter: AdapterInstance): void {
  writeAdapterDir(dir, savedConfig(adapter), adapterStateDict(adapter));
}

/** What `saveAdapterDir` writes, in memory: adapter_config.json and adapter_model.safetensors by name. */
export function adapterFileMap(adapter: AdapterInstance): Map<string, Uint8Array> {
  return adapterToFiles(savedConfig(adapter), adapterStateDict(adapter));
}
