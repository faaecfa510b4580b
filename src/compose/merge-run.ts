/**
 * Runs a mergekit configuration (see merge-config.ts) — what `peft merge config.yml -o out`
 * does:
 *
 * - **Full models** (folders with config.json + model.safetensors): the merge streams tensor by
 *   tensor through `mergeCheckpoints` into `out/model.safetensors`; `config.json` (with the output
 *   dtype) and the tokenizer files are copied from the reference model (`base_model`, or the first
 *   model for `linear` without one). As in mergekit, the base model listed under `models` is not a
 *   task vector of the task-arithmetic family, and `linear` is the weighted average of the models
 *   themselves: Σ w_i·θ_i (divided by Σ w_i when `normalize`, the default).
 * - **LoRA adapters** (every model is a PEFT adapter folder; `base_model` is the model they adapt):
 *   the method runs on each module's update ΔW_i = s_i·B_i·A_i (zero for adapters that do not
 *   adapt the module; `linear` averages the updates, the base is not scaled), and the result is
 *   factorised again by truncated SVD to rank `lora_rank` (default: the sum of the adapters'
 *   ranks, which is exact for linear and task_arithmetic). `modules_to_save` copies (classifier
 *   heads) are merged as full tensors. The output is a PEFT adapter folder with r = lora_alpha =
 *   rank.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, join, resolve } from "../platform/fs.js";
import { ConfigError, UnsupportedOptionError } from "../errors.js";
import { writeFilesAtomic } from "../io/atomic.js";
import { readJsonObject } from "../io/json-file.js";
import { ADAPTER_CONFIG_NAME } from "../io/peft-files.js";
import { writerMetadata } from "../io/writer.js";
import { type LoadedModel, loadModel } from "../models/load.js";
import { saveAdapterDir } from "../peft/adapter-io.js";
import { PeftModel } from "../peft/peft-model.js";
import { type Tensor, assertFinite, tensor, toFloat64 } from "../tensor.js";
import type { AdapterInstance, LowRankView } from "../tuners/common/types.js";
import { Rng } from "../util/rng.js";
import { loraAdapterSource } from "./combine-adapters.js";
import type { MergeConfig } from "./merge-config.js";
import { MERGE_METHODS, type MergeMethodDef, type MergeParams, numberParam, resolveMergeParams } from "./methods.js";
import { type TruncatedSvd, lowRankSvd, matmul, truncatedSvd } from "./svd.js";
import { type MergeCheckpointsResult, fromFloat64, mergeCheckpoints } from "./task-vector.js";
import type { LoraFactors } from "./weighted-adapter.js";

/** Tokenizer files copied from the reference model when present. */
export const TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "vocab.txt",
  "vocab.json",
  "merges.txt",
  "tokenizer.model",
  "added_tokens.json",
] as const;

/** mergekit's `linear`: Σ w_i·θ_i (/ Σ w_i), returned as a difference to the base for `mergeCheckpoints`. */
const MERGEKIT_LINEAR: MergeMethodDef = {
  name: "linear",
  title: "Linear (weighted average of the models)",
  paper: "https://arxiv.org/abs/2203.05482",
  params: { normalize: { type: "boolean", default: true, description: "divide by the sum of the weights" } },
  perModelParams: { weight: MERGE_METHODS.linear.perModelParams.weight! },
  random: false,
  run({ tensors, params, perModel, key, base }) {
    if (!base) throw new ConfigError("merge method 'linear'", "base", `no reference tensor for '${key}'`);
    const b = toFloat64(base);
    const weights = perModel.map((m) => numberParam(m, "weight"));
    const sum = weights.reduce((s, w) => s + w, 0);
    const normalize = params.normalize === true;
    if (normalize && Math.abs(sum) < 1e-12) throw new ConfigError("merge method 'linear'", "weight", "the weights sum to 0; cannot normalise (set normalize: false)");
    const out = new Float64Array(b.length);
    tensors.forEach((t, i) => {
      const tau = toFloat64(t);
      const w = weights[i]!;
      for (let k = 0; k < out.length; k++) out[k] += w * (b[k]! + tau[k]!);
    });
    for (let k = 0; k < out.length; k++) out[k] = (normalize ? out[k]! / sum : out[k]!) - b[k]!;
    return tensor("float32", base.shape, Float32Array.from(out));
  },
};

type InputKind = "model" | "adapter";

