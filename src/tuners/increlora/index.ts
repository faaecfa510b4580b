/**
 * IncreLoRA (Zhang et al. 2023, "Incremental Parameter Allocation Method for Parameter-Efficient
 * Fine-tuning"; `peft_type` `INCRELORA`, as the authors' PEFT fork names it): every target module
 * starts with a small rank and the rank allocator (`allocator.ts`) adds rank-1 components
 * (P_k, λ_k, Q_k) to the most important modules during training until a total rank budget is
 * spent. The update is SVD-shaped as AdaLoRA's, ΔW = scale · B·diag(E)·A, with `lora_A` [R, in],
 * `lora_E` [R, 1], `lora_B` [out, R].
 *
 * The graph is compiled once per run, so a module's tensors are allocated at a fixed capacity
 * R = `max_r` and the allocator keeps the slots beyond the module's current rank at zero (their
 * gradients are then exactly zero). `scale` = lora_alpha / target_r is constant (the authors'
 * code divides by the current rank, which changes as ranks grow; a compiled graph keeps it fixed).
 * While training, each module also carries a zero probe `lora_probe` [out, in] added to ΔW (times
 * PROBE_GAIN): its gradient is PROBE_GAIN·∇_ΔW L, which the paper's importance score |ΔW ⊙ ∇_ΔW L| needs (the factors'
 * gradients only see projections of it); the allocator resets it to zero after every step.
 *
 * After training `rank_pattern` ({module: rank}) is set and only the allocated components are
 * kept (no probe); `toLora` (`peft export-lora`) writes that adapter as a plain PEFT LoRA (E and the scale folded into
 * B, `rank_pattern`/`alpha_pattern` per module).
 */
import { z } from "zod";
import { ConfigError } from "../../errors.js";
import * as G from "../../graph/api.js";
import { dense, dropout } from "../../graph/composite.js";
import type { Value } from "../../graph/types.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { COMMON_KEYS, baseFields, baseSchema, parseWith, rejectNonDefault, rejectUnknownKeys } from "../common/config.js";
import { addDelta, linearTargets } from "../common/delta.js";
import { type ExportedFactors, loraExport } from "../common/lora-like.js";
import { type TargetSpec, resolveAllLinear } from "../common/target.js";
import { rejectFeedforward, savedModules } from "../common/train.js";
import type { BaseModelInfo, LinearModule, TensorRole, TunerConfigBase, TunerDef } from "../common/types.js";
import { LORA_IMPLEMENTED_FIELDS, NOT_IMPLEMENTED, WHY, loraConfigToRaw, parseLoraConfig } from "../lora/config.js";
import { IncreAllocator } from "./allocator.js";

export interface IncreLoraConfig extends TunerConfigBase {
  readonly peftType: "INCRELORA";
  readonly loraAlpha: number;
  readonly loraDropout: number;
  readonly fanInFanOut: boolean;
  readonly targetModules: TargetSpec | null;
  readonly excludeModules: TargetSpec | null;
  readonly layersToTransform: readonly number[] | null;
  readonly layersPattern: readonly string[] | null;
  /** Rank every module starts with. */
  readonly initR: number;
  /** Average rank the budget allows: the budget is target_r × modules unless `target_total_rank` is set. */
  readonly targetR: number;
  readonly targetTotalRank: number | null;
  /** Capacity of a module (peft-ts: the compiled graph's fixed size). */
  readonly maxR: number;
  /** Steps between two allocations, and the warm-up before the first. */
  readonly increInterval: number;
  readonly initWarmup: number;
  /** Modules that grow per allocation, and the ranks each of them gains. */
  readonly topH: number;
  readonly increRankNum: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly orthRegWeight: number;
  /** Module → its allocated rank, after training; null while training. */
  readonly rankPattern: Readonly<Record<string, number>> | null;
}

export const increKeys = (module: string) => ({ A: `${module}.lora_A`, B: `${module}.lora_B`, E: `${module}.lora_E`, probe: `${module}.lora_probe` });

