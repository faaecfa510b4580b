/**
 * The processor file `peft worker` hands BullMQ (a sandboxed processor run in a worker thread):
 * the job's training runs off the worker's main thread, whose event loop stays free to renew the
 * job's lock. Killing the worker process kills this thread with it.
 */
import { workerData } from "node:worker_threads";
import { type JobHandle, type RunJobOptions, runQueuedJob } from "./run-job.js";

const opts = workerData as RunJobOptions;

export default async function processQueuedJob(job: JobHandle, _token: string | undefined, signal?: AbortSignal): Promise<unknown> {
  return runQueuedJob(job, opts, signal ?? new AbortController().signal);
}
