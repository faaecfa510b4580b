/** LoRA (with rsLoRA and DoRA) as a peft-ts tuner. */
import { AdapterStateError, ConfigError, UnsupportedOptionError } from "../../errors.js";
import { castTensor } from "../../models/context.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { resolveAllLinear } from "../common/target.js";
import { targetSpecToRaw } from "../common/target.js";
import { linearTargets } from "../common/delta.js";
import { rejectFeedforward, savedModules } from "../common/train.js";
import type { AdapterInstance, BaseModelInfo, LinearModule, LowRankFactors, TensorRole, TunerDef } from "../common/types.js";
import { type LoraConfig, loraConfigToRaw, moduleRankAndScale, parseLoraConfig } from "./config.js";
import { LORA_PREFIX, loraKeys, loraModuleOf } from "./keys.js";
import { applyLora, mixedLoraDelta } from "./layer.js";
import { doraMagnitude, loraDeltaWeight, mergeLoraWeight } from "./merge.js";

export { type LoraConfig, LORA_DEFAULTS, parseLoraConfig, loraConfigToRaw, moduleRankAndScale } from "./config.js";
export { loraKeys, loraModuleOf, LORA_PREFIX } from "./keys.js";
export { applyLora, applyMixedLora, loraDelta, type LoraFactors, type StackedLora } from "./layer.js";
export { loraDeltaWeight, mergeLoraWeight, doraMagnitude } from "./merge.js";

/** The linear modules a (resolved) config adapts; an empty match is an error naming what exists. */
export function loraTargets(c: LoraConfig, model: BaseModelInfo): LinearModule[] {
  return linearTargets(c, model, "LoRA");
}

function uniform(n: number, bound: number, rng: { uniform(): number }): Float32Array {
  return Float32Array.from({ length: n }, () => (rng.uniform() * 2 - 1) * bound);
}

/** The role of a LoRA tensor: A and B are the factors of a low-rank update (baseline 0), DoRA's magnitude is state. */
function loraRole(key: string): TensorRole | null {
  const module = loraModuleOf(key);
  if (module === null) return null;
  const k = loraKeys(module);
  if (key === k.A) return { kind: "update", module, baseline: 0, lowRank: "A" };
  if (key === k.B) return { kind: "update", module, baseline: 0, lowRank: "B" };
  return { kind: "state", module };
}

