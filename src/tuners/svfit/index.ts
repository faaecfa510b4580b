/**
 * SVFit (*SVFit: Parameter-Efficient Fine-Tuning of Large Pre-Trained Models Using Singular
 * Values*): the pre-trained weight's SVD W = U·Σ·Vᵀ; the top-r singular values are the trainable
 * parameters and the singular vectors stay frozen, i.e. the weight is
 * W' = U_r·diag(s)·V_rᵀ + (W − U_r·diag(s₀)·V_rᵀ) with s initialised to the top-r singular values
 * s₀. The graph computes it as base(x) + ((x·V_r) ⊙ (s − s₀))·U_rᵀ, so the fresh adapter (s = s₀)
 * adds exactly zero: the initial model is the base model, bit for bit.
 *
 * Tensors per layer: `<module>.svfit_s` [r] (trained), frozen `<module>.svfit_s0` [r],
 * `<module>.svfit_U` [out, r] and `<module>.svfit_V` [r, in] (V_rᵀ), saved with the adapter so it
 * does not depend on the SVD routine that made it. The SVD is exact (ml-matrix, as LoRA's PiSSA
 * init). adapter_config.json: `peft_type: "SVFIT"`, `r`, `fan_in_fan_out`, the targeting fields, `init_weights` (false: s = s₀ + noise, for tests);
 * there is no `lora_alpha` (the singular values are the scale). Exports to LoRA as
 * B = U_r, A = diag(s − s₀)·V_rᵀ, lora_alpha = r (scaling 1).
 *
 * The rank rule (the abstract: "the most critical singular values that capture over 99% of the
 * matrix's information"): with `spectrum_threshold` τ (e.g. 0.99) each module's rank is the
 * smallest r whose top singular values hold the share τ of the spectrum's energy,
 * Σ_{i<r} σ_i² ≥ τ·Σ_i σ_i² (the Frobenius norm of the best rank-r approximation). `resolve`
 * computes it from the base weight and writes `rank_pattern` (module → r, exact module names);
 * a saved adapter carries its `rank_pattern`, so loading does not redo the SVD. Without the
 * threshold every module uses `r`.
 */
import { z } from "zod";
import { ConfigError } from "../../errors.js";
import * as G from "../../graph/api.js";
import { dense, dropout } from "../../graph/composite.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { addDelta, linearTargets, weightOutIn } from "../common/delta.js";
import { type ExportedFactors, type LoraLikeConfig, loraExport, loraLikeToRaw, parseLoraLike } from "../common/lora-like.js";
import { resolveAllLinear } from "../common/target.js";
import { rejectFeedforward, savedModules } from "../common/train.js";
import type { BaseModelInfo, LinearModule, TensorRole, TunerDef } from "../common/types.js";
import { topSvd } from "../lora/init.js";
import { Matrix, SingularValueDecomposition } from "ml-matrix";

export interface SvfitConfig extends LoraLikeConfig {
  readonly peftType: "SVFIT";
  /** true (default): s = s₀, the base model exactly; false: s = s₀ + N(0, 1) noise (tests, as PEFT's `init_weights: false`). */
  readonly initWeights: boolean;
  /** The rank rule's energy share τ in (0, 1], or null (every module at `r`). */
  readonly spectrumThreshold: number | null;
  /** Rank per module (exact names), set by the rank rule; modules not listed use `r`. */
  readonly rankPattern: Readonly<Record<string, number>>;
}

/** The rank of module `name`. */
export function svfitRank(c: SvfitConfig, name: string): number {
  return c.rankPattern[name] ?? c.r;
}

/**
 * The rank rule: the smallest r with Σ_{i<r} σ_i² ≥ τ·Σ_i σ_i² (σ sorted descending), at least 1.
 */
export function spectrumRank(singularValues: ArrayLike<number>, threshold: number): number {
  const sq = Array.from(singularValues, (x) => x * x).sort((a, b) => b - a);
  const total = sq.reduce((a, b) => a + b, 0);
  if (!(total > 0)) return 1;
  let acc = 0;
  for (let r = 0; r < sq.length; r++) {
    acc += sq[r]!;
    if (acc >= threshold * total * (1 - 1e-12)) return r + 1;
  }
  return sq.length;
}

export const svfitKeys = (module: string) => ({ s: `${module}.svfit_s`, s0: `${module}.svfit_s0`, U: `${module}.svfit_U`, V: `${module}.svfit_V` });

