/**
 * mergekit's YAML merge configuration (the file `mergekit-yaml config.yml out/` reads), parsed
 * and validated against the merge-method registry:
 *
 * ```yaml
 * merge_method: ties            # a name from MERGE_METHODS
 * base_model: ./base            # model folder (required by every method except linear)
 * models:
 *   - model: ./ft-a             # model folder, or a PEFT LoRA adapter folder
 *     parameters: { weight: 0.7, density: 0.5 }
 *   - model: ./ft-b
 * parameters: { normalize: true, density: 0.5 }   # method parameters; per-model ones act as defaults
 * dtype: float16                # output dtype (float32, float16, bfloat16); out_dtype wins if given
 * tokenizer_source: base        # ignored, with a warning (the base's tokenizer files are copied)
 * seed: 0                       # peft-ts: seed of dare_* random drops
 * lora_rank: 16                 # peft-ts: rank of a merged LoRA adapter (default: sum of the ranks)
 * ```
 *
 * Every fault is a `ConfigError` naming the file and the key (`models[1].parameters.weight`).
 * mergekit features peft-ts does not implement (`slices`, per-layer gradients, parameter filters,
 * `model+lora` references) are refused with a reason, never ignored.
 */
import { readFileSync } from "../platform/fs.js";
import { parseDocument } from "yaml";
import { ConfigError, MissingFileError } from "../errors.js";
import { MERGE_METHODS, checkParamValue, type MergeMethodDef, type MergeParamDef, type MergeParamValue, type MergeParams } from "./methods.js";

export const MERGE_CONFIG_DTYPES = ["float32", "float16", "bfloat16"] as const;
export type MergeConfigDtype = (typeof MERGE_CONFIG_DTYPES)[number];

export interface MergeConfigModel {
  /** The `model` path as written. */
  readonly model: string;
  /** Per-model parameters as written (global per-model defaults not yet applied). */
  readonly parameters: MergeParams;
}

export interface MergeConfig {
  /** Where the configuration came from (for messages). */
  readonly file: string;
  readonly mergeMethod: string;
  readonly method: MergeMethodDef;
  readonly baseModel: string | null;
  readonly models: readonly MergeConfigModel[];
  /** Global method parameters (without per-model defaults). */
  readonly parameters: MergeParams;
  /** Per-model parameters given at the top level: defaults for every model. */
  readonly modelDefaults: MergeParams;
  /** Output dtype (`out_dtype`, else `dtype`); null keeps each tensor's dtype. */
  readonly dtype: MergeConfigDtype | null;
  readonly seed: number;
  readonly loraRank: number | null;
  /** Keys accepted but not acted on, with why (printed as warnings). */
  readonly warnings: readonly string[];
}

const TOP_KEYS = ["merge_method", "base_model", "models", "parameters", "dtype", "out_dtype", "tokenizer_source", "tokenizer", "chat_template", "seed", "lora_rank"];

/** mergekit keys peft-ts refuses, with the reason. */
const REFUSED_TOP_KEYS: Readonly<Record<string, string>> = {
  slices: "layer slices (frankenmerges) are not supported; list whole models under 'models'",
  input_model_parameters: "not supported; give parameters per model under 'models[i].parameters'",
};

/** mergekit parameters with no effect on the result (memory/speed switches). */
const NO_EFFECT_PARAMS = new Set(["int8_mask"]);

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function checkValue(file: string, path: string, def: MergeParamDef, v: unknown): MergeParamValue {
  if (Array.isArray(v) || isRecord(v)) {
    throw new ConfigError(file, path, `must be a single ${def.type}; mergekit's per-layer gradients (lists) and tensor filters are not supported by peft-ts`);
  }
  return checkParamValue(file, path, def, v);
}

function stringKey(file: string, path: string, v: unknown, what: string): string {
  if (typeof v !== "string" || v.trim() === "") throw new ConfigError(file, path, `must be ${what} (a non-empty string), got ${JSON.stringify(v)}`);
  return v;
}

function methodByName(file: string, name: string): MergeMethodDef {
  if (!Object.hasOwn(MERGE_METHODS, name)) {
    throw new ConfigError(file, "merge_method", `unknown merge method '${name}'; peft-ts implements: ${Object.keys(MERGE_METHODS).join(", ")}`);
  }
  const m = MERGE_METHODS[name as keyof typeof MERGE_METHODS];
  if (m.name === "concat") throw new ConfigError(file, "merge_method", "'concat' changes tensor shapes and cannot produce a model of the base architecture");
  return m;
}

function parseParams(file: string, raw: unknown, path: string, defs: Readonly<Record<string, MergeParamDef>>, extra?: Readonly<Record<string, MergeParamDef>>): {
  own: Record<string, MergeParamValue>;
  extra: Record<string, MergeParamValue>;
} {
  const own: Record<string, MergeParamValue> = {};
  const other: Record<string, MergeParamValue> = {};
  if (raw === undefined || raw === null) return { own, extra: other };
  if (!isRecord(raw)) throw new ConfigError(file, path, `must be a mapping of parameter names to values, got ${JSON.stringify(raw)}`);
  for (const [k, v] of Object.entries(raw)) {
    const p = `${path}.${k}`;
    if (Object.hasOwn(defs, k)) own[k] = checkValue(file, p, defs[k]!, v);
    else if (extra && Object.hasOwn(extra, k)) other[k] = checkValue(file, p, extra[k]!, v);
    else if (NO_EFFECT_PARAMS.has(k)) checkValue(file, p, { type: "boolean", description: "" }, v);
    else {
      const known = [...Object.keys(defs), ...Object.keys(extra ?? {})];
      throw new ConfigError(file, p, `unknown parameter for this merge method; known: ${known.length ? known.join(", ") : "(none)"}`);
    }
  }
  return { own, extra: other };
}

