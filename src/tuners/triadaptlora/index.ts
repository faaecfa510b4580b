/**
 * TriAdaptLoRA (Liang, Wang, Zeng 2025, "Brain-Inspired Triangular Adaptive Low-Rank Adaptation";
 * `peft_type` `TRIADAPTLORA`, as the authors' PEFT fork names it): ΔW = scale · B·C·A with
 * `lora_A` [R, in], `lora_B` [out, R] and a transformation matrix C [R, R] split into a lower part
 * `lora_C_row` (the row strips) and an upper part `lora_C_col` (the column strips), C = C_row + C_col.
 * A module starts at `init_rank`; when the rank allocator (`allocator.ts`) grows it by k, A gains k
 * rows, B k columns, C_row a strip of k rows [k, n + k] and C_col a strip of k columns [n + k, k]
 * (the triangular split: every growth adds one lower and one upper strip, and the diagonal block
 * is shared). The importance of a module is the change of its normalised Frobenius norm
 * ‖C‖_F / (number of strips) since the last allocation; the number of modules that grow follows
 * the linear (or exponential) threshold schedule of the paper.
 *
 * The graph is compiled once per run: tensors are allocated at the capacity R = `max_r` and the
 * allocator keeps everything outside a module's strips at zero (outside rows/columns then get
 * exactly zero gradients). `scale` = lora_alpha / reference_rank is constant (the authors' code
 * divides by the current rank). New strips start as the authors' layer declares them, C at zero,
 * but A and B rows are drawn N(0, 0.02²) (with A, B and C all at zero no gradient reaches them).
 * After training `rank_pattern` ({module: rank}) is set and the tensors keep the allocated rank;
 * `toLora` (`peft export-lora`) writes the adapter as a plain PEFT LoRA (lora_A = C·A, lora_B = scale·B).
 */
import { z } from "zod";
import { ConfigError } from "../../errors.js";
import * as G from "../../graph/api.js";
import { dense, dropout } from "../../graph/composite.js";
import type { Value } from "../../graph/types.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { COMMON_KEYS, baseFields, baseSchema, parseWith, rejectNonDefault, rejectUnknownKeys } from "../common/config.js";
import { addDelta, linearTargets, matmul64 } from "../common/delta.js";
import { type ExportedFactors, loraExport } from "../common/lora-like.js";
import { type TargetSpec, resolveAllLinear } from "../common/target.js";
import { rejectFeedforward, savedModules } from "../common/train.js";
import type { BaseModelInfo, LinearModule, TensorRole, TunerConfigBase, TunerDef } from "../common/types.js";
import { LORA_IMPLEMENTED_FIELDS, NOT_IMPLEMENTED, WHY, loraConfigToRaw, parseLoraConfig } from "../lora/config.js";
import { TriAllocator } from "./allocator.js";

export interface TriAdaptLoraConfig extends TunerConfigBase {
  readonly peftType: "TRIADAPTLORA";
  readonly loraAlpha: number;
  readonly loraDropout: number;
  readonly fanInFanOut: boolean;
  readonly targetModules: TargetSpec | null;
  readonly excludeModules: TargetSpec | null;
  readonly layersToTransform: readonly number[] | null;
  readonly layersPattern: readonly string[] | null;
  /** Average rank of the budget (target_total_rank = reference_rank × modules unless set). */
  readonly referenceRank: number;
  readonly initRank: number;
  readonly targetTotalRank: number | null;
  /** Capacity of a module (peft-ts: the compiled graph's fixed size). */
  readonly maxR: number;
  readonly initWarmup: number;
  readonly increInterval: number;
  /** Ranks a growing module gains per allocation. */
  readonly increRankNum: number;
  readonly rankGrowthModel: "linear" | "non-linear";
  readonly orthRegWeight: number;
  readonly totalStep: number;
  readonly rankPattern: Readonly<Record<string, number>> | null;
}

export const triKeys = (module: string) => ({ A: `${module}.lora_A`, B: `${module}.lora_B`, row: `${module}.lora_C_row`, col: `${module}.lora_C_col` });

export function triModuleOf(key: string): string | null {
  const m = /^(.*)\.lora_(A|B|C_row|C_col)$/u.exec(key);
  return m ? m[1]! : null;
}

const FIELDS = {
  reference_rank: z.number().int().positive().optional(),
  init_rank: z.number().int().positive().optional(),
  target_total_rank: z.number().int().positive().nullable().optional(),
  max_r: z.number().int().positive().optional(),
  init_warmup: z.number().int().nonnegative().optional(),
  incre_interval: z.number().int().positive().optional(),
  incre_rank_num: z.number().int().positive().nullable().optional(),
  rank_growth_model: z.enum(["linear", "non-linear"]).optional(),
  orth_reg_weight: z.number().min(0).optional(),
  total_step: z.number().int().positive().nullable().optional(),
  top_k: z.number().int().optional(),
  weight_decay: z.number().optional(),
  rank_pattern: z.record(z.string(), z.number().int().positive()).nullable().optional(),
};

