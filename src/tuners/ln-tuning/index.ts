/**
 * LN tuning (PEFT `LN_TUNING`): the targeted modules — normally the normalisation layers — are
 * copied and the copies trained, saved as `<module>.ln_tuning_layers.<param>` (`weight`, `bias`).
 * The graph reads each copy in place of the base parameter (role `replacement`); merging puts the
 * copies into the weights, as PEFT's merge swaps the layers. Default targets follow PEFT's
 * TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING.
 */
import { z } from "zod";
import { ConfigError } from "../../errors.js";
import type { Tensor } from "../../tensor.js";
import { COMMON_KEYS, baseFields, baseSchema, baseToRaw, parseWith, rejectUnknownKeys } from "../common/config.js";
import { type TargetSpec, isTargeted, parseTargetSpec, targetSpecToRaw } from "../common/target.js";
import { rejectFeedforward, savedModules } from "../common/train.js";
import type { BaseModelInfo, TunerConfigBase, TunerDef } from "../common/types.js";

export interface LnTuningConfig extends TunerConfigBase {
  readonly peftType: "LN_TUNING";
  readonly targetModules: TargetSpec | null;
  readonly excludeModules: TargetSpec | null;
}

/** PEFT's default targets for the architectures peft-ts builds. */
export const LN_TUNING_DEFAULT_TARGETS: Readonly<Record<string, readonly string[]>> = {
  llama: ["input_layernorm", "post_attention_layernorm", "norm"],
  mistral: ["input_layernorm", "post_attention_layernorm", "norm"],
  gpt2: ["ln_1", "ln_2", "ln_f"],
};

const INFIX = ".ln_tuning_layers.";

const schema = z.object({
  ...baseSchema,
  peft_type: z.literal("LN_TUNING"),
  target_modules: z.unknown().optional(),
  exclude_modules: z.unknown().optional(),
});

export function parseLnTuningConfig(raw: Readonly<Record<string, unknown>>, file: string): LnTuningConfig {
  rejectUnknownKeys(raw, [...COMMON_KEYS, "target_modules", "exclude_modules"], file);
  const c = parseWith(schema, raw, file);
  const targetModules = parseTargetSpec(c.target_modules, file, "target_modules");
  if (targetModules?.kind === "allLinear") throw new ConfigError(file, "target_modules", "'all-linear' selects linear layers; LN tuning targets normalisation layers");
  return { ...baseFields(c), peftType: "LN_TUNING", targetModules, excludeModules: parseTargetSpec(c.exclude_modules, file, "exclude_modules") };
}

/** Adapted module → its base parameters (`<module>.weight`, `<module>.bias`). */
function targetParams(c: LnTuningConfig, model: BaseModelInfo): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const cfg = { ...c, layersToTransform: null, layersPattern: null };
  for (const p of model.paramNames) {
    const dot = p.lastIndexOf(".");
    if (dot < 0) continue;
    const module = p.slice(0, dot);
    if (!isTargeted(cfg, module)) continue;
    out.set(module, [...(out.get(module) ?? []), p]);
  }
  if (out.size === 0) {
    throw new ConfigError("adapter_config.json", "target_modules", `LN tuning: no module of this ${model.modelType} model matches ${JSON.stringify(c.targetModules)}`);
  }
  return out;
}

const copyKey = (param: string): string => {
  const dot = param.lastIndexOf(".");
  return `${param.slice(0, dot)}${INFIX}${param.slice(dot + 1)}`;
};

export const lnTuning: TunerDef<LnTuningConfig> = {
  name: "ln_tuning",
  peftType: "LN_TUNING",
  prefix: "ln_tuning_",
  method: "ln-tuning",
  kind: "module",
  parseConfig: parseLnTuningConfig,
  toRaw: (c) => ({ ...baseToRaw(c), target_modules: targetSpecToRaw(c.targetModules), exclude_modules: targetSpecToRaw(c.excludeModules) }),
  resolve: (c) => c,
  role(key) {
    const i = key.lastIndexOf(INFIX);
    if (i < 0 || key.slice(i + INFIX.length).includes(".")) return null;
    const module = key.slice(0, i);
    return { kind: "replacement", module, param: `${module}.${key.slice(i + INFIX.length)}` };
  },
  expectedTensors(c, model) {
    const out = new Map<string, readonly number[]>();
    for (const params of targetParams(c, model).values()) for (const p of params) out.set(copyKey(p), model.weight(p).shape);
    return out;
  },
  init(c, model) {
    const out = new Map<string, Tensor>();
    for (const params of targetParams(c, model).values()) for (const p of params) out.set(copyKey(p), model.weight(p));
    return out;
  },
  hooks: () => ({}),
  merge(adapter) {
    const out = new Map<string, Tensor>();
    for (const [k, t] of adapter.tensors) {
      const role = lnTuning.role(k);
      if (role?.kind === "replacement") out.set(role.param, t);
    }
    return out;
  },
  trainConfig(o, model) {
    rejectFeedforward(o, "ln-tuning");
    const defaults = LN_TUNING_DEFAULT_TARGETS[model.modelType];
    if (o.target === null && !defaults) throw new ConfigError("peft train", "--target", `LN tuning has no default target modules for ${model.modelType}; pass --target (its normalisation layers)`);
    return { peft_type: "LN_TUNING", task_type: o.taskType, target_modules: o.target ?? [...defaults!], ...savedModules(o) };
  },
};
