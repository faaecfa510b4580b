/**
 * `peft demo`: LoRA on USE-lite for UCI sentiment (Amazon + IMDb + Yelp, 3,000 sentences, seeded
 * stratified 80/10/10 split) against a frozen-encoder baseline trained by peft-ts on the same
 * split (logistic regression on the frozen sentence embeddings, tuned on validation). Both are
 * scored once on the test split. Writes `<out>/metrics.json` and the LoRA run in `<out>/lora/`.
 */
import { join } from "node:path";
import { ConfigError } from "../errors.js";
import type { SplitInfo } from "../data/split.js";
import { loadUseLiteModel } from "../models/use-lite/classifier.js";
import { PeftModel } from "../peft/peft-model.js";
import type { MatmulTerm } from "../graph/flops.js";
import { type MatmulShape, measureMatmulCeiling } from "../runtime/matmul-ceiling.js";
import { modelMatmulTerms } from "../train/flops.js";
import { DEFAULT_SPLIT, loadRunData } from "./data.js";
import { DEFAULT_PROBE_GRID, type Features, type ProbeGrid, type ProbeResult, embedFrozen, selectRows, tuneLinearProbe } from "./linear-probe.js";
import { USE_LITE_MODEL_ID } from "./model-source.js";
import { type RunReporter, silentReporter } from "./reporter.js";
import { checkRunDir, claimRunDir, runEnvironment, writeJsonAtomic } from "./run-dir.js";
import { type TrainRunOptions, type TrainRunResult, runTraining } from "./train.js";

export const DEMO_DATASET = "uci-sentiment";

/**
 * The demo's LoRA recipe, chosen on the validation split (docs/training.md lists what was tried):
 * every linear layer of both encoder blocks and the pooler, rank 8, α 16, no dropout, AdamW with
 * warm-up and linear decay, evaluation twice per epoch keeping the best adapter.
 */
export const DEMO_LORA = {
  method: "lora",
  r: 8,
  alpha: 16,
  dropout: 0,
  target: { kind: "allLinear" },
  feedforward: null,
  epochs: 3,
  lr: 1e-3,
  batchSize: 16,
  weightDecay: 0.01,
  warmupRatio: 0.06,
  schedule: "linear",
  gradAccum: 1,
  maxGradNorm: 1,
  patience: 3,
  maxLength: null,
  groupByLength: true,
  split: DEFAULT_SPLIT,
} as const satisfies Partial<TrainRunOptions>;

/** The probe grid of the demo: learning rate × decoupled weight decay, best epoch of 40. */
export const DEMO_PROBE_GRID: ProbeGrid = { ...DEFAULT_PROBE_GRID, weightDecays: [0, 0.1, 1] };

export interface DemoOptions {
  readonly out: string;
  readonly seed: number;
  readonly threads?: number;
  /** Quick runs: a stratified subset of the data, fewer epochs / steps. */
  readonly maxExamples?: number;
  readonly epochs?: number;
  readonly maxSteps?: number;
  /** Measure the matmul ceiling at the same thread count and report the achieved fraction (default true). */
  readonly mfu?: boolean;
  readonly plot?: boolean;
}

/** What `<out>/metrics.json` holds (snake_case: a file meant for scripts and papers). */
export interface DemoMetrics {
  readonly frozen_accuracy: number;
  readonly lora_accuracy: number;
  readonly trainable_fraction: number;
  readonly seconds: number;
  readonly split: SplitInfo;
  readonly seed: number;
  readonly frozen_f1: number;
  readonly lora_f1: number;
  readonly frozen_validation_accuracy: number;
  readonly lora_validation_accuracy: number;
  readonly frozen_selected: { readonly lr: number; readonly weight_decay: number; readonly epochs: number };
  readonly frozen_trainable_params: number;
  readonly frozen_seconds: number;
  readonly lora_trainable_params: number;
  readonly lora_steps: number;
  readonly lora_seconds: number;
  readonly lora_train_seconds: number;
  readonly lora_sentences_per_second: number;
  readonly lora_achieved_gflops: number;
  readonly matmul_ceiling_gflops: number | null;
  readonly achieved_fraction_of_ceiling: number | null;
  readonly threads: number | null;
  readonly lora_config: Readonly<Record<string, unknown>>;
  readonly environment: Readonly<Record<string, unknown>>;
}

export interface DemoResult {
  readonly metrics: DemoMetrics;
  readonly lora: TrainRunResult;
  readonly probe: ProbeResult;
}

/** Distinct [K, N] of the frozen linear layers at M = 1024 rows: the shapes the ceiling is timed on. */
export function ceilingShapes(terms: readonly MatmulTerm[]): MatmulShape[] {
  const seen = new Map<string, MatmulShape>();
  for (const t of terms) {
    const n = t.out[t.out.length - 1];
    if (t.trainable || typeof t.k !== "number" || typeof n !== "number") continue;
    const name = `${t.k}x${n}`;
    if (!seen.has(name)) seen.set(name, { name, m: 1024, k: t.k, n });
  }
  return [...seen.values()];
}

