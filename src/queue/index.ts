export { parseQueueUrl, redactQueueUrl, type RedisConnection } from "./connection.js";
export { QUEUE_JOB_KINDS, registerJobKind, jobKind, jobKindNames, type JobKind, type JobContext, type JobEvent, type JobProgress } from "./kinds.js";
export { JobQueue, withTimeout, type JobQueueOptions, type JobUpdate, type QueuedJobState, type QueuedJobStatus } from "./client.js";
export { startQueueWorker, type QueueWorker, type QueueWorkerOptions } from "./worker.js";
export { runQueuedJob, type JobHandle, type RunJobOptions } from "./run-job.js";
export { publishToStore, listStore, storePath, checkStoreName } from "./store.js";
export { trainJobKind, type TrainJobData, type TrainJobResult } from "./train-kind.js";
export { DEFAULT_QUEUE_NAME, workerName } from "./names.js";
export { searchTrialJobKind, searchTrialJobId, QueueTrialExecutor } from "./search-kind.js";
