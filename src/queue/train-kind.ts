/**
 * The `train` job kind: `peft train` as a queued job. The run folder lives in the job's state
 * folder, so a job whose worker died resumes from the run's last checkpoint (`Trainer`'s exact
 * resume); when it finishes, the adapter (with metrics.json) is published to the adapter store as
 * `<store>/<adapter name>` — once, whatever happened to earlier attempts.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { ConfigError } from "../errors.js";
import { DEFAULT_SPLIT, parseSplitFractions } from "../runs/data.js";
import { RUN_FILES } from "../runs/run-dir.js";
import { TRAIN_DEFAULTS, type TrainRunOptions, runTraining } from "../runs/train.js";
import { parseTargetSpec } from "../tuners/common/target.js";
import { readJsonObject } from "../io/json-file.js";
import type { JobContext, JobKind } from "./kinds.js";
import { checkStoreName, publishToStore, storePath } from "./store.js";

const positiveInt = z.number().int().positive();
const schema = z
  .object({
    model: z.string().min(1),
    data: z.string().min(1),
    /** Name of the adapter in the store (default: the job id). */
    adapter: z.string().min(1).optional(),
    method: z.string().optional(),
    r: positiveInt.optional(),
    alpha: z.number().positive().optional(),
    dropout: z.number().min(0).lt(1).optional(),
    target: z.union([z.string(), z.array(z.string()).min(1)]).optional(),
    adapterConfig: z.record(z.string(), z.unknown()).optional(),
    epochs: z.number().positive().optional(),
    lr: z.number().positive().optional(),
    batchSize: positiveInt.optional(),
    seed: z.number().int().min(0).optional(),
    gradAccum: positiveInt.optional(),
    evalEvery: positiveInt.optional(),
    maxSteps: positiveInt.optional(),
    maxExamples: positiveInt.optional(),
    maxLength: positiveInt.optional(),
    split: z.string().optional(),
    threads: positiveInt.optional(),
  })
  .strict();

export type TrainJobData = z.infer<typeof schema>;

export interface TrainJobResult {
  /** The adapter's folder in the store (null: the worker has no store; then `runDir`). */
  readonly adapter: string | null;
  readonly runDir: string;
  /** False when an earlier attempt had already published the adapter (this one did not write it again). */
  readonly published: boolean;
  readonly metrics: Record<string, unknown>;
}

function parse(data: unknown): TrainJobData {
  const r = schema.safeParse(data);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    throw new ConfigError("train job", issue.path.join("."), issue.message);
  }
  if (r.data.adapter !== undefined) checkStoreName(r.data.adapter);
  parseTargetSpec(r.data.target, "train job", "target");
  if (r.data.split !== undefined) parseSplitFractions(r.data.split, "train job", "split");
  return r.data;
}

function runOptions(d: TrainJobData, out: string, mode: "new" | "resume"): TrainRunOptions {
  return {
    model: d.model,
    data: d.data,
    out,
    method: d.method ?? TRAIN_DEFAULTS.method,
    r: d.r ?? TRAIN_DEFAULTS.r,
    alpha: d.alpha ?? TRAIN_DEFAULTS.alpha,
    dropout: d.dropout ?? TRAIN_DEFAULTS.dropout,
    target: parseTargetSpec(d.target, "train job", "target"),
    feedforward: null,
    ...(d.adapterConfig ? { adapterConfig: d.adapterConfig } : {}),
    epochs: d.epochs ?? TRAIN_DEFAULTS.epochs,
    lr: d.lr ?? TRAIN_DEFAULTS.lr,
    batchSize: d.batchSize ?? TRAIN_DEFAULTS.batchSize,
    seed: d.seed ?? TRAIN_DEFAULTS.seed,
    weightDecay: TRAIN_DEFAULTS.weightDecay,
    warmupRatio: TRAIN_DEFAULTS.warmupRatio,
    schedule: TRAIN_DEFAULTS.schedule,
    gradAccum: d.gradAccum ?? TRAIN_DEFAULTS.gradAccum,
    maxGradNorm: TRAIN_DEFAULTS.maxGradNorm,
    evalEvery: d.evalEvery ?? null,
    patience: null,
    maxLength: d.maxLength ?? null,
    threads: d.threads ?? null,
    maxExamples: d.maxExamples ?? null,
    maxSteps: d.maxSteps ?? null,
    split: d.split !== undefined ? parseSplitFractions(d.split, "train job", "split") : DEFAULT_SPLIT,
    mode,
    plot: false,
  };
}

async function run(d: TrainJobData, ctx: JobContext): Promise<TrainJobResult> {
  const runDir = join(ctx.stateDir, "run");
  const name = d.adapter ?? ctx.id;
  const inStore = ctx.adapterStore !== null ? storePath(ctx.adapterStore, name) : null;
  const metricsFile = join(runDir, RUN_FILES.metrics);
  if (inStore !== null && existsSync(join(inStore, RUN_FILES.adapterConfig))) {
    ctx.event("warn", `adapter ${name} is already in the store (an earlier attempt finished it); not training again`);
    const metrics = existsSync(join(inStore, RUN_FILES.metrics)) ? readJsonObject(join(inStore, RUN_FILES.metrics)) : {};
    return { adapter: inStore, runDir, published: false, metrics };
  }
  const resume = existsSync(join(runDir, RUN_FILES.config));
  if (!resume || !existsSync(metricsFile)) {
    const result = await runTraining(runOptions(d, runDir, resume ? "resume" : "new"), {
      start: (total, startStep) => {
        if (startStep > 0) ctx.event("info", `resumed from the checkpoint at step ${startStep} of ${total}`, { step: startStep });
        else ctx.event("info", `training started: ${total} steps`, { total_steps: total });
        ctx.progress(startStep, total);
      },
      step: (s) => ctx.progress(s.step, s.totalSteps, { loss: s.loss, epoch: s.epoch }),
      evaluation: (e) => ctx.event("info", `step ${e.step}: validation loss ${e.loss.toFixed(4)}${e.accuracy !== undefined ? `, accuracy ${e.accuracy.toFixed(4)}` : ""}`, { step: e.step, loss: e.loss, ...(e.accuracy !== undefined ? { accuracy: e.accuracy } : {}) }),
      note: (line) => ctx.event("info", line),
      stop: () => undefined,
    });
    await result.model.dispose();
  } else {
    ctx.event("info", "the run had already finished (an earlier attempt stopped before publishing it)");
  }
  const metrics = readJsonObject(metricsFile);
  if (inStore === null) return { adapter: null, runDir, published: false, metrics };
  const published = publishToStore(ctx.adapterStore!, name, runDir, [RUN_FILES.adapterConfig, RUN_FILES.adapterWeights, RUN_FILES.metrics]);
  ctx.event(published ? "info" : "warn", published ? `adapter published to ${inStore}` : `adapter ${name} was already in the store; kept the first one`);
  return { adapter: inStore, runDir, published, metrics };
}

/** `train`: a `peft train` run as a job (data: the train options in camelCase, plus `adapter`, the store name). */
export const trainJobKind: JobKind<TrainJobData, TrainJobResult> = {
  name: "train",
  description: "train an adapter (peft train's options) and publish it to the adapter store",
  parse,
  run,
};
