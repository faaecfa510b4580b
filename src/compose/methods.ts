/**
 * Merge methods on task vectors, as a mergekit-style registry. Each method combines several
 * task-vector tensors (τ_i = θ_i − θ_base) of one parameter into one merged task vector; the
 * caller adds it to the base weight. Methods declare their global `params` and `perModelParams`
 * with defaults, and `MERGE_METHODS` lists them explicitly (nothing registers by side effect).
 *
 * The generalized task arithmetic family follows mergekit's `GeneralizedTaskArithmeticMerge`:
 *   1. sparsify each τ_i (magnitude: keep the top-density entries; random: DARE's Bernoulli drop),
 *      optionally rescaled by 1/density;
 *   2. weight: δ_i = w_i · τ_i;
 *   3. with sign consensus (TIES): elect the sign of each entry from Σ_i δ_i (`sum`) or from the
 *      count of signs (`count`), keep only agreeing δ_i and divide by Σ w_i over the agreeing
 *      models (the weighted disjoint mean, when `normalize`); without consensus: Σ_i δ_i, divided
 *      by Σ w_i when `normalize`;
 *   4. scale by λ.
 */
import { ConfigError, ShapeMismatchError, UnknownMergeMethodError } from "../errors.js";
import { checkMergeTensorsArgs } from "./args.js";
import { type Tensor, numel, tensor, toFloat64 } from "../tensor.js";
import { pcbMerge } from "./pcb.js";
import { type SignConsensus, type UniformRng, magnitudePrune, randomPrune, signOf } from "./sparsify.js";
import { truncatedSvd } from "./svd.js";

export type MergeParamValue = number | boolean | string;

export interface MergeParamDef {
  readonly type: "number" | "integer" | "boolean" | "string";
  /** Absent: the parameter is required. */
  readonly default?: MergeParamValue;
  /** Allowed values of a string parameter. */
  readonly choices?: readonly string[];
  /** Inclusive range of a number or integer parameter. */
  readonly min?: number;
  readonly max?: number;
  readonly description: string;
}

export type MergeParams = Readonly<Record<string, MergeParamValue>>;

export interface MergeRunInput {
  /** Task-vector tensors, one per model, in model order. */
  readonly tensors: readonly Tensor[];
  /** Global parameters, validated and with defaults filled in. */
  readonly params: MergeParams;
  /** Per-model parameters (same order as `tensors`), validated and with defaults filled in. */
  readonly perModel: readonly MergeParams[];
  /** Seeded generator for methods with `random: true`. */
  readonly rng?: UniformRng;
  /** Name of the tensor being merged, for error messages. */
  readonly key: string;
  /**
   * The base model's tensor (θ_base), for methods defined on the models themselves rather than
   * on their task vectors (mergekit's `linear`). `mergeCheckpoints` always passes it.
   */
  readonly base?: Tensor;
}

export interface MergeMethodDef {
  readonly name: string;
  readonly title: string;
  /** Reference (paper) URL. */
  readonly paper: string;
  readonly params: Readonly<Record<string, MergeParamDef>>;
  readonly perModelParams: Readonly<Record<string, MergeParamDef>>;
  /** Whether `run` draws from `rng`. */
  readonly random: boolean;
  run(input: MergeRunInput): Tensor<"float32">;
}

const WEIGHT: MergeParamDef = { type: "number", default: 1, description: "weight w_i of this model's task vector" };
const DENSITY: MergeParamDef = { type: "number", default: 1, min: 0, max: 1, description: "fraction of entries kept by sparsification" };
const LAMBDA: MergeParamDef = { type: "number", default: 1, description: "scale λ applied to the merged task vector" };

export function numberParam(p: MergeParams, name: string): number {
  const v = p[name];
  if (typeof v !== "number") throw new ConfigError("merge parameters", name, `expected a number, got ${JSON.stringify(v)}`);
  return v;
}

function boolParam(p: MergeParams, name: string): boolean {
  const v = p[name];
  if (typeof v !== "boolean") throw new ConfigError("merge parameters", name, `expected a boolean, got ${JSON.stringify(v)}`);
  return v;
}

function stringParam(p: MergeParams, name: string): string {
  const v = p[name];
  if (typeof v !== "string") throw new ConfigError("merge parameters", name, `expected a string, got ${JSON.stringify(v)}`);
  return v;
}

function checkSameShape(tensors: readonly Tensor[], key: string): readonly number[] {
  if (tensors.length === 0) throw new ConfigError("merge", key, "no task vectors to merge");
  const shape = tensors[0]!.shape;
  for (const t of tensors) {
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new ShapeMismatchError(key, shape, t.shape, "all task vectors of a merge must have the same shape");
    }
  }
  return shape;
}

