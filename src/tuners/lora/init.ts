/**
 * LoRA initialisations that read the base weight and rewrite it (PEFT's `pissa_init`,
 * `olora_init`), all in float64 on the [out, in] weight W:
 * - PiSSA: W = V·S·Uᵀ; with the top r triplets and S_r' = S_r / scaling, A = diag(√S_r')·U_rᵀ,
 *   B = V_r·diag(√S_r'). `pissa_niter_K` takes the triplets from a randomised SVD (Halko et al.,
 *   as `torch.svd_lowrank(W, q=r, niter=K)`: a Gaussian sketch refined by K power iterations).
 * - OLoRA: W = Q·R; B = Q[:, :r], A = R[:r].
 * The base weight becomes W − scaling·B·A, so the adapted layer starts equal to the base layer.
 * Singular vectors and QR columns have a sign freedom (LAPACK's choice in PyTorch); B·A and the
 * residual do not depend on it.
 */
import { Matrix, SingularValueDecomposition } from "ml-matrix";
import { matmul64 } from "../common/delta.js";

export interface Factors64 {
  /** [r, in] */
  readonly A: Float64Array;
  /** [out, r] */
  readonly B: Float64Array;
}

/** Orthonormal basis of the k columns of X [m, k] (modified Gram–Schmidt, applied twice); a dependent column becomes 0. */
export function orthonormalColumns(x: Float64Array, m: number, k: number): Float64Array {
  const q = Float64Array.from(x);
  for (let j = 0; j < k; j++) {
    const norm0 = colNorm(q, m, k, j);
    for (let pass = 0; pass < 2; pass++) {
      for (let p = 0; p < j; p++) {
        let dot = 0;
        for (let i = 0; i < m; i++) dot += q[i * k + p]! * q[i * k + j]!;
        for (let i = 0; i < m; i++) q[i * k + j]! -= dot * q[i * k + p]!;
      }
    }
    const n = colNorm(q, m, k, j);
    const f = n > 1e-12 * Math.max(norm0, 1e-300) && n > 0 ? 1 / n : 0;
    for (let i = 0; i < m; i++) q[i * k + j]! *= f;
  }
  return q;
}

function colNorm(q: Float64Array, m: number, k: number, j: number): number {
  let s = 0;
  for (let i = 0; i < m; i++) s += q[i * k + j]! ** 2;
  return Math.sqrt(s);
}

function transpose64(a: Float64Array, m: number, n: number): Float64Array {
  const t = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) t[j * m + i] = a[i * n + j]!;
  return t;
}

/** Top-r singular triplets of W [out, in]: left [out, r], values [r], right [in, r]. */
export function topSvd(w: Float64Array, out: number, inn: number, r: number, niter: number | null, rng: { normal(): number }): { u: Float64Array; s: Float64Array; v: Float64Array } {
  if (niter === null) {
    const svd = new SingularValueDecomposition(Matrix.from1DArray(out, inn, Array.from(w)), { autoTranspose: true });
    const d = svd.diagonal;
    const order = d.map((_, i) => i).sort((a, b) => d[b]! - d[a]! || a - b);
    const L = svd.leftSingularVectors;
    const R = svd.rightSingularVectors;
    const u = new Float64Array(out * r);
    const v = new Float64Array(inn * r);
    const s = new Float64Array(r);
    for (let c = 0; c < Math.min(r, order.length); c++) {
      const idx = order[c]!;
      s[c] = d[idx]!;
      for (let i = 0; i < out; i++) u[i * r + c] = L.get(i, idx);
      for (let i = 0; i < inn; i++) v[i * r + c] = R.get(i, idx);
    }
    return { u, s, v };
  }
  // randomised range finder: Q ≈ range(W) from W·Ω, refined by `niter` power iterations
  const wt = transpose64(w, out, inn);
  const omega = Float64Array.from({ length: inn * r }, () => rng.normal());
  let q = orthonormalColumns(matmul64(w, omega, out, inn, r), out, r);
  for (let it = 0; it < niter; it++) {
    const z = orthonormalColumns(matmul64(wt, q, inn, out, r), inn, r);
    q = orthonormalColumns(matmul64(w, z, out, inn, r), out, r);
  }
  const small = matmul64(transpose64(q, out, r), w, r, out, inn); // [r, in]
  const svd = new SingularValueDecomposition(Matrix.from1DArray(r, inn, Array.from(small)), { autoTranspose: true });
  const d = svd.diagonal;
  const order = d.map((_, i) => i).sort((a, b) => d[b]! - d[a]! || a - b);
  const L = svd.leftSingularVectors; // [r, r]
  const R = svd.rightSingularVectors; // [in, r]
  const ub = new Float64Array(r * r);
  const v = new Float64Array(inn * r);
  const s = new Float64Array(r);
  for (let c = 0; c < Math.min(r, order.length); c++) {
    const idx = order[c]!;
    s[c] = d[idx]!;
    for (let i = 0; i < r; i++) ub[i * r + c] = L.get(i, idx);
    for (let i = 0; i < inn; i++) v[i * r + c] = R.get(i, idx);
  }
  return { u: matmul64(q, ub, out, r, r), s, v };
}

/** PiSSA's factors of W [out, in] (float64): B·A·scaling is W's best rank-r approximation. */
export function pissaFactors(w: Float64Array, out: number, inn: number, r: number, scaling: number, niter: number | null, rng: { normal(): number }): Factors64 {
  const { u, s, v } = topSvd(w, out, inn, r, niter, rng);
  const A = new Float64Array(r * inn);
  const B = new Float64Array(out * r);
  for (let c = 0; c < r; c++) {
    const root = Math.sqrt(s[c]! / scaling);
    for (let i = 0; i < inn; i++) A[c * inn + i] = root * v[i * r + c]!;
    for (let o = 0; o < out; o++) B[o * r + c] = root * u[o * r + c]!;
  }
  return { A, B };
}

/**
 * OLoRA's factors of the stored weight (PEFT takes the QR of `base_layer.weight` as stored, so a
 * GPT-2 Conv1D layer, stored [in, out], does not fit lora_A/lora_B unless in = out: refused).
 */
export function oloraFactors(w: Float64Array, out: number, inn: number, r: number): Factors64 {
  // Q[:, :r] spans the first r columns; R[:r] = Q[:, :r]ᵀ·W
  const first = new Float64Array(out * r);
  for (let o = 0; o < out; o++) for (let c = 0; c < r; c++) first[o * r + c] = w[o * inn + c]!;
  const B = orthonormalColumns(first, out, r);
  const A = matmul64(transpose64(B, out, r), w, r, out, inn);
  return { A, B };
}
