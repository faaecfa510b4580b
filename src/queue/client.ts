/**
 * The client side of the queue: enqueue a job of a registered kind, then wait for its result,
 * follow its progress and events as they stream (BullMQ QueueEvents), or read its state. A job is
 * queued with one attempt: it is run again only when its worker died (BullMQ's stalled-job
 * handling), never because it failed.
 */
import { Queue, QueueEvents } from "bullmq";
import { ArgumentError, JobFailedError, QueueTimeoutError } from "../errors.js";
import { randomHex } from "../platform/crypto.js";
import { type RedisConnection, parseQueueUrl } from "./connection.js";
import { type JobEvent, type JobProgress, jobKind } from "./kinds.js";
import { DEFAULT_QUEUE_NAME, decodeFailure } from "./names.js";
import { checkStoreName } from "./store.js";

/** A job's state in the queue (BullMQ's names). */
export type QueuedJobState = "waiting" | "active" | "completed" | "failed" | "delayed" | "prioritized" | "waiting-children" | "unknown";

export interface QueuedJobStatus {
  readonly id: string;
  readonly kind: string;
  readonly state: QueuedJobState;
  readonly data: unknown;
  /** The last progress a worker reported (null before the first). */
  readonly progress: JobProgress | null;
  /** Times a worker started the job (more than 1 after a worker died mid-job). */
  readonly attemptsStarted: number;
  /** The last worker that took it. */
  readonly worker: string | null;
  readonly result: unknown;
  readonly failedReason: string | null;
  /** Unix milliseconds. */
  readonly createdAt: number;
  readonly finishedAt: number | null;
}

/** One update of a job as it streams: progress, optionally with the event that caused it. */
export interface JobUpdate extends JobProgress {
  readonly event?: JobEvent;
}

export interface JobQueueOptions {
  readonly queueName?: string;
}

export class JobQueue {
  readonly connection: RedisConnection;
  readonly name: string;
  private readonly queue: Queue;
  private events: QueueEvents | null = null;
  private readonly watchers = new Map<string, Set<(u: JobUpdate) => void>>();
  private closed = false;

  /** Opens the queue at `url` (`redis://host:port[/db]`); connections are made lazily by BullMQ. */
  constructor(url: string, opts: JobQueueOptions = {}) {
    this.connection = parseQueueUrl(url);
    this.name = opts.queueName ?? DEFAULT_QUEUE_NAME;
    this.queue = new Queue(this.name, { connection: this.connection });
    this.queue.on("error", () => undefined); // connection errors surface as rejected calls (and timeouts)
  }

  /** Waits until Redis answers (at most `timeoutMs`). */
  async ready(timeoutMs = 10_000): Promise<void> {
    await withTimeout(this.queue.waitUntilReady(), timeoutMs, `Redis of queue ${this.name}`);
  }

  /**
   * Queues a job of `kind` with `data` (checked here with the kind's parser first) and returns its
   * id. A given `id` makes the call idempotent: a job with that id already queued is kept.
   */
  async add(kind: string, data: unknown, opts: { id?: string; timeoutMs?: number } = {}): Promise<string> {
    jobKind(kind).parse(data);
    const id = checkStoreName(opts.id ?? `${kind}-${Date.now().toString(36)}-${randomHex(4)}`);
    const job = await withTimeout(this.queue.add(kind, data, { jobId: id, attempts: 1, removeOnComplete: false, removeOnFail: false }), opts.timeoutMs ?? 10_000, `queueing ${kind} job`);
    return job.id ?? id;
  }

  /** The job's state, progress and result; null when no job has that id. */
  async status(id: string): Promise<QueuedJobStatus | null> {
    const job = await this.queue.getJob(id);
    if (!job) return null;
    const state = (await job.getState()) as QueuedJobState;
    const progress = typeof job.progress === "object" && job.progress !== null && "step" in job.progress ? (job.progress as unknown as JobUpdate) : null;
    return {
      id,
      kind: job.name,
      state,
      data: job.data,
      progress: progress ? withoutEvent(progress) : null,
      attemptsStarted: job.attemptsStarted ?? 0,
      worker: job.processedBy ?? null,
      result: job.returnvalue ?? null,
      failedReason: job.failedReason ?? null,
      createdAt: job.timestamp,
      finishedAt: job.finishedOn ?? null,
    };
  }

  /** The job's events so far (its log), oldest first. */
  async jobEvents(id: string): Promise<JobEvent[]> {
    const { logs } = await this.queue.getJobLogs(id, 0, -1, true);
    const out: JobEvent[] = [];
    for (const line of logs) {
      try {
        out.push(JSON.parse(line) as JobEvent);
      } catch {
        out.push({ level: "info", message: line, created_at: 0 });
      }
    }
    return out;
  }

  /**
   * Waits for the job to finish and returns its result; throws `JobFailedError` when it failed and
   * `QueueTimeoutError` after `timeoutMs`.
   */
  async wait<T = unknown>(id: string, timeoutMs: number): Promise<T> {
    const events = await this.queueEvents(timeoutMs);
    const job = await this.queue.getJob(id);
    if (!job) throw new ArgumentError("JobQueue.wait", "id", "the id of a queued job", JSON.stringify(id));
    try {
      return (await job.waitUntilFinished(events, timeoutMs)) as T;
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      if (/timed out before finishing/.test(message)) throw new QueueTimeoutError(`job ${id}`, timeoutMs);
      const { code, message: reason } = decodeFailure(message);
      throw new JobFailedError(id, reason, code);
    }
  }

  /** Calls `listener` with every progress update (and event) of job `id` from now on; returns the unsubscribe function. */
  async watch(id: string, listener: (u: JobUpdate) => void, timeoutMs = 10_000): Promise<() => void> {
    await this.queueEvents(timeoutMs);
    let set = this.watchers.get(id);
    if (!set) this.watchers.set(id, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.watchers.delete(id);
    };
  }

  /** Removes a job that no worker has taken yet; false when it is running or finished (or unknown). */
  async removeWaiting(id: string): Promise<boolean> {
    const job = await this.queue.getJob(id);
    if (!job) return false;
    const state = await job.getState();
    if (state !== "waiting" && state !== "delayed" && state !== "prioritized") return false;
    await job.remove();
    return true;
  }

  /** Counts of jobs per state. */
  async counts(): Promise<Record<string, number>> {
    return this.queue.getJobCounts("waiting", "active", "completed", "failed", "delayed", "prioritized");
  }

  /** Closes the queue's Redis connections (always call it: open connections keep a process alive). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.watchers.clear();
    await Promise.all([this.events?.close(), this.queue.close()]);
  }

  private async queueEvents(timeoutMs: number): Promise<QueueEvents> {
    if (!this.events) {
      const events = new QueueEvents(this.name, { connection: this.connection });
      events.on("error", () => undefined);
      events.on("progress", ({ jobId, data }) => {
        const set = this.watchers.get(jobId);
        if (!set || typeof data !== "object" || data === null) return;
        for (const l of [...set]) l(data as unknown as JobUpdate);
      });
      this.events = events;
    }
    await withTimeout(this.events.waitUntilReady(), timeoutMs, `Redis of queue ${this.name}`);
    return this.events;
  }
}

function withoutEvent(u: JobUpdate): JobProgress {
  const { event: _event, ...rest } = u;
  return rest;
}

/** `p`, or a `QueueTimeoutError` after `ms` (the timer never keeps the process alive). */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new QueueTimeoutError(what, ms)), ms);
        timer.unref();
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
