/**
 * The fine-tuning service behind OpenAI's `/v1/fine_tuning/jobs` routes: checks a job request,
 * keeps every job in `<state>/jobs/<id>/` (the `fine_tuning.job` object, its events and
 * checkpoints, the trainer's checkpoint), hands jobs to a `JobExecutor` and records what the
 * executor reports. The executor is the seam between where jobs are kept and where they run:
 * `LocalExecutor` runs them in this process one at a time; a queue executor can run them on
 * workers. On start the service resubmits every job that had not finished (a killed server
 * resumes each from its last checkpoint).
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { FineTuneModelError, InvalidRequestError, JobStateError, PeftError, UnknownJobError } from "../../errors.js";
import { tempPathFor, writeFileAtomic } from "../../io/atomic.js";
import { readJsonObject } from "../../io/json-file.js";
import type { LoadedModel } from "../../models/load.js";
import type { ModelTask } from "../../models/model-def.js";
import { randomHex } from "../../platform/crypto.js";
import type { SessionOptions } from "../../runtime/session.js";
import type { TrainingGate } from "../../train/gate.js";
import { trainMethods } from "../../tuners/registry.js";
import { TRAIN_DEFAULTS } from "../train.js";
import { writeJsonAtomic } from "../run-dir.js";
import { FileStore, type StoredFile } from "./files.js";
import { type TrainingFormat } from "./formats.js";
import { type FineTuneCheckpointInfo, type FineTuneEvent, type FineTuneJobSpec, type FineTuneOutcome, finishedOutcome, runFineTuneJob } from "./run.js";

export type JobStatus = "validating_files" | "queued" | "running" | "succeeded" | "failed" | "cancelled";

export interface JobErrorObject {
  readonly code: string;
  readonly message: string;
  readonly param: string | null;
}

export interface Hyperparameters {
  readonly n_epochs: number;
  readonly batch_size: number;
  readonly learning_rate_multiplier: number;
}

/** OpenAI's `fine_tuning.job` object, with the `peft` extension. */
export interface FineTuningJob {
  readonly object: "fine_tuning.job";
  readonly id: string;
  readonly created_at: number;
  readonly error: JobErrorObject | null;
  readonly fine_tuned_model: string | null;
  readonly finished_at: number | null;
  readonly hyperparameters: Hyperparameters;
  readonly method: { readonly type: "supervised"; readonly supervised: { readonly hyperparameters: Hyperparameters } };
  readonly model: string;
  readonly organization_id: string;
  readonly result_files: readonly string[];
  readonly seed: number;
  readonly status: JobStatus;
  readonly trained_tokens: number | null;
  readonly training_file: string;
  readonly validation_file: string | null;
  readonly estimated_finish: number | null;
  readonly integrations: readonly unknown[];
  readonly metadata: Readonly<Record<string, string>> | null;
  readonly user_provided_suffix: string | null;
  readonly peft: {
    readonly method: string;
    readonly r: number;
    readonly lora_alpha: number;
    readonly lora_dropout: number;
    readonly target_modules: string | string[] | null;
    readonly num_virtual_tokens: number;
    readonly adapter_config: Readonly<Record<string, unknown>>;
    readonly checkpoint_every: number;
  };
}

export interface JobEventObject {
  readonly object: "fine_tuning.job.event";
  readonly id: string;
  readonly created_at: number;
  readonly level: "info" | "warn" | "error";
  readonly message: string;
  readonly data: Record<string, unknown> | null;
  readonly type: "message" | "metrics";
}

export interface JobCheckpointObject {
  readonly object: "fine_tuning.job.checkpoint";
  readonly id: string;
  readonly created_at: number;
  readonly fine_tuned_model_checkpoint: string;
  readonly fine_tuning_job_id: string;
  readonly step_number: number;
  readonly metrics: Record<string, number>;
}

export interface ListPage<T> {
  readonly object: "list";
  readonly data: T[];
  readonly has_more: boolean;
  readonly first_id?: string | null;
  readonly last_id?: string | null;
}

/** What an executor reports about the jobs it runs. */
export interface JobSink {
  /** The job's optimizer steps begin (status `running`). */
  started(id: string): void;
  event(id: string, e: FineTuneEvent): void;
  checkpoint(id: string, c: FineTuneCheckpointInfo): void;
  succeeded(id: string, outcome: FineTuneOutcome): void;
  failed(id: string, error: JobErrorObject): void;
  cancelled(id: string): void;
}

