/**
 * FLoRA (Si et al. 2024, "FLoRA: Low-Rank Core Space for N-dimension"; `peft_type` `FLORA`): the
 * update of an N-dimensional parameter is a Tucker decomposition, a small core G [r_0, …, r_{N−1}]
 * multiplied along every mode by a factor P_i [dim_i, r_i], ΔW = scale · G ×₀ P_0 ×₁ P_1 …, so
 * the change keeps the parameter's own layout instead of being flattened to a matrix. Modes as the
 * authors' layers: (in, out) for a linear layer, (in, out, kh, kw) for a 2-D convolution; factors
 * `flora_0` … `flora_{N−1}`, core `flora_G`.
 * - Linear (N = 2): core [r_in, r_out], `flora_0` [in, r_in], `flora_1` [out, r_out],
 *   ΔW = scale · P_1·Gᵀ·P_0ᵀ ([out, in]), output = base(x) + scale · ((x·P_0)·G)·P_1ᵀ. A 2-D FLoRA
 *   is a LoRA of rank r_out (lora_A = (P_0·G)ᵀ, lora_B = scale·P_1), which `toLora` writes; a 4-D
 *   one a conv LoRA of rank r_out (lora_A = G ×₀ P_0 ×₂ P_2 ×₃ P_3, lora_B = scale·P_1 as 1×1).
 * - Convolution (N = 4): core [r_in, r_out, r_kh, r_kw], `flora_2` [kh, r_kh], `flora_3` [kw, r_kw],
 *   ΔW[o, c, i, j] = scale · Σ G[a, b, p, q]·P_0[c, a]·P_1[o, b]·P_2[i, p]·P_3[j, q], output =
 *   base(x) + conv(dropout(x), ΔW) with the layer's stride and padding (the authors' `Conv2D`).
 * `r` is one rank for every mode or one per mode (2 entries for linear targets, 4 for convolutions).
 * Initialisation as the authors' layer: G = 0, P_i Kaiming-normal with a = √3 (standard deviation
 * 1/√(2·r_i)).
 */
import { z } from "zod";
import { ConfigError, UnsupportedOptionError } from "../../errors.js";
import * as G from "../../graph/api.js";
import { dense, dropout } from "../../graph/composite.js";
import type { Value } from "../../graph/types.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { COMMON_KEYS, baseFields, baseSchema, baseToRaw, parseWith, rejectUnknownKeys } from "../common/config.js";
import { adaptedModules, addDelta, addKernelDelta, matmul64 } from "../common/delta.js";
import { type ExportedFactors, loraExport } from "../common/lora-like.js";
import { type TargetSpec, parseTargetSpec, resolveAllLinear, targetSpecToRaw } from "../common/target.js";
import { rejectFeedforward, savedModules } from "../common/train.js";
import type { BaseModelInfo, ConvModule, LinearModule, ParamView, TensorRole, TunerConfigBase, TunerDef } from "../common/types.js";