function kindOf(cfg: MergeConfig, path: string, key: string): InputKind {
  if (existsSync(join(path, ADAPTER_CONFIG_NAME))) return "adapter";
  if (existsSync(join(path, "config.json"))) return "model";
  throw new ConfigError(cfg.file, key, `'${path}' is neither a model folder (config.json + model.safetensors) nor a PEFT adapter folder (adapter_config.json)`);
}

function weightsFile(cfg: MergeConfig, dir: string, key: string): string {
  const f = join(dir, "model.safetensors");
  if (existsSync(f)) return f;
  if (existsSync(join(dir, "model.safetensors.index.json"))) {
    throw new UnsupportedOptionError(cfg.file, key, dir, "sharded checkpoints are not supported by peft merge; save the model as one model.safetensors");
  }
  throw new ConfigError(cfg.file, key, `'${dir}' has no model.safetensors`);
}

export interface RunMergeOptions {
  readonly outDir: string;
  /** Folder that relative model paths are resolved against (default: the working directory, as mergekit). */
  readonly cwd?: string;
  /** Model merges: called after each tensor is written (`index` counts from 0, of `total` tensors). */
  readonly onTensor?: (name: string, index: number, total: number) => void;
  /** The base model already loaded (e.g. USE-lite), used instead of loading `base_model` (LoRA merges only). */
  readonly baseModel?: LoadedModel;
  /** Accept NaN/±Infinity in the adapters and the merged adapter (default: `NonFiniteValueError`). */
  readonly allowNonFinite?: boolean;
}

export interface RunMergeResult {
  readonly kind: InputKind;
  readonly outDir: string;
  /** Tensors written (model) or adapter tensors (adapter). */
  readonly tensors: number;
  /** Merged tensor names (model) or merged modules and saved copies (adapter). */
  readonly merged: readonly string[];
  readonly warnings: readonly string[];
}

function perModelParams(cfg: MergeConfig, i: number): MergeParams {
  return { ...cfg.modelDefaults, ...cfg.models[i]!.parameters };
}

/** Runs a parsed merge configuration, writing a model folder or a PEFT adapter folder to `outDir`. */
export function runMergeConfig(cfg: MergeConfig, opts: RunMergeOptions): RunMergeResult {
  const cwd = opts.cwd ?? process.cwd();
  const paths = cfg.models.map((m) => resolve(cwd, m.model));
  const kinds = paths.map((p, i) => kindOf(cfg, p, `models[${i}].model`));
  const base = cfg.baseModel === null ? null : resolve(cwd, cfg.baseModel);
  if (base !== null && !opts.baseModel && kindOf(cfg, base, "base_model") !== "model") throw new ConfigError(cfg.file, "base_model", `'${base}' is an adapter folder; give the model it adapts`);
  if (kinds.every((k) => k === "adapter")) return mergeAdapters(cfg, paths, base, opts);
  if (kinds.some((k) => k === "adapter")) {
    throw new ConfigError(cfg.file, "models", "mixes LoRA adapter folders and model folders; merge each adapter into its model first (or merge only adapters)");
  }
  return mergeModels(cfg, paths, base, opts);
}

