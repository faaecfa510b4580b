/**
 * VeRA (PEFT `VERA`): one pair of frozen random projections shared by every adapted layer,
 * `vera_A` [r, max in] and `vera_B` [max out, r] (saved with the adapter as `base_model.vera_A` /
 * `base_model.vera_B` unless `save_projection` is false), and per layer two trained scale vectors:
 * output = base(x) + λ_b ⊙ (B[:out]·(λ_d ⊙ (A[:, :in]·dropout(x)))), i.e. ΔW = diag(λ_b)·B·diag(λ_d)·A.
 * PEFT initialises λ_b = 0, λ_d = `d_initial`, and the projections with Kaiming-uniform draws
 * (gain √2) from a torch CPU generator seeded with `projection_prng_key`, A first, then B; peft-ts
 * draws them the same way with its copy of torch's generator (`util/torch-generator`), so both
 * give the same projections for the same key, and an adapter saved without them
 * (`save_projection: false`) gets them regenerated on load, as in PEFT.
 */
import { z } from "zod";
import { ConfigError } from "../../errors.js";
import * as G from "../../graph/api.js";
import { dense, dropout } from "../../graph/composite.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { TorchGenerator, kaimingUniformBound } from "../../util/torch-generator.js";
import { COMMON_KEYS, baseFields, baseSchema, baseToRaw, parseWith, rejectUnknownKeys } from "../common/config.js";
import { addDelta, linearTargets } from "../common/delta.js";
import { type TargetSpec, resolveAllLinear, parseTargetSpec, targetSpecToRaw } from "../common/target.js";
import { rejectFeedforward, savedModules } from "../common/train.js";
import type { BaseModelInfo, LinearModule, TunerConfigBase, TunerDef } from "../common/types.js";

export interface VeraConfig extends TunerConfigBase {
  readonly peftType: "VERA";
  readonly r: number;
  readonly targetModules: TargetSpec | null;
  readonly excludeModules: TargetSpec | null;
  readonly projectionPrngKey: number;
  readonly saveProjection: boolean;
  readonly veraDropout: number;
  readonly dInitial: number;
  readonly fanInFanOut: boolean;
  readonly bias: "none" | "all" | "vera_only";
  readonly initWeights: boolean;
  readonly layersToTransform: readonly number[] | null;
  readonly layersPattern: readonly string[] | null;
}

/** The shared projections' keys (PEFT's checkpoint names, outside `base_model.model.`). */
export const VERA_A = "base_model.vera_A";
export const VERA_B = "base_model.vera_B";
export const veraKeys = (module: string) => ({ b: `${module}.vera_lambda_b`, d: `${module}.vera_lambda_d` });

const schema = z.object({
  ...baseSchema,
  peft_type: z.literal("VERA"),
  r: z.number().int().positive().optional(),
  target_modules: z.unknown().optional(),
  exclude_modules: z.unknown().optional(),
  projection_prng_key: z.number().int().optional(),
  save_projection: z.boolean().optional(),
  vera_dropout: z.number().min(0).lt(1).optional(),
  d_initial: z.number().optional(),
  fan_in_fan_out: z.boolean().optional(),
  bias: z.enum(["none", "all", "vera_only"]).optional(),
  init_weights: z.boolean().optional(),
  layers_to_transform: z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())]).nullable().optional(),
  layers_pattern: z.union([z.string(), z.array(z.string())]).nullable().optional(),
});

