/**
 * OFT (PEFT `OFT`, orthogonal fine-tuning as PEFT ≥ 0.18 computes it): the input of each adapted
 * linear layer is rotated by a block-diagonal orthogonal matrix before the frozen layer,
 * output = base(x·R), R = diag(R_1 … R_r), blocks of size `oft_block_size` (r·block = in).
 * Each block is the Cayley–Neumann approximation R_i ≈ I + 2Q + 2Q² + … + Q^(n−1) of
 * (I + Q)(I − Q)⁻¹ for the skew-symmetric Q built from the stored upper triangle
 * (`oft_R.weight`, [r, block·(block−1)/2]; one shared row with `block_share`). Merging gives
 * W·Rᵀ. As in PEFT, only `nn.Linear` layers (not GPT-2's Conv1D) are adapted; `module_dropout`
 * is accepted and, as in PEFT's linear layer, has no effect. The exact Cayley transform
 * (`use_cayley_neumann: false`, a matrix inverse) is refused.
 *
 * Constrained OFT (`coft`): PEFT projects each block's skew matrix Q onto the Frobenius ball of
 * radius eps' = eps/√rows before every forward (Q ← eps'·Q/‖Q‖ when ‖Q‖ > eps', rows = the
 * parameter's first dimension), writing the projection back into the parameter. Here the graph
 * applies the same projection (so loaded weights act as in PEFT, and merging projects too), and
 * in training the tuner's allocator writes it back after every optimizer step, so the next step
 * starts from the projected parameter as in PEFT (and the gradient is the one of the projected
 * value: the graph's projection treats values on the sphere, up to 1e-5 relative, as inside).
 */
import { z } from "zod";
import { ConfigError, UnsupportedOptionError } from "../../errors.js";
import * as G from "../../graph/api.js";
import type { Graph } from "../../graph/graph.js";
import type { Value } from "../../graph/types.js";
import { castTensor } from "../../models/context.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { COMMON_KEYS, baseFields, baseSchema, baseToRaw, parseWith, rejectUnknownKeys } from "../common/config.js";
import { linearTargets, matmul64, toStoredLayout, weightOutIn } from "../common/delta.js";
import { type TargetSpec, resolveAllLinear, parseTargetSpec, targetSpecToRaw } from "../common/target.js";
import { rejectFeedforward, savedModules } from "../common/train.js";
import type { BaseModelInfo, LinearModule, TunerConfigBase, TunerDef } from "../common/types.js";

export interface OftConfig extends TunerConfigBase {
  readonly peftType: "OFT";
  /** Blocks per layer (0: derived from `oft_block_size`). */
  readonly r: number;
  /** Block size (0: derived from `r`). */
  readonly oftBlockSize: number;
  readonly moduleDropout: number;
  readonly targetModules: TargetSpec | null;
  readonly excludeModules: TargetSpec | null;
  readonly fanInFanOut: boolean;
  readonly bias: "none" | "all" | "oft_only";
  readonly initWeights: boolean;
  readonly layersToTransform: readonly number[] | null;
  readonly layersPattern: readonly string[] | null;
  readonly coft: boolean;
  readonly eps: number;
  readonly blockShare: boolean;
  readonly useCayleyNeumann: boolean;
  readonly numCayleyNeumannTerms: number;
}

export const oftKey = (module: string): string => `${module}.oft_R.weight`;

const schema = z.object({
  ...baseSchema,
  peft_type: z.literal("OFT"),
  r: z.number().int().nonnegative().optional(),
  oft_block_size: z.number().int().nonnegative().optional(),
  module_dropout: z.number().min(0).max(1).optional(),
  target_modules: z.unknown().optional(),
  exclude_modules: z.unknown().optional(),
  fan_in_fan_out: z.boolean().optional(),
  bias: z.enum(["none", "all", "oft_only"]).optional(),
  init_weights: z.boolean().optional(),
  layers_to_transform: z.union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative())]).nullable().optional(),
  layers_pattern: z.union([z.string(), z.array(z.string())]).nullable().optional(),
  coft: z.boolean().optional(),
  eps: z.number().positive().optional(),
  block_share: z.boolean().optional(),
  use_cayley_neumann: z.boolean().optional(),
  num_cayley_neumann_terms: z.number().int().positive().optional(),
});