/** Where a job's files live (the executor passes them to `runFineTuneJob`). */
export interface JobPaths {
  readonly stateDir: string;
  readonly adapterOut: string;
}

/** Runs submitted jobs and reports through the `JobSink` it was made with. */
export interface JobExecutor {
  submit(spec: FineTuneJobSpec, paths: JobPaths): void;
  /** Stops a submitted job (queued or running); the executor then reports `cancelled`. */
  cancel(id: string): void;
  /** Stops running jobs without reporting them finished (they resume on the next start). */
  close(): Promise<void>;
}

/** The served model a service fine-tunes. */
export interface FineTuneBase {
  /** Its name in requests. */
  readonly id: string;
  /** A model folder, or `use-lite`. */
  readonly base: string;
  readonly task: ModelTask;
  /** Its folder has a tokenizer (texts can be encoded). */
  readonly hasTokenizer: boolean;
  readonly hasChatTemplate: boolean;
}

export interface FineTuneServiceOptions {
  readonly stateDir: string;
  readonly base: FineTuneBase;
  /** Default: a `LocalExecutor`. */
  readonly executor?: (sink: JobSink) => JobExecutor;
  /** Options of the in-process executor. */
  readonly local?: LocalExecutorOptions;
  /** A job succeeded: its adapter is at `adapterDir` (the server registers it as a model). */
  onSucceeded?(job: FineTuningJob, adapterDir: string): void;
}

/** The base learning rate `learning_rate_multiplier` scales (`peft train`'s default). */
export const BASE_LEARNING_RATE = TRAIN_DEFAULTS.lr;
const AUTO_EPOCHS = 3;
const AUTO_BATCH = 8;

const Auto = <T extends z.ZodType>(t: T) => z.union([z.literal("auto"), t]).optional();
const HyperparametersSchema = z.strictObject({
  n_epochs: Auto(z.number().int().min(1).max(50)),
  batch_size: Auto(z.number().int().min(1).max(256)),
  learning_rate_multiplier: Auto(z.number().positive().max(100)),
});
const CreateJobSchema = z.object({
  model: z.string().min(1),
  training_file: z.string().min(1),
  validation_file: z.string().min(1).nullish(),
  hyperparameters: HyperparametersSchema.nullish(),
  method: z
    .object({
      type: z.literal("supervised"),
      supervised: z.object({ hyperparameters: HyperparametersSchema.nullish() }).nullish(),
    })
    .nullish(),
  suffix: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,64}$/u, "must be 1 to 64 letters, digits, '-' or '_'")
    .nullish(),
  seed: z.number().int().min(0).max(2147483647).nullish(),
  metadata: z.record(z.string(), z.string()).nullish(),
  integrations: z.array(z.unknown()).max(0, "integrations are not supported").nullish(),
  peft: z
    .strictObject({
      method: z.string().optional(),
      r: z.number().int().min(1).max(4096).optional(),
      lora_alpha: z.number().positive().optional(),
      lora_dropout: z.number().min(0).lt(1).optional(),
      target_modules: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).nullish(),
      num_virtual_tokens: z.number().int().min(1).max(1024).optional(),
      adapter_config: z.record(z.string(), z.unknown()).optional(),
      checkpoint_every: z.number().int().min(1).optional(),
    })
    .nullish(),
});

function parse<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  const r = schema.safeParse(body ?? {});
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  throw new InvalidRequestError(issue.path.length ? issue.path.join(".") : null, issue.message);
}

const now = () => Math.floor(Date.now() / 1000);

/** Which training formats a model task trains. */
function formatsFor(task: ModelTask): readonly TrainingFormat[] {
  return task === "causal-lm" ? ["chat", "prompt-completion"] : ["classification"];
}

/** `ft:<base>:<suffix>:<id>` with the characters adapter names may not hold ('.', '/') replaced by '-'. */
export function fineTunedModelName(base: string, suffix: string | null, id: string): string {
  return `ft:${base.replace(/[./\\]/gu, "-")}:${suffix ?? ""}:${id.replace(/^ftjob-/u, "")}`;
}

