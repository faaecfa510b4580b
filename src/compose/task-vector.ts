/**
 * Task vectors τ = θ_finetuned − θ_base: from two safetensors checkpoints (streamed tensor by
 * tensor), from LoRA factors (ΔW = scaling·B·A), applied back onto a base with weights, and a
 * streaming checkpoint merge that runs a merge method (methods.ts) on every weight and writes
 * the merged model one tensor at a time.
 *
 * Only floating-point tensors have task vectors; integer and bool tensors (buffers such as
 * position ids) are skipped by the task-vector iterator and copied from the base by the merge.
 */
import { ConfigError, MissingTensorError, ShapeMismatchError } from "../errors.js";
import { checkMergeCheckpointsArgs } from "./args.js";
import { writeAll, writeFileAtomicWith } from "../io/atomic.js";
import { type PlannedTensorInfo, SafetensorsFile, safetensorsHeader } from "../io/safetensors.js";
import {
  type DType,
  type Tensor,
  assertFinite,
  floatToBf16,
  floatToHalf,
  numel,
  tensor,
  toFloat32,
  toFloat64,
} from "../tensor.js";
import { type MergeMethodDef, type MergeParams, getMergeMethod, resolveMergeParams } from "./methods.js";
import type { UniformRng } from "./sparsify.js";
import { matmul } from "./svd.js";
import type { LoraFactors } from "./weighted-adapter.js";

/** A task-vector entry: tensor name, τ (float32, row-major) and its shape. Destructures as [name, τ]. */
export type TaskVectorEntry = readonly [name: string, data: Float32Array, shape: readonly number[]];

/** Which tensors to use: a regular expression tested against the name, or a predicate. */
export type TensorFilter = RegExp | ((name: string) => boolean);

const FLOAT_DTYPES: ReadonlySet<DType> = new Set(["float32", "float64", "float16", "bfloat16"]);

export function isFloatDtype(dtype: DType): boolean {
  return FLOAT_DTYPES.has(dtype);
}