const LORA_FIELDS: readonly string[] = LORA_IMPLEMENTED_FIELDS.filter((k) => k !== "rank_pattern");

const schema = z.object({ ...baseSchema, peft_type: z.literal("TRIADAPTLORA"), ...FIELDS });

export function parseTriAdaptLoraConfig(raw: Readonly<Record<string, unknown>>, file: string): TriAdaptLoraConfig {
  rejectUnknownKeys(raw, [...COMMON_KEYS, ...LORA_FIELDS, ...Object.keys(FIELDS), ...Object.keys(NOT_IMPLEMENTED)], file);
  rejectNonDefault(raw, file, NOT_IMPLEMENTED, WHY);
  for (const [k, ok, why] of [
    ["use_dora", raw.use_dora === undefined || raw.use_dora === false, "TriAdaptLoRA has no DoRA form"],
    ["use_rslora", raw.use_rslora === undefined || raw.use_rslora === false, "TriAdaptLoRA's scale is lora_alpha / reference_rank"],
    ["bias", raw.bias === undefined || raw.bias === "none", "only bias 'none' is implemented"],
    ["init_lora_weights", raw.init_lora_weights === undefined || raw.init_lora_weights === true, "TriAdaptLoRA initialises C at zero and A, B ~ N(0, 0.02²)"],
    ["alpha_pattern", raw.alpha_pattern === undefined || raw.alpha_pattern === null || Object.keys(raw.alpha_pattern as object).length === 0, "TriAdaptLoRA uses lora_alpha for every module"],
    ["weight_decay", raw.weight_decay === undefined || raw.weight_decay === 0, "the optimizer's weight decay is a training option (--weight-decay)"],
  ] as const) {
    if (!ok) throw new ConfigError(file, k, why);
  }
  const loraPart = Object.fromEntries(Object.entries(raw).filter(([k]) => LORA_FIELDS.includes(k) || (COMMON_KEYS as readonly string[]).includes(k)));
  const l = parseLoraConfig({ ...loraPart, peft_type: "LORA" }, file);
  const c = parseWith(schema.passthrough(), raw, file);
  if (c.total_step === undefined || c.total_step === null) throw new ConfigError(file, "total_step", "TriAdaptLoRA's threshold schedule needs the total number of training steps (> 0)");
  const referenceRank = c.reference_rank ?? 8;
  const initRank = c.init_rank ?? 1;
  const maxR = c.max_r ?? 3 * referenceRank;
  if (initRank > maxR) throw new ConfigError(file, "init_rank", `${initRank} exceeds max_r ${maxR}`);
  const initWarmup = c.init_warmup ?? 0;
  if (initWarmup >= c.total_step) throw new ConfigError(file, "init_warmup", `${initWarmup} ≥ total_step ${c.total_step}: no growth phase`);
  return {
    ...baseFields(c),
    peftType: "TRIADAPTLORA",
    loraAlpha: l.loraAlpha,
    loraDropout: l.loraDropout,
    fanInFanOut: l.fanInFanOut,
    targetModules: l.targetModules,
    excludeModules: l.excludeModules,
    layersToTransform: l.layersToTransform,
    layersPattern: l.layersPattern,
    referenceRank,
    initRank,
    targetTotalRank: c.target_total_rank ?? null,
    maxR,
    initWarmup,
    increInterval: c.incre_interval ?? 1,
    increRankNum: c.incre_rank_num ?? Math.max(1, Math.floor(referenceRank / 2)),
    rankGrowthModel: c.rank_growth_model ?? "linear",
    orthRegWeight: c.orth_reg_weight ?? 0.5,
    totalStep: c.total_step,
    rankPattern: c.rank_pattern ?? null,
  };
}

export function triAdaptLoraConfigToRaw(c: TriAdaptLoraConfig): Record<string, unknown> {
  const lora = parseLoraConfig({ peft_type: "LORA" }, "internal");
  const base = loraConfigToRaw({ ...lora, ...c, peftType: "LORA", r: c.referenceRank, useRslora: false, useDora: false, bias: "none", init: { kind: "kaiming" }, rankPattern: {}, alphaPattern: {} });
  return {
    ...base,
    peft_type: "TRIADAPTLORA",
    reference_rank: c.referenceRank,
    init_rank: c.initRank,
    target_total_rank: c.targetTotalRank,
    max_r: c.maxR,
    init_warmup: c.initWarmup,
    incre_interval: c.increInterval,
    incre_rank_num: c.increRankNum,
    rank_growth_model: c.rankGrowthModel,
    orth_reg_weight: c.orthRegWeight,
    total_step: c.totalStep,
    rank_pattern: c.rankPattern ? { ...c.rankPattern } : null,
  };
}

