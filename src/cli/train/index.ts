/** Training commands' building blocks: runs, evaluation, the demo, the frozen baseline, FLOP counting, curves. */
export { runTraining, adapterConfigFor, TRAIN_DEFAULTS, IA3_DEFAULT_TARGETS } from "./run.js";
export type { TrainRunOptions, TrainRunResult, TrainMetrics, SplitMetrics, TrainMethod, ScheduleName, RunTrainingHooks } from "./run.js";
export { runEvaluation, evaluateExamples, type EvalRunOptions, type EvalReport, type EvalSplit } from "./evaluate.js";
export { runDemo, ceilingShapes, DEMO_LORA, DEMO_PROBE_GRID, DEMO_DATASET, type DemoOptions, type DemoMetrics, type DemoResult } from "./demo.js";
export {
  LinearProbe,
  tuneLinearProbe,
  embedFrozen,
  selectRows,
  DEFAULT_PROBE_GRID,
  type Features,
  type ProbeConfig,
  type ProbeGrid,
  type ProbeResult,
  type ProbeScores,
  type ProbeTrial,
} from "./linear-probe.js";
export { openModelSource, USE_LITE_MODEL_ID, type ModelSource, type OpenModelOptions } from "./model-source.js";
export { loadRunData, tokenizeExamples, tokenizeSplits, countTokens, parseSplitFractions, DEFAULT_SPLIT, type RunData, type RunDataOptions, type SplitFractions } from "./data.js";
export { matmulTerms, forwardFlops, trainingFlops, examplesPerStep, dimValue, type MatmulTerm, type FlopSplit } from "./flops.js";
export { renderCurves, renderCurvesSvg, svgToPng, curvesSpec, type CurveData, type CurvePoint } from "./plot.js";
export { curveData, mergeHistory, readHistory, type RunHistory, type HistoryStep, type HistoryEval } from "./history.js";
export { createProgress, formatEval, formatSeconds, type ProgressReporter, type ProgressOptions, type ProgressStep, type ProgressEval } from "./progress.js";
export { RUN_FILES, checkRunDir, claimRunDir, holdsRun, writeJsonAtomic, runEnvironment, type RunDirMode } from "./run-dir.js";
export { formatTrainSummary, formatSplitMetrics } from "./report.js";
