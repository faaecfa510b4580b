/** Public API of the IO layer: atomic writes, safetensors, HF config/tokenizer/chat-template/generation-config files, PEFT adapter folders. */
export { writeFileAtomic, writeFileAtomicWith, writeFilesAtomic, tempPathFor, removeStaleTempFiles } from "./atomic.js";
export { checkOutput, outputRelation, realPathOf, type OutputCheck } from "./output.js";
export { wrapFsError, withFsErrors, isFsError } from "./fs-error.js";
export type { AtomicFile, FdWriter } from "./atomic.js";
export {
  SafetensorsFile,
  loadSafetensors,
  saveSafetensors,
  parseSafetensors,
  serializeSafetensors,
  safetensorsFileWriter,
  ST_TO_DTYPE,
  DTYPE_TO_ST,
  MAX_HEADER_BYTES,
} from "./safetensors.js";
export type { StDtype, TensorInfo, TensorMapLike } from "./safetensors.js";
export { parseHfConfig, safeParseHfConfig, loadHfConfig, HF_ACTIVATIONS, SUPPORTED_MODEL_TYPES } from "./hf-config.js";
export type {
  Activation,
  ProblemType,
  ModelType,
  BertConfig,
  Gpt2Config,
  LlamaConfig,
  LlamaFamilyConfig,
  Qwen2Config,
  MistralConfig,
  AttentionLayerType,
  HfModelConfig,
  HfConfigResult,
} from "./hf-config.js";
export { HfTokenizer, loadTokenizer } from "./tokenizer.js";
export {
  parseTokenizerConfig,
  parseChatTemplateField,
  loadTokenizerConfig,
  tokenizerConfigJson,
  TOKENIZER_CONFIG_NAME,
  SPECIAL_TOKEN_KEYS,
} from "./tokenizer-config.js";
export type { TokenizerConfig, AddedTokenSpec, ChatTemplateSource, SpecialTokenKey } from "./tokenizer-config.js";
export { applyChatTemplate, selectChatTemplate } from "./chat-template.js";
export type { ChatMessage, ChatTemplateOptions } from "./chat-template.js";
export { parseGenerationConfig, loadGenerationConfig, GENERATION_CONFIG_NAME } from "./generation-config.js";
export type { GenerationConfig } from "./generation-config.js";
export type {
  Side,
  Padding,
  TokenizerSettings,
  TokenizerOverrides,
  EncodeOptions,
  BatchEncodeOptions,
  Encoded,
  BatchEncoding,
  TokenizerChatOptions,
} from "./tokenizer.js";
export {
  validateAdapterName,
  safeJoin,
  adapterDirFor,
  readAdapterDir,
  writeAdapterDir,
  formatAdapterConfig,
  ADAPTER_CONFIG_NAME,
  ADAPTER_WEIGHTS_NAME,
  ADAPTER_PICKLE_NAME,
  DEFAULT_ADAPTER_NAME,
  RESERVED_ADAPTER_NAMES,
} from "./peft-files.js";
export type { AdapterFiles } from "./peft-files.js";
export { WRITER_METADATA_KEY, writerMetadata, peftTsWriter } from "./writer.js";
export { readJsonFile, readJsonObject, parseJsonText, parseJsonObjectText } from "./json-file.js";
export { adapterFromFiles, adapterToFiles, folderFiles, fileBytes, fileText, fileJsonObject, safetensorsFromFiles, type FileMap } from "./file-map.js";
export { writeZip, readZip, crc32 } from "./zip.js";
