/**
 * One training run (`peft train`, and the LoRA half of `peft demo`): data → model → adapter →
 * `Trainer.fit` with progress → final validation/test evaluation → the run folder (PEFT adapter,
 * metrics.json, config.json, history.json, curves.svg/png) and a resumable checkpoint.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { CheckpointError, ConfigError, DatasetError } from "../errors.js";
import { TRAIN_DEFAULTS } from "./defaults.js";
import type { SplitInfo } from "../data/split.js";
import { PeftModel } from "../peft/peft-model.js";
import { modelInfo } from "../peft/model-info.js";
import type { TargetSpec } from "../tuners/common/target.js";
import { trainMethods, tunerForMethod } from "../tuners/registry.js";
import { type EvalResult, type StepInfo, Trainer, type TrainerConfig } from "../train/trainer.js";
import { trainingFlops } from "../graph/flops.js";
import { examplesPerStep, modelMatmulTerms } from "../train/flops.js";
import { writeFileAtomic } from "../io/atomic.js";
import { hasCheckpoint } from "../train/checkpoint.js";
import { type SplitFractions, loadRunData, tokenizeSplits } from "./data.js";
import { type RunHistory, curveData, mergeHistory, readHistory } from "./history.js";
import { type ModelSource, openModelSource } from "./model-source.js";
import { renderCurves } from "./plot.js";
import { type RunReporter, silentReporter } from "./reporter.js";
import { LayerImportanceRecorder } from "../train/importance.js";
import { RUN_FILES, type RunDirMode, checkRunDir, claimRunDir, runEnvironment, writeJsonAtomic } from "./run-dir.js";

/** (IA)³'s default targets per architecture (they live with the tuner; re-exported where `peft train` used to define them). */
export { IA3_DEFAULT_TARGETS } from "../tuners/ia3/index.js";

/** A tuner's `method` name (`lora`, `ia3`, `prompt-tuning`, … — see `trainMethods()`). */
export type TrainMethod = string;
export type ScheduleName = "linear" | "cosine" | "constant";

/** Every option of a training run (the `peft train` flags, camelCased). */
export interface TrainRunOptions {
  readonly model: string;
  readonly data: string;
  readonly out: string;
  readonly method: TrainMethod;
  readonly r: number;
  readonly alpha: number;
  readonly dropout: number;
  /** null: the model's default targets (PEFT's mapping). */
  readonly target: TargetSpec | null;
  /** (IA)³ feed-forward modules (scaled on their input); null: PEFT's defaults. */
  readonly feedforward: TargetSpec | null;
  /** Virtual tokens of prompt-learning methods (default 20). */
  readonly numVirtualTokens?: number;
  /** adapter_config.json fields set on top of the method's config (PEFT's names). */
  readonly adapterConfig?: Readonly<Record<string, unknown>>;
  /** LoRA+: learning rate of low-rank B factors (and 1-D tensors) = lr × ratio; default 1 (off). */
  readonly loraplusLrRatio?: number;
  readonly epochs: number;
  readonly lr: number;
  readonly batchSize: number;
  readonly seed: number;
  readonly weightDecay: number;
  readonly warmupRatio: number;
  readonly schedule: ScheduleName;
  readonly gradAccum: number;
  /** 0: no clipping. */
  readonly maxGradNorm: number;
  /** Evaluate every N optimizer steps; null: at the end of each epoch. */
  readonly evalEvery: number | null;
  /** Stop after this many evaluations without improvement and keep the best; null: no early stopping. */
  readonly patience: number | null;
  readonly maxLength: number | null;
  readonly threads: number | null;
  readonly maxExamples: number | null;
  readonly maxSteps: number | null;
  readonly split: SplitFractions;
  readonly mode: RunDirMode;
  /** Render curves.svg / curves.png (default true). */
  readonly plot: boolean;
  /** Compute dtype (default float32); float16: mixed precision with dynamic loss scaling. */
  readonly dtype?: "float32" | "float16";
  /** Batch examples of similar length together (transformers' `group_by_length`); default false. */
  readonly groupByLength?: boolean;
}

