/**
 * FourierFT (PEFT `FOURIERFT`): per adapted layer a trained vector of `n_frequency` spectral
 * coefficients c (`fourierft_spectrum`) placed at fixed random entries (i_k, j_k) of an
 * [out, in] spectrum; ΔW = Re(IDFT₂(spectrum))·scaling, i.e.
 * ΔW[p, q] = scaling/(out·in) · Σ_k c_k·cos(2π(i_k·p/out + j_k·q/in)).
 * The entries are the first n of `torch.randperm(out·in)` from a generator seeded
 * `random_loc_seed` (reproduced exactly, see `torch-randperm.ts`), so every layer of one shape
 * shares them. The forward uses the separable form
 * x·ΔWᵀ = ((x·[C_in | S_in]) ⊙ [c | c])·[C_out | −S_out]ᵀ·scaling/(out·in), with the cosine and
 * sine tables C_in[q, k] = cos(2π·(j_k·q mod in)/in) (and the same for `out`) as constants shared
 * by the layers of one shape; merging adds ΔW (GPT-2's Conv1D transposed, as PEFT).
 */
import { z } from "zod";
import { ConfigError } from "../../errors.js";
import * as G from "../../graph/api.js";
import { dense } from "../../graph/composite.js";
import type { Value } from "../../graph/types.js";
import { castTensor } from "../../models/context.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { COMMON_KEYS, baseFields, baseSchema, baseToRaw, parseWith, rejectUnknownKeys } from "../common/config.js";
import { addDelta, linearTargets, matmul64 } from "../common/delta.js";
import { type TargetSpec, parseTargetSpec, patternKey, resolveAllLinear, targetSpecToRaw } from "../common/target.js";
import { rejectFeedforward, savedModules } from "../common/train.js";
import type { BaseModelInfo, LinearModule, TunerConfigBase, TunerDef } from "../common/types.js";
import { torchRandperm } from "./torch-randperm.js";

export interface FourierFtConfig extends TunerConfigBase {
  readonly peftType: "FOURIERFT";
  readonly nFrequency: number;
  readonly scaling: number;
  readonly randomLocSeed: number;
  readonly fanInFanOut: boolean;
  readonly targetModules: TargetSpec | null;
  readonly excludeModules: TargetSpec | null;
  readonly bias: "none" | "all" | "fourier_only";
  readonly layersToTransform: readonly number[] | null;
  readonly layersPattern: readonly string[] | null;
  readonly nFrequencyPattern: Readonly<Record<string, number>>;
  readonly initWeights: boolean;
}

export const fourierKey = (module: string): string => `${module}.fourierft_spectrum`;

const schema = z.object({
  ...baseSchema,
  peft_type: z.literal("FOURIERFT"),
  n_frequency: z.number().int().positive().optional(),
  scaling: z.number().optional(),
  random_loc_seed: z.number().int().nonnegative().optional(),
  fan_in_fan_out: z.boolean().optional(),
  target_modules: z.unknown().optional(),
  exclude_modules: z.unknown().optional(),
  bias: z.enum(["none", "all", "fourier_only"]).optional(),
  layers_to_transform: z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())]).nullable().optional(),
  layers_pattern: z.union([z.string(), z.array(z.string())]).nullable().optional(),
  n_frequency_pattern: z.record(z.string(), z.number().int().positive()).nullable().optional(),
  init_weights: z.boolean().optional(),
});

export function parseFourierFtConfig(raw: Readonly<Record<string, unknown>>, file: string): FourierFtConfig {
  rejectUnknownKeys(raw, [...COMMON_KEYS, ...Object.keys(schema.shape)], file);
  const c = parseWith(schema, raw, file);
  const targetModules = parseTargetSpec(c.target_modules, file, "target_modules");
  const ltt = c.layers_to_transform;
  if (targetModules?.kind === "regex" && ltt !== null && ltt !== undefined) throw new ConfigError(file, "layers_to_transform", "cannot be used when target_modules is a str (as in PEFT)");
  if (targetModules?.kind === "regex" && c.layers_pattern) throw new ConfigError(file, "layers_pattern", "cannot be used when target_modules is a str (as in PEFT)");
  if (c.layers_pattern && (ltt === null || ltt === undefined)) throw new ConfigError(file, "layers_pattern", "needs layers_to_transform (as in PEFT)");
  return {
    ...baseFields(c),
    peftType: "FOURIERFT",
    nFrequency: c.n_frequency ?? 1000,
    scaling: c.scaling ?? 150,
    randomLocSeed: c.random_loc_seed ?? 777,
    fanInFanOut: c.fan_in_fan_out ?? false,
    targetModules,
    excludeModules: parseTargetSpec(c.exclude_modules, file, "exclude_modules"),
    bias: c.bias ?? "none",
    layersToTransform: ltt === null || ltt === undefined ? null : typeof ltt === "number" ? [ltt] : ltt,
    layersPattern: c.layers_pattern === undefined || c.layers_pattern === null ? null : typeof c.layers_pattern === "string" ? [c.layers_pattern] : c.layers_pattern,
    nFrequencyPattern: c.n_frequency_pattern ?? {},
    initWeights: c.init_weights ?? false,
  };
}

