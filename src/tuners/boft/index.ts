/**
 * BOFT (PEFT `BOFT`, butterfly orthogonal fine-tuning): the input of each adapted `nn.Linear` is
 * rotated by an orthogonal matrix M built from `boft_n_butterfly_factor` = N butterfly factors,
 * and the output rescaled per row:
 * output = s ⊙ (W·(x·M)) + bias, M = M_{N−1}·…·M_0, M_i = P_i·diag(Q_i,1 … Q_i,D)·P_iᵀ,
 * with D = `boft_block_num` blocks of size H = `boft_block_size` (D·H = in), each block the exact
 * Cayley transform Q = (I + S)⁻¹(I − S) of S = (R − Rᵀ)/2 (R: `boft_R` [N, D, H, H]), P_i PEFT's
 * block-butterfly permutation (identity for N = 1) and s = `boft_s` [out, 1]. Merging gives
 * W' = diag(s)·W·Mᵀ. The Cayley transform is an H-step Gauss–Jordan elimination in the graph
 * (no pivoting: I + S has the positive definite symmetric part I).
 * As PEFT's CUDA path, N factors are kept as configured (PEFT without its CUDA extension silently
 * uses N = 1). `boft_dropout` (PEFT's multiplicative block dropout) is refused for training.
 */
import { z } from "zod";
import { ConfigError, UnsupportedOptionError } from "../../errors.js";
import * as G from "../../graph/api.js";
import type { Graph } from "../../graph/graph.js";
import type { Value } from "../../graph/types.js";
import { castTensor } from "../../models/context.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { COMMON_KEYS, baseFields, baseSchema, baseToRaw, parseWith, rejectUnknownKeys } from "../common/config.js";
import { linearTargets, toStoredLayout, weightOutIn } from "../common/delta.js";
import { type TargetSpec, parseTargetSpec, resolveAllLinear, targetSpecToRaw } from "../common/target.js";
import { rejectFeedforward, savedModules } from "../common/train.js";
import type { BaseModelInfo, LinearModule, TunerConfigBase, TunerDef } from "../common/types.js";

export interface BoftConfig extends TunerConfigBase {
  readonly peftType: "BOFT";
  readonly boftBlockSize: number;
  readonly boftBlockNum: number;
  readonly boftNButterflyFactor: number;
  readonly targetModules: TargetSpec | null;
  readonly excludeModules: TargetSpec | null;
  readonly boftDropout: number;
  readonly fanInFanOut: boolean;
  readonly bias: "none" | "all" | "boft_only";
  readonly initWeights: boolean;
  readonly layersToTransform: readonly number[] | null;
  readonly layersPattern: readonly string[] | null;
}

export const boftKeys = (module: string) => ({ R: `${module}.boft_R`, s: `${module}.boft_s` });

const schema = z.object({
  ...baseSchema,
  peft_type: z.literal("BOFT"),
  boft_block_size: z.number().int().nonnegative().optional(),
  boft_block_num: z.number().int().nonnegative().optional(),
  boft_n_butterfly_factor: z.number().int().positive().optional(),
  target_modules: z.unknown().optional(),
  exclude_modules: z.unknown().optional(),
  boft_dropout: z.number().min(0).max(1).optional(),
  fan_in_fan_out: z.boolean().optional(),
  bias: z.enum(["none", "all", "boft_only"]).optional(),
  init_weights: z.boolean().optional(),
  layers_to_transform: z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())]).nullable().optional(),
  layers_pattern: z.union([z.string(), z.array(z.string())]).nullable().optional(),
});

export function parseBoftConfig(raw: Readonly<Record<string, unknown>>, file: string): BoftConfig {
  rejectUnknownKeys(raw, [...COMMON_KEYS, ...Object.keys(schema.shape)], file);
  const c = parseWith(schema, raw, file);
  const size = c.boft_block_size ?? 4;
  const num = c.boft_block_num ?? 0;
  if (size === 0 && num === 0) throw new ConfigError(file, "boft_block_size", "either boft_block_size or boft_block_num must be non-zero (as in PEFT)");
  if (size !== 0 && num !== 0) throw new ConfigError(file, "boft_block_num", `give either boft_block_size (${size}) or boft_block_num (${num}), not both: boft_block_size × boft_block_num = in_features (as in PEFT)`);
  const ltt = c.layers_to_transform;
  if (c.layers_pattern && (ltt === null || ltt === undefined)) throw new ConfigError(file, "layers_pattern", "needs layers_to_transform (as in PEFT)");
  return {
    ...baseFields(c),
    peftType: "BOFT",
    boftBlockSize: size,
    boftBlockNum: num,
    boftNButterflyFactor: c.boft_n_butterfly_factor ?? 1,
    targetModules: parseTargetSpec(c.target_modules, file, "target_modules"),
    excludeModules: parseTargetSpec(c.exclude_modules, file, "exclude_modules"),
    boftDropout: c.boft_dropout ?? 0,
    fanInFanOut: c.fan_in_fan_out ?? false,
    bias: c.bias ?? "none",
    initWeights: c.init_weights ?? true,
    layersToTransform: ltt === null || ltt === undefined ? null : typeof ltt === "number" ? [ltt] : ltt,
    layersPattern: c.layers_pattern === undefined || c.layers_pattern === null ? null : typeof c.layers_pattern === "string" ? [c.layers_pattern] : c.layers_pattern,
  };
}