export { TRAIN_DEFAULTS };

/** Options that must not change when a run is resumed (the checkpoint would not fit them). */
const RESUME_FIXED = [
  "model",
  "data",
  "method",
  "r",
  "alpha",
  "dropout",
  "target",
  "feedforward",
  "numVirtualTokens",
  "adapterConfig",
  "loraplusLrRatio",
  "lr",
  "batchSize",
  "seed",
  "weightDecay",
  "warmupRatio",
  "schedule",
  "gradAccum",
  "maxGradNorm",
  "maxLength",
  "maxExamples",
  "split",
] as const satisfies readonly (keyof TrainRunOptions)[];

export interface SplitMetrics {
  readonly examples: number;
  readonly loss: number;
  readonly accuracy?: number;
  readonly f1?: number;
  readonly perplexity?: number;
}

/** What metrics.json holds. */
export interface TrainMetrics {
  readonly task: "seq-cls" | "causal-lm";
  readonly validation: SplitMetrics | null;
  readonly test: SplitMetrics | null;
  /** The best evaluation (kept when early stopping is on). */
  readonly best: (EvalResult & { step: number }) | null;
  readonly steps: number;
  readonly epochs: number;
  readonly stoppedEarly: boolean;
  /** Wall time of the optimizer steps alone (no evaluation, no setup). */
  readonly trainSeconds: number;
  /** Wall time of `fit` (steps, evaluations, checkpoints). */
  readonly fitSeconds: number;
  /** Wall time of the whole run (loading, tokenising, training, evaluating, writing). */
  readonly seconds: number;
  /** Training sentences per second of step time. */
  readonly sentencesPerSecond: number;
  /** Padded tokens per second of step time. */
  readonly tokensPerSecond: number;
  readonly trainableParams: number;
  readonly allParams: number;
  readonly trainableFraction: number;
  /** Matrix-product FLOPs of the steps (2× base forward + 3× trainable forward, see flops.ts) and their rate. */
  readonly matmulFlops: number;
  readonly achievedGflops: number;
}

export interface TrainRunResult {
  readonly out: string;
  /** The trained model (its `default` adapter holds the saved values). */
  readonly model: PeftModel;
  readonly metrics: TrainMetrics;
  readonly splitInfo: SplitInfo;
  readonly files: readonly string[];
}

function rawSpec(spec: TargetSpec): string | string[] {
  return spec.kind === "allLinear" ? "all-linear" : spec.kind === "regex" ? spec.pattern : [...spec.names];
}

/**
 * The PEFT config object of the adapter a run trains: the method's own config for the options
 * (`TunerDef.trainConfig`, missing targets filled in as PEFT does for the model type), then the
 * `--adapter-config` fields.
 */
export function adapterConfigFor(opts: TrainRunOptions, source: ModelSource, totalSteps?: number): Record<string, unknown> {
  const tuner = tunerForMethod(opts.method);
  const info = modelInfo(source.model);
  const raw = tuner.trainConfig(
    {
      taskType: source.task === "seq-cls" ? "SEQ_CLS" : "CAUSAL_LM",
      r: opts.r,
      alpha: opts.alpha,
      dropout: opts.dropout,
      target: opts.target ? rawSpec(opts.target) : null,
      feedforward: opts.feedforward ? rawSpec(opts.feedforward) : null,
      numVirtualTokens: opts.numVirtualTokens ?? 20,
      modulesToSave: source.task === "seq-cls" ? ["classifier"] : [],
      ...(totalSteps !== undefined ? { totalSteps } : {}),
    },
    info,
  );
  for (const [k, v] of Object.entries(opts.adapterConfig ?? {})) {
    if (k === "peft_type") throw new ConfigError("peft train", "--adapter-config", "cannot set peft_type; choose the method with --method");
    raw[k] = v;
  }
  return raw;
}

