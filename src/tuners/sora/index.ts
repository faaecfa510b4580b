/**
 * SoRA (Ding et al., *Sparse Low-rank Adaptation of Pre-trained Language Models*, EMNLP 2023):
 * LoRA with a gate vector g between the factors,
 * output = base(x) + (lora_alpha / r)·B·diag(g)·A·dropout(x),
 * g optimised by proximal gradient for an L1 penalty: after each optimizer step (the host AdamW,
 * as the official `SparseAdamW` takes its Adam step) every gate entry is soft-thresholded,
 * g ← sign(g)·max(|g| − ξ, 0), so ranks whose gate reaches zero drop out (their A row and B column
 * get no gradient any more). ξ is `sparse_lambda` (the official code's `sparse_lambda_2`, the
 * paper's ξ), a threshold per step. The sparsifying scheduler (`lambda_schedule` `linear`,
 * `log_linear`, `exp_linear`) raises ξ in `lambda_num` equal stages of `total_step` from
 * `sparse_lambda` to `max_lambda`, as the official `step_lambda`.
 *
 * After training, `toLora` removes the zeroed ranks: each module becomes a LoRA of rank
 * r' = #{g_k ≠ 0} with A' = diag(g_kept)·A_kept, B' = B_kept and alpha' = lora_alpha·r'/r (same
 * scaling), written with `rank_pattern` / `alpha_pattern`; modules with r' = 0 are left out.
 *
 * Tensors `<module>.sora_A` [r, in] (Kaiming-uniform), `<module>.sora_B` [out, r] (zero),
 * `<module>.sora_gate` [r] (standard normal, as the official `torch.randn(1, r)`).
 */
import { z } from "zod";
import { ConfigError } from "../../errors.js";
import * as G from "../../graph/api.js";
import { dense, dropout } from "../../graph/composite.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { addDelta, kaimingUniform, linearTargets } from "../common/delta.js";
import { type ExportedFactors, type LoraLikeConfig, loraExport, loraLikeToRaw, parseLoraLike } from "../common/lora-like.js";
import { resolveAllLinear } from "../common/target.js";
import { rejectFeedforward, savedModules } from "../common/train.js";
import type { BaseModelInfo, LinearModule, TensorRole, TrainingAllocator, TunerDef } from "../common/types.js";

export type LambdaSchedule = "linear" | "log_linear" | "exp_linear";

export interface SoraConfig extends LoraLikeConfig {
  readonly peftType: "SORA";
  /** ξ: the soft threshold applied to the gates after every optimizer step. */
  readonly sparseLambda: number;
  readonly lambdaSchedule: LambdaSchedule | null;
  readonly maxLambda: number | null;
  readonly lambdaNum: number | null;
  /** Optimizer steps of the run (the scheduler's stages); null without a schedule. */
  readonly totalStep: number | null;
}

export const soraKeys = (module: string) => ({ A: `${module}.sora_A`, B: `${module}.sora_B`, gate: `${module}.sora_gate` });

function moduleOf(key: string): string | null {
  const m = /^(.*)\.sora_(A|B|gate)$/u.exec(key);
  return m ? m[1]! : null;
}

export function parseSoraConfig(raw: Readonly<Record<string, unknown>>, file: string): SoraConfig {
  const { base, own } = parseLoraLike(raw, file, "SORA", {
    sparse_lambda: z.number().min(0).optional(),
    lambda_schedule: z.enum(["linear", "log_linear", "exp_linear"]).nullable().optional(),
    max_lambda: z.number().min(0).nullable().optional(),
    lambda_num: z.number().int().positive().nullable().optional(),
    total_step: z.number().int().positive().nullable().optional(),
  });
  const schedule = own.lambda_schedule ?? null;
  const sparseLambda = own.sparse_lambda ?? 1e-3;
  if (schedule !== null) {
    for (const k of ["max_lambda", "lambda_num", "total_step"] as const) {
      if (own[k] === undefined || own[k] === null) throw new ConfigError(file, k, `lambda_schedule '${schedule}' needs max_lambda, lambda_num and total_step (as the official SparseAdamW)`);
    }
    if (schedule !== "linear" && (sparseLambda <= 0 || own.max_lambda! <= 0)) throw new ConfigError(file, "sparse_lambda", `a ${schedule} schedule needs sparse_lambda and max_lambda > 0`);
  }
  return {
    ...base,
    peftType: "SORA",
    sparseLambda,
    lambdaSchedule: schedule,
    maxLambda: own.max_lambda ?? null,
    lambdaNum: own.lambda_num ?? null,
    totalStep: own.total_step ?? null,
  };
}

