/**
 * FLoRA (Si et al. 2024, "FLoRA: Low-Rank Core Space for N-dimension"; `peft_type` `FLORA`): the
 * update of an N-dimensional parameter is a Tucker decomposition, a small core G [r_0, …, r_{N−1}]
 * multiplied along every mode by a factor P_i [dim_i, r_i], ΔW = scale · G ×₀ P_0 ×₁ P_1 …, so
 * the change keeps the parameter's own layout instead of being flattened to a matrix. peft-ts
 * adapts linear layers, the 2-D case: dims (in, out), core `flora_G` [r_in, r_out], factors
 * `flora_0` [in, r_in] and `flora_1` [out, r_out], ΔW = scale · P_1·Gᵀ·P_0ᵀ ([out, in]), output
 * = base(x) + scale · ((x·P_0)·G)·P_1ᵀ. Initialisation as the authors' layer: G = 0, P_i Kaiming-
 * normal with a = √3 (standard deviation 1/√(2·r_i)). A 2-D FLoRA is a LoRA of rank r_out
 * (lora_A = (P_0·G)ᵀ, lora_B = scale·P_1), which `toLora` writes.
 */
import { z } from "zod";
import { ConfigError, UnsupportedOptionError } from "../../errors.js";
import { dense, dropout } from "../../graph/composite.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { COMMON_KEYS, baseFields, baseSchema, baseToRaw, parseWith, rejectUnknownKeys } from "../common/config.js";
import { addDelta, linearTargets, matmul64 } from "../common/delta.js";
import { type ExportedFactors, loraExport } from "../common/lora-like.js";
import { type TargetSpec, parseTargetSpec, resolveAllLinear, targetSpecToRaw } from "../common/target.js";
import { rejectFeedforward, savedModules } from "../common/train.js";
import type { BaseModelInfo, LinearModule, TensorRole, TunerConfigBase, TunerDef } from "../common/types.js";

export interface FloraConfig extends TunerConfigBase {
  readonly peftType: "FLORA";
  /** Core ranks of the (in, out) modes. */
  readonly r: readonly [number, number];
  readonly scale: number;
  readonly floraDropout: number;
  readonly targetModules: TargetSpec | null;
  readonly excludeModules: TargetSpec | null;
  readonly layersToTransform: readonly number[] | null;
  readonly layersPattern: readonly string[] | null;
  /** true: G = 0 (ΔW = 0); false: G ~ N(0, 1) too (for tests). */
  readonly initWeights: boolean;
}

export const floraKeys = (module: string) => ({ G: `${module}.flora_G`, P0: `${module}.flora_0`, P1: `${module}.flora_1` });

export function floraModuleOf(key: string): string | null {
  const m = /^(.*)\.flora_(G|0|1)$/u.exec(key);
  return m ? m[1]! : null;
}

const FIELDS = {
  r: z.union([z.number().int().positive(), z.array(z.number().int().positive())]).optional(),
  scale: z.number().optional(),
  flora_dropout: z.number().min(0).lt(1).optional(),
  target_modules: z.unknown().optional(),
  exclude_modules: z.unknown().optional(),
  layers_to_transform: z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())]).nullable().optional(),
  layers_pattern: z.union([z.string(), z.array(z.string())]).nullable().optional(),
  init_weights: z.boolean().optional(),
};

const schema = z.object({ ...baseSchema, peft_type: z.literal("FLORA"), ...FIELDS });