/** Newest-first paging with OpenAI's `after` (an id: items after it in the list) and `limit`. */
function page<T extends { id: string }>(items: readonly T[], after: string | undefined, limit: number | undefined): ListPage<T> {
  const n = Math.min(Math.max(limit ?? 20, 1), 100);
  let start = 0;
  if (after !== undefined) {
    const i = items.findIndex((x) => x.id === after);
    start = i < 0 ? items.length : i + 1;
  }
  const data = items.slice(start, start + n);
  return { object: "list", data, has_more: start + n < items.length, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null };
}

/** Reads a JSONL file of objects; a torn last line (a process killed mid-append) is skipped. */
function readJsonl<T>(file: string): T[] {
  if (!existsSync(file)) return [];
  const out: T[] = [];
  for (const line of readFileSync(file, "utf8").split("\n")) {
    if (line.trim() === "") continue;
    try {
      out.push(JSON.parse(line) as T);
    } catch {
      // the last line of an append the process did not finish
    }
  }
  return out;
}

export class FineTuneService implements JobSink {
  readonly files: FileStore;
  readonly jobsDir: string;
  readonly adaptersDir: string;
  private readonly executor: JobExecutor;
  private readonly jobs = new Map<string, FineTuningJob>();
  private readonly specs = new Map<string, FineTuneJobSpec>();

  constructor(private readonly opts: FineTuneServiceOptions) {
    this.files = new FileStore(join(opts.stateDir, "files"));
    this.jobsDir = join(opts.stateDir, "jobs");
    this.adaptersDir = join(opts.stateDir, "adapters");
    mkdirSync(this.jobsDir, { recursive: true });
    mkdirSync(this.adaptersDir, { recursive: true });
    // adapter folders a killed job was writing (renamed into place only when complete)
    for (const n of readdirSync(this.adaptersDir)) if (/\.tmp-\d+-[0-9a-f]{12}$/u.test(n)) rmSync(join(this.adaptersDir, n), { recursive: true, force: true });
    for (const n of readdirSync(this.jobsDir)) {
      const f = join(this.jobsDir, n, "job.json");
      if (!existsSync(f)) continue;
      const rec = readJsonObject(f) as unknown as { job: FineTuningJob; spec: FineTuneJobSpec };
      this.jobs.set(rec.job.id, rec.job);
      this.specs.set(rec.job.id, rec.spec);
    }
    this.executor = (opts.executor ?? ((sink) => new LocalExecutor(sink, opts.local)))(this);
  }

  paths(id: string): JobPaths {
    return { stateDir: join(this.jobsDir, id), adapterOut: join(this.adaptersDir, id) };
  }

  /** Registers the finished adapters and resubmits every job that had not finished (after a restart). */
  start(): void {
    for (const job of this.sortedJobs().reverse()) {
      if (job.status === "succeeded" && job.fine_tuned_model) this.opts.onSucceeded?.(job, this.paths(job.id).adapterOut);
      if (job.status === "succeeded" || job.status === "failed" || job.status === "cancelled") continue;
      const done = finishedOutcome(this.paths(job.id));
      if (done) {
        this.succeeded(job.id, done);
        continue;
      }
      if (job.status === "running") this.event(job.id, { level: "info", message: "The server restarted; the job resumes from its last checkpoint", created_at: now() });
      this.update(job.id, { status: "queued" });
      this.executor.submit(this.specs.get(job.id)!, this.paths(job.id));
    }
  }

  async close(): Promise<void> {
    await this.executor.close();
  }

  private sortedJobs(): FineTuningJob[] {
    return [...this.jobs.values()].sort((a, b) => b.created_at - a.created_at || (a.id < b.id ? 1 : -1));
  }

  private save(id: string): void {
    writeJsonAtomic(join(this.jobsDir, id, "job.json"), { job: this.jobs.get(id), spec: this.specs.get(id) });
  }

  private update(id: string, patch: Partial<FineTuningJob>): FineTuningJob {
    const job = { ...this.get(id), ...patch } as FineTuningJob;
    this.jobs.set(id, job);
    this.save(id);
    return job;
  }

