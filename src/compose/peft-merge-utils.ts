/**
 * Python PEFT's `peft.utils.merge_utils` (0.21) on flat float64 arrays: the functions
 * `add_weighted_adapter` applies to stacked LoRA factors or full ΔW matrices. They differ from
 * the mergekit-style registry in methods.ts in two ways PEFT users can observe: the TIES sign is
 * elected from the pruned but *unweighted* tensors, and the disjoint merge divides by the *count*
 * of agreeing tensors rather than by their weights.
 */
import { ConfigError } from "../errors.js";
import { type UniformRng, magnitudePrune, randomPrune, signOf } from "./sparsify.js";

/** PEFT's `majority_sign_method`: elect by the sum of values or by the count of signs. */
export type MajoritySignMethod = "total" | "frequency";

function checkInputs(tasks: readonly Float64Array[], weights: readonly number[], where: string): number {
  if (tasks.length === 0) throw new ConfigError(where, "task_tensors", "needs at least one tensor");
  if (weights.length !== tasks.length) throw new ConfigError(where, "weights", `${weights.length} weights for ${tasks.length} tensors`);
  const n = tasks[0]!.length;
  for (const t of tasks) if (t.length !== n) throw new ConfigError(where, "task_tensors", "tensors differ in size");
  return n;
}

function weightedSum(tasks: readonly Float64Array[], weights: readonly number[], n: number): Float64Array {
  const out = new Float64Array(n);
  tasks.forEach((t, i) => {
    const w = weights[i]!;
    for (let k = 0; k < n; k++) out[k] += t[k]! * w;
  });
  return out;
}

/** `ties`' sign election and disjoint merge on already-sparsified tensors. */
function disjointMerge(tasks: readonly Float64Array[], weights: readonly number[], n: number, method: MajoritySignMethod): Float64Array {
  const out = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    let elect = 0;
    for (const t of tasks) elect += method === "total" ? t[k]! : signOf(t[k]!);
    const majority = elect >= 0 ? 1 : -1;
    let sum = 0;
    let count = 0;
    for (let i = 0; i < tasks.length; i++) {
      const v = tasks[i]![k]!;
      if (signOf(v) === majority) {
        sum += v * weights[i]!;
        count++;
      }
    }
    out[k] = sum / Math.max(count, 1);
  }
  return out;
}

/** `task_arithmetic`: Σ_i w_i·τ_i. */
export function peftTaskArithmetic(tasks: readonly Float64Array[], weights: readonly number[]): Float64Array {
  return weightedSum(tasks, weights, checkInputs(tasks, weights, "task_arithmetic"));
}

/** `magnitude_prune`: Σ_i w_i·prune_magnitude(τ_i, density). */
export function peftMagnitudePrune(tasks: readonly Float64Array[], weights: readonly number[], density: number): Float64Array {
  const n = checkInputs(tasks, weights, "magnitude_prune");
  return weightedSum(tasks.map((t) => magnitudePrune(t, density, false, "magnitude_prune")), weights, n);
}

/** `ties`: magnitude-prune each τ_i, elect signs on the unweighted stack, mean of agreeing w_i·τ_i. */
export function peftTies(tasks: readonly Float64Array[], weights: readonly number[], density: number, method: MajoritySignMethod = "total"): Float64Array {
  const n = checkInputs(tasks, weights, "ties");
  return disjointMerge(tasks.map((t) => magnitudePrune(t, density, false, "ties")), weights, n, method);
}

/** `dare_linear`: Σ_i w_i·(Bernoulli(density) mask ⊙ τ_i / density). Draws tensor by tensor, entry by entry. */
export function peftDareLinear(tasks: readonly Float64Array[], weights: readonly number[], density: number, rng: UniformRng): Float64Array {
  const n = checkInputs(tasks, weights, "dare_linear");
  return weightedSum(tasks.map((t) => randomPrune(t, density, rng, true, "dare_linear")), weights, n);
}

/** `dare_ties`: DARE drop and rescale, then TIES sign election and disjoint merge. */
export function peftDareTies(
  tasks: readonly Float64Array[],
  weights: readonly number[],
  density: number,
  rng: UniformRng,
  method: MajoritySignMethod = "total",
): Float64Array {
  const n = checkInputs(tasks, weights, "dare_ties");
  return disjointMerge(tasks.map((t) => randomPrune(t, density, rng, true, "dare_ties")), weights, n, method);
}