function moduleOf(key: string): string | null {
  const m = /^(.*)\.svfit_(s|s0|U|V)$/u.exec(key);
  return m ? m[1]! : null;
}

export function parseSvfitConfig(raw: Readonly<Record<string, unknown>>, file: string): SvfitConfig {
  if ("lora_alpha" in raw) throw new ConfigError(file, "lora_alpha", "SVFit has no scaling: the trained singular values are the scale; remove lora_alpha");
  const { base, own } = parseLoraLike(raw, file, "SVFIT", {
    init_weights: z.boolean().optional(),
    spectrum_threshold: z.number().gt(0).lte(1).nullable().optional(),
    rank_pattern: z.record(z.string(), z.number().int().positive()).nullable().optional(),
  });
  return { ...base, peftType: "SVFIT", initWeights: own.init_weights ?? true, spectrumThreshold: own.spectrum_threshold ?? null, rankPattern: own.rank_pattern ?? {} };
}

function toRaw(c: SvfitConfig): Record<string, unknown> {
  const raw = loraLikeToRaw(c);
  delete raw.lora_alpha;
  raw.init_weights = c.initWeights;
  if (c.spectrumThreshold !== null) raw.spectrum_threshold = c.spectrumThreshold;
  if (Object.keys(c.rankPattern).length > 0) raw.rank_pattern = { ...c.rankPattern };
  return raw;
}

function targets(c: SvfitConfig, model: BaseModelInfo): LinearModule[] {
  const ms = linearTargets(c, model, "SVFit");
  for (const m of ms) {
    const r = svfitRank(c, m.name);
    if (r > Math.min(m.inFeatures, m.outFeatures)) throw new ConfigError("adapter_config.json", c.rankPattern[m.name] !== undefined ? "rank_pattern" : "r", `${r} exceeds min(out, in) = ${Math.min(m.inFeatures, m.outFeatures)} of ${m.name}: SVFit trains r singular values of the weight`);
  }
  const names = new Set(ms.map((m) => m.name));
  for (const name of Object.keys(c.rankPattern)) if (!names.has(name)) throw new ConfigError("adapter_config.json", "rank_pattern", `'${name}' is not an adapted module of this model`);
  return ms;
}

/** `resolve`: `all-linear`, then the rank rule's `rank_pattern` from the base weights' spectra (when τ is set and no pattern is saved). */
function resolveSvfit(c: SvfitConfig, model: BaseModelInfo): SvfitConfig {
  const r0 = resolveAllLinear(c, model);
  if (r0.spectrumThreshold === null || Object.keys(r0.rankPattern).length > 0) return r0;
  const rankPattern: Record<string, number> = {};
  for (const m of linearTargets(r0, model, "SVFit")) {
    const w = weightOutIn(model.weight(`${m.name}.weight`), m.fanInFanOut);
    const sv = new SingularValueDecomposition(Matrix.from1DArray(m.outFeatures, m.inFeatures, Array.from(w)), { autoTranspose: true, computeLeftSingularVectors: false, computeRightSingularVectors: false }).diagonal;
    rankPattern[m.name] = spectrumRank(sv, r0.spectrumThreshold);
  }
  return { ...r0, rankPattern };
}

function role(key: string): TensorRole | null {
  const module = moduleOf(key);
  if (module === null) return null;
  return key.endsWith(".svfit_s") ? { kind: "state", module } : { kind: "frozen", module };
}

/** ΔW = U·diag(s − s₀)·Vᵀ as [out, in] (float64). */
export function svfitDeltaWeight(U: Tensor, V: Tensor, s: Tensor, s0: Tensor): Float64Array {
  const [out, r] = U.shape as [number, number];
  const inn = V.shape[1]!;
  const u = toFloat32(U);
  const v = toFloat32(V);
  const ds = Float64Array.from(toFloat32(s), (x, k) => x - toFloat32(s0)[k]!);
  const d = new Float64Array(out * inn);
  for (let o = 0; o < out; o++) {
    for (let k = 0; k < r; k++) {
      const f = u[o * r + k]! * ds[k]!;
      if (f === 0) continue;
      for (let i = 0; i < inn; i++) d[o * inn + i]! += f * v[k * inn + i]!;
    }
  }
  return d;
}