function checkOptions(o: TrainRunOptions): void {
  const bad = (opt: string, issue: string) => {
    throw new ConfigError("peft train", opt, issue);
  };
  if (!trainMethods().includes(o.method)) bad("--method", `unknown method '${o.method}'; peft-ts trains: ${trainMethods().join(", ")}`);
  if (!Number.isInteger(o.r) || o.r < 1) bad("--r", `must be a positive integer, got ${o.r}`);
  if (!(o.dropout >= 0 && o.dropout < 1)) bad("--dropout", `must be in [0, 1), got ${o.dropout}`);
  if (!(o.lr > 0)) bad("--lr", `must be positive, got ${o.lr}`);
  if (!(o.epochs > 0)) bad("--epochs", `must be positive, got ${o.epochs}`);
  if (!(o.warmupRatio >= 0 && o.warmupRatio < 1)) bad("--warmup-ratio", `must be in [0, 1), got ${o.warmupRatio}`);
  if (!(o.weightDecay >= 0)) bad("--weight-decay", `must be ≥ 0, got ${o.weightDecay}`);
}

/** Stable JSON of an option value for comparisons. */
function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

function checkResume(saved: Record<string, unknown>, opts: TrainRunOptions, out: string): void {
  const prev = saved.options as Record<string, unknown> | undefined;
  if (!prev || typeof prev !== "object") throw new ConfigError(join(out, RUN_FILES.config), "options", "missing; this folder was not written by peft train and cannot be resumed");
  const diff = RESUME_FIXED.filter((k) => !same(prev[k], opts[k]));
  if (diff.length > 0) {
    const list = diff.map((k) => `${k}: ${JSON.stringify(prev[k] ?? null)} → ${JSON.stringify(opts[k] ?? null)}`).join("; ");
    throw new ConfigError("peft train", "--resume", `the options differ from the run in ${out} (${list}); use the same options, or start a new run with another --out`);
  }
}

function splitMetrics(r: EvalResult, n: number): SplitMetrics {
  return { examples: n, loss: r.loss, ...(r.accuracy !== undefined ? { accuracy: r.accuracy, f1: r.f1 } : {}), ...(r.perplexity !== undefined ? { perplexity: r.perplexity } : {}) };
}

