/** Fine-tuning as a service: training files, jobs, their runs and executors (docs/fine-tuning.md). */
export { TRAINING_FORMATS, parseTrainingLine, readTrainingFile, sortLabels, type TrainingFormat, type TrainingRow, type TrainingFileSummary, type ChatTurn } from "./formats.js";
export { tokenizeChat, tokenizePromptCompletion, tokenizeRow, trainedTokens, type CausalEncoder } from "./examples.js";
export { JobsClient, type JobsClientOptions } from "./client.js";
export { FileStore, FILE_PURPOSES, type FilePurpose, type StoredFile } from "./files.js";
export {
  runFineTuneJob,
  finishedOutcome,
  formatTask,
  type FineTuneJobSpec,
  type FineTunePeftSpec,
  type FineTuneContext,
  type FineTuneEvent,
  type FineTuneCheckpointInfo,
  type FineTuneOutcome,
} from "./run.js";
export {
  FineTuneService,
  LocalExecutor,
  BASE_LEARNING_RATE,
  fineTunedModelName,
  jobError,
  type FineTuneServiceOptions,
  type FineTuneBase,
  type FineTuningJob,
  type JobStatus,
  type JobErrorObject,
  type JobEventObject,
  type JobCheckpointObject,
  type JobExecutor,
  type JobSink,
  type JobPaths,
  type Hyperparameters,
  type ListPage,
  type LocalExecutorOptions,
} from "./service.js";