/** Validates a parsed (JSON-like) mergekit configuration; `file` names it in errors. */
export function parseMergeConfig(raw: unknown, file: string): MergeConfig {
  if (!isRecord(raw)) throw new ConfigError(file, "", "must be a YAML mapping with merge_method, models, …");
  for (const k of Object.keys(raw)) {
    if (Object.hasOwn(REFUSED_TOP_KEYS, k)) throw new ConfigError(file, k, REFUSED_TOP_KEYS[k]!);
    if (!TOP_KEYS.includes(k)) throw new ConfigError(file, k, `unknown key; a merge configuration has: ${TOP_KEYS.join(", ")}`);
  }
  if (raw.merge_method === undefined) throw new ConfigError(file, "merge_method", "is required (e.g. ties, task_arithmetic, linear)");
  const mergeMethod = stringKey(file, "merge_method", raw.merge_method, "a merge method name");
  const method = methodByName(file, mergeMethod);
  const baseModel = raw.base_model === undefined || raw.base_model === null ? null : stringKey(file, "base_model", raw.base_model, "a model folder");
  if (baseModel === null && method.name !== "linear") {
    throw new ConfigError(file, "base_model", `is required by merge method '${method.name}' (task vectors are differences to the base model)`);
  }
  if (!Array.isArray(raw.models) || raw.models.length === 0) throw new ConfigError(file, "models", "must be a non-empty list of {model: <folder>, parameters: {...}}");
  const models = raw.models.map((m: unknown, i: number): MergeConfigModel => {
    const path = `models[${i}]`;
    if (!isRecord(m)) throw new ConfigError(file, path, `must be a mapping with a 'model' key, got ${JSON.stringify(m)}`);
    for (const k of Object.keys(m)) if (k !== "model" && k !== "parameters") throw new ConfigError(file, `${path}.${k}`, "unknown key; a model entry has 'model' and 'parameters'");
    if (m.model === undefined) throw new ConfigError(file, `${path}.model`, "is required (the model or LoRA adapter folder)");
    const model = stringKey(file, `${path}.model`, m.model, "a model folder");
    if (model.includes("+")) throw new ConfigError(file, `${path}.model`, "mergekit's 'model+lora' references are not supported; merge the LoRA into its model first");
    return { model, parameters: parseParams(file, m.parameters, `${path}.parameters`, method.perModelParams).own };
  });
  const top = parseParams(file, raw.parameters, "parameters", method.params, method.perModelParams);
  const outDtypeRaw = raw.out_dtype ?? raw.dtype;
  let dtype: MergeConfigDtype | null = null;
  if (outDtypeRaw !== undefined && outDtypeRaw !== null) {
    const key = raw.out_dtype !== undefined ? "out_dtype" : "dtype";
    if (!(MERGE_CONFIG_DTYPES as readonly unknown[]).includes(outDtypeRaw)) {
      throw new ConfigError(file, key, `must be one of ${MERGE_CONFIG_DTYPES.join(", ")}, got ${JSON.stringify(outDtypeRaw)}`);
    }
    dtype = outDtypeRaw as MergeConfigDtype;
  }
  let seed = 0;
  if (raw.seed !== undefined) {
    if (typeof raw.seed !== "number" || !Number.isSafeInteger(raw.seed) || raw.seed < 0) throw new ConfigError(file, "seed", `must be a non-negative integer, got ${JSON.stringify(raw.seed)}`);
    seed = raw.seed;
  }
  let loraRank: number | null = null;
  if (raw.lora_rank !== undefined && raw.lora_rank !== null) {
    if (typeof raw.lora_rank !== "number" || !Number.isInteger(raw.lora_rank) || raw.lora_rank < 1) {
      throw new ConfigError(file, "lora_rank", `must be a positive integer, got ${JSON.stringify(raw.lora_rank)}`);
    }
    loraRank = raw.lora_rank;
  }
  const warnings: string[] = [];
  for (const k of ["tokenizer_source", "tokenizer", "chat_template"]) {
    if (raw[k] !== undefined) warnings.push(`${file}: '${k}' is ignored by peft-ts; the reference model's tokenizer files are copied as they are`);
  }
  return { file, mergeMethod, method, baseModel, models, parameters: top.own, modelDefaults: top.extra, dtype, seed, loraRank, warnings };
}

/** Parses mergekit YAML text (`file` names it in errors). */
export function parseMergeConfigYaml(text: string, file = "merge config"): MergeConfig {
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    throw new ConfigError(file, "", `invalid YAML: ${e.message.split("\n")[0]}`, { cause: e });
  }
  let raw: unknown;
  try {
    raw = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    // an alias bomb ("billion laughs") stops at yaml's alias budget instead of exhausting memory
    throw new ConfigError(file, "", `YAML aliases expand too much (${(e as Error).message.split("\n")[0]}); write the values out instead of nesting aliases`, { cause: e });
  }
  return parseMergeConfig(raw, file);
}

/** Reads and parses a mergekit YAML configuration file. */
export function readMergeConfig(path: string): MergeConfig {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new MissingFileError(path, `cannot read the merge configuration (${(e as Error).message})`);
  }
  return parseMergeConfigYaml(text, path);
}
