/**
 * Fine-tuning jobs (`POST /v1/fine_tuning/jobs` of a `peft serve --queue`) on queue workers: the
 * `fine-tune` job kind runs `runFineTuneJob` with the job's paths — the server's state folder,
 * which every worker sees (a shared folder): the uploaded files, the job's checkpoints (so the
 * worker that picks up a dead worker's job resumes from its last checkpoint) and the adapter
 * folder the server then serves — and {@link QueueExecutor} is the server's side: it queues the
 * jobs, streams their events and checkpoints back into the fine-tuning service, and reports how
 * they ended.
 */
import { ConfigError, JobFailedError, PeftError } from "../errors.js";
import { type FineTuneCheckpointInfo, type FineTuneJobSpec, type FineTuneOutcome, type JobExecutor, type JobPaths, type JobSink, runFineTuneJob } from "../runs/finetune/index.js";
import type { JobQueue } from "./client.js";
import type { JobKind } from "./kinds.js";

export interface FineTuneJobData {
  readonly spec: FineTuneJobSpec;
  readonly paths: JobPaths;
}

function parse(data: unknown): FineTuneJobData {
  const d = data as Partial<FineTuneJobData> | null;
  const bad = (path: string, issue: string): never => {
    throw new ConfigError("fine-tune job", path, issue);
  };
  if (!d || typeof d !== "object") return bad("", "must be an object");
  if (!d.spec || typeof d.spec !== "object" || typeof d.spec.id !== "string" || typeof d.spec.trainingFile !== "string") bad("spec", "must be a fine-tuning job spec");
  if (!d.paths || typeof d.paths.stateDir !== "string" || typeof d.paths.adapterOut !== "string") bad("paths", "must name the job's state folder and adapter folder");
  return d as FineTuneJobData;
}

export const fineTuneJobKind: JobKind<FineTuneJobData, FineTuneOutcome> = {
  name: "fine-tune",
  description: "a fine-tuning job of peft serve --queue (runFineTuneJob in the server's shared state folder)",
  parse,
  run({ spec, paths }, ctx) {
    let total = 0;
    return runFineTuneJob(spec, {
      stateDir: paths.stateDir,
      adapterOut: paths.adapterOut,
      signal: ctx.signal,
      onStart: (info) => {
        total = info.totalSteps;
        ctx.progress(info.resumedAt, info.totalSteps, { started: true });
        if (info.resumedAt > 0) ctx.event("info", `resumed from the checkpoint at step ${info.resumedAt} on ${ctx.worker}`, { step: info.resumedAt });
      },
      onEvent: (e) => ctx.event(e.level, e.message, { ...(e.data ?? {}), ...(e.type ? { type: e.type } : {}), fine_tune_event: true }),
      onCheckpoint: (c) => {
        ctx.event("info", `checkpoint at step ${c.step}`, { checkpoint: c });
        ctx.progress(c.step, total, { started: true });
      },
    });
  },
};

/** Runs a fine-tuning service's jobs on queue workers (`peft serve --queue`). */
export class QueueExecutor implements JobExecutor {
  private readonly active = new Map<string, { stop: () => void; cancelled: () => void }>();
  private closed = false;

  constructor(
    private readonly sink: JobSink,
    private readonly queue: JobQueue,
    private readonly opts: { timeoutMs?: number; onError?: (e: unknown) => void } = {},
  ) {}

  submit(spec: FineTuneJobSpec, paths: JobPaths): void {
    if (this.closed || this.active.has(spec.id)) return;
    let cancelled!: () => void;
    const whenCancelled = new Promise<"cancelled">((r) => (cancelled = () => r("cancelled")));
    this.active.set(spec.id, { stop: () => undefined, cancelled });
    void this.follow(spec, paths, whenCancelled).catch((e: unknown) => this.opts.onError?.(e));
  }

  private async follow(spec: FineTuneJobSpec, paths: JobPaths, whenCancelled: Promise<"cancelled">): Promise<void> {
    const id = spec.id;
    let started = false;
    const stop = await this.queue.watch(id, (u) => {
      if (!started && u.started === true) {
        started = true;
        this.sink.started(id);
      }
      const ev = u.event;
      if (!ev) return;
      const data = (ev.data ?? {}) as Record<string, unknown>;
      if (data.checkpoint) this.sink.checkpoint(id, data.checkpoint as FineTuneCheckpointInfo);
      else if (data.fine_tune_event) {
        const { fine_tune_event: _f, type, ...rest } = data;
        this.sink.event(id, { level: ev.level, message: ev.message, created_at: ev.created_at, ...(Object.keys(rest).length > 0 ? { data: rest } : {}), ...(type === "metrics" || type === "message" ? { type } : {}) });
      } else if (ev.level !== "error") this.sink.event(id, { level: ev.level, message: ev.message, created_at: ev.created_at });
    });
    const entry = this.active.get(id);
    if (entry) this.active.set(id, { ...entry, stop });
    try {
      await this.queue.add("fine-tune", { spec, paths } satisfies FineTuneJobData, { id });
      const r = await Promise.race([this.queue.wait<FineTuneOutcome>(id, this.opts.timeoutMs ?? 7 * 24 * 3600_000), whenCancelled]);
      if (r === "cancelled" || this.closed) return;
      this.sink.succeeded(id, r);
    } catch (e) {
      if (this.closed) return; // the server stops: the job goes on on the workers; a restart follows it again
      if (e instanceof JobFailedError) this.sink.failed(id, { code: e.remoteCode ?? "server_error", message: e.reason, param: null });
      else this.sink.failed(id, { code: e instanceof PeftError ? e.code : "server_error", message: e instanceof Error ? e.message : String(e), param: null });
    } finally {
      stop();
      this.active.delete(id);
    }
  }

  /** Cancels a job no worker has taken yet; a running one finishes on its worker (the job says so in its events). */
  cancel(id: string): void {
    void this.queue.removeWaiting(id).then(
      (removed) => {
        if (removed) {
          this.active.get(id)?.cancelled();
          this.sink.cancelled(id);
        } else this.sink.event(id, { level: "warn", message: "The job is already running on a worker; queued jobs can be cancelled, running ones finish there", created_at: Math.floor(Date.now() / 1000) });
      },
      (e: unknown) => this.opts.onError?.(e),
    );
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const a of this.active.values()) {
      a.stop();
      a.cancelled();
    }
    this.active.clear();
  }
}
