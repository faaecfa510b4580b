/**
 * PCB-merging: Du et al. 2024, "Parameter Competition Balancing for Model Merging" (NeurIPS 2024,
 * https://arxiv.org/abs/2410.02396), implemented as the authors' reference code does it
 * (`PCB_merge` in github.com/duguodong7/pcb-merging, `pcb-merging.py`).
 *
 * For N task vectors τ_1…τ_N of D entries each (rows of the N×D matrix T), with
 *   clampQ(x, lo, hi) = clip(x, s[⌊D·lo⌋], s[⌊D·(1−hi) − 1⌋]), s = x sorted ascending (per task),
 *   Norm(x)           = (x − min x) / (max x − min x)                                 (per task):
 *
 * 1. Outlier clamp:   a_i = clampQ(|τ_i|, c, c),  τ̃_i = sign(τ_i) · a_i        (c = clampRatio, 1e-4)
 * 2. Intra-balancing: β^intra_i = exp(N · Norm(a_i)²)
 *    (the paper's Softmax(N·Norm(τ_i ⊙ τ_i)) without its per-task denominator, which the
 *    min–max normalisation in step 5 cancels)
 * 3. Inter-balancing: β^inter_i = tanh(Σ_j τ_i ⊙ τ_j) = tanh(τ_i ⊙ Σ_j τ_j)
 *    (the paper's Σ_j Softmax(Norm(τ_i ⊙ τ_j)) replaced by the reference code's tanh, which
 *    keeps the sign: entries that fight the consensus direction score below zero)
 * 4. Balancing matrix: β_i = β^intra_i ⊙ β^inter_i
 * 5. Drop and rescale: ŝ_i = Norm(clampQ(β_i, 1 − r, 0)); every entry at or below the (1 − r)
 *    quantile of β_i becomes 0, the top fraction r keeps a score in (0, 1]
 * 6. Merge: τ_m = Σ_i w_i · τ̃_i ⊙ ŝ_i / max(Σ_i ŝ_i, 1e-12), then scaled by λ
 *
 * w_i are the per-model weights (the reference's `lams`, 1 by default). The reference flattens
 * the whole model into one vector per task; peft-ts merges tensor by tensor, so the quantiles
 * and min–max statistics are taken per tensor. Where a min–max range is zero (a constant
 * vector) the normalised values are 0 instead of the reference's NaN.
 */
import { ConfigError } from "../errors.js";

export interface PcbOptions {
  /** r: fraction of entries of each task kept after balancing, in (0, 1]. Reference default 0.1. */
  readonly ratio: number;
  /** Fraction clipped at each end of |τ_i| before balancing, in [0, 0.5). Reference default 1e-4. */
  readonly clampRatio: number;
  /** Per-task weights w_i (default all 1). */
  readonly weights?: readonly number[];
  /** Global scale λ of the merged task vector (default 1). */
  readonly lambda?: number;
}

export interface PcbResult {
  /** τ_m: the merged task vector. */
  readonly merged: Float64Array;
  /** β_i: the balancing scores before dropping, per task. */
  readonly balancing: readonly Float64Array[];
  /** ŝ_i: the dropped and rescaled scores, per task. */
  readonly scale: readonly Float64Array[];
  /** τ̃_i: the outlier-clamped task vectors, per task. */
  readonly clamped: readonly Float64Array[];
}

/** Sorted-order bounds of the reference `clamp(x, min_ratio, max_ratio)`, then the clip. */
export function clampByQuantile(x: Float64Array, minRatio: number, maxRatio: number): Float64Array {
  const d = x.length;
  const sorted = Float64Array.from(x).sort();
  const loIdx = Math.trunc(d * minRatio);
  const hiIdx = Math.trunc(d * (1 - maxRatio) - 1);
  const lo = sorted[Math.min(Math.max(loIdx, 0), d - 1)]!;
  const hi = sorted[Math.min(Math.max(hiIdx, 0), d - 1)]!;
  const out = new Float64Array(d);
  for (let i = 0; i < d; i++) {
    const v = x[i]!;
    out[i] = v < lo ? lo : v > hi ? hi : v;
  }
  return out;
}

/** (x − min) / (max − min); zeros when the range is zero. */
export function minMaxNormalize(x: Float64Array): Float64Array {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of x) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const out = new Float64Array(x.length);
  const range = hi - lo;
  if (!(range > 0)) return out;
  for (let i = 0; i < x.length; i++) out[i] = (x[i]! - lo) / range;
  return out;
}

function checkOptions(tasks: readonly ArrayLike<number>[], opts: PcbOptions): void {
  const where = "pcb merge";
  if (!(opts.ratio > 0 && opts.ratio <= 1)) throw new ConfigError(where, "ratio", `must be in (0, 1], got ${opts.ratio}`);
  if (!(opts.clampRatio >= 0 && opts.clampRatio < 0.5)) {
    throw new ConfigError(where, "clampRatio", `must be in [0, 0.5), got ${opts.clampRatio}`);
  }
  if (tasks.length === 0) throw new ConfigError(where, "tensors", "needs at least one task vector");
  if (opts.weights && opts.weights.length !== tasks.length) {
    throw new ConfigError(where, "weights", `has ${opts.weights.length} entries for ${tasks.length} task vectors`);
  }
}

/** Runs PCB-merging on equal-length task vectors (see the module comment for the formulas). */
export function pcbMerge(tasks: readonly ArrayLike<number>[], opts: PcbOptions): PcbResult {
  checkOptions(tasks, opts);
  const n = tasks.length;
  const d = tasks[0]!.length;
  for (const t of tasks) if (t.length !== d) throw new ConfigError("pcb merge", "tensors", "task vectors differ in length");
  const total = new Float64Array(d);
  for (const t of tasks) for (let k = 0; k < d; k++) total[k] += t[k]!;

  const clamped: Float64Array[] = [];
  const balancing: Float64Array[] = [];
  const scale: Float64Array[] = [];
  for (const t of tasks) {
    const abs = Float64Array.from(t, Math.abs);
    const a = clampByQuantile(abs, opts.clampRatio, opts.clampRatio);
    const tc = new Float64Array(d);
    for (let k = 0; k < d; k++) tc[k] = Math.sign(t[k]!) * a[k]!;
    const na = minMaxNormalize(a);
    const beta = new Float64Array(d);
    for (let k = 0; k < d; k++) {
      const intra = Math.exp(n * na[k]! * na[k]!);
      const inter = Math.tanh(t[k]! * total[k]!);
      beta[k] = intra * inter;
    }
    clamped.push(tc);
    balancing.push(beta);
    scale.push(minMaxNormalize(clampByQuantile(beta, 1 - opts.ratio, 0)));
  }

  const lambda = opts.lambda ?? 1;
  const merged = new Float64Array(d);
  for (let k = 0; k < d; k++) {
    let num = 0;
    let den = 0;
    for (let i = 0; i < n; i++) {
      const s = scale[i]![k]!;
      num += (opts.weights?.[i] ?? 1) * clamped[i]![k]! * s;
      den += s;
    }
    merged[k] = (lambda * num) / Math.max(den, 1e-12);
  }
  return { merged, balancing, scale, clamped };
}