export const svfit: TunerDef<SvfitConfig> = {
  name: "svfit",
  peftType: "SVFIT",
  prefix: "svfit_",
  method: "svfit",
  kind: "module",
  role,
  parseConfig: parseSvfitConfig,
  toRaw,
  resolve: resolveSvfit,
  expectedTensors(c, model) {
    const out = new Map<string, readonly number[]>();
    for (const m of targets(c, model)) {
      const k = svfitKeys(m.name);
      const r = svfitRank(c, m.name);
      out.set(k.s, [r]);
      out.set(k.s0, [r]);
      out.set(k.U, [m.outFeatures, r]);
      out.set(k.V, [r, m.inFeatures]);
    }
    return out;
  },
  init(c, model, rng) {
    const out = new Map<string, Tensor>();
    for (const m of targets(c, model)) {
      const k = svfitKeys(m.name);
      const r = svfitRank(c, m.name);
      const w = weightOutIn(model.weight(`${m.name}.weight`), m.fanInFanOut);
      const { u, s, v } = topSvd(w, m.outFeatures, m.inFeatures, r, null, rng); // u [out, r], v [in, r]
      const vt = new Float32Array(r * m.inFeatures);
      for (let i = 0; i < m.inFeatures; i++) for (let j = 0; j < r; j++) vt[j * m.inFeatures + i] = v[i * r + j]!;
      const s0 = Float32Array.from(s);
      const sv = c.initWeights ? Float32Array.from(s0) : Float32Array.from(s0, (x) => x + rng.normal());
      out.set(k.s, { dtype: "float32", shape: [r], data: sv });
      out.set(k.s0, { dtype: "float32", shape: [r], data: s0 });
      out.set(k.U, { dtype: "float32", shape: [m.outFeatures, r], data: Float32Array.from(u) });
      out.set(k.V, { dtype: "float32", shape: [r, m.inFeatures], data: vt });
    }
    return out;
  },
  hooks(adapter, param, opts) {
    const c = adapter.config;
    return {
      linear: (name) => {
        const k = svfitKeys(name);
        if (!adapter.tensors.has(k.s)) return null;
        return (site) => {
          const x = opts.training && c.loraDropout > 0 ? dropout(site.x, c.loraDropout, opts.seed) : site.x;
          const h = G.mul(dense(x, param(k.V), null, { transB: true }), G.sub(param(k.s), param(k.s0))); // [.., r] ⊙ (s − s₀)
          return dense(h, param(k.U), site.base(site.x), { transB: true });
        };
      },
    };
  },
  merge(adapter, model) {
    const out = new Map<string, Tensor>();
    for (const m of model.linearModules) {
      const k = svfitKeys(m.name);
      const s = adapter.tensors.get(k.s);
      if (!s) continue;
      out.set(`${m.name}.weight`, addDelta(model.weight(`${m.name}.weight`), svfitDeltaWeight(adapter.tensors.get(k.U)!, adapter.tensors.get(k.V)!, s, adapter.tensors.get(k.s0)!), m.fanInFanOut));
    }
    return out;
  },
  toLora(adapter, model) {
    const c = adapter.config;
    const factors = new Map<string, ExportedFactors>();
    const copied = new Map<string, Tensor>();
    for (const [key, t] of adapter.tensors) if (role(key) === null) copied.set(key, t);
    for (const m of model.linearModules) {
      const k = svfitKeys(m.name);
      const s = adapter.tensors.get(k.s);
      if (!s) continue;
      const ds = Float32Array.from(toFloat32(s), (x, j) => x - toFloat32(adapter.tensors.get(k.s0)!)[j]!);
      const v = toFloat32(adapter.tensors.get(k.V)!);
      const A = Float32Array.from(v, (x, i) => x * ds[Math.floor(i / m.inFeatures)]!);
      const r = s.shape[0]!;
      factors.set(m.name, { A, B: Float32Array.from(toFloat32(adapter.tensors.get(k.U)!)), r, inFeatures: m.inFeatures, outFeatures: m.outFeatures, alpha: r });
    }
    return loraExport(c, factors, copied);
  },
  trainConfig(o, model) {
    rejectFeedforward(o, "svfit");
    return {
      peft_type: "SVFIT",
      task_type: o.taskType,
      r: o.r,
      lora_dropout: o.dropout,
      target_modules: o.target ?? [...model.defaultTargets],
      ...savedModules(o),
      ...(model.linearModules.some((m) => m.fanInFanOut) ? { fan_in_fan_out: true } : {}),
    };
  },
};