export function parseOftConfig(raw: Readonly<Record<string, unknown>>, file: string): OftConfig {
  rejectUnknownKeys(raw, [...COMMON_KEYS, ...Object.keys(schema.shape)], file);
  const c = parseWith(schema, raw, file);
  const r = c.r ?? 0;
  const block = c.oft_block_size ?? 32;
  if ((r !== 0) === (block !== 0)) {
    throw new ConfigError(file, "oft_block_size", `give exactly one of r (${r}) and oft_block_size (${block}), the other is 0: r × oft_block_size = in_features (as in PEFT)`);
  }
  if (!("oft_block_size" in raw)) {
    throw new ConfigError(file, "oft_block_size", "missing: an OFT adapter from PEFT < 0.14 uses the old parametrisation, which PEFT 0.21 no longer loads either");
  }
  if (c.use_cayley_neumann === false) throw new UnsupportedOptionError(file, "use_cayley_neumann", false, "the exact Cayley transform needs a matrix inverse; use the Cayley–Neumann series (PEFT's default)");
  const ltt = c.layers_to_transform;
  if (c.layers_pattern && (ltt === null || ltt === undefined)) throw new ConfigError(file, "layers_pattern", "needs layers_to_transform (as in PEFT)");
  return {
    ...baseFields(c),
    peftType: "OFT",
    r,
    oftBlockSize: block,
    moduleDropout: c.module_dropout ?? 0,
    targetModules: parseTargetSpec(c.target_modules, file, "target_modules"),
    excludeModules: parseTargetSpec(c.exclude_modules, file, "exclude_modules"),
    fanInFanOut: c.fan_in_fan_out ?? false,
    bias: c.bias ?? "none",
    initWeights: c.init_weights ?? true,
    layersToTransform: ltt === null || ltt === undefined ? null : typeof ltt === "number" ? [ltt] : ltt,
    layersPattern: c.layers_pattern === undefined || c.layers_pattern === null ? null : typeof c.layers_pattern === "string" ? [c.layers_pattern] : c.layers_pattern,
    coft: c.coft ?? false,
    eps: c.eps ?? 6e-5,
    blockShare: c.block_share ?? false,
    useCayleyNeumann: true,
    numCayleyNeumannTerms: c.num_cayley_neumann_terms ?? 5,
  };
}

export function oftConfigToRaw(c: OftConfig): Record<string, unknown> {
  return {
    ...baseToRaw(c),
    r: c.r,
    oft_block_size: c.oftBlockSize,
    module_dropout: c.moduleDropout,
    target_modules: targetSpecToRaw(c.targetModules),
    exclude_modules: targetSpecToRaw(c.excludeModules),
    fan_in_fan_out: c.fanInFanOut,
    bias: c.bias,
    init_weights: c.initWeights,
    layers_to_transform: c.layersToTransform ? [...c.layersToTransform] : null,
    layers_pattern: c.layersPattern ? [...c.layersPattern] : null,
    coft: c.coft,
    eps: c.eps,
    block_share: c.blockShare,
    use_cayley_neumann: c.useCayleyNeumann,
    num_cayley_neumann_terms: c.numCayleyNeumannTerms,
  };
}

/** PEFT's `adjust_oft_parameters`: the divisor of `inFeatures` nearest to `p` (the lower one on ties), or `inFeatures` when p ≥ it. */
export function adjustOftParameter(inFeatures: number, p: number): number {
  if (p >= inFeatures) return inFeatures;
  let higher = p;
  while (higher <= inFeatures && inFeatures % higher !== 0) higher++;
  let lower = p;
  while (lower > 1 && inFeatures % lower !== 0) lower--;
  return p - lower <= higher - p ? lower : higher;
}

/** Blocks and block size of one layer, as PEFT's `update_layer` derives them. */
export function oftLayout(c: OftConfig, inFeatures: number): { r: number; block: number } {
  if (c.r === 0) {
    const block = inFeatures % c.oftBlockSize !== 0 || c.oftBlockSize > inFeatures ? adjustOftParameter(inFeatures, c.oftBlockSize) : c.oftBlockSize;
    return { r: inFeatures / block, block };
  }
  const r = inFeatures % c.r !== 0 || c.r > inFeatures ? adjustOftParameter(inFeatures, c.r) : c.r;
  return { r, block: inFeatures / r };
}

function targets(c: OftConfig, model: BaseModelInfo): LinearModule[] {
  const hits = linearTargets(c, model, "OFT");
  const conv1d = hits.find((m) => m.fanInFanOut);
  if (conv1d) throw new UnsupportedOptionError("adapter_config.json", "target_modules", conv1d.name, "PEFT's OFT adapts nn.Linear layers, not GPT-2's Conv1D (fan_in_fan_out)");
  return hits;
}