export interface FloraConfig extends TunerConfigBase {
  readonly peftType: "FLORA";
  /** Core ranks: one for every mode, or one per mode ((in, out) or (in, out, kh, kw)). */
  readonly r: readonly number[];
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

/** The factor of mode `i` (`flora_0` … `flora_{N−1}`). */
export const floraFactorKey = (module: string, i: number): string => `${module}.flora_${i}`;

export function floraModuleOf(key: string): string | null {
  const m = /^(.*)\.flora_(G|\d)$/u.exec(key);
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
  const ranks = typeof r === "number" ? [r] : r;
  if (ranks.length !== 1 && ranks.length !== 2 && ranks.length !== 4) {
    throw new UnsupportedOptionError(file, "r", r, "peft-ts adapts linear layers (2 modes: [r_in, r_out]) and 2-D convolutions (4 modes: [r_in, r_out, r_kh, r_kw]); r is one rank or one per mode");
  }
  const ltt = c.layers_to_transform;
  return {
    ...baseFields(c),
    peftType: "FLORA",
    r: [...ranks],
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
    r: c.r.length === 1 ? c.r[0] : [...c.r],
    scale: c.scale,
    flora_dropout: c.floraDropout,
    target_modules: targetSpecToRaw(c.targetModules),
    exclude_modules: targetSpecToRaw(c.excludeModules),
    layers_to_transform: c.layersToTransform ? [...c.layersToTransform] : null,
    layers_pattern: c.layersPattern ? [...c.layersPattern] : null,
    init_weights: c.initWeights,
  };
}

function targets(c: FloraConfig, model: BaseModelInfo): { linear: LinearModule[]; conv: ConvModule[] } {
  const hits = adaptedModules(c, model, "FLoRA");
  const conv1d = hits.linear.find((m) => m.fanInFanOut);
  if (conv1d) throw new UnsupportedOptionError("adapter_config.json", "target_modules", conv1d.name, "FLoRA's linear layer is nn.Linear ([out, in] weights), not GPT-2's Conv1D (fan_in_fan_out)");
  const dilated = hits.conv.find((m) => m.dilation[0] !== 1 || m.dilation[1] !== 1);
  if (dilated) throw new UnsupportedOptionError("adapter_config.json", "target_modules", dilated.name, "dilated convolutions are not adapted by peft-ts's FLoRA");
  for (const m of hits.linear) ranksOf(c, 2, m.name);
  for (const m of hits.conv) ranksOf(c, 4, m.name);
  return hits;
}

/** The core ranks of a target with `n` modes; an `r` list of another length names the module. */
export function ranksOf(c: FloraConfig, n: number, module: string): number[] {
  if (c.r.length === 1) return new Array<number>(n).fill(c.r[0]!);
  if (c.r.length !== n) {
    throw new UnsupportedOptionError("adapter_config.json", "r", [...c.r], `${module} has ${n} modes (${n === 2 ? "in, out" : "in, out, kh, kw"}): give one rank or ${n}`);
  }
  return [...c.r];
}

/** The mode sizes of a convolution target, as the authors order them: (in, out, kh, kw). */
const convDims = (m: ConvModule): number[] => [m.inChannels, m.outChannels, m.kernel[0], m.kernel[1]];

function role(key: string): TensorRole | null {
  const module = floraModuleOf(key);
  return module === null ? null : { kind: "update", module, baseline: 0 };
}

/** Trainable parameters of one adapted [out, in] layer: in·r_in + out·r_out + r_in·r_out. */
export const floraParams = (inFeatures: number, outFeatures: number, r: readonly [number, number]): number => inFeatures * r[0] + outFeatures * r[1] + r[0] * r[1];

/** Trainable parameters of one adapted N-dimensional parameter: Σ dim_i·r_i + Π r_i. */
export const floraParamsNd = (dims: readonly number[], r: readonly number[]): number => dims.reduce((s, d, i) => s + d * r[i]!, 0) + r.reduce((p, x) => p * x, 1);

/**
 * ΔW = scale · G ×₀ P_0 ×₁ P_1 … ×_{N−1} P_{N−1} (float64), in the authors' layout: modes
 * (in, out, rest…) computed, then the first two swapped, so the result is [out, in, rest…] (the
 * stored kernel's layout).
 */
export function floraDeltaNd(core: Tensor, P: readonly Tensor[], scale: number): Float64Array {
  const n = P.length;
  let shape = [...core.shape];
  let t = Float64Array.from(toFloat32(core));
  for (let k = 0; k < n; k++) {
    // mode-k product: t[…, r_k, …] · P_k[d_k, r_k] → t[…, d_k, …]
    const [d, r] = P[k]!.shape as [number, number];
    const p = toFloat32(P[k]!);
    const before = shape.slice(0, k).reduce((a, b) => a * b, 1);
    const after = shape.slice(k + 1).reduce((a, b) => a * b, 1);
    const out = new Float64Array(before * d * after);
    for (let i = 0; i < before; i++)
      for (let a = 0; a < r; a++)
        for (let e = 0; e < d; e++) {
          const w = p[e * r + a]!;
          if (w === 0) continue;
          const src = (i * r + a) * after;
          const dst = (i * d + e) * after;
          for (let j = 0; j < after; j++) out[dst + j]! += w * t[src + j]!;
        }
    t = out;
    shape = [...shape.slice(0, k), d, ...shape.slice(k + 1)];
  }
  // (in, out, rest) → (out, in, rest)
  const [inn, outD] = [shape[0]!, shape[1]!];
  const rest = shape.slice(2).reduce((a, b) => a * b, 1);
  const res = new Float64Array(t.length);
  for (let c = 0; c < inn; c++) for (let o = 0; o < outD; o++) for (let j = 0; j < rest; j++) res[(o * inn + c) * rest + j] = scale * t[(c * outD + o) * rest + j]!;
  return res;
}

/** ΔW [out, in, kh, kw] of a convolution target as a graph value: the mode products by MatMul, cycling the modes. */
function floraKernel(param: ParamView, module: string, scale: number): Value {
  // t [r_0, r_1, r_2, r_3]: each step contracts the first axis with P_k and appends d_k last
  let t = param(floraKeys(module).G);
  for (let k = 0; k < 4; k++) t = G.matmul(G.transpose(t, [1, 2, 3, 0]), G.transpose(param(floraFactorKey(module, k)), [1, 0]));
  // t [in, out, kh, kw] → [out, in, kh, kw]
  const w = G.transpose(t, [1, 0, 2, 3]);
  return scale === 1 ? w : G.mul(w, scale);
}

/** ΔW = scale·P_1·Gᵀ·P_0ᵀ as [out, in], float64. */
export function floraDelta(core: Tensor, P0: Tensor, P1: Tensor, scale: number): Float64Array {
  const [inn, r0] = P0.shape as [number, number];
  const [out, r1] = P1.shape as [number, number];
  const g = toFloat32(core);
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
    const { linear, conv } = targets(c, model);
    for (const m of linear) {
      const k = floraKeys(m.name);
      const [r0, r1] = ranksOf(c, 2, m.name) as [number, number];
      out.set(k.G, [r0, r1]);
      out.set(k.P0, [m.inFeatures, r0]);
      out.set(k.P1, [m.outFeatures, r1]);
    }
    for (const m of conv) {
      const r = ranksOf(c, 4, m.name);
      out.set(floraKeys(m.name).G, r);
      convDims(m).forEach((d, i) => out.set(floraFactorKey(m.name, i), [d, r[i]!]));
    }
    return out;
  },
  init(c, model, rng) {
    const out = new Map<string, Tensor>();
    const normal = (n: number, sd: number) => Float32Array.from({ length: n }, () => rng.normal() * sd);
    const { linear, conv } = targets(c, model);
    const modules = [
      ...linear.map((m) => ({ name: m.name, dims: [m.inFeatures, m.outFeatures] })),
      ...conv.map((m) => ({ name: m.name, dims: convDims(m) })),
    ];
    for (const m of modules) {
      const r = ranksOf(c, m.dims.length, m.name);
      const core = r.reduce((p, x) => p * x, 1);
      out.set(floraKeys(m.name).G, { dtype: "float32", shape: r, data: c.initWeights ? new Float32Array(core) : normal(core, 1) });
      // kaiming_normal_(a = √3) on [dim, r]: fan_in r, gain √(2/(1 + 3))
      m.dims.forEach((d, i) => out.set(floraFactorKey(m.name, i), { dtype: "float32", shape: [d, r[i]!], data: normal(d * r[i]!, 1 / Math.sqrt(2 * r[i]!)) }));
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
      conv: (name) => {
        if (!adapter.tensors.has(floraKeys(name).G)) return null;
        return (site) => {
          const x = opts.training && c.floraDropout > 0 ? dropout(site.x, c.floraDropout, opts.seed) : site.x;
          return G.add(site.base(site.x), site.conv(x, floraKernel(param, name, c.scale)));
        };
      },
    };
  },
  merge(adapter, model) {
    const out = new Map<string, Tensor>();
    for (const m of model.linearModules) {
      const k = floraKeys(m.name);
      const core = adapter.tensors.get(k.G);
      if (!core) continue;
      out.set(`${m.name}.weight`, addDelta(model.weight(`${m.name}.weight`), floraDelta(core, adapter.tensors.get(k.P0)!, adapter.tensors.get(k.P1)!, adapter.config.scale), m.fanInFanOut));
    }
    for (const m of model.convModules) {
      const core = adapter.tensors.get(floraKeys(m.name).G);
      if (!core) continue;
      const P = [0, 1, 2, 3].map((i) => adapter.tensors.get(floraFactorKey(m.name, i))!);
      out.set(`${m.name}.weight`, addKernelDelta(model.weight(`${m.name}.weight`), floraDeltaNd(core, P, adapter.config.scale)));
    }
    return out;
  },
  toLora(adapter, _model, opts) {
    const c = adapter.config;
    if (opts.rank !== null) throw new ConfigError("peft export-lora", "--rank", "applies to DyLoRA; a FLoRA adapter exports at rank r_out");
    const factors = new Map<string, ExportedFactors>();
    const copied = new Map<string, Tensor>();
    for (const [key, core] of adapter.tensors) {
      if (role(key) === null) copied.set(key, core);
      if (!key.endsWith(".flora_G")) continue;
      const m = key.slice(0, -".flora_G".length);
      if (core.shape.length === 4) {
        // a convolution: ΔW = scale·P_1 ×₁ (G ×₀ P_0 ×₂ P_2 ×₃ P_3), so lora_A = the core with every
        // mode but "out" expanded ([r_out, in, kh, kw]), lora_B = scale·P_1 ([out, r_out, 1, 1]), scaling 1
        const P = [0, 1, 2, 3].map((i) => adapter.tensors.get(floraFactorKey(m, i))!);
        const r1 = core.shape[1]!;
        const eye: Tensor = { dtype: "float32", shape: [r1, r1], data: Float32Array.from({ length: r1 * r1 }, (_, i) => (i % (r1 + 1) === 0 ? 1 : 0)) };
        const A = Float32Array.from(floraDeltaNd(core, [P[0]!, eye, P[2]!, P[3]!], 1));
        const [inn, out, kh, kw] = P.map((p) => p.shape[0]!) as [number, number, number, number];
        factors.set(m, { A, B: Float32Array.from(toFloat32(P[1]!), (v) => v * c.scale), r: r1, inFeatures: inn, outFeatures: out, alpha: r1, kernel: [kh, kw] });
        continue;
      }
      const [r0, r1] = core.shape as [number, number];
      const k = floraKeys(m);
      const P0 = adapter.tensors.get(k.P0)!;
      const P1 = adapter.tensors.get(k.P1)!;
      const inn = P0.shape[0]!;
      const out = P1.shape[0]!;
      // lora_A = (P_0·G)ᵀ [r_out, in], lora_B = scale·P_1 [out, r_out], lora_alpha = r_out (scaling 1)
      const p0g = matmul64(toFloat32(P0), toFloat32(core), inn, r0, r1);
      const A = new Float32Array(r1 * inn);
      for (let i = 0; i < inn; i++) for (let b = 0; b < r1; b++) A[b * inn + i] = p0g[i * r1 + b]!;
      factors.set(m, { A, B: Float32Array.from(toFloat32(P1), (v) => v * c.scale), r: r1, inFeatures: inn, outFeatures: out, alpha: r1 });
    }
    const r1 = [...factors.values()][0]?.r ?? 1;
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
