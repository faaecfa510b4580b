export { ModelContext, mapSource, castTensor, type WeightSource, type LinearSite, type LinearHook, type ConvSite, type ConvHook, type ConvGeometry, type EmbedHook, type ModelHooks, type ContextOptions } from "./context.js";
export { checkComputeDtype, masterDtype, type ComputeDtype } from "./context.js";
export { loadModel, SafetensorsWeights, type LoadedModel } from "./load.js";
export { modelFromFiles, tokenizerFromFiles } from "./from-files.js";
export { buildModelGraph, forwardLogits, logitsInFloat32, type BuiltModel } from "./forward.js";
export { MODELS } from "./registry.js";
export type { ModelDef, ModelConfig, ModelInputs, ModelOutputs, ModelTask } from "./model-def.js";
export { bert, buildBert } from "./bert.js";
export { gpt2, buildGpt2 } from "./gpt2.js";
export { llama, buildLlama, buildLlamaFamily, llamaFamilyDef, type LlamaFamilyOptions } from "./llama.js";
export { qwen2, buildQwen2 } from "./qwen2.js";
export { mistral, buildMistral } from "./mistral.js";
export { simpleCnn, buildSimpleCnn, parseSimpleCnnConfig, simpleCnnConfigJson, simpleCnnShapes, SIMPLE_CNN_MODEL_TYPE, type SimpleCnnConfig } from "./simple-cnn.js";
export { attention, attentionAllowed, splitHeads, mergeHeads, positions, maskValue, KvCache, atPositions } from "./attention.js";
export {
  loadUseLite,
  loadUseLiteModel,
  useLiteAsLoadedModel,
  useLiteFromFiles,
  useLiteTfjsFileNames,
  convertUseLite,
  embedSentences,
  UseLiteEmbedder,
  UseLiteTokenizer,
  buildUseLiteEncoder,
  useLite,
  USE_LITE_CLASSIFIER,
  type UseLiteModel,
  type UseLiteModelOptions,
} from "./use-lite/index.js";
