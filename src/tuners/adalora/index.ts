/**
 * AdaLoRA (PEFT `ADALORA`): an SVD-shaped low-rank update per layer,
 * output = base(x) + dropout(x)·(A ⊙ E)ᵀ·Bᵀ · lora_alpha/(ranknum + 1e-5), with `lora_A` [r, in]
 * (right singular vectors), `lora_E` [r, 1] (singular values), `lora_B` [out, r] (left singular
 * vectors) and ranknum = `init_r` (PEFT keeps it at the initial rank, also after pruning; it is not
 * saved). Training adds PEFT's orthogonality regulariser
 * orth_reg_weight · mean over the A and B tensors of ‖A·Aᵀ − I‖_F, ‖Bᵀ·B − I‖_F, and runs PEFT's
 * `RankAllocator` after every optimizer step (see `allocator.ts`): importance |θ·∇θ| smoothed by
 * EMAs (`beta1`, `beta2`), a cubic budget schedule from Σ init_r down to `target_r` per layer
 * between `tinit` and `total_step − tfinal`, every `deltaT` steps the least important singular
 * values zeroed. The final mask becomes `rank_pattern` ({"<module>.lora_E": [kept…]}) and the
 * saved tensors keep only the kept triplets, as PEFT's `save_pretrained` does; loading an adapter
 * with a `rank_pattern` expects those sizes.
 */
import { z } from "zod";
import { ConfigError } from "../../errors.js";
import * as G from "../../graph/api.js";
import { dense, dropout } from "../../graph/composite.js";
import type { Value } from "../../graph/types.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { COMMON_KEYS, baseFields, baseSchema, isNullish, parseWith, rejectNonDefault, rejectUnknownKeys } from "../common/config.js";
import { addDelta, linearTargets } from "../common/delta.js";
import { type TargetSpec, resolveAllLinear } from "../common/target.js";
import { rejectFeedforward, savedModules } from "../common/train.js";
import type { BaseModelInfo, LinearModule, TensorRole, TunerConfigBase, TunerDef } from "../common/types.js";
import { LORA_IMPLEMENTED_FIELDS, NOT_IMPLEMENTED, WHY, loraConfigToRaw, parseLoraConfig } from "../lora/config.js";
import { RankAllocator } from "./allocator.js";

export interface AdaLoraConfig extends TunerConfigBase {
  readonly peftType: "ADALORA";
  readonly r: number;
  readonly loraAlpha: number;
  readonly loraDropout: number;
  readonly useRslora: boolean;
  readonly fanInFanOut: boolean;
  readonly bias: "none" | "all" | "lora_only";
  readonly initLoraWeights: boolean;
  readonly targetModules: TargetSpec | null;
  readonly excludeModules: TargetSpec | null;
  readonly layersToTransform: readonly number[] | null;
  readonly layersPattern: readonly string[] | null;
  readonly targetR: number;
  readonly initR: number;
  readonly tinit: number;
  readonly tfinal: number;
  readonly deltaT: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly orthRegWeight: number;
  readonly totalStep: number;
  /** `<module>.lora_E` → which of the `init_r` triplets are kept; null before any allocation. */
  readonly rankPattern: Readonly<Record<string, readonly boolean[]>> | null;
}

export const adaloraKeys = (module: string) => ({ A: `${module}.lora_A`, B: `${module}.lora_B`, E: `${module}.lora_E` });

export function adaloraModuleOf(key: string): string | null {
  const m = /^(.*)\.lora_[ABE]$/u.exec(key);
  return m ? m[1]! : null;
}

const ADALORA_FIELDS = {
  target_r: z.number().int().nonnegative().optional(),
  init_r: z.number().int().nonnegative().optional(),
  tinit: z.number().int().nonnegative().optional(),
  tfinal: z.number().int().nonnegative().optional(),
  deltaT: z.number().int().positive().optional(),
  beta1: z.number().gt(0).lt(1).optional(),
  beta2: z.number().gt(0).lt(1).optional(),
  orth_reg_weight: z.number().min(0).optional(),
  total_step: z.number().int().positive().nullable().optional(),
  rank_pattern: z.record(z.string(), z.array(z.union([z.boolean(), z.literal(0), z.literal(1)]))).nullable().optional(),
};

