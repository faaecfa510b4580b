/**
 * `peft intrinsic-dim` as a library: the intrinsic dimension of a task for a model (Li et al.
 * 2018). The parameters θ (every parameter the model's graph reads except embedding tables, or
 * those matching `params`) are trained in random subspaces θ = θ₀ + P·d for each d of a sweep,
 * and once in full (P = I, d = D: ordinary training of the same parameters, the reference); d90 is
 * the smallest d whose validation accuracy reaches `threshold` (0.9) × the full training's.
 *
 * Every configuration trains from the same θ₀ (the model with its seeded new head) on the same
 * seeded split and batch order, with AdamW (weight decay 0) at a constant learning rate for
 * `epochs`; accuracy is measured on the validation and test splits after training.
 *
 * Writes `config.json`, `intrinsic_dim.json` (rewritten atomically after every configuration, so a
 * long sweep shows its progress) and `intrinsic_dim.svg` / `.png` (validation accuracy vs d, log
 * axis, with the full training's accuracy and the threshold as rules).
 */
import { join } from "node:path";
import { ConfigError, UnsupportedOptionError } from "../../errors.js";
import { writeFileAtomic } from "../../io/atomic.js";
import type { TokenizedExample } from "../../train/batch.js";
import { type SplitFractions, loadRunData, tokenizeSplits } from "../../runs/data.js";
import { openModelSource } from "../../runs/model-source.js";
import { renderVegaLite } from "../../runs/plot.js";
import { type RunReporter, silentReporter } from "../../runs/reporter.js";
import { RUN_FILES, checkRunDir, claimRunDir, runEnvironment, writeJsonAtomic } from "../../runs/run-dir.js";
import { Rng } from "../../util/rng.js";
import { intrinsicDimension } from "./d90.js";
import { type ProjectionKind, chooseProjection } from "./projection.js";
import { type ClassifierProblem, SubspaceTrainer, classifierProblem, modelParameters } from "./subspace.js";

const COMMAND = "peft intrinsic-dim";

export const INTRINSIC_DIM_FILES = {
  config: RUN_FILES.config,
  results: "intrinsic_dim.json",
  svg: "intrinsic_dim.svg",
  png: "intrinsic_dim.png",
} as const;

export interface IntrinsicDimOptions {
  readonly model: string;
  readonly data: string;
  readonly out: string;
  /** Subspace dimensions to train (sorted and deduplicated). */
  readonly dims: readonly number[];
  readonly projection: ProjectionKind | "auto";
  /** Regular expressions selecting θ by parameter name; null: every parameter except embedding tables. */
  readonly params: readonly string[] | null;
  readonly epochs: number;
  readonly batchSize: number;
  /** Learning rate of the subspace coordinates d. */
  readonly lr: number;
  /** Learning rate of the full training (P = I). */
  readonly fullLr: number;
  /** Skip the full training and use this validation accuracy as the reference. */
  readonly fullAccuracy: number | null;
  readonly threshold: number;
  readonly seed: number;
  readonly threads: number | null;
  readonly split: SplitFractions;
  readonly maxExamples: number | null;
  readonly maxLength: number | null;
  readonly overwrite: boolean;
}

export { INTRINSIC_DIM_DEFAULTS } from "./defaults.js";

export interface SplitScore {
  readonly examples: number;
  readonly accuracy: number;
  readonly loss: number;
}

export interface IntrinsicDimPoint {
  readonly dim: number;
  readonly projection: ProjectionKind;
  readonly validation: SplitScore | null;
  readonly test: SplitScore | null;
  readonly steps: number;
  readonly finalTrainLoss: number;
  readonly seconds: number;
}

export interface IntrinsicDimResults {
  readonly model: string;
  readonly data: string;
  /** θ: D values in these blocks. */
  readonly parameters: { readonly count: number; readonly blocks: readonly string[] };
  readonly threshold: number;
  /** θ₀: the model before training (its new head). */
  readonly initial: { readonly validation: SplitScore | null; readonly test: SplitScore | null };
  /** The full training (P = I), or the given reference accuracy. */
  readonly full: IntrinsicDimPoint | { readonly given: true; readonly validationAccuracy: number } | null;
  readonly points: readonly IntrinsicDimPoint[];
  /** Smallest d with validation accuracy ≥ threshold × the full training's; null when none (yet). */
  readonly d90: number | null;
  readonly referenceAccuracy: number | null;
  readonly complete: boolean;
  readonly seconds: number;
}