export function fourierFtConfigToRaw(c: FourierFtConfig): Record<string, unknown> {
  return {
    ...baseToRaw(c),
    n_frequency: c.nFrequency,
    scaling: c.scaling,
    random_loc_seed: c.randomLocSeed,
    fan_in_fan_out: c.fanInFanOut,
    target_modules: targetSpecToRaw(c.targetModules),
    exclude_modules: targetSpecToRaw(c.excludeModules),
    bias: c.bias,
    layers_to_transform: c.layersToTransform ? [...c.layersToTransform] : null,
    layers_pattern: c.layersPattern ? [...c.layersPattern] : null,
    n_frequency_pattern: { ...c.nFrequencyPattern },
    init_weights: c.initWeights,
  };
}

/** `n_frequency` of one module (`n_frequency_pattern` applied), checked against its size as PEFT does. */
export function moduleFrequencies(c: FourierFtConfig, m: LinearModule): number {
  const n = c.nFrequencyPattern[patternKey(Object.keys(c.nFrequencyPattern), m.name)] ?? c.nFrequency;
  if (n > m.inFeatures * m.outFeatures) {
    throw new ConfigError("adapter_config.json", "n_frequency", `${n} exceeds in × out = ${m.inFeatures * m.outFeatures} of ${m.name}`);
  }
  return n;
}

function targets(c: FourierFtConfig, model: BaseModelInfo): LinearModule[] {
  return linearTargets(c, model, "FourierFT");
}

/** The cosine / sine tables of one layer shape and frequency set (see the file comment). */
interface Basis {
  /** [in, 2n]: [cos | sin] of 2π·(j_k·q mod in)/in */
  readonly q: Float32Array;
  /** [out, 2n]: [cos | −sin] of 2π·(i_k·p mod out)/out */
  readonly p: Float32Array;
  readonly rows: Int32Array;
  readonly cols: Int32Array;
}

const bases = new Map<string, Basis>();

/** The spectrum entries of a layer: (row i_k, column j_k) for the first n of torch's permutation. */
export function fourierEntries(out: number, inn: number, n: number, seed: number): { rows: Int32Array; cols: Int32Array } {
  const b = basis(out, inn, n, seed);
  return { rows: b.rows, cols: b.cols };
}

function basis(out: number, inn: number, n: number, seed: number): Basis {
  const key = `${out}x${inn}:${n}:${seed}`;
  let b = bases.get(key);
  if (b) return b;
  const idx = torchRandperm(out * inn, seed, n);
  const rows = Int32Array.from(idx, (v) => Math.floor(v / inn));
  const cols = Int32Array.from(idx, (v) => v % inn);
  const table = (size: number, freq: Int32Array, sinSign: number): Float32Array => {
    const t = new Float32Array(size * 2 * n);
    for (let x = 0; x < size; x++) {
      for (let k = 0; k < n; k++) {
        // the phase reduced exactly in integers before the float division
        const a = (2 * Math.PI * ((freq[k]! * x) % size)) / size;
        t[x * 2 * n + k] = Math.cos(a);
        t[x * 2 * n + n + k] = sinSign * Math.sin(a);
      }
    }
    return t;
  };
  b = { q: table(inn, cols, 1), p: table(out, rows, -1), rows, cols };
  if (bases.size > 16) bases.delete(bases.keys().next().value!);
  bases.set(key, b);
  return b;
}

