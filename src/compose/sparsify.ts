/**
 * Sparsification primitives shared by the merge methods (mergekit `sparsify.py`) and by PEFT's
 * `merge_utils.py` equivalents: keep the top-`density` entries by magnitude, or keep each entry
 * with probability `density` (DARE), optionally rescaled by 1/density.
 *
 * Everything works on flat float64 arrays (one task-vector tensor at a time) and returns a new
 * array; inputs are never modified.
 */
import { ConfigError } from "../errors.js";

/**
 * A seeded source of uniform numbers in [0, 1). `Rng` from src/train/rng.ts satisfies it, as does
 * any object with a `uniform()` method; merge methods that drop entries at random take one so a
 * merge is reproducible.
 */
export interface UniformRng {
  uniform(): number;
}

/** Checks a density is a finite number ≥ 0 (values ≥ 1 mean "keep everything"). */
export function checkDensity(density: number, where: string): void {
  if (typeof density !== "number" || !Number.isFinite(density) || density < 0) {
    throw new ConfigError(where, "density", `must be a number >= 0 (fraction of entries kept), got ${String(density)}`);
  }
}

/** Number of entries magnitude pruning keeps: Python's `int(density * n)` (truncation). */
export function keptCount(density: number, n: number): number {
  return Math.trunc(density * n);
}

/**
 * Value of rank `k` (1-based) in descending order of `v`, found by quickselect. `v` is
 * reordered in place. Requires 1 ≤ k ≤ v.length and no NaN.
 */
function kthLargest(v: Float64Array, k: number): number {
  // Select the element that would sit at ascending index n - k.
  const target = v.length - k;
  let lo = 0;
  let hi = v.length - 1;
  while (lo < hi) {
    // Median of three as pivot.
    const mid = (lo + hi) >>> 1;
    const a = v[lo]!;
    const b = v[mid]!;
    const c = v[hi]!;
    const pivot = a < b ? (b < c ? b : a < c ? c : a) : a < c ? a : b < c ? c : b;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (v[i]! < pivot) i++;
      while (v[j]! > pivot) j--;
      if (i <= j) {
        const t = v[i]!;
        v[i] = v[j]!;
        v[j] = t;
        i++;
        j--;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else return v[target]!;
  }
  return v[target]!;
}

/**
 * A 0/1 mask selecting the `k` entries of largest magnitude. Ties at the threshold go to the
 * lower index, so the mask is deterministic (torch's `topk` leaves ties unspecified). NaN counts
 * as the smallest magnitude.
 */
export function topMagnitudeMask(x: ArrayLike<number>, k: number): Uint8Array {
  const n = x.length;
  const mask = new Uint8Array(n);
  if (k <= 0) return mask;
  if (k >= n) return mask.fill(1);
  const mags = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const m = Math.abs(x[i]!);
    mags[i] = Number.isNaN(m) ? -1 : m;
  }
  const threshold = kthLargest(mags, k);
  let above = 0;
  for (let i = 0; i < n; i++) {
    const m = Math.abs(x[i]!);
    if (m > threshold) {
      mask[i] = 1;
      above++;
    }
  }
  let ties = k - above;
  for (let i = 0; i < n && ties > 0; i++) {
    const m = Math.abs(x[i]!);
    if ((Number.isNaN(m) ? -1 : m) === threshold && mask[i] === 0) {
      mask[i] = 1;
      ties--;
    }
  }
  return mask;
}

/**
 * Keeps the `int(density·n)` entries of largest magnitude and zeroes the rest (PEFT
 * `magnitude_based_pruning`, mergekit `magnitude`). `density >= 1` returns an unchanged copy;
 * a density so small that no entry survives returns zeros (as PEFT's `topk(k=0)` does). With
 * `rescale`, kept entries are divided by `density`.
 */
export function magnitudePrune(x: ArrayLike<number>, density: number, rescale = false, where = "magnitude pruning"): Float64Array {
  checkDensity(density, where);
  const out = Float64Array.from(x);
  if (density >= 1) return out;
  const mask = topMagnitudeMask(x, keptCount(density, x.length));
  const factor = rescale && density > 0 ? 1 / density : 1;
  for (let i = 0; i < out.length; i++) out[i] = mask[i] ? out[i]! * factor : 0;
  return out;
}

/**
 * DARE's drop: keeps each entry independently with probability `density` (one `rng.uniform()`
 * draw per entry, in index order; kept when the draw is < density) and, with `rescale`, divides
 * kept entries by `density` so the expectation is unchanged. `density >= 1` returns an unchanged
 * copy without drawing.
 */
export function randomPrune(
  x: ArrayLike<number>,
  density: number,
  rng: UniformRng,
  rescale = true,
  where = "random pruning",
): Float64Array {
  checkDensity(density, where);
  const out = Float64Array.from(x);
  if (density >= 1) return out;
  const factor = rescale && density > 0 ? 1 / density : 1;
  for (let i = 0; i < out.length; i++) out[i] = rng.uniform() < density ? out[i]! * factor : 0;
  return out;
}

/** -1, 0 or 1 (torch `sign`; NaN gives 0). */
export function signOf(v: number): number {
  return v > 0 ? 1 : v < 0 ? -1 : 0;
}

/** How the majority sign of an entry is elected across task vectors. */
export type SignConsensus = "sum" | "count";

/**
 * Elected sign of entry `j` across `stack`: the sign of the total (`sum`, TIES "total mass",
 * PEFT `total`) or of the count of positive minus negative entries (`count`, PEFT `frequency`).
 * Zero elects +1, as in both PEFT and mergekit.
 */
export function electSign(stack: readonly ArrayLike<number>[], j: number, method: SignConsensus): 1 | -1 {
  let s = 0;
  if (method === "sum") for (const t of stack) s += t[j]!;
  else for (const t of stack) s += signOf(t[j]!);
  return s >= 0 ? 1 : -1;
}