/** Upper-triangle positions (row < col) in PEFT's `triu_indices(block, block, 1)` order. */
function triu(block: number): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i < block; i++) for (let j = i + 1; j < block; j++) out.push([i, j]);
  return out;
}

/** The blocks R_i as a [rows, block, block] graph value from the [rows, n] parameter. */
function rotationBlocks(g: Graph, vec: Value, block: number, terms: number): Value {
  const pos = triu(block);
  // Q = skew(vec) as one matrix product with a constant ±1 placement matrix [n, block²]
  const P = new Float32Array(pos.length * block * block);
  pos.forEach(([i, j], e) => {
    P[e * block * block + i * block + j] = 1;
    P[e * block * block + j * block + i] = -1;
  });
  const Pc = g.constant(castTensor({ dtype: "float32", shape: [pos.length, block * block], data: P }, vec.dtype as "float32"));
  const Q = G.reshape(G.matmul(vec, Pc), [-1, block, block]);
  const eye = new Float32Array(block * block);
  for (let i = 0; i < block; i++) eye[i * block + i] = 1;
  let R = G.add(Q, g.constant(castTensor({ dtype: "float32", shape: [block, block], data: eye }, vec.dtype as "float32")));
  if (terms <= 1) return G.sub(R, Q);
  R = G.add(R, Q); // I + 2Q
  if (terms > 2) {
    let p = G.matmul(Q, Q);
    R = G.add(R, G.mul(p, 2));
    for (let k = 3; k < terms - 1; k++) {
      p = G.matmul(p, Q);
      R = G.add(R, G.mul(p, 2));
    }
    R = G.add(R, G.matmul(p, Q));
  }
  return R;
}

/** COFT's radius for a [rows, n] parameter: eps/√rows (PEFT's per-block scaling). */
const coftRadius = (eps: number, rows: number): number => eps / Math.sqrt(rows);
/** Values on the sphere up to this relative margin count as inside (projected values, rounded). */
const COFT_MARGIN = 1 + 1e-5;

/** COFT's projection of a [rows, n] parameter on the host: each row's skew matrix (‖Q‖_F = √2·‖row‖) onto the ball. */
export function projectCoft(vec: Float32Array, rows: number, eps: number): Float32Array {
  const n = vec.length / rows;
  const radius = coftRadius(eps, rows);
  const out = Float32Array.from(vec);
  for (let b = 0; b < rows; b++) {
    let ss = 0;
    for (let e = 0; e < n; e++) ss += vec[b * n + e]! ** 2;
    const norm = Math.sqrt(2 * ss);
    if (norm > radius) for (let e = 0; e < n; e++) out[b * n + e] = (radius * vec[b * n + e]!) / norm;
  }
  return out;
}

/** The same projection in the graph ([rows, n] value). */
function projectCoftGraph(g: Graph, vec: Value, eps: number): Value {
  const rows = vec.shape[0] as number;
  const radius = coftRadius(eps, rows);
  // floored before the square root: a zero block (the initial value) must not give √0's infinite slope
  const norm = G.sqrt(G.maximum(G.mul(G.reduceSum(G.mul(vec, vec), [1], true), 2), 1e-30)); // [rows, 1]
  const inside = G.not(G.greater(norm, radius * COFT_MARGIN));
  // the division only matters outside the ball, where the norm is positive
  const scale = G.where(inside, g.scalar(1, vec.dtype as "float32"), G.div(radius, G.maximum(norm, radius)));
  return G.mul(vec, scale);
}

/** The same blocks on the host (float64), for merging: [rows][block·block]. */
function rotationBlocks64(vec: Float32Array, rows: number, block: number, terms: number): Float64Array[] {
  const pos = triu(block);
  const n = pos.length;
  const out: Float64Array[] = [];
  for (let b = 0; b < rows; b++) {
    const Q = new Float64Array(block * block);
    pos.forEach(([i, j], e) => {
      Q[i * block + j] = vec[b * n + e]!;
      Q[j * block + i] = -vec[b * n + e]!;
    });
    const R = new Float64Array(block * block);
    for (let i = 0; i < block; i++) R[i * block + i] = 1;
    const addScaled = (m: Float64Array, s: number) => m.forEach((v, i) => (R[i]! += s * v));
    if (terms > 1) addScaled(Q, 2);
    if (terms > 2) {
      let p = matmul64(Q, Q, block, block, block);
      addScaled(p, 2);
      for (let k = 3; k < terms - 1; k++) {
        p = matmul64(p, Q, block, block, block);
        addScaled(p, 2);
      }
      addScaled(matmul64(p, Q, block, block, block), 1);
    }
    out.push(R);
  }
  return out;
}

