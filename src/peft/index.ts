export { PeftModel, adapterParamName, type ForwardInputs, type ForwardInputsLike, type TokenIds, type TextInputs, type TextTokenizer, type ForwardOptions, type BuildOptions, type BuiltPeftGraph } from "./peft-model.js";
export { BASE_ADAPTER } from "./mixed.js";
export { loadAdapterDir, saveAdapterDir, validateAdapter, adapterStateDict, STATE_DICT_PREFIX } from "./adapter-io.js";
export { modelInfo } from "./model-info.js";
export { AdapterPool, planLayout, fitsLayout, checkPoolable, poolHooks, type PoolLayout, type PoolModule, type ModuleShape } from "./adapter-pool.js";
export { loraExportOf, saveAsLora, loraExportFiles } from "./export-lora.js";