/** Runs one training as `peft train` does and writes the run folder; progress, evaluations and notes go to `progress`. */
export async function runTraining(opts: TrainRunOptions, progress: RunReporter = silentReporter): Promise<TrainRunResult> {
  const t0 = performance.now();
  checkOptions(opts);
  const saved = checkRunDir(opts.out, opts.mode);
  if (saved) {
    checkResume(saved, opts, opts.out);
    // never restart from step 0 under --resume: that would silently replace the run's adapter
    const ckDir = join(opts.out, RUN_FILES.checkpoint);
    if (!hasCheckpoint(ckDir)) {
      const finished = [RUN_FILES.metrics, RUN_FILES.adapterWeights].filter((f) => existsSync(join(opts.out, f)));
      if (finished.length > 0) {
        throw new CheckpointError(ckDir, `the run in ${opts.out} has finished (${finished.join(", ")}) and there is no checkpoint to resume from (checkpoint.json is missing); nothing was changed. Drop --resume and pass --overwrite to train again from step 0, or choose another --out`);
      }
      // stopped before its first checkpoint: nothing trained is lost by starting again, and the user is told
      progress.note(`resume: ${opts.out} has no checkpoint yet (the run stopped before its first one); training starts from step 0`);
    }
  }
  const data = loadRunData({ data: opts.data, seed: opts.seed, fractions: opts.split, ...(opts.maxExamples !== null ? { maxExamples: opts.maxExamples } : {}) });
  if (saved) {
    const prevHash = (saved.split as { hash?: unknown } | undefined)?.hash;
    if (prevHash !== data.split.info.hash) throw new ConfigError("peft train", "--resume", `the data split differs from the saved run's (hash ${String(prevHash)} vs ${data.split.info.hash}): the dataset changed`);
  }
  const source = openModelSource(opts.model, { numLabels: data.dataset.numLabels, seed: opts.seed, ...(opts.maxLength !== null ? { maxLength: opts.maxLength } : {}) });
  if (source.task === "seq-cls" && data.dataset.numLabels < 2) {
    // transformers would make a 1-label head a regression; a classifier of one class learns nothing and scores 1.0
    throw new DatasetError(
      data.dataset.name,
      null,
      `every example has the label '${data.dataset.labelNames[0] ?? ""}': a classifier needs at least two classes; add examples of another class`,
    );
  }
  for (const n of source.notes) progress.note(n);
  const splits = tokenizeSplits(data, (t) => source.encode(t));
  const perEpoch = Math.ceil(splits.train.length / (opts.batchSize * opts.gradAccum));
  const fullSteps = Math.ceil(perEpoch * opts.epochs);
  const adapterConfig = adapterConfigFor(opts, source, opts.maxSteps ?? fullSteps);
  const pm = PeftModel.create(source.model, adapterConfig, "default", { seed: opts.seed });
  const [trainable, all] = pm.getNbTrainableParameters();
  progress.note(`trainable params: ${trainable.toLocaleString("en-US")} || all params: ${all.toLocaleString("en-US")} || trainable%: ${((100 * trainable) / all).toFixed(4)}`);
  progress.note(`data: ${data.split.info.counts.train} train / ${data.split.info.counts.validation} validation / ${data.split.info.counts.test} test examples (${opts.data}, seed ${opts.seed})`);

  const runConfig = {
    command: "peft train",
    options: opts,
    model: { id: source.id, modelType: source.model.config.modelType, task: source.task },
    dataset: { name: data.dataset.name, numLabels: data.dataset.numLabels, labelNames: data.dataset.labelNames, totalExamples: data.totalExamples, usedExamples: data.examples.length },
    split: data.split.info,
    adapterConfig,
    trainableParams: trainable,
    allParams: all,
    environment: runEnvironment(),
    created: new Date().toISOString(),
  };
  claimRunDir(opts.out, opts.mode);
  if (!saved) writeJsonAtomic(join(opts.out, RUN_FILES.config), runConfig);

  const trainer = new Trainer(pm, trainerConfig(opts, source, join(opts.out, RUN_FILES.checkpoint), splits.train.length), splits.train, splits.validation);
  const terms = modelMatmulTerms(pm);
  const perStep = examplesPerStep(splits.train.length, opts.batchSize, opts.gradAccum, trainer.totalSteps);
  const history: RunHistory = saved ? readHistory(join(opts.out, RUN_FILES.history)) : { steps: [], evals: [] };
  let trainSeconds = 0;
  let trainExamples = 0;
  let trainTokens = 0;
  let flops = 0;
  let started = false;
  const onStep = (info: StepInfo) => {
    if (!started) {
      progress.start(info.totalSteps, info.step - 1);
      started = true;
    }
    const ex = perStep[info.step - 1] ?? opts.batchSize * opts.gradAccum;
    const secs = info.examplesPerSecond > 0 ? ex / info.examplesPerSecond : 0;
    const seq = info.examplesPerSecond > 0 ? info.tokensPerSecond / info.examplesPerSecond : 0;
    trainSeconds += secs;
    trainExamples += ex;
    trainTokens += ex * seq;
    flops += trainingFlops(terms, ex, seq);
    mergeHistory(history, { steps: [{ step: info.step, epoch: info.epoch, loss: info.loss, lr: info.lr }], evals: [] });
    progress.step(info);
  };
  const onEval = (e: EvalResult & { step: number; epoch: number }) => {
    mergeHistory(history, { steps: [], evals: [{ ...e }] });
    writeJsonAtomic(join(opts.out, RUN_FILES.history), history);
    progress.evaluation(e);
  };
  const importance = new LayerImportanceRecorder(source.model.def.layersPattern);
  let result;
  try {
    result = await trainer.fit({ onStep, onEval, onGradients: importance.observe });
  } finally {
    progress.stop();
  }
  const validation = splits.validation.length > 0 ? splitMetrics(await trainer.evaluate(splits.validation), splits.validation.length) : null;
  const test = splits.test.length > 0 ? splitMetrics(await trainer.evaluate(splits.test), splits.test.length) : null;
  await trainer.release();

  pm.savePretrained(opts.out);
  writeJsonAtomic(join(opts.out, RUN_FILES.history), history);
  const files: string[] = [RUN_FILES.adapterConfig, RUN_FILES.adapterWeights, RUN_FILES.config, RUN_FILES.history];
  if (opts.plot) {
    const title = `${opts.method.toUpperCase()} on ${source.id} · ${data.dataset.name} · seed ${opts.seed}`;
    const { svg, png } = await renderCurves(curveData(history, source.task, title));
    writeFileAtomic(join(opts.out, RUN_FILES.curvesSvg), svg);
    writeFileAtomic(join(opts.out, RUN_FILES.curvesPng), png);
    files.push(RUN_FILES.curvesSvg, RUN_FILES.curvesPng);
  }
  const metrics: TrainMetrics = {
    task: source.task,
    validation,
    test,
    best: result.best,
    steps: result.steps,
    epochs: result.steps / trainer.stepsPerEpoch,
    stoppedEarly: result.stoppedEarly,
    trainSeconds,
    fitSeconds: result.seconds,
    seconds: (performance.now() - t0) / 1000,
    sentencesPerSecond: trainSeconds > 0 ? trainExamples / trainSeconds : 0,
    tokensPerSecond: trainSeconds > 0 ? trainTokens / trainSeconds : 0,
    trainableParams: trainable,
    allParams: all,
    trainableFraction: trainable / all,
    matmulFlops: flops,
    achievedGflops: trainSeconds > 0 ? flops / trainSeconds / 1e9 : 0,
  };
  writeJsonAtomic(join(opts.out, RUN_FILES.metrics), metrics);
  files.push(RUN_FILES.metrics);
  const imp = importance.result();
  if (imp.steps > 0) {
    // a resumed run scores the steps it ran itself
    writeJsonAtomic(join(opts.out, RUN_FILES.importance), { ...imp, resumed: saved !== null });
    files.push(RUN_FILES.importance);
  }
  return { out: opts.out, model: pm, metrics, splitInfo: data.split.info, files };
}

