/**
 * LoKr (PEFT `LOKR`, LyCORIS' low-rank Kronecker product): per adapted linear layer
 * ΔW = (w1 ⊗ w2) · alpha/r, out = a·b and in = c·d split by PEFT's `factorization` (near √dim,
 * or `decompose_factor`), w1 [a, c] and w2 [b, d]. w2 is stored as w2_a·w2_b ([b, r]·[r, d]) when
 * r < max(b, d)/2, and w1 as w1_a·w1_b when `decompose_both` and r < max(a, c)/2. Output =
 * base(x) + x·ΔWᵀ with rank dropout (kept rows rescaled only with `rank_dropout_scale`) and
 * module dropout in training. Like PEFT, only `nn.Linear` layers (not GPT-2's Conv1D) are adapted.
 */
import { z } from "zod";
import { UnsupportedOptionError } from "../../errors.js";
import * as G from "../../graph/api.js";
import type { Value } from "../../graph/types.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { COMMON_KEYS, rejectUnknownKeys } from "../common/config.js";
import { addDelta, applyDeltaWeight, kaimingUniform, linearTargets, matmul64, zeros } from "../common/delta.js";
import { LYCORIS_KEYS, type LycorisConfig, lycorisRankAndScale, lycorisSchema, lycorisToRaw, lycorisTrainConfig, parseLycoris } from "../common/lycoris.js";
import { resolveAllLinear } from "../common/target.js";
import type { BaseModelInfo, LinearModule, TunerDef } from "../common/types.js";

export interface LokrConfig extends LycorisConfig {
  readonly peftType: "LOKR";
  readonly decomposeBoth: boolean;
  readonly decomposeFactor: number;
  readonly rankDropoutScale: boolean;
  /** true: w1 (or w1_a) starts at zero; "lycoris": w2 (or w2_b) does; false: all random. */
  readonly initWeights: boolean | "lycoris";
}

const PARAMS = ["lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b"] as const;
export const lokrKeys = (module: string) => ({
  w1: `${module}.lokr_w1`,
  w1a: `${module}.lokr_w1_a`,
  w1b: `${module}.lokr_w1_b`,
  w2: `${module}.lokr_w2`,
  w2a: `${module}.lokr_w2_a`,
  w2b: `${module}.lokr_w2_b`,
});

const schema = z.object({
  ...lycorisSchema,
  peft_type: z.literal("LOKR"),
  decompose_both: z.boolean().optional(),
  decompose_factor: z.number().int().refine((v) => v === -1 || v > 0, "must be -1 (near √dim) or a positive factor").optional(),
  rank_dropout_scale: z.boolean().optional(),
  init_weights: z.union([z.boolean(), z.literal("lycoris")]).optional(),
});

export function parseLokrConfig(raw: Readonly<Record<string, unknown>>, file: string): LokrConfig {
  rejectUnknownKeys(raw, [...COMMON_KEYS, ...LYCORIS_KEYS, "decompose_both", "decompose_factor", "rank_dropout_scale"], file);
  const { config, raw: c } = parseLycoris(schema, raw, file);
  return {
    ...config,
    peftType: "LOKR",
    decomposeBoth: c.decompose_both ?? false,
    decomposeFactor: c.decompose_factor ?? -1,
    rankDropoutScale: c.rank_dropout_scale ?? false,
    initWeights: c.init_weights ?? true,
  };
}

/** PEFT's `factorization(dimension, factor)`: (m, n) with m·n = dimension, m ≤ n, near √dim or `factor`. */
export function factorization(dimension: number, factor = -1): [number, number] {
  if (factor > 0 && dimension % factor === 0) return [factor, dimension / factor];
  const f = factor === -1 ? dimension : factor;
  let [m, n] = [1, dimension];
  const length = m + n; // as in PEFT, never updated
  while (m < n) {
    let newM = m + 1;
    while (dimension % newM !== 0) newM++;
    const newN = dimension / newM;
    if (newM + newN > length || newM > f) break;
    [m, n] = [newM, newN];
  }
  return m > n ? [n, m] : [m, n];
}

/** The factor shapes of one layer: w1 [a, c], w2 [b, d], and whether each is stored whole. */
export function lokrShapes(c: LokrConfig, m: LinearModule, r: number) {
  const [a, b] = factorization(m.outFeatures, c.decomposeFactor);
  const [cc, d] = factorization(m.inFeatures, c.decomposeFactor);
  return { a, b, c: cc, d, useW1: !(c.decomposeBoth && r < Math.max(a, cc) / 2), useW2: !(r < Math.max(b, d) / 2) };
}

function targets(c: LokrConfig, model: BaseModelInfo): LinearModule[] {
  const hits = linearTargets(c, model, "LoKr");
  const conv1d = hits.find((m) => m.fanInFanOut);
  if (conv1d) throw new UnsupportedOptionError("adapter_config.json", "target_modules", conv1d.name, "PEFT's LoKr adapts nn.Linear layers, not GPT-2's Conv1D (fan_in_fan_out)");
  return hits;
}

