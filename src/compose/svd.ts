/**
 * Rank-k re-factorisation of a matrix with ml-matrix's SVD (float64): M ≈ (U·S)[:, :k] · Vh[:k].
 * `truncatedSvd` factorises a dense matrix; `lowRankSvd` factorises a product B·A of thin factors
 * through QR of each side, which gives the same singular triplets without forming or decomposing
 * the dense out×in matrix (what PEFT's `svd` combination needs for large layers).
 */
import { Matrix, QrDecomposition, SingularValueDecomposition } from "ml-matrix";
import { ConfigError } from "../errors.js";

export interface TruncatedSvd {
  readonly rows: number;
  readonly cols: number;
  /** The rank of the factors (the requested rank; columns past min(rows, cols) are zero). */
  readonly rank: number;
  /** U·diag(S) restricted to the top `rank` singular values: [rows, rank], row-major. */
  readonly us: Float64Array;
  /** Vh restricted to the top `rank` rows: [rank, cols], row-major. */
  readonly vh: Float64Array;
  /** Every singular value, descending. */
  readonly singularValues: Float64Array;
}

function checkRank(rank: number, where: string): void {
  if (!Number.isInteger(rank) || rank < 1) throw new ConfigError(where, "rank", `must be an integer >= 1, got ${String(rank)}`);
}

/** Copies the top `rank` singular triplets of an SVD into row-major factors. */
function takeTop(u: Matrix, s: readonly number[], v: Matrix, rows: number, cols: number, rank: number): TruncatedSvd {
  const order = s.map((_, i) => i).sort((a, b) => s[b]! - s[a]! || a - b);
  const us = new Float64Array(rows * rank);
  const vh = new Float64Array(rank * cols);
  const take = Math.min(rank, order.length);
  for (let c = 0; c < take; c++) {
    const idx = order[c]!;
    const sigma = s[idx]!;
    for (let r = 0; r < rows; r++) us[r * rank + c] = u.get(r, idx) * sigma;
    for (let k = 0; k < cols; k++) vh[c * cols + k] = v.get(k, idx);
  }
  return { rows, cols, rank, us, vh, singularValues: Float64Array.from(order, (i) => s[i]!) };
}

/** Best rank-`rank` factorisation (Eckart–Young) of the dense row-major [rows, cols] matrix `data`. */
export function truncatedSvd(data: ArrayLike<number>, rows: number, cols: number, rank: number): TruncatedSvd {
  checkRank(rank, "truncatedSvd");
  if (data.length !== rows * cols) {
    throw new RangeError(`truncatedSvd: ${data.length} values do not fill a [${rows}, ${cols}] matrix`);
  }
  const m = Matrix.from1DArray(rows, cols, Array.from(data));
  const svd = new SingularValueDecomposition(m, { autoTranspose: true });
  return takeTop(svd.leftSingularVectors, svd.diagonal, svd.rightSingularVectors, rows, cols, rank);
}

/**
 * Rank-`rank` SVD of the product B·A, with B [rows, inner] and A [inner, cols] row-major. When
 * `inner` is smaller than both sides, QR-factorises B = Qb·Rb and Aᵀ = Qa·Ra, decomposes the small
 * inner×inner core Rb·Raᵀ = U'·S·V'ᵀ, and returns U = Qb·U', V = Qa·V' — exactly the SVD of B·A.
 * Otherwise it forms B·A and decomposes it densely.
 */
export function lowRankSvd(
  b: ArrayLike<number>,
  a: ArrayLike<number>,
  rows: number,
  inner: number,
  cols: number,
  rank: number,
): TruncatedSvd {
  checkRank(rank, "lowRankSvd");
  if (inner >= rows || inner >= cols) return truncatedSvd(matmul(b, a, rows, inner, cols), rows, cols, rank);
  const qrB = new QrDecomposition(Matrix.from1DArray(rows, inner, Array.from(b)));
  const qrA = new QrDecomposition(Matrix.from1DArray(inner, cols, Array.from(a)).transpose());
  const core = qrB.upperTriangularMatrix.mmul(qrA.upperTriangularMatrix.transpose());
  const svd = new SingularValueDecomposition(core);
  const u = qrB.orthogonalMatrix.mmul(svd.leftSingularVectors);
  const v = qrA.orthogonalMatrix.mmul(svd.rightSingularVectors);
  const full = takeTop(u, svd.diagonal, v, rows, cols, rank);
  // Singular values past `inner` are exactly zero for a product of rank ≤ inner.
  const singularValues = new Float64Array(Math.min(rows, cols));
  singularValues.set(full.singularValues);
  return { ...full, singularValues };
}

/** Row-major [rows, inner] × [inner, cols] product in float64. */
export function matmul(b: ArrayLike<number>, a: ArrayLike<number>, rows: number, inner: number, cols: number): Float64Array {
  const out = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const o = r * cols;
    for (let k = 0; k < inner; k++) {
      const bv = b[r * inner + k]!;
      if (bv === 0) continue;
      const ao = k * cols;
      for (let c = 0; c < cols; c++) out[o + c] += bv * a[ao + c]!;
    }
  }
  return out;
}
