/**
 * Block-LoRA (*Block-LoRA: Block matrix-based low-rank adaptation*, few-shot CLIP): LoRA's
 * ΔW = B·A seen as a block matrix, the up-projection B [out, r] split into n row blocks B_i and the
 * down-projection A [r, in] into n column blocks A_j, with every down-projection block shared:
 * A_j = A₀ [r, in/n], so ΔW_ij = B_i·A₀ and ΔW = B·[A₀ A₀ … A₀]. The product with the input then
 * becomes an addition: ΔW·x = B·A₀·(x_1 + … + x_n) for the n input chunks x_j, so the layer costs
 * r·in/n + r·out multiply-adds and r·(in/n + out) parameters instead of LoRA's r·(in + out).
 *
 * output = base(x) + (lora_alpha / r)·B·A₀·Σ_j dropout(x)_j. Tensors `<module>.block_lora_A`
 * [r, in/n] (Kaiming-uniform over its fan-in in/n) and `<module>.block_lora_B` [out, r] (zero).
 * adapter_config.json: `peft_type: "BLOCK_LORA"`, LoRA's `r`, `lora_alpha`, `lora_dropout`,
 * targeting fields, plus `block_num` (n, default 4; every adapted layer's in_features must be a
 * multiple of it). Exports to LoRA as its dense form (A = [A₀ … A₀], same r and alpha).
 */
import { z } from "zod";
import { ConfigError } from "../../errors.js";
import * as G from "../../graph/api.js";
import { dense, dropout } from "../../graph/composite.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { addDelta, kaimingUniform, linearTargets } from "../common/delta.js";
import { type ExportedFactors, type LoraLikeConfig, loraExport, loraLikeToRaw, parseLoraLike } from "../common/lora-like.js";
import { resolveAllLinear } from "../common/target.js";
import { rejectFeedforward, savedModules } from "../common/train.js";
import type { BaseModelInfo, LinearModule, TensorRole, TunerDef } from "../common/types.js";

export interface BlockLoraConfig extends LoraLikeConfig {
  readonly peftType: "BLOCK_LORA";
  /** n: the number of column blocks of the down-projection, all equal to the shared A₀. */
  readonly blockNum: number;
}

export const blockLoraKeys = (module: string) => ({ A: `${module}.block_lora_A`, B: `${module}.block_lora_B` });

function moduleOf(key: string): string | null {
  const m = /^(.*)\.block_lora_[AB]$/u.exec(key);
  return m ? m[1]! : null;
}

export function parseBlockLoraConfig(raw: Readonly<Record<string, unknown>>, file: string): BlockLoraConfig {
  const { base, own } = parseLoraLike(raw, file, "BLOCK_LORA", { block_num: z.number().int().positive().optional() });
  return { ...base, peftType: "BLOCK_LORA", blockNum: own.block_num ?? 4 };
}

function toRaw(c: BlockLoraConfig): Record<string, unknown> {
  return { ...loraLikeToRaw(c), block_num: c.blockNum };
}

function targets(c: BlockLoraConfig, model: BaseModelInfo): LinearModule[] {
  const ms = linearTargets(c, model, "Block-LoRA");
  for (const m of ms) {
    if (m.inFeatures % c.blockNum !== 0) throw new ConfigError("adapter_config.json", "block_num", `${c.blockNum} does not divide in_features ${m.inFeatures} of ${m.name}`);
  }
  return ms;
}

function role(key: string): TensorRole | null {
  const module = moduleOf(key);
  if (module === null) return null;
  return { kind: "update", module, baseline: 0, lowRank: key.endsWith("_A") ? "A" : "B" };
}

/** The dense down-projection [A₀ A₀ … A₀] ([r, n·in/n]). */
export function denseDown(A0: Tensor, n: number): Float32Array {
  const [r, w] = A0.shape as [number, number];
  const a = toFloat32(A0);
  const out = new Float32Array(r * w * n);
  for (let k = 0; k < r; k++) for (let j = 0; j < n; j++) out.set(a.subarray(k * w, (k + 1) * w), k * w * n + j * w);
  return out;
}

