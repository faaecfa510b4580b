/** Training examples and their batches: token ids (and a class id), right-padded into a step's inputs. */
import { ConfigError } from "../errors.js";
import type { Tensor } from "../tensor.js";
import type { LossTask } from "./loss.js";
import type { Batch } from "./step.js";

/** A tokenised example: token ids and a class id (classification) or nothing (LM: labels = ids). */
export interface TokenizedExample {
  readonly ids: readonly number[];
  readonly label?: number;
  /**
   * Causal LM: the token's label per position, −100 where the loss ignores it (a chat's prompt
   * and user turns); default: every token is its own label.
   */
  readonly labels?: readonly number[];
}

/** Pad a list of examples into a batch (right padding). */
export function collate(examples: readonly TokenizedExample[], task: LossTask, padId = 0, maxLength?: number): Batch {
  const rows = examples.map((e) => (maxLength ? e.ids.slice(0, maxLength) : e.ids));
  const len = Math.max(1, ...rows.map((r) => r.length));
  const b = rows.length;
  const ids = new BigInt64Array(b * len).fill(BigInt(padId));
  const mask = new BigInt64Array(b * len);
  const lm = new BigInt64Array(b * len).fill(-100n);
  rows.forEach((r, i) => {
    const own = examples[i]!.labels;
    r.forEach((t, j) => {
      ids[i * len + j] = BigInt(t);
      mask[i * len + j] = 1n;
      lm[i * len + j] = BigInt(own ? own[j]! : t);
    });
  });
  const labels: Tensor<"int64"> =
    task === "causal-lm"
      ? { dtype: "int64", shape: [b, len], data: lm }
      : {
          dtype: "int64",
          shape: [b],
          data: BigInt64Array.from(examples, (e, i) => {
            if (e.label === undefined) throw new ConfigError("training data", `example ${i}`, "has no label");
            return BigInt(e.label);
          }),
        };
  return { inputIds: { dtype: "int64", shape: [b, len], data: ids }, attentionMask: { dtype: "int64", shape: [b, len], data: mask }, labels };
}
