/**
 * DyLoRA (Valipour et al., EACL 2023): LoRA trained for a range of ranks at once by nested
 * dropout. Each training step samples one rank b uniformly from [`r_min`, `r`] (the same b for
 * every layer of the step) and runs the truncated adapter
 * output = base(x) + (lora_alpha / b)·B[:, :b]·A[:b]·dropout(x),
 * so only the first b rows of A and columns of B get gradients; the representation is sorted by
 * rank and after one run the adapter is usable at every rank b in [r_min, r]. Inference uses the
 * full rank `r` (α/r); `toLora` exports any rank b as a plain PEFT LoRA adapter (A[:b], B[:, :b],
 * r = b, lora_alpha unchanged: the scaling α/b of the paper's eq. 5).
 *
 * The rank is drawn inside the graph (an ONNX RandomUniformLike seeded per adapter, as dropout
 * is), so a compiled training graph samples a new rank on every run; its mask
 * m_k = [k < b]·α/b scales the r rank-1 activations.
 *
 * `frozen` (the official code's `set_rank(rank, frozen=True)`, the paper's "frozen" mode): the
 * forward is the same truncated adapter, but only the b-th row of A and the b-th column of B get
 * gradients — A[:b−1] and B[:, :b−1] enter the step detached. In the graph
 * A_f = stop(A) + e_b·(A − stop(A)) with e_b the one-hot of rank b (the same draw as the mask), so
 * A_f equals A exactly and its gradient is the upstream one on row b only (B likewise by column).
 *
 * Tensors `<module>.dylora_A` [r, in] (Kaiming-uniform, as LoRA's A) and `<module>.dylora_B`
 * [out, r] (zero). adapter_config.json: `peft_type: "DYLORA"`, LoRA's `r` (r_max), `lora_alpha`,
 * `lora_dropout`, targeting fields, plus `r_min` (default 1) and `frozen` (default false).
 */
import { z } from "zod";
import { ConfigError } from "../../errors.js";
import * as G from "../../graph/api.js";
import { dense, dropout } from "../../graph/composite.js";
import type { Value } from "../../graph/types.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { addDelta, kaimingUniform, linearTargets } from "../common/delta.js";
import { type ExportedFactors, type LoraLikeConfig, loraExport, loraLikeToRaw, parseLoraLike } from "../common/lora-like.js";
import { resolveAllLinear } from "../common/target.js";
import { rejectFeedforward, savedModules } from "../common/train.js";
import type { BaseModelInfo, LinearModule, TensorRole, TunerDef } from "../common/types.js";

export interface DyLoraConfig extends LoraLikeConfig {
  readonly peftType: "DYLORA";
  /** Smallest rank sampled in training (the largest is `r`). */
  readonly rMin: number;
  /** Train only the sampled rank's row of A and column of B at each step (the paper's "frozen" mode). */
  readonly frozen: boolean;
}

export const dyloraKeys = (module: string) => ({ A: `${module}.dylora_A`, B: `${module}.dylora_B` });

function moduleOf(key: string): string | null {
  const m = /^(.*)\.dylora_[AB]$/u.exec(key);
  return m ? m[1]! : null;
}

export function parseDyLoraConfig(raw: Readonly<Record<string, unknown>>, file: string): DyLoraConfig {
  const { base, own } = parseLoraLike(raw, file, "DYLORA", { r_min: z.number().int().positive().optional(), frozen: z.boolean().optional() });
  const rMin = own.r_min ?? 1;
  if (rMin > base.r) throw new ConfigError(file, "r_min", `${rMin} exceeds r ${base.r} (DyLoRA samples ranks in [r_min, r])`);
  return { ...base, peftType: "DYLORA", rMin, frozen: own.frozen ?? false };
}

function toRaw(c: DyLoraConfig): Record<string, unknown> {
  return { ...loraLikeToRaw(c), r_min: c.rMin, ...(c.frozen ? { frozen: true } : {}) };
}

function targets(c: DyLoraConfig, model: BaseModelInfo): LinearModule[] {
  return linearTargets(c, model, "DyLoRA");
}

