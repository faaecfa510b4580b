/** aTLAS: task vectors composed block by block with learned (anisotropic) coefficients. */
export {
  type AtlasTaskVector,
  type AtlasTaskVectorRef,
  atlasTaskVectorFromAdapter,
  atlasTaskVectorFromCheckpoints,
  atlasTaskVectorFromLoraDir,
  checkTaskVector,
  loadAtlasTaskVector,
} from "./task-vectors.js";
export {
  type AtlasLayout,
  type AtlasMode,
  coefficientCount,
  coefficientIndex,
  coefficientShape,
  composeAtlasWeights,
  createAtlasLayout,
  initialCoefficients,
  keptSize,
  restrictLayout,
} from "./layout.js";
export { ATLAS_COEF_INPUT, ATLAS_OUTPUTS, AtlasContext, type AtlasGraph, type AtlasGraphOptions, buildAtlasGraph, meanSoftmaxEntropy } from "./graph.js";
export {
  AtlasComposer,
  type AtlasBlockSelection,
  type AtlasComposerOptions,
  type AtlasEvalResult,
  type AtlasFitConfig,
  type AtlasFitResult,
  type AtlasHead,
  type AtlasObjective,
  type AtlasTaskData,
} from "./composer.js";
export {
  ATLAS_FILE_FORMAT,
  ATLAS_FILE_VERSION,
  type AtlasCoefficientEntry,
  type AtlasCoefficientFile,
  atlasCoefficientFile,
  layoutFromCoefficientFile,
  readAtlasCoefficients,
  saveAtlasCoefficients,
  saveComposedModel,
} from "./files.js";