export const lora: TunerDef<LoraConfig> = {
  name: "lora",
  peftType: "LORA",
  prefix: LORA_PREFIX,
  method: "lora",
  kind: "module",
  role: loraRole,
  mixedBatch: {
    check(a) {
      if (a.config.useDora) throw new AdapterStateError(a.name, "mixed-adapter batches do not support DoRA (as in PEFT)");
    },
    stacked(site, adapters, rowIndex, dtype) {
      const { name, inFeatures: fin, outFeatures: fout } = site;
      const k = loraKeys(name);
      const users = adapters.filter((a) => a?.tensors.has(k.A));
      if (users.length === 0) return null;
      const n = adapters.length + 1;
      const rmax = Math.max(...users.map((a) => a!.tensors.get(k.A)!.shape[0]!));
      const A = new Float32Array(n * rmax * fin);
      const B = new Float32Array(n * fout * rmax);
      const S = new Float32Array(n);
      adapters.forEach((a, idx) => {
        const ta = a?.tensors.get(k.A);
        if (!a || !ta) return;
        const r = ta.shape[0]!;
        const bv = toFloat32(a.tensors.get(k.B)!);
        A.set(toFloat32(ta), idx * rmax * fin); // rows beyond r stay zero
        for (let o = 0; o < fout; o++) for (let j = 0; j < r; j++) B[idx * fout * rmax + o * rmax + j] = bv[o * r + j]!;
        S[idx] = moduleRankAndScale(a.config, name).scaling;
      });
      const cast = (d: Float32Array, shape: number[]) => site.g.constant(castTensor({ dtype: "float32", shape, data: d }, dtype));
      return mixedLoraDelta(site, { A: cast(A, [n, rmax, fin]), B: cast(B, [n, fout, rmax]), scaling: cast(S, [n]) }, rowIndex);
    },
  },
  lowRank: {
    check(a, label, purpose) {
      if (a.config.useDora) throw new UnsupportedOptionError(label, "use_dora", true, `DoRA magnitude vectors cannot be used by ${purpose}`);
      if (a.config.bias !== "none") throw new UnsupportedOptionError(label, "bias", a.config.bias, `adapters that train biases cannot be used by ${purpose}; use bias 'none'`);
    },
    factors(a) {
      const out = new Map<string, LowRankFactors>();
      for (const [key, t] of a.tensors) {
        if (loraRole(key)?.kind !== "update" || !key.endsWith(".lora_A.weight")) continue;
        const module = loraModuleOf(key)!;
        const B = a.tensors.get(loraKeys(module).B);
        if (!B) throw new ConfigError(`adapter '${a.name}'`, loraKeys(module).B, "missing (lora_A has no matching lora_B)");
        out.set(module, { A: t, B, scaling: moduleRankAndScale(a.config, module).scaling });
      }
      return out;
    },
    rankInfo: (c) => ({ r: c.r, rankPattern: c.rankPattern, useRslora: c.useRslora, targetModules: targetSpecToRaw(c.targetModules) }),
    configFor(c, o) {
      return {
        ...loraConfigToRaw(c),
        r: o.r,
        lora_alpha: o.alpha,
        target_modules: o.targetModules,
        rank_pattern: {},
        alpha_pattern: {},
        inference_mode: false,
        ...(o.resetLayout ? { use_rslora: false, exclude_modules: null, layers_to_transform: null, layers_pattern: null } : {}),
      };
    },
    keys: (m) => loraKeys(m),
  },
  trainConfig(o, model) {
    rejectFeedforward(o, "lora");
    return {
      peft_type: "LORA",
      task_type: o.taskType,
      r: o.r,
      lora_alpha: o.alpha,
      lora_dropout: o.dropout,
      target_modules: o.target ?? [...model.defaultTargets],
      ...savedModules(o),
      ...(model.linearModules.some((m) => m.fanInFanOut) ? { fan_in_fan_out: true } : {}),
    };
  },
  parseConfig: parseLoraConfig,
  toRaw: loraConfigToRaw,
  resolve: resolveAllLinear,
  expectedTensors(c, model) {
    const out = new Map<string, readonly number[]>();
    for (const m of loraTargets(c, model)) {
      const { r } = moduleRankAndScale(c, m.name);
      const k = loraKeys(m.name);
      out.set(k.A, [r, m.inFeatures]);
      out.set(k.B, [m.outFeatures, r]);
      if (c.useDora) out.set(k.magnitude, [m.outFeatures]);
    }
    return out;
  },
  init(c, model, rng) {
    const out = new Map<string, Tensor>();
    for (const m of loraTargets(c, model)) {
      const { r, scaling } = moduleRankAndScale(c, m.name);
      const k = loraKeys(m.name);
      // nn.Linear's default (Kaiming-uniform, a=√5) has bound 1/√fan_in
      const a =
        c.init.kind === "gaussian"
          ? Float32Array.from({ length: r * m.inFeatures }, () => rng.normal() / r)
          : uniform(r * m.inFeatures, 1 / Math.sqrt(m.inFeatures), rng);
      const b = c.init.kind === "random" ? uniform(m.outFeatures * r, 1 / Math.sqrt(r), rng) : new Float32Array(m.outFeatures * r);
      const A: Tensor = { dtype: "float32", shape: [r, m.inFeatures], data: a };
      const B: Tensor = { dtype: "float32", shape: [m.outFeatures, r], data: b };
      out.set(k.A, A);
      out.set(k.B, B);
      if (c.useDora) out.set(k.magnitude, doraMagnitude(model.weight(`${m.name}.weight`), loraDeltaWeight(A, B, scaling), m.fanInFanOut));
    }
    return out;
  },
  hooks(adapter: AdapterInstance<LoraConfig>, param, opts) {
    const c = adapter.config;
    return {
      linear: (name) => {
        const k = loraKeys(name);
        if (!adapter.tensors.has(k.A)) return null;
        const { scaling } = moduleRankAndScale(c, name);
        return (site) =>
          applyLora(
            site,
            {
              A: param(k.A),
              B: param(k.B),
              scaling,
              dropout: c.loraDropout,
              ...(c.useDora ? { magnitude: param(k.magnitude) } : {}),
            },
            opts.training,
            opts.seed,
          );
      },
    };
  },
  merge(adapter, model) {
    const c = adapter.config;
    const out = new Map<string, Tensor>();
    for (const key of adapter.tensors.keys()) {
      if (!key.endsWith(".lora_A.weight")) continue;
      const name = key.slice(0, -".lora_A.weight".length);
      const k = loraKeys(name);
      const { scaling } = moduleRankAndScale(c, name);
      const wname = `${name}.weight`;
      const delta = loraDeltaWeight(adapter.tensors.get(k.A)!, adapter.tensors.get(k.B)!, scaling);
      const mag = c.useDora ? adapter.tensors.get(k.magnitude) : undefined;
      const mod = model.linearModules.find((m) => m.name === name);
      out.set(wname, mergeLoraWeight(model.weight(wname), delta, mod?.fanInFanOut ?? c.fanInFanOut, mag));
    }
    return out;
  },
};