/**
 * The rank of a training step, drawn uniformly from [rMin, r] by a RandomUniformLike node (`seed`):
 * the per-rank scale m_k = α/b for k < b, 0 beyond, and the one-hot e_k = [k = b − 1] of the same
 * draw. `like` only carries the graph and a run dependency (so the draw is not constant-folded).
 */
export function sampledRank(like: Value, r: number, rMin: number, alpha: number, seed: number, dtype: Value["dtype"]): { scale: Value; last: Value } {
  const g = like.graph;
  const u = G.randomUniformLike(G.reduceSum(G.cast(like, "float32"), [...Array(like.rank).keys()], false), seed, "float32");
  // k < b = rMin + ⌊u·n⌋  ⇔  u·n ≥ k − rMin + 1 (n = r − rMin + 1)
  const un = G.mul(u, r - rMin + 1);
  const below = (offset: number) => G.not(G.less(un, g.constant({ dtype: "float32", shape: [r], data: Float32Array.from({ length: r }, (_, k) => k + offset - rMin + 1) })));
  const keep = below(0);
  const lastRank = G.and(keep, G.not(below(1))); // k < b and not k + 1 < b
  const f = (v: number): Tensor => (dtype === "float64" ? { dtype: "float64", shape: [r], data: new Float64Array(r).fill(v) } : { dtype: "float32", shape: [r], data: new Float32Array(r).fill(v) });
  const mask = G.where(keep, g.constant(f(1)), g.constant(f(0)));
  const scale = G.mul(G.div(mask, G.reduceSum(mask, [0], true)), alpha);
  const last = G.where(lastRank, g.constant(f(1)), g.constant(f(0)));
  return dtype === "float16" ? { scale: G.cast(scale, "float16"), last: G.cast(last, "float16") } : { scale, last };
}

/** The per-rank scale m_k of a training step (`sampledRank`). */
export function sampledRankScale(like: Value, r: number, rMin: number, alpha: number, seed: number, dtype: Value["dtype"]): Value {
  return sampledRank(like, r, rMin, alpha, seed, dtype).scale;
}

/** `w` with its gradient kept only where `onehot` (broadcast along `w`) is 1: stop(w) + onehot·(w − stop(w)). */
function onlyAt(w: Value, onehot: Value): Value {
  const fixed = w.graph.stopGradient(w);
  return G.add(fixed, G.mul(onehot, G.sub(w, fixed)));
}

function role(key: string): TensorRole | null {
  const module = moduleOf(key);
  if (module === null) return null;
  return { kind: "update", module, baseline: 0, lowRank: key.endsWith("_A") ? "A" : "B" };
}

/** A[:b] and B[:, :b] of one module. */
function truncated(A: Tensor, B: Tensor, b: number): { A: Float32Array; B: Float32Array } {
  const [r, inn] = A.shape as [number, number];
  const out = B.shape[0]!;
  const a = toFloat32(A).slice(0, b * inn);
  const bb = new Float32Array(out * b);
  const src = toFloat32(B);
  for (let o = 0; o < out; o++) for (let k = 0; k < b; k++) bb[o * b + k] = src[o * r + k]!;
  return { A: a, B: bb };
}

/** ΔW at rank b as [out, in] in float64: (α/b)·B[:, :b]·A[:b]. */
export function dyloraDeltaWeight(A: Tensor, B: Tensor, b: number, alpha: number): Float64Array {
  const inn = A.shape[1]!;
  const out = B.shape[0]!;
  const t = truncated(A, B, b);
  const d = new Float64Array(out * inn);
  for (let o = 0; o < out; o++) {
    for (let k = 0; k < b; k++) {
      const f = (t.B[o * b + k]! * alpha) / b;
      if (f === 0) continue;
      for (let i = 0; i < inn; i++) d[o * inn + i]! += f * t.A[k * inn + i]!;
    }
  }
  return d;
}

