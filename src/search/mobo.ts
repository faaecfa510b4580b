/**
 * Multi-objective Bayesian optimisation as AutoPEFT runs it: a Sobol' initial design, then one
 * Gaussian process per objective and the point of the largest expected hypervolume improvement
 * (EHVI, Monte-Carlo over the independent posteriors with common random numbers). Every objective
 * is minimised; inputs live in [0, 1]^d. Points still being evaluated count as observed at their
 * posterior mean ("Kriging believer"), so several can be proposed at once.
 */
import { ArgumentError } from "../errors.js";
import { Rng } from "../util/rng.js";
import { type GaussianProcess, fitGp } from "./gp.js";
import { hypervolume, paretoIndices } from "./pareto.js";
import { sobolPoints } from "./sobol.js";

export interface Observation {
  readonly x: readonly number[];
  /** Objective values (minimised). */
  readonly y: readonly number[];
}

export interface MoboOptions {
  readonly dims: number;
  readonly objectives: number;
  /** Points of the Sobol' initial design (default max(4, 2·(dims+1))). */
  readonly initial?: number;
  readonly seed: number;
  /** Candidate points scored per proposal (default 1024). */
  readonly candidates?: number;
  /** Monte-Carlo samples of the EHVI (default 32). */
  readonly samples?: number;
}

export function initialDesignSize(o: Pick<MoboOptions, "dims" | "initial">): number {
  return o.initial ?? Math.max(4, 2 * (o.dims + 1));
}

/** Objectives scaled to [0, 1] by the observed range (a constant objective maps to 0). */
function scaler(ys: readonly (readonly number[])[], k: number): (y: readonly number[]) => number[] {
  const lo = Array.from({ length: k }, (_, j) => Math.min(...ys.map((y) => y[j]!)));
  const hi = Array.from({ length: k }, (_, j) => Math.max(...ys.map((y) => y[j]!)));
  return (y) => y.map((v, j) => (hi[j]! > lo[j]! ? (v - lo[j]!) / (hi[j]! - lo[j]!) : 0));
}

/**
 * The next point to evaluate: the `index`-th proposal of a run (the Sobol' design while fewer than
 * `initial` points are observed or pending, then the EHVI maximiser). Deterministic in
 * (history, pending, options, index).
 */
export function proposeNext(history: readonly Observation[], pending: readonly (readonly number[])[], o: MoboOptions, index: number): number[] {
  if (o.dims < 1) throw new ArgumentError("proposeNext", "dims", "at least 1", String(o.dims));
  const n0 = initialDesignSize(o);
  if (history.length + pending.length < n0 || history.length < 2) return sobolPoints(1, o.dims, 1 + index, o.seed)[0]!;
  const rng = new Rng(o.seed).fork(`proposal-${index}`);
  const k = o.objectives;
  const scale = scaler(history.map((h) => h.y), k);
  const xs = history.map((h) => [...h.x]);
  const ys = history.map((h) => scale(h.y));
  let gps: GaussianProcess[] = Array.from({ length: k }, (_, j) => fitGp(xs, ys.map((y) => y[j]!)));
  if (pending.length > 0) {
    const believed = gps.map((gp) => gp.predict(pending).mean);
    const xb = [...xs, ...pending.map((p) => [...p])];
    gps = Array.from({ length: k }, (_, j) => fitGp(xb, [...ys.map((y) => y[j]!), ...believed[j]!]));
    for (let i = 0; i < pending.length; i++) ys.push(believed.map((b) => b[i]!));
  }
  const front = paretoIndices(ys).map((i) => ys[i]!);
  const frontX = paretoIndices(ys).map((i) => (i < xs.length ? xs[i]! : [...pending[i - xs.length]!]));
  const ref = Array.from({ length: k }, () => 1.1);
  const base = hypervolume(front, ref);

  // candidates: a fresh Sobol' scramble of the cube, and local moves around the current front
  const nCand = o.candidates ?? 1024;
  const cands: number[][] = sobolPoints(nCand >> 1, o.dims, 1 + (index + 1) * nCand, o.seed).map((p) => p.map((v) => (v + rng.uniform()) % 1));
  const perPoint = Math.max(1, Math.floor((nCand - cands.length) / Math.max(1, frontX.length)));
  for (const fx of frontX) {
    for (let c = 0; c < perPoint; c++) {
      const s = c % 2 === 0 ? 0.02 : 0.1;
      const moved = fx.map((v) => Math.min(1, Math.max(0, v + s * rng.normal())));
      // coordinates at a bound stay there half the time (fronts often lie on the cube's faces)
      cands.push(moved.map((v, d) => (rng.uniform() < 0.5 ? fx[d]! : v)));
    }
  }
  const S = o.samples ?? 32;
  const z = Array.from({ length: S }, () => Array.from({ length: k }, () => rng.normal()));
  const preds = gps.map((gp) => gp.predict(cands));
  let bestI = 0;
  let bestV = -1;
  let bestSpread = -1;
  for (let c = 0; c < cands.length; c++) {
    let sum = 0;
    for (let s = 0; s < S; s++) {
      const f = preds.map((p, j) => p.mean[c]! + Math.sqrt(p.variance[c]!) * z[s]![j]!);
      if (front.some((q) => q.every((v, j) => v <= f[j]!))) continue; // dominated: no improvement
      sum += hypervolume([...front, f], ref) - base;
    }
    const ehvi = sum / S;
    const spread = preds.reduce((t, p) => t + p.variance[c]!, 0);
    if (ehvi > bestV || (ehvi === bestV && spread > bestSpread)) {
      bestV = ehvi;
      bestSpread = spread;
      bestI = c;
    }
  }
  return cands[bestI]!;
}