export function increModuleOf(key: string): string | null {
  const m = /^(.*)\.lora_(A|B|E|probe)$/u.exec(key);
  return m ? m[1]! : null;
}

/** Fixed value of the reserve components' λ (the authors' "advance learning": P, Q learn before λ does). */
export const RESERVE_E = Math.fround(1e-5);

/**
 * The probe enters as PROBE_GAIN·x·probeᵀ, so its gradient is PROBE_GAIN·∇_ΔW L: small enough that
 * it does not weigh in the global gradient norm that clipping (`max_grad_norm`) computes.
 */
export const PROBE_GAIN = 1e-3;

const FIELDS = {
  init_r: z.number().int().positive().optional(),
  target_r: z.number().int().positive().optional(),
  target_total_rank: z.number().int().positive().nullable().optional(),
  max_r: z.number().int().positive().optional(),
  incre_interval: z.number().int().positive().optional(),
  init_warmup: z.number().int().nonnegative().optional(),
  top_h: z.number().int().positive().optional(),
  incre_rank_num: z.number().int().positive().nullable().optional(),
  beta1: z.number().gt(0).lt(1).optional(),
  beta2: z.number().gt(0).lt(1).optional(),
  orth_reg_weight: z.number().min(0).optional(),
  rank_pattern: z.record(z.string(), z.number().int().positive()).nullable().optional(),
};

/** LoRA fields IncreLoRA shares (as PEFT's `IncreLoraConfig(LoraConfig)`); r is unused, as in AdaLoRA. */
const LORA_FIELDS: readonly string[] = LORA_IMPLEMENTED_FIELDS.filter((k) => k !== "rank_pattern");

const schema = z.object({ ...baseSchema, peft_type: z.literal("INCRELORA"), ...FIELDS });

export function parseIncreLoraConfig(raw: Readonly<Record<string, unknown>>, file: string): IncreLoraConfig {
  rejectUnknownKeys(raw, [...COMMON_KEYS, ...LORA_FIELDS, ...Object.keys(FIELDS), ...Object.keys(NOT_IMPLEMENTED)], file);
  rejectNonDefault(raw, file, NOT_IMPLEMENTED, WHY);
  for (const [k, ok, why] of [
    ["use_dora", raw.use_dora === undefined || raw.use_dora === false, "IncreLoRA has no DoRA form"],
    ["use_rslora", raw.use_rslora === undefined || raw.use_rslora === false, "IncreLoRA's scale is lora_alpha / target_r"],
    ["bias", raw.bias === undefined || raw.bias === "none", "only bias 'none' is implemented"],
    ["init_lora_weights", raw.init_lora_weights === undefined || raw.init_lora_weights === true, "IncreLoRA initialises as its authors do (λ = 0, P, Q ~ N(0, 0.02²))"],
    ["alpha_pattern", raw.alpha_pattern === undefined || raw.alpha_pattern === null || Object.keys(raw.alpha_pattern as object).length === 0, "IncreLoRA uses lora_alpha for every module"],
  ] as const) {
    if (!ok) throw new ConfigError(file, k, why);
  }
  const loraPart = Object.fromEntries(Object.entries(raw).filter(([k]) => LORA_FIELDS.includes(k) || (COMMON_KEYS as readonly string[]).includes(k)));
  const l = parseLoraConfig({ ...loraPart, peft_type: "LORA" }, file);
  const c = parseWith(schema.passthrough(), raw, file);
  const targetR = c.target_r ?? 8;
  const initR = c.init_r ?? 1;
  const maxR = c.max_r ?? 3 * targetR;
  if (initR > maxR) throw new ConfigError(file, "init_r", `${initR} exceeds max_r ${maxR}`);
  const increRankNum = c.incre_rank_num ?? Math.max(1, Math.floor(targetR / 2));
  return {
    ...baseFields(c),
    peftType: "INCRELORA",
    loraAlpha: l.loraAlpha,
    loraDropout: l.loraDropout,
    fanInFanOut: l.fanInFanOut,
    targetModules: l.targetModules,
    excludeModules: l.excludeModules,
    layersToTransform: l.layersToTransform,
    layersPattern: l.layersPattern,
    initR,
    targetR,
    targetTotalRank: c.target_total_rank ?? null,
    maxR,
    increInterval: c.incre_interval ?? 10,
    initWarmup: c.init_warmup ?? 0,
    topH: c.top_h ?? 2,
    increRankNum,
    beta1: c.beta1 ?? 0.85,
    beta2: c.beta2 ?? 0.85,
    orthRegWeight: c.orth_reg_weight ?? 0.1,
    rankPattern: c.rank_pattern ?? null,
  };
}