export function boftConfigToRaw(c: BoftConfig): Record<string, unknown> {
  return {
    ...baseToRaw(c),
    boft_block_size: c.boftBlockSize,
    boft_block_num: c.boftBlockNum,
    boft_n_butterfly_factor: c.boftNButterflyFactor,
    target_modules: targetSpecToRaw(c.targetModules),
    exclude_modules: targetSpecToRaw(c.excludeModules),
    boft_dropout: c.boftDropout,
    fan_in_fan_out: c.fanInFanOut,
    bias: c.bias,
    init_weights: c.initWeights,
    layers_to_transform: c.layersToTransform ? [...c.layersToTransform] : null,
    layers_pattern: c.layersPattern ? [...c.layersPattern] : null,
  };
}

/** Factors N, blocks D and block size H of one layer, with PEFT's `update_layer` checks. */
export function boftLayout(c: BoftConfig, m: { name: string; inFeatures: number }): { n: number; d: number; h: number } {
  const inn = m.inFeatures;
  const f = c.boftNButterflyFactor - 1;
  const bad = (field: string, why: string) => new ConfigError("adapter_config.json", field, `${m.name}: ${why}`);
  let d: number;
  let h: number;
  if (c.boftBlockSize === 0) {
    d = c.boftBlockNum;
    if (inn % d !== 0) throw bad("boft_block_num", `in_features (${inn}) must be divisible by boft_block_num (${d})`);
    if (f !== 0 && (f > Math.floor(Math.log2(d)) || d % 2 ** f !== 0)) throw bad("boft_n_butterfly_factor", `invalid with boft_block_num ${d}`);
    h = inn / d;
  } else {
    h = c.boftBlockSize;
    if (inn % h !== 0) throw bad("boft_block_size", `in_features (${inn}) must be divisible by boft_block_size (${h})`);
    if (f !== 0 && inn % (h * 2 ** f) !== 0) throw bad("boft_n_butterfly_factor", `invalid with in_features ${inn} and boft_block_size ${h}`);
    d = inn / h;
  }
  if (f !== 0 && d % 2 !== 0) throw bad("boft_block_num", `must be even with butterfly factors (got ${d})`);
  if (f !== 0 && h % 2 !== 0) throw bad("boft_block_size", `must be even with butterfly factors (got ${h})`);
  return { n: f + 1, d, h };
}

/** PEFT's `block_butterfly_perm(n, b, r)` (identity without butterfly factors). */
export function butterflyPerm(n: number, b: number, r: number, factors: number): Int32Array {
  const idx = Int32Array.from({ length: n }, (_, i) => i);
  if (factors === 0) return idx;
  if (b * r * 2 > n) throw new ConfigError("adapter_config.json", "boft_n_butterfly_factor", `invalid number of blocks ${b} for ${n} features`);
  const size = Math.floor(n / b);
  const step = size / r;
  const seq: number[] = [];
  for (let p = 0; p < step; p += 2) seq.push(p);
  for (let p = 1; p < step; p += 2) seq.push(p);
  const order = new Int32Array(size);
  seq.forEach((pos, i) => {
    for (let k = 0; k < r; k++) order[i * r + k] = pos * r + k;
  });
  const out = new Int32Array(n);
  for (let s = 0; s < n; s += size) for (let k = 0; k < size; k++) out[s + k] = idx[s + order[k]!]!;
  return out;
}

/** The permutation of factor i (`perm[j]`: x·P puts x[j] at position perm[j]). */
function factorPerm(inn: number, d: number, h: number, n: number, i: number): Int32Array {
  return butterflyPerm(inn, Math.floor(d / 2 ** i), Math.floor(h / 2), n - 1);
}

function targets(c: BoftConfig, model: BaseModelInfo): LinearModule[] {
  const hits = linearTargets(c, model, "BOFT");
  const conv1d = hits.find((m) => m.fanInFanOut);
  if (conv1d) throw new UnsupportedOptionError("adapter_config.json", "target_modules", conv1d.name, "PEFT's BOFT adapts nn.Linear layers, not GPT-2's Conv1D (fan_in_fan_out)");
  return hits;
}