function targets(c: TriAdaptLoraConfig, model: BaseModelInfo): LinearModule[] {
  return linearTargets(c, model, "TriAdaptLoRA");
}

/** Rank slots a module's tensors hold: its `rank_pattern` rank after training, else the capacity. */
export function triSlots(c: TriAdaptLoraConfig, module: string): number {
  if (!c.rankPattern) return c.maxR;
  const r = c.rankPattern[module];
  if (r === undefined) throw new ConfigError("adapter_config.json", "rank_pattern", `has no rank for target module '${module}'`);
  return r;
}

/** lora_alpha / reference_rank. */
export const triScale = (c: TriAdaptLoraConfig): number => c.loraAlpha / c.referenceRank;

function role(key: string): TensorRole | null {
  const module = triModuleOf(key);
  if (module === null) return null;
  if (key.endsWith(".lora_A")) return { kind: "update", module, baseline: 0, lowRank: "A" };
  if (key.endsWith(".lora_B")) return { kind: "update", module, baseline: 0, lowRank: "B" };
  return { kind: "update", module, baseline: 0 };
}

/** (C_row + C_col)·A as [r, in] and the scaled B [out, r] (float64). */
function loraFactors(A: Tensor, B: Tensor, row: Tensor, col: Tensor, scale: number): { a: Float64Array; b: Float64Array; r: number; inn: number; out: number } {
  const [r, inn] = A.shape as [number, number];
  const out = B.shape[0]!;
  const cr = toFloat32(row);
  const cc = toFloat32(col);
  const C = Float64Array.from(cr, (v, i) => v + cc[i]!);
  return { a: matmul64(C, toFloat32(A), r, r, inn), b: Float64Array.from(toFloat32(B), (v) => v * scale), r, inn, out };
}

/** ΔW = scale·B·(C_row + C_col)·A as [out, in] (float64). */
export function triDelta(A: Tensor, B: Tensor, row: Tensor, col: Tensor, scale: number): Float64Array {
  const f = loraFactors(A, B, row, col, scale);
  return matmul64(f.b, f.a, f.out, f.r, f.inn);
}