function out(shape: readonly number[], data: Float64Array): Tensor<"float32"> {
  return tensor("float32", shape, Float32Array.from(data));
}

export interface TaskArithmeticOptions {
  readonly name: string;
  readonly title: string;
  readonly paper: string;
  /** Default sign consensus (the method then has a `consensus` parameter); null: plain weighted sum. */
  readonly consensus: SignConsensus | null;
  /** Sparsification applied to each task vector first; null: none. */
  readonly sparsify: "magnitude" | "random" | null;
  readonly defaultNormalize: boolean;
  readonly defaultRescale: boolean;
}

/** One member of the generalized task arithmetic family (mergekit `GeneralizedTaskArithmeticMerge`). */
export function taskArithmetic(o: TaskArithmeticOptions): MergeMethodDef {
  const params: Record<string, MergeParamDef> = {
    normalize: { type: "boolean", default: o.defaultNormalize, description: "divide by the sum of the (agreeing) weights" },
    lambda: LAMBDA,
  };
  if (o.sparsify) params.rescale = { type: "boolean", default: o.defaultRescale, description: "divide kept entries by density" };
  if (o.consensus) {
    params.consensus = {
      type: "string",
      default: o.consensus,
      choices: ["sum", "count"],
      description: "sign election: by total mass (sum, PEFT 'total') or by count (PEFT 'frequency')",
    };
  }
  const perModelParams: Record<string, MergeParamDef> = o.sparsify ? { weight: WEIGHT, density: DENSITY } : { weight: WEIGHT };
  return {
    name: o.name,
    title: o.title,
    paper: o.paper,
    params,
    perModelParams,
    random: o.sparsify === "random",
    run({ tensors, params: p, perModel, rng, key }) {
      const shape = checkSameShape(tensors, key);
      const n = numel(shape);
      const where = `merge method '${o.name}' (${key})`;
      const weights = perModel.map((m) => numberParam(m, "weight"));
      const deltas = tensors.map((t, i) => {
        const x = toFloat64(t);
        if (o.sparsify === "magnitude") return magnitudePrune(x, numberParam(perModel[i]!, "density"), boolParam(p, "rescale"), where);
        if (o.sparsify === "random") {
          if (!rng) throw new ConfigError(where, "rng", "this method drops entries at random: pass a seeded generator");
          return randomPrune(x, numberParam(perModel[i]!, "density"), rng, boolParam(p, "rescale"), where);
        }
        return x;
      });
      for (let i = 0; i < deltas.length; i++) {
        const d = deltas[i]!;
        const w = weights[i]!;
        for (let k = 0; k < n; k++) d[k] = d[k]! * w;
      }
      const normalize = boolParam(p, "normalize");
      const lambda = numberParam(p, "lambda");
      const consensus = o.consensus ? (stringParam(p, "consensus") as SignConsensus) : null;
      const mixed = new Float64Array(n);
      const weightSum = weights.reduce((s, w) => s + w, 0);
      for (let k = 0; k < n; k++) {
        let sum = 0;
        let divisor: number;
        if (consensus) {
          let elect = 0;
          for (const d of deltas) elect += consensus === "sum" ? d[k]! : signOf(d[k]!);
          const majority = elect >= 0 ? 1 : -1;
          divisor = 0;
          for (let i = 0; i < deltas.length; i++) {
            const v = deltas[i]![k]!;
            if (signOf(v) === majority) {
              sum += v;
              divisor += weights[i]!;
            }
          }
          if (divisor === 0) divisor = 1;
        } else {
          for (const d of deltas) sum += d[k]!;
          divisor = Math.abs(weightSum) < 1e-8 ? 1 : weightSum;
        }
        mixed[k] = (normalize ? sum / divisor : sum) * lambda;
      }
      return out(shape, mixed);
    },
  };
}

const TIES_PAPER = "https://arxiv.org/abs/2306.01708";
const DARE_PAPER = "https://arxiv.org/abs/2311.03099";

/** Weighted sum (optionally normalised) then the best rank-k approximation of 2-D (or more) tensors. */
const svdMethod: MergeMethodDef = {
  name: "svd",
  title: "SVD re-factorisation",
  paper: "https://huggingface.co/docs/peft/main/en/package_reference/lora#peft.LoraModel.add_weighted_adapter",
  params: {
    rank: { type: "integer", min: 1, description: "rank k of the merged task vector" },
    normalize: { type: "boolean", default: false, description: "divide by the sum of the weights" },
    lambda: LAMBDA,
  },
  perModelParams: { weight: WEIGHT },
  random: false,
  run(input) {
    const summed = TASK_ARITHMETIC.run(input);
    const shape = summed.shape;
    // 1-D tensors (biases, norms) have no low-rank structure: keep the weighted sum.
    if (shape.length < 2) return summed;
    const rows = shape[0]!;
    const cols = numel(shape) / rows;
    const rank = numberParam(input.params, "rank");
    const f = truncatedSvd(summed.data, rows, cols, rank);
    const data = new Float64Array(rows * cols);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < rank; c++) {
        const u = f.us[r * rank + c]!;
        if (u === 0) continue;
        for (let k = 0; k < cols; k++) data[r * cols + k] += u * f.vh[c * cols + k]!;
      }
    }
    return out(shape, data);
  },
};