/** The LoRA fields AdaLoRA shares (its rank_pattern is its own: per-rank keep masks). */
const LORA_FIELDS: readonly string[] = LORA_IMPLEMENTED_FIELDS.filter((k) => k !== "rank_pattern");

const schema = z.object({
  ...baseSchema,
  peft_type: z.literal("ADALORA"),
  ...ADALORA_FIELDS,
});

export function parseAdaLoraConfig(raw: Readonly<Record<string, unknown>>, file: string): AdaLoraConfig {
  rejectUnknownKeys(raw, [...COMMON_KEYS, ...LORA_FIELDS, ...Object.keys(ADALORA_FIELDS), ...Object.keys(NOT_IMPLEMENTED)], file);
  rejectNonDefault(raw, file, { ...NOT_IMPLEMENTED, alpha_pattern: (v) => isNullish(v) || Object.keys(v as object).length === 0 }, { ...WHY, alpha_pattern: "AdaLoRA uses lora_alpha for every layer (PEFT ignores alpha_pattern)" });
  if (raw.use_dora === true) throw new ConfigError(file, "use_dora", "ADALORA does not support DoRA (as in PEFT)");
  if (typeof raw.init_lora_weights === "string") throw new ConfigError(file, "init_lora_weights", "AdaLoRA takes true (zero E, N(0, 0.02) A and B) or false (standard normal)");
  // the LoRA fields, validated by LoRA's parser (same names, types and checks)
  const loraPart = Object.fromEntries(Object.entries(raw).filter(([k]) => LORA_FIELDS.includes(k) || (COMMON_KEYS as readonly string[]).includes(k)));
  const l = parseLoraConfig({ ...loraPart, peft_type: "LORA" }, file);
  const c = parseWith(schema.passthrough(), raw, file);
  if (c.total_step === undefined || c.total_step === null) throw new ConfigError(file, "total_step", "AdaLoRA needs the total number of training steps (> 0), as in PEFT");
  const tinit = c.tinit ?? 0;
  const tfinal = c.tfinal ?? 0;
  if (tinit >= c.total_step - tfinal) throw new ConfigError(file, "tinit", `tinit ${tinit} ≥ total_step ${c.total_step} − tfinal ${tfinal}: no budgeting phase (decrease tfinal/tinit or increase total_step, as in PEFT)`);
  const initR = c.init_r ?? 12;
  const rp = c.rank_pattern ?? null;
  if (rp) {
    for (const [k, v] of Object.entries(rp)) {
      if (!k.endsWith(".lora_E")) throw new ConfigError(file, "rank_pattern", `key '${k}' should name a module's lora_E ('<module>.lora_E')`);
      if (v.length !== initR) throw new ConfigError(file, "rank_pattern", `'${k}' has ${v.length} entries for init_r ${initR}`);
    }
  }
  return {
    ...baseFields(c),
    peftType: "ADALORA",
    r: l.r,
    loraAlpha: l.loraAlpha,
    loraDropout: l.loraDropout,
    useRslora: l.useRslora,
    fanInFanOut: l.fanInFanOut,
    bias: l.bias,
    initLoraWeights: raw.init_lora_weights !== false,
    targetModules: l.targetModules,
    excludeModules: l.excludeModules,
    layersToTransform: l.layersToTransform,
    layersPattern: l.layersPattern,
    targetR: c.target_r ?? 8,
    initR,
    tinit,
    tfinal,
    deltaT: c.deltaT ?? 1,
    beta1: c.beta1 ?? 0.85,
    beta2: c.beta2 ?? 0.85,
    orthRegWeight: c.orth_reg_weight ?? 0.5,
    totalStep: c.total_step,
    rankPattern: rp ? Object.fromEntries(Object.entries(rp).map(([k, v]) => [k, v.map((b) => b === true || b === 1)])) : null,
  };
}

