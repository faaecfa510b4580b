export { sobolPoints, SOBOL_MAX_DIM } from "./sobol.js";
export { GaussianProcess, fitGp, sqExpKernel, type GpHyper } from "./gp.js";
export { dominates, paretoIndices, hypervolume, hypervolume2d } from "./pareto.js";
export { proposeNext, initialDesignSize, type MoboOptions, type Observation } from "./mobo.js";
export {
  SEARCH_METHODS,
  SEARCH_OBJECTIVES,
  parseSearchSpace,
  readSearchSpace,
  spaceDims,
  decodePoint,
  trialTraining,
  describeConfig,
  searchSpaceToRaw,
  applyLayerPrior,
  type SearchSpace,
  type SearchGroup,
  type SearchMethod,
  type SearchObjective,
  type TrialConfig,
  type TrialTraining,
} from "./space.js";
export { runSearchTrial, trialRunOptions, type SearchTrialSpec, type SearchTrialResult } from "./trial.js";
export { runSearch, InProcessTrialExecutor, paretoSpec, trialDir, type TrialExecutor, type SearchOptions, type SearchResult, type TrialRecord, type ParetoEntry, type SearchEvents } from "./run.js";
export { PROJECTION_KINDS, DENSE_MAX_ENTRIES, chooseProjection, projectGraph, projectHost, denseMatrix, fastfoodParts, type ProjectionKind, type ProjectionSpec } from "./intrinsic/projection.js";
export { SubspaceTrainer, classifierProblem, modelParameters, subspaceLayout, accuracyValue, SUBSPACE_INPUT, SUBSPACE_OUTPUTS, type SubspaceProblem, type SubspaceBlock, type SubspaceLayout, type SubspaceOptions, type SubspaceFitConfig, type SubspaceEval, type DeltaFn, type ClassifierProblem } from "./intrinsic/subspace.js";
export { intrinsicDimension, type DimPoint } from "./intrinsic/d90.js";
export { runIntrinsicDim, selectParameters, intrinsicDimSpec, INTRINSIC_DIM_DEFAULTS, INTRINSIC_DIM_FILES, type IntrinsicDimOptions, type IntrinsicDimResults, type IntrinsicDimPoint, type IntrinsicDimResult } from "./intrinsic/run.js";