  /** Checks a `POST /v1/fine_tuning/jobs` body and creates the job (400s for what is wrong; nothing is kept then). */
  create(body: unknown): FineTuningJob {
    const b = parse(CreateJobSchema, body);
    const base = this.opts.base;
    if (b.model !== base.id) throw new FineTuneModelError(b.model, `this server fine-tunes its base model ${JSON.stringify(base.id)} only (GET /v1/models)`);
    const fileOf = (id: string, param: string): StoredFile => {
      if (!this.files.has(id)) throw new InvalidRequestError(param, `no file with id ${JSON.stringify(id)}; upload it with POST /v1/files (purpose "fine-tune")`);
      const f = this.files.get(id);
      if (f.purpose !== "fine-tune" || f.format === undefined) throw new InvalidRequestError(param, `file ${id} has purpose ${JSON.stringify(f.purpose)}; training files are uploaded with purpose "fine-tune"`);
      return f;
    };
    const train = fileOf(b.training_file, "training_file");
    const valid = b.validation_file ? fileOf(b.validation_file, "validation_file") : null;
    const format = train.format!;
    if (!formatsFor(base.task).includes(format)) {
      throw new FineTuneModelError(b.model, `it is a ${base.task} model, which trains on ${formatsFor(base.task).join(" or ")} examples; ${b.training_file} holds ${format} examples`);
    }
    if (!base.hasTokenizer) throw new FineTuneModelError(b.model, "its folder has no tokenizer.json, so the training texts cannot be encoded");
    if (format === "chat" && !base.hasChatTemplate) throw new FineTuneModelError(b.model, "its tokenizer has no chat template, so chat examples cannot be rendered; use {prompt, completion} examples");
    if (valid && valid.format !== format) throw new InvalidRequestError("validation_file", `holds ${valid.format} examples, the training file ${format}; both need the same format`);
    if (valid && format === "classification" && valid.labels!.some((l) => !train.labels!.includes(l))) {
      throw new InvalidRequestError("validation_file", `has labels the training file lacks (${valid.labels!.filter((l) => !train.labels!.includes(l)).join(", ")})`);
    }
    const hp = b.hyperparameters ?? b.method?.supervised?.hyperparameters ?? {};
    const p = b.peft ?? {};
    const method = p.method ?? "lora";
    if (!trainMethods().includes(method)) throw new InvalidRequestError("peft.method", `unknown method ${JSON.stringify(method)}; peft-ts trains: ${trainMethods().join(", ")}`);
    const examples = train.examples!;
    const hyper: Hyperparameters = {
      n_epochs: hp.n_epochs === undefined || hp.n_epochs === "auto" ? AUTO_EPOCHS : hp.n_epochs,
      batch_size: hp.batch_size === undefined || hp.batch_size === "auto" ? Math.min(AUTO_BATCH, examples) : hp.batch_size,
      learning_rate_multiplier: hp.learning_rate_multiplier === undefined || hp.learning_rate_multiplier === "auto" ? 1 : hp.learning_rate_multiplier,
    };
    if (hyper.batch_size > examples) throw new InvalidRequestError("hyperparameters.batch_size", `${hyper.batch_size} is more than the ${examples} examples of the training file`);
    const stepsPerEpoch = Math.ceil(examples / hyper.batch_size);
    const id = `ftjob-${randomHex(12)}`;
    const seed = b.seed ?? Number.parseInt(randomHex(3), 16);
    const fineTunedModel = fineTunedModelName(base.id, b.suffix ?? null, id);
    const peft = {
      method,
      r: p.r ?? TRAIN_DEFAULTS.r,
      lora_alpha: p.lora_alpha ?? TRAIN_DEFAULTS.alpha,
      lora_dropout: p.lora_dropout ?? TRAIN_DEFAULTS.dropout,
      target_modules: p.target_modules ?? null,
      num_virtual_tokens: p.num_virtual_tokens ?? 20,
      adapter_config: p.adapter_config ?? {},
      checkpoint_every: p.checkpoint_every ?? stepsPerEpoch,
    };
    const job: FineTuningJob = {
      object: "fine_tuning.job",
      id,
      created_at: now(),
      error: null,
      fine_tuned_model: null,
      finished_at: null,
      hyperparameters: hyper,
      method: { type: "supervised", supervised: { hyperparameters: hyper } },
      model: base.id,
      organization_id: "org-peft-ts",
      result_files: [],
      seed,
      status: "validating_files",
      trained_tokens: null,
      training_file: train.id,
      validation_file: valid?.id ?? null,
      estimated_finish: null,
      integrations: [],
      metadata: b.metadata ?? null,
      user_provided_suffix: b.suffix ?? null,
      peft,
    };
    const spec: FineTuneJobSpec = {
      id,
      model: base.id,
      base: base.base,
      trainingFile: this.files.contentPath(train.id),
      validationFile: valid ? this.files.contentPath(valid.id) : null,
      format,
      nEpochs: hyper.n_epochs,
      batchSize: hyper.batch_size,
      learningRate: BASE_LEARNING_RATE * hyper.learning_rate_multiplier,
      seed,
      peft: { method, r: peft.r, alpha: peft.lora_alpha, dropout: peft.lora_dropout, targetModules: peft.target_modules, numVirtualTokens: peft.num_virtual_tokens, adapterConfig: peft.adapter_config },
      checkpointEvery: peft.checkpoint_every,
      fineTunedModel,
    };
    mkdirSync(join(this.jobsDir, id), { recursive: true });
    this.jobs.set(id, job);
    this.specs.set(id, spec);
    this.save(id);
    this.event(id, { level: "info", message: `Validating training file: ${train.id} (${examples} ${format} examples)${valid ? ` and validation file: ${valid.id}` : ""}`, created_at: now() });
    this.event(id, { level: "info", message: "Files validated, moving job to queued state", created_at: now() });
    const queued = this.update(id, { status: "queued" });
    this.executor.submit(spec, this.paths(id));
    return queued;
  }

