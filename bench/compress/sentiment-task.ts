/**
 * The sentence-classification task the compression measurements run on (docs/compression.md):
 * USE-lite with a 2-label head and a LoRA adapter, trained on a UCI sentiment dataset. Also a
 * small training loop that takes any `Optimizer` (the `Trainer` builds its own AdamW/SGD), used
 * to compare AdamW with AdamW8bit under otherwise identical conditions.
 */
import { loadDataset } from "../../src/data/registry.js";
import { splitDataset } from "../../src/data/split.js";
import type { LoadedModel } from "../../src/models/load.js";
import { loadUseLiteModel } from "../../src/models/use-lite/classifier.js";
import type { UseLiteTokenizer } from "../../src/models/use-lite/tokenizer.js";
import type { PeftModel } from "../../src/peft/peft-model.js";
import type { SessionOptions } from "../../src/runtime/session.js";
import type { Tensor } from "../../src/tensor.js";
import { accuracy, argmaxRows } from "../../src/train/metrics.js";
import { AdamW } from "../../src/train/optim/adamw.js";
import { AdamW8bit } from "../../src/train/optim/adamw8bit.js";
import { excludeFromWeightDecay } from "../../src/train/optim/decay.js";
import type { NamedParam, Optimizer } from "../../src/train/optim/types.js";
import { createSchedule } from "../../src/train/schedule.js";
import { TrainStep } from "../../src/train/step.js";
import { commitParams } from "../../src/train/step-strategy.js";
import { collate, type TokenizedExample } from "../../src/train/trainer.js";
import { Rng } from "../../src/util/rng.js";

export interface SentimentTask {
  readonly dataset: string;
  readonly train: readonly TokenizedExample[];
  readonly validation: readonly TokenizedExample[];
  readonly test: readonly TokenizedExample[];
  readonly numLabels: number;
}

export interface SentimentTaskOptions {
  /** A built-in dataset (default `uci-yelp`). */
  readonly dataset?: string;
  /** Split seed (default 0). */
  readonly seed?: number;
  /** Fractions (default 0.6 / 0.2 / 0.2). */
  readonly fractions?: readonly [number, number, number];
  /** Tokens kept per sentence (default 64). */
  readonly maxLength?: number;
}

/** The dataset, split (stratified, seeded) and tokenised with the USE-lite tokenizer. */
export function loadSentimentTask(tokenizer: UseLiteTokenizer, opts: SentimentTaskOptions = {}): SentimentTask {
  const dataset = opts.dataset ?? "uci-yelp";
  const ds = loadDataset(dataset);
  const [train, validation, test] = opts.fractions ?? [0.6, 0.2, 0.2];
  const split = splitDataset(ds.examples, { seed: opts.seed ?? 0, train, validation, test });
  const maxLength = opts.maxLength ?? 64;
  const tok = (idx: readonly number[]): TokenizedExample[] =>
    idx.map((i) => ({ ids: tokenizer.encode(ds.examples[i]!.text).slice(0, maxLength), label: ds.examples[i]!.label }));
  return { dataset, train: tok(split.train), validation: tok(split.validation), test: tok(split.test), numLabels: ds.numLabels };
}

/** USE-lite with a classification head for the task (the head's initialisation is seeded). */
export function sentimentBase(numLabels = 2, seed = 0): LoadedModel & { tokenizer: UseLiteTokenizer } {
  return loadUseLiteModel({ numLabels, seed });
}

/** Accuracy of `pm` (its active adapters) on labelled examples. */
export async function accuracyOf(pm: PeftModel, examples: readonly TokenizedExample[], batchSize = 50): Promise<number> {
  const preds: number[] = [];
  for (let i = 0; i < examples.length; i += batchSize) {
    const b = collate(examples.slice(i, i + batchSize), "seq-cls");
    const logits = await pm.forward({ inputIds: b.inputIds, attentionMask: b.attentionMask });
    preds.push(...argmaxRows(logits.data as Float32Array, logits.shape[1]!));
  }
  return accuracy(preds, examples.map((e) => e.label!));
}

export interface LoopOptions {
  readonly epochs: number;
  readonly batchSize: number;
  readonly lr: number;
  readonly weightDecay?: number;
  readonly seed: number;
  readonly optimizer: "adamw" | "adamw8bit";
  readonly session?: SessionOptions;
  /** Stop after this many steps (smoke tests). */
  readonly maxSteps?: number;
}

export interface LoopResult {
  readonly steps: number;
  /** Seconds of each training `session.run` (forward + backward). */
  readonly runSeconds: readonly number[];
  /** Seconds of each optimizer step. */
  readonly optimizerSeconds: readonly number[];
  readonly finalLoss: number;
  readonly optimizer: Optimizer;
}

/**
 * Trains the active adapter of `pm` for `epochs` with a linear schedule (no warmup), the
 * `Trainer`'s batching (a seeded permutation per epoch) and decay rules (no decay on biases and
 * norms), then writes the trained tensors back into the adapter.
 */
export async function trainLoop(pm: PeftModel, train: readonly TokenizedExample[], opts: LoopOptions): Promise<LoopResult> {
  const step = await TrainStep.create(pm, { task: "seq-cls", seed: opts.seed, dropout: false, session: opts.session ?? {} });
  try {
    const values = new Map<string, Float32Array>();
    for (const n of step.names) values.set(n, Float32Array.from(step.initial.get(n)!.data as Float32Array));
    const named: NamedParam[] = excludeFromWeightDecay(step.names.map((n) => ({ name: n, data: values.get(n)! })));
    const h = { lr: opts.lr, weightDecay: opts.weightDecay ?? 0.01 };
    const optimizer: Optimizer = opts.optimizer === "adamw8bit" ? new AdamW8bit(named, h) : new AdamW(named, h);
    const perEpoch = Math.ceil(train.length / opts.batchSize);
    const total = Math.min(perEpoch * opts.epochs, opts.maxSteps ?? Infinity);
    const schedule = createSchedule({ kind: "linear", warmupSteps: 0, totalSteps: perEpoch * opts.epochs }, opts.lr);
    const rng = new Rng(opts.seed);
    const runSeconds: number[] = [];
    const optimizerSeconds: number[] = [];
    let order = rng.permutation(train.length);
    let pos = 0;
    let loss = NaN;
    for (let s = 0; s < total; s++) {
      if (pos >= order.length) {
        order = rng.permutation(train.length);
        pos = 0;
      }
      const idx = Array.from(order.subarray(pos, pos + opts.batchSize));
      pos += idx.length;
      const params = new Map<string, Tensor>([...values].map(([n, d]) => [n, { dtype: "float32", shape: step.initial.get(n)!.shape, data: d }]));
      const t0 = performance.now();
      const r = await step.run(collate(idx.map((i) => train[i]!), "seq-cls"), params);
      const t1 = performance.now();
      optimizer.step(r.grads as Map<string, Float32Array>, schedule.lrAt(s));
      runSeconds.push((t1 - t0) / 1000);
      optimizerSeconds.push((performance.now() - t1) / 1000);
      loss = r.loss;
    }
    commitParams(pm, step, values);
    return { steps: total, runSeconds, optimizerSeconds, finalLoss: loss, optimizer };
  } finally {
    await step.release();
  }
}

/** Median of a list (NaN when empty). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