/** Runs `peft demo` and writes its folder; the LoRA run's progress and the baseline's notes go to `progress`. */
export async function runDemo(opts: DemoOptions, progress: RunReporter = silentReporter): Promise<DemoResult> {
  const t0 = performance.now();
  checkRunDir(opts.out, "overwrite", "peft demo");
  // The frozen baseline first, on the very split the LoRA run will use (checked by its hash).
  const data = loadRunData({ data: DEMO_DATASET, seed: opts.seed, fractions: DEMO_LORA.split, command: "peft demo", ...(opts.maxExamples !== undefined ? { maxExamples: opts.maxExamples } : {}) });
  if (data.split.validation.length === 0 || data.split.test.length === 0) {
    throw new ConfigError("peft demo", "--max-examples", `${data.examples.length} examples leave no validation or test example; use at least 20`);
  }
  const tf = performance.now();
  progress.note(`frozen baseline: embedding ${data.examples.length} sentences with the frozen encoder, tuning a logistic-regression head on validation`);
  const emb = await embedFrozen(
    data.examples.map((e) => e.text),
    opts.threads !== undefined ? { threads: opts.threads } : {},
  );
  const dim = emb.length / data.examples.length;
  const f = (idx: readonly number[]): Features => ({ x: selectRows(emb, dim, idx), dim, labels: idx.map((i) => data.examples[i]!.label) });
  const p = await tuneLinearProbe(f(data.split.train), f(data.split.validation), f(data.split.test), data.dataset.numLabels, {
    seed: opts.seed,
    grid: DEMO_PROBE_GRID,
    ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
  });
  const frozenSeconds = (performance.now() - tf) / 1000;
  const sel = p.selected;
  progress.note(
    `frozen baseline: lr ${sel.lr}, weight decay ${sel.weightDecay}, ${sel.bestEpoch} epochs → validation accuracy ${sel.validation.accuracy.toFixed(4)}, test ${p.test!.accuracy.toFixed(4)} (${frozenSeconds.toFixed(1)}s)`,
  );

  const stepsPerEpoch = Math.ceil(data.split.train.length / DEMO_LORA.batchSize);
  const loraOpts: TrainRunOptions = {
    ...DEMO_LORA,
    model: USE_LITE_MODEL_ID,
    data: DEMO_DATASET,
    out: join(opts.out, "lora"),
    seed: opts.seed,
    epochs: opts.epochs ?? DEMO_LORA.epochs,
    evalEvery: Math.max(1, Math.ceil(stepsPerEpoch / 2)),
    threads: opts.threads ?? null,
    maxExamples: opts.maxExamples ?? null,
    maxSteps: opts.maxSteps ?? null,
    mode: "overwrite",
    plot: opts.plot ?? true,
  };
  const lora = await runTraining(loraOpts, progress);
  if (lora.splitInfo.hash !== data.split.info.hash) throw new ConfigError("peft demo", "split", "the LoRA run saw another split than the baseline");
  let ceiling: number | null = null;
  if (opts.mfu ?? true) {
    const pm = PeftModel.create(loadUseLiteModel({ numLabels: data.dataset.numLabels, seed: opts.seed }), { peft_type: "LORA", r: DEMO_LORA.r, target_modules: "all-linear", task_type: "SEQ_CLS" });
    const shapes = ceilingShapes(modelMatmulTerms(pm));
    const c = await measureMatmulCeiling({ shapes, variants: ["plain"], ...(opts.threads !== undefined ? { threads: opts.threads } : {}) });
    ceiling = c.ceilingGflops;
  }
  const m = lora.metrics;
  const metrics: DemoMetrics = {
    frozen_accuracy: p.test!.accuracy,
    lora_accuracy: m.test!.accuracy!,
    trainable_fraction: m.trainableFraction,
    seconds: (performance.now() - t0) / 1000,
    split: lora.splitInfo,
    seed: opts.seed,
    frozen_f1: p.test!.f1,
    lora_f1: m.test!.f1!,
    frozen_validation_accuracy: p.selected.validation.accuracy,
    lora_validation_accuracy: m.validation!.accuracy!,
    frozen_selected: { lr: p.selected.lr, weight_decay: p.selected.weightDecay, epochs: p.selected.bestEpoch },
    frozen_trainable_params: p.trainableParams,
    frozen_seconds: frozenSeconds,
    lora_trainable_params: m.trainableParams,
    lora_steps: m.steps,
    lora_seconds: m.seconds,
    lora_train_seconds: m.trainSeconds,
    lora_sentences_per_second: m.sentencesPerSecond,
    lora_achieved_gflops: m.achievedGflops,
    matmul_ceiling_gflops: ceiling,
    achieved_fraction_of_ceiling: ceiling ? m.achievedGflops / ceiling : null,
    threads: opts.threads ?? null,
    lora_config: { ...DEMO_LORA, epochs: loraOpts.epochs },
    environment: runEnvironment(),
  };
  claimRunDir(opts.out, "new");
  writeJsonAtomic(join(opts.out, "metrics.json"), metrics);
  return { metrics, lora, probe: p };
}