export function adaLoraConfigToRaw(c: AdaLoraConfig): Record<string, unknown> {
  const lora = parseLoraConfig({ peft_type: "LORA" }, "internal");
  const base = loraConfigToRaw({
    ...lora,
    ...c,
    peftType: "LORA",
    useDora: false,
    init: c.initLoraWeights ? { kind: "kaiming" } : { kind: "random" },
    rankPattern: {},
    alphaPattern: {},
  });
  return {
    ...base,
    peft_type: "ADALORA",
    target_r: c.targetR,
    init_r: c.initR,
    tinit: c.tinit,
    tfinal: c.tfinal,
    deltaT: c.deltaT,
    beta1: c.beta1,
    beta2: c.beta2,
    orth_reg_weight: c.orthRegWeight,
    total_step: c.totalStep,
    rank_pattern: c.rankPattern ? Object.fromEntries(Object.entries(c.rankPattern).map(([k, v]) => [k, [...v]])) : null,
  };
}

function targets(c: AdaLoraConfig, model: BaseModelInfo): LinearModule[] {
  return linearTargets(c, model, "AdaLoRA");
}

/** The rank a module's tensors have: the kept triplets of `rank_pattern`, else `init_r`. */
export function moduleRank(c: AdaLoraConfig, module: string): number {
  const p = c.rankPattern?.[`${module}.lora_E`];
  return p ? p.filter(Boolean).length : c.initR;
}

/** lora_alpha/(ranknum + 1e-5) with ranknum = init_r in float32, as PEFT (lora_alpha ≤ 0: r). */
export function adaloraScale(c: AdaLoraConfig): number {
  const alpha = c.loraAlpha > 0 ? c.loraAlpha : c.initR;
  return alpha / Math.fround(c.initR + 1e-5);
}

function role(key: string): TensorRole | null {
  const module = adaloraModuleOf(key);
  if (module === null) return null;
  if (key.endsWith(".lora_A")) return { kind: "update", module, baseline: 0, lowRank: "A" };
  if (key.endsWith(".lora_B")) return { kind: "update", module, baseline: 0, lowRank: "B" };
  return { kind: "update", module, baseline: 0 };
}

/** ΔW = B·(A ⊙ E)·scale as [out, in] (float64). */
export function adaloraDeltaWeight(A: Tensor, B: Tensor, E: Tensor, scale: number): Float64Array {
  const [r, inn] = A.shape as [number, number];
  const out = B.shape[0]!;
  const a = toFloat32(A);
  const b = toFloat32(B);
  const e = toFloat32(E);
  const d = new Float64Array(out * inn);
  for (let o = 0; o < out; o++) {
    for (let k = 0; k < r; k++) {
      const f = b[o * r + k]! * e[k]! * scale;
      if (f === 0) continue;
      for (let i = 0; i < inn; i++) d[o * inn + i]! += f * a[k * inn + i]!;
    }
  }
  return d;
}