function eye(h: number): Float32Array {
  const e = new Float32Array(h * h);
  for (let i = 0; i < h; i++) e[i * h + i] = 1;
  return e;
}

/** Cayley blocks (I + S)⁻¹(I − S) of R [B, H, H] in the graph, by Gauss–Jordan on [I + S | I − S]. */
function cayleyBlocks(g: Graph, R: Value, h: number): Value {
  const S = G.mul(G.sub(R, G.transpose(R, [0, 2, 1])), 0.5);
  const I = g.constant(castTensor({ dtype: "float32", shape: [h, h], data: eye(h) }, R.dtype as "float32"));
  let A = G.concat([G.add(I, S), G.sub(I, S)], 2); // [B, H, 2H]
  for (let k = 0; k < h; k++) {
    const ek = new Float32Array(h);
    ek[k] = 1;
    const row = G.slice(A, [k], [k + 1], [1]); // [B, 1, 2H]
    const piv = G.slice(row, [k], [k + 1], [2]); // [B, 1, 1]
    const r = G.div(row, piv);
    const col = G.sub(G.slice(A, [k], [k + 1], [2]), g.constant(castTensor({ dtype: "float32", shape: [h, 1], data: ek }, R.dtype as "float32"))); // [B, H, 1]
    A = G.sub(A, G.matmul(col, r));
  }
  return G.slice(A, [h], [2 * h], [2]);
}

/** The same on the host: Q [H·H] (float64) of one block R. */
function cayley64(r: ArrayLike<number>, off: number, h: number): Float64Array {
  const w = 2 * h;
  const A = new Float64Array(h * w);
  for (let i = 0; i < h; i++) {
    for (let j = 0; j < h; j++) {
      const s = 0.5 * (r[off + i * h + j]! - r[off + j * h + i]!);
      A[i * w + j] = (i === j ? 1 : 0) + s;
      A[i * w + h + j] = (i === j ? 1 : 0) - s;
    }
  }
  for (let k = 0; k < h; k++) {
    const piv = A[k * w + k]!;
    for (let j = 0; j < w; j++) A[k * w + j]! /= piv;
    for (let i = 0; i < h; i++) {
      if (i === k) continue;
      const f = A[i * w + k]!;
      if (f === 0) continue;
      for (let j = 0; j < w; j++) A[i * w + j]! -= f * A[k * w + j]!;
    }
  }
  const Q = new Float64Array(h * h);
  for (let i = 0; i < h; i++) for (let j = 0; j < h; j++) Q[i * h + j] = A[i * w + h + j]!;
  return Q;
}

/** M [in, in] (float64, row-major) of a layer: M_{N−1}·…·M_0, M_i = P_i·BD_i·P_iᵀ. */
export function boftRotation(R: Tensor, inn: number): Float64Array {
  const [n, d, h] = R.shape as [number, number, number, number];
  const r = toFloat32(R);
  let M: Float64Array | null = null;
  for (let i = 0; i < n; i++) {
    const perm = factorPerm(inn, d, h, n, i);
    // M_i[a, b] = BD_i[perm[a], perm[b]]
    const inv = new Int32Array(inn);
    perm.forEach((v, j) => (inv[v] = j));
    const Mi = new Float64Array(inn * inn);
    for (let b = 0; b < d; b++) {
      const Q = cayley64(r, (i * d + b) * h * h, h);
      for (let p = 0; p < h; p++) for (let q = 0; q < h; q++) Mi[inv[b * h + p]! * inn + inv[b * h + q]!] = Q[p * h + q]!;
    }
    if (M === null) M = Mi;
    else {
      const next = new Float64Array(inn * inn);
      for (let a = 0; a < inn; a++) {
        for (let k = 0; k < inn; k++) {
          const v = Mi[a * inn + k]!;
          if (v === 0) continue;
          for (let b = 0; b < inn; b++) next[a * inn + b]! += v * M[k * inn + b]!;
        }
      }
      M = next;
    }
  }
  return M!;
}

/** y[..., j] = x[..., idx[j]], as a gather on axis 0 of the transposed [features, rows] matrix (differentiable). */
function permuteFeatures(g: Graph, x: Value, idx: Int32Array, like: Value): Value {
  const t = G.transpose(G.reshape(x, [-1, idx.length]), [1, 0]);
  const p = G.gather(t, g.constant({ dtype: "int64", shape: [idx.length], data: BigInt64Array.from(idx, BigInt) }), 0);
  return G.reshape(G.transpose(p, [1, 0]), G.shapeOf(like));
}