/** ΔW [out, in] in float64 (PEFT's `get_delta_weight`, before Conv1D's transpose). */
export function fourierDeltaWeight(spectrum: Tensor, out: number, inn: number, scaling: number, seed: number): Float64Array {
  const c = toFloat32(spectrum);
  const n = c.length;
  const b = basis(out, inn, n, seed);
  // P·diag([c, c])·Qᵀ·scaling/(out·in)
  const f = scaling / (out * inn);
  const pc = new Float64Array(out * 2 * n);
  for (let p = 0; p < out; p++) for (let k = 0; k < 2 * n; k++) pc[p * 2 * n + k] = b.p[p * 2 * n + k]! * c[k % n]! * f;
  const qt = new Float64Array(2 * n * inn);
  for (let q = 0; q < inn; q++) for (let k = 0; k < 2 * n; k++) qt[k * inn + q] = b.q[q * 2 * n + k]!;
  return matmul64(pc, qt, out, 2 * n, inn);
}

export const fourierft: TunerDef<FourierFtConfig> = {
  name: "fourierft",
  peftType: "FOURIERFT",
  prefix: "fourierft_",
  method: "fourierft",
  kind: "module",
  parseConfig: parseFourierFtConfig,
  toRaw: fourierFtConfigToRaw,
  resolve: resolveAllLinear,
  role(key) {
    if (!key.endsWith(".fourierft_spectrum")) return null;
    return { kind: "update", module: key.slice(0, -".fourierft_spectrum".length), baseline: 0 };
  },
  expectedTensors(c, model) {
    return new Map(targets(c, model).map((m) => [fourierKey(m.name), [moduleFrequencies(c, m)]]));
  },
  init(c, model, rng) {
    const out = new Map<string, Tensor>();
    for (const m of targets(c, model)) {
      const n = moduleFrequencies(c, m);
      // PEFT: standard normal unless init_weights (zeros)
      out.set(fourierKey(m.name), { dtype: "float32", shape: [n], data: c.initWeights ? new Float32Array(n) : Float32Array.from({ length: n }, () => rng.normal()) });
    }
    return out;
  },
  hooks(adapter, param) {
    const c = adapter.config;
    return {
      linear: (name) => {
        const key = fourierKey(name);
        const t = adapter.tensors.get(key);
        if (!t) return null;
        const n = t.shape[0]!;
        return (site) => {
          const g = site.g;
          const out = site.outFeatures;
          const inn = site.inFeatures;
          const b = basis(out, inn, n, c.randomLocSeed);
          const dt = site.x.dtype;
          const cache = constants.get(g) ?? new Map<string, { q: Value; p: Value }>();
          constants.set(g, cache);
          const ck = `${out}x${inn}:${n}:${c.randomLocSeed}:${dt}`;
          let k = cache.get(ck);
          if (!k) {
            k = {
              q: g.constant(castTensor({ dtype: "float32", shape: [inn, 2 * n], data: b.q }, dt)),
              p: g.constant(castTensor({ dtype: "float32", shape: [out, 2 * n], data: b.p }, dt)),
            };
            cache.set(ck, k);
          }
          const spec = param(key);
          const coef = G.mul(G.concat([spec, spec], 0), c.scaling / (out * inn));
          const h = G.mul(dense(site.x, k.q, null, { transB: false }), coef); // [..., 2n]
          return dense(h, k.p, site.base(site.x), { transB: true });
        };
      },
    };
  },
  merge(adapter, model) {
    const out = new Map<string, Tensor>();
    for (const m of model.linearModules) {
      const t = adapter.tensors.get(fourierKey(m.name));
      if (!t) continue;
      const delta = fourierDeltaWeight(t, m.outFeatures, m.inFeatures, adapter.config.scaling, adapter.config.randomLocSeed);
      out.set(`${m.name}.weight`, addDelta(model.weight(`${m.name}.weight`), delta, m.fanInFanOut));
    }
    return out;
  },
  mixedBatch: {},
  trainConfig(o, model) {
    rejectFeedforward(o, "fourierft");
    // PEFT's TRANSFORMERS_MODELS_TO_FOURIERFT_TARGET_MODULES_MAPPING: LoRA's, but mlp.c_proj for GPT-2
    const target = o.target ?? (model.modelType === "gpt2" ? ["mlp.c_proj"] : [...model.defaultTargets]);
    return {
      peft_type: "FOURIERFT",
      task_type: o.taskType,
      target_modules: target,
      ...savedModules(o),
      ...(model.linearModules.some((m) => m.fanInFanOut) ? { fan_in_fan_out: true } : {}),
    };
  },
};

/** Basis constants already added to a graph (shared by its layers of one shape). */
const constants = new WeakMap<object, Map<string, { q: Value; p: Value }>>();
