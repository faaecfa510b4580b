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
export { Trainer, collate } from "./trainer.js";
export { lengthGroupedOrder, lengthSortedOrder } from "./sampler.js";
export type { TokenizedExample, TrainerConfig, EvalResult, StepInfo, TrainHistory, TrainCallbacks, TrainResult, GradientInfo } from "./trainer.js";
export { lossWeights, runGated, sliceBatch, type TrainingGate } from "./gate.js";
export { TrainStep, GRAD_PREFIX, buildLossGraph } from "./step.js";
export type { Batch, LossGraph, LossGraphOptions, StepResult, TrainStepOptions } from "./step.js";
export { FUSED_NAMES, FusedAdamWStep } from "./fused-step.js";
export type { FusedAdamWStepOptions, FusedStepResult } from "./fused-step.js";
export { causalLmLoss, sequenceClassificationLoss, taskLoss } from "./loss.js";
export { GRAD_SCALER_DEFAULTS, GradScaler, LOSS_SCALE_INPUT, LossScaledStep } from "./grad-scaler.js";
export type { GradScalerState, LossScaledStepOptions, LossScaling } from "./grad-scaler.js";
export type { LossTask } from "./loss.js";
export { ADAMW8BIT_DEFAULTS, AdamW8bit, type AdamW8bitOptions, type OptimizerStateBytes } from "./optim/index.js";
export { modelMatmulTerms, examplesPerStep } from "./flops.js";
export { evaluateWith, evaluateModel, createEvalStep, type EvaluateOptions } from "./evaluate.js";
export { BestKeeper, type BestState } from "./best-keeper.js";
export { HostStepStrategy, ResidentStepStrategy, commitParams, type StepStrategy, type StepSpec, type StepOutcome } from "./step-strategy.js";
export { LayerImportanceRecorder, layerOfName, type LayerImportance, type LayerScore } from "./importance.js";