export const oft: TunerDef<OftConfig> = {
  name: "oft",
  peftType: "OFT",
  prefix: "oft_",
  method: "oft",
  kind: "module",
  parseConfig: parseOftConfig,
  toRaw: oftConfigToRaw,
  resolve: resolveAllLinear,
  role(key) {
    return key.endsWith(".oft_R.weight") ? { kind: "update", module: key.slice(0, -".oft_R.weight".length), baseline: 0 } : null;
  },
  expectedTensors(c, model) {
    return new Map(
      targets(c, model).map((m) => {
        const { r, block } = oftLayout(c, m.inFeatures);
        return [oftKey(m.name), [c.blockShare ? 1 : r, (block * (block - 1)) / 2]];
      }),
    );
  },
  init(c, model, rng) {
    const out = new Map<string, Tensor>();
    for (const m of targets(c, model)) {
      const { r, block } = oftLayout(c, m.inFeatures);
      const shape = [c.blockShare ? 1 : r, (block * (block - 1)) / 2];
      const n = shape[0]! * shape[1]!;
      out.set(oftKey(m.name), { dtype: "float32", shape, data: c.initWeights ? new Float32Array(n) : Float32Array.from({ length: n }, () => rng.normal() * 0.1) });
    }
    return out;
  },
  hooks(adapter, param) {
    const c = adapter.config;
    return {
      linear: (name) => {
        const key = oftKey(name);
        if (!adapter.tensors.has(key)) return null;
        return (site) => {
          const { r, block } = oftLayout(c, site.inFeatures);
          const vec = c.coft ? projectCoftGraph(site.g, param(key), c.eps) : param(key);
          let R = rotationBlocks(site.g, vec, block, c.numCayleyNeumannTerms); // [rows, b, b]
          if (c.blockShare) R = G.expand(R, site.g.ints([r, block, block]));
          // x [..., in] → [N, r, 1, b] · R [r, b, b] → [N, r, 1, b] → x's shape
          const xr = G.matmul(G.reshape(site.x, [-1, r, 1, block]), R);
          return site.base(G.reshape(xr, G.shapeOf(site.x)));
        };
      },
    };
  },
  merge(adapter, model) {
    const out = new Map<string, Tensor>();
    const c = adapter.config;
    for (const m of model.linearModules) {
      const t = adapter.tensors.get(oftKey(m.name));
      if (!t) continue;
      const { r, block } = oftLayout(c, m.inFeatures);
      const vec = c.coft ? projectCoft(toFloat32(t), t.shape[0]!, c.eps) : toFloat32(t);
      const blocks = rotationBlocks64(vec, t.shape[0]!, block, c.numCayleyNeumannTerms);
      const weight = model.weight(`${m.name}.weight`);
      const W = weightOutIn(weight, m.fanInFanOut); // [out, in]
      const inn = m.inFeatures;
      const res = new Float64Array(W.length);
      // W' = W·Rᵀ: column block i of W times R_iᵀ
      for (let o = 0; o < m.outFeatures; o++) {
        for (let bi = 0; bi < r; bi++) {
          const R = blocks[c.blockShare ? 0 : bi]!;
          for (let k = 0; k < block; k++) {
            let s = 0;
            for (let cc = 0; cc < block; cc++) s += W[o * inn + bi * block + cc]! * R[k * block + cc]!;
            res[o * inn + bi * block + k] = s;
          }
        }
      }
      out.set(`${m.name}.weight`, toStoredLayout(res, weight, m.fanInFanOut));
    }
    return out;
  },
  mixedBatch: {},
  training: {
    // COFT: the projection written back into the parameter after every step, as PEFT's forward does
    allocator(adapter) {
      const c = adapter.config;
      if (!c.coft) return null;
      const keys = [...adapter.tensors.keys()].filter((k) => k.endsWith(".oft_R.weight"));
      return {
        afterStep(_step, values) {
          for (const k of keys) {
            const v = values.get(k);
            if (v) v.set(projectCoft(v, adapter.tensors.get(k)!.shape[0]!, c.eps));
          }
        },
        finish: () => null,
      };
    },
  },
  trainConfig(o, model) {
    rejectFeedforward(o, "oft");
    return {
      peft_type: "OFT",
      task_type: o.taskType,
      r: 0,
      oft_block_size: 32,
      module_dropout: o.dropout,
      target_modules: o.target ?? [...model.defaultTargets],
      ...savedModules(o),
    };
  },
};
