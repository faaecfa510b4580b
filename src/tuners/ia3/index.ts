/** (IA)³: learned vectors that rescale a linear layer's input (feed-forward modules) or output. */
import { ConfigError } from "../../errors.js";
import * as G from "../../graph/api.js";
import { type Tensor, toFloat32 } from "../../tensor.js";
import { linearTargets } from "../common/delta.js";
import { resolveAllLinear } from "../common/target.js";
import { savedModules } from "../common/train.js";
import type { BaseModelInfo, LinearModule, TunerDef } from "../common/types.js";
import { type Ia3Config, ia3ConfigToRaw, isFeedforward, parseIa3Config } from "./config.js";

export { type Ia3Config, parseIa3Config, ia3ConfigToRaw, isFeedforward } from "./config.js";

export const IA3_PREFIX = "ia3_";
export const ia3Key = (module: string): string => `${module}.ia3_l`;

function targets(c: Ia3Config, model: BaseModelInfo): LinearModule[] {
  return linearTargets(c, model, "(IA)³");
}

/**
 * Default targets when `peft train` gets no `--target`: PEFT's TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING
 * and …_FEEDFORWARD_MODULES_MAPPING for the architectures peft-ts builds.
 */
export const IA3_DEFAULT_TARGETS: Readonly<Record<string, { readonly target: readonly string[]; readonly feedforward: readonly string[] }>> = {
  bert: { target: ["key", "value", "output.dense"], feedforward: ["output.dense"] },
  gpt2: { target: ["c_attn", "mlp.c_proj"], feedforward: ["mlp.c_proj"] },
  llama: { target: ["k_proj", "v_proj", "down_proj"], feedforward: ["down_proj"] },
  mistral: { target: ["k_proj", "v_proj", "down_proj"], feedforward: ["down_proj"] },
  qwen2: { target: ["q_proj", "v_proj", "down_proj"], feedforward: ["down_proj"] },
  // peft-ts's own model (PEFT has no mapping for it): BERT's choice, with the same module names
  "use-lite": { target: ["key", "value", "output.dense"], feedforward: ["output.dense"] },
};

export const ia3: TunerDef<Ia3Config> = {
  name: "ia3",
  peftType: "IA3",
  prefix: IA3_PREFIX,
  method: "ia3",
  kind: "module",
  role(key) {
    if (!key.endsWith(".ia3_l")) return null;
    return { kind: "update", module: key.slice(0, -".ia3_l".length), baseline: 1 };
  },
  mixedBatch: {},
  trainConfig(o, model) {
    const defaults = IA3_DEFAULT_TARGETS[model.modelType];
    if (o.target === null && !defaults) throw new ConfigError("peft train", "--target", `(IA)³ has no default target modules for ${model.modelType}; pass --target (and --feedforward)`);
    const target = o.target ?? [...defaults!.target];
    const ff = o.feedforward !== null ? { feedforward_modules: o.feedforward } : o.target === null ? { feedforward_modules: [...defaults!.feedforward] } : {};
    return {
      peft_type: "IA3",
      task_type: o.taskType,
      target_modules: target,
      ...ff,
      ...savedModules(o),
      ...(model.linearModules.some((m) => m.fanInFanOut) ? { fan_in_fan_out: true } : {}),
    };
  },
  parseConfig: parseIa3Config,
  toRaw: ia3ConfigToRaw,
  resolve: resolveAllLinear,
  expectedTensors(c, model) {
    return new Map(targets(c, model).map((m) => [ia3Key(m.name), isFeedforward(c, m.name) ? [1, m.inFeatures] : [m.outFeatures, 1]]));
  },
  init(c, model, rng) {
    const out = new Map<string, Tensor>();
    for (const m of targets(c, model)) {
      const shape = isFeedforward(c, m.name) ? [1, m.inFeatures] : [m.outFeatures, 1];
      const n = shape[0]! * shape[1]!;
      const data = c.initIa3Weights ? new Float32Array(n).fill(1) : Float32Array.from({ length: n }, () => rng.normal());
      out.set(ia3Key(m.name), { dtype: "float32", shape, data });
    }
    return out;
  },
  hooks(adapter, param) {
    return {
      linear: (name) => {
        const key = ia3Key(name);
        if (!adapter.tensors.has(key)) return null;
        const ff = isFeedforward(adapter.config, name);
        return (site) => {
          const l = G.reshape(param(key), [-1]);
          return ff ? site.base(G.mul(site.x, l)) : G.mul(site.base(site.x), l);
        };
      },
    };
  },
  merge(adapter, model) {
    const out = new Map<string, Tensor>();
    for (const [key, t] of adapter.tensors) {
      if (!key.endsWith(".ia3_l")) continue;
      const name = key.slice(0, -".ia3_l".length);
      const mod = model.linearModules.find((m) => m.name === name);
      const fanInFanOut = mod?.fanInFanOut ?? adapter.config.fanInFanOut;
      const ff = isFeedforward(adapter.config, name);
      const l = toFloat32(t);
      const w = model.weight(`${name}.weight`);
      const wd = Float32Array.from(toFloat32(w));
      const [d0, d1] = w.shape as [number, number];
      for (let i = 0; i < d0; i++) {
        for (let j = 0; j < d1; j++) {
          // [out, in] layout: feed-forward scales input columns j, others scale output rows i
          const outIdx = fanInFanOut ? j : i;
          const inIdx = fanInFanOut ? i : j;
          wd[i * d1 + j]! *= l[ff ? inIdx : outIdx]!;
        }
      }
      out.set(`${name}.weight`, { dtype: "float32", shape: [...w.shape], data: wd });
      if (!ff && model.has(`${name}.bias`)) {
        const b = model.weight(`${name}.bias`);
        out.set(`${name}.bias`, { dtype: "float32", shape: [...b.shape], data: Float32Array.from(toFloat32(b), (v, i) => v * l[i]!) });
      }
    }
    return out;
  },
};
