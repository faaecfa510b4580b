/**
 * One `peft atlas` run: the data split as `peft train` splits it (seeded, stratified, so the test
 * split stays held out), the model with the target head of `--head`, task vectors from run
 * folders, `AtlasComposer.fit` on the train split (all of it, or K shots per class; labelled for
 * cross-entropy, texts only for entropy), evaluation at λ = 0 and after, and the output folder:
 * the coefficient file, metrics.json, config.json and, on request, the composed model.
 */
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { ATLAS_DEFAULTS } from "../defaults.js";
import { AtlasComposer, type AtlasEvalResult, type AtlasObjective, type AtlasTaskData } from "../../compose/atlas/composer.js";
import { atlasCoefficientFile, saveAtlasCoefficients, saveComposedModel } from "../../compose/atlas/files.js";
import { type AtlasMode, coefficientIndex, keptSize } from "../../compose/atlas/layout.js";
import { ConfigError, UnsupportedOptionError } from "../../errors.js";
import { overlaySource } from "../../models/context.js";
import type { LoadedModel } from "../../models/load.js";
import type { TokenizedExample } from "../../train/trainer.js";
import { type SplitFractions, loadRunData, tokenizeSplits } from "../data.js";
import { openModelSource } from "../model-source.js";
import { type RunReporter, silentReporter } from "../reporter.js";
import { RUN_FILES, checkRunDir, claimRunDir, runEnvironment, writeJsonAtomic } from "../run-dir.js";
import { kShotSubset } from "./shots.js";
import { type RunSource, loadRunHead, loadRunTaskVectors, openRunSource } from "./sources.js";

const COMMAND = "peft atlas";

/** Files of an atlas run folder (metrics.json and config.json are named as in `peft train`). */
export const ATLAS_RUN_FILES = {
  coefficients: "atlas_coefficients.json",
  metrics: RUN_FILES.metrics,
  config: RUN_FILES.config,
  model: "model",
} as const;

export interface AtlasRunOptions {
  readonly model: string;
  /** Run folders (or PEFT LoRA adapter folders), one task vector each. */
  readonly taskVectors: readonly string[];
  /** Run whose trained classifier is the target's head (default: the first task vector run). */
  readonly head: string | null;
  readonly data: string;
  readonly out: string;
  readonly mode: AtlasMode;
  readonly objective: AtlasObjective;
  /** Examples per class from the train split; null: the whole train split. */
  readonly shots: number | null;
  readonly epochs: number;
  /** null: 0.1 for cross-entropy, 0.02 for entropy (the experiment's values). */
  readonly lr: number | null;
  readonly weightDecay: number;
  readonly batchSize: number;
  readonly seed: number;
  readonly threads: number | null;
  readonly split: SplitFractions;
  readonly maxExamples: number | null;
  readonly maxLength: number | null;
  /** Keep the λ of the epoch with the best validation accuracy (the paper's protocol). */
  readonly keepBest: boolean;
  readonly saveModel: boolean;
  readonly overwrite: boolean;
}

export { ATLAS_DEFAULTS };

/** The learning rate used when `--lr` is not given. */
export function defaultAtlasLr(objective: AtlasObjective): number {
  return objective === "entropy" ? 0.02 : 0.1;
}

export interface AtlasSplitMetrics {
  readonly examples: number;
  readonly accuracy: number;
  readonly loss: number;
  readonly entropy: number;
}

export interface AtlasCoefficientSummary {
  readonly name: string;
  readonly source: string;
  readonly blocks: number;
  readonly mean: number;
  readonly min: number;
  readonly max: number;
}

/** What metrics.json holds. */
export interface AtlasMetrics {
  readonly mode: AtlasMode;
  readonly objective: AtlasObjective;
  /** λ = 0: the base model with the target head. */
  readonly base: { readonly validation: AtlasSplitMetrics | null; readonly test: AtlasSplitMetrics | null };
  readonly fitted: { readonly validation: AtlasSplitMetrics | null; readonly test: AtlasSplitMetrics | null };
  readonly trainExamples: number;
  readonly steps: number;
  readonly bestEpoch: number | null;
  readonly coefficientCount: number;
  readonly taskVectorParams: number;
  readonly coefficients: readonly AtlasCoefficientSummary[];
  readonly fitSeconds: number;
  readonly seconds: number;
}

export interface AtlasRunResult {
  readonly out: string;
  readonly metrics: AtlasMetrics;
  readonly files: readonly string[];
}