export function parseVeraConfig(raw: Readonly<Record<string, unknown>>, file: string): VeraConfig {
  rejectUnknownKeys(raw, [...COMMON_KEYS, ...Object.keys(schema.shape)], file);
  const c = parseWith(schema, raw, file);
  const ltt = c.layers_to_transform;
  if (c.layers_pattern && (ltt === null || ltt === undefined)) throw new ConfigError(file, "layers_pattern", "needs layers_to_transform (as in PEFT)");
  return {
    ...baseFields(c),
    peftType: "VERA",
    r: c.r ?? 256,
    targetModules: parseTargetSpec(c.target_modules, file, "target_modules"),
    excludeModules: parseTargetSpec(c.exclude_modules, file, "exclude_modules"),
    projectionPrngKey: c.projection_prng_key ?? 0,
    saveProjection: c.save_projection ?? true,
    veraDropout: c.vera_dropout ?? 0,
    dInitial: c.d_initial ?? 0.1,
    fanInFanOut: c.fan_in_fan_out ?? false,
    bias: c.bias ?? "none",
    initWeights: c.init_weights ?? true,
    layersToTransform: ltt === null || ltt === undefined ? null : typeof ltt === "number" ? [ltt] : ltt,
    layersPattern: c.layers_pattern === undefined || c.layers_pattern === null ? null : typeof c.layers_pattern === "string" ? [c.layers_pattern] : c.layers_pattern,
  };
}

export function veraConfigToRaw(c: VeraConfig): Record<string, unknown> {
  return {
    ...baseToRaw(c),
    r: c.r,
    target_modules: targetSpecToRaw(c.targetModules),
    exclude_modules: targetSpecToRaw(c.excludeModules),
    projection_prng_key: c.projectionPrngKey,
    save_projection: c.saveProjection,
    vera_dropout: c.veraDropout,
    d_initial: c.dInitial,
    fan_in_fan_out: c.fanInFanOut,
    bias: c.bias,
    init_weights: c.initWeights,
    layers_to_transform: c.layersToTransform ? [...c.layersToTransform] : null,
    layers_pattern: c.layersPattern ? [...c.layersPattern] : null,
  };
}

function targets(c: VeraConfig, model: BaseModelInfo): LinearModule[] {
  return linearTargets(c, model, "VeRA");
}

/** PEFT's `_find_dim`: the largest (out, in) over the adapted layers. */
function projectionDims(c: VeraConfig, model: BaseModelInfo): { out: number; in: number } {
  const ts = targets(c, model);
  return { out: Math.max(...ts.map((m) => m.outFeatures)), in: Math.max(...ts.map((m) => m.inFeatures)) };
}

/** PEFT's `_kaiming_init`: U(±√3·√2/√fan_in), fan_in = shape[1], drawn from `g` in row-major order. */
function kaiming(shape: [number, number], g: TorchGenerator): Tensor {
  const bound = kaimingUniformBound(shape[1], 0); // gain √(2/(1+0²)) = √2
  return { dtype: "float32", shape, data: g.uniform(shape[0] * shape[1], -bound, bound) };
}

/**
 * PEFT's `_init_vera_A_vera_B`: `torch.Generator("cpu").manual_seed(projection_prng_key)`, then
 * vera_A [r, max in] and vera_B [max out, r] from it, in that order.
 */
export function veraProjections(c: VeraConfig, model: BaseModelInfo): { A: Tensor; B: Tensor } {
  const dims = projectionDims(c, model);
  const g = new TorchGenerator(c.projectionPrngKey);
  const A = kaiming([c.r, dims.in], g);
  return { A, B: kaiming([dims.out, c.r], g) };
}

/** ΔW = diag(λ_b)·B[:out]·diag(λ_d)·A[:, :in] as [out, in] in float64. */
export function veraDeltaWeight(A: Tensor, B: Tensor, lambdaB: Tensor, lambdaD: Tensor, out: number, inn: number): Float64Array {
  const a = toFloat32(A);
  const b = toFloat32(B);
  const lb = toFloat32(lambdaB);
  const ld = toFloat32(lambdaD);
  const r = ld.length;
  const aCols = A.shape[1]!;
  const delta = new Float64Array(out * inn);
  for (let o = 0; o < out; o++) {
    for (let k = 0; k < r; k++) {
      const f = lb[o]! * b[o * r + k]! * ld[k]!;
      if (f === 0) continue;
      for (let i = 0; i < inn; i++) delta[o * inn + i]! += f * a[k * aCols + i]!;
    }
  }
  return delta;
}

