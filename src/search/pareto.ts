/**
 * Pareto sets and hypervolume for minimisation problems (every objective is minimised).
 */

/** True when `a` dominates `b`: no worse in every objective, better in one. */
export function dominates(a: readonly number[], b: readonly number[]): boolean {
  let better = false;
  for (let i = 0; i < a.length; i++) {
    if (a[i]! > b[i]!) return false;
    if (a[i]! < b[i]!) better = true;
  }
  return better;
}

/** Indices of the non-dominated points (duplicates: the first is kept). */
export function paretoIndices(points: readonly (readonly number[])[]): number[] {
  const out: number[] = [];
  for (let i = 0; i < points.length; i++) {
    let keep = true;
    for (let j = 0; j < points.length && keep; j++) {
      if (j === i) continue;
      if (dominates(points[j]!, points[i]!)) keep = false;
      else if (j < i && points[j]!.every((v, k) => v === points[i]![k])) keep = false;
    }
    if (keep) out.push(i);
  }
  return out;
}

/** Hypervolume dominated by `points` up to the reference point `ref`, two objectives (exact sweep). */
export function hypervolume2d(points: readonly (readonly number[])[], ref: readonly [number, number]): number {
  const pts = points.filter((p) => p[0]! < ref[0] && p[1]! < ref[1]).map((p) => [p[0]!, p[1]!] as const);
  pts.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let hv = 0;
  let bestY = ref[1];
  for (const [x, y] of pts) {
    if (y >= bestY) continue;
    hv += (ref[0] - x) * (bestY - y);
    bestY = y;
  }
  return hv;
}

/** Hypervolume dominated by `points` up to `ref` (minimisation): exact for two objectives, by slicing for three. */
export function hypervolume(points: readonly (readonly number[])[], ref: readonly number[]): number {
  if (ref.length === 2) return hypervolume2d(points, [ref[0]!, ref[1]!]);
  if (ref.length !== 3) throw new RangeError(`hypervolume: 2 or 3 objectives, got ${ref.length}`);
  const pts = points.filter((p) => p.every((v, i) => v < ref[i]!)).sort((a, b) => a[2]! - b[2]!);
  let hv = 0;
  for (let i = 0; i < pts.length; i++) {
    const z0 = pts[i]![2]!;
    const z1 = i + 1 < pts.length ? pts[i + 1]![2]! : ref[2]!;
    if (z1 > z0) hv += (z1 - z0) * hypervolume2d(pts.slice(0, i + 1), [ref[0]!, ref[1]!]);
  }
  return hv;
}