export const adalora: TunerDef<AdaLoraConfig> = {
  name: "adalora",
  peftType: "ADALORA",
  prefix: "lora_E",
  method: "adalora",
  kind: "module",
  role,
  parseConfig: parseAdaLoraConfig,
  toRaw: adaLoraConfigToRaw,
  resolve: resolveAllLinear,
  expectedTensors(c, model) {
    const out = new Map<string, readonly number[]>();
    for (const m of targets(c, model)) {
      const r = moduleRank(c, m.name);
      const k = adaloraKeys(m.name);
      out.set(k.A, [r, m.inFeatures]);
      out.set(k.E, [r, 1]);
      out.set(k.B, [m.outFeatures, r]);
    }
    return out;
  },
  init(c, model, rng) {
    const out = new Map<string, Tensor>();
    for (const m of targets(c, model)) {
      const r = moduleRank(c, m.name);
      const k = adaloraKeys(m.name);
      // PEFT: E = 0, A, B ~ N(0, 0.02²) (init_lora_weights), else all standard normal
      const sd = c.initLoraWeights ? 0.02 : 1;
      out.set(k.A, { dtype: "float32", shape: [r, m.inFeatures], data: Float32Array.from({ length: r * m.inFeatures }, () => rng.normal() * sd) });
      out.set(k.E, { dtype: "float32", shape: [r, 1], data: c.initLoraWeights ? new Float32Array(r) : Float32Array.from({ length: r }, () => rng.normal()) });
      out.set(k.B, { dtype: "float32", shape: [m.outFeatures, r], data: Float32Array.from({ length: m.outFeatures * r }, () => rng.normal() * sd) });
    }
    return out;
  },
  hooks(adapter, param, opts) {
    const c = adapter.config;
    const scale = adaloraScale(c);
    return {
      linear: (name) => {
        const k = adaloraKeys(name);
        if (!adapter.tensors.has(k.A)) return null;
        return (site) => {
          const x = opts.training && c.loraDropout > 0 ? dropout(site.x, c.loraDropout, opts.seed) : site.x;
          const ae = G.mul(param(k.A), param(k.E)); // [r, in] ⊙ [r, 1]
          return dense(dense(x, ae, null, { transB: true }), param(k.B), site.base(site.x), { transB: true, alpha: scale });
        };
      },
    };
  },
  merge(adapter, model) {
    const out = new Map<string, Tensor>();
    const scale = adaloraScale(adapter.config);
    for (const m of model.linearModules) {
      const k = adaloraKeys(m.name);
      const A = adapter.tensors.get(k.A);
      if (!A) continue;
      const delta = adaloraDeltaWeight(A, adapter.tensors.get(k.B)!, adapter.tensors.get(k.E)!, scale);
      out.set(`${m.name}.weight`, addDelta(model.weight(`${m.name}.weight`), delta, m.fanInFanOut));
    }
    return out;
  },
  training: {
    regularizer(adapter, param) {
      const c = adapter.config;
      if (c.orthRegWeight === 0) return null;
      const terms: Value[] = [];
      for (const key of adapter.tensors.keys()) {
        if (!key.endsWith(".lora_A") && !key.endsWith(".lora_B")) continue;
        const p = param(key);
        const isA = key.endsWith(".lora_A");
        const r = adapter.tensors.get(key)!.shape[isA ? 0 : 1]!;
        if (r === 0) continue;
        const cov = isA ? G.matmul(p, G.transpose(p, [1, 0])) : G.matmul(G.transpose(p, [1, 0]), p);
        const eye = p.graph.constant({ dtype: p.dtype, shape: [r, r], data: p.dtype === "float64" ? eyeData(r, Float64Array) : eyeData(r, Float32Array) } as Tensor);
        const d = G.sub(cov, eye);
        terms.push(G.sqrt(G.reduceSum(G.mul(d, d), [0, 1], false)));
      }
      if (terms.length === 0) return null;
      const sum = terms.reduce((a, b) => G.add(a, b));
      return G.mul(sum, c.orthRegWeight / terms.length);
    },
    allocator(adapter) {
      const modules = [...adapter.tensors.keys()].filter((k) => k.endsWith(".lora_E")).map((k) => k.slice(0, -".lora_E".length));
      return new RankAllocator(adapter.config, modules, new Map(modules.map((m) => [m, adapter.tensors.get(`${m}.lora_E`)!.shape[0]!])));
    },
  },
  trainConfig(o, model) {
    rejectFeedforward(o, "adalora");
    if (o.totalSteps === undefined) throw new ConfigError("peft train", "total_step", "AdaLoRA needs the run's total number of steps");
    return {
      peft_type: "ADALORA",
      task_type: o.taskType,
      init_r: Math.max(o.r, Math.ceil((o.r * 3) / 2)),
      target_r: o.r,
      lora_alpha: o.alpha,
      lora_dropout: o.dropout,
      total_step: o.totalSteps,
      target_modules: o.target ?? [...model.defaultTargets],
      ...savedModules(o),
      ...(model.linearModules.some((m) => m.fanInFanOut) ? { fan_in_fan_out: true } : {}),
    };
  },
};

function eyeData<T extends Float32Array | Float64Array>(r: number, Ctor: { new (n: number): T }): T {
  const d = new Ctor(r * r);
  for (let i = 0; i < r; i++) d[i * r + i] = 1;
  return d;
}