  get(id: string): FineTuningJob {
    const j = this.jobs.get(id);
    if (!j) throw new UnknownJobError(id);
    return j;
  }

  list(after?: string, limit?: number): ListPage<FineTuningJob> {
    return page(this.sortedJobs(), after, limit);
  }

  events(id: string, after?: string, limit?: number): ListPage<JobEventObject> {
    this.get(id);
    return page(readJsonl<JobEventObject>(join(this.jobsDir, id, "events.jsonl")).reverse(), after, limit);
  }

  checkpoints(id: string, after?: string, limit?: number): ListPage<JobCheckpointObject> {
    this.get(id);
    return page(readJsonl<JobCheckpointObject>(join(this.jobsDir, id, "checkpoints.jsonl")).reverse(), after, limit);
  }

  cancel(id: string): FineTuningJob {
    const job = this.get(id);
    if (job.status === "succeeded" || job.status === "failed" || job.status === "cancelled") throw new JobStateError(id, job.status, "only a validating, queued or running job can be cancelled");
    this.executor.cancel(id);
    return this.get(id);
  }

  // ---------------------------------------------------------------- JobSink

  started(id: string): void {
    if (this.get(id).status === "queued") this.update(id, { status: "running" });
  }

  event(id: string, e: FineTuneEvent): void {
    const obj: JobEventObject = { object: "fine_tuning.job.event", id: `ftevent-${randomHex(12)}`, created_at: e.created_at, level: e.level, message: e.message, data: e.data ?? null, type: e.type ?? "message" };
    appendFileSync(join(this.jobsDir, id, "events.jsonl"), `${JSON.stringify(obj)}\n`);
  }

  checkpoint(id: string, c: FineTuneCheckpointInfo): void {
    const job = this.get(id);
    const obj: JobCheckpointObject = {
      object: "fine_tuning.job.checkpoint",
      id: `ftckpt-${randomHex(12)}`,
      created_at: now(),
      fine_tuned_model_checkpoint: `${this.specs.get(id)!.fineTunedModel}:ckpt-step-${c.step}`,
      fine_tuning_job_id: job.id,
      step_number: c.step,
      metrics: { ...c.metrics },
    };
    appendFileSync(join(this.jobsDir, id, "checkpoints.jsonl"), `${JSON.stringify(obj)}\n`);
  }

  succeeded(id: string, outcome: FineTuneOutcome): void {
    const results = this.resultsFile(id, outcome);
    const job = this.update(id, { status: "succeeded", fine_tuned_model: outcome.fineTunedModel, finished_at: now(), trained_tokens: outcome.trainedTokens, result_files: results ? [results] : [] });
    this.opts.onSucceeded?.(job, outcome.adapterDir);
    this.event(id, { level: "info", message: "The job has successfully completed", created_at: now() });
  }

  failed(id: string, error: JobErrorObject): void {
    this.update(id, { status: "failed", error, finished_at: now() });
    this.event(id, { level: "error", message: `The job failed: ${error.message}`, data: { code: error.code }, created_at: now() });
  }

