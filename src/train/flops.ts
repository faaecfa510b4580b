/**
 * Matrix-product FLOPs of training a PEFT model: the graph layer's counting (`graph/flops.ts`)
 * applied to the model's forward graph with its trainable tensors, and the examples each
 * optimizer step takes, so that per-step FLOPs follow the trainer's batching.
 */
import { type MatmulTerm, matmulTerms } from "../graph/flops.js";
import type { PeftModel } from "../peft/peft-model.js";

/** Every matrix product of `pm`'s forward graph (its active adapters applied, dropout off). */
export function modelMatmulTerms(pm: PeftModel): MatmulTerm[] {
  const built = pm.buildGraph({ training: true, dropout: false });
  return matmulTerms(built.graph, new Set(built.trainable.keys()));
}

/**
 * Examples taken by each optimizer step, as the trainer takes them: micro-batches of `batchSize`
 * over an epoch of `n` examples (the last one short), `accum` micro-batches per step.
 */
export function examplesPerStep(n: number, batchSize: number, accum: number, steps: number): number[] {
  const out: number[] = [];
  let pos = 0;
  for (let s = 0; s < steps; s++) {
    let ex = 0;
    for (let m = 0; m < accum; m++) {
      if (pos >= n) pos = 0;
      const take = Math.min(batchSize, n - pos);
      pos += take;
      ex += take;
    }
    out.push(ex);
  }
  return out;
}
