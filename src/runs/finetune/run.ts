/**
 * One fine-tuning job as a library call (`runFineTuneJob`): the job's JSONL files → token ids →
 * a `PeftModel` with a fresh adapter → `Trainer.fit` with a checkpoint in the job's state folder
 * (a restarted job resumes from it exactly) → the adapter written atomically as a PEFT adapter
 * folder. The fine-tuning service (`service.ts`) runs it in-process; a queue worker can run the
 * same call on another machine.
 */
import { existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { ConfigError, FineTuneModelError } from "../../errors.js";
import { tempPathFor } from "../../io/atomic.js";
import { readJsonObject } from "../../io/json-file.js";
import { loadTokenizer } from "../../io/tokenizer.js";
import { type LoadedModel, loadModel } from "../../models/load.js";
import { modelInfo } from "../../peft/model-info.js";
import { PeftModel } from "../../peft/peft-model.js";
import type { SessionOptions } from "../../runtime/session.js";
import type { TokenizedExample } from "../../train/batch.js";
import type { LossTask } from "../../train/loss.js";
import type { TrainingGate } from "../../train/gate.js";
import { Trainer } from "../../train/trainer.js";
import { tunerForMethod } from "../../tuners/registry.js";
import { USE_LITE_MODEL_ID, openModelSource } from "../model-source.js";
import { RUN_FILES, writeJsonAtomic } from "../run-dir.js";
import { TRAIN_DEFAULTS } from "../train.js";
import { type CausalEncoder, tokenizeRow, trainedTokens } from "./examples.js";
import { type TrainingFormat, type TrainingRow, readTrainingFile } from "./formats.js";

/** The PEFT side of a job (the API's `peft` extension object, resolved). */
export interface FineTunePeftSpec {
  /** A `peft train --method` name (`lora`, `ia3`, `prompt-tuning`, …). */
  readonly method: string;
  readonly r: number;
  readonly alpha: number;
  readonly dropout: number;
  /** PEFT's `target_modules` (null: the method's default for the architecture). */
  readonly targetModules: string | string[] | null;
  readonly numVirtualTokens: number;
  /** More adapter_config.json fields (PEFT's names). */
  readonly adapterConfig: Readonly<Record<string, unknown>>;
}

/** Everything a job needs to run, with paths (a worker on another machine reads the same state folder). */
export interface FineTuneJobSpec {
  readonly id: string;
  /** The base model's name in requests. */
  readonly model: string;
  /** Where the base model is: a model folder, or `use-lite`. */
  readonly base: string;
  readonly trainingFile: string;
  readonly validationFile: string | null;
  readonly format: TrainingFormat;
  readonly nEpochs: number;
  readonly batchSize: number;
  /** The learning rate (the API's `learning_rate_multiplier` × the base rate). */
  readonly learningRate: number;
  readonly seed: number;
  readonly peft: FineTunePeftSpec;
  /** Save a checkpoint every N optimizer steps (the resume points after a crash). */
  readonly checkpointEvery: number;
  /** The served name of the result, `ft:<base>:<suffix>:<id>`. */
  readonly fineTunedModel: string;
}

export interface FineTuneEvent {
  readonly level: "info" | "warn" | "error";
  readonly message: string;
  readonly data?: Record<string, unknown>;
  /** `metrics` for per-step training metrics, `message` otherwise (OpenAI's event `type`). */
  readonly type?: "message" | "metrics";
  readonly created_at: number;
}

export interface FineTuneCheckpointInfo {
  readonly step: number;
  readonly metrics: { readonly step: number; readonly train_loss: number; readonly epoch: number };
}

export interface FineTuneContext {
  /** The job's own folder: its training checkpoint lives here; the job resumes from it when present. */
  readonly stateDir: string;
  /** Where the PEFT adapter folder goes (written atomically at the end). */
  readonly adapterOut: string;
  /** The base model already loaded by the server (causal LMs: shared instead of loaded again). */
  readonly baseModel?: LoadedModel;
  readonly session?: SessionOptions;
  /** Runs the training slices when the gate grants them (co-serving with a generation engine); the adapter is the same. */
  readonly gate?: TrainingGate;
  /** Cancels the job (between optimizer steps). */
  readonly signal?: AbortSignal;
  onEvent(e: FineTuneEvent): void;
  onCheckpoint?(c: FineTuneCheckpointInfo): void;
  /** The run starts its optimizer steps (after loading and tokenising). */
  onStart?(info: { totalSteps: number; resumedAt: number }): void;
}

export interface FineTuneOutcome {
  readonly fineTunedModel: string;
  readonly adapterDir: string;
  /** Tokens the loss read, summed over the epochs. */
  readonly trainedTokens: number;
  readonly steps: number;
  readonly trainLoss: number | null;
  readonly validLoss: number | null;
  /** The files of the adapter folder. */
  readonly resultFiles: readonly string[];
}

/** What `stateDir/outcome.json` holds once the adapter folder is in place. */
const OUTCOME_FILE = "outcome.json";

/** Thrown out of `fit` when the job's signal fires. */
class Cancelled extends Error {}

function now(): number {
  return Math.floor(Date.now() / 1000);
}

/** The task a training format trains (null: the format cannot train the model's task). */
export function formatTask(format: TrainingFormat): LossTask {
  return format === "classification" ? "seq-cls" : "causal-lm";
}

interface Prepared {
  readonly model: LoadedModel;
  readonly task: LossTask;
  readonly padId: number;
  readonly maxLength: number;
  readonly train: TokenizedExample[];
  readonly validation: TokenizedExample[];
  readonly labels: readonly string[] | null;
}

async function tokenizeFile(path: string, name: string, rowTo: (r: TrainingRow) => TokenizedExample): Promise<TokenizedExample[]> {
  const out: TokenizedExample[] = [];
  await readTrainingFile(path, name, (row) => out.push(rowTo(row)));
  return out;
}

async function prepare(spec: FineTuneJobSpec, ctx: FineTuneContext): Promise<Prepared> {
  if (spec.format === "classification") {
    const summary = await readTrainingFile(spec.trainingFile, "training_file");
    const labels = summary.labels!;
    const source = openModelSource(spec.base, { numLabels: labels.length, seed: spec.seed, command: "fine-tuning job" });
    if (source.task !== "seq-cls") throw new FineTuneModelError(spec.model, "classification examples ({text, label}) train encoder models; this is a causal LM — use chat or prompt/completion examples");
    const to = (r: TrainingRow) => tokenizeRow(r, { model: spec.model, encodeText: source.encode, labels });
    const train = await tokenizeFile(spec.trainingFile, "training_file", to);
    const validation = spec.validationFile ? await tokenizeFile(spec.validationFile, "validation_file", to) : [];
    return { model: source.model, task: "seq-cls", padId: source.padId, maxLength: source.maxPositions, train, validation, labels };
  }
  if (spec.base === USE_LITE_MODEL_ID) throw new FineTuneModelError(spec.model, "USE-lite is an encoder; it trains on classification examples ({text, label})");
  const model = ctx.baseModel ?? loadModel(spec.base);
  if (model.def.task !== "causal-lm") throw new FineTuneModelError(spec.model, `a ${model.def.task} model trains on classification examples ({text, label}), not ${spec.format}`);
  const tok = loadTokenizer(spec.base);
  const enc: CausalEncoder = { tok, maxLength: model.config.maxPositionEmbeddings };
  const to = (r: TrainingRow) => tokenizeRow(r, { model: spec.model, causal: enc });
  const train = await tokenizeFile(spec.trainingFile, "training_file", to);
  const validation = spec.validationFile ? await tokenizeFile(spec.validationFile, "validation_file", to) : [];
  const padId = tok.padTokenId ?? ("padTokenId" in model.config ? (model.config.padTokenId as number | null | undefined) : null) ?? 0;
  return { model, task: "causal-lm", padId, maxLength: enc.maxLength, train, validation, labels: null };
}

/** The adapter config a job trains (`TunerDef.trainConfig` with the job's `peft` options, then its extra fields). */
function adapterConfigOf(spec: FineTuneJobSpec, p: Prepared): Record<string, unknown> {
  const tuner = tunerForMethod(spec.peft.method, "peft.method");
  const raw = tuner.trainConfig(
    {
      taskType: p.task === "seq-cls" ? "SEQ_CLS" : "CAUSAL_LM",
      r: spec.peft.r,
      alpha: spec.peft.alpha,
      dropout: spec.peft.dropout,
      target: spec.peft.targetModules,
      feedforward: null,
      numVirtualTokens: spec.peft.numVirtualTokens,
      modulesToSave: p.task === "seq-cls" ? ["classifier"] : [],
    },
    modelInfo(p.model),
  );
  for (const [k, v] of Object.entries(spec.peft.adapterConfig)) {
    if (k === "peft_type") throw new ConfigError("fine-tuning job", "peft.adapter_config", "cannot set peft_type; choose the method with peft.method");
    raw[k] = v;
  }
  return raw;
}

/** The outcome a finished job recorded (its adapter folder is complete), or null. */
export function finishedOutcome(ctx: Pick<FineTuneContext, "stateDir" | "adapterOut">): FineTuneOutcome | null {
  const f = join(ctx.stateDir, OUTCOME_FILE);
  if (!existsSync(f) || !existsSync(join(ctx.adapterOut, RUN_FILES.adapterConfig))) return null;
  return readJsonObject(f) as unknown as FineTuneOutcome;
}

/**
 * Runs (or resumes) one job: tokenises its files, trains with a checkpoint every
 * `spec.checkpointEvery` steps under `ctx.stateDir`, writes the adapter folder atomically to
 * `ctx.adapterOut`, and returns what the job produced. A job whose adapter is already written
 * returns its recorded outcome at once. Rejects with the run's error, or `AbortError` (name
 * `"AbortError"`) when `ctx.signal` fires.
 */
export async function runFineTuneJob(spec: FineTuneJobSpec, ctx: FineTuneContext): Promise<FineTuneOutcome> {
  const done = finishedOutcome(ctx);
  if (done) return done;
  const event = (message: string, data?: Record<string, unknown>, type: "message" | "metrics" = "message") =>
    ctx.onEvent({ level: "info", message, ...(data ? { data } : {}), type, created_at: now() });
  mkdirSync(ctx.stateDir, { recursive: true });
  const p = await prepare(spec, ctx);
  const pm = PeftModel.create(p.model, adapterConfigOf(spec, p), "default", { seed: spec.seed });
  if (ctx.session) pm.sessionOptions = ctx.session;
  const [trainable, all] = pm.getNbTrainableParameters();
  const checkpointDir = join(ctx.stateDir, RUN_FILES.checkpoint);
  const trainer = new Trainer(
    pm,
    {
      task: p.task,
      epochs: spec.nEpochs,
      batchSize: spec.batchSize,
      lr: spec.learningRate,
      weightDecay: TRAIN_DEFAULTS.weightDecay,
      schedule: TRAIN_DEFAULTS.schedule,
      warmupRatio: TRAIN_DEFAULTS.warmupRatio,
      maxGradNorm: TRAIN_DEFAULTS.maxGradNorm,
      seed: spec.seed,
      dropout: true,
      padId: p.padId,
      maxLength: p.maxLength,
      session: ctx.session ?? {},
      checkpointDir,
      checkpointEvery: spec.checkpointEvery,
      ...(ctx.gate ? { gate: ctx.gate } : {}),
    },
    p.train,
    p.validation,
  );
  const resumedAt = existsSync(join(checkpointDir, "checkpoint.json")) ? Number((readJsonObject(join(checkpointDir, "checkpoint.json")).step as number) ?? 0) : 0;
  event(
    resumedAt > 0
      ? `Fine-tuning job resumed at step ${resumedAt}/${trainer.totalSteps} from its last checkpoint`
      : `Fine-tuning job started: ${p.train.length} training examples, ${trainer.totalSteps} steps, ${spec.peft.method} with ${trainable.toLocaleString("en-US")} trainable of ${all.toLocaleString("en-US")} parameters`,
    { total_steps: trainer.totalSteps, resumed_at_step: resumedAt, trainable_params: trainable, all_params: all },
  );
  ctx.onStart?.({ totalSteps: trainer.totalSteps, resumedAt });
  let lastLoss: number | null = null;
  let validLoss: number | null = null;
  try {
    const result = await trainer.fit({
      onStep: async (info) => {
        lastLoss = info.loss;
        event(`Step ${info.step}/${info.totalSteps}: training loss=${info.loss.toFixed(4)}`, { step: info.step, total_steps: info.totalSteps, train_loss: info.loss, learning_rate: info.lr, epoch: info.epoch }, "metrics");
        // let the server answer requests between optimizer steps
        await new Promise((r) => setImmediate(r));
        if (ctx.signal?.aborted) throw new Cancelled();
      },
      onEval: (e) => {
        validLoss = e.loss;
        event(`Step ${e.step}: validation loss=${e.loss.toFixed(4)}`, { step: e.step, valid_loss: e.loss, ...(e.accuracy !== undefined ? { valid_accuracy: e.accuracy } : {}) }, "metrics");
      },
      onCheckpoint: (c) => {
        event(`Checkpoint created at step ${c.step}`, { step: c.step });
        ctx.onCheckpoint?.({ step: c.step, metrics: { step: c.step, train_loss: c.loss, epoch: c.epoch } });
      },
    });
    const out = ctx.adapterOut;
    mkdirSync(dirname(out), { recursive: true });
    const tmp = tempPathFor(out);
    rmSync(tmp, { recursive: true, force: true });
    pm.savePretrained(tmp);
    writeJsonAtomic(join(tmp, RUN_FILES.config), {
      command: "fine-tuning job",
      options: { job: spec.id, model: spec.model, base: spec.base, method: spec.peft.method, epochs: spec.nEpochs, batchSize: spec.batchSize, lr: spec.learningRate, seed: spec.seed },
      model: { id: spec.model, modelType: p.model.config.modelType, task: p.task },
      dataset: { name: spec.trainingFile, ...(p.labels ? { labelNames: p.labels, numLabels: p.labels.length } : {}) },
      created: new Date().toISOString(),
    });
    if (existsSync(out)) rmSync(out, { recursive: true, force: true }); // a half-renamed earlier attempt: its outcome was never recorded
    renameSync(tmp, out);
    const perEpoch = p.train.reduce((s, e) => s + trainedTokens(e), 0);
    const outcome: FineTuneOutcome = {
      fineTunedModel: spec.fineTunedModel,
      adapterDir: out,
      trainedTokens: Math.round(perEpoch * (result.steps / trainer.stepsPerEpoch)),
      steps: result.steps,
      trainLoss: result.history.steps.at(-1)?.loss ?? lastLoss,
      validLoss: result.history.evals.at(-1)?.loss ?? validLoss,
      resultFiles: [RUN_FILES.adapterConfig, RUN_FILES.adapterWeights, RUN_FILES.config],
    };
    writeJsonAtomic(join(ctx.stateDir, OUTCOME_FILE), outcome);
    event(`New fine-tuned model created: ${spec.fineTunedModel}`, { fine_tuned_model: spec.fineTunedModel });
    return outcome;
  } catch (e) {
    await trainer.release();
    if (e instanceof Cancelled) {
      const err = new Error(`fine-tuning job ${spec.id} was cancelled`);
      err.name = "AbortError";
      throw err;
    }
    throw e;
  } finally {
    await pm.dispose();
  }
}
