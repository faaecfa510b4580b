/**
 * Batch orders for training: a plain permutation, or transformers' `group_by_length`
 * (`LengthGroupedSampler`): batches of examples of similar length, so that a padded batch wastes
 * little compute, in an order that is still random.
 */
import { ConfigError } from "../errors.js";
import type { Rng } from "../util/rng.js";

/**
 * transformers' `get_length_grouped_indices`: a random permutation cut into "megabatches" of
 * `mult × batchSize` examples (mult = min(⌊n / (4·batchSize)⌋, 50), at least 1), each sorted by
 * length, longest first; then the longest example of all is swapped to the front, so the first
 * batch is the largest (an out-of-memory shows at once). Consecutive `batchSize` slices of the
 * result are the batches.
 */
export function lengthGroupedOrder(lengths: readonly number[], batchSize: number, rng: Rng): Int32Array {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new ConfigError("lengthGroupedOrder", "batchSize", `must be a positive integer, got ${batchSize}`);
  const n = lengths.length;
  const order = rng.permutation(n);
  if (n === 0) return order;
  const mult = Math.max(1, Math.min(Math.floor(n / (batchSize * 4)), 50));
  const size = mult * batchSize;
  const megabatches: number[][] = [];
  for (let i = 0; i < n; i += size) {
    // stable sort, longest first (ties keep their random order)
    megabatches.push(Array.from(order.subarray(i, i + size)).sort((a, b) => lengths[b]! - lengths[a]!));
  }
  let maxIdx = 0;
  megabatches.forEach((mb, i) => {
    if (lengths[mb[0]!]! > lengths[megabatches[maxIdx]![0]!]!) maxIdx = i;
  });
  const first = megabatches[0]!;
  const top = megabatches[maxIdx]!;
  [first[0], top[0]] = [top[0]!, first[0]!];
  return Int32Array.from(megabatches.flat());
}

/** Indices of `lengths` sorted by length (stable), for evaluation batches with little padding. */
export function lengthSortedOrder(lengths: readonly number[]): number[] {
  return Array.from(lengths, (_, i) => i).sort((a, b) => lengths[a]! - lengths[b]!);
}