/** Weighted concatenation along `axis`; the other dimensions must agree (e.g. LoRA factors of several ranks). */
const concatMethod: MergeMethodDef = {
  name: "concat",
  title: "Concatenation",
  paper: "https://huggingface.co/docs/peft/main/en/package_reference/lora#peft.LoraModel.add_weighted_adapter",
  params: { axis: { type: "integer", default: 0, description: "dimension to concatenate along" } },
  perModelParams: { weight: WEIGHT },
  random: false,
  run({ tensors, params, perModel, key }) {
    if (tensors.length === 0) throw new ConfigError("merge", key, "no tensors to concatenate");
    const first = tensors[0]!.shape;
    const axis = numberParam(params, "axis");
    if (axis < 0 || axis >= first.length) {
      throw new ConfigError("merge method 'concat'", "axis", `must be in [0, ${first.length - 1}] for '${key}', got ${axis}`);
    }
    for (const t of tensors) {
      if (t.shape.length !== first.length || t.shape.some((d, i) => i !== axis && d !== first[i])) {
        throw new ShapeMismatchError(key, first.map((d, i) => (i === axis ? "*" : d)), t.shape, "concat needs equal sizes off the axis");
      }
    }
    const outer = first.slice(0, axis).reduce((s, d) => s * d, 1);
    const inner = first.slice(axis + 1).reduce((s, d) => s * d, 1);
    const total = tensors.reduce((s, t) => s + t.shape[axis]!, 0);
    const data = new Float64Array(outer * total * inner);
    let offset = 0;
    tensors.forEach((t, i) => {
      const x = toFloat64(t);
      const w = numberParam(perModel[i]!, "weight");
      const len = t.shape[axis]! * inner;
      for (let o = 0; o < outer; o++) {
        const dst = o * total * inner + offset * inner;
        for (let k = 0; k < len; k++) data[dst + k] = w * x[o * len + k]!;
      }
      offset += t.shape[axis]!;
    });
    const shape = [...first];
    shape[axis] = total;
    return out(shape, data);
  },
};

/** PCB-merging (see pcb.ts for the formulas). */
const pcbMethod: MergeMethodDef = {
  name: "pcb",
  title: "PCB-merging (Parameter Competition Balancing)",
  paper: "https://arxiv.org/abs/2410.02396",
  params: {
    ratio: { type: "number", default: 0.1, min: 0, max: 1, description: "fraction r of entries kept per task after balancing" },
    clampRatio: { type: "number", default: 1e-4, min: 0, max: 0.5, description: "fraction of |τ| clipped at each end before balancing" },
    lambda: LAMBDA,
  },
  perModelParams: { weight: WEIGHT },
  random: false,
  run({ tensors, params, perModel, key }) {
    const shape = checkSameShape(tensors, key);
    const r = pcbMerge(
      tensors.map((t) => toFloat64(t)),
      {
        ratio: numberParam(params, "ratio"),
        clampRatio: numberParam(params, "clampRatio"),
        lambda: numberParam(params, "lambda"),
        weights: perModel.map((m) => numberParam(m, "weight")),
      },
    );
    return out(shape, r.merged);
  },
};

const TASK_ARITHMETIC = taskArithmetic({
  name: "task_arithmetic",
  title: "Task Arithmetic",
  paper: "https://arxiv.org/abs/2212.04089",
  consensus: null,
  sparsify: null,
  defaultNormalize: false,
  defaultRescale: false,
});

