/** Task losses on the graph, with transformers' conventions. */
import { GraphBuildError } from "../errors.js";
import * as G from "../graph/api.js";
import { crossEntropy } from "../graph/composite.js";
import type { Value } from "../graph/types.js";

export type LossTask = "causal-lm" | "seq-cls";

/**
 * Causal LM loss as transformers computes it: logits[:, :-1] against labels[:, 1:], mean over
 * labels ≠ −100. `prefix` virtual tokens (prompt tuning) at the start of the logits are skipped,
 * as PEFT pads the labels with −100 for them.
 */
export function causalLmLoss(logits: Value, labels: Value, prefix = 0): Value {
  if (logits.rank !== 3 || labels.rank !== 2) throw new GraphBuildError("causalLmLoss", "expects logits [B, S, V] and labels [B, S]");
  const vocab = logits.shape[2];
  if (typeof vocab !== "number") throw new GraphBuildError("causalLmLoss", "vocabulary size must be static");
  const big = Number.MAX_SAFE_INTEGER;
  const lg = G.slice(logits, [prefix], [-1], [1]);
  const lb = G.slice(labels, [1], [big], [1]);
  return crossEntropy(G.reshape(lg, [-1, vocab]), G.reshape(lb, [-1]));
}

/** Sequence classification: mean cross-entropy of logits [B, C] against labels [B]. */
export function sequenceClassificationLoss(logits: Value, labels: Value): Value {
  return crossEntropy(logits, labels);
}

export function taskLoss(task: LossTask, logits: Value, labels: Value, prefix = 0): Value {
  return task === "causal-lm" ? causalLmLoss(logits, labels, prefix) : sequenceClassificationLoss(logits, labels);
}