export const boft: TunerDef<BoftConfig> = {
  name: "boft",
  peftType: "BOFT",
  prefix: "boft_",
  method: "boft",
  kind: "module",
  parseConfig: parseBoftConfig,
  toRaw: boftConfigToRaw,
  resolve: resolveAllLinear,
  role(key) {
    if (key.endsWith(".boft_R")) return { kind: "update", module: key.slice(0, -".boft_R".length), baseline: 0 };
    if (key.endsWith(".boft_s")) return { kind: "update", module: key.slice(0, -".boft_s".length), baseline: 1 };
    return null;
  },
  expectedTensors(c, model) {
    const out = new Map<string, readonly number[]>();
    for (const m of targets(c, model)) {
      const { n, d, h } = boftLayout(c, m);
      const k = boftKeys(m.name);
      out.set(k.R, [n, d, h, h]);
      out.set(k.s, [m.outFeatures, 1]);
    }
    return out;
  },
  init(c, model, rng) {
    const out = new Map<string, Tensor>();
    for (const m of targets(c, model)) {
      const { n, d, h } = boftLayout(c, m);
      const k = boftKeys(m.name);
      const size = n * d * h * h;
      // PEFT: R = 0, s = 1; init_weights false: R ~ N(0, 0.1²), s ~ N(1, 0.1²)
      out.set(k.R, { dtype: "float32", shape: [n, d, h, h], data: c.initWeights ? new Float32Array(size) : Float32Array.from({ length: size }, () => rng.normal() * 0.1) });
      out.set(k.s, { dtype: "float32", shape: [m.outFeatures, 1], data: c.initWeights ? new Float32Array(m.outFeatures).fill(1) : Float32Array.from({ length: m.outFeatures }, () => 1 + rng.normal() * 0.1) });
    }
    return out;
  },
  hooks(adapter, param, opts) {
    const c = adapter.config;
    if (opts.training && c.boftDropout > 0) {
      throw new UnsupportedOptionError(`adapter '${adapter.name}'`, "boft_dropout", c.boftDropout, "BOFT's multiplicative block dropout is not implemented for training; set boft_dropout 0");
    }
    return {
      linear: (name) => {
        const k = boftKeys(name);
        if (!adapter.tensors.has(k.R)) return null;
        return (site) => {
          const g = site.g;
          const { n, d, h } = boftLayout(c, { name, inFeatures: site.inFeatures });
          const inn = site.inFeatures;
          const Q = G.reshape(cayleyBlocks(g, G.reshape(param(k.R), [n * d, h, h]), h), [n, d, h, h]);
          let x = site.x;
          // x·M = x·M_{N−1}·…·M_0; x·M_i = ((x·P_i)·BD_i)·P_iᵀ
          for (let i = n - 1; i >= 0; i--) {
            const perm = factorPerm(inn, d, h, n, i);
            const identity = perm.every((v, j) => v === j);
            const inv = new Int32Array(inn);
            perm.forEach((v, j) => (inv[v] = j));
            if (!identity) x = permuteFeatures(g, x, inv, site.x);
            const Qi = G.squeeze(G.slice(Q, [i], [i + 1], [0]), [0]); // [D, H, H]
            x = G.reshape(G.matmul(G.reshape(x, [-1, d, 1, h]), Qi), G.shapeOf(site.x));
            if (!identity) x = permuteFeatures(g, x, perm, site.x);
          }
          const s = G.reshape(param(k.s), [-1]);
          const y = site.base(x);
          return site.bias ? G.add(G.mul(G.sub(y, site.bias), s), site.bias) : G.mul(y, s);
        };
      },
    };
  },
  merge(adapter, model) {
    const out = new Map<string, Tensor>();
    for (const m of model.linearModules) {
      const k = boftKeys(m.name);
      const R = adapter.tensors.get(k.R);
      if (!R) continue;
      const M = boftRotation(R, m.inFeatures);
      const s = toFloat32(adapter.tensors.get(k.s)!);
      const weight = model.weight(`${m.name}.weight`);
      const W = weightOutIn(weight, m.fanInFanOut);
      const inn = m.inFeatures;
      const res = new Float64Array(W.length);
      // W' = diag(s)·W·Mᵀ
      for (let o = 0; o < m.outFeatures; o++) {
        for (let a = 0; a < inn; a++) {
          let v = 0;
          for (let b = 0; b < inn; b++) v += W[o * inn + b]! * M[a * inn + b]!;
          res[o * inn + a] = v * s[o]!;
        }
      }
      out.set(`${m.name}.weight`, toStoredLayout(res, weight, m.fanInFanOut));
    }
    return out;
  },
  mixedBatch: {},
  trainConfig(o, model) {
    rejectFeedforward(o, "boft");
    return {
      peft_type: "BOFT",
      task_type: o.taskType,
      boft_block_size: 4,
      boft_n_butterfly_factor: 1,
      target_modules: o.target ?? [...model.defaultTargets],
      ...savedModules(o),
    };
  },
};