export const dylora: TunerDef<DyLoraConfig> = {
  name: "dylora",
  peftType: "DYLORA",
  prefix: "dylora_",
  method: "dylora",
  kind: "module",
  role,
  parseConfig: parseDyLoraConfig,
  toRaw,
  resolve: resolveAllLinear,
  expectedTensors(c, model) {
    const out = new Map<string, readonly number[]>();
    for (const m of targets(c, model)) {
      const k = dyloraKeys(m.name);
      out.set(k.A, [c.r, m.inFeatures]);
      out.set(k.B, [m.outFeatures, c.r]);
    }
    return out;
  },
  init(c, model, rng) {
    const out = new Map<string, Tensor>();
    for (const m of targets(c, model)) {
      const k = dyloraKeys(m.name);
      out.set(k.A, kaimingUniform([c.r, m.inFeatures], rng));
      out.set(k.B, { dtype: "float32", shape: [m.outFeatures, c.r], data: new Float32Array(m.outFeatures * c.r) });
    }
    return out;
  },
  hooks(adapter, param, opts) {
    const c = adapter.config;
    return {
      linear: (name) => {
        const k = dyloraKeys(name);
        if (!adapter.tensors.has(k.A)) return null;
        return (site) => {
          const x = opts.training && c.loraDropout > 0 ? dropout(site.x, c.loraDropout, opts.seed) : site.x;
          let A = param(k.A);
          let B = param(k.B);
          if (!opts.training) return dense(dense(x, A, null, { transB: true }), B, site.base(site.x), { transB: true, alpha: c.loraAlpha / c.r });
          // one rank per step for every layer: the same seed gives every layer's generator the same sequence
          const { scale, last } = sampledRank(site.x, c.r, c.rMin, c.loraAlpha, opts.seed + 7919, A.dtype);
          if (c.frozen) {
            // only row b of A and column b of B are trained this step
            A = onlyAt(A, G.unsqueeze(last, [1]));
            B = onlyAt(B, last);
          }
          const h = dense(x, A, null, { transB: true }); // [.., r]
          return dense(G.mul(h, scale), B, site.base(site.x), { transB: true });
        };
      },
    };
  },
  merge(adapter, model) {
    const c = adapter.config;
    const out = new Map<string, Tensor>();
    for (const m of model.linearModules) {
      const k = dyloraKeys(m.name);
      const A = adapter.tensors.get(k.A);
      if (!A) continue;
      out.set(`${m.name}.weight`, addDelta(model.weight(`${m.name}.weight`), dyloraDeltaWeight(A, adapter.tensors.get(k.B)!, c.r, c.loraAlpha), m.fanInFanOut));
    }
    return out;
  },
  toLora(adapter, model, opts) {
    const c = adapter.config;
    const b = opts.rank ?? c.r;
    if (!Number.isInteger(b) || b < 1 || b > c.r) throw new ConfigError("export", "rank", `${b} is outside DyLoRA's trained range [${c.rMin}, ${c.r}] (any rank 1…r can be cut; r_min…r were trained)`);
    const factors = new Map<string, ExportedFactors>();
    const copied = new Map<string, Tensor>();
    for (const [key, t] of adapter.tensors) if (role(key) === null) copied.set(key, t);
    for (const m of model.linearModules) {
      const k = dyloraKeys(m.name);
      const A = adapter.tensors.get(k.A);
      if (!A) continue;
      const t = truncated(A, adapter.tensors.get(k.B)!, b);
      factors.set(m.name, { ...t, r: b, inFeatures: m.inFeatures, outFeatures: m.outFeatures, alpha: c.loraAlpha });
    }
    return loraExport(c, factors, copied);
  },
  trainConfig(o, model) {
    rejectFeedforward(o, "dylora");
    return {
      peft_type: "DYLORA",
      task_type: o.taskType,
      r: o.r,
      r_min: 1,
      lora_alpha: o.alpha,
      lora_dropout: o.dropout,
      target_modules: o.target ?? [...model.defaultTargets],
      ...savedModules(o),
      ...(model.linearModules.some((m) => m.fanInFanOut) ? { fan_in_fan_out: true } : {}),
    };
  },
};