function mergeModels(cfg: MergeConfig, paths: readonly string[], base: string | null, opts: RunMergeOptions): RunMergeResult {
  const linear = cfg.method.name === "linear";
  const refDir = base ?? paths[0]!;
  let entries = paths.map((p, i) => ({ path: p, i }));
  // mergekit: the base model is the origin of the task vectors, not one of them
  if (!linear) entries = entries.filter((e) => e.path !== base);
  if (entries.length === 0) throw new ConfigError(cfg.file, "models", "lists only the base model; add the fine-tuned models to merge");
  const method = linear ? MERGEKIT_LINEAR : cfg.method;
  const params: MergeParams = linear ? Object.fromEntries(Object.entries(cfg.parameters).filter(([k]) => k in MERGEKIT_LINEAR.params)) : cfg.parameters;
  if (linear && cfg.parameters.lambda !== undefined) throw new ConfigError(cfg.file, "parameters.lambda", "mergekit's linear merge has no lambda; remove it");
  const models = entries.map((e) => ({ path: weightsFile(cfg, e.path, `models[${e.i}].model`), params: perModelParams(cfg, e.i) }));
  // validate every parameter before anything is written
  resolveMergeParams(method, params, models.map((m) => m.params), cfg.file);
  const refWeights = weightsFile(cfg, refDir, base ? "base_model" : "models[0].model");
  const configJson = readJsonObject(join(refDir, "config.json"));
  if (cfg.dtype) {
    if ("dtype" in configJson) configJson.dtype = cfg.dtype;
    if ("torch_dtype" in configJson || !("dtype" in configJson)) configJson.torch_dtype = cfg.dtype;
  }
  const created = !existsSync(opts.outDir);
  mkdirSync(opts.outDir, { recursive: true });
  let r: MergeCheckpointsResult;
  try {
    r = mergeCheckpoints({
    base: refWeights,
    models,
    method,
    params,
    outPath: join(opts.outDir, "model.safetensors"),
    ...(method.random ? { rng: new Rng(cfg.seed) } : {}),
    ...(cfg.dtype ? { dtype: cfg.dtype } : {}),
    metadata: writerMetadata({ merge_method: cfg.mergeMethod, merged_by: "peft-ts" }),
    ...(opts.onTensor ? { onTensor: opts.onTensor } : {}),
    ...(opts.allowNonFinite ? { allowNonFinite: true } : {}),
    });
  } catch (e) {
    // the write was atomic (nothing of model.safetensors is left); remove the folder this call made
    if (created) rmSync(opts.outDir, { recursive: true, force: true });
    throw e;
  }
  const files = [{ path: join(opts.outDir, "config.json"), data: `${JSON.stringify(configJson, null, 2)}\n` }];
  for (const f of TOKENIZER_FILES) {
    const src = join(refDir, f);
    if (existsSync(src)) files.push({ path: join(opts.outDir, f), data: readFileSync(src, "utf8") });
  }
  writeFilesAtomic(files);
  return { kind: "model", outDir: opts.outDir, tensors: r.tensors, merged: r.merged, warnings: cfg.warnings };
}

/** The adapter's low-rank view; adapters without one (or with DoRA / trained biases) cannot be merged. */
function lowRankInput(a: AdapterInstance, cfg: MergeConfig, key: string): LowRankView {
  if (!a.tuner.lowRank) throw new UnsupportedOptionError(cfg.file, key, a.tuner.peftType, "only adapters whose update is a low-rank product B·A can be merged");
  a.tuner.lowRank.check(a, `${cfg.file}: ${key}`, "merging");
  return a.tuner.lowRank;
}

/** Σ_i c_i·ΔW_i factorised exactly (rank ≤ Σ r_i), for the weighted-sum methods. */
function weightedSumSvd(present: readonly { f: LoraFactors; c: number }[], rank: number) {
  const { outFeatures: rows, inFeatures: cols } = present[0]!.f;
  const inner = present.reduce((s, p) => s + p.f.r, 0);
  const bCat = new Float64Array(rows * inner);
  const aCat = new Float64Array(inner * cols);
  let off = 0;
  for (const { f, c } of present) {
    const k = c * f.scaling;
    for (let i = 0; i < rows; i++) for (let j = 0; j < f.r; j++) bCat[i * inner + off + j] = k * f.B[i * f.r + j]!;
    aCat.set(Float64Array.from(f.A), off * cols);
    off += f.r;
  }
  return lowRankSvd(bCat, aCat, rows, inner, cols, rank);
}