function checkOptions(o: AtlasRunOptions): void {
  const bad = (opt: string, issue: string) => {
    throw new ConfigError(COMMAND, opt, issue);
  };
  if (o.taskVectors.length === 0) bad("--task-vectors", "needs at least one run folder");
  if (!(o.epochs > 0)) bad("--epochs", `must be positive, got ${o.epochs}`);
  if (o.lr !== null && !(o.lr > 0)) bad("--lr", `must be positive, got ${o.lr}`);
  if (!(o.weightDecay >= 0)) bad("--weight-decay", `must be ≥ 0, got ${o.weightDecay}`);
  if (!(Number.isInteger(o.batchSize) && o.batchSize >= 1)) bad("--batch-size", `must be a positive integer, got ${o.batchSize}`);
  if (o.shots !== null && !(Number.isInteger(o.shots) && o.shots >= 1)) bad("--shots", `must be a positive integer, got ${o.shots}`);
}

function splitMetrics(r: AtlasEvalResult, n: number): AtlasSplitMetrics {
  return { examples: n, accuracy: r.accuracy, loss: r.loss, entropy: r.entropy };
}

function summarise(c: AtlasComposer, sources: readonly RunSource[]): AtlasCoefficientSummary[] {
  const L = c.layout;
  return L.tasks.map((name, t) => {
    const vals: number[] = [];
    L.blocks.forEach((_, b) => {
      if (L.kept[t * L.blocks.length + b]) vals.push(c.coefficients[coefficientIndex(L, t, b)]!);
    });
    const mean = vals.reduce((s, x) => s + x, 0) / Math.max(1, vals.length);
    return { name, source: sources[t]!.dir, blocks: vals.length, mean, min: Math.min(...vals), max: Math.max(...vals) };
  });
}