export function parseFloraConfig(raw: Readonly<Record<string, unknown>>, file: string): FloraConfig {
  rejectUnknownKeys(raw, [...COMMON_KEYS, ...Object.keys(FIELDS)], file);
  const c = parseWith(schema, raw, file);
  const r = c.r ?? 8;
  const ranks = typeof r === "number" ? ([r, r] as const) : r;
  if (ranks.length !== 2) throw new UnsupportedOptionError(file, "r", r, "peft-ts adapts linear layers, the 2-D case of FLoRA: r is one rank or [r_in, r_out]");
  const ltt = c.layers_to_transform;
  return {
    ...baseFields(c),
    peftType: "FLORA",
    r: [ranks[0]!, ranks[1]!],
    scale: c.scale ?? 1,
    floraDropout: c.flora_dropout ?? 0,
    targetModules: parseTargetSpec(c.target_modules, file, "target_modules"),
    excludeModules: parseTargetSpec(c.exclude_modules, file, "exclude_modules"),
    layersToTransform: ltt === null || ltt === undefined ? null : typeof ltt === "number" ? [ltt] : ltt,
    layersPattern: c.layers_pattern === undefined || c.layers_pattern === null ? null : typeof c.layers_pattern === "string" ? [c.layers_pattern] : c.layers_pattern,
    initWeights: c.init_weights ?? true,
  };
}

export function floraConfigToRaw(c: FloraConfig): Record<string, unknown> {
  return {
    ...baseToRaw(c),
    r: [...c.r],
    scale: c.scale,
    flora_dropout: c.floraDropout,
    target_modules: targetSpecToRaw(c.targetModules),
    exclude_modules: targetSpecToRaw(c.excludeModules),
    layers_to_transform: c.layersToTransform ? [...c.layersToTransform] : null,
    layers_pattern: c.layersPattern ? [...c.layersPattern] : null,
    init_weights: c.initWeights,
  };
}

function targets(c: FloraConfig, model: BaseModelInfo): LinearModule[] {
  const hits = linearTargets(c, model, "FLoRA");
  const conv1d = hits.find((m) => m.fanInFanOut);
  if (conv1d) throw new UnsupportedOptionError("adapter_config.json", "target_modules", conv1d.name, "FLoRA's linear layer is nn.Linear ([out, in] weights), not GPT-2's Conv1D (fan_in_fan_out)");
  return hits;
}

function role(key: string): TensorRole | null {
  const module = floraModuleOf(key);
  return module === null ? null : { kind: "update", module, baseline: 0 };
}

/** Trainable parameters of one adapted [out, in] layer: in·r_in + out·r_out + r_in·r_out. */
export const floraParams = (inFeatures: number, outFeatures: number, r: readonly [number, number]): number => inFeatures * r[0] + outFeatures * r[1] + r[0] * r[1];

/** ΔW = scale·P_1·Gᵀ·P_0ᵀ as [out, in], float64. */
export function floraDelta(G: Tensor, P0: Tensor, P1: Tensor, scale: number): Float64Array {
  const [inn, r0] = P0.shape as [number, number];
  const [out, r1] = P1.shape as [number, number];
  const g = toFloat32(G);
  const p0 = toFloat32(P0);
  const gt = new Float64Array(r1 * r0); // Gᵀ
  for (let a = 0; a < r0; a++) for (let b = 0; b < r1; b++) gt[b * r0 + a] = g[a * r1 + b]!;
  const p0t = new Float64Array(r0 * inn);
  for (let i = 0; i < inn; i++) for (let a = 0; a < r0; a++) p0t[a * inn + i] = p0[i * r0 + a]!;
  const left = matmul64(toFloat32(P1), gt, out, r1, r0);
  const d = matmul64(left, p0t, out, r0, inn);
  for (let i = 0; i < d.length; i++) d[i]! *= scale;
  return d;
}

