/**
 * `TrainingGate`: how a training run shares the machine with something that has priority (the
 * generation engine's decode iterations, `GenerationEngine.trainingGate`). Before each run of the
 * training graph the trainer asks the gate how many rows of its micro-batch it may run now, runs
 * that slice, and tells the gate it finished. The trainer splits its batches into slices of the
 * granted sizes and accumulates their gradients weighted by their share of the batch's loss
 * (tokens with a label for causal LM, rows for classification), so a gated run computes the same
 * update as the ungated one, up to float rounding (see `sliceBatch`, `lossWeights`).
 */
import type { Tensor } from "../tensor.js";
import type { LossTask } from "./loss.js";
import type { Batch } from "./step.js";

export interface TrainingGate {
  /**
   * Waits until the trainer may run its next micro-batch; resolves to how many rows it may run
   * now (1 ≤ n ≤ wantRows). `tokensPerRow` = the padded length of the rows.
   */
  acquire(wantRows: number, tokensPerRow: number): Promise<number>;
  /** The micro-batch granted by the last `acquire()` has finished. */
  release(): void;
}

/** Rows [from, to) of a collated batch (copies); the padded length stays the batch's. */
export function sliceBatch(batch: Batch, from: number, to: number): Batch {
  const rows = (t: Tensor<"int64">): Tensor<"int64"> => {
    const per = t.shape.slice(1).reduce((a, b) => a * b, 1);
    return { dtype: "int64", shape: [to - from, ...t.shape.slice(1)], data: t.data.slice(from * per, to * per) };
  };
  return { inputIds: rows(batch.inputIds), attentionMask: rows(batch.attentionMask), labels: rows(batch.labels) };
}

/**
 * Per row, its weight in the batch's mean loss: causal LM — the labels the loss counts (positions
 * 1… that are not −100, as `nextTokenCrossEntropy` shifts them); classification — 1.
 */
export function lossWeights(batch: Batch, task: LossTask): number[] {
  const [B, S] = batch.inputIds.shape as [number, number];
  if (task !== "causal-lm") return new Array<number>(B).fill(1);
  const labels = batch.labels.data;
  return Array.from({ length: B }, (_, r) => {
    let n = 0;
    for (let j = 1; j < S; j++) if (labels[r * S + j] !== -100n) n++;
    return n;
  });
}

/**
 * Runs `batch` through `gate` in granted slices: `run(slice, weight)` for each, where `weight` is
 * the slice's share of the batch's loss (the weights sum to 1 unless no row has a label). Returns
 * the sum of the runs' results (the batch's loss when each run returns weight × slice loss).
 */
export async function runGated(gate: TrainingGate, batch: Batch, task: LossTask, run: (slice: Batch, weight: number) => Promise<number>): Promise<number> {
  const [B, S] = batch.inputIds.shape as [number, number];
  const per = lossWeights(batch, task);
  const total = per.reduce((a, b) => a + b, 0);
  let out = 0;
  for (let at = 0; at < B; ) {
    const want = B - at;
    const granted = await gate.acquire(want, S);
    const n = Math.max(1, Math.min(want, Math.floor(granted)));
    try {
      let w = 0;
      for (let r = at; r < at + n; r++) w += per[r]!;
      out += await run(sliceBatch(batch, at, at + n), total > 0 ? w / total : 0);
    } finally {
      gate.release();
    }
    at += n;
  }
  return out;
}
