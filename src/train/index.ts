export { Rng } from "../util/rng.js";
export type { RngState } from "../util/rng.js";
export { ADAMW_DEFAULTS, AdamW, SGD_DEFAULTS, Sgd, clipGradNorm, excludeFromWeightDecay, gradNorm, isNoDecayParamName } from "./optim/index.js";
export type {
  AdamWOptions,
  Gradients,
  NamedParam,
  Optimizer,
  OptimizerKind,
  OptimizerState,
  ParamStateInfo,
  SgdOptions,
} from "./optim/index.js";
export { SCHEDULE_KINDS, createSchedule, scheduleMultiplier, warmupStepsFromRatio } from "./schedule.js";
export type { LrSchedule, ScheduleConfig, ScheduleKind } from "./schedule.js";
export { CHECKPOINT_FILE, hasCheckpoint, loadCheckpoint, saveCheckpoint } from "./checkpoint.js";
export type { JsonValue, LoadedCheckpoint, TrainingCheckpoint } from "./checkpoint.js";
export {
  accuracy,
  argmaxRows,
  classificationReport,
  confusionMatrix,
  macroF1,
  perClassScores,
  perplexity,
} from "./metrics.js";
export type { ClassScores, ClassificationReport, MetricOptions } from "./metrics.js";