function shapesOf(c: LokrConfig, m: LinearModule): Map<string, [number, number]> {
  const { r } = lycorisRankAndScale(c, m.name);
  const s = lokrShapes(c, m, r);
  const k = lokrKeys(m.name);
  const out = new Map<string, [number, number]>();
  if (s.useW1) out.set(k.w1, [s.a, s.c]);
  else {
    out.set(k.w1a, [s.a, r]);
    out.set(k.w1b, [r, s.c]);
  }
  if (s.useW2) out.set(k.w2, [s.b, s.d]);
  else {
    out.set(k.w2a, [s.b, r]);
    out.set(k.w2b, [r, s.d]);
  }
  return out;
}

/** w1 ⊗ w2 · scaling as [a·b, c·d] in float64. */
export function kron64(w1: Float64Array, w2: Float64Array, a: number, c: number, b: number, d: number, scaling: number): Float64Array {
  const out = new Float64Array(a * b * c * d);
  const cols = c * d;
  for (let i = 0; i < a; i++) for (let j = 0; j < c; j++) {
    const v = w1[i * c + j]! * scaling;
    for (let k = 0; k < b; k++) for (let l = 0; l < d; l++) out[(i * b + k) * cols + j * d + l] = v * w2[k * d + l]!;
  }
  return out;
}

export const lokr: TunerDef<LokrConfig> = {
  name: "lokr",
  peftType: "LOKR",
  prefix: "lokr_",
  method: "lokr",
  kind: "module",
  parseConfig: parseLokrConfig,
  toRaw: (c) => ({
    ...lycorisToRaw(c),
    decompose_both: c.decomposeBoth,
    decompose_factor: c.decomposeFactor,
    rank_dropout_scale: c.rankDropoutScale,
    init_weights: c.initWeights,
  }),
  resolve: resolveAllLinear,
  role(key) {
    const dot = key.lastIndexOf(".");
    if (dot < 0 || !(PARAMS as readonly string[]).includes(key.slice(dot + 1))) return null;
    return { kind: "update", module: key.slice(0, dot), baseline: 0 };
  },
  expectedTensors(c, model) {
    const out = new Map<string, readonly number[]>();
    for (const m of targets(c, model)) for (const [k, s] of shapesOf(c, m)) out.set(k, s);
    return out;
  },
  init(c, model, rng) {
    const out = new Map<string, Tensor>();
    for (const m of targets(c, model)) {
      const k = lokrKeys(m.name);
      for (const [key, s] of shapesOf(c, m)) {
        // PEFT's default zeroes w1 (or w1_a); "lycoris" zeroes w2 (or w2_b); false keeps all random
        const zero = c.initWeights === true ? key === k.w1 || key === k.w1a : c.initWeights === "lycoris" ? key === k.w2 || key === k.w2b : false;
        out.set(key, zero ? zeros(s) : kaimingUniform(s, rng));
      }
    }
    return out;
  },
  hooks(adapter, param, opts) {
    const c = adapter.config;
    return {
      linear: (name) => {
        const k = lokrKeys(name);
        const has = (key: string) => adapter.tensors.has(key);
        if (!has(k.w1) && !has(k.w1a)) return null;
        const { scaling } = lycorisRankAndScale(c, name);
        return (site) => {
          const w1: Value = has(k.w1) ? param(k.w1) : G.matmul(param(k.w1a), param(k.w1b));
          const w2: Value = has(k.w2) ? param(k.w2) : G.matmul(param(k.w2a), param(k.w2b));
          const [a, cc] = w1.shape as [number, number];
          const [b, d] = w2.shape as [number, number];
          // kron: [a, 1, c, 1] · [1, b, 1, d] → [a, b, c, d] → [a·b, c·d]
          const kron = G.mul(G.reshape(w1, [a, 1, cc, 1]), G.reshape(w2, [1, b, 1, d]));
          const delta = G.mul(G.reshape(kron, [a * b, cc * d]), scaling);
          return applyDeltaWeight(site, delta, {
            training: opts.training,
            seed: opts.seed,
            rankDropout: c.rankDropout,
            rankDropoutScale: c.rankDropoutScale,
            moduleDropout: c.moduleDropout,
          });
        };
      },
    };
  },
  merge(adapter, model) {
    const out = new Map<string, Tensor>();
    const t = (key: string) => adapter.tensors.get(key)!;
    const full = (whole: string, fa: string, fb: string): { v: Float64Array; rows: number; cols: number } => {
      if (adapter.tensors.has(whole)) return { v: Float64Array.from(toFloat32(t(whole))), rows: t(whole).shape[0]!, cols: t(whole).shape[1]! };
      const [rows, r] = t(fa).shape as [number, number];
      const cols = t(fb).shape[1]!;
      return { v: matmul64(toFloat32(t(fa)), toFloat32(t(fb)), rows, r, cols), rows, cols };
    };
    for (const m of model.linearModules) {
      const k = lokrKeys(m.name);
      if (!adapter.tensors.has(k.w1) && !adapter.tensors.has(k.w1a)) continue;
      const w1 = full(k.w1, k.w1a, k.w1b);
      const w2 = full(k.w2, k.w2a, k.w2b);
      const delta = kron64(w1.v, w2.v, w1.rows, w1.cols, w2.rows, w2.cols, lycorisRankAndScale(adapter.config, m.name).scaling);
      out.set(`${m.name}.weight`, addDelta(model.weight(`${m.name}.weight`), delta, m.fanInFanOut));
    }
    return out;
  },
  mixedBatch: {},
  trainConfig: (o, model) => lycorisTrainConfig("LOKR", "lokr", o, model),
};