function toRaw(c: SoraConfig): Record<string, unknown> {
  return { ...loraLikeToRaw(c), sparse_lambda: c.sparseLambda, lambda_schedule: c.lambdaSchedule, max_lambda: c.maxLambda, lambda_num: c.lambdaNum, total_step: c.totalStep };
}

/** The thresholds of the sparsifying scheduler's stages (one value without a schedule), as the official `_build_lambda_list`. */
export function lambdaStages(c: SoraConfig): number[] {
  if (c.lambdaSchedule === null) return [c.sparseLambda];
  const n = c.lambdaNum!;
  const [lo, hi] = [c.sparseLambda, c.maxLambda!];
  const lin = (a: number, b: number) => Array.from({ length: n }, (_, i) => (n === 1 ? a : a + ((b - a) * i) / (n - 1)));
  switch (c.lambdaSchedule) {
    case "linear":
      return lin(lo, hi);
    case "log_linear":
      return lin(Math.exp(lo), Math.exp(hi)).map(Math.log);
    case "exp_linear":
      return lin(Math.log(lo), Math.log(hi)).map(Math.exp);
  }
}

/** ξ at optimizer step `step` (0-based): stage ⌊step / ⌈total_step / lambda_num⌉⌋. */
export function lambdaAt(c: SoraConfig, step: number): number {
  const stages = lambdaStages(c);
  if (stages.length === 1) return stages[0]!;
  const len = Math.ceil(c.totalStep! / stages.length);
  return stages[Math.min(stages.length - 1, Math.floor(step / len))]!;
}

/** The proximal operator of ξ·‖g‖₁ in place: g ← sign(g)·max(|g| − ξ, 0). */
export function softThreshold(g: Float32Array, xi: number): void {
  for (let i = 0; i < g.length; i++) {
    const v = g[i]!;
    g[i] = v > xi ? v - xi : v < -xi ? v + xi : 0;
  }
}

function targets(c: SoraConfig, model: BaseModelInfo): LinearModule[] {
  return linearTargets(c, model, "SoRA");
}

function role(key: string): TensorRole | null {
  const module = moduleOf(key);
  if (module === null) return null;
  if (key.endsWith(".sora_A")) return { kind: "update", module, baseline: 0, lowRank: "A" };
  if (key.endsWith(".sora_B")) return { kind: "update", module, baseline: 0, lowRank: "B" };
  return { kind: "state", module };
}

/** Kept rank (non-zero gates) per adapted module. */
export function soraRanks(tensors: ReadonlyMap<string, Tensor>): Map<string, number> {
  const out = new Map<string, number>();
  for (const [k, t] of tensors) {
    if (!k.endsWith(".sora_gate")) continue;
    out.set(k.slice(0, -".sora_gate".length), toFloat32(t).filter((v) => v !== 0).length);
  }
  return out;
}

/** The pruned factors of one module: A' = diag(g_kept)·A_kept [r', in], B' = B_kept [out, r']. */
function pruned(A: Tensor, B: Tensor, gate: Tensor): { A: Float32Array; B: Float32Array; r: number } {
  const [r, inn] = A.shape as [number, number];
  const out = B.shape[0]!;
  const g = toFloat32(gate);
  const a = toFloat32(A);
  const b = toFloat32(B);
  const kept = [...g.keys()].filter((k) => g[k] !== 0);
  const rp = kept.length;
  const na = new Float32Array(rp * inn);
  const nb = new Float32Array(out * rp);
  kept.forEach((k, j) => {
    for (let i = 0; i < inn; i++) na[j * inn + i] = g[k]! * a[k * inn + i]!;
    for (let o = 0; o < out; o++) nb[o * rp + j] = b[o * r + k]!;
  });
  return { A: na, B: nb, r: rp };
}

/** ΔW = (α/r)·B·diag(g)·A as [out, in] (float64). */
export function soraDeltaWeight(A: Tensor, B: Tensor, gate: Tensor, scale: number): Float64Array {
  const [r, inn] = A.shape as [number, number];
  const out = B.shape[0]!;
  const a = toFloat32(A);
  const b = toFloat32(B);
  const g = toFloat32(gate);
  const d = new Float64Array(out * inn);
  for (let o = 0; o < out; o++) {
    for (let k = 0; k < r; k++) {
      const f = b[o * r + k]! * g[k]! * scale;
      if (f === 0) continue;
      for (let i = 0; i < inn; i++) d[o * inn + i]! += f * a[k * inn + i]!;
    }
  }
  return d;
}

