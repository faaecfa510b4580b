/**
 * Gaussian-process regression for the search's surrogates: a squared-exponential kernel
 * k(x, x') = σ² exp(-|x - x'|² / 2ℓ²) plus noise variance on the diagonal, outputs standardised
 * (mean 0, variance 1) before fitting. Linear algebra is ml-matrix's (Cholesky). Hyperparameters
 * (ℓ, noise) are chosen on a grid by the log marginal likelihood.
 */
import { CholeskyDecomposition, Matrix } from "ml-matrix";
import { ArgumentError } from "../errors.js";

export interface GpHyper {
  /** Length scale ℓ (inputs are in [0, 1]^d). */
  readonly lengthScale: number;
  /** Signal variance σ² (of the standardised outputs). */
  readonly signalVariance: number;
  /** Noise variance added to the diagonal (of the standardised outputs). */
  readonly noiseVariance: number;
}

function sqDist(a: readonly number[], b: readonly number[]): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - b[i]!;
    s += d * d;
  }
  return s;
}

export function sqExpKernel(a: readonly number[], b: readonly number[], h: GpHyper): number {
  return h.signalVariance * Math.exp(-sqDist(a, b) / (2 * h.lengthScale * h.lengthScale));
}

export class GaussianProcess {
  private readonly chol: CholeskyDecomposition;
  private readonly alpha: Matrix;
  readonly mean: number;
  readonly scale: number;
  /** log p(y | X, θ) of the standardised outputs. */
  readonly logMarginalLikelihood: number;

  /** Fits the GP to inputs `x` and outputs `y` with fixed hyperparameters `h` (`standardize`: outputs to mean 0, variance 1 first). */
  constructor(
    readonly x: readonly (readonly number[])[],
    y: readonly number[],
    readonly hyper: GpHyper,
    standardize = true,
  ) {
    if (x.length === 0 || x.length !== y.length) throw new ArgumentError("GaussianProcess", "x, y", "the same non-zero number of points", `${x.length} and ${y.length}`);
    const n = x.length;
    const mu = standardize ? y.reduce((s, v) => s + v, 0) / n : 0;
    const sd = standardize ? Math.sqrt(y.reduce((s, v) => s + (v - mu) ** 2, 0) / n) || 1 : 1;
    this.mean = mu;
    this.scale = sd;
    const ys = Matrix.columnVector(y.map((v) => (v - mu) / sd));
    const K = new Matrix(n, n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j <= i; j++) {
        const k = sqExpKernel(x[i]!, x[j]!, hyper) + (i === j ? hyper.noiseVariance : 0);
        K.set(i, j, k);
        K.set(j, i, k);
      }
    }
    this.chol = new CholeskyDecomposition(K);
    if (!this.chol.isPositiveDefinite()) throw new ArgumentError("GaussianProcess", "hyper", "a positive-definite kernel matrix (raise noiseVariance)", `noise ${hyper.noiseVariance}`);
    this.alpha = this.chol.solve(ys);
    const L = this.chol.lowerTriangularMatrix;
    let logDet = 0;
    for (let i = 0; i < n; i++) logDet += Math.log(L.get(i, i));
    let fit = 0;
    for (let i = 0; i < n; i++) fit += ys.get(i, 0) * this.alpha.get(i, 0);
    this.logMarginalLikelihood = -0.5 * fit - logDet - 0.5 * n * Math.log(2 * Math.PI);
  }

  /** Posterior mean and variance (of f, without the noise) at each point, in the original output units. */
  predict(points: readonly (readonly number[])[]): { mean: Float64Array; variance: Float64Array } {
    const n = this.x.length;
    const m = points.length;
    const Ks = new Matrix(n, m);
    for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) Ks.set(i, j, sqExpKernel(this.x[i]!, points[j]!, this.hyper));
    const mean = new Float64Array(m);
    const variance = new Float64Array(m);
    // v = L⁻¹ K*, var = k** − vᵀv
    const L = this.chol.lowerTriangularMatrix;
    const v = forwardSubstitute(L, Ks);
    for (let j = 0; j < m; j++) {
      let mu = 0;
      let vv = 0;
      for (let i = 0; i < n; i++) {
        mu += Ks.get(i, j) * this.alpha.get(i, 0);
        vv += v.get(i, j) ** 2;
      }
      mean[j] = this.mean + this.scale * mu;
      variance[j] = this.scale * this.scale * Math.max(0, this.hyper.signalVariance - vv);
    }
    return { mean, variance };
  }
}

/** Solves L X = B for lower-triangular L. */
function forwardSubstitute(L: Matrix, B: Matrix): Matrix {
  const n = L.rows;
  const X = new Matrix(n, B.columns);
  for (let c = 0; c < B.columns; c++) {
    for (let i = 0; i < n; i++) {
      let s = B.get(i, c);
      for (let k = 0; k < i; k++) s -= L.get(i, k) * X.get(k, c);
      X.set(i, c, s / L.get(i, i));
    }
  }
  return X;
}

const LENGTH_SCALES = [0.05, 0.08, 0.12, 0.18, 0.27, 0.4, 0.6, 0.9, 1.4, 2.0];
const NOISES = [1e-6, 1e-4, 1e-3, 1e-2, 5e-2];

/** Fits a GP choosing ℓ and the noise on a grid by the log marginal likelihood (signal variance 1 on standardised outputs). */
export function fitGp(x: readonly (readonly number[])[], y: readonly number[]): GaussianProcess {
  let best: GaussianProcess | null = null;
  for (const lengthScale of LENGTH_SCALES) {
    for (const noiseVariance of NOISES) {
      let gp: GaussianProcess;
      try {
        gp = new GaussianProcess(x, y, { lengthScale, signalVariance: 1, noiseVariance });
      } catch {
        continue; // not positive definite at this noise level
      }
      if (!best || gp.logMarginalLikelihood > best.logMarginalLikelihood) best = gp;
    }
  }
  return best ?? new GaussianProcess(x, y, { lengthScale: 0.3, signalVariance: 1, noiseVariance: 0.1 });
}