function mergeAdapters(cfg: MergeConfig, paths: readonly string[], base: string | null, opts: RunMergeOptions): RunMergeResult {
  if (base === null) throw new ConfigError(cfg.file, "base_model", "is required to merge LoRA adapters (the model they adapt)");
  const method = cfg.method;
  const perModelRaw = cfg.models.map((_, i) => perModelParams(cfg, i));
  const resolved = resolveMergeParams(method, cfg.parameters, perModelRaw, cfg.file);
  const pm = new PeftModel(opts.baseModel ?? loadModel(base));
  const allowNonFinite = opts.allowNonFinite ?? false;
  const adapters = paths.map((p, i) => pm.loadAdapter(p, `merge_input_${i}`, { allowNonFinite }));
  const views = adapters.map((a, i) => lowRankInput(a, cfg, `models[${i}].model`));
  adapters.forEach((a, i) => {
    if (a.tuner !== adapters[0]!.tuner) throw new UnsupportedOptionError(cfg.file, `models[${i}].model`, a.tuner.peftType, `adapters of one method can be merged (the first is ${adapters[0]!.tuner.peftType})`);
  });
  const view = views[0]!;
  const sources = adapters.map((a) => loraAdapterSource(a, "merging"));
  const rng = method.random ? new Rng(cfg.seed) : undefined;
  const moduleNames = [...new Set(sources.flatMap((s) => [...s.modules.keys()]))].sort();
  const sumRanks = Math.max(...moduleNames.map((m) => sources.reduce((s, src) => s + (src.modules.get(m)?.r ?? 0), 0)));
  const rank = cfg.loraRank ?? sumRanks;
  const weightedSum = method.name === "linear" || method.name === "task_arithmetic";
  const factors = new Map<string, { A: Float32Array; B: Float32Array; inFeatures: number; outFeatures: number }>();
  for (const name of moduleNames) {
    const ref = sources.find((s) => s.modules.has(name))!.modules.get(name)!;
    const { inFeatures, outFeatures } = ref;
    let svd: TruncatedSvd;
    if (weightedSum) {
      const ws = resolved.perModel.map((m) => numberParam(m, "weight"));
      const wsum = ws.reduce((s, w) => s + w, 0);
      const norm = resolved.params.normalize === true && Math.abs(wsum) >= 1e-8 ? wsum : 1;
      const lambda = numberParam(resolved.params, "lambda");
      const present = sources.flatMap((s, i) => (s.modules.has(name) ? [{ f: s.modules.get(name)!, c: (ws[i]! * lambda) / norm }] : []));
      svd = weightedSumSvd(present, rank);
    } else {
      const deltas = sources.map((s) => {
        const f = s.modules.get(name);
        if (!f) return tensor("float64", [outFeatures, inFeatures], new Float64Array(outFeatures * inFeatures));
        const d = matmul(f.B, f.A, outFeatures, f.r, inFeatures);
        for (let k = 0; k < d.length; k++) d[k] = d[k]! * f.scaling;
        return tensor("float64", [outFeatures, inFeatures], d);
      });
      const mixed = method.run({ tensors: deltas, params: resolved.params, perModel: resolved.perModel, key: name, ...(rng ? { rng } : {}) });
      svd = truncatedSvd(mixed.data, outFeatures, inFeatures, rank);
    }
    factors.set(name, { A: Float32Array.from(svd.vh), B: Float32Array.from(svd.us), inFeatures, outFeatures });
  }
  // full-tensor copies (modules_to_save): merged as task vectors against the base parameter
  const copyKeys = [...new Set(adapters.flatMap((a) => [...a.tensors.keys()].filter((k) => a.tuner.role(k) === null)))].sort();
  const copies = new Map<string, Tensor>();
  for (const key of copyKeys) {
    const b = pm.base.weights.get(key);
    const theta = toFloat64(b);
    const taus = adapters.map((a) => {
      const t = a.tensors.get(key);
      const tau = new Float64Array(theta.length);
      if (t) {
        const x = toFloat64(t);
        for (let k = 0; k < tau.length; k++) tau[k] = x[k]! - theta[k]!;
      }
      return tensor("float64", b.shape, tau);
    });
    const m = method.run({ tensors: taus, params: resolved.params, perModel: resolved.perModel, key, base: b, ...(rng ? { rng } : {}) });
    const out = new Float64Array(theta.length);
    for (let k = 0; k < out.length; k++) out[k] = theta[k]! + m.data[k]!;
    copies.set(key, fromFloat64(b.dtype, b.shape, out));
  }
  const first = adapters[0]!;
  const modulesToSave = [...new Set(adapters.flatMap((a) => [...a.config.modulesToSave]))];
  const raw = view.configFor(first.config, { r: rank, alpha: rank, targetModules: moduleNames, resetLayout: true });
  raw.modules_to_save = modulesToSave.length > 0 ? modulesToSave : null;
  pm.addAdapter("merged", raw);
  const values = new Map<string, Tensor>(copies);
  for (const [name, f] of factors) {
    const k = view.keys(name);
    values.set(k.A, { dtype: "float32", shape: [rank, f.inFeatures], data: f.A });
    values.set(k.B, { dtype: "float32", shape: [f.outFeatures, rank], data: f.B });
  }
  pm.updateAdapterTensors("merged", values);
  if (!allowNonFinite) assertFinite(pm.adapter("merged").tensors, `the merged adapter for ${opts.outDir}`);
  mkdirSync(opts.outDir, { recursive: true });
  saveAdapterDir(opts.outDir, pm.adapter("merged"));
  return { kind: "adapter", outDir: opts.outDir, tensors: pm.adapter("merged").tensors.size, merged: [...moduleNames, ...copyKeys], warnings: cfg.warnings };
}
