/** d90 (Li et al. 2018): the smallest subspace dimension whose performance reaches 90 % of the full training's. */

export interface DimPoint {
  readonly dim: number;
  /** Performance (validation accuracy for classifiers; higher is better). */
  readonly metric: number;
}

/**
 * The smallest `dim` among `points` with metric ≥ threshold × reference, or null when none
 * reaches it. Points need not be sorted; NaN metrics never count.
 */
export function intrinsicDimension(points: readonly DimPoint[], reference: number, threshold = 0.9): number | null {
  const bar = threshold * reference;
  let best: number | null = null;
  for (const p of points) if (p.metric >= bar && (best === null || p.dim < best)) best = p.dim;
  return best;
}
