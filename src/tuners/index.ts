export { TUNERS, tunerFor, findTuner, tunerForMethod, trainMethods, allTuners, registerTuner, type TunerName } from "./registry.js";
export type {
  TunerDef,
  TunerConfigBase,
  AdapterInstance,
  BaseModelInfo,
  LinearModule,
  ParamView,
  TensorRole,
  LowRankFactors,
  LowRankView,
  TrainMethodOptions,
} from "./common/types.js";
export { parseWith, rejectUnknownKeys, baseSchema, baseFields, baseToRaw, COMMON_KEYS } from "./common/config.js";
export { isTargeted, expandAllLinear, patternKey, parseTargetSpec, pythonRegex, type TargetSpec, type TargetingConfig } from "./common/target.js";
export {
  lora,
  parseLoraConfig,
  loraConfigToRaw,
  moduleRankAndScale,
  loraKeys,
  applyLora,
  applyMixedLora,
  loraDeltaWeight,
  mergeLoraWeight,
  doraMagnitude,
  LORA_DEFAULTS,
  type LoraConfig,
} from "./lora/index.js";
export { ia3, parseIa3Config, ia3Key, type Ia3Config } from "./ia3/index.js";
export { promptTuning, parsePromptTuningConfig, PROMPT_KEY, type PromptTuningConfig } from "./prompt-tuning/index.js";