export function increLoraConfigToRaw(c: IncreLoraConfig): Record<string, unknown> {
  const lora = parseLoraConfig({ peft_type: "LORA" }, "internal");
  const base = loraConfigToRaw({ ...lora, ...c, peftType: "LORA", r: c.targetR, useRslora: false, useDora: false, bias: "none", init: { kind: "kaiming" }, rankPattern: {}, alphaPattern: {} });
  return {
    ...base,
    peft_type: "INCRELORA",
    init_r: c.initR,
    target_r: c.targetR,
    target_total_rank: c.targetTotalRank,
    max_r: c.maxR,
    incre_interval: c.increInterval,
    init_warmup: c.initWarmup,
    top_h: c.topH,
    incre_rank_num: c.increRankNum,
    beta1: c.beta1,
    beta2: c.beta2,
    orth_reg_weight: c.orthRegWeight,
    rank_pattern: c.rankPattern ? { ...c.rankPattern } : null,
  };
}

function targets(c: IncreLoraConfig, model: BaseModelInfo): LinearModule[] {
  return linearTargets(c, model, "IncreLoRA");
}

/** Components a module's tensors hold: its `rank_pattern` rank after training, else the capacity `max_r`. */
export function increSlots(c: IncreLoraConfig, module: string): number {
  if (!c.rankPattern) return c.maxR;
  const r = c.rankPattern[module];
  if (r === undefined) throw new ConfigError("adapter_config.json", "rank_pattern", `has no rank for target module '${module}'`);
  return r;
}

/** lora_alpha / target_r. */
export const increScale = (c: IncreLoraConfig): number => c.loraAlpha / c.targetR;

function role(key: string): TensorRole | null {
  const module = increModuleOf(key);
  if (module === null) return null;
  if (key.endsWith(".lora_A")) return { kind: "update", module, baseline: 0, lowRank: "A" };
  if (key.endsWith(".lora_B")) return { kind: "update", module, baseline: 0, lowRank: "B" };
  return { kind: "update", module, baseline: 0 };
}

/** ΔW = scale·B·diag(E)·A (+ probe) as [out, in], float64. */
export function increDelta(A: Tensor, E: Tensor, B: Tensor, probe: Tensor | undefined, scale: number): Float64Array {
  const [r, inn] = A.shape as [number, number];
  const out = B.shape[0]!;
  const a = toFloat32(A);
  const b = toFloat32(B);
  const e = toFloat32(E);
  const d = probe ? Float64Array.from(toFloat32(probe), (v) => v * PROBE_GAIN) : new Float64Array(out * inn);
  for (let o = 0; o < out; o++) {
    for (let k = 0; k < r; k++) {
      const f = b[o * r + k]! * e[k]! * scale;
      if (f === 0) continue;
      for (let i = 0; i < inn; i++) d[o * inn + i]! += f * a[k * inn + i]!;
    }
  }
  return d;
}