export const flora: TunerDef<FloraConfig> = {
  name: "flora",
  peftType: "FLORA",
  prefix: "flora_",
  method: "flora",
  kind: "module",
  role,
  parseConfig: parseFloraConfig,
  toRaw: floraConfigToRaw,
  resolve: resolveAllLinear,
  expectedTensors(c, model) {
    const out = new Map<string, readonly number[]>();
    for (const m of targets(c, model)) {
      const k = floraKeys(m.name);
      out.set(k.G, [c.r[0], c.r[1]]);
      out.set(k.P0, [m.inFeatures, c.r[0]]);
      out.set(k.P1, [m.outFeatures, c.r[1]]);
    }
    return out;
  },
  init(c, model, rng) {
    const out = new Map<string, Tensor>();
    const normal = (n: number, sd: number) => Float32Array.from({ length: n }, () => rng.normal() * sd);
    for (const m of targets(c, model)) {
      const k = floraKeys(m.name);
      const [r0, r1] = c.r;
      out.set(k.G, { dtype: "float32", shape: [r0, r1], data: c.initWeights ? new Float32Array(r0 * r1) : normal(r0 * r1, 1) });
      // kaiming_normal_(a = √3) on [dim, r]: fan_in r, gain √(2/(1 + 3))
      out.set(k.P0, { dtype: "float32", shape: [m.inFeatures, r0], data: normal(m.inFeatures * r0, 1 / Math.sqrt(2 * r0)) });
      out.set(k.P1, { dtype: "float32", shape: [m.outFeatures, r1], data: normal(m.outFeatures * r1, 1 / Math.sqrt(2 * r1)) });
    }
    return out;
  },
  hooks(adapter, param, opts) {
    const c = adapter.config;
    return {
      linear: (name) => {
        const k = floraKeys(name);
        if (!adapter.tensors.has(k.G)) return null;
        return (site) => {
          const x = opts.training && c.floraDropout > 0 ? dropout(site.x, c.floraDropout, opts.seed) : site.x;
          const h = dense(dense(x, param(k.P0), null, { transB: false }), param(k.G), null, { transB: false }); // x·P_0·G
          return dense(h, param(k.P1), site.base(site.x), { transB: true, alpha: c.scale });
        };
      },
    };
  },
  merge(adapter, model) {
    const out = new Map<string, Tensor>();
    for (const m of model.linearModules) {
      const k = floraKeys(m.name);
      const G = adapter.tensors.get(k.G);
      if (!G) continue;
      out.set(`${m.name}.weight`, addDelta(model.weight(`${m.name}.weight`), floraDelta(G, adapter.tensors.get(k.P0)!, adapter.tensors.get(k.P1)!, adapter.config.scale), m.fanInFanOut));
    }
    return out;
  },
  toLora(adapter, _model, opts) {
    const c = adapter.config;
    if (opts.rank !== null) throw new ConfigError("peft export-lora", "--rank", "applies to DyLoRA; a FLoRA adapter exports at rank r_out");
    const factors = new Map<string, ExportedFactors>();
    const copied = new Map<string, Tensor>();
    const [r0, r1] = c.r;
    for (const [key, G] of adapter.tensors) {
      if (role(key) === null) copied.set(key, G);
      if (!key.endsWith(".flora_G")) continue;
      const m = key.slice(0, -".flora_G".length);
      const k = floraKeys(m);
      const P0 = adapter.tensors.get(k.P0)!;
      const P1 = adapter.tensors.get(k.P1)!;
      const inn = P0.shape[0]!;
      const out = P1.shape[0]!;
      // lora_A = (P_0·G)ᵀ [r_out, in], lora_B = scale·P_1 [out, r_out], lora_alpha = r_out (scaling 1)
      const p0g = matmul64(toFloat32(P0), toFloat32(G), inn, r0, r1);
      const A = new Float32Array(r1 * inn);
      for (let i = 0; i < inn; i++) for (let b = 0; b < r1; b++) A[b * inn + i] = p0g[i * r1 + b]!;
      factors.set(m, { A, B: Float32Array.from(toFloat32(P1), (v) => v * c.scale), r: r1, inFeatures: inn, outFeatures: out, alpha: r1 });
    }
    return loraExport({ ...c, r: r1, loraAlpha: r1, loraDropout: c.floraDropout, fanInFanOut: false }, factors, copied);
  },
  trainConfig(o, model) {
    rejectFeedforward(o, "flora");
    if (model.linearModules.some((m) => m.fanInFanOut) && o.target === null) {
      throw new ConfigError("peft train", "--target", "FLoRA adapts nn.Linear layers; this model's default targets are Conv1D layers");
    }
    return {
      peft_type: "FLORA",
      task_type: o.taskType,
      r: [o.r, o.r],
      // LoRA's alpha/r as the scale of the core's product
      scale: o.alpha / o.r,
      flora_dropout: o.dropout,
      target_modules: o.target ?? [...model.defaultTargets],
      ...savedModules(o),
    };
  },
};