export const triadaptlora: TunerDef<TriAdaptLoraConfig> = {
  name: "triadaptlora",
  peftType: "TRIADAPTLORA",
  prefix: "lora_C_",
  method: "triadaptlora",
  kind: "module",
  role,
  parseConfig: parseTriAdaptLoraConfig,
  toRaw: triAdaptLoraConfigToRaw,
  resolve: resolveAllLinear,
  expectedTensors(c, model) {
    const out = new Map<string, readonly number[]>();
    for (const m of targets(c, model)) {
      const r = triSlots(c, m.name);
      const k = triKeys(m.name);
      out.set(k.A, [r, m.inFeatures]);
      out.set(k.B, [m.outFeatures, r]);
      out.set(k.row, [r, r]);
      out.set(k.col, [r, r]);
    }
    return out;
  },
  init(c, model, rng) {
    const out = new Map<string, Tensor>();
    for (const m of targets(c, model)) {
      const r = triSlots(c, m.name);
      const k = triKeys(m.name);
      const live = c.rankPattern ? r : c.initRank;
      const A = new Float32Array(r * m.inFeatures);
      const B = new Float32Array(m.outFeatures * r);
      for (let s = 0; s < live; s++) {
        for (let i = 0; i < m.inFeatures; i++) A[s * m.inFeatures + i] = rng.normal() * 0.02;
        for (let o = 0; o < m.outFeatures; o++) B[o * r + s] = rng.normal() * 0.02;
      }
      out.set(k.A, { dtype: "float32", shape: [r, m.inFeatures], data: A });
      out.set(k.B, { dtype: "float32", shape: [m.outFeatures, r], data: B });
      out.set(k.row, { dtype: "float32", shape: [r, r], data: new Float32Array(r * r) });
      out.set(k.col, { dtype: "float32", shape: [r, r], data: new Float32Array(r * r) });
    }
    return out;
  },
  hooks(adapter, param, opts) {
    const c = adapter.config;
    const scale = triScale(c);
    return {
      linear: (name) => {
        const k = triKeys(name);
        if (!adapter.tensors.has(k.A)) return null;
        return (site) => {
          const x = opts.training && c.loraDropout > 0 ? dropout(site.x, c.loraDropout, opts.seed) : site.x;
          const C = G.add(param(k.row), param(k.col));
          const h = dense(dense(x, param(k.A), null, { transB: true }), C, null, { transB: true }); // x·Aᵀ·Cᵀ
          return dense(h, param(k.B), site.base(site.x), { transB: true, alpha: scale });
        };
      },
    };
  },
  merge(adapter, model) {
    const out = new Map<string, Tensor>();
    const scale = triScale(adapter.config);
    for (const m of model.linearModules) {
      const k = triKeys(m.name);
      const A = adapter.tensors.get(k.A);
      if (!A) continue;
      const delta = triDelta(A, adapter.tensors.get(k.B)!, adapter.tensors.get(k.row)!, adapter.tensors.get(k.col)!, scale);
      out.set(`${m.name}.weight`, addDelta(model.weight(`${m.name}.weight`), delta, m.fanInFanOut));
    }
    return out;
  },
  toLora(adapter, _model, opts) {
    const c = adapter.config;
    if (opts.rank !== null) throw new ConfigError("peft export-lora", "--rank", "applies to DyLoRA; a TriAdaptLoRA adapter exports at its allocated ranks");
    if (!c.rankPattern) throw new ConfigError("peft export-lora", "rank_pattern", "this TriAdaptLoRA adapter has not finished training (no rank_pattern): its ranks are not allocated yet");
    const factors = new Map<string, ExportedFactors>();
    const copied = new Map<string, Tensor>();
    for (const [key, A] of adapter.tensors) {
      if (role(key) === null) copied.set(key, A);
      if (!key.endsWith(".lora_A")) continue;
      const m = key.slice(0, -".lora_A".length);
      const k = triKeys(m);
      // lora_A = (C_row + C_col)·A, lora_B = scale·B, lora_alpha = r (scaling 1)
      const f = loraFactors(A, adapter.tensors.get(k.B)!, adapter.tensors.get(k.row)!, adapter.tensors.get(k.col)!, triScale(c));
      factors.set(m, { A: Float32Array.from(f.a), B: Float32Array.from(f.b), r: f.r, inFeatures: f.inn, outFeatures: f.out, alpha: f.r });
    }
    return loraExport({ ...c, r: c.referenceRank }, factors, copied);
  },
  training: {
    regularizer(adapter, param) {
      // orth_reg_weight · mean over modules of ‖A·Aᵀ − I_r‖_F and ‖Bᵀ·B − I_r‖_F on the allocated
      // rows (I_r: the identity on the non-zero rows, so the zero capacity adds nothing)
      const c = adapter.config;
      if (c.orthRegWeight === 0) return null;
      const terms: Value[] = [];
      for (const key of adapter.tensors.keys()) {
        if (!key.endsWith(".lora_A") && !key.endsWith(".lora_B")) continue;
        const isA = key.endsWith(".lora_A");
        const p = isA ? param(key) : G.transpose(param(key), [1, 0]); // rows = components
        const R = adapter.tensors.get(key)!.shape[isA ? 0 : 1]!;
        const cov = G.matmul(p, G.transpose(p, [1, 0]));
        const eye = p.graph.constant({ dtype: p.dtype, shape: [R, R], data: eyeOf(R, p.dtype === "float64") } as Tensor);
        const live = G.sign(G.reduceSum(G.mul(p, p), [1], true)); // [R, 1]: 1 on allocated rows
        const d = G.sub(cov, G.mul(eye, live));
        terms.push(G.sqrt(G.reduceSum(G.mul(d, d), [0, 1], false)));
      }
      if (terms.length === 0) return null;
      return G.mul(terms.reduce((a, b) => G.add(a, b)), c.orthRegWeight / terms.length);
    },
    allocator(adapter) {
      return new TriAllocator(adapter);
    },
  },
  trainConfig(o, model) {
    rejectFeedforward(o, "triadaptlora");
    if (o.totalSteps === undefined) throw new ConfigError("peft train", "total_step", "TriAdaptLoRA needs the run's total number of steps");
    return {
      peft_type: "TRIADAPTLORA",
      task_type: o.taskType,
      init_rank: 1,
      reference_rank: o.r,
      lora_alpha: o.alpha,
      lora_dropout: o.dropout,
      total_step: o.totalSteps,
      // one allocation every tenth of the run (the authors allocate every incre_interval steps)
      incre_interval: Math.max(1, Math.floor(o.totalSteps / 10)),
      target_modules: o.target ?? [...model.defaultTargets],
      ...savedModules(o),
      ...(model.linearModules.some((m) => m.fanInFanOut) ? { fan_in_fan_out: true } : {}),
    };
  },
};

function eyeOf(r: number, f64: boolean): Float32Array | Float64Array {
  const d = f64 ? new Float64Array(r * r) : new Float32Array(r * r);
  for (let i = 0; i < r; i++) d[i * r + i] = 1;
  return d;
}
