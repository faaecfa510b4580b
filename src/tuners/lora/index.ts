/** LoRA (with rsLoRA and DoRA) as a peft-ts tuner. */
import { ConfigError } from "../../errors.js";
import type { Tensor } from "../../tensor.js";
import { expandAllLinear, isTargeted } from "../common/target.js";
import type { AdapterInstance, BaseModelInfo, LinearModule, TunerDef } from "../common/types.js";
import { type LoraConfig, loraConfigToRaw, moduleRankAndScale, parseLoraConfig } from "./config.js";
import { LORA_PREFIX, loraKeys } from "./keys.js";
import { applyLora } from "./layer.js";
import { doraMagnitude, loraDeltaWeight, mergeLoraWeight } from "./merge.js";

export { type LoraConfig, LORA_DEFAULTS, parseLoraConfig, loraConfigToRaw, moduleRankAndScale } from "./config.js";
export { loraKeys, loraModuleOf, LORA_PREFIX } from "./keys.js";
export { applyLora, applyMixedLora, loraDelta, type LoraFactors, type StackedLora } from "./layer.js";
export { loraDeltaWeight, mergeLoraWeight, doraMagnitude } from "./merge.js";

/** The linear modules a (resolved) config adapts; an empty match is an error naming what exists. */
export function loraTargets(c: LoraConfig, model: BaseModelInfo): LinearModule[] {
  const hits = model.linearModules.filter((m) => isTargeted(c, m.name));
  if (hits.length === 0) {
    const suffixes = [...new Set(model.linearModules.map((m) => m.name.split(".").pop()!))].join(", ");
    throw new ConfigError(
      "adapter_config.json",
      "target_modules",
      `no module of this ${model.modelType} model matches ${JSON.stringify(c.targetModules)}; its linear layers end in: ${suffixes}`,
    );
  }
  return hits;
}

function uniform(n: number, bound: number, rng: { uniform(): number }): Float32Array {
  return Float32Array.from({ length: n }, () => (rng.uniform() * 2 - 1) * bound);
}

export const lora: TunerDef<LoraConfig> = {
  name: "lora",
  peftType: "LORA",
  prefix: LORA_PREFIX,
  parseConfig: parseLoraConfig,
  toRaw: loraConfigToRaw,
  resolve(c, model) {
    if (c.targetModules?.kind !== "allLinear") return c;
    return { ...c, targetModules: expandAllLinear(model.linearModules.map((m) => m.name), model.outputModules) };
  },
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
