/**
 * The evaluation loop: loss and metrics of some examples through a gradient-free `TrainStep`
 * (accuracy and macro-F1 for classification, perplexity for causal LM), in batches of similar
 * length. `Trainer.evaluate` and the runs layer's `peft eval` both use it.
 */
import type { PeftModel } from "../peft/peft-model.js";
import type { SessionOptions } from "../runtime/session.js";
import type { Tensor } from "../tensor.js";
import type { LossTask } from "./loss.js";
import { accuracy, argmaxRows, macroF1, perplexity } from "./metrics.js";
import { lengthSortedOrder } from "./sampler.js";
import { type Batch, TrainStep } from "./step.js";
import { type TrainingGate, runGated } from "./gate.js";
import { type TokenizedExample, collate } from "./batch.js";
import type { EvalResult } from "./trainer.js";

export interface EvaluateOptions {
  readonly task: LossTask;
  readonly batchSize: number;
  /** Pad id for batching (default 0). */
  readonly padId?: number;
  /** Truncate sequences to this length. */
  readonly maxLength?: number;
  /** Run each batch in the slices this gate grants (`TrainerConfig.gate`); the results are the same. */
  readonly gate?: TrainingGate;
}

/** Loss and metrics of `examples` through `step` with trainable values `params` (absent ones: the step's initial values). */
export async function evaluateWith(step: TrainStep, params: ReadonlyMap<string, Tensor>, examples: readonly TokenizedExample[], opts: EvaluateOptions): Promise<EvalResult> {
  const max = opts.maxLength ?? Infinity;
  let lossSum = 0;
  let weight = 0;
  const preds: number[] = [];
  const labels: number[] = [];
  // batches of similar length (less padding); loss and metrics do not depend on the order
  const sorted = lengthSortedOrder(examples.map((e) => Math.min(e.ids.length, max))).map((k) => examples[k]!);
  for (let i = 0; i < sorted.length; i += opts.batchSize) {
    const chunk = sorted.slice(i, i + opts.batchSize);
    const batch = collate(chunk, opts.task, opts.padId ?? 0, opts.maxLength);
    const w = opts.task === "seq-cls" ? chunk.length : Math.max(1, chunk.reduce((s, e) => s + Math.max(0, Math.min(e.ids.length, max) - 1), 0));
    const before = preds.length;
    const loss = opts.gate ? await runGated(opts.gate, batch, opts.task, runOne) : await runOne(batch, 1);
    lossSum += loss * w;
    weight += w;
    if (preds.length > before) labels.push(...chunk.map((e) => e.label!));
  }
  /** One run; its logits' predictions are appended; returns loss × share. */
  async function runOne(b: Batch, share: number): Promise<number> {
    const r = await step.run(b, params);
    if (r.logits) preds.push(...argmaxRows(r.logits.data as Float32Array, r.logits.shape[1]!));
    return share === 0 ? 0 : r.loss * share;
  }
  const loss = lossSum / Math.max(1, weight);
  if (opts.task === "seq-cls") return { loss, accuracy: accuracy(preds, labels), f1: macroF1(preds, labels) };
  return { loss, perplexity: perplexity(loss) };
}

/** The gradient-free step `evaluateWith` runs (no dropout; logits for classification). */
export function createEvalStep(pm: PeftModel, task: LossTask, opts: { dtype?: "float32" | "float16"; session?: SessionOptions } = {}): Promise<TrainStep> {
  return TrainStep.create(pm, { task, dropout: false, gradients: false, withLogits: task === "seq-cls", dtype: opts.dtype ?? "float32", session: opts.session ?? {} });
}

/** Loss and metrics of `pm`'s active adapter (its trainable tensors as they are) on some examples. */
export async function evaluateModel(pm: PeftModel, examples: readonly TokenizedExample[], opts: EvaluateOptions & { session?: SessionOptions }): Promise<EvalResult> {
  const step = await createEvalStep(pm, opts.task, opts.session ? { session: opts.session } : {});
  try {
    return await evaluateWith(step, new Map(), examples, opts);
  } finally {
    await step.release();
  }
}
