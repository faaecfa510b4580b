/**
 * Runs one queued job with its kind: builds the {@link JobContext} (state folder, throttled
 * progress, events) over the job handle BullMQ gives a processor — in the worker's own thread or
 * in the sandbox thread (`sandbox-processor.ts`) where `peft worker` runs jobs, so that a job's
 * CPU-heavy steps never delay the renewal of its lock.
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { UnrecoverableError } from "bullmq";
import { PeftError } from "../errors.js";
import { type JobContext, type JobEvent, type JobKind, jobKind } from "./kinds.js";
import { encodeFailure } from "./names.js";
import { checkStoreName } from "./store.js";

/** What a processor's job handle offers (a BullMQ `Job` or a sandboxed job). */
export interface JobHandle {
  readonly id?: string | undefined;
  readonly name: string;
  readonly data: unknown;
  readonly attemptsStarted?: number;
  updateProgress(value: object): Promise<unknown>;
  log(line: string): Promise<unknown>;
}

export interface RunJobOptions {
  readonly stateDir: string;
  readonly adapterStore: string | null;
  readonly worker: string;
  readonly progressIntervalMs: number;
}

export async function runQueuedJob(job: JobHandle, opts: RunJobOptions, signal: AbortSignal): Promise<unknown> {
  let kind: JobKind;
  let input: unknown;
  try {
    kind = jobKind(job.name);
    input = kind.parse(job.data);
  } catch (e) {
    throw new UnrecoverableError(encodeFailure(e));
  }
  const id = checkStoreName(job.id ?? "");
  const stateDir = join(opts.stateDir, "jobs", id);
  mkdirSync(stateDir, { recursive: true });

  // Redis writes of one job stay in order; progress is throttled, events never are
  let chain: Promise<unknown> = Promise.resolve();
  const send = (f: () => Promise<unknown>) => {
    chain = chain.then(f).catch(() => undefined); // a lost update is retried by the next one; the lock check reports a dead connection
  };
  let last: Record<string, unknown> = { step: 0, totalSteps: 0, worker: opts.worker };
  let lastSent = 0;
  let pending = false;
  const flush = () => {
    pending = false;
    lastSent = performance.now();
    const value = { ...last };
    send(() => job.updateProgress(value));
  };
  const ctx: JobContext = {
    id,
    kind: kind.name,
    stateDir,
    adapterStore: opts.adapterStore,
    attempt: Math.max(1, job.attemptsStarted ?? 1),
    worker: opts.worker,
    signal,
    event(level, message, data) {
      const ev: JobEvent = { level, message, ...(data ? { data } : {}), created_at: Math.floor(Date.now() / 1000) };
      const value = { ...last, event: ev };
      send(() => job.log(JSON.stringify(ev)));
      send(() => job.updateProgress(value));
    },
    progress(step, totalSteps, extra) {
      last = { ...(extra ?? {}), step, totalSteps, worker: opts.worker };
      if (performance.now() - lastSent >= opts.progressIntervalMs) flush();
      else pending = true;
    },
  };
  try {
    const result = await kind.run(input, ctx);
    if (pending) flush();
    await chain;
    return result;
  } catch (e) {
    ctx.event("error", encodeFailure(e));
    await chain;
    // jobs are queued with one attempt: a failure is final, only a dead worker's job runs again
    throw e instanceof PeftError ? new UnrecoverableError(encodeFailure(e)) : e;
  }
}
