/**
 * Composition: merging task vectors (mergekit-style method registry), PEFT's
 * `add_weighted_adapter` for LoRA adapters, task vectors, streaming checkpoint merges, mergekit
 * YAML configurations, and aTLAS (learned anisotropic scaling of task vectors).
 */
export { type SignConsensus, type UniformRng, electSign, magnitudePrune, randomPrune, topMagnitudeMask } from "./sparsify.js";
export { type TruncatedSvd, lowRankSvd, truncatedSvd } from "./svd.js";
export { type PcbOptions, type PcbResult, pcbMerge } from "./pcb.js";
export {
  MERGE_METHODS,
  type MergeMethodDef,
  type MergeMethodName,
  type MergeParamDef,
  type MergeParamValue,
  type MergeParams,
  type MergeRunInput,
  type MergeTensorsOptions,
  type TaskArithmeticOptions,
  getMergeMethod,
  mergeTaskTensors,
  resolveMergeParams,
  taskArithmetic,
} from "./methods.js";
export {
  type MajoritySignMethod,
  peftDareLinear,
  peftDareTies,
  peftMagnitudePrune,
  peftTaskArithmetic,
  peftTies,
} from "./peft-merge-utils.js";
export {
  COMBINATION_TYPES,
  type CombinationType,
  type LoraFactors,
  type WeightedAdapterConfig,
  type WeightedAdapterOptions,
  type WeightedAdapterResult,
  type WeightedAdapterSource,
  addWeightedAdapter,
} from "./weighted-adapter.js";
export {
  type MergeCheckpointsOptions,
  type MergeCheckpointsResult,
  type TaskVectorEntry,
  type TaskVectorSet,
  type TensorFilter,
  applyTaskVectors,
  mergeCheckpoints,
  taskVectorFromCheckpoints,
  taskVectorFromLora,
  taskVectorsFromLora,
} from "./task-vector.js";
export {
  type AddWeightedLoraOptions,
  type CombineAdaptersOptions,
  type CombineAdaptersResult,
  addWeightedLoraAdapter,
  combineAdapterDirs,
  loraAdapterSource,
} from "./combine-adapters.js";
export {
  MERGE_CONFIG_DTYPES,
  type MergeConfig,
  type MergeConfigDtype,
  type MergeConfigModel,
  parseMergeConfig,
  parseMergeConfigYaml,
  readMergeConfig,
} from "./merge-config.js";
export { TOKENIZER_FILES, type RunMergeOptions, type RunMergeResult, runMergeConfig } from "./merge-run.js";
export {
  ATLAS_COEF_INPUT,
  ATLAS_FILE_FORMAT,
  ATLAS_FILE_VERSION,
  ATLAS_OUTPUTS,
  AtlasComposer,
  AtlasContext,
  type AtlasBlockSelection,
  type AtlasCoefficientEntry,
  type AtlasCoefficientFile,
  type AtlasComposerOptions,
  type AtlasEvalResult,
  type AtlasFitConfig,
  type AtlasFitResult,
  type AtlasGraph,
  type AtlasGraphOptions,
  type AtlasHead,
  type AtlasLayout,
  type AtlasMode,
  type AtlasObjective,
  type AtlasTaskData,
  type AtlasTaskVector,
  type AtlasTaskVectorRef,
  atlasCoefficientFile,
  atlasTaskVectorFromAdapter,
  atlasTaskVectorFromCheckpoints,
  atlasTaskVectorFromLoraDir,
  buildAtlasGraph,
  checkTaskVector,
  coefficientCount,
  coefficientIndex,
  coefficientShape,
  composeAtlasWeights,
  createAtlasLayout,
  initialCoefficients,
  keptSize,
  layoutFromCoefficientFile,
  loadAtlasTaskVector,
  meanSoftmaxEntropy,
  readAtlasCoefficients,
  restrictLayout,
  saveAtlasCoefficients,
  saveComposedModel,
} from "./atlas/index.js";