export const vera: TunerDef<VeraConfig> = {
  name: "vera",
  peftType: "VERA",
  prefix: "vera_lambda_",
  method: "vera",
  kind: "module",
  parseConfig: parseVeraConfig,
  toRaw: veraConfigToRaw,
  resolve: resolveAllLinear,
  role(key) {
    if (key === VERA_A || key === VERA_B) return { kind: "frozen", module: null };
    if (key.endsWith(".vera_lambda_b")) return { kind: "update", module: key.slice(0, -".vera_lambda_b".length), baseline: 0 };
    if (key.endsWith(".vera_lambda_d")) return { kind: "state", module: key.slice(0, -".vera_lambda_d".length) };
    return null;
  },
  expectedTensors(c, model) {
    const dims = projectionDims(c, model);
    const out = new Map<string, readonly number[]>([
      [VERA_A, [c.r, dims.in]],
      [VERA_B, [dims.out, c.r]],
    ]);
    for (const m of targets(c, model)) {
      const k = veraKeys(m.name);
      out.set(k.b, [m.outFeatures]);
      out.set(k.d, [c.r]);
    }
    return out;
  },
  init(c, model, rng) {
    const p = veraProjections(c, model);
    const out = new Map<string, Tensor>([
      [VERA_A, p.A],
      [VERA_B, p.B],
    ]);
    for (const m of targets(c, model)) {
      const k = veraKeys(m.name);
      out.set(k.b, { dtype: "float32", shape: [m.outFeatures], data: new Float32Array(m.outFeatures).fill(c.initWeights ? 0 : 1) });
      out.set(k.d, { dtype: "float32", shape: [c.r], data: c.initWeights ? new Float32Array(c.r).fill(c.dInitial) : Float32Array.from({ length: c.r }, () => rng.normal()) });
    }
    return out;
  },
  fromFile(c, model, tensors) {
    // PEFT keeps the projections in non-persistent buffers when save_projection is false: a file
    // then has none (or ones PEFT ignores), and they come from projection_prng_key
    if (c.saveProjection) return tensors;
    const p = veraProjections(c, model);
    return new Map([...tensors, [VERA_A, p.A], [VERA_B, p.B]]);
  },
  savedTensors(adapter) {
    if (adapter.config.saveProjection) return adapter.tensors;
    return new Map([...adapter.tensors].filter(([k]) => k !== VERA_A && k !== VERA_B));
  },
  hooks(adapter, param, opts) {
    const c = adapter.config;
    return {
      linear: (name) => {
        const k = veraKeys(name);
        if (!adapter.tensors.has(k.b)) return null;
        return (site) => {
          const A = G.slice(param(VERA_A), [0], [site.inFeatures], [1]); // [r, in]
          const B = G.slice(param(VERA_B), [0], [site.outFeatures], [0]); // [out, r]
          const x = opts.training && c.veraDropout > 0 ? dropout(site.x, c.veraDropout, opts.seed) : site.x;
          const h = G.mul(dense(x, A, null, { transB: true }), param(k.d));
          return G.add(site.base(site.x), G.mul(dense(h, B, null, { transB: true }), param(k.b)));
        };
      },
    };
  },
  merge(adapter, model) {
    const out = new Map<string, Tensor>();
    const A = adapter.tensors.get(VERA_A)!;
    const B = adapter.tensors.get(VERA_B)!;
    for (const m of model.linearModules) {
      const k = veraKeys(m.name);
      if (!adapter.tensors.has(k.b)) continue;
      const delta = veraDeltaWeight(A, B, adapter.tensors.get(k.b)!, adapter.tensors.get(k.d)!, m.outFeatures, m.inFeatures);
      out.set(`${m.name}.weight`, addDelta(model.weight(`${m.name}.weight`), delta, m.fanInFanOut));
    }
    return out;
  },
  mixedBatch: {},
  trainConfig(o, model) {
    rejectFeedforward(o, "vera");
    return {
      peft_type: "VERA",
      task_type: o.taskType,
      r: o.r,
      vera_dropout: o.dropout,
      target_modules: o.target ?? [...model.defaultTargets],
      ...savedModules(o),
      ...(model.linearModules.some((m) => m.fanInFanOut) ? { fan_in_fan_out: true } : {}),
    };
  },
};
