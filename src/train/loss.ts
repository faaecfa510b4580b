/** Task losses on the graph, with transformers' conventions. */
import { GraphBuildError } from "../errors.js";
import * as G from "../graph/api.js";
import { crossEntropy, isHalf, nextTokenCrossEntropy } from "../graph/composite.js";
import type { Value } from "../graph/types.js";

export type LossTask = "causal-lm" | "seq-cls";

/**
 * Causal LM loss as transformers computes it: logits[:, :-1] against labels[:, 1:], mean over
 * labels ≠ −100. `prefix` virtual tokens (prompt tuning) at the start of the logits are skipped,
 * as PEFT pads the labels with −100 for them. The labels are shifted instead of the logits
 * (`nextTokenCrossEntropy`): the same value and gradient without a copy of the logits.
 */
export function causalLmLoss(logits: Value, labels: Value, prefix = 0): Value {
  if (logits.rank !== 3 || labels.rank !== 2) throw new GraphBuildError("causalLmLoss", "expects logits [B, S, V] and labels [B, S]");
  return nextTokenCrossEntropy(float32Logits(logits), labels, prefix);
}

/** Sequence classification: mean cross-entropy of logits [B, C] against labels [B]. */
export function sequenceClassificationLoss(logits: Value, labels: Value): Value {
  return crossEntropy(float32Logits(logits), labels);
}

export function taskLoss(task: LossTask, logits: Value, labels: Value, prefix = 0): Value {
  return task === "causal-lm" ? causalLmLoss(logits, labels, prefix) : sequenceClassificationLoss(logits, labels);
}

/**
 * Losses are computed in at least float32: float16 / bfloat16 logits (mixed precision) are cast
 * to float32 first, as transformers does (`logits.float()`) and PyTorch autocast runs
 * `cross_entropy` in float32. The loss is then a float32 scalar, and its gradient reaches the
 * logits in float32 before the cast back to float16.
 */
function float32Logits(logits: Value): Value {
  return isHalf(logits) ? G.cast(logits, "float32") : logits;
}
