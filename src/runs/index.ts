/**
 * Runs: what `peft train`, `peft eval`, `peft atlas` and `peft demo` do, as a library — a model
 * source (model id or folder → model + tokenizer + task), the data of a run (tokenised seeded
 * splits), the run folder and its history, and the runs themselves, which report through a
 * `RunReporter` (the CLI's progress bar, a server's events, a browser worker's messages).
 */
export { type RunReporter, type RunStep, type RunEval, silentReporter } from "./reporter.js";
export { runTraining, adapterConfigFor, TRAIN_DEFAULTS, IA3_DEFAULT_TARGETS } from "./train.js";
export type { TrainRunOptions, TrainRunResult, TrainMetrics, SplitMetrics, TrainMethod, ScheduleName } from "./train.js";
export { runEvaluation, readRun, type SavedRun, type EvalRunOptions, type EvalReport, type EvalSplit } from "./evaluate.js";
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
export { renderCurves, renderCurvesSvg, renderVegaLite, vegaLiteSvg, svgToPng, curvesSpec, type CurveData, type CurvePoint } from "./plot.js";
export { curveData, mergeHistory, readHistory, movingAverage, type RunHistory, type HistoryStep, type HistoryEval } from "./history.js";
export { RUN_FILES, checkRunDir, claimRunDir, holdsRun, writeJsonAtomic, runEnvironment, type RunDirMode } from "./run-dir.js";
export * from "./atlas/index.js";
export * from "./finetune/index.js";
export { readRunImportance, runLayerRanking } from "./importance.js";