/** The proximal step after every optimizer step (soft-thresholding of the gates at the scheduled ξ). */
class GateProximal implements TrainingAllocator<SoraConfig> {
  constructor(private readonly config: SoraConfig) {}

  afterStep(step: number, values: ReadonlyMap<string, Float32Array>): void {
    const xi = lambdaAt(this.config, step);
    if (xi === 0) return;
    for (const [k, v] of values) if (k.endsWith(".sora_gate")) softThreshold(v, xi);
  }

  finish(): null {
    return null;
  }
}

export const sora: TunerDef<SoraConfig> = {
  name: "sora",
  peftType: "SORA",
  prefix: "sora_",
  method: "sora",
  kind: "module",
  role,
  parseConfig: parseSoraConfig,
  toRaw,
  resolve: resolveAllLinear,
  expectedTensors(c, model) {
    const out = new Map<string, readonly number[]>();
    for (const m of targets(c, model)) {
      const k = soraKeys(m.name);
      out.set(k.A, [c.r, m.inFeatures]);
      out.set(k.B, [m.outFeatures, c.r]);
      out.set(k.gate, [c.r]);
    }
    return out;
  },
  init(c, model, rng) {
    const out = new Map<string, Tensor>();
    for (const m of targets(c, model)) {
      const k = soraKeys(m.name);
      out.set(k.A, kaimingUniform([c.r, m.inFeatures], rng));
      out.set(k.B, { dtype: "float32", shape: [m.outFeatures, c.r], data: new Float32Array(m.outFeatures * c.r) });
      out.set(k.gate, { dtype: "float32", shape: [c.r], data: Float32Array.from({ length: c.r }, () => rng.normal()) });
    }
    return out;
  },
  hooks(adapter, param, opts) {
    const c = adapter.config;
    return {
      linear: (name) => {
        const k = soraKeys(name);
        if (!adapter.tensors.has(k.A)) return null;
        return (site) => {
          const x = opts.training && c.loraDropout > 0 ? dropout(site.x, c.loraDropout, opts.seed) : site.x;
          const h = G.mul(dense(x, param(k.A), null, { transB: true }), param(k.gate)); // [.., r] ⊙ g
          return dense(h, param(k.B), site.base(site.x), { transB: true, alpha: c.loraAlpha / c.r });
        };
      },
    };
  },
  merge(adapter, model) {
    const c = adapter.config;
    const out = new Map<string, Tensor>();
    for (const m of model.linearModules) {
      const k = soraKeys(m.name);
      const A = adapter.tensors.get(k.A);
      if (!A) continue;
      out.set(`${m.name}.weight`, addDelta(model.weight(`${m.name}.weight`), soraDeltaWeight(A, adapter.tensors.get(k.B)!, adapter.tensors.get(k.gate)!, c.loraAlpha / c.r), m.fanInFanOut));
    }
    return out;
  },
  toLora(adapter, model) {
    const c = adapter.config;
    const factors = new Map<string, ExportedFactors>();
    const copied = new Map<string, Tensor>();
    for (const [key, t] of adapter.tensors) if (role(key) === null) copied.set(key, t);
    for (const m of model.linearModules) {
      const k = soraKeys(m.name);
      const A = adapter.tensors.get(k.A);
      if (!A) continue;
      const p = pruned(A, adapter.tensors.get(k.B)!, adapter.tensors.get(k.gate)!);
      if (p.r === 0) continue; // every rank pruned: the module is left as the base
      factors.set(m.name, { A: p.A, B: p.B, r: p.r, inFeatures: m.inFeatures, outFeatures: m.outFeatures, alpha: (c.loraAlpha * p.r) / c.r });
    }
    return loraExport(c, factors, copied);
  },
  training: {
    allocator: (adapter) => new GateProximal(adapter.config),
  },
  trainConfig(o, model) {
    rejectFeedforward(o, "sora");
    return {
      peft_type: "SORA",
      task_type: o.taskType,
      r: o.r,
      lora_alpha: o.alpha,
      lora_dropout: o.dropout,
      target_modules: o.target ?? [...model.defaultTargets],
      ...(o.totalSteps !== undefined ? { total_step: o.totalSteps } : {}),
      ...savedModules(o),
      ...(model.linearModules.some((m) => m.fanInFanOut) ? { fan_in_fan_out: true } : {}),
    };
  },
};