/** Whether a tensor name passes an include filter (a RegExp or a predicate; none accepts all). */
export function acceptsTensor(filter: TensorFilter | undefined, name: string): boolean {
  if (!filter) return true;
  if (filter instanceof RegExp) {
    filter.lastIndex = 0;
    return filter.test(name);
  }
  return filter(name);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Streams τ = θ_ft − θ_base for every floating-point tensor of `ftPath` accepted by `include`, in
 * sorted name order, reading one tensor of each file at a time. A tensor of the fine-tuned file
 * that the base lacks raises `MissingTensorError`; a shape difference raises `ShapeMismatchError`.
 * Both files are closed when the iteration ends (also on `break`).
 */
export function* taskVectorFromCheckpoints(
  basePath: string,
  ftPath: string,
  opts: { include?: TensorFilter } = {},
): Generator<TaskVectorEntry, void, undefined> {
  const base = SafetensorsFile.open(basePath);
  let ft: SafetensorsFile | undefined;
  try {
    ft = SafetensorsFile.open(ftPath);
    for (const key of ft.keys()) {
      const info = ft.info(key);
      if (!isFloatDtype(info.dtype) || !acceptsTensor(opts.include, key)) continue;
      if (!base.has(key)) throw new MissingTensorError(basePath, key, `the fine-tuned checkpoint ${ftPath} has it; exclude it with 'include'`);
      const binfo = base.info(key);
      if (!sameShape(binfo.shape, info.shape)) throw new ShapeMismatchError(key, binfo.shape, info.shape, `${ftPath} vs base ${basePath}`);
      const theta = toFloat32(ft.get(key));
      const b = toFloat32(base.get(key));
      const tau = new Float32Array(theta.length);
      for (let i = 0; i < tau.length; i++) tau[i] = theta[i]! - b[i]!;
      yield [key, tau, [...info.shape]];
    }
  } finally {
    ft?.close();
    base.close();
  }
}

/**
 * ΔW = scaling·B·A of one LoRA module as a task vector for its base weight: [out, in], or
 * transposed to [in, out] with `fanInFanOut` (GPT-2's Conv1D stores its weight that way).
 */
export function taskVectorFromLora(f: LoraFactors, fanInFanOut = false): Float32Array {
  const d = matmul(f.B, f.A, f.outFeatures, f.r, f.inFeatures);
  const out = new Float32Array(d.length);
  if (!fanInFanOut) {
    for (let i = 0; i < d.length; i++) out[i] = d[i]! * f.scaling;
    return out;
  }
  for (let o = 0; o < f.outFeatures; o++) {
    for (let i = 0; i < f.inFeatures; i++) out[i * f.outFeatures + o] = d[o * f.inFeatures + i]! * f.scaling;
  }
  return out;
}

/**
 * Task vectors of every module of a LoRA adapter, named `keyOf(module)` (default
 * `<module>.weight`; map PEFT's `base_model.model.` prefix away here to match base names).
 */
export function* taskVectorsFromLora(
  modules: ReadonlyMap<string, LoraFactors>,
  opts: { fanInFanOut?: boolean; keyOf?: (module: string) => string } = {},
): Generator<TaskVectorEntry, void, undefined> {
  const keyOf = opts.keyOf ?? ((m: string) => `${m}.weight`);
  for (const [name, f] of modules) {
    const shape = opts.fanInFanOut ? [f.inFeatures, f.outFeatures] : [f.outFeatures, f.inFeatures];
    yield [keyOf(name), taskVectorFromLora(f, opts.fanInFanOut ?? false), shape];
  }
}

/** A float64 result back in a tensor's dtype (float16/bfloat16 rounded to nearest even). */
export function fromFloat64(dtype: DType, shape: readonly number[], x: Float64Array): Tensor {
  switch (dtype) {
    case "float64":
      return tensor("float64", shape, x);
    case "float32":
      return tensor("float32", shape, Float32Array.from(x));
    case "float16":
      return tensor("float16", shape, Uint16Array.from(x, floatToHalf));
    case "bfloat16":
      return tensor("bfloat16", shape, Uint16Array.from(x, floatToBf16));
    default:
      throw new ConfigError("task vectors", "dtype", `cannot store a task-vector result as ${dtype}`);
  }
}

/** Task vectors by tensor name (a Map, or entries such as a `taskVectorFromCheckpoints` iterator). */
export type TaskVectorSet = ReadonlyMap<string, Float32Array | Tensor> | Iterable<TaskVectorEntry>;

function toMap(v: TaskVectorSet): ReadonlyMap<string, Float32Array | Tensor> {
  if (v instanceof Map) return v as ReadonlyMap<string, Float32Array | Tensor>;
  const m = new Map<string, Float32Array>();
  for (const [k, data] of v as Iterable<TaskVectorEntry>) m.set(k, data);
  return m;
}

/**
 * θ = θ_base + Σ_i w_i·τ_i for every base tensor, kept in the base tensor's dtype. A task
 * vector may cover a subset of the tensors (the others are unchanged); a name the base lacks
 * raises `MissingTensorError`, a size difference `ShapeMismatchError`.
 */
export function applyTaskVectors(
  base: ReadonlyMap<string, Tensor>,
  vectors: readonly TaskVectorSet[],
  weights: readonly number[] = vectors.map(() => 1),
): Map<string, Tensor> {
  if (weights.length !== vectors.length) throw new ConfigError("applyTaskVectors", "weights", `${weights.length} weights for ${vectors.length} task vectors`);
  const maps = vectors.map(toMap);
  maps.forEach((m, i) => {
    for (const [k, t] of m) {
      const b = base.get(k);
      if (!b) throw new MissingTensorError("base model", k, `task vector ${i} has it`);
      const n = t instanceof Float32Array ? t.length : numel(t.shape);
      if (n !== numel(b.shape) || !isFloatDtype(b.dtype)) throw new ShapeMismatchError(k, b.shape, t instanceof Float32Array ? [n] : t.shape, `task vector ${i}`);
    }
  });
  const out = new Map<string, Tensor>();
  for (const [k, b] of base) {
    const parts = maps.map((m, i) => [m.get(k), weights[i]!] as const).filter((p) => p[0] !== undefined);
    if (parts.length === 0) {
      out.set(k, b);
      continue;
    }
    const theta = Float64Array.from(toFloat64(b));
    for (const [t, w] of parts) {
      const tau = t instanceof Float32Array ? t : toFloat32(t!);
      for (let i = 0; i < theta.length; i++) theta[i] = theta[i]! + w * tau[i]!;
    }
    out.set(k, fromFloat64(b.dtype, b.shape, theta));
  }
  return out;
}

export interface MergeCheckpointsOptions {
  /** The base model's safetensors file. */
  readonly base: string;
  /** Fine-tuned models (same architecture as the base) with their per-model parameters. */
  readonly models: readonly { readonly path: string; readonly params?: MergeParams }[];
  /** A method name from MERGE_METHODS, or a method definition. */
  readonly method: string | MergeMethodDef;
  readonly params?: MergeParams;
  /** Where to write the merged safetensors file (atomically). */
  readonly outPath: string;
  /** Seeded generator, required by random methods (dare_*). */
  readonly rng?: UniformRng;
  /** Tensors to merge; the others are copied from the base. Default: all floating-point ones. */
  readonly include?: TensorFilter;
  /** Extra `__metadata__` entries (the base's metadata is kept, with `format: pt` by default). */
  readonly metadata?: Readonly<Record<string, string>>;
  /** Called after each tensor is written (`index` counts from 0, of `total` tensors). */
  readonly onTensor?: (name: string, index: number, total: number) => void;
  /**
   * Store every floating-point tensor (merged or copied) in this dtype (mergekit `dtype`); default:
   * each tensor keeps the base's dtype. Integer and bool tensors are always copied as they are.
   */
  readonly dtype?: "float32" | "float16" | "bfloat16";
  /**
   * Accept NaN/±Infinity in what is written (default: a `NonFiniteValueError` naming the tensor,
   * and nothing is written — a merge can overflow, e.g. to float16, or inherit a model's NaNs).
   */
  readonly allowNonFinite?: boolean;
}

export interface MergeCheckpointsResult {
  readonly outPath: string;
  readonly tensors: number;
  /** Names of the tensors that were merged (the rest were copied from the base). */
  readonly merged: readonly string[];
  readonly bytes: number;
}

interface PlannedTensor extends PlannedTensorInfo {
  readonly merge: boolean;
}

function bytesOf(t: Tensor): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

/**
 * Merges fine-tuned checkpoints into a new safetensors model, one tensor at a time: for each
 * merged tensor, τ_i = θ_i − θ_base goes through `method` and θ_base + τ_merged is written in
 * the base tensor's dtype (or `dtype`). Headers are checked (every model must have each merged tensor with the
 * base's shape) and the output layout is computed from them before anything is written, so peak
 * memory is one tensor per model plus the result. The write is atomic.
 */
export function mergeCheckpoints(opts: MergeCheckpointsOptions): MergeCheckpointsResult {
  checkMergeCheckpointsArgs(opts);
  const method = typeof opts.method === "string" ? getMergeMethod(opts.method) : opts.method;
  if (method.name === "concat") throw new ConfigError(`merge method '${method.name}'`, "method", "concat changes tensor shapes; it cannot produce a checkpoint of the base architecture");
  if (opts.models.length === 0) throw new ConfigError("mergeCheckpoints", "models", "needs at least one fine-tuned model");
  const resolved = resolveMergeParams(method, opts.params, opts.models.map((m) => m.params));
  if (method.random && !opts.rng) throw new ConfigError(`merge method '${method.name}'`, "rng", "this method drops entries at random: pass a seeded generator");

  const base = SafetensorsFile.open(opts.base);
  const models: SafetensorsFile[] = [];
  try {
    for (const m of opts.models) models.push(SafetensorsFile.open(m.path));
    const plan: PlannedTensor[] = [];
    for (const key of base.keys()) {
      const info = base.info(key);
      const merge = isFloatDtype(info.dtype) && acceptsTensor(opts.include, key);
      if (merge) {
        models.forEach((m, i) => {
          if (!m.has(key)) throw new MissingTensorError(opts.models[i]!.path, key, "every model must have each merged tensor; exclude it with 'include'");
          const mi = m.info(key);
          if (!sameShape(mi.shape, info.shape)) throw new ShapeMismatchError(key, info.shape, mi.shape, `${opts.models[i]!.path} vs base ${opts.base}`);
        });
      }
      const dtype = opts.dtype && isFloatDtype(info.dtype) ? opts.dtype : info.dtype;
      plan.push({ key, dtype, shape: [...info.shape], merge });
    }
    const { header, dataBytes } = safetensorsHeader(plan, { format: "pt", ...base.metadata, ...(opts.metadata ?? {}) });
    const merged: string[] = [];
    writeFileAtomicWith(opts.outPath, (fd) => {
      writeAll(fd, header);
      plan.forEach((p, index) => {
        const b = base.get(p.key);
        const checked = (t: Tensor): Tensor => {
          if (!opts.allowNonFinite) assertFinite([[p.key, t]], `the merged model ${opts.outPath} (pass --allow-non-finite / allowNonFinite to write it anyway)`);
          return t;
        };
        if (!p.merge) {
          writeAll(fd, bytesOf(checked(b.dtype === p.dtype ? b : fromFloat64(p.dtype, p.shape, toFloat64(b)))));
        } else {
          const theta = toFloat64(b);
          const taus = models.map((m) => {
            const x = toFloat64(m.get(p.key));
            const tau = new Float64Array(x.length);
            for (let i = 0; i < x.length; i++) tau[i] = x[i]! - theta[i]!;
            return tensor("float64", p.shape, tau);
          });
          const mixed = method.run({ tensors: taus, params: resolved.params, perModel: resolved.perModel, key: p.key, base: b, ...(opts.rng ? { rng: opts.rng } : {}) });
          if (!sameShape(mixed.shape, p.shape)) throw new ShapeMismatchError(p.key, p.shape, mixed.shape, `output of merge method '${method.name}'`);
          const out = new Float64Array(theta.length);
          for (let i = 0; i < out.length; i++) out[i] = theta[i]! + mixed.data[i]!;
          writeAll(fd, bytesOf(checked(fromFloat64(p.dtype, p.shape, out))));
          merged.push(p.key);
        }
        opts.onTensor?.(p.key, index, plan.length);
      });
    });
    return { outPath: opts.outPath, tensors: plan.length, merged, bytes: header.byteLength + dataBytes };
  } finally {
    for (const m of models) m.close();
    base.close();
  }
}