export interface IntrinsicDimResult {
  readonly out: string;
  readonly results: IntrinsicDimResults;
  readonly files: readonly string[];
}

/** θ's blocks: the parameters matching any of `patterns`, or (null) every parameter whose name has no `embeddings`. */
export function selectParameters(all: readonly { name: string }[], patterns: readonly string[] | null): string[] {
  if (patterns === null) return all.map((b) => b.name).filter((n) => !/embeddings/.test(n));
  const res = patterns.map((p) => {
    try {
      return new RegExp(p);
    } catch (e) {
      throw new ConfigError(COMMAND, "--params", `'${p}' is not a regular expression: ${(e as Error).message}`);
    }
  });
  const out = all.map((b) => b.name).filter((n) => res.some((r) => r.test(n)));
  if (out.length === 0) throw new ConfigError(COMMAND, "--params", `no parameter matches ${patterns.join(", ")} (the graph reads ${all.slice(0, 4).map((b) => b.name).join(", ")}, …)`);
  return out;
}

function checkOptions(o: IntrinsicDimOptions): void {
  const bad = (opt: string, issue: string) => {
    throw new ConfigError(COMMAND, opt, issue);
  };
  if (o.dims.length === 0) bad("--dims", "needs at least one dimension");
  for (const d of o.dims) if (!(Number.isInteger(d) && d >= 1)) bad("--dims", `dimensions are positive integers, got ${d}`);
  if (!(o.epochs > 0)) bad("--epochs", `must be positive, got ${o.epochs}`);
  if (!(o.lr > 0)) bad("--lr", `must be positive, got ${o.lr}`);
  if (!(o.fullLr > 0)) bad("--full-lr", `must be positive, got ${o.fullLr}`);
  if (!(o.threshold > 0 && o.threshold <= 1)) bad("--threshold", `must be in (0, 1], got ${o.threshold}`);
  if (!(Number.isInteger(o.batchSize) && o.batchSize >= 1)) bad("--batch-size", `must be a positive integer, got ${o.batchSize}`);
  if (o.fullAccuracy !== null && !(o.fullAccuracy > 0 && o.fullAccuracy <= 1)) bad("--full-accuracy", `must be in (0, 1], got ${o.fullAccuracy}`);
}

/** The chart: validation accuracy vs d (log), the full training's accuracy and the threshold as rules. */
export function intrinsicDimSpec(r: IntrinsicDimResults) {
  const pts = r.points.filter((p) => p.validation).map((p) => ({ dim: p.dim, accuracy: p.validation!.accuracy, projection: p.projection }));
  const rules: { y: number; label: string }[] = [];
  if (r.referenceAccuracy !== null) {
    rules.push({ y: r.referenceAccuracy, label: `full training (D = ${r.parameters.count.toLocaleString("en-US")})` });
    rules.push({ y: r.threshold * r.referenceAccuracy, label: `${Math.round(r.threshold * 100)} % of full` });
  }
  if (r.initial.validation) rules.push({ y: r.initial.validation.accuracy, label: "θ₀ (untrained)" });
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: `intrinsic dimension: ${r.model} on ${r.data}${r.d90 !== null ? ` — d${Math.round(r.threshold * 100)} = ${r.d90}` : ""}`,
    width: 560,
    height: 300,
    layer: [
      {
        data: { values: pts },
        mark: { type: "line", point: { filled: true, size: 60 } },
        encoding: {
          x: { field: "dim", type: "quantitative", title: "subspace dimension d", scale: { type: "log" } },
          y: { field: "accuracy", type: "quantitative", title: "validation accuracy", scale: { zero: false } },
          tooltip: [{ field: "dim" }, { field: "accuracy" }, { field: "projection" }],
        },
      },
      {
        data: { values: rules },
        mark: { type: "rule", strokeDash: [5, 4] },
        encoding: {
          y: { field: "y", type: "quantitative" },
          color: { field: "label", type: "nominal", title: null, scale: { domain: rules.map((r) => r.label), range: ["#f58518", "#e45756", "#9d9d9d"] }, legend: { labelLimit: 320 } },
        },
      },
    ],
  };
}