/** Runs `peft atlas` and writes its folder. */
export async function runAtlas(opts: AtlasRunOptions, progress: RunReporter = silentReporter): Promise<AtlasRunResult> {
  const t0 = performance.now();
  checkOptions(opts);
  checkRunDir(opts.out, opts.overwrite ? "overwrite" : "new", COMMAND);
  const runs = opts.taskVectors.map((d) => openRunSource(d, "--task-vectors"));
  const headRun = opts.head === null ? runs[0]! : openRunSource(opts.head, "--head");

  const data = loadRunData({ data: opts.data, seed: opts.seed, fractions: opts.split, command: COMMAND, ...(opts.maxExamples !== null ? { maxExamples: opts.maxExamples } : {}) });
  const source = openModelSource(opts.model, { numLabels: data.dataset.numLabels, seed: opts.seed, command: COMMAND, ...(opts.maxLength !== null ? { maxLength: opts.maxLength } : {}) });
  if (source.task !== "seq-cls") throw new UnsupportedOptionError(COMMAND, "--model", source.model.config.modelType, "aTLAS here composes sequence classifiers (a causal language model has no classification head)");
  const head = loadRunHead(headRun, source.model, data.dataset.labelNames);
  const model: LoadedModel = { ...source.model, weights: overlaySource(source.model.weights, head) };
  const taskVectors = loadRunTaskVectors(runs, model);
  progress.note(`head: the classifier of ${headRun.dir} (${data.dataset.numLabels} labels), fixed`);
  progress.note(`task vectors: ${taskVectors.map((tv, i) => `${tv.name} (${runs[i]!.dir}, ${tv.blocks.size} blocks)`).join(", ")}`);

  const splits = tokenizeSplits(data, (t) => source.encode(t));
  let train: TokenizedExample[] = splits.train;
  if (opts.shots !== null) {
    const k = kShotSubset(splits.train, opts.shots, data.dataset.numLabels, opts.seed);
    train = k.examples;
    if (k.perClass.some((n) => n < opts.shots!)) progress.note(`shots: some classes have fewer than ${opts.shots} training examples (${k.perClass.join("/")} per class)`);
  }
  if (train.length === 0) throw new ConfigError(COMMAND, "--shots", "no training examples were selected");
  // entropy minimisation sees the texts only
  const examples: TokenizedExample[] = opts.objective === "entropy" ? train.map((e) => ({ ids: e.ids })) : train;
  progress.note(
    `data: ${train.length} training examples (${opts.shots !== null ? `${opts.shots} per class` : "the train split"}${opts.objective === "entropy" ? ", unlabelled" : ""}) / ${splits.validation.length} validation / ${splits.test.length} test (${opts.data}, seed ${opts.seed})`,
  );

  const composer = AtlasComposer.create(model, taskVectors, {
    mode: opts.mode,
    padId: source.padId,
    ...(opts.maxLength !== null ? { maxLength: opts.maxLength } : {}),
    session: opts.threads !== null ? { threads: opts.threads } : {},
  });
  const evalSplit = async (ex: readonly TokenizedExample[]): Promise<AtlasSplitMetrics | null> => (ex.length > 0 ? splitMetrics(await composer.evaluate(ex), ex.length) : null);
  const lr = opts.lr ?? defaultAtlasLr(opts.objective);
  let metrics: AtlasMetrics;
  try {
    const base = { validation: await evalSplit(splits.validation), test: await evalSplit(splits.test) };
    const task: AtlasTaskData = { name: "target", examples, objective: opts.objective };
    const batchSize = Math.min(opts.batchSize, examples.length);
    const stepsPerEpoch = Math.ceil(examples.length / batchSize);
    if (opts.keepBest && splits.validation.length === 0) throw new ConfigError(COMMAND, "--keep-best", "the validation split is empty; give it a fraction with --split");
    let started = false;
    let last = performance.now();
    const fit = await composer.fit([task], {
      epochs: opts.epochs,
      batchSize,
      lr,
      weightDecay: opts.weightDecay,
      seed: opts.seed,
      ...(opts.keepBest ? { validation: [{ name: "target", examples: splits.validation }] } : {}),
      onStep: (s) => {
        if (!started) {
          progress.start(s.totalSteps, 0);
          started = true;
        }
        const now = performance.now();
        const secs = (now - last) / 1000;
        last = now;
        progress.step({ step: s.step, totalSteps: s.totalSteps, epoch: s.step / stepsPerEpoch, loss: s.loss, examplesPerSecond: secs > 0 ? batchSize / secs : 0 });
      },
      onEval: (e) => progress.note(`validation after epoch ${e.epoch}: accuracy ${e.accuracy.toFixed(4)}`),
    });
    progress.stop();
    const fitted = { validation: await evalSplit(splits.validation), test: await evalSplit(splits.test) };
    const size = keptSize(composer.layout, taskVectors);
    metrics = {
      mode: opts.mode,
      objective: opts.objective,
      base,
      fitted,
      trainExamples: train.length,
      steps: fit.steps,
      bestEpoch: fit.bestEpoch,
      coefficientCount: composer.coefficients.length,
      taskVectorParams: size.parameters,
      coefficients: summarise(composer, runs),
      fitSeconds: fit.seconds,
      seconds: 0,
    };
  } catch (e) {
    progress.stop();
    await composer.release();
    throw e;
  }
  await composer.release();

  claimRunDir(opts.out, opts.overwrite ? "overwrite" : "new");
  const files: string[] = [];
  writeJsonAtomic(join(opts.out, ATLAS_RUN_FILES.config), {
    command: COMMAND,
    options: { ...opts, lr },
    model: { id: source.id, modelType: source.model.config.modelType, task: source.task },
    dataset: { name: data.dataset.name, numLabels: data.dataset.numLabels, labelNames: data.dataset.labelNames, totalExamples: data.totalExamples, usedExamples: data.examples.length },
    split: data.split.info,
    head: headRun.dir,
    environment: runEnvironment(),
    created: new Date().toISOString(),
  });
  files.push(ATLAS_RUN_FILES.config);
  const meta = { command: COMMAND, head: headRun.dir, data: opts.data, seed: opts.seed, split: opts.split, maxExamples: opts.maxExamples, shots: opts.shots, objective: opts.objective };
  saveAtlasCoefficients(join(opts.out, ATLAS_RUN_FILES.coefficients), atlasCoefficientFile(composer.layout, composer.coefficients, taskVectors, { baseModel: source.id, metadata: meta }));
  files.push(ATLAS_RUN_FILES.coefficients);
  const modelDir = join(opts.out, ATLAS_RUN_FILES.model);
  if (opts.saveModel) {
    saveComposedModel(modelDir, model, composer.composedWeights(), { atlas_coefficients: ATLAS_RUN_FILES.coefficients });
    files.push(ATLAS_RUN_FILES.model);
  }
  const final: AtlasMetrics = { ...metrics, seconds: (performance.now() - t0) / 1000 };
  writeJsonAtomic(join(opts.out, ATLAS_RUN_FILES.metrics), final);
  files.push(ATLAS_RUN_FILES.metrics);
  // a replaced run's composed model would no longer match its coefficients
  if (!opts.saveModel && opts.overwrite && existsSync(modelDir)) rmSync(modelDir, { recursive: true, force: true });
  return { out: opts.out, metrics: final, files };
}
