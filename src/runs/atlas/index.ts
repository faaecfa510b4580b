/** aTLAS runs (`peft atlas`): the run, its sources (task vectors, head) and few-shot subsets. */
export {
  ATLAS_DEFAULTS,
  ATLAS_RUN_FILES,
  type AtlasCoefficientSummary,
  type AtlasMetrics,
  type AtlasRunOptions,
  type AtlasRunResult,
  type AtlasSplitMetrics,
  defaultAtlasLr,
  runAtlas,
} from "./run.js";
export { kShotSubset } from "./shots.js";
export { HEAD_PARAMS, type RunSource, TASK_VECTOR_INCLUDE, loadRunHead, loadRunTaskVectors, openRunSource, parseRunList, runLabelNames } from "./sources.js";
