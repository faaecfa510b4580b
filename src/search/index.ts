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
  type SearchSpace,
  type SearchGroup,
  type SearchMethod,
  type SearchObjective,
  type TrialConfig,
  type TrialTraining,
} from "./space.js";
export { runSearchTrial, trialRunOptions, type SearchTrialSpec, type SearchTrialResult } from "./trial.js";
export { runSearch, InProcessTrialExecutor, paretoSpec, trialDir, type TrialExecutor, type SearchOptions, type SearchResult, type TrialRecord, type ParetoEntry, type SearchEvents } from "./run.js";
