/**
 * Shared pieces of tuners whose update is a dense ΔW per linear layer ([out, in], PEFT's
 * `get_delta_weight`): the graph form base(x) + x·ΔWᵀ with LyCORIS-style rank and module
 * dropout, merging ΔW into a stored weight, host matrix products and PyTorch's default inits.
 */
import { ConfigError, ShapeMismatchError, UnsupportedOptionError } from "../../errors.js";
import * as G from "../../graph/api.js";
import { dense } from "../../graph/composite.js";
import type { Value } from "../../graph/types.js";
import type { LinearSite } from "../../models/context.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { isTargeted, type TargetingConfig } from "./target.js";
import type { BaseModelInfo, ConvModule, LinearModule } from "./types.js";

/** Row-major [m, k]·[k, n] in float64. */
export function matmul64(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number): Float64Array {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) {
      const v = a[i * k + p]!;
      if (v === 0) continue;
      for (let j = 0; j < n; j++) out[i * n + j]! += v * b[p * n + j]!;
    }
  }
  return out;
}

/** The stored weight (`[out, in]`, or `[in, out]` for GPT-2's Conv1D) as [out, in] in float64. */
export function weightOutIn(weight: Tensor, fanInFanOut: boolean): Float64Array {
  const w = toFloat32(weight);
  if (!fanInFanOut) return Float64Array.from(w);
  const [d0, d1] = weight.shape as [number, number];
  const out = new Float64Array(w.length);
  for (let i = 0; i < d0; i++) for (let o = 0; o < d1; o++) out[o * d0 + i] = w[i * d1 + o]!;
  return out;
}

/** An [out, in] float64 matrix as a float32 tensor in the stored layout of `like`. */
export function toStoredLayout(m: Float64Array, like: Tensor, fanInFanOut: boolean): Tensor {
  const [d0, d1] = like.shape as [number, number];
  const res = new Float32Array(m.length);
  if (!fanInFanOut) res.set(m);
  else for (let i = 0; i < d0; i++) for (let o = 0; o < d1; o++) res[i * d1 + o] = m[o * d0 + i]!;
  return { dtype: "float32", shape: [d0, d1], data: res };
}

/** W + ΔW in the stored layout (ΔW is [out, in]). */
export function addDelta(weight: Tensor, delta: Float64Array, fanInFanOut: boolean): Tensor {
  const w = weightOutIn(weight, fanInFanOut);
  if (w.length !== delta.length) throw new ShapeMismatchError("delta weight", weight.shape, [delta.length], "adapter does not fit the base weight");
  for (let i = 0; i < w.length; i++) w[i]! += delta[i]!;
  return toStoredLayout(w, weight, fanInFanOut);
}

export interface DeltaDropout {
  readonly training: boolean;
  readonly seed: number;
  /** Probability of dropping each output row of ΔW in a training step. */
  readonly rankDropout: number;
  /** Rescale the kept rows by 1/mean(kept) (LoHa always, LoKr with `rank_dropout_scale`). */
  readonly rankDropoutScale: boolean;
  /** Probability of skipping the whole update in a training step. */
  readonly moduleDropout: number;
}

/**
 * base(x) + x·ΔWᵀ for ΔW [out, in]; in training, LyCORIS' rank dropout (random output rows of ΔW
 * zeroed) and module dropout (the whole update skipped) as PEFT's LoHa/LoKr layers do.
 */
export function applyDeltaWeight(site: LinearSite, delta: Value, d: DeltaDropout): Value {
  let w = delta;
  if (d.training && d.rankDropout > 0) {
    const rows = G.reduceSum(delta, [1], true); // [out, 1], only its shape is used
    let keep = G.cast(G.greater(G.randomUniformLike(rows, d.seed, "float32"), d.rankDropout), delta.dtype);
    if (d.rankDropoutScale) keep = G.div(keep, G.reduceMean(keep, [0, 1], true));
    w = G.mul(w, site.g.stopGradient(keep));
  }
  let y = dense(site.x, w, null, { transB: true });
  if (d.training && d.moduleDropout > 0) {
    const u = G.randomUniformLike(G.reduceSum(delta, [0, 1], false), d.seed + 7919, "float32");
    y = G.mul(y, site.g.stopGradient(G.cast(G.greater(u, d.moduleDropout), y.dtype)));
  }
  return G.add(site.base(site.x), y);
}

/**
 * The linear and convolution modules a (resolved) config adapts; none is an error naming
 * `target_modules` and what exists.
 */
export function adaptedModules(c: TargetingConfig & { readonly targetModules: unknown }, model: BaseModelInfo, method: string): { linear: LinearModule[]; conv: ConvModule[] } {
  const linear = model.linearModules.filter((m) => isTargeted(c, m.name));
  const conv = model.convModules.filter((m) => isTargeted(c, m.name));
  if (linear.length === 0 && conv.length === 0) {
    const suffixes = [...new Set(model.linearModules.map((m) => m.name.split(".").pop()!))].join(", ");
    const convs = model.convModules.length > 0 ? `; its convolution layers: ${model.convModules.map((m) => m.name).join(", ")}` : "";
    throw new ConfigError(
      "adapter_config.json",
      "target_modules",
      `${method}: no module of this ${model.modelType} model matches ${JSON.stringify(c.targetModules)}; its linear layers end in: ${suffixes}${convs}`,
    );
  }
  return { linear, conv };
}

/**
 * The linear modules a (resolved) config adapts, for methods that adapt linear layers only: a
 * targeted convolution is an UnsupportedOptionError naming it (LoRA and FLoRA adapt convolutions).
 */
export function linearTargets(c: TargetingConfig & { readonly targetModules: unknown }, model: BaseModelInfo, method: string): LinearModule[] {
  const { linear, conv } = adaptedModules(c, model, method);
  if (conv.length > 0) {
    throw new UnsupportedOptionError("adapter_config.json", "target_modules", conv[0]!.name, `${method} adapts linear layers; ${conv[0]!.name} is a convolution (LoRA and FLoRA adapt convolutions)`);
  }
  return linear;
}

/** W + ΔW for a kernel of any rank (ΔW in the kernel's own row-major layout). */
export function addKernelDelta(weight: Tensor, delta: ArrayLike<number>): Tensor {
  const w = toFloat32(weight);
  if (w.length !== delta.length) throw new ShapeMismatchError("delta weight", weight.shape, [delta.length], "adapter does not fit the base kernel");
  return { dtype: "float32", shape: [...weight.shape], data: Float32Array.from(w, (v, i) => v + delta[i]!) };
}

/** PyTorch `kaiming_uniform_(a=√5)` for a 2-D tensor of `shape` (nn.Linear's default): U(±1/√shape[1]). */
export function kaimingUniform(shape: readonly [number, number], rng: { uniform(): number }): Tensor {
  const bound = 1 / Math.sqrt(shape[1]);
  return { dtype: "float32", shape: [...shape], data: Float32Array.from({ length: shape[0] * shape[1] }, () => (rng.uniform() * 2 - 1) * bound) };
}

export function zeros(shape: readonly number[]): Tensor {
  return { dtype: "float32", shape: [...shape], data: new Float32Array(shape.reduce((a, b) => a * b, 1)) };
}