function trainerConfig(opts: TrainRunOptions, source: ModelSource, checkpointDir: string, nTrain: number): TrainerConfig {
  const stepsPerEpoch = Math.ceil(nTrain / (opts.batchSize * opts.gradAccum));
  return {
    task: source.task,
    epochs: opts.epochs,
    batchSize: opts.batchSize,
    lr: opts.lr,
    weightDecay: opts.weightDecay,
    schedule: opts.schedule,
    warmupRatio: opts.warmupRatio,
    gradientAccumulation: opts.gradAccum,
    ...(opts.maxGradNorm > 0 ? { maxGradNorm: opts.maxGradNorm } : {}),
    ...(opts.evalEvery !== null ? { evalEvery: opts.evalEvery } : {}),
    ...(opts.patience !== null ? { earlyStopping: { patience: opts.patience } } : {}),
    ...(opts.maxSteps !== null ? { maxSteps: opts.maxSteps } : {}),
    ...(opts.dtype === "float16" ? { dtype: opts.dtype } : {}),
    ...(opts.groupByLength ? { groupByLength: true } : {}),
    ...(opts.loraplusLrRatio !== undefined && opts.loraplusLrRatio !== 1 ? { loraplusLrRatio: opts.loraplusLrRatio } : {}),
    seed: opts.seed,
    dropout: true,
    padId: source.padId,
    ...(opts.maxLength !== null ? { maxLength: opts.maxLength } : {}),
    session: opts.threads !== null ? { threads: opts.threads } : {},
    checkpointDir,
    checkpointEvery: opts.evalEvery ?? stepsPerEpoch,
  };
}
