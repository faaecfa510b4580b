/**
 * A queue worker: takes jobs from the BullMQ queue and runs them with their registered
 * {@link JobKind}. Progress and events go back through the queue (the job's progress, its log,
 * and QueueEvents for listeners). A worker that dies (kill -9, a lost machine) stops renewing its
 * job's lock; after `lockDurationMs` another worker's stalled-job check puts the job back in the
 * queue, and the next worker resumes it from the checkpoint its kind left in the job's state
 * folder (shared by the workers when `stateDir` is a shared folder).
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Job, Worker } from "bullmq";
import { parseQueueUrl } from "./connection.js";
import { jobKindNames } from "./kinds.js";
import { DEFAULT_QUEUE_NAME, workerName } from "./names.js";
import { type RunJobOptions, runQueuedJob } from "./run-job.js";

export interface QueueWorkerOptions {
  /** `redis://host:port[/db]`. */
  readonly url: string;
  /** Folder of the jobs' state (`<stateDir>/jobs/<id>/`: checkpoints, run folders). */
  readonly stateDir: string;
  /** Shared adapter store where finished adapters are published (default: none). */
  readonly adapterStore?: string;
  /** Jobs run at once (default 1). */
  readonly concurrency?: number;
  readonly queueName?: string;
  /** How long a job's lock lasts without renewal (default 30 000 ms): a dead worker's job is retried after about this long. */
  readonly lockDurationMs?: number;
  /** How often this worker looks for stalled jobs (default lockDurationMs / 2). */
  readonly stalledIntervalMs?: number;
  /** Times a job may be put back after its worker died before it is failed (default 3). */
  readonly maxStalledCount?: number;
  /** Least time between two progress updates of one job sent to Redis (default 200 ms). */
  readonly progressIntervalMs?: number;
  /**
   * Run each job in a worker thread (BullMQ's sandboxed processor; default true), so a job's
   * CPU-bound steps never hold up the renewal of its lock. Only the built-in kinds exist there;
   * kinds added with `registerJobKind` need `sandbox: false` (then a job must not block the event
   * loop for longer than the lock lasts).
   */
  readonly sandbox?: boolean;
  /** Called for what the worker does (job started, done, failed; connection errors). */
  readonly onLog?: (line: string) => void;
}

/** A running worker. */
export interface QueueWorker {
  readonly name: string;
  readonly kinds: readonly string[];
  /** Resolves when the worker is connected and waiting for jobs. */
  ready(): Promise<void>;
  /**
   * Stops taking jobs. Graceful (default): the running jobs finish first. `force`: the running
   * jobs are aborted and left to the stalled-job check (another worker resumes them).
   */
  close(force?: boolean): Promise<void>;
}

/** Starts a worker on the queue at `opts.url`. */
export function startQueueWorker(opts: QueueWorkerOptions): QueueWorker {
  const name = workerName();
  const log = opts.onLog ?? (() => undefined);
  const lockDuration = opts.lockDurationMs ?? 30_000;
  const store = opts.adapterStore ?? null;
  mkdirSync(join(opts.stateDir, "jobs"), { recursive: true });
  if (store !== null) mkdirSync(store, { recursive: true });
  const runOpts: RunJobOptions = { stateDir: opts.stateDir, adapterStore: store, worker: name, progressIntervalMs: opts.progressIntervalMs ?? 200 };
  const sandbox = opts.sandbox ?? true;
  const running = new Map<string, AbortController>();
  const processor = sandbox
    ? fileURLToPath(new URL("./sandbox-processor.js", import.meta.url))
    : async (job: Job, _token?: string, signal?: AbortSignal) => {
        const controller = new AbortController();
        signal?.addEventListener("abort", () => controller.abort());
        running.set(job.id ?? "", controller);
        try {
          return await runQueuedJob(job, runOpts, controller.signal);
        } finally {
          running.delete(job.id ?? "");
        }
      };

  const worker = new Worker(opts.queueName ?? DEFAULT_QUEUE_NAME, processor, {
    connection: parseQueueUrl(opts.url),
    concurrency: opts.concurrency ?? 1,
    name,
    lockDuration,
    stalledInterval: opts.stalledIntervalMs ?? Math.max(500, Math.floor(lockDuration / 2)),
    maxStalledCount: opts.maxStalledCount ?? 3,
    autorun: true,
    ...(sandbox ? { useWorkerThreads: true, workerThreadsOptions: { workerData: runOpts } } : {}),
  });
  const started = new Map<string, number>();
  worker.on("active", (job) => {
    started.set(job.id ?? "", performance.now());
    log(`job ${job.id} (${job.name}) started${(job.attemptsStarted ?? 1) > 1 ? `, attempt ${job.attemptsStarted}` : ""}`);
  });
  worker.on("completed", (job) => log(`job ${job.id} (${job.name}) done in ${((performance.now() - (started.get(job.id ?? "") ?? performance.now())) / 1000).toFixed(1)} s`));
  worker.on("failed", (job, e) => log(`job ${job?.id ?? "?"} (${job?.name ?? "?"}) failed: ${e.message}`));
  worker.on("error", (e) => log(`queue error: ${e.message}`));
  worker.on("stalled", (jobId) => log(`job ${jobId} stalled (its worker stopped renewing the lock); put back in the queue`));

  return {
    name,
    kinds: jobKindNames(),
    ready: async () => {
      await worker.waitUntilReady();
    },
    close: async (force = false) => {
      if (force) for (const c of running.values()) c.abort();
      await worker.close(force);
    },
  };
}
