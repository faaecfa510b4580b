/**
 * LoHa (PEFT `LOHA`, FedPara's low-rank Hadamard product): per adapted linear layer
 * ΔW = ((w1_a·w1_b) ⊙ (w2_a·w2_b)) · alpha/r with w1_a, w2_a [out, r] and w1_b, w2_b [r, in],
 * so ΔW can reach rank r² with 2r(out + in) parameters. Output = base(x) + x·ΔWᵀ; rank and
 * module dropout in training as PEFT's LyCORIS layers. PEFT adapts `nn.Linear` (and convolutions),
 * not GPT-2's `Conv1D`, so `fan_in_fan_out` layers are refused.
 */
import { z } from "zod";
import { UnsupportedOptionError } from "../../errors.js";
import * as G from "../../graph/api.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { COMMON_KEYS, rejectUnknownKeys } from "../common/config.js";
import { addDelta, applyDeltaWeight, kaimingUniform, linearTargets, matmul64, zeros } from "../common/delta.js";
import { LYCORIS_KEYS, type LycorisConfig, lycorisRankAndScale, lycorisSchema, lycorisToRaw, lycorisTrainConfig, parseLycoris } from "../common/lycoris.js";
import { resolveAllLinear } from "../common/target.js";
import type { BaseModelInfo, LinearModule, TunerDef } from "../common/types.js";

export interface LohaConfig extends LycorisConfig {
  readonly peftType: "LOHA";
  /** true: w2_b starts at zero (ΔW = 0); false: every factor random (PEFT's testing option). */
  readonly initWeights: boolean;
}

const PARAMS = ["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"] as const;
export const lohaKeys = (module: string) => ({
  w1a: `${module}.hada_w1_a`,
  w1b: `${module}.hada_w1_b`,
  w2a: `${module}.hada_w2_a`,
  w2b: `${module}.hada_w2_b`,
});

const schema = z.object({ ...lycorisSchema, peft_type: z.literal("LOHA"), init_weights: z.boolean().optional() });

export function parseLohaConfig(raw: Readonly<Record<string, unknown>>, file: string): LohaConfig {
  rejectUnknownKeys(raw, [...COMMON_KEYS, ...LYCORIS_KEYS], file);
  const { config, raw: c } = parseLycoris(schema, raw, file);
  return { ...config, peftType: "LOHA", initWeights: c.init_weights ?? true };
}

function targets(c: LohaConfig, model: BaseModelInfo): LinearModule[] {
  const hits = linearTargets(c, model, "LoHa");
  const conv1d = hits.find((m) => m.fanInFanOut);
  if (conv1d) throw new UnsupportedOptionError("adapter_config.json", "target_modules", conv1d.name, "PEFT's LoHa adapts nn.Linear layers, not GPT-2's Conv1D (fan_in_fan_out)");
  return hits;
}

/** ΔW [out, in] in float64 from the four factors. */
export function lohaDeltaWeight(w1a: Tensor, w1b: Tensor, w2a: Tensor, w2b: Tensor, scaling: number): Float64Array {
  const [out, r] = w1a.shape as [number, number];
  const inn = w1b.shape[1]!;
  const p1 = matmul64(toFloat32(w1a), toFloat32(w1b), out, r, inn);
  const p2 = matmul64(toFloat32(w2a), toFloat32(w2b), out, r, inn);
  for (let i = 0; i < p1.length; i++) p1[i] = p1[i]! * p2[i]! * scaling;
  return p1;
}

export const loha: TunerDef<LohaConfig> = {
  name: "loha",
  peftType: "LOHA",
  prefix: "hada_",
  method: "loha",
  kind: "module",
  parseConfig: parseLohaConfig,
  toRaw: (c) => ({ ...lycorisToRaw(c), init_weights: c.initWeights }),
  resolve: resolveAllLinear,
  role(key) {
    const dot = key.lastIndexOf(".");
    if (dot < 0 || !(PARAMS as readonly string[]).includes(key.slice(dot + 1))) return null;
    return { kind: "update", module: key.slice(0, dot), baseline: 0 };
  },
  expectedTensors(c, model) {
    const out = new Map<string, readonly number[]>();
    for (const m of targets(c, model)) {
      const { r } = lycorisRankAndScale(c, m.name);
      const k = lohaKeys(m.name);
      out.set(k.w1a, [m.outFeatures, r]);
      out.set(k.w1b, [r, m.inFeatures]);
      out.set(k.w2a, [m.outFeatures, r]);
      out.set(k.w2b, [r, m.inFeatures]);
    }
    return out;
  },
  init(c, model, rng) {
    const out = new Map<string, Tensor>();
    for (const m of targets(c, model)) {
      const { r } = lycorisRankAndScale(c, m.name);
      const k = lohaKeys(m.name);
      out.set(k.w1a, kaimingUniform([m.outFeatures, r], rng));
      out.set(k.w1b, kaimingUniform([r, m.inFeatures], rng));
      out.set(k.w2a, kaimingUniform([m.outFeatures, r], rng));
      out.set(k.w2b, c.initWeights ? zeros([r, m.inFeatures]) : kaimingUniform([r, m.inFeatures], rng));
    }
    return out;
  },
  hooks(adapter, param, opts) {
    const c = adapter.config;
    return {
      linear: (name) => {
        const k = lohaKeys(name);
        if (!adapter.tensors.has(k.w1a)) return null;
        const { scaling } = lycorisRankAndScale(c, name);
        return (site) => {
          const delta = G.mul(G.mul(G.matmul(param(k.w1a), param(k.w1b)), G.matmul(param(k.w2a), param(k.w2b))), scaling);
          return applyDeltaWeight(site, delta, { training: opts.training, seed: opts.seed, rankDropout: c.rankDropout, rankDropoutScale: true, moduleDropout: c.moduleDropout });
        };
      },
    };
  },
  merge(adapter, model) {
    const out = new Map<string, Tensor>();
    for (const m of model.linearModules) {
      const k = lohaKeys(m.name);
      if (!adapter.tensors.has(k.w1a)) continue;
      const t = (key: string) => adapter.tensors.get(key)!;
      const delta = lohaDeltaWeight(t(k.w1a), t(k.w1b), t(k.w2a), t(k.w2b), lycorisRankAndScale(adapter.config, m.name).scaling);
      out.set(`${m.name}.weight`, addDelta(model.weight(`${m.name}.weight`), delta, m.fanInFanOut));
    }
    return out;
  },
  mixedBatch: {},
  trainConfig: (o, model) => lycorisTrainConfig("LOHA", "loha", o, model),
};