export const increlora: TunerDef<IncreLoraConfig> = {
  name: "increlora",
  peftType: "INCRELORA",
  prefix: "lora_probe",
  method: "increlora",
  kind: "module",
  role,
  parseConfig: parseIncreLoraConfig,
  toRaw: increLoraConfigToRaw,
  resolve: resolveAllLinear,
  expectedTensors(c, model) {
    const out = new Map<string, readonly number[]>();
    for (const m of targets(c, model)) {
      const r = increSlots(c, m.name);
      const k = increKeys(m.name);
      out.set(k.A, [r, m.inFeatures]);
      out.set(k.E, [r, 1]);
      out.set(k.B, [m.outFeatures, r]);
      if (!c.rankPattern) out.set(k.probe, [m.outFeatures, m.inFeatures]);
    }
    return out;
  },
  init(c, model, rng) {
    // the authors' init: λ = 0, P and Q ~ N(0, 0.02²) for the first init_r components; the reserve
    // components (the next incre_rank_num) have λ fixed at 1e-5 and P, Q ~ N(0, 0.02²); the rest of the capacity is zero
    const out = new Map<string, Tensor>();
    for (const m of targets(c, model)) {
      const r = increSlots(c, m.name);
      const k = increKeys(m.name);
      const live = c.rankPattern ? r : Math.min(r, c.initR + c.increRankNum);
      const A = new Float32Array(r * m.inFeatures);
      const B = new Float32Array(m.outFeatures * r);
      const E = new Float32Array(r);
      for (let s = 0; s < live; s++) {
        for (let i = 0; i < m.inFeatures; i++) A[s * m.inFeatures + i] = rng.normal() * 0.02;
        for (let o = 0; o < m.outFeatures; o++) B[o * r + s] = rng.normal() * 0.02;
        if (s >= c.initR && !c.rankPattern) E[s] = RESERVE_E;
      }
      out.set(k.A, { dtype: "float32", shape: [r, m.inFeatures], data: A });
      out.set(k.E, { dtype: "float32", shape: [r, 1], data: E });
      out.set(k.B, { dtype: "float32", shape: [m.outFeatures, r], data: B });
      if (!c.rankPattern) out.set(k.probe, { dtype: "float32", shape: [m.outFeatures, m.inFeatures], data: new Float32Array(m.outFeatures * m.inFeatures) });
    }
    return out;
  },
  hooks(adapter, param, opts) {
    const c = adapter.config;
    const scale = increScale(c);
    return {
      linear: (name) => {
        const k = increKeys(name);
        if (!adapter.tensors.has(k.A)) return null;
        return (site) => {
          const x = opts.training && c.loraDropout > 0 ? dropout(site.x, c.loraDropout, opts.seed) : site.x;
          const ae = G.mul(param(k.A), param(k.E)); // [R, in] ⊙ [R, 1]
          let y = dense(dense(x, ae, null, { transB: true }), param(k.B), site.base(site.x), { transB: true, alpha: scale });
          if (adapter.tensors.has(k.probe)) y = dense(x, param(k.probe), y, { transB: true, alpha: PROBE_GAIN });
          return y;
        };
      },
    };
  },
  merge(adapter, model) {
    const out = new Map<string, Tensor>();
    const scale = increScale(adapter.config);
    for (const m of model.linearModules) {
      const k = increKeys(m.name);
      const A = adapter.tensors.get(k.A);
      if (!A) continue;
      const delta = increDelta(A, adapter.tensors.get(k.E)!, adapter.tensors.get(k.B)!, adapter.tensors.get(k.probe), scale);
      out.set(`${m.name}.weight`, addDelta(model.weight(`${m.name}.weight`), delta, m.fanInFanOut));
    }
    return out;
  },
  toLora(adapter, _model, opts) {
    const c = adapter.config;
    if (opts.rank !== null) throw new ConfigError("peft export-lora", "--rank", "applies to DyLoRA; an IncreLoRA adapter exports at its allocated ranks");
    if (!c.rankPattern) throw new ConfigError("peft export-lora", "rank_pattern", "this IncreLoRA adapter has not finished training (no rank_pattern): its ranks are not allocated yet");
    const scale = increScale(c);
    const factors = new Map<string, ExportedFactors>();
    const copied = new Map<string, Tensor>();
    for (const [key, A] of adapter.tensors) {
      if (role(key) === null) copied.set(key, A);
      if (!key.endsWith(".lora_A")) continue;
      const m = key.slice(0, -".lora_A".length);
      const k = increKeys(m);
      const [r, inn] = A.shape as [number, number];
      const b = toFloat32(adapter.tensors.get(k.B)!);
      const e = toFloat32(adapter.tensors.get(k.E)!);
      const out = b.length / r;
      // B·diag(E)·scale as lora_B, lora_alpha = r (scaling 1)
      const B = new Float32Array(out * r);
      for (let o = 0; o < out; o++) for (let s = 0; s < r; s++) B[o * r + s] = b[o * r + s]! * e[s]! * scale;
      factors.set(m, { A: Float32Array.from(toFloat32(A)), B, r, inFeatures: inn, outFeatures: out, alpha: r });
    }
    return loraExport({ ...c, r: c.targetR }, factors, copied);
  },
  training: {
    regularizer(adapter, param) {
      // orth_reg_weight · mean over the components' blocks of ‖P·Pᵀ − I‖_F, ‖Qᵀ·Q − I‖_F, as the
      // authors' `compute_orth_regu` over its parameter lists: the first init_r components are one
      // block, every added component its own (‖p‖² − 1); capacity slots at zero add a constant
      const c = adapter.config;
      if (c.orthRegWeight === 0 || c.rankPattern) return null;
      const terms: Value[] = [];
      let blocks = 0;
      for (const key of adapter.tensors.keys()) {
        if (!key.endsWith(".lora_A") && !key.endsWith(".lora_B")) continue;
        const isA = key.endsWith(".lora_A");
        const p = isA ? param(key) : G.transpose(param(key), [1, 0]); // rows = components
        const R = adapter.tensors.get(key)!.shape[isA ? 0 : 1]!;
        const first = G.slice(p, [0], [c.initR], [0]);
        const cov = G.matmul(first, G.transpose(first, [1, 0]));
        const eye = p.graph.constant({ dtype: p.dtype, shape: [c.initR, c.initR], data: eyeOf(c.initR, p.dtype === "float64") } as Tensor);
        const d = G.sub(cov, eye);
        terms.push(G.sqrt(G.reduceSum(G.mul(d, d), [0, 1], false)));
        blocks++;
        if (R > c.initR) {
          const rest = G.slice(p, [c.initR], [R], [0]);
          terms.push(G.reduceSum(G.abs(G.sub(G.reduceSum(G.mul(rest, rest), [1], false), 1)), [0], false));
          blocks += R - c.initR;
        }
      }
      if (terms.length === 0) return null;
      return G.mul(terms.reduce((a, b) => G.add(a, b)), c.orthRegWeight / blocks);
    },
    allocator(adapter) {
      return new IncreAllocator(adapter);
    },
  },
  trainConfig(o, model) {
    rejectFeedforward(o, "increlora");
    const targetR = o.r;
    const incre = Math.max(1, Math.floor(targetR / 2));
    const topH = 2;
    const raw: Record<string, unknown> = {
      peft_type: "INCRELORA",
      task_type: o.taskType,
      init_r: 1,
      target_r: targetR,
      lora_alpha: o.alpha,
      lora_dropout: o.dropout,
      top_h: topH,
      incre_rank_num: incre,
      target_modules: o.target ?? [...model.defaultTargets],
      ...savedModules(o),
      ...(model.linearModules.some((m) => m.fanInFanOut) ? { fan_in_fan_out: true } : {}),
    };
    if (o.totalSteps !== undefined) {
      // spend the budget in the first half of the run (the authors' runs reach it well before the end)
      const modules = linearTargets(resolveAllLinear(parseIncreLoraConfig(raw, "peft train"), model), model, "IncreLoRA").length;
      const rounds = Math.max(1, Math.ceil((targetR - 1) * modules / (topH * incre)));
      raw.incre_interval = Math.max(1, Math.floor(o.totalSteps / 2 / rounds));
    }
    return raw;
  },
};

function eyeOf(r: number, f64: boolean): Float32Array | Float64Array {
  const d = f64 ? new Float64Array(r * r) : new Float32Array(r * r);
  for (let i = 0; i < r; i++) d[i * r + i] = 1;
  return d;
}