  cancelled(id: string): void {
    this.update(id, { status: "cancelled", finished_at: now() });
    this.event(id, { level: "info", message: "The job was cancelled", created_at: now() });
  }

  /** The job's step metrics as a CSV result file (OpenAI's `result_files`), or null when it has none. */
  private resultsFile(id: string, outcome: FineTuneOutcome): string | null {
    const steps = readJsonl<JobEventObject>(join(this.jobsDir, id, "events.jsonl")).filter((e) => e.type === "metrics" && e.data && typeof e.data.train_loss === "number");
    if (steps.length === 0) return null;
    const byStep = new Map<number, Record<string, unknown>>();
    for (const e of steps) byStep.set(e.data!.step as number, e.data!);
    const rows = [...byStep.values()].sort((a, b) => (a.step as number) - (b.step as number)).map((d) => `${String(d.step)},${String(d.train_loss)},${String(d.learning_rate ?? "")}`);
    const tmp = tempPathFor(join(this.files.dir, "results"));
    writeFileAtomic(tmp, `step,train_loss,learning_rate\n${rows.join("\n")}\n`);
    const f = this.files.keepSync(tmp, `${outcome.fineTunedModel.replaceAll(":", "_")}-results.csv`, "fine-tune-results");
    return f.id;
  }
}

export interface LocalExecutorOptions {
  readonly session?: SessionOptions;
  /** The server's loaded base model (shared by causal-LM jobs instead of a second load). */
  readonly baseModel?: LoadedModel;
  /** The generation engine's training gate: jobs run between its decode iterations. */
  readonly gate?: TrainingGate;
}

/** The error object of a failed job (a `PeftError`'s code, else `server_error`). */
export function jobError(e: unknown): JobErrorObject {
  if (e instanceof PeftError) return { code: e.code, message: e.message, param: null };
  return { code: "server_error", message: e instanceof Error ? e.message : String(e), param: null };
}

/** Runs jobs in this process, one at a time in submission order. */
export class LocalExecutor implements JobExecutor {
  private readonly queue: { spec: FineTuneJobSpec; paths: JobPaths }[] = [];
  private current: { id: string; ac: AbortController; done: Promise<void> } | null = null;
  private closed = false;

  constructor(
    private readonly sink: JobSink,
    private readonly opts: LocalExecutorOptions = {},
  ) {}

  submit(spec: FineTuneJobSpec, paths: JobPaths): void {
    if (this.closed) return;
    this.queue.push({ spec, paths });
    this.pump();
  }

  cancel(id: string): void {
    const i = this.queue.findIndex((q) => q.spec.id === id);
    if (i >= 0) {
      this.queue.splice(i, 1);
      this.sink.cancelled(id);
      return;
    }
    if (this.current?.id === id) this.current.ac.abort("cancel");
  }

  async close(): Promise<void> {
    this.closed = true;
    this.queue.length = 0;
    const c = this.current;
    if (c) {
      c.ac.abort("close");
      await c.done;
    }
  }

  private pump(): void {
    if (this.current || this.closed) return;
    const next = this.queue.shift();
    if (!next) return;
    const ac = new AbortController();
    const { spec, paths } = next;
    const done = (async () => {
      try {
        const outcome = await runFineTuneJob(spec, {
          ...paths,
          ...(this.opts.baseModel && spec.format !== "classification" ? { baseModel: this.opts.baseModel } : {}),
          ...(this.opts.session ? { session: this.opts.session } : {}),
          ...(this.opts.gate ? { gate: this.opts.gate } : {}),
          signal: ac.signal,
          onEvent: (e) => this.sink.event(spec.id, e),
          onCheckpoint: (c) => this.sink.checkpoint(spec.id, c),
          onStart: () => this.sink.started(spec.id),
        });
        this.sink.succeeded(spec.id, outcome);
      } catch (e) {
        if (ac.signal.aborted && ac.signal.reason === "close") return; // the job stays running on disk and resumes on the next start
        if (ac.signal.aborted) this.sink.cancelled(spec.id);
        else this.sink.failed(spec.id, jobError(e));
      }
    })();
    this.current = { id: spec.id, ac, done };
    void done.finally(() => {
      this.current = null;
      this.pump();
    });
  }
}