/** ΔW = (α/r)·B·[A₀ … A₀] as [out, in] (float64). */
export function blockLoraDeltaWeight(A0: Tensor, B: Tensor, n: number, scale: number): Float64Array {
  const r = A0.shape[0]!;
  const inn = A0.shape[1]! * n;
  const out = B.shape[0]!;
  const a = denseDown(A0, n);
  const b = toFloat32(B);
  const d = new Float64Array(out * inn);
  for (let o = 0; o < out; o++) {
    for (let k = 0; k < r; k++) {
      const f = b[o * r + k]! * scale;
      if (f === 0) continue;
      for (let i = 0; i < inn; i++) d[o * inn + i]! += f * a[k * inn + i]!;
    }
  }
  return d;
}

export const blockLora: TunerDef<BlockLoraConfig> = {
  name: "block_lora",
  peftType: "BLOCK_LORA",
  prefix: "block_lora_",
  method: "block-lora",
  kind: "module",
  role,
  parseConfig: parseBlockLoraConfig,
  toRaw,
  resolve: resolveAllLinear,
  expectedTensors(c, model) {
    const out = new Map<string, readonly number[]>();
    for (const m of targets(c, model)) {
      const k = blockLoraKeys(m.name);
      out.set(k.A, [c.r, m.inFeatures / c.blockNum]);
      out.set(k.B, [m.outFeatures, c.r]);
    }
    return out;
  },
  init(c, model, rng) {
    const out = new Map<string, Tensor>();
    for (const m of targets(c, model)) {
      const k = blockLoraKeys(m.name);
      out.set(k.A, kaimingUniform([c.r, m.inFeatures / c.blockNum], rng));
      out.set(k.B, { dtype: "float32", shape: [m.outFeatures, c.r], data: new Float32Array(m.outFeatures * c.r) });
    }
    return out;
  },
  hooks(adapter, param, opts) {
    const c = adapter.config;
    return {
      linear: (name) => {
        const k = blockLoraKeys(name);
        if (!adapter.tensors.has(k.A)) return null;
        return (site) => {
          const x = opts.training && c.loraDropout > 0 ? dropout(site.x, c.loraDropout, opts.seed) : site.x;
          const w = site.inFeatures / c.blockNum;
          // Σ_j x_j over the n input chunks: [N, n, in/n] → [N, in/n]
          const summed = G.reduceSum(G.reshape(x, [-1, c.blockNum, w]), [1], false);
          const h = dense(summed, param(k.A), null, { transB: true }); // [N, r]
          const y = dense(h, param(k.B), site.base(site.x), { transB: true, alpha: c.loraAlpha / c.r }); // [N, out]
          return site.x.rank === 2 ? y : G.reshape(y, G.shapeTensor(site.x, site.outFeatures));
        };
      },
    };
  },
  merge(adapter, model) {
    const c = adapter.config;
    const out = new Map<string, Tensor>();
    for (const m of model.linearModules) {
      const k = blockLoraKeys(m.name);
      const A = adapter.tensors.get(k.A);
      if (!A) continue;
      out.set(`${m.name}.weight`, addDelta(model.weight(`${m.name}.weight`), blockLoraDeltaWeight(A, adapter.tensors.get(k.B)!, c.blockNum, c.loraAlpha / c.r), m.fanInFanOut));
    }
    return out;
  },
  toLora(adapter, model) {
    const c = adapter.config;
    const factors = new Map<string, ExportedFactors>();
    const copied = new Map<string, Tensor>();
    for (const [key, t] of adapter.tensors) if (role(key) === null) copied.set(key, t);
    for (const m of model.linearModules) {
      const k = blockLoraKeys(m.name);
      const A = adapter.tensors.get(k.A);
      if (!A) continue;
      factors.set(m.name, { A: denseDown(A, c.blockNum), B: Float32Array.from(toFloat32(adapter.tensors.get(k.B)!)), r: c.r, inFeatures: m.inFeatures, outFeatures: m.outFeatures, alpha: c.loraAlpha });
    }
    return loraExport(c, factors, copied);
  },
  trainConfig(o, model) {
    rejectFeedforward(o, "block-lora");
    return {
      peft_type: "BLOCK_LORA",
      task_type: o.taskType,
      r: o.r,
      lora_alpha: o.alpha,
      lora_dropout: o.dropout,
      target_modules: o.target ?? [...model.defaultTargets],
      ...savedModules(o),
      ...(model.linearModules.some((m) => m.fanInFanOut) ? { fan_in_fan_out: true } : {}),
    };
  },
};