/** Every merge method peft-ts knows, by name. */
export const MERGE_METHODS = {
  linear: taskArithmetic({
    name: "linear",
    title: "Linear (weighted average)",
    paper: "https://arxiv.org/abs/2203.05482",
    consensus: null,
    sparsify: null,
    defaultNormalize: true,
    defaultRescale: false,
  }),
  task_arithmetic: TASK_ARITHMETIC,
  ties: taskArithmetic({ name: "ties", title: "TIES", paper: TIES_PAPER, consensus: "sum", sparsify: "magnitude", defaultNormalize: true, defaultRescale: false }),
  dare_ties: taskArithmetic({ name: "dare_ties", title: "DARE TIES", paper: DARE_PAPER, consensus: "sum", sparsify: "random", defaultNormalize: false, defaultRescale: true }),
  dare_linear: taskArithmetic({ name: "dare_linear", title: "Linear DARE", paper: DARE_PAPER, consensus: null, sparsify: "random", defaultNormalize: false, defaultRescale: true }),
  magnitude_prune: taskArithmetic({
    name: "magnitude_prune",
    title: "Magnitude pruning",
    paper: TIES_PAPER,
    consensus: null,
    sparsify: "magnitude",
    defaultNormalize: false,
    defaultRescale: false,
  }),
  svd: svdMethod,
  concat: concatMethod,
  pcb: pcbMethod,
} as const satisfies Record<string, MergeMethodDef>;

export type MergeMethodName = keyof typeof MERGE_METHODS;

/** The method called `name`; throws `UnknownMergeMethodError` listing the known names. */
export function getMergeMethod(name: string): MergeMethodDef {
  if (!Object.hasOwn(MERGE_METHODS, name)) throw new UnknownMergeMethodError(name, Object.keys(MERGE_METHODS));
  return MERGE_METHODS[name as MergeMethodName];
}

function resolveOne(defs: Readonly<Record<string, MergeParamDef>>, given: MergeParams | undefined, where: string, path: string): MergeParams {
  const res: Record<string, MergeParamValue> = {};
  for (const k of Object.keys(given ?? {})) {
    if (!Object.hasOwn(defs, k)) {
      const known = Object.keys(defs);
      throw new ConfigError(where, `${path}${k}`, `unknown parameter; known: ${known.length ? known.join(", ") : "(none)"}`);
    }
  }
  for (const [k, def] of Object.entries(defs)) {
    const v = given?.[k] ?? def.default;
    if (v === undefined) throw new ConfigError(where, `${path}${k}`, `is required (${def.description})`);
    res[k] = checkParamValue(where, `${path}${k}`, def, v);
  }
  return res;
}

/** `v` if it has the type (and choices) `def` declares; otherwise a `ConfigError` naming `path` in `where`. */
export function checkParamValue(where: string, path: string, def: MergeParamDef, v: unknown): MergeParamValue {
  const ok =
    def.type === "boolean"
      ? typeof v === "boolean"
      : def.type === "string"
        ? typeof v === "string" && (!def.choices || def.choices.includes(v))
        : typeof v === "number" && Number.isFinite(v) && (def.type === "number" || Number.isInteger(v));
  if (!ok) {
    const want = def.choices ? `one of ${def.choices.join(", ")}` : `a${def.type === "integer" ? "n" : ""} ${def.type}`;
    throw new ConfigError(where, path, `must be ${want}, got ${JSON.stringify(v)}`);
  }
  if (typeof v === "number" && ((def.min !== undefined && v < def.min) || (def.max !== undefined && v > def.max))) {
    throw new ConfigError(where, path, `must be in [${def.min ?? "-∞"}, ${def.max ?? "∞"}] (${def.description}), got ${v}`);
  }
  return v as MergeParamValue;
}

/** Validates parameters against a method's definitions and fills in defaults. */
export function resolveMergeParams(
  method: MergeMethodDef,
  params: MergeParams | undefined,
  perModel: readonly (MergeParams | undefined)[],
  source = `merge method '${method.name}'`,
): { params: MergeParams; perModel: MergeParams[] } {
  return {
    params: resolveOne(method.params, params, source, "parameters."),
    perModel: perModel.map((m, i) => resolveOne(method.perModelParams, m, source, `models[${i}].`)),
  };
}

export interface MergeTensorsOptions {
  readonly params?: MergeParams;
  /** One entry per tensor (undefined: all defaults). */
  readonly perModel?: readonly (MergeParams | undefined)[];
  readonly rng?: UniformRng;
  readonly key?: string;
}

/** Merges task-vector tensors of one parameter with a named (or given) method. */
export function mergeTaskTensors(method: string | MergeMethodDef, tensors: readonly Tensor[], opts: MergeTensorsOptions = {}): Tensor<"float32"> {
  checkMergeTensorsArgs(tensors, opts);
  const def = typeof method === "string" ? getMergeMethod(method) : method;
  const perModelIn = opts.perModel ?? tensors.map(() => undefined);
  if (perModelIn.length !== tensors.length) {
    throw new ConfigError(`merge method '${def.name}'`, "models", `${perModelIn.length} parameter sets for ${tensors.length} tensors`);
  }
  const { params, perModel } = resolveMergeParams(def, opts.params, perModelIn);
  return def.run({ tensors, params, perModel, key: opts.key ?? "tensor", ...(opts.rng ? { rng: opts.rng } : {}) });
}