/** Runs the sweep (see the module comment) and writes the folder. */
export async function runIntrinsicDim(opts: IntrinsicDimOptions, progress: RunReporter = silentReporter): Promise<IntrinsicDimResult> {
  const t0 = performance.now();
  checkOptions(opts);
  const mode = opts.overwrite ? "overwrite" : "new";
  checkRunDir(opts.out, mode, COMMAND);
  const data = loadRunData({ data: opts.data, seed: opts.seed, fractions: opts.split, command: COMMAND, ...(opts.maxExamples !== null ? { maxExamples: opts.maxExamples } : {}) });
  const source = openModelSource(opts.model, { numLabels: data.dataset.numLabels, seed: opts.seed, command: COMMAND, ...(opts.maxLength !== null ? { maxLength: opts.maxLength } : {}) });
  if (source.task !== "seq-cls") throw new UnsupportedOptionError(COMMAND, "--model", source.model.config.modelType, "the intrinsic dimension is measured on sequence classifiers (validation accuracy)");
  for (const n of source.notes) progress.note(n);
  const params = selectParameters(modelParameters(source.model), opts.params);
  const problem: ClassifierProblem = classifierProblem(source.model, params, { padId: source.padId, ...(opts.maxLength !== null ? { maxLength: opts.maxLength } : {}) });
  const D = problem.blocks.reduce((s, b) => s + b.shape.reduce((a, x) => a * x, 1), 0);
  const dims = [...new Set(opts.dims)].sort((a, b) => a - b);
  const tooBig = dims.filter((d) => d > D);
  if (tooBig.length > 0) throw new ConfigError(COMMAND, "--dims", `${tooBig.join(", ")} exceed the ${D} parameters of θ`);
  const splits = tokenizeSplits(data, (t) => source.encode(t));
  const train = splits.train;
  progress.note(`θ: ${D.toLocaleString("en-US")} parameters in ${params.length} tensors; data: ${train.length} train / ${splits.validation.length} validation / ${splits.test.length} test (${opts.data}, seed ${opts.seed})`);
  if (splits.validation.length === 0) throw new ConfigError(COMMAND, "--split", "the validation split is empty; d90 is measured on it");

  const bs = Math.min(opts.batchSize, train.length);
  const perEpoch = Math.ceil(train.length / bs);
  const steps = Math.max(1, Math.round(perEpoch * opts.epochs));
  // one seeded batch order shared by every configuration
  const rng = new Rng(opts.seed).fork("intrinsic-dim-batches");
  const order: Int32Array[] = [];
  for (let e = 0; e < Math.ceil(opts.epochs); e++) order.push(rng.permutation(train.length));
  const batchOf = (step: number): TokenizedExample[] => {
    const e = Math.floor(step / perEpoch);
    const k = step % perEpoch;
    return Array.from(order[e]!.subarray(k * bs, Math.min(train.length, (k + 1) * bs)), (i) => train[i]!);
  };
  const session = opts.threads !== null ? { threads: opts.threads } : {};
  const evalSplit = async (t: SubspaceTrainer, ex: readonly TokenizedExample[]): Promise<SplitScore | null> => {
    if (ex.length === 0) return null;
    const batches = [];
    const sorted = [...ex].sort((a, b) => a.ids.length - b.ids.length);
    for (let i = 0; i < sorted.length; i += 64) {
      const chunk = sorted.slice(i, i + 64);
      batches.push({ feeds: problem.feeds(chunk), rows: chunk.length });
    }
    const r = await t.evaluate(batches);
    return { examples: ex.length, accuracy: r.metric, loss: r.loss };
  };
  const trainOne = async (dim: number, kind: ProjectionKind, lr: number): Promise<IntrinsicDimPoint> => {
    const t = SubspaceTrainer.create(problem, { projection: kind, dim, seed: opts.seed, session });
    try {
      const start = performance.now();
      let last = start;
      progress.start(steps, 0);
      const fit = await t.fit({
        steps,
        lr,
        batch: (s) => problem.feeds(batchOf(s)),
        onStep: (s) => {
          const now = performance.now();
          const secs = (now - last) / 1000;
          last = now;
          progress.step({ step: s.step, totalSteps: s.totalSteps, epoch: s.step / perEpoch, loss: s.loss, examplesPerSecond: secs > 0 ? bs / secs : 0 });
        },
      });
      progress.stop();
      const validation = await evalSplit(t, splits.validation);
      const test = await evalSplit(t, splits.test);
      return { dim, projection: kind, validation, test, steps: fit.steps, finalTrainLoss: fit.losses.at(-1)!, seconds: (performance.now() - start) / 1000 };
    } finally {
      progress.stop();
      await t.release();
    }
  };

  // θ₀, evaluated through a 1-dimensional subspace at d = 0
  const probe = SubspaceTrainer.create(problem, { projection: "dense", dim: 1, seed: opts.seed, session });
  let initial: IntrinsicDimResults["initial"];
  try {
    initial = { validation: await evalSplit(probe, splits.validation), test: await evalSplit(probe, splits.test) };
  } finally {
    await probe.release();
  }
  progress.note(`θ₀: validation accuracy ${initial.validation!.accuracy.toFixed(4)}`);

  claimRunDir(opts.out, mode);
  writeJsonAtomic(join(opts.out, INTRINSIC_DIM_FILES.config), {
    command: COMMAND,
    options: opts,
    model: { id: source.id, modelType: source.model.config.modelType },
    dataset: { name: data.dataset.name, numLabels: data.dataset.numLabels, totalExamples: data.totalExamples, usedExamples: data.examples.length },
    split: data.split.info,
    steps,
    environment: runEnvironment(),
    created: new Date().toISOString(),
  });
  const points: IntrinsicDimPoint[] = [];
  let full: IntrinsicDimResults["full"] = opts.fullAccuracy !== null ? { given: true, validationAccuracy: opts.fullAccuracy } : null;
  const reference = (): number | null => (full === null ? null : "given" in full ? full.validationAccuracy : (full.validation?.accuracy ?? null));
  const snapshot = (complete: boolean): IntrinsicDimResults => {
    const ref = reference();
    return {
      model: source.id,
      data: opts.data,
      parameters: { count: D, blocks: params },
      threshold: opts.threshold,
      initial,
      full,
      points: [...points],
      d90: ref === null ? null : intrinsicDimension(points.map((p) => ({ dim: p.dim, metric: p.validation!.accuracy })), ref, opts.threshold),
      referenceAccuracy: ref,
      complete,
      seconds: (performance.now() - t0) / 1000,
    };
  };
  const save = (complete: boolean) => {
    const r = snapshot(complete);
    writeJsonAtomic(join(opts.out, INTRINSIC_DIM_FILES.results), r);
    return r;
  };

  if (full === null) {
    progress.note(`full training: all ${D.toLocaleString("en-US")} parameters (P = I), lr ${opts.fullLr}, ${steps} steps`);
    full = await trainOne(D, "identity", opts.fullLr);
    progress.note(`full training: validation accuracy ${full.validation!.accuracy.toFixed(4)} (${full.seconds.toFixed(1)} s)`);
    save(false);
  }
  for (const dim of dims) {
    const kind = chooseProjection(opts.projection, dim, D);
    progress.note(`d = ${dim} (${kind} projection), lr ${opts.lr}, ${steps} steps`);
    const p = await trainOne(dim, kind, opts.lr);
    points.push(p);
    progress.note(`d = ${dim}: validation accuracy ${p.validation!.accuracy.toFixed(4)} (${p.seconds.toFixed(1)} s)`);
    save(false);
  }
  const results = save(true);
  const { svg, png } = await renderVegaLite(intrinsicDimSpec(results));
  writeFileAtomic(join(opts.out, INTRINSIC_DIM_FILES.svg), svg);
  writeFileAtomic(join(opts.out, INTRINSIC_DIM_FILES.png), png);
  return { out: opts.out, results, files: Object.values(INTRINSIC_DIM_FILES) };
}
